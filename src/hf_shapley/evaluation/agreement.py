"""Agreement on the explained quantity of the faithfulness targets, as one report.

The explained quantity is the predicted class's logit centred over classes: the direction
every class shares is invisible to softmax, and it dominates raw-logit agreement (a model whose
raw r is 0.95 can rank patches no better than chance once that direction is removed). Per
image: Pearson r and Spearman r over players; over all images: the pooled relative error

    sqrt(sum |phi - t|^2 / sum |t - mean_P t|^2),

which is 0 for the truth, 1 for a flat map at the right mean and does not reward a map for
matching the per-image mean (efficiency gives that for free).

:func:`measure_agreement` is what the main job and the recipe study report: the truth is
KernelSHAP with a fixed budget of paired evaluations on many images, checked against exact
enumeration on a few of them. At P = 16 the pooled error of the truth against exact enumeration
depends on the game: 1,024 evaluations gave 0.029 on a soft-voting model
(``benchmarks/results/truth_check_v2_main_job.json``) but 0.109 on the explainer recipe's
classifier game, where 4,096 give 0.046 (``truth_check_recipe_main_job.json``), hence the
default.
"""

from __future__ import annotations

import torch

from .stats import bootstrap_mean_interval, pearson_rows, rank_with_ties
from .truth import MAX_EXACT_PLAYERS, exact_model_shapley_values, model_shapley_truth

#: KernelSHAP evaluations per image for the study truth (paired: half as many forward passes).
TRUTH_EVALUATIONS = 4096


