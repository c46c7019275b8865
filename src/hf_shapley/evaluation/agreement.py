"""Agreement on the explained quantity of the faithfulness targets, as one report.

The explained quantity is the predicted class's logit centered over classes: the direction
every class shares is invisible to softmax, and it dominates raw-logit agreement (a model whose
raw r is 0.95 can rank patches no better than chance once that direction is removed). Per
image: Pearson r and Spearman r over players; over all images: the pooled relative error

    sqrt(sum |phi - t|^2 / sum |t - mean_P t|^2),

which is 0 for the truth, 1 for a flat map at the right mean and does not reward a map for
matching the per-image mean (efficiency gives that for free).

:func:`measure_agreement` is what the main job reports: the truth is paired KernelSHAP on many
images, run until its own estimated pooled error (from KernelSHAP's standard errors, on the same
explained quantity) is at most ``truth_tolerance``, and checked against exact enumeration on a
few of them where P <= 16. Against a truth that has not converged within the budget no
agreement is reported: the report says so, with the budget that would do. At P = 16 the
estimate tracks the truth's actual error against exact enumeration closely (on a main-job
classifier, 8 images: 0.159 / 0.112 / 0.081 / 0.057 estimated against 0.152 / 0.126 / 0.080 /
0.049 actual at 512 to 4,096 evaluations; ``tests/test_evaluation_agreement.py`` checks it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .stats import bootstrap_mean_interval, pearson_rows, rank_with_ties
from .truth import MAX_EXACT_PLAYERS, exact_model_shapley_values

#: KernelSHAP evaluations per image for the study truth (paired: half as many forward passes).
TRUTH_EVALUATIONS = 4096
#: The largest estimated pooled error of a KernelSHAP truth that agreement is reported against.
TRUTH_TOLERANCE = 0.1


def centered_class_values(values: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    """(B, P, K) values -> (B, P) float64: each image's values for ``classes[b]``, centered
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


@dataclass
class KernelTruth:
    """A KernelSHAP truth of a model's game on a batch, with its own estimated error.

    Attributes:
        values: (B, P, K) estimated Shapley values of every class.
        estimated_error: the truth's estimated pooled relative error on the explained quantity
            (the predicted class's centered logit): ``sqrt(sum se^2 / sum |t - mean_P t|^2)``,
            with ``se`` KernelSHAP's standard error of each value.
        evaluations: paired evaluations per image spent.
        converged: ``estimated_error <= tolerance``.
        tolerance: the tolerance it was run to.
    """

    values: torch.Tensor
    estimated_error: float
    evaluations: int
    converged: bool
    tolerance: float

    def evaluations_needed(self) -> int:
        """The budget at which the error would reach the tolerance (it falls as 1/sqrt(n))."""
        ratio = (self.estimated_error / self.tolerance) ** 2
        return int(math.ceil(self.evaluations * ratio / 1024) * 1024)


def check_truth_budget(
    num_players: int, tolerance: float, evaluations: int, max_evaluations: int | None
) -> int:
    """Check a KernelSHAP truth's tolerance and budgets; return its largest budget (default
    ``8 * evaluations``).

    Raises:
        ValueError: a tolerance that is not a positive number, or budgets that are too small
            for the number of players or not in order.
    """
    if isinstance(tolerance, bool) or not isinstance(tolerance, (int, float)) or not tolerance > 0:
        raise ValueError(
            f"The truth's tolerance must be a positive number (its largest estimated pooled "
            f"error, e.g. 0.1); got {tolerance!r}."
        )
    max_evaluations = 8 * evaluations if max_evaluations is None else max_evaluations
    if evaluations < 2 * num_players:
        raise ValueError(
            f"{evaluations} KernelSHAP evaluations are too few for P={num_players} players; use "
            f"at least {2 * num_players} (the default is {TRUTH_EVALUATIONS:,})."
        )
    if max_evaluations < evaluations:
        raise ValueError(
            f"The truth's largest budget ({max_evaluations}) is below its first one "
            f"({evaluations})."
        )
    return max_evaluations


@torch.no_grad()
def converged_kernel_truth(
    model,
    pixel_values: torch.Tensor,
    classes: torch.Tensor,
    *,
    tolerance: float = TRUTH_TOLERANCE,
    evaluations: int = TRUTH_EVALUATIONS,
    max_evaluations: int | None = None,
    seed: int = 12345,
) -> KernelTruth:
    """Paired KernelSHAP on the model's own game, its budget doubled from ``evaluations`` until
    its estimated pooled error on ``classes``' centered values is at most ``tolerance`` or the
    next budget would pass ``max_evaluations`` (default: ``8 * evaluations``).

    Raises:
        ValueError: a tolerance that is not a positive number, or budgets that are too small
            for the number of players or not in order.
    """
    from .estimators import kernel_shap, model_game

    num_players = model.num_players
    max_evaluations = check_truth_budget(num_players, tolerance, evaluations, max_evaluations)
    rows = torch.arange(len(classes))
    budget = evaluations
    while True:
        result = kernel_shap(
            model_game(model, pixel_values),
            num_players,
            tolerance=0.0,
            max_evaluations=budget,
            batch_size=512,
            seed=seed,
        )
        values = result.values.permute(1, 0, 2).contiguous().cpu()  # (B, P, K)
        centered = centered_class_values(values, classes)
        spread = (centered - centered.mean(1, keepdim=True)).pow(2).sum()
        # The centered value's variance is at most about the class value's: the class errors of
        # one coalition stream are positively correlated, and centering removes what they share.
        se = result.standard_error.permute(1, 0, 2).double().cpu()[rows, :, classes]
        error = float((se.pow(2).sum() / spread.clamp_min(1e-24)).sqrt())
        if error <= tolerance or 2 * budget > max_evaluations:
            return KernelTruth(values, error, result.num_evaluations, error <= tolerance, tolerance)
        budget *= 2


