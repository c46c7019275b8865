"""Faithfulness of player-level attribution maps: insertion, deletion, AOPC, sensitivity-n.

Every function scores a map ``attributions`` of shape ``(B, P)`` (one value per player, for one
class per image) against the model it explains. Two ways to remove players:

* **Player level** (the ViT-Shapley protocol): through the model's own value function,
  ``model(pixel_values, coalition=mask)``, so a removed player is removed the way the model was
  trained to see it removed (token dropping for ViTs, the pixel baseline for CNNs). Any callable
  ``coalition_values(masks) -> values`` with ``masks`` bool ``(B, M, P)`` and ``values``
  ``(B, M, K)`` works; :func:`model_coalition_values` builds one for a model.
* **Pixel level** (the RISE protocol): the pixels of a removed player are replaced by a baseline
  (a constant in the model's normalized input space, 0 by default) and the plain forward runs,
  so any image classifier can be scored, including ones without a value function.

Curves walk through the players in the order of the map, most relevant first, one player per
step: ``P + 1`` points, from no player to all (insertion) or from all to none (deletion). Ties
are broken by player index (a stable sort). The score is the class ``targets`` (usually the
predicted class) as a softmax probability (``output="probability"``, the protocol's default) or
as a logit (``output="logit"``, the quantity Shapley values explain).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from .stats import pearson_rows

__all__ = [
    "CoalitionValues",
    "aopc",
    "area_under_curve",
    "curve_masks",
    "model_coalition_values",
    "pixel_curve",
    "player_curve",
    "player_pixel_index",
    "random_order_auc",
    "ranking_share",
    "removal_drops",
    "sample_removal_subsets",
    "sensitivity_n",
    "sensitivity_n_from_drops",
]

CoalitionValues = Callable[[torch.Tensor], torch.Tensor]
_OUTPUTS = ("probability", "logit")


# ---------------------------------------------------------------------------- checks
def check_attributions(attributions: torch.Tensor, name: str = "attributions") -> torch.Tensor:
    """Check a ``(B, P)`` player map (B >= 1, P >= 2, finite) and return it as float64."""
    if not isinstance(attributions, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape (B, P); got {type(attributions)}.")
    if attributions.ndim != 2:
        raise ValueError(
            f"{name} must have shape (B, P), one value per player of each image; got shape "
            f"{tuple(attributions.shape)}. Pick one class per image first, e.g. "
            "shapley_values[torch.arange(B), :, predicted]."
        )
    if attributions.shape[0] == 0:
        raise ValueError(f"{name} is an empty batch (B = 0).")
    if attributions.shape[1] < 2:
        raise ValueError(f"{name} needs at least 2 players; got P = {attributions.shape[1]}.")
    if not torch.isfinite(attributions).all():
        raise ValueError(f"{name} contains NaN or infinite values.")
    return attributions.detach().double()


def _check_targets(targets: torch.Tensor | Sequence[int], batch_size: int) -> torch.Tensor:
    targets = torch.as_tensor(targets, dtype=torch.long)
    if targets.shape != (batch_size,):
        raise ValueError(
            f"targets must have shape ({batch_size},), one class per image; got "
            f"{tuple(targets.shape)}."
        )
    return targets


def _check_output(output: str) -> None:
    if output not in _OUTPUTS:
        raise ValueError(f"output must be one of {_OUTPUTS}; got {output!r}.")


def _check_mode(mode: str) -> None:
    if mode not in ("insertion", "deletion"):
        raise ValueError(f"mode must be 'insertion' or 'deletion'; got {mode!r}.")


def _score(values: torch.Tensor, targets: torch.Tensor, output: str) -> torch.Tensor:
    """(B, M, K) values -> (B, M) score of each image's target class."""
    values = values.double()
    if targets.max() >= values.shape[-1] or targets.min() < 0:
        raise ValueError(
            f"targets must lie in [0, {values.shape[-1] - 1}]; got values in "
            f"[{int(targets.min())}, {int(targets.max())}]."
        )
    if output == "probability":
        values = values.softmax(-1)
    index = targets.to(values.device).view(-1, 1, 1).expand(-1, values.shape[1], 1)
    return values.gather(-1, index)[..., 0].cpu()


