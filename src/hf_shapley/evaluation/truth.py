"""Ground truth: the exact Shapley values of a model's own game, and agreement with them.

The truth for a self-explaining model is the Shapley value of the game it defines,
``v_x(S) = model(x, coalition=S)``. For ``P <= 16`` it is computed exactly: every coalition
is evaluated once (a coalition and its complement share one packed sequence, so the whole
table of ``2**P`` values costs ``2**(P-1)`` full passes per image), then the exact estimator
runs over a lookup of that table in float64.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from ..models.coalitions import all_coalitions
from .estimators import exact_shapley_values, model_game
from .stats import bootstrap_mean_interval, pearson_rows, rank_with_ties

MAX_EXACT_PLAYERS = 16


@torch.no_grad()
def tabulate_game(
    model,
    pixel_values: torch.Tensor,
    *,
    chunk_size: int = 2048,
    progress: bool = False,
    readout=None,
) -> torch.Tensor:
    """All ``2**P`` coalition values of each image: (B, C, H, W) -> (2**P, B, K) float64.

    Row ``c`` holds ``v(S_c)`` where player ``i`` is in ``S_c`` iff bit ``i`` of ``c`` is set.
    ``readout`` (default ``model.readout``) turns each coalition's backbone view into its
    ``K`` outputs; another readout tabulates another quantity of the same game (e.g. each
    player's vote, :func:`hf_shapley.evaluation.vote_influence`).
    """
    P = model.num_players
    if P > MAX_EXACT_PLAYERS:
        raise ValueError(
            f"Exact enumeration needs P <= {MAX_EXACT_PLAYERS} players; this model has P={P}. "
            "Use hf_shapley.evaluation.estimators.kernel_shap for larger grids."
        )
    was_training = model.training
    model.eval()
    try:
        game, readout = model.game, readout or model.readout
        context = game.prepare(pixel_values)
        masks = all_coalitions(P).to(pixel_values.device)
        half = masks.shape[0] // 2
        # Codes c and 2**P - 1 - c are complements: packing them costs one pass for both.
        first = masks[:half]
        table = None  # (2**P, B, K), allocated once K is known
        B = pixel_values.shape[0]
        # Packed sequences are short for small grids: on an accelerator, batch many per backbone
        # call (a token budget of 2**16 per call), whatever the training-time
        # coalition_batch_size. On a CPU calls that large run slower per sequence (4,096 packed
        # pairs of 66 tokens: 7.7 s in calls of 993 against 4.8 s in calls of 64, 2 cores):
        # there the training-time size stays.
        sequences_per_call = model.config.coalition_batch_size
        if pixel_values.device.type != "cpu":
            length = math.prod(game.token_grid) + 2 * getattr(game, "num_special_tokens", 0)
            sequences_per_call = max(sequences_per_call, 2**16 // length)
        for start in tqdm(
            range(0, half, chunk_size), disable=not progress, desc="exact game table"
        ):
            stop = min(start + chunk_size, half)
            block = first[start:stop]
            pairs = torch.stack([block, ~block], dim=1).reshape(1, -1, P).expand(B, -1, -1)
            values = game.values(
                context, pairs, readout, chunk_size=sequences_per_call
            ).double()  # (B, 2n, K)
            values = values.reshape(B, stop - start, 2, -1)
            if table is None:
                table = values.new_empty(masks.shape[0], B, values.shape[-1], device="cpu")
            table[start:stop] = values[:, :, 0].transpose(0, 1).cpu()
            codes = (2**P - 1) - torch.arange(start, stop)
            table[codes] = values[:, :, 1].transpose(0, 1).cpu()
    finally:
        model.train(was_training)
    return table


def exact_model_shapley_values(
    model, pixel_values: torch.Tensor, *, progress: bool = False
) -> torch.Tensor:
    """Exact Shapley values of the model's game for each image: (B, P, K) float64."""
    return shapley_values_from_table(tabulate_game(model, pixel_values, progress=progress))


def shapley_values_from_table(table: torch.Tensor) -> torch.Tensor:
    """Exact Shapley values of a tabulated game: (2**P, B, K) -> (B, P, K) float64."""
    P = _players_of_table(table)
    weights = 2 ** torch.arange(P, dtype=torch.int64)

    def lookup(masks: torch.Tensor) -> torch.Tensor:
        return table[(masks.long().cpu() * weights).sum(-1)]

    values = exact_shapley_values(lookup, P)  # (P, B, K)
    return values.permute(1, 0, 2).contiguous()


def _players_of_table(table: torch.Tensor) -> int:
    P = int(table.shape[0]).bit_length() - 1
    if table.ndim != 3 or table.shape[0] != 2**P or P < 1:
        raise ValueError(
            f"A game table has shape (2**P, B, K) (tabulate_game); got {tuple(table.shape)}."
        )
    return P


def interaction_share(
    table: torch.Tensor, shapley_values: torch.Tensor, classes: torch.Tensor
) -> torch.Tensor:
    """How far each image's game is from additive: ``1 - R^2`` of its Shapley-kernel fit.

    The Shapley values are the solution of the kernel-weighted least-squares fit of
    ``y(S) = v(S) - v(empty)`` by ``sum_{i in S} phi_i`` under efficiency (Lundberg and Lee 2017).
    The fit has no free intercept (it is 0 at the empty coalition), so ``R^2`` is taken as for a
    regression through the origin: the share is ``sum_S w(S) (y(S) - fit(S))^2 / sum_S w(S)
    y(S)^2`` over all coalitions but the empty and the full one (matched exactly), with the
    Shapley kernel ``w(S)``. 0 for an additive game; near 1 when what the players do together
    dominates (it can pass 1 only where efficiency forces a fit worse than no change at all).

    Measured on the explained quantity of the agreement targets: the class logit centered over
    classes (``centered_class_values``).

    Args:
        table: ``(2**P, B, K)`` all coalition values (:func:`tabulate_game`).
        shapley_values: ``(B, P, K)`` the exact Shapley values of that table.
        classes: ``(B,)`` the explained class of each image.

    Returns:
        ``(B,)`` float64; NaN for an image whose game is constant over coalitions.
    """
    P = _players_of_table(table)
    B = table.shape[1]
    if shapley_values.shape[:2] != (B, P):
        raise ValueError(
            f"shapley_values must have shape ({B}, {P}, K) for this table; got "
            f"{tuple(shapley_values.shape)}."
        )
    index = torch.as_tensor(classes).long().cpu()
    table = table.double().cpu()
    centered = (table - table.mean(-1, keepdim=True))[:, torch.arange(B), index]  # (2**P, B)
    phi = shapley_values.double().cpu()
    phi = (phi - phi.mean(-1, keepdim=True))[torch.arange(B), :, index]  # (B, P)
    masks = all_coalitions(P).double()
    y = centered - centered[:1]
    fit = masks @ phi.T  # (2**P, B)
    size = masks.sum(1)
    inner = (size > 0) & (size < P)
    s = size[inner]
    kernel = (P - 1) / (torch.tensor([math.comb(P, int(k)) for k in s]) * s * (P - s))
    y, fit = y[inner], fit[inner]
    residual = (kernel[:, None] * (y - fit) ** 2).sum(0)
    total = (kernel[:, None] * y**2).sum(0)
    return torch.where(total > 0, residual / total, torch.full_like(total, float("nan")))


@dataclass
class ShapleyAgreement:
    """Per-image agreement of estimated values with the truth, for one class per image.

    ``pearson``, ``spearman`` and ``relative_l2`` are ``(B,)``; a constant map has NaN
    correlations, which the means and intervals skip.
    """

    pearson: torch.Tensor  # (B,)
    relative_l2: torch.Tensor  # (B,)
    spearman: torch.Tensor | None = None  # (B,)

    @property
    def mean_pearson(self) -> float:
        return float(self.pearson.nanmean())

    @property
    def mean_spearman(self) -> float:
        return float("nan") if self.spearman is None else float(self.spearman.nanmean())

    @property
    def median_relative_l2(self) -> float:
        return float(self.relative_l2.median())

    def pearson_interval(
        self, *, num_resamples: int = 2000, seed: int = 0, level: float = 0.95
    ) -> tuple[float, float]:
        """Bootstrap interval of the mean per-image Pearson r."""
        return bootstrap_mean_interval(
            self.pearson, num_resamples=num_resamples, seed=seed, level=level
        )

    def spearman_interval(
        self, *, num_resamples: int = 2000, seed: int = 0, level: float = 0.95
    ) -> tuple[float, float]:
        """Bootstrap interval of the mean per-image Spearman rank correlation."""
        if self.spearman is None:
            return float("nan"), float("nan")
        return bootstrap_mean_interval(
            self.spearman, num_resamples=num_resamples, seed=seed, level=level
        )

    def summary(self, prefix: str = "") -> dict[str, float | list[float]]:
        """Means with 95% bootstrap intervals, and the median relative L2, as plain floats."""
        return {
            f"{prefix}pearson": self.mean_pearson,
            f"{prefix}pearson_ci95": list(self.pearson_interval()),
            f"{prefix}spearman": self.mean_spearman,
            f"{prefix}spearman_ci95": list(self.spearman_interval()),
            f"{prefix}relative_l2": self.median_relative_l2,
        }


def map_agreement(estimate: torch.Tensor, truth: torch.Tensor) -> ShapleyAgreement:
    """Agreement of two ``(B, P)`` player maps, per image (row)."""
    if estimate.shape != truth.shape or estimate.ndim != 2:
        raise ValueError(
            f"estimate and truth must both be (B, P) maps; got {tuple(estimate.shape)} and "
            f"{tuple(truth.shape)}."
        )
    if estimate.shape[0] == 0:
        raise ValueError("empty batch (B = 0).")
    a, b = estimate.detach().double().cpu(), truth.detach().double().cpu()
    relative_l2 = (a - b).norm(dim=1) / b.norm(dim=1).clamp_min(1e-12)
    return ShapleyAgreement(
        pearson=pearson_rows(a, b),
        relative_l2=relative_l2,
        spearman=pearson_rows(rank_with_ties(a), rank_with_ties(b)),
    )


def shapley_agreement(
    estimate: torch.Tensor, truth: torch.Tensor, classes: torch.Tensor
) -> ShapleyAgreement:
    """Pearson r, Spearman rank r and relative L2 error per image, over players, for the given
    class of each image.

    Args:
        estimate, truth: (B, P, K).
        classes: (B,) the class to compare per image (e.g. the predicted class).
    """
    if estimate.shape != truth.shape or estimate.ndim != 3:
        raise ValueError(
            f"estimate and truth must both be (B, P, K); got {tuple(estimate.shape)} and "
            f"{tuple(truth.shape)}."
        )
    classes = torch.as_tensor(classes, dtype=torch.long).cpu()
    if classes.shape != (estimate.shape[0],):
        raise ValueError(
            f"classes must have shape ({estimate.shape[0]},); got {tuple(classes.shape)}."
        )
    index = classes.view(-1, 1, 1).expand(-1, estimate.shape[1], 1)
    a = estimate.detach().double().cpu().gather(2, index)[..., 0]
    b = truth.detach().double().cpu().gather(2, index)[..., 0]
    return map_agreement(a, b)


def other_classes_agreement(
    estimate: torch.Tensor, truth: torch.Tensor, predicted: torch.Tensor
) -> ShapleyAgreement:
    """Agreement on every class but the predicted one, averaged per image: ``(B,)`` entries.

    Each image contributes the mean over its ``K - 1`` other classes of Pearson r, Spearman r
    and relative L2, so that intervals resample images, not (image, class) pairs.
    """
    B, _, K = estimate.shape
    if K < 2:
        raise ValueError("other_classes_agreement needs at least 2 classes.")
    predicted = torch.as_tensor(predicted, dtype=torch.long).cpu()
    per_class = [shapley_agreement(estimate, truth, torch.full((B,), k)) for k in range(K)]
    stack = {
        name: torch.stack([getattr(a, name) for a in per_class], dim=1)  # (B, K)
        for name in ("pearson", "spearman", "relative_l2")
    }
    keep = torch.ones(B, K, dtype=torch.bool)
    keep[torch.arange(B), predicted] = False

    def mean_other(values: torch.Tensor) -> torch.Tensor:
        values = values.masked_fill(~keep, float("nan"))
        return values.nanmean(dim=1)

    return ShapleyAgreement(
        pearson=mean_other(stack["pearson"]),
        relative_l2=mean_other(stack["relative_l2"]),
        spearman=mean_other(stack["spearman"]),
    )


@dataclass
class ModelTruth:
    """Ground-truth Shapley values of a model's game on a batch of images.

    Attributes:
        values: ``(B, P, K)`` float64.
        method: ``"exact"`` (all ``2**P`` coalitions) or ``"kernel_shap"`` (converged
            paired-sampling KernelSHAP).
        evaluations: coalition evaluations per image.
        converged: KernelSHAP met its stopping rule (always True for exact).
        convergence_ratio: KernelSHAP's final ``max std / range`` (0 for exact).
        table: ``(2**P, B, K)`` every coalition's value, for exact truths (``None`` otherwise):
            what :func:`interaction_share` and curves in the truth's order read.
    """

    values: torch.Tensor
    method: str
    evaluations: int
    converged: bool = True
    convergence_ratio: float = 0.0
    table: torch.Tensor | None = None


def model_shapley_truth(
    model,
    pixel_values: torch.Tensor,
    *,
    max_exact_players: int = MAX_EXACT_PLAYERS,
    tolerance: float = 0.01,
    max_evaluations: int = 100_000,
    batch_size: int = 512,
    seed: int = 12345,
    progress: bool = False,
) -> ModelTruth:
    """The truth of docs/evaluation.md ("The truth"): exact for ``P <= max_exact_players``, else KernelSHAP.

    KernelSHAP runs through ``hf_shapley.evaluation.estimators.model_game`` (any family) on the whole batch with the
    variance stopping rule at ``tolerance`` (worst image and class), so all images share one
    coalition stream; ``seed`` should differ from the seeds of any KernelSHAP explainer scored
    against this truth.
    """
    if pixel_values.shape[0] == 0:
        raise ValueError("pixel_values is an empty batch (B = 0).")
    num_players = model.num_players
    if num_players <= max_exact_players:
        table = tabulate_game(model, pixel_values, progress=progress)
        return ModelTruth(
            values=shapley_values_from_table(table),
            method="exact",
            evaluations=2**num_players,
            table=table,
        )
    from .estimators import kernel_shap

    was_training = model.training
    model.eval()
    try:
        result = kernel_shap(
            model_game(model, pixel_values),
            num_players,
            tolerance=tolerance,
            max_evaluations=max_evaluations,
            batch_size=batch_size,
            seed=seed,
        )
    finally:
        model.train(was_training)
    return ModelTruth(
        values=result.values.permute(1, 0, 2).contiguous().cpu(),
        method="kernel_shap",
        evaluations=result.num_evaluations,
        converged=result.converged,
        convergence_ratio=result.convergence_ratio,
    )
