"""Pointing game and mask AUROC on hand-built masks, against a brute-force count."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from hf_shapley.evaluation import mask_auroc, mask_to_players, pointing_game


def test_mask_to_players_fractions():
    mask = np.zeros((1, 8, 8), dtype=np.uint8)
    mask[0, :4, :4] = 255  # all of player 0 (2 x 2 grid of 4 x 4 blocks)
    mask[0, 4:6, 4:8] = 255  # half of player 3
    fractions = mask_to_players(mask, (2, 2))
    assert fractions.tolist() == [[1.0, 0.0, 0.0, 0.5]]


def test_pointing_game_hits_misses_and_ties():
    objects = torch.tensor([[0.0, 0.3, 0.0, 0.0]] * 3 + [[0.0] * 4])
    maps = torch.tensor(
        [
            [0.1, 0.9, 0.2, 0.0],  # top player on the object: hit
            [0.9, 0.1, 0.2, 0.0],  # top player off it: miss
            [0.5, 0.5, 0.1, 0.0],  # tie between an object and a background player: miss
            [0.1, 0.9, 0.2, 0.0],  # no object: undefined
        ]
    )
    result = pointing_game(maps, objects)
    assert result[:3].tolist() == [1.0, 0.0, 0.0]
    assert torch.isnan(result[3])
    # A stricter definition of "part of the object" turns the first hit into a miss.
    assert pointing_game(maps[:1], objects[:1], min_fraction=0.5).isnan().item()


def _brute_auroc(scores, labels):
    pos = [s for s, y in zip(scores, labels, strict=True) if y]
    neg = [s for s, y in zip(scores, labels, strict=True) if not y]
    total = 0.0
    for p, n in itertools.product(pos, neg):
        total += 1.0 if p > n else 0.5 if p == n else 0.0
    return total / (len(pos) * len(neg))


def test_auroc_matches_a_brute_force_count_with_ties():
    g = torch.Generator().manual_seed(0)
    maps = torch.randint(0, 4, (6, 9), generator=g).double()  # many ties
    objects = (torch.rand(6, 9, generator=g) > 0.6).double()
    objects[:, 0] = 1.0
    objects[:, 1] = 0.0  # both classes present in every image
    got = mask_auroc(maps, objects)
    for b in range(6):
        expected = _brute_auroc(maps[b].tolist(), (objects[b] > 0).tolist())
        assert got[b].item() == pytest.approx(expected)


def test_auroc_extremes_and_undefined():
    objects = torch.tensor([[1.0, 1.0, 0.0, 0.0]])
    assert mask_auroc(torch.tensor([[2.0, 3.0, 0.0, 1.0]]), objects).item() == 1.0
    assert mask_auroc(torch.tensor([[0.0, 1.0, 2.0, 3.0]]), objects).item() == 0.0
    assert mask_auroc(torch.ones(1, 4), objects).item() == 0.5
    assert mask_auroc(torch.rand(1, 4), torch.ones(1, 4)).isnan().item()


def test_shape_mismatch_is_refused():
    with pytest.raises(ValueError, match="mask_to_players"):
        mask_auroc(torch.rand(2, 4), torch.rand(2, 9))
    with pytest.raises(ValueError, match=r"\(B, H, W\)"):
        mask_to_players(torch.zeros(8, 8), (2, 2))