# ---------------------------------------------------------------------------- value functions
def model_coalition_values(
    model: torch.nn.Module, pixel_values: torch.Tensor, *, chunk_size: int = 1024
) -> CoalitionValues:
    """The value function of ``model`` on a batch: bool ``(B, M, P)`` -> ``(B, M, K)`` logits.

    Goes through the public ``model(pixel_values, coalition=masks)``, so it works for every
    family (token removal or pixel baseline) and prediction mode; ``M`` is cut into chunks of
    ``chunk_size`` coalitions per call.
    """

    @torch.no_grad()
    def values(masks: torch.Tensor) -> torch.Tensor:
        masks = masks.to(pixel_values.device)
        parts = [
            model(pixel_values, coalition=masks[:, start : start + chunk_size]).logits
            for start in range(0, masks.shape[1], chunk_size)
        ]
        return torch.cat(parts, dim=1)

    return values


# ---------------------------------------------------------------------------- curves
def curve_masks(attributions: torch.Tensor, mode: str = "insertion") -> torch.Tensor:
    """Coalitions of an insertion or deletion curve: ``(B, P)`` map -> bool ``(B, P + 1, P)``.

    Step ``k`` of insertion holds the ``k`` most relevant players (step 0 is the empty
    coalition); step ``k`` of deletion holds all but the ``k`` most relevant (step 0 is the full
    coalition). ``True`` = present.
    """
    _check_mode(mode)
    attributions = check_attributions(attributions)
    B, P = attributions.shape
    order = attributions.argsort(dim=1, descending=True, stable=True)  # most relevant first
    position = torch.empty_like(order)
    position.scatter_(1, order, torch.arange(P).expand(B, -1).contiguous())
    steps = torch.arange(P + 1)
    first_k = position[:, None, :] < steps[None, :, None]  # (B, P + 1, P)
    return first_k if mode == "insertion" else ~first_k


def player_curve(
    coalition_values: CoalitionValues,
    attributions: torch.Tensor,
    targets: torch.Tensor | Sequence[int],
    *,
    mode: str = "insertion",
    output: str = "probability",
) -> torch.Tensor:
    """Insertion or deletion curve through a value function: ``(B, P + 1)`` float64.

    Args:
        coalition_values: bool ``(B, M, P)`` -> ``(B, M, K)`` (see :func:`model_coalition_values`).
        attributions: ``(B, P)`` player map of each image's target class.
        targets: ``(B,)`` the class whose score is tracked (usually the predicted class).
        mode: ``"insertion"`` (from no player to all) or ``"deletion"`` (from all to none).
        output: ``"probability"`` (softmax over classes) or ``"logit"``.
    """
    _check_output(output)
    masks = curve_masks(attributions, mode)
    targets = _check_targets(targets, masks.shape[0])
    values = coalition_values(masks)
    if values.ndim != 3 or values.shape[:2] != masks.shape[:2]:
        raise ValueError(
            f"coalition_values must return (B, M, K) = ({masks.shape[0]}, {masks.shape[1]}, K) "
            f"for masks of shape {tuple(masks.shape)}; got {tuple(values.shape)}."
        )
    return _score(values, targets, output)


def player_pixel_index(
    players_grid: Sequence[int], image_size: Sequence[int], device=None
) -> torch.Tensor:
    """``(H, W)`` long: the player of each pixel, row-major over ``players_grid``.

    Pixel row ``r`` belongs to player row ``floor(r * h / H)`` (exact blocks when ``h`` divides
    ``H``, the case of every supported backbone).
    """
    (h, w), (H, W) = (int(s) for s in players_grid), (int(s) for s in image_size)
    if not (1 <= h <= H and 1 <= w <= W):
        raise ValueError(f"players_grid {tuple(players_grid)} does not fit an image of {H} x {W}.")
    rows = torch.arange(H, device=device) * h // H
    cols = torch.arange(W, device=device) * w // W
    return rows[:, None] * w + cols[None, :]


