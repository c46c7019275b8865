"""Tests for hf_shapley.evaluation.estimators: exact Shapley values and KernelSHAP.

Exact values are checked against closed forms (games given by their Harsanyi dividends,
``v(S) = sum_{T subset of S} d_T``, have ``phi_i = sum_{T containing i} d_T / |T|``),
against the permutation definition, and against captum as an independent implementation.
KernelSHAP is checked against exact values and its standard errors against its actual
errors.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from scipy import stats

from hf_shapley.evaluation.estimators import (
    KernelShapResult,
    _kernel_matrix_diagonal_gap,
    exact_shapley_values,
    kernel_shap,
)
from hf_shapley.models.coalitions import all_coalitions, shapley_kernel_size_probabilities


class DividendGame:
    """A game from its Harsanyi dividends: ``v(S) = sum_T d_T [T subset of S]``.

    ``dividends`` has shape ``(num_terms, *T)`` so one game can have many outputs.
    """

    def __init__(self, num_players: int, terms: list[list[int]], dividends: torch.Tensor):
        self.num_players = num_players
        self.members = torch.zeros(len(terms), num_players, dtype=torch.float64)
        for row, term in enumerate(terms):
            self.members[row, term] = 1.0
        self.term_sizes = self.members.sum(1)
        self.dividends = dividends.to(torch.float64)
        self.calls = 0

    def __call__(self, masks: torch.Tensor) -> torch.Tensor:
        self.calls += masks.shape[0]
        contains = (masks.to(torch.float64) @ self.members.T) == self.term_sizes  # (M, terms)
        flat = self.dividends.reshape(len(self.members), -1)
        return (contains.to(torch.float64) @ flat).reshape(
            masks.shape[0], *self.dividends.shape[1:]
        )

    def shapley_values(self) -> torch.Tensor:
        share = self.members / self.term_sizes[:, None]  # (terms, P)
        flat = self.dividends.reshape(len(self.members), -1)
        return (share.T @ flat).reshape(self.num_players, *self.dividends.shape[1:])


def random_dividend_game(
    num_players: int, seed: int, *, interaction_scale: float = 1.0, shape: tuple[int, ...] = ()
) -> DividendGame:
    """Main effects for every player plus random pairwise, triple and 4-way terms."""
    generator = torch.Generator().manual_seed(seed)
    terms = [[i] for i in range(num_players)]
    for order, count in ((2, num_players), (3, num_players // 2), (4, num_players // 4)):
        for _ in range(count):
            terms.append(torch.randperm(num_players, generator=generator)[:order].tolist())
    dividends = torch.randn(len(terms), *shape, generator=generator, dtype=torch.float64)
    dividends[num_players:] *= interaction_scale
    return DividendGame(num_players, terms, dividends)


def pearson(x: torch.Tensor, y: torch.Tensor) -> float:
    return float(torch.corrcoef(torch.stack([x.flatten(), y.flatten()]))[0, 1])


# --------------------------------------------------------------------------------------
# Exact Shapley values
# --------------------------------------------------------------------------------------


def test_additive_plus_pairwise_interactions():
    num_players = 7
    generator = torch.Generator().manual_seed(0)
    main = torch.randn(num_players, generator=generator, dtype=torch.float64)
    pairwise = torch.randn(num_players, num_players, generator=generator, dtype=torch.float64)
    pairwise = torch.triu(pairwise, diagonal=1)

    def game(masks):
        z = masks.to(torch.float64)
        return z @ main + ((z @ pairwise) * z).sum(1) + 3.0  # v(empty) = 3 does not matter

    symmetric = pairwise + pairwise.T
    expected = main + symmetric.sum(1) / 2
    torch.testing.assert_close(exact_shapley_values(game, num_players), expected)


@pytest.mark.parametrize("members", [[0], [2, 3], [0, 1, 5], [0, 1, 2, 3, 4, 5]])
def test_unanimity_games(members):
    num_players = 6
    game = DividendGame(num_players, [members], torch.ones(1))
    expected = torch.zeros(num_players, dtype=torch.float64)
    expected[members] = 1.0 / len(members)
    torch.testing.assert_close(exact_shapley_values(game, num_players), expected)


def test_matches_the_permutation_definition_on_an_arbitrary_game():
    # A game given by an arbitrary value table, no structure at all.
    num_players = 5
    table = torch.randn(2**num_players, generator=torch.Generator().manual_seed(1))
    codes = 1 << torch.arange(num_players)

    def game(masks):
        return table[(masks.long() * codes).sum(1)]

    expected = torch.zeros(num_players, dtype=torch.float64)
    for order in itertools.permutations(range(num_players)):
        code = 0
        for player in order:
            expected[player] += float(table[code | (1 << player)] - table[code])
            code |= 1 << player
    expected /= math.factorial(num_players)
    torch.testing.assert_close(exact_shapley_values(game, num_players), expected)


def test_dummy_player_symmetry_and_efficiency():
    num_players = 8
    weights = torch.tensor([1.0, 1.0, 0.0, 2.0, 0.5, 3.0, 1.5, 0.7], dtype=torch.float64)

    def game(masks):
        # Non-additive; player 2 has weight 0 (a dummy); players 0 and 1 are symmetric.
        total = masks.to(torch.float64) @ weights
        return torch.sqrt(total) + torch.sin(total)

    values = exact_shapley_values(game, num_players, batch_size=37)
    assert abs(float(values[2])) < 1e-12
    torch.testing.assert_close(values[0], values[1], rtol=0, atol=1e-12)
    ends = game(torch.tensor([[False] * num_players, [True] * num_players]))
    torch.testing.assert_close(values.sum(), ends[1] - ends[0])


def test_trailing_dimensions_match_per_output_runs():
    num_players = 6
    game = random_dividend_game(num_players, seed=2, shape=(3, 4))  # T = (B, K)
    values = exact_shapley_values(game, num_players)
    assert values.shape == (num_players, 3, 4) and values.dtype == torch.float64
    torch.testing.assert_close(values, game.shapley_values())
    for b, k in itertools.product(range(3), range(4)):
        single = exact_shapley_values(lambda m, b=b, k=k: game(m)[:, b, k], num_players)
        torch.testing.assert_close(values[:, b, k], single)
    vector_game = random_dividend_game(num_players, seed=3, shape=(5,))  # T = (K,)
    torch.testing.assert_close(
        exact_shapley_values(vector_game, num_players), vector_game.shapley_values()
    )


def test_batch_size_and_numpy_games():
    num_players = 9
    game = random_dividend_game(num_players, seed=4)
    reference = exact_shapley_values(game, num_players)
    assert game.calls == 2**num_players
    torch.testing.assert_close(exact_shapley_values(game, num_players, batch_size=13), reference)
    numpy_game = lambda masks: game(masks).numpy().astype(np.float32)  # noqa: E731
    torch.testing.assert_close(
        exact_shapley_values(numpy_game, num_players), reference, rtol=1e-5, atol=1e-5
    )


def test_sixteen_players():
    game = random_dividend_game(16, seed=5)
    torch.testing.assert_close(exact_shapley_values(game, 16), game.shapley_values())


def test_matches_captum_shapley_values():
    captum_attr = pytest.importorskip("captum.attr")
    num_players, num_outputs = 6, 3
    game = random_dividend_game(num_players, seed=6, shape=(num_outputs,))
    exact = exact_shapley_values(game, num_players)

    # captum sees the coalition vector as the input and the empty coalition as baseline.
    explainer = captum_attr.ShapleyValues(lambda inputs: game(inputs > 0.5))
    inputs = torch.ones(1, num_players, dtype=torch.float64)
    for k in range(num_outputs):
        attribution = explainer.attribute(
            inputs, baselines=torch.zeros_like(inputs), target=k, perturbations_per_eval=64
        )
        # captum accumulates in float32.
        torch.testing.assert_close(attribution[0].double(), exact[:, k], rtol=1e-5, atol=1e-5)


# --------------------------------------------------------------------------------------
# KernelSHAP
# --------------------------------------------------------------------------------------


def test_constrained_solution_closed_form():
    # The estimator relies on A = E[z z^T] = a I + c 1 1^T (a from the kernel) and on the
    # efficiency-constrained solution with the exact A and b being the Shapley values.
    num_players = 6
    table = all_coalitions(num_players)
    sizes = table.sum(1)
    inner = (sizes > 0) & (sizes < num_players)
    z, k = table[inner].to(torch.float64), sizes[inner]
    kernel = shapley_kernel_size_probabilities(num_players)[k - 1] / torch.tensor(
        [math.comb(num_players, int(s)) for s in k], dtype=torch.float64
    )
    a_matrix = (z.T * kernel) @ z
    gap = _kernel_matrix_diagonal_gap(num_players)
    torch.testing.assert_close(a_matrix.diagonal(), torch.full((num_players,), 0.5).double())
    off_diagonal = a_matrix[~torch.eye(num_players, dtype=torch.bool)]
    torch.testing.assert_close(off_diagonal, torch.full_like(off_diagonal, 0.5 - gap))

    game = random_dividend_game(num_players, seed=7)
    empty, full = game(table[[0, -1]])
    b = (z.T * kernel) @ (game(table[inner]) - empty)
    # Generic KKT system of min beta^T A beta - 2 b^T beta s.t. 1^T beta = v(1) - v(0).
    kkt = torch.zeros(num_players + 1, num_players + 1, dtype=torch.float64)
    kkt[:num_players, :num_players] = a_matrix
    kkt[:num_players, -1] = kkt[-1, :num_players] = 1.0
    solution = torch.linalg.solve(kkt, torch.cat([b, (full - empty)[None]]))[:num_players]
    closed_form = (b - b.mean()) / gap + (full - empty) / num_players
    torch.testing.assert_close(solution, closed_form)
    torch.testing.assert_close(closed_form, exact_shapley_values(game, num_players))


@pytest.mark.parametrize(
    ("method", "num_players", "budget"),
    # The unbiased estimator needs ~100x more evaluations (exact A, only b sampled), so
    # it is checked at P = 8 to keep the test fast.
    [("regression", 16, 60_000), ("unbiased", 8, 100_000)],
)
def test_kernel_shap_converges_to_exact_values(method, num_players, budget):
    game = random_dividend_game(num_players, seed=8, interaction_scale=0.5)
    exact = game.shapley_values()
    result = kernel_shap(game, num_players, tolerance=0.01, max_evaluations=budget, method=method)
    assert isinstance(result, KernelShapResult)
    assert result.converged and result.convergence_ratio < 0.01
    assert result.num_evaluations == game.calls <= budget
    assert result.values.shape == result.standard_error.shape == (num_players,)
    assert pearson(result.values, exact) > 0.99
    assert float((result.values - exact).norm() / exact.norm()) < 0.05
    # Efficiency holds exactly, not just in expectation.
    torch.testing.assert_close(result.values.sum(), exact.sum())
    empty = torch.zeros(1, num_players, dtype=torch.bool)
    torch.testing.assert_close(result.base_value, game(empty)[0])


def test_kernel_shap_regression_is_exact_for_additive_games():
    weights = torch.randn(20, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    result = kernel_shap(lambda masks: masks.to(torch.float64) @ weights + 1.0, 20)
    assert result.converged and result.num_evaluations == 2 + 768  # the default minimum
    torch.testing.assert_close(result.values, weights)
    assert float(result.standard_error.max()) < 1e-10


def test_kernel_shap_looser_tolerance_stops_earlier():
    num_players = 16
    game = random_dividend_game(num_players, seed=9, interaction_scale=1.0)
    tight = kernel_shap(game, num_players, tolerance=0.005)
    loose = kernel_shap(game, num_players, tolerance=0.02)
    assert tight.converged and loose.converged
    assert loose.num_evaluations < tight.num_evaluations
    assert loose.convergence_ratio < 0.02 and tight.convergence_ratio < 0.005
    # Same seed, same coalition stream: the tight run is the loose run continued.
    exact = game.shapley_values()
    assert (tight.values - exact).norm() < (loose.values - exact).norm()


def test_kernel_shap_budget_is_respected():
    game = random_dividend_game(12, seed=10)
    result = kernel_shap(game, 12, tolerance=0.0, batch_size=64, max_evaluations=1000)
    assert not result.converged
    assert result.num_evaluations == game.calls == 1000  # 2 + 998 (pairs, never split)


@pytest.mark.parametrize("method", ["regression", "unbiased"])
def test_kernel_shap_standard_errors_are_calibrated(method):
    # Over independent runs the standardized errors (phi_hat - phi) / se should have mean
    # square 1. The errors of one run sum to zero (efficiency), leaving P - 1 degrees of
    # freedom per run; the bounds are chi-square quantiles for that many.
    num_players, num_runs = 10, 30
    game = random_dividend_game(num_players, seed=11)
    exact = game.shapley_values()
    z_squares = []
    for seed in range(num_runs):
        result = kernel_shap(
            game, num_players, tolerance=0.0, max_evaluations=1024, seed=seed, method=method
        )
        z_squares.append(((result.values - exact) / result.standard_error).square())
    mean_square = float(torch.cat(z_squares).mean())
    degrees = num_runs * (num_players - 1)
    low, high = stats.chi2.ppf([1e-3, 1 - 1e-3], degrees) / (num_runs * num_players)
    assert low < mean_square < high


def test_kernel_shap_trailing_dimensions_match_per_output_runs():
    num_players = 8
    game = random_dividend_game(num_players, seed=12, shape=(2, 3))
    kwargs = {"tolerance": 0.0, "max_evaluations": 514, "batch_size": 128, "seed": 3}
    result = kernel_shap(game, num_players, **kwargs)
    assert result.values.shape == result.standard_error.shape == (num_players, 2, 3)
    assert result.base_value.shape == (2, 3)
    for b, k in itertools.product(range(2), range(3)):
        single = kernel_shap(lambda m, b=b, k=k: game(m)[:, b, k], num_players, **kwargs)
        torch.testing.assert_close(result.values[:, b, k], single.values)
        torch.testing.assert_close(result.standard_error[:, b, k], single.standard_error)


def test_kernel_shap_is_exact_for_two_players():
    game = random_dividend_game(2, seed=13)
    result = kernel_shap(game, 2)
    assert result.converged and result.num_evaluations == 2 + 512
    torch.testing.assert_close(result.values, game.shapley_values())


def test_kernel_shap_seed_and_details():
    game = random_dividend_game(10, seed=14)
    kwargs = {"tolerance": 0.0, "max_evaluations": 1026, "batch_size": 256}
    first = kernel_shap(game, 10, seed=0, return_details=True, **kwargs)
    again = kernel_shap(game, 10, seed=0, **kwargs)
    other = kernel_shap(game, 10, seed=1, **kwargs)
    torch.testing.assert_close(first.values, again.values, rtol=0, atol=0)
    assert not torch.allclose(first.values, other.values)
    assert again.trace is None
    steps = first.trace
    assert [step.num_evaluations for step in steps] == [258, 514, 770, 1026]
    torch.testing.assert_close(steps[-1].values, first.values)
    assert steps[-1].convergence_ratio == first.convergence_ratio


def test_kernel_shap_constant_game_converges_immediately():
    result = kernel_shap(lambda masks: torch.ones(masks.shape[0]), 5, min_evaluations=0)
    assert result.converged and result.num_evaluations == 2 + 256
    torch.testing.assert_close(result.values, torch.zeros(5, dtype=torch.float64))


# --------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------


def _scalar_game(masks):
    return masks.to(torch.float64).sum(1)


@pytest.mark.parametrize("estimator", [exact_shapley_values, kernel_shap])
def test_one_player_is_an_error(estimator):
    with pytest.raises(ValueError, match=r"at least 2 players; got P=1"):
        estimator(_scalar_game, 1)


def test_exact_refuses_large_games_and_points_to_kernel_shap():
    with pytest.raises(ValueError, match=r"P <= 16; got P=17.*kernel_shap"):
        exact_shapley_values(_scalar_game, 17)


@pytest.mark.parametrize("estimator", [exact_shapley_values, kernel_shap])
@pytest.mark.parametrize(
    ("game", "error", "message"),
    [
        (lambda m: torch.zeros(m.shape[0] + 1), ValueError, r"with 2 coalitions.*got shape \(3,\)"),
        (lambda m: torch.tensor(0.0), ValueError, r"must return shape \(2, \*T\).*got shape \(\)"),
        (
            lambda m: torch.where(m[:, 0], torch.nan, 0.0),
            ValueError,
            r"NaN or inf for 1 of 2 coalitions",
        ),
        (lambda m: m.sum(1).tolist(), TypeError, r"must return a torch.Tensor.*got list"),
    ],
)
def test_bad_games(estimator, game, error, message):
    # batch_size=2 makes the first call (v(empty), v(all) for kernel_shap) have 2 rows.
    with pytest.raises(error, match=message):
        estimator(game, 3, batch_size=2)


def test_game_output_shape_must_not_change():
    def game(masks):
        return torch.zeros(masks.shape[0], 1 if masks.shape[0] == 2 else 2)

    with pytest.raises(ValueError, match=r"trailing shape \(1,\)"):
        kernel_shap(game, 4, batch_size=4)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"batch_size": 3}, "batch_size must be even"),
        ({"batch_size": 0}, "batch_size must be an int >= 2"),
        ({"max_evaluations": 3}, "max_evaluations must be at least 4"),
        ({"tolerance": -0.1}, "tolerance must be >= 0"),
    ],
)
def test_kernel_shap_argument_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        kernel_shap(_scalar_game, 4, **kwargs)
