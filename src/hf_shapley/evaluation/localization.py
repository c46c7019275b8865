"""Localization of attribution maps against object masks: pointing game and mask AUROC.

Maps are player-level, ``(B, P)``, so the pixel masks are first brought to the players grid:
:func:`mask_to_players` gives the fraction of each player's pixels that belong to the object, and
a player counts as part of the object when that fraction exceeds ``min_fraction`` (default 0:
any object pixel). Both metrics only use the order of the map's values, so maps of any scale
(Shapley values, gradients, attention) are scored alike.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from .faithfulness import check_attributions, player_pixel_index

__all__ = ["mask_auroc", "mask_to_players", "pointing_game"]


def mask_to_players(masks: torch.Tensor | np.ndarray, players_grid: Sequence[int]) -> torch.Tensor:
    """Object fraction of each player: ``(B, H, W)`` masks (bool, or > 0 = object) -> ``(B, P)``.

    Masks are taken at their own resolution (an image processor's resize is a uniform scaling
    for the built-in data, so the fractions do not change); player ``i`` covers the pixels of
    :func:`~hf_shapley.evaluation.faithfulness.player_pixel_index`.
    """
    masks = torch.as_tensor(np.asarray(masks) if not isinstance(masks, torch.Tensor) else masks)
    if masks.ndim != 3:
        raise ValueError(f"masks must have shape (B, H, W); got {tuple(masks.shape)}.")
    if masks.shape[0] == 0:
        raise ValueError("masks is an empty batch (B = 0).")
    h, w = (int(s) for s in players_grid)
    index = player_pixel_index((h, w), masks.shape[-2:]).flatten()
    objects = (masks > 0).double().flatten(1)  # (B, H * W)
    inside = torch.zeros(masks.shape[0], h * w, dtype=torch.float64).index_add(1, index, objects)
    area = torch.bincount(index, minlength=h * w).double()
    return inside / area


def _labels(object_fraction: torch.Tensor, min_fraction: float, shape) -> torch.Tensor:
    if tuple(object_fraction.shape) != tuple(shape):
        raise ValueError(
            f"object_fraction must have the shape of the attributions {tuple(shape)}; got "
            f"{tuple(object_fraction.shape)}. Use mask_to_players(masks, players_grid)."
        )
    return object_fraction > min_fraction


def pointing_game(
    attributions: torch.Tensor, object_fraction: torch.Tensor, *, min_fraction: float = 0.0
) -> torch.Tensor:
    """Hit (1.0) when the top player of the map is part of the object, else 0.0: ``(B,)``.

    Images without any object player are NaN. Ties for the top value are a hit only if every
    tied player is part of the object (a constant map does not point anywhere).
    """
    attributions = check_attributions(attributions)
    labels = _labels(object_fraction, min_fraction, attributions.shape)
    top = attributions == attributions.amax(dim=1, keepdim=True)
    hit = (~top | labels).all(dim=1).double()
    return torch.where(labels.any(dim=1), hit, torch.full_like(hit, float("nan")))


def mask_auroc(
    attributions: torch.Tensor, object_fraction: torch.Tensor, *, min_fraction: float = 0.0
) -> torch.Tensor:
    """Per-image AUROC of the map as a score for "player is part of the object": ``(B,)``.

    The probability that a random object player scores above a random background player, ties
    counting one half (the Mann-Whitney statistic). NaN for images whose players are all object
    or all background.
    """
    attributions = check_attributions(attributions)
    labels = _labels(object_fraction, min_fraction, attributions.shape)
    greater = (attributions[:, :, None] > attributions[:, None, :]).double()
    ties = (attributions[:, :, None] == attributions[:, None, :]).double()
    pair = (labels[:, :, None] & ~labels[:, None, :]).double()  # (object i, background j)
    wins = ((greater + ties / 2) * pair).sum(dim=(1, 2))
    count = pair.sum(dim=(1, 2))
    return torch.where(count > 0, wins / count.clamp_min(1), torch.full_like(wins, float("nan")))