@torch.no_grad()
def pixel_curve(
    forward: Callable[[torch.Tensor], torch.Tensor],
    pixel_values: torch.Tensor,
    attributions: torch.Tensor,
    targets: torch.Tensor | Sequence[int],
    players_grid: Sequence[int],
    *,
    mode: str = "insertion",
    output: str = "probability",
    baseline: float | torch.Tensor = 0.0,
    batch_size: int = 256,
) -> torch.Tensor:
    """Insertion or deletion curve with pixel baseline replacement (RISE): ``(B, P + 1)``.

    The pixels of absent players take ``baseline`` (a float, or a tensor broadcastable to
    ``(B, C, H, W)``, e.g. a blurred copy of the images) and ``forward(images) -> (n, K)`` logits
    is run on every step. Cost: ``P + 1`` forward passes per image.
    """
    _check_output(output)
    if pixel_values.ndim != 4:
        raise ValueError(f"pixel_values must be (B, C, H, W); got {tuple(pixel_values.shape)}.")
    masks = curve_masks(attributions, mode)  # (B, S, P)
    B, S, P = masks.shape
    if pixel_values.shape[0] != B:
        raise ValueError(
            f"pixel_values has {pixel_values.shape[0]} images but attributions has {B} rows."
        )
    h, w = (int(s) for s in players_grid)
    if h * w != P:
        raise ValueError(f"players_grid {(h, w)} has {h * w} players but attributions has {P}.")
    targets = _check_targets(targets, B)
    device = pixel_values.device
    index = player_pixel_index((h, w), pixel_values.shape[-2:], device=device)
    base = torch.as_tensor(baseline, dtype=pixel_values.dtype, device=device)
    base = base.expand_as(pixel_values)
    masks = masks.to(device)
    flat_image = torch.arange(B, device=device).repeat_interleave(S)
    flat_masks = masks.reshape(B * S, P)
    logits = []
    for start in range(0, B * S, batch_size):
        sl = slice(start, start + batch_size)
        keep = flat_masks[sl][:, index][:, None]  # (n, 1, H, W)
        images = torch.where(keep, pixel_values[flat_image[sl]], base[flat_image[sl]])
        logits.append(forward(images).float())
    values = torch.cat(logits).reshape(B, S, -1)
    return _score(values, targets, output)


def area_under_curve(curve: torch.Tensor) -> torch.Tensor:
    """Trapezoidal area of ``(B, L + 1)`` curves over ``[0, 1]`` (equal steps): ``(B,)``."""
    if curve.ndim != 2 or curve.shape[1] < 2:
        raise ValueError(f"curve must have shape (B, L + 1) with L >= 1; got {tuple(curve.shape)}.")
    curve = curve.double()
    return ((curve[:, 1:] + curve[:, :-1]) / 2).mean(dim=1)


def random_order_auc(
    coalition_values: CoalitionValues,
    targets: torch.Tensor | Sequence[int],
    num_players: int,
    *,
    mode: str = "insertion",
    output: str = "probability",
    num_orders: int = 16,
    seed: int = 0,
) -> torch.Tensor:
    """Area under the curve of a random player order, averaged over ``num_orders`` orders per
    image: ``(B,)`` float64 (the "random" end of :func:`ranking_share`; one order alone is a
    noisy reference for one image)."""
    targets = torch.as_tensor(targets)
    generator = torch.Generator().manual_seed(seed)
    areas = [
        area_under_curve(
            player_curve(
                coalition_values,
                torch.rand(targets.shape[0], num_players, generator=generator),
                targets,
                mode=mode,
                output=output,
            )
        )
        for _ in range(num_orders)
    ]
    return torch.stack(areas).mean(0)


def ranking_share(
    auc: torch.Tensor,
    random_auc: torch.Tensor,
    truth_auc: torch.Tensor,
    *,
    min_gap: float = 0.05,
) -> torch.Tensor:
    """How much of the way from a random order to the truth's order a map's curve goes, per
    image: ``(AUC - AUC_random) / (AUC_truth - AUC_random)``: ``(B,)`` float64.

    The same formula serves insertion (higher is better) and deletion (lower is better): 1 is
    the truth's ranking, 0 a random one. NaN where ``|AUC_truth - AUC_random| < min_gap`` (a
    game whose ranking barely matters says nothing about the map).
    """
    auc, random_auc, truth_auc = (torch.as_tensor(a).double() for a in (auc, random_auc, truth_auc))
    if not auc.shape == random_auc.shape == truth_auc.shape:
        raise ValueError(
            "auc, random_auc and truth_auc must have the same shape (B,); got "
            f"{tuple(auc.shape)}, {tuple(random_auc.shape)}, {tuple(truth_auc.shape)}."
        )
    gap = truth_auc - random_auc
    share = (auc - random_auc) / gap
    return torch.where(gap.abs() >= min_gap, share, torch.full_like(share, float("nan")))


