"""The evaluation's statistics (``hf_shapley.evaluation.stats``) against independent computations:
scipy's per-row Pearson and Spearman, hand-computed ranks, the Wilson formula, a normal-theory
interval and the percentile bootstrap written out in torch."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from statistics import NormalDist

import pytest
import torch
from scipy import stats

import hf_shapley
from hf_shapley.evaluation import (
    bootstrap_mean_interval,
    map_agreement,
    pearson_rows,
    rank_with_ties,
    sensitivity_n,
    sensitivity_n_from_drops,
    wilson_interval,
)
from hf_shapley.evaluation.faithfulness import removal_drops, sample_removal_subsets


def test_pearson_rows_matches_scipy_per_row():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(3, 4, 9, generator=g, dtype=torch.float64)
    b = a + torch.randn(3, 4, 9, generator=g, dtype=torch.float64)
    r = pearson_rows(a, b)
    assert r.shape == (3, 4) and r.dtype == torch.float64
    for i in range(3):
        for j in range(4):
            expected = stats.pearsonr(a[i, j].numpy(), b[i, j].numpy()).statistic
            assert r[i, j].item() == pytest.approx(expected, rel=1e-12, abs=1e-12)
    # float32 inputs are computed in float64.
    assert pearson_rows(a.float(), b.float()).dtype == torch.float64
    assert torch.allclose(pearson_rows(a.float(), b.float()), r, atol=1e-6)


def test_pearson_rows_is_nan_for_a_constant_row_and_checks_shapes():
    a = torch.tensor([[1.0, 2.0, 3.0], [2.0, 2.0, 2.0]])
    b = torch.tensor([[1.0, 3.0, 2.0], [1.0, 2.0, 3.0]])
    r = pearson_rows(a, b)
    assert r[0].item() == pytest.approx(0.5)  # hand-computed: cov 0.5 over sqrt(1 * 1)
    assert math.isnan(r[1].item())
    with pytest.raises(ValueError, match="same shape"):
        pearson_rows(torch.zeros(2, 3), torch.zeros(2, 4))


def test_rank_with_ties_averages_along_the_last_dimension():
    x = torch.tensor([[3.0, 1.0, 3.0, 2.0], [5.0, 5.0, 5.0, 5.0], [0.5, -1.0, 2.0, 0.0]])
    expected = [[3.5, 1.0, 3.5, 2.0], [2.5, 2.5, 2.5, 2.5], [3.0, 1.0, 4.0, 2.0]]
    ranks = rank_with_ties(x)
    assert ranks.dtype == torch.float64 and ranks.tolist() == expected
    assert rank_with_ties(x[None]).tolist() == [expected]  # any leading dimensions
    assert rank_with_ties(torch.tensor([[1.0, float("nan"), 0.0]])).isnan().all()


def test_spearman_with_ties_matches_scipy():
    g = torch.Generator().manual_seed(4)
    truth = torch.randn(6, 10, generator=g, dtype=torch.float64)
    estimate = (truth + 0.7 * torch.randn(6, 10, generator=g, dtype=torch.float64)).round(
        decimals=0
    )  # many ties
    agreement = map_agreement(estimate, truth)
    assert agreement.spearman.dtype == torch.float64
    for b in range(6):
        expected = stats.spearmanr(estimate[b].numpy(), truth[b].numpy()).statistic
        assert agreement.spearman[b].item() == pytest.approx(expected, rel=1e-12, abs=1e-12)


class _NoisyGame:
    """A non-additive game, so sensitivity-n is neither 1 nor constant: (B, M, P) -> (B, M, K)."""

    def __init__(self, batch: int, players: int, classes: int):
        g = torch.Generator().manual_seed(7)
        self.w = torch.randn(batch, players, classes, generator=g, dtype=torch.float64)

    def __call__(self, masks: torch.Tensor) -> torch.Tensor:
        linear = torch.einsum("bmp,bpk->bmk", masks.double(), self.w)
        return linear + 0.3 * linear**2


def test_sensitivity_n_is_scipy_pearson_of_sums_and_drops():
    game = _NoisyGame(batch=3, players=8, classes=2)
    g = torch.Generator().manual_seed(8)
    attributions = torch.randn(3, 8, generator=g, dtype=torch.float64)
    targets = torch.tensor([0, 1, 1])
    sizes = [2, 5]
    result = sensitivity_n(game, attributions, targets, sizes, num_subsets=12, seed=3)
    removed, subset_sizes = sample_removal_subsets(8, sizes, 12, seed=3)
    drops = removal_drops(game, removed, targets)
    assert set(result) == set(sizes)
    for n in sizes:
        pick = subset_sizes == n
        for b in range(3):
            sums = (attributions[b][None, :] * removed[pick].double()).sum(1)
            expected = stats.pearsonr(sums.numpy(), drops[b, pick].numpy()).statistic
            assert result[n][b].item() == pytest.approx(expected, rel=1e-12, abs=1e-12)
    same = sensitivity_n_from_drops(attributions, removed, subset_sizes, drops)
    assert all(torch.equal(same[n], result[n]) for n in sizes)


def _torch_percentile_bootstrap(values: torch.Tensor, resamples: int, level: float, seed: int):
    """The percentile bootstrap of a mean, written out (the pre-scipy implementation)."""
    generator = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, len(values), (resamples, len(values)), generator=generator)
    means = values[idx].mean(1).sort().values
    lo = means[int(math.floor((1 - level) / 2 * resamples))]
    hi = means[int(math.ceil((1 + level) / 2 * resamples)) - 1]
    return float(lo), float(hi)


def test_bootstrap_interval_agrees_with_independent_intervals_and_is_seeded():
    values = torch.randn(200, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    lo, hi = bootstrap_mean_interval(values, num_resamples=20000, seed=1)
    mean, sd = values.mean().item(), values.std(correction=0).item()
    half = NormalDist().inv_cdf(0.975) * sd / math.sqrt(len(values))
    assert lo < mean < hi
    # Normal theory and the written-out percentile bootstrap give the same interval up to
    # Monte Carlo error (about 1% of the half-width at 20000 resamples).
    assert lo == pytest.approx(mean - half, abs=0.05 * half)
    assert hi == pytest.approx(mean + half, abs=0.05 * half)
    by_hand = _torch_percentile_bootstrap(values, 20000, 0.95, seed=2)
    assert (lo, hi) == pytest.approx(by_hand, abs=0.05 * half)
    # level: a 90% interval lies inside the 95% one.
    lo90, hi90 = bootstrap_mean_interval(values, num_resamples=20000, seed=1, level=0.9)
    assert lo < lo90 < mean < hi90 < hi

    # Reproducible: the same seed gives the same interval, another seed another one.
    small = torch.tensor([0.1, 0.5, 0.2, 0.9, 0.4, float("nan")])
    first = bootstrap_mean_interval(small, num_resamples=300, seed=5)
    assert bootstrap_mean_interval(small, num_resamples=300, seed=5) == first
    assert bootstrap_mean_interval(small, num_resamples=300, seed=6) != first
    # NaNs are dropped; one value is its own interval; none gives NaNs.
    assert bootstrap_mean_interval(small[:5], num_resamples=300, seed=5) == first
    single = torch.tensor([0.3, float("nan")], dtype=torch.float64)
    assert bootstrap_mean_interval(single) == (0.3, 0.3)
    assert all(math.isnan(x) for x in bootstrap_mean_interval(torch.tensor([float("nan")])))


def _wilson_by_hand(correct: int, total: int, level: float) -> tuple[float, float]:
    z = NormalDist().inv_cdf((1 + level) / 2)
    p = correct / total
    centre = (p + z * z / (2 * total)) / (1 + z * z / total)
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / (1 + z * z / total)
    return centre - half, centre + half


@pytest.mark.parametrize(
    ("correct", "total", "level"),
    [(7, 10, 0.95), (0, 10, 0.95), (10, 10, 0.95), (1234, 2000, 0.95), (30, 64, 0.9)],
)
def test_wilson_interval_matches_the_formula(correct, total, level):
    lo, hi = wilson_interval(correct, total, level=level)
    expected = _wilson_by_hand(correct, total, level)
    assert (lo, hi) == pytest.approx(expected, abs=1e-9)
    assert 0.0 <= lo <= correct / total <= hi <= 1.0


def test_wilson_interval_edge_cases():
    assert all(math.isnan(x) for x in wilson_interval(0, 0))
    with pytest.raises(ValueError, match="0 <= correct <= total"):
        wilson_interval(11, 10)
    with pytest.raises(ValueError, match="whole numbers"):
        wilson_interval(2.5, 10)


WITHOUT_SCIPY = r"""
import sys

for name in ("scipy", "scipy.stats"):
    sys.modules[name] = None  # import scipy now raises ImportError
import torch

import hf_shapley
import hf_shapley.evaluation as ev

assert not any(m.startswith("scipy") and sys.modules[m] is not None for m in sys.modules)
r = ev.pearson_rows(torch.tensor([[1.0, 2.0, 3.0]]), torch.tensor([[1.0, 2.0, 4.0]]))
assert 0.9 < float(r) < 1.0
try:
    ev.wilson_interval(3, 10)
except ImportError as error:
    assert "hf-shapley[eval]" in str(error), error
else:
    raise AssertionError("wilson_interval ran without scipy")
print("ok")
"""


def test_package_and_evaluation_import_without_scipy(tmp_path):
    src = os.path.dirname(os.path.dirname(os.path.abspath(hf_shapley.__file__)))
    env = dict(os.environ, PYTHONPATH=src, HF_HUB_OFFLINE="1")
    proc = subprocess.run(
        [sys.executable, "-c", WITHOUT_SCIPY],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-3000:]
