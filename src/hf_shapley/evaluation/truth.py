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

from ..coalitions import all_coalitions
from ..estimators import exact_shapley_values

MAX_EXACT_PLAYERS = 16


@torch.no_grad()
def tabulate_game(
    model, pixel_values: torch.Tensor, *, chunk_size: int = 2048, progress: bool = False
) -> torch.Tensor:
    """All ``2**P`` coalition values of each image: (B, C, H, W) -> (2**P, B, K) float64.

    Row ``c`` holds ``v(S_c)`` where player ``i`` is in ``S_c`` iff bit ``i`` of ``c`` is set.
    """
    P = model.num_players
    if P > MAX_EXACT_PLAYERS:
        raise ValueError(
            f"Exact enumeration needs P <= {MAX_EXACT_PLAYERS} players; this model has P={P}. "
            "Use hf_shapley.estimators.kernel_shap for larger grids."
        )
    was_training = model.training
    model.eval()
    try:
        embeddings = model.adapter.embed(model.backbone, pixel_values)
        masks = all_coalitions(P).to(pixel_values.device)
        half = masks.shape[0] // 2
        # Codes c and 2**P - 1 - c are complements: packing them costs one pass for both.
        first = masks[:half]
        table = torch.empty(
            masks.shape[0], pixel_values.shape[0], model.num_labels, dtype=torch.float64
        )
        B = pixel_values.shape[0]
        # Packed sequences are short for small grids: batch many per backbone call (a token
        # budget of 2**16 per call), whatever the training-time coalition_batch_size.
        sequence_length = embeddings.shape[1] + model.num_special_tokens
        sequences_per_call = max(model.config.coalition_batch_size, 2**16 // sequence_length)
        for start in tqdm(
            range(0, half, chunk_size), disable=not progress, desc="exact game table"
        ):
            stop = min(start + chunk_size, half)
            block = first[start:stop]
            pairs = torch.stack([block, ~block], dim=1).reshape(1, -1, P).expand(B, -1, -1)
            values = model.coalition_values_from_embeddings(
                embeddings, pairs, chunk_size=sequences_per_call
            ).double()  # (B, 2n, K)
            values = values.reshape(B, stop - start, 2, -1)
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
    P = model.num_players
    table = tabulate_game(model, pixel_values, progress=progress)
    weights = 2 ** torch.arange(P, dtype=torch.int64)

    def lookup(masks: torch.Tensor) -> torch.Tensor:
        return table[(masks.long().cpu() * weights).sum(-1)]

    values = exact_shapley_values(lookup, P)  # (P, B, K)
    return values.permute(1, 0, 2).contiguous()


@dataclass
class ShapleyAgreement:
    """Per-image agreement of estimated values with the truth, for one class per image."""

    pearson: torch.Tensor  # (B,)
    relative_l2: torch.Tensor  # (B,)

    @property
    def mean_pearson(self) -> float:
        return float(self.pearson.nanmean())

    @property
    def median_relative_l2(self) -> float:
        return float(self.relative_l2.median())

    def pearson_interval(
        self, *, num_resamples: int = 2000, seed: int = 0, level: float = 0.95
    ) -> tuple[float, float]:
        """Bootstrap interval of the mean per-image Pearson r."""
        r = self.pearson[~self.pearson.isnan()]
        generator = torch.Generator().manual_seed(seed)
        idx = torch.randint(0, len(r), (num_resamples, len(r)), generator=generator)
        means = r[idx].mean(1).sort().values
        lo = means[int(math.floor((1 - level) / 2 * num_resamples))]
        hi = means[int(math.ceil((1 + level) / 2 * num_resamples)) - 1]
        return float(lo), float(hi)


def shapley_agreement(
    estimate: torch.Tensor, truth: torch.Tensor, classes: torch.Tensor
) -> ShapleyAgreement:
    """Pearson r and relative L2 error per image, over players, for the given class of each image.

    Args:
        estimate, truth: (B, P, K).
        classes: (B,) the class to compare per image (e.g. the predicted class).
    """
    index = classes.view(-1, 1, 1).expand(-1, estimate.shape[1], 1)
    a = estimate.double().gather(2, index)[..., 0]
    b = truth.double().gather(2, index)[..., 0]
    ac, bc = a - a.mean(1, keepdim=True), b - b.mean(1, keepdim=True)
    pearson = (ac * bc).sum(1) / (ac.norm(dim=1) * bc.norm(dim=1))
    relative_l2 = (a - b).norm(dim=1) / b.norm(dim=1).clamp_min(1e-12)
    return ShapleyAgreement(pearson=pearson, relative_l2=relative_l2)