def centred_class_values(values: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    """(B, P, K) values -> (B, P) float64: each image's values for ``classes[b]``, centred
    over classes first."""
    values = values.detach().double().cpu()
    values = values - values.mean(-1, keepdim=True)
    classes = torch.as_tensor(classes, dtype=torch.long).cpu()
    return values[torch.arange(values.shape[0]), :, classes]


def pooled_relative_error(estimate: torch.Tensor, truth: torch.Tensor) -> float:
    """``sqrt(sum |e - t|^2 / sum |t - mean_P t|^2)`` over (B, P) maps."""
    if estimate.shape != truth.shape or estimate.ndim != 2:
        raise ValueError(
            f"estimate and truth must both be (B, P) maps; got {tuple(estimate.shape)} and "
            f"{tuple(truth.shape)}."
        )
    spread = (truth - truth.mean(1, keepdim=True)).pow(2).sum()
    return float(((estimate - truth).pow(2).sum() / spread.clamp_min(1e-24)).sqrt())


def map_summary(estimate: torch.Tensor, truth: torch.Tensor, prefix: str = "") -> dict:
    """Mean per-image Pearson and Spearman r (with 95% bootstrap intervals over images) and the
    pooled relative error of two (B, P) maps, as plain floats."""
    pearson = pearson_rows(estimate, truth)
    spearman = pearson_rows(rank_with_ties(estimate), rank_with_ties(truth))
    return {
        f"{prefix}pearson_r": float(pearson.nanmean()),
        f"{prefix}pearson_r_ci95": list(bootstrap_mean_interval(pearson)),
        f"{prefix}spearman_r": float(spearman.nanmean()),
        f"{prefix}spearman_r_ci95": list(bootstrap_mean_interval(spearman)),
        f"{prefix}pooled_relative_error": pooled_relative_error(estimate, truth),
    }


@torch.no_grad()
def measure_agreement(
    model,
    pixel_values: torch.Tensor,
    *,
    num_exact: int = 2,
    kernel_evaluations: int = TRUTH_EVALUATIONS,
    seed: int = 12345,
    progress: bool = False,
) -> dict:
    """Agreement of the model's one-pass values with the truth of its own game.

    Args:
        model: a ``ShapleyForImageClassification``.
        pixel_values: (B, C, H, W) held-out images (never used to pick a checkpoint).
        num_exact: also enumerate all ``2**P`` coalitions on the first ``num_exact`` images
            (skipped for ``P > 16``): the final figures, and a check of the KernelSHAP truth.
        kernel_evaluations: paired KernelSHAP evaluations per image for the truth.
        seed: seed of the KernelSHAP coalitions.

    Returns:
        A dict of plain numbers: ``pearson_r``, ``spearman_r`` (with ``_ci95``) and
        ``pooled_relative_error`` on the centred predicted class against KernelSHAP;
        ``raw_pearson_r`` on raw logits; with ``num_exact``, the same three against the exact
        values (``exact_`` prefix) and ``truth_error_vs_exact``, KernelSHAP's own pooled
        error; and the counts.
    """
    if pixel_values.shape[0] < 2:
        raise ValueError(
            f"measure_agreement needs at least 2 images for intervals; got {pixel_values.shape[0]}."
        )
    if kernel_evaluations < 2 * model.num_players:
        raise ValueError(
            f"kernel_evaluations={kernel_evaluations} is too few for P={model.num_players} "
            f"players; use at least {2 * model.num_players} (the default is 4,096)."
        )
    was_training = model.training
    model.eval()
    try:
        out = model(pixel_values)
        classes = out.logits.argmax(-1).cpu()
        truth = model_shapley_truth(
            model,
            pixel_values,
            max_exact_players=0,
            tolerance=0.0,
            max_evaluations=kernel_evaluations,
            seed=seed,
        ).values
        phi = centred_class_values(out.shapley_values, classes)
        t = centred_class_values(truth, classes)
        rows = torch.arange(len(classes))
        raw = pearson_rows(
            out.shapley_values.double().cpu()[rows, :, classes], truth.double()[rows, :, classes]
        )
        report = {
            **map_summary(phi, t),
            "raw_pearson_r": float(raw.nanmean()),
            "num_images": int(pixel_values.shape[0]),
            "truth": f"KernelSHAP, {kernel_evaluations} paired evaluations per image",
        }
        exact_count = min(num_exact, pixel_values.shape[0])
        if exact_count >= 1 and model.num_players <= MAX_EXACT_PLAYERS:
            exact = exact_model_shapley_values(model, pixel_values[:exact_count], progress=progress)
            exact_t = centred_class_values(exact, classes[:exact_count])
            exact_summary = map_summary(phi[:exact_count], exact_t, prefix="exact_")
            if exact_count < 2:  # no interval from one image
                exact_summary = {k: v for k, v in exact_summary.items() if "ci95" not in k}
            report.update(exact_summary)
            report["truth_error_vs_exact"] = pooled_relative_error(t[:exact_count], exact_t)
            report["num_exact_images"] = exact_count
    finally:
        model.train(was_training)
    return report


__all__ = [
    "TRUTH_EVALUATIONS",
    "centred_class_values",
    "map_summary",
    "measure_agreement",
    "pooled_relative_error",
]


@torch.no_grad()
def measure_clip_agreement(
    model,
    pixel_values: torch.Tensor,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    *,
    progress: bool = False,
) -> dict:
    """Agreement of a ``ShapleyCLIPModel``'s one-pass values with the exact Shapley values of its
    own image-text games, on pairs: image ``b`` with text ``b`` (its caption), and with every
    other text of the batch (texts it does not match).

    The truth enumerates all ``2**P`` coalitions of each image's vector game ``u(x_S)`` once and
    projects it on each text's embedding (Shapley values are linear in the game). The explained
    quantity is the score itself: a shift shared by every player does not move per-image r, and
    the pooled error measures spread around each image's mean.

    Args:
        model: a ``ShapleyCLIPModel`` with ``P <= 16`` players.
        pixel_values: (B, C, H, W) held-out images, B >= 2.
        input_ids, attention_mask: (B, L) one text per image, text ``b`` matching image ``b``.

    Returns:
        ``pearson_r``, ``spearman_r`` (with ``_ci95``) and ``pooled_relative_error`` on the
        matching pairs; the same with the ``other_texts_`` prefix on the B * (B - 1)
        non-matching pairs; ``truth`` and ``num_images``.
    """
    B = pixel_values.shape[0]
    if B < 2 or input_ids.shape[0] != B:
        raise ValueError(
            "measure_clip_agreement needs B >= 2 images and one text per image (text b matches "
            f"image b); got {B} images and {input_ids.shape[0]} texts."
        )
    if model.num_players > MAX_EXACT_PLAYERS:
        raise ValueError(
            f"measure_clip_agreement enumerates all 2**P coalitions: P = {model.num_players} is "
            f"above {MAX_EXACT_PLAYERS}; use a coarser players_grid for the check."
        )
    was_training = model.training
    model.eval()
    try:
        out = model(pixel_values, input_ids=input_ids, attention_mask=attention_mask)
        vectors = exact_model_shapley_values(model, pixel_values, progress=progress)  # (B, P, D)
    finally:
        model.train(was_training)
    truth = torch.einsum("bpd,td->bpt", vectors, out.text_embeds.detach().double().cpu())
    phi = out.shapley_values.detach().double().cpu()  # (B, P, T)
    match = torch.arange(B)
    other = ~torch.eye(B, dtype=torch.bool)
    # (B * (B - 1), P) maps of the non-matching pairs, image-major.
    other_phi = phi.permute(0, 2, 1)[other]
    other_truth = truth.permute(0, 2, 1)[other]
    return {
        **map_summary(phi[match, :, match], truth[match, :, match]),
        **map_summary(other_phi, other_truth, prefix="other_texts_"),
        "truth": f"exact (all 2^{model.num_players} coalitions of the vector game)",
        "num_images": B,
    }
