"""Insertion/deletion curves, AUC, AOPC and sensitivity-n, against games with known answers.

An additive game ``v(S) = b + sum_{i in S} w_i`` has Shapley values ``w``; its curves are partial
sums of the sorted ``w``, so every number below is computed independently from ``w``.
"""

from __future__ import annotations

import itertools

import pytest
import torch

from hf_shapley.evaluation import (
    aopc,
    area_under_curve,
    curve_masks,
    model_coalition_values,
    pixel_curve,
    player_curve,
    player_pixel_index,
    random_order_auc,
    ranking_share,
    sensitivity_n,
)


class AdditiveGame:
    """Per image b: (K,), w: (P, K); values(masks (B, M, P)) -> (B, M, K)."""

    def __init__(self, batch: int, players: int, classes: int, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        self.base = torch.randn(batch, classes, generator=g, dtype=torch.float64)
        self.weights = torch.randn(batch, players, classes, generator=g, dtype=torch.float64)

    def __call__(self, masks: torch.Tensor) -> torch.Tensor:
        return self.base[:, None] + torch.einsum("bmp,bpk->bmk", masks.double(), self.weights)


def _trapezoid(points: list[float]) -> float:
    steps = len(points) - 1
    return sum((points[k] + points[k + 1]) / 2 for k in range(steps)) / steps


def test_curve_masks_hold_the_top_players():
    attributions = torch.tensor([[0.1, 3.0, -1.0, 2.0]])
    insertion = curve_masks(attributions, "insertion")[0]
    deletion = curve_masks(attributions, "deletion")[0]
    order = [1, 3, 0, 2]  # most relevant first
    for k in range(5):
        expected = torch.zeros(4, dtype=torch.bool)
        expected[order[:k]] = True
        assert torch.equal(insertion[k], expected)
        assert torch.equal(deletion[k], ~expected)


def test_ties_are_broken_by_player_index():
    masks = curve_masks(torch.zeros(1, 3), "insertion")[0]
    assert masks[1].tolist() == [True, False, False]
    assert masks[2].tolist() == [True, True, False]


def test_insertion_curve_of_an_additive_game_is_the_sorted_partial_sums():
    game = AdditiveGame(batch=3, players=6, classes=4)
    targets = torch.tensor([0, 2, 3])
    phi = game.weights[torch.arange(3), :, targets]  # exact Shapley values of the target class
    curve = player_curve(game, phi, targets, mode="insertion", output="logit")
    auc = area_under_curve(curve)
    for b in range(3):
        w = sorted(phi[b].tolist(), reverse=True)
        points = [float(game.base[b, targets[b]]) + sum(w[:k]) for k in range(7)]
        assert curve[b].tolist() == pytest.approx(points)
        assert float(auc[b]) == pytest.approx(_trapezoid(points))


def test_oracle_order_bounds_every_other_order():
    """For an additive game the true order has the highest insertion AUC and the lowest deletion
    AUC of all P! orders; the reversed order has the lowest insertion AUC."""
    game = AdditiveGame(batch=1, players=5, classes=3, seed=1)
    target = torch.tensor([1])
    phi = game.weights[:, :, 1]
    aucs = {"insertion": [], "deletion": []}
    for perm in itertools.permutations(range(5)):
        ranking = torch.empty(1, 5, dtype=torch.float64)
        ranking[0, list(perm)] = torch.arange(5, 0, -1, dtype=torch.float64)
        for mode in aucs:
            curve = player_curve(game, ranking, target, mode=mode, output="logit")
            aucs[mode].append(float(area_under_curve(curve)[0]))
    oracle_ins = float(area_under_curve(player_curve(game, phi, target, output="logit"))[0])
    oracle_del = float(
        area_under_curve(player_curve(game, phi, target, mode="deletion", output="logit"))[0]
    )
    reversed_ins = float(area_under_curve(player_curve(game, -phi, target, output="logit"))[0])
    assert oracle_ins == pytest.approx(max(aucs["insertion"]))
    assert oracle_del == pytest.approx(min(aucs["deletion"]))
    assert reversed_ins == pytest.approx(min(aucs["insertion"]))


def test_probability_output_is_the_softmax_of_the_values():
    game = AdditiveGame(batch=2, players=4, classes=3, seed=2)
    phi = game.weights[:, :, 0]
    targets = torch.tensor([0, 0])
    logits = player_curve(game, phi, targets, output="logit")
    probs = player_curve(game, phi, targets, output="probability")
    masks = curve_masks(phi, "insertion")
    expected = game(masks).softmax(-1)[..., 0]
    assert torch.allclose(probs, expected)
    assert not torch.allclose(probs, logits)


def test_area_and_aopc_of_known_curves():
    assert area_under_curve(torch.linspace(0, 1, 11)[None]).item() == pytest.approx(0.5)
    assert area_under_curve(torch.full((1, 5), 0.3)).item() == pytest.approx(0.3)
    curve = torch.tensor([[1.0, 0.5, 0.25, 0.0]])
    # 1/(L+1) sum_k (f0 - fk) with L = 3: (0 + 0.5 + 0.75 + 1) / 4
    assert aopc(curve).item() == pytest.approx(0.5625)


def test_sensitivity_n_is_one_for_exact_values_of_an_additive_game():
    game = AdditiveGame(batch=2, players=8, classes=3, seed=3)
    targets = torch.tensor([2, 1])
    phi = game.weights[torch.arange(2), :, targets]
    result = sensitivity_n(game, phi, targets, sizes=[1, 3, 7], num_subsets=16, output="logit")
    assert set(result) == {1, 3, 7}
    for r in result.values():
        assert torch.allclose(r, torch.ones(2, dtype=torch.float64))
    noisy = phi + 2.0 * torch.randn(phi.shape, generator=torch.Generator().manual_seed(0))
    noisy_r = sensitivity_n(game, noisy, targets, sizes=[3], num_subsets=16, output="logit")[3]
    assert (noisy_r < 0.99).all()


class LinearPixelModel(torch.nn.Module):
    """logits = W . pixels: replacing a player's pixels by 0 removes exactly its contribution."""

    def __init__(self, shape=(3, 8, 8), classes=3):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.randn(classes, *shape))

    def forward(self, pixel_values):
        return torch.einsum("bchw,kchw->bk", pixel_values, self.weight)