def aopc(deletion_curve: torch.Tensor) -> torch.Tensor:
    """Area over the most-relevant-first perturbation curve (Samek et al. 2017): ``(B,)``.

    ``AOPC = 1 / (L + 1) * sum_{k=0}^{L} (f(x^(0)) - f(x^(k)))`` for a deletion curve of
    ``L + 1`` points; higher means the first players removed mattered more.
    """
    if deletion_curve.ndim != 2 or deletion_curve.shape[1] < 2:
        raise ValueError(
            f"deletion_curve must have shape (B, L + 1) with L >= 1; got "
            f"{tuple(deletion_curve.shape)}."
        )
    curve = deletion_curve.double()
    return (curve[:, :1] - curve).mean(dim=1)


# ---------------------------------------------------------------------------- sensitivity-n
def sample_removal_subsets(
    num_players: int, sizes: Sequence[int], num_subsets: int, *, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Uniform random subsets to remove: bool ``(len(sizes) * num_subsets, P)`` and their sizes.

    The same subsets serve every image and every explainer, so the model is called once per
    image for all explainers.
    """
    if num_subsets < 2:
        raise ValueError(
            f"num_subsets must be >= 2 (a correlation needs 2 points); got {num_subsets}."
        )
    bad = [n for n in sizes if not 1 <= int(n) <= num_players - 1]
    if bad or not len(sizes):
        raise ValueError(
            f"subset sizes must lie in [1, P - 1] = [1, {num_players - 1}]; got {list(sizes)}."
        )
    generator = torch.Generator().manual_seed(seed)
    rows, row_sizes = [], []
    for n in sizes:
        ranks = torch.rand(num_subsets, num_players, generator=generator).argsort(dim=1)
        rows.append(ranks < int(n))
        row_sizes.append(torch.full((num_subsets,), int(n)))
    return torch.cat(rows), torch.cat(row_sizes)


def removal_drops(
    coalition_values: CoalitionValues,
    removed: torch.Tensor,
    targets: torch.Tensor | Sequence[int],
    *,
    output: str = "logit",
) -> torch.Tensor:
    """``f(x) - f(x without S)`` for every subset ``S``: ``removed`` bool (R, P) -> (B, R)."""
    _check_output(output)
    removed = removed.bool()
    num_images = len(torch.as_tensor(targets))
    targets = _check_targets(targets, num_images)
    full = torch.ones(1, removed.shape[1], dtype=torch.bool)
    masks = torch.cat([full, ~removed]).expand(num_images, -1, -1)
    scores = _score(coalition_values(masks), targets, output)
    return scores[:, :1] - scores[:, 1:]


def sensitivity_n_from_drops(
    attributions: torch.Tensor, removed: torch.Tensor, sizes: torch.Tensor, drops: torch.Tensor
) -> dict[int, torch.Tensor]:
    """Sensitivity-n (Ancona et al. 2018) from precomputed drops: ``{n: (B,) Pearson r}``.

    For each subset size ``n``, the per-image Pearson correlation, over the sampled subsets
    ``S`` of that size, between ``sum_{i in S} attributions_i`` and the output drop
    ``f(x) - f(x without S)``. NaN where either side is constant over the subsets.
    """
    attributions = check_attributions(attributions)
    if drops.shape != (attributions.shape[0], removed.shape[0]):
        raise ValueError(
            f"drops must have shape (B, R) = ({attributions.shape[0]}, {removed.shape[0]}); got "
            f"{tuple(drops.shape)}."
        )
    sums = attributions @ removed.double().T  # (B, R)
    out = {}
    for n in sizes.unique().tolist():
        pick = sizes == n
        out[int(n)] = pearson_rows(sums[:, pick], drops[:, pick].double())
    return out


def sensitivity_n(
    coalition_values: CoalitionValues,
    attributions: torch.Tensor,
    targets: torch.Tensor | Sequence[int],
    sizes: Sequence[int],
    *,
    num_subsets: int = 32,
    seed: int = 0,
    output: str = "logit",
) -> dict[int, torch.Tensor]:
    """Sensitivity-n of a map through a value function: ``{n: (B,) Pearson r}``.

    Equals 1 for every ``n`` when the game is additive and the map holds its Shapley values.
    """
    attributions = check_attributions(attributions)
    removed, subset_sizes = sample_removal_subsets(
        attributions.shape[1], sizes, num_subsets, seed=seed
    )
    drops = removal_drops(coalition_values, removed, targets, output=output)
    return sensitivity_n_from_drops(attributions, removed, subset_sizes, drops)
