"""The statistics of the evaluation: one Pearson r, tie ranks, bootstrap and Wilson intervals.

* :func:`pearson_rows`: Pearson r of each pair of rows, in torch, batched over many images (the
  one Pearson of the package: agreement with the truth, Spearman on ranks, sensitivity-n).
* :func:`rank_with_ties`: ``scipy.stats.rankdata`` (average ranks for ties) along the last
  dimension.
* :func:`bootstrap_mean_interval`: ``scipy.stats.bootstrap`` percentile interval of a mean,
  reproducible with a seed.
* :func:`wilson_interval`: the Wilson score interval of an accuracy, through
  ``scipy.stats.binomtest(...).proportion_ci(method="wilson")``.

scipy comes with the ``eval`` extra (``pip install "hf-shapley[eval]"``). It is imported by the
functions that need it, not at import time, so ``import hf_shapley.evaluation`` works without it.
"""

from __future__ import annotations

import inspect
import math
from typing import Any

import numpy as np
import torch

__all__ = ["bootstrap_mean_interval", "pearson_rows", "rank_with_ties", "wilson_interval"]


def _scipy_stats() -> Any:
    try:
        from scipy import stats
    except ImportError as error:
        raise ImportError(
            "hf_shapley.evaluation needs scipy for this statistic: pip install "
            '"hf-shapley[eval]" (or pip install "scipy>=1.11").'
        ) from error
    return stats


def pearson_rows(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pearson r of each pair of rows, along the last dimension, in float64.

    ``a`` and ``b`` have the same shape ``(..., n)``; the result has shape ``(...)``, NaN where
    either row is constant (r is undefined there). Runs on the inputs' device.
    """
    a, b = torch.as_tensor(a), torch.as_tensor(b)
    if a.shape != b.shape:
        raise ValueError(
            f"pearson_rows needs two tensors of the same shape; got {tuple(a.shape)} and "
            f"{tuple(b.shape)}."
        )
    a, b = a.double(), b.double()
    ac, bc = a - a.mean(-1, keepdim=True), b - b.mean(-1, keepdim=True)
    denominator = ac.norm(dim=-1) * bc.norm(dim=-1)
    r = (ac * bc).sum(-1) / denominator
    return torch.where(denominator > 0, r, torch.full_like(r, float("nan")))


def rank_with_ties(x: torch.Tensor) -> torch.Tensor:
    """Ranks 1..n along the last dimension, ties given their average rank (as for Spearman).

    ``scipy.stats.rankdata(method="average")``; float64 on the device of ``x``. A row holding a
    NaN is all NaN (its rank correlation is undefined, as its Pearson r is).
    """
    x = torch.as_tensor(x)
    stats = _scipy_stats()
    ranks = stats.rankdata(x.detach().cpu().double().numpy(), method="average", axis=-1)
    return torch.from_numpy(np.asarray(ranks, dtype=np.float64)).to(x.device)


def _seed_keyword(function: Any) -> str:
    """scipy >= 1.15 takes ``rng``; older releases ``random_state`` (same meaning here)."""
    return "rng" if "rng" in inspect.signature(function).parameters else "random_state"


def bootstrap_mean_interval(
    values: torch.Tensor, *, num_resamples: int = 2000, seed: int = 0, level: float = 0.95
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``values`` (NaNs dropped); (nan, nan) if empty.

    ``scipy.stats.bootstrap(method="percentile")`` with ``num_resamples`` resamples drawn by
    ``numpy.random.default_rng(seed)``: the same values and seed give the same interval. One
    value gives ``(value, value)``.
    """
    values = torch.as_tensor(values, dtype=torch.float64).detach().cpu().flatten()
    values = values[~values.isnan()]
    if len(values) == 0:
        return float("nan"), float("nan")
    if len(values) == 1:  # nothing to resample; scipy refuses a single observation
        return float(values[0]), float(values[0])
    stats = _scipy_stats()
    result = stats.bootstrap(
        (values.numpy(),),
        np.mean,
        n_resamples=num_resamples,
        confidence_level=level,
        method="percentile",
        vectorized=True,
        **{_seed_keyword(stats.bootstrap): np.random.default_rng(seed)},
    )
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def wilson_interval(correct: int, total: int, *, level: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of an accuracy ``correct / total`` at confidence ``level``.

    ``scipy.stats.binomtest(correct, total).proportion_ci(level, method="wilson")`` (no
    continuity correction); ``(nan, nan)`` when ``total == 0``.
    """
    if total == 0:
        return math.nan, math.nan
    if int(correct) != correct or int(total) != total or not 0 <= correct <= total:
        raise ValueError(
            f"wilson_interval needs whole numbers 0 <= correct <= total; got correct={correct}, "
            f"total={total}."
        )
    stats = _scipy_stats()
    interval = stats.binomtest(int(correct), int(total)).proportion_ci(
        confidence_level=level, method="wilson"
    )
    return float(interval.low), float(interval.high)