def test_pixel_curve_equals_player_curve_when_removal_is_pixel_replacement():
    torch.manual_seed(0)
    model = LinearPixelModel()
    x = torch.randn(2, 3, 8, 8)
    grid = (2, 4)
    index = player_pixel_index(grid, (8, 8))

    def coalition_values(masks):  # (B, M, P): keep the pixels of present players
        keep = masks[:, :, index][:, :, None]  # (B, M, 1, H, W)
        images = torch.where(keep, x[:, None], torch.zeros(()))
        return model(images.flatten(0, 1)).reshape(2, masks.shape[1], -1).detach()

    attributions = torch.randn(2, 8)
    targets = torch.tensor([1, 2])
    for mode in ("insertion", "deletion"):
        expected = player_curve(coalition_values, attributions, targets, mode=mode)
        got = pixel_curve(model, x, attributions, targets, grid, mode=mode, batch_size=5)
        assert torch.allclose(got, expected, atol=1e-6)


def test_player_pixel_index_blocks():
    index = player_pixel_index((2, 2), (4, 6))
    assert index.tolist() == [[0, 0, 0, 1, 1, 1]] * 2 + [[2, 2, 2, 3, 3, 3]] * 2


def test_curves_through_a_real_model_start_and_end_at_its_predictions(make_model, single_thread):
    model = make_model("vit", players_grid=(2, 2))
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        out = model(x)
    targets = out.logits.argmax(-1)
    phi = out.shapley_values[torch.arange(2), :, targets]
    values = model_coalition_values(model, x, chunk_size=2)
    insertion = player_curve(values, phi, targets, output="logit")
    deletion = player_curve(values, phi, targets, mode="deletion", output="logit")
    full = out.logits[torch.arange(2), targets].double()
    empty = out.base_values[torch.arange(2), targets].double()
    assert torch.allclose(insertion[:, -1], full, atol=1e-4)
    assert torch.allclose(deletion[:, 0], full, atol=1e-4)
    assert torch.allclose(insertion[:, 0], empty, atol=1e-4)
    pixels = pixel_curve(lambda z: model(z).logits, x, phi, targets, (2, 2), output="logit")
    with torch.no_grad():
        blank = model(torch.zeros_like(x)).logits[torch.arange(2), targets].double()
    assert torch.allclose(pixels[:, -1], full, atol=1e-4)
    assert torch.allclose(pixels[:, 0], blank, atol=1e-4)


