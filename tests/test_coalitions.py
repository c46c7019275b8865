"""Tests for hf_shapley.models.coalitions: distributions, purity, enumeration, validation.

The statistical tests draw a fixed stream (fixed seeds) and apply a goodness-of-fit test
whose p-value must exceed ``ALPHA``; where several tests run together the level is
Bonferroni-corrected. With a correct sampler a fixed seed fails such a test with
probability ``ALPHA``, so these are deterministic checks with a principled tolerance
rather than copied numbers.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

from hf_shapley.models.coalitions import (
    all_coalitions,
    check_coalitions,
    check_num_players,
    enumerate_coalitions,
    sample_shapley_kernel_coalitions,
    sample_uniform_size_coalitions,
    shapley_kernel_size_probabilities,
)

ALPHA = 1e-3


def codes_of(mask: torch.Tensor) -> np.ndarray:
    """Integer code of each coalition (bit i = player i), for (..., P) masks."""
    weights = 1 << torch.arange(mask.shape[-1], dtype=torch.int64)
    return (mask.long() * weights).sum(-1).reshape(-1).numpy()


def kernel_first_of_pairs(num_players: int, num_pairs: int, num_examples: int, **kwargs):
    """The S_j of each pair (independent draws), flattened to (num_examples * num_pairs, P)."""
    kwargs = {"seed": 0, "epoch": 0, **kwargs}
    mask = sample_shapley_kernel_coalitions(
        num_players, 2 * num_pairs, example_indices=range(num_examples), **kwargs
    )
    return mask[:, 0::2].reshape(-1, num_players)


def chisquare_pvalue(observed: np.ndarray, expected_probabilities: np.ndarray) -> float:
    observed = np.asarray(observed, dtype=np.float64)
    expected = expected_probabilities / expected_probabilities.sum() * observed.sum()
    assert expected.min() >= 5, "too few samples for a chi-square test"
    return float(stats.chisquare(observed, expected).pvalue)


# --------------------------------------------------------------------------------------
# Shapley-kernel sampler
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("num_players", [2, 3, 7, 16, 196])
def test_kernel_size_probabilities(num_players):
    probabilities = shapley_kernel_size_probabilities(num_players)
    assert probabilities.dtype == torch.float64
    assert probabilities.shape == (num_players - 1,)
    sizes = torch.arange(1, num_players, dtype=torch.float64)
    unnormalized = 1.0 / (sizes * (num_players - sizes))
    torch.testing.assert_close(probabilities, unnormalized / unnormalized.sum())
    torch.testing.assert_close(probabilities, probabilities.flip(0))  # k <-> P - k
    assert math.isclose(float(probabilities.sum()), 1.0, rel_tol=1e-12)


def test_kernel_sizes_follow_kernel():
    num_players = 16
    subsets = kernel_first_of_pairs(num_players, num_pairs=160, num_examples=64, seed=3)
    observed = np.bincount(subsets.sum(1).numpy(), minlength=num_players + 1)
    assert observed[0] == observed[num_players] == 0
    expected = shapley_kernel_size_probabilities(num_players).numpy()
    assert chisquare_pvalue(observed[1:num_players], expected) > ALPHA


def test_kernel_subsets_uniform_within_size():
    # At P = 6 there are 62 non-trivial coalitions: test the joint law of S_j,
    # p(S) = p(|S|) / C(P, |S|), and the conditional law within each size.
    num_players = 6
    subsets = kernel_first_of_pairs(num_players, num_pairs=400, num_examples=50, seed=1)
    codes = codes_of(subsets)
    counts = np.bincount(codes, minlength=2**num_players)
    table = all_coalitions(num_players)
    sizes = table.sum(1).numpy()
    size_probabilities = shapley_kernel_size_probabilities(num_players).numpy()
    inner = (sizes > 0) & (sizes < num_players)
    assert counts[~inner].sum() == 0
    expected = size_probabilities[sizes[inner] - 1] / np.array(
        [math.comb(num_players, int(k)) for k in sizes[inner]]
    )
    assert chisquare_pvalue(counts[inner], expected) > ALPHA
    for size in range(1, num_players):
        of_size = counts[sizes == size]
        pvalue = chisquare_pvalue(of_size, np.ones(len(of_size)))
        assert pvalue > ALPHA / (num_players - 1), f"size {size}: p={pvalue:.2g}"


def test_kernel_each_player_present_half_the_time():
    num_players = 10
    subsets = kernel_first_of_pairs(num_players, num_pairs=200, num_examples=50, seed=2)
    num_draws = subsets.shape[0]
    # Marginally, player i is in S_j with probability E[k] / P = 1/2 (the kernel is
    # symmetric in k <-> P - k): a binomial count per player, Bonferroni over players.
    for count in subsets.sum(0).tolist():
        pvalue = stats.binomtest(count, num_draws, 0.5).pvalue
        assert pvalue > ALPHA / num_players
    # With the complements included every player is present in exactly half.
    mask = sample_shapley_kernel_coalitions(
        num_players, 64, seed=2, epoch=0, example_indices=range(5)
    )
    assert (mask.sum(1) == 32).all()


def test_kernel_pairs_are_exact_complements():
    mask = sample_shapley_kernel_coalitions(
        49, 32, seed=0, epoch=1, example_indices=[5, 2, 9], device="cpu"
    )
    assert mask.dtype == torch.bool and mask.shape == (3, 32, 49)
    assert torch.equal(mask[:, 1::2], ~mask[:, 0::2])
    sizes = mask.sum(-1)
    assert sizes.min() >= 1 and sizes.max() <= 48


def test_kernel_large_grid_sizes_in_range():
    mask = sample_shapley_kernel_coalitions(196, 32, seed=0, epoch=0, example_indices=range(64))
    sizes = mask.sum(-1)
    assert mask.shape == (64, 32, 196)
    assert ((sizes >= 1) & (sizes <= 195)).all()


@pytest.mark.parametrize("sampler", ["kernel", "uniform"])
def test_samplers_are_pure_functions_of_the_counters(sampler):
    def draw(num_coalitions, examples, **kwargs):
        kwargs = {"seed": 7, "epoch": 2, **kwargs}
        function = (
            sample_shapley_kernel_coalitions
            if sampler == "kernel"
            else sample_uniform_size_coalitions
        )
        return function(12, num_coalitions, example_indices=examples, **kwargs)

    reference = draw(32, [3, 7, 11, 400])
    # Batch composition and order do not matter, nor does the number of coalitions asked.
    assert torch.equal(draw(8, [11, 3])[0], reference[2, :8])
    assert torch.equal(draw(8, [11, 3])[1], reference[0, :8])
    assert torch.equal(draw(32, torch.tensor([400]))[0], reference[3])
    assert torch.equal(draw(32, np.array([7]))[0], reference[1])
    # `offset` continues the stream.
    assert torch.equal(draw(16, [3, 7], offset=8), reference[:2, 8:24])
    # The same call twice gives the same result.
    assert torch.equal(draw(32, [3, 7, 11, 400]), reference)
    # Another epoch, seed or example gives other coalitions.
    for other in (draw(32, [3], epoch=3), draw(32, [3], seed=8), draw(32, [4])):
        assert not torch.equal(other[0], reference[0])


def test_kernel_stream_is_independent_across_counters():
    # P = 3: the kernel is uniform over the 6 non-trivial coalitions. The joint law of
    # S_j for two counter values must be the product law (36 equally likely cells).
    num_players, num_pairs, num_examples = 3, 100, 200

    def first_codes(**kwargs):
        kwargs = {"seed": 0, "epoch": 0, "example_indices": range(num_examples), **kwargs}
        mask = sample_shapley_kernel_coalitions(num_players, 2 * num_pairs, **kwargs)
        return mask[:, 0::2]  # (examples, pairs, P)

    base = first_codes()
    variants = {
        "next example": (base[:-1], base[1:]),
        "next pair": (base[:, :-1], base[:, 1:]),
        "next epoch": (base, first_codes(epoch=1)),
        "next seed": (base, first_codes(seed=1)),
    }
    cell = {code: i for i, code in enumerate(sorted(set(range(1, 7))))}
    for name, (left, right) in variants.items():
        joint = np.zeros((6, 6))
        for a, b in zip(codes_of(left), codes_of(right), strict=True):
            joint[cell[a], cell[b]] += 1
        pvalue = chisquare_pvalue(joint.reshape(-1), np.ones(36))
        assert pvalue > ALPHA / len(variants), f"{name}: p={pvalue:.2g}"


# --------------------------------------------------------------------------------------
# Uniform-size sampler
# --------------------------------------------------------------------------------------


def test_uniform_size_sampler_sizes_are_uniform():
    num_players, min_size, max_size = 12, 2, 9
    mask = sample_uniform_size_coalitions(
        num_players,
        40,
        seed=0,
        epoch=0,
        example_indices=range(100),
        min_size=min_size,
        max_size=max_size,
    )
    assert mask.shape == (100, 40, num_players) and mask.dtype == torch.bool
    observed = np.bincount(mask.sum(-1).reshape(-1).numpy(), minlength=num_players + 1)
    assert observed[:min_size].sum() == 0 and observed[max_size + 1 :].sum() == 0
    num_sizes = max_size - min_size + 1
    assert chisquare_pvalue(observed[min_size : max_size + 1], np.ones(num_sizes)) > ALPHA


def test_uniform_size_sampler_default_range_and_subsets():
    num_players = 5
    mask = sample_uniform_size_coalitions(
        num_players, 100, seed=4, epoch=0, example_indices=range(100)
    )
    codes = codes_of(mask)
    sizes = mask.sum(-1).reshape(-1).numpy()
    assert sizes.min() == 1 and sizes.max() == num_players - 1  # default [1, P - 1]
    counts = np.bincount(codes, minlength=2**num_players)
    table_sizes = all_coalitions(num_players).sum(1).numpy()
    for size in range(1, num_players):
        pvalue = chisquare_pvalue(
            counts[table_sizes == size], np.ones(math.comb(num_players, size))
        )
        assert pvalue > ALPHA / (num_players - 1), f"size {size}: p={pvalue:.2g}"


def test_uniform_size_sampler_can_include_empty_and_full():
    mask = sample_uniform_size_coalitions(
        4, 200, seed=0, epoch=0, example_indices=[0], min_size=0, max_size=4
    )
    sizes = set(mask.sum(-1).reshape(-1).tolist())
    assert sizes == {0, 1, 2, 3, 4}


def test_samplers_draw_different_streams():
    kwargs = {"seed": 0, "epoch": 0, "example_indices": [0]}
    kernel = sample_shapley_kernel_coalitions(20, 64, **kwargs)[0, 0::2]
    uniform = sample_uniform_size_coalitions(20, 32, **kwargs)[0]
    assert not torch.equal(kernel, uniform)


def test_zero_coalitions():
    kwargs = {"seed": 0, "epoch": 0, "example_indices": [0, 1]}
    assert sample_shapley_kernel_coalitions(5, 0, **kwargs).shape == (2, 0, 5)
    assert sample_uniform_size_coalitions(5, 0, **kwargs).shape == (2, 0, 5)


# --------------------------------------------------------------------------------------
# Enumeration
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("num_players", "chunk_size"), [(2, 4096), (5, 7), (10, 100)])
def test_enumeration_covers_every_coalition_in_code_order(num_players, chunk_size):
    chunks = list(enumerate_coalitions(num_players, chunk_size=chunk_size))
    assert all(c.dtype == torch.bool and c.shape[1] == num_players for c in chunks)
    assert all(c.shape[0] == chunk_size for c in chunks[:-1])
    table = torch.cat(chunks)
    assert table.shape == (2**num_players, num_players)
    codes = codes_of(table)
    np.testing.assert_array_equal(codes, np.arange(2**num_players))  # ordered, hence unique
    assert torch.equal(all_coalitions(num_players), table)


def test_all_coalitions_small_example():
    expected = torch.tensor([[0, 0], [1, 0], [0, 1], [1, 1]], dtype=torch.bool)
    assert torch.equal(all_coalitions(2), expected)


def test_all_coalitions_refuses_large_games():
    with pytest.raises(ValueError, match=r"limited to P <= 20.*enumerate_coalitions"):
        all_coalitions(21)


# --------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------


def _kernel(num_players):
    return sample_shapley_kernel_coalitions(num_players, 2, seed=0, epoch=0, example_indices=[0])


def _uniform(num_players):
    return sample_uniform_size_coalitions(num_players, 2, seed=0, epoch=0, example_indices=[0])


@pytest.mark.parametrize(
    "call",
    [
        shapley_kernel_size_probabilities,
        _kernel,
        _uniform,
        all_coalitions,
        lambda p: next(enumerate_coalitions(p)),
        lambda p: check_coalitions(torch.zeros(3, 1, dtype=torch.bool), p),
        check_num_players,
    ],
)
@pytest.mark.parametrize("num_players", [1, 0, -3])
def test_fewer_than_two_players_is_an_error(call, num_players):
    with pytest.raises(ValueError, match=rf"at least 2 players; got P={num_players}"):
        call(num_players)


def test_num_players_must_be_an_int():
    with pytest.raises(TypeError, match="num_players must be an int"):
        check_num_players(4.0)


def test_check_coalitions_accepts_valid_masks():
    mask = torch.zeros(2, 3, 5, dtype=torch.bool)
    assert check_coalitions(mask, 5) is mask
    assert check_coalitions(mask, 5, ndim=(2, 3)) is mask


@pytest.mark.parametrize(
    ("mask", "kwargs", "error", "message"),
    [
        (np.zeros((2, 5), dtype=bool), {}, TypeError, r"must be a torch.Tensor.*got ndarray"),
        (torch.zeros(2, 5), {}, TypeError, r"dtype torch.bool.*got torch.float32.*\.bool\(\)"),
        (torch.zeros(2, 5, dtype=torch.long), {}, TypeError, r"got torch.int64"),
        (torch.zeros(2, 4, dtype=torch.bool), {}, ValueError, r"size P=5; got shape \(2, 4\)"),
        (torch.tensor(True), {}, ValueError, r"at least 1 dimension"),
        (torch.zeros(5, dtype=torch.bool), {"ndim": (2, 3)}, ValueError, r"must have 2 or 3 dim"),
    ],
)
def test_check_coalitions_errors(mask, kwargs, error, message):
    with pytest.raises(error, match=message):
        check_coalitions(mask, 5, **kwargs)


def test_check_coalitions_names_the_argument():
    with pytest.raises(TypeError, match=r"^coalition_mask must have dtype"):
        check_coalitions(torch.zeros(1, 5), 5, name="coalition_mask")


def test_sampler_argument_errors():
    kwargs = {"seed": 0, "epoch": 0, "example_indices": [0]}
    with pytest.raises(ValueError, match=r"num_coalitions must be even.*got 3"):
        sample_shapley_kernel_coalitions(5, 3, **kwargs)
    with pytest.raises(ValueError, match=r"offset must be even"):
        sample_shapley_kernel_coalitions(5, 2, offset=1, **kwargs)
    with pytest.raises(ValueError, match=r"num_coalitions must be a non-negative int"):
        sample_uniform_size_coalitions(5, -1, **kwargs)
    with pytest.raises(ValueError, match=r"epoch must be a non-negative int"):
        sample_uniform_size_coalitions(5, 2, seed=0, epoch=-1, example_indices=[0])
    with pytest.raises(TypeError, match=r"seed must be an int"):
        sample_uniform_size_coalitions(5, 2, seed=0.5, epoch=0, example_indices=[0])
    with pytest.raises(ValueError, match=r"non-negative dataset indices"):
        sample_shapley_kernel_coalitions(5, 2, seed=0, epoch=0, example_indices=[1, -2])
    with pytest.raises(ValueError, match=r"1-D sequence.*got shape \(1, 2\)"):
        sample_shapley_kernel_coalitions(5, 2, seed=0, epoch=0, example_indices=[[1, 2]])
    with pytest.raises(TypeError, match=r"must hold integers"):
        sample_shapley_kernel_coalitions(5, 2, seed=0, epoch=0, example_indices=[0.5])
    with pytest.raises(ValueError, match=r"min_size <= max_size <= P=5; got min_size=3, max"):
        sample_uniform_size_coalitions(5, 2, min_size=3, max_size=2, **kwargs)
    with pytest.raises(TypeError, match=r"min_size must be an int; got float"):
        sample_uniform_size_coalitions(5, 2, min_size=1.5, **kwargs)
    with pytest.raises(ValueError, match=r"max_size=6"):
        sample_uniform_size_coalitions(5, 2, max_size=6, **kwargs)


def test_enumeration_argument_errors():
    with pytest.raises(ValueError, match="chunk_size must be a positive int"):
        next(enumerate_coalitions(4, chunk_size=0))