@torch.no_grad()
def measure_agreement(
    model,
    pixel_values: torch.Tensor,
    *,
    num_exact: int = 2,
    kernel_evaluations: int = TRUTH_EVALUATIONS,
    max_kernel_evaluations: int | None = None,
    truth_tolerance: float = TRUTH_TOLERANCE,
    seed: int = 12345,
    progress: bool = False,
) -> dict:
    """Agreement of the model's one-pass values with the truth of its own game.

    Args:
        model: a ``ShapleyForImageClassification``.
        pixel_values: (B, C, H, W) held-out images (never used to pick a checkpoint).
        num_exact: also enumerate all ``2**P`` coalitions on the first ``num_exact`` images
            (skipped for ``P > 16``): the final figures, and a check of the KernelSHAP truth.
        kernel_evaluations: paired KernelSHAP evaluations per image to start from.
        max_kernel_evaluations: the largest budget (default ``8 * kernel_evaluations``).
        truth_tolerance: the largest estimated pooled error of the KernelSHAP truth that
            agreement is reported against (:func:`converged_kernel_truth`).
        seed: seed of the KernelSHAP coalitions.

    Returns:
        A dict: ``truth`` (what it is), ``truth_estimated_error``, ``truth_converged`` and
        ``truth_tolerance``; when the truth converged, ``pearson_r``, ``spearman_r`` (with
        ``_ci95``) and ``pooled_relative_error`` on the centered predicted class against it and
        ``raw_pearson_r`` on raw logits, and otherwise ``agreement_withheld``, which says why
        and what budget would do; with ``num_exact``, the same three against the exact values
        (``exact_`` prefix) and ``truth_error_vs_exact``, KernelSHAP's actual pooled error; and
        the counts.
    """
    if pixel_values.shape[0] < 2:
        raise ValueError(
            f"measure_agreement needs at least 2 images for intervals; got {pixel_values.shape[0]}."
        )
    was_training = model.training
    model.eval()
    try:
        out = model(pixel_values)
        classes = out.logits.argmax(-1).cpu()
        kernel = converged_kernel_truth(
            model,
            pixel_values,
            classes,
            tolerance=truth_tolerance,
            evaluations=kernel_evaluations,
            max_evaluations=max_kernel_evaluations,
            seed=seed,
        )
        truth = kernel.values
        phi = centered_class_values(out.shapley_values, classes)
        t = centered_class_values(truth, classes)
        report = {
            "truth": f"KernelSHAP, {kernel.evaluations} paired evaluations per image",
            "truth_estimated_error": kernel.estimated_error,
            "truth_converged": kernel.converged,
            "truth_tolerance": truth_tolerance,
            "num_images": int(pixel_values.shape[0]),
        }
        if kernel.converged:
            rows = torch.arange(len(classes))
            raw = pearson_rows(
                out.shapley_values.double().cpu()[rows, :, classes],
                truth.double()[rows, :, classes],
            )
            report.update(map_summary(phi, t))
            report["raw_pearson_r"] = float(raw.nanmean())
        else:
            report["agreement_withheld"] = (
                f"The KernelSHAP truth did not converge: its estimated pooled error is "
                f"{kernel.estimated_error:.3f} after {kernel.evaluations} evaluations per image, "
                f"above the tolerance {truth_tolerance}. About "
                f"{kernel.evaluations_needed():,} evaluations per image would reach it "
                "(examples/train.py --truth_max_evaluations)."
            )
        exact_count = min(num_exact, pixel_values.shape[0])
        if exact_count >= 1 and model.num_players <= MAX_EXACT_PLAYERS:
            exact = exact_model_shapley_values(model, pixel_values[:exact_count], progress=progress)
            exact_t = centered_class_values(exact, classes[:exact_count])
            exact_summary = map_summary(phi[:exact_count], exact_t, prefix="exact_")
            if exact_count < 2:  # no interval from one image
                exact_summary = {k: v for k, v in exact_summary.items() if "ci95" not in k}
            report.update(exact_summary)
            report["truth_error_vs_exact"] = pooled_relative_error(t[:exact_count], exact_t)
            report["num_exact_images"] = exact_count
    finally:
        model.train(was_training)
    return report


#: Deprecated spelling of :func:`centered_class_values`, kept for one release.
centred_class_values = centered_class_values


__all__ = [
    "TRUTH_EVALUATIONS",
    "TRUTH_TOLERANCE",
    "KernelTruth",
    "check_truth_budget",
    "converged_kernel_truth",
    "centered_class_values",
    "centred_class_values",
    "map_summary",
    "measure_agreement",
    "pooled_relative_error",
]