def test_bad_input_is_refused():
    game = AdditiveGame(batch=2, players=4, classes=3)
    with pytest.raises(ValueError, match=r"\(B, P\)"):
        player_curve(game, torch.zeros(2, 4, 3), torch.tensor([0, 0]))
    with pytest.raises(ValueError, match="empty batch"):
        curve_masks(torch.zeros(0, 4))
    with pytest.raises(ValueError, match="targets must have shape"):
        player_curve(game, torch.zeros(2, 4), torch.tensor([0]))
    with pytest.raises(ValueError, match="mode"):
        curve_masks(torch.zeros(2, 4), "both")
    with pytest.raises(ValueError, match="sizes"):
        sensitivity_n(game, torch.zeros(2, 4), torch.tensor([0, 0]), sizes=[4])
    with pytest.raises(ValueError, match="players_grid"):
        pixel_curve(
            lambda z: z.sum((1, 2, 3))[:, None],
            torch.zeros(2, 3, 8, 8),
            torch.zeros(2, 4),
            [0, 0],
            (3, 3),
        )


def test_random_order_auc_is_exact_for_a_size_only_game_and_unbiased_for_an_additive_one():
    # v(S) = f(|S|): every order gives the same curve, so the average is that one curve.
    def size_game(masks: torch.Tensor) -> torch.Tensor:
        size = masks.double().sum(-1, keepdim=True)
        return torch.cat([size**2, -size], dim=-1)  # (B, M, 2)

    targets = torch.tensor([0, 1])
    expected = area_under_curve(player_curve(size_game, torch.randn(2, 5), targets, output="logit"))
    got = random_order_auc(size_game, targets, 5, output="logit", num_orders=3)
    assert torch.allclose(got, expected)
    # Additive game: at step k a random order holds k/P of the total on average, so the
    # expected insertion AUC is b + sum(w) / 2 and the deletion AUC the same.
    game = AdditiveGame(batch=2, players=6, classes=2, seed=3)
    for mode in ("insertion", "deletion"):
        got = random_order_auc(game, targets, 6, mode=mode, output="logit", num_orders=4000)
        w = game.weights[torch.arange(2), :, targets].sum(1)
        assert torch.allclose(got, game.base[torch.arange(2), targets] + w / 2, atol=0.03)


def test_ranking_share_runs_from_random_to_the_truth():
    random_auc = torch.tensor([0.6, 0.6, 0.5, 0.6])
    truth_auc = torch.tensor([0.9, 0.2, 0.52, 0.9])  # insertion, deletion, flat game, insertion
    auc = torch.tensor([0.75, 0.3, 0.9, 0.9])
    share = ranking_share(auc, random_auc, truth_auc)
    assert share[0].item() == pytest.approx(0.5)  # half way up
    assert share[1].item() == pytest.approx(0.75)  # deletion: 0.3 is 3/4 of the way to 0.2
    assert torch.isnan(share[2])  # |0.52 - 0.5| < 0.05: the ranking barely matters
    assert share[3].item() == pytest.approx(1.0)
    assert ranking_share(random_auc, random_auc, truth_auc)[[0, 1, 3]].eq(0).all()
    with pytest.raises(ValueError, match="same shape"):
        ranking_share(auc, random_auc[:2], truth_auc)
