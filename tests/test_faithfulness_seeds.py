"""benchmarks/faithfulness_report.py --pool pools runs of the faithfulness benchmark over seeds:
the pooled error is summed before the square root, gains and shares pool per image, and the
targets are judged on the pooled intervals."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from conftest import load_benchmark_script

REPO = Path(__file__).resolve().parents[1]
PHI = "phi (one pass)"


@pytest.fixture(scope="module")
def seeds_module():
    return load_benchmark_script("faithfulness_report")


def _run(
    name: str,
    *,
    phi_squared: float,
    spread: float,
    ks_squared: list[float],
    phi_ins: list[float],
    others: dict[str, list[float]],
    phi_share: list[float],
) -> dict:
    """A faithfulness.json as the benchmark writes it, reduced to what pooling reads. Deletion
    areas mirror insertion (1 - AUC), so a better insertion is a better deletion."""
    areas = {PHI: phi_ins} | others
    per_image = {n: {"insertion": a, "deletion": [1 - v for v in a]} for n, a in areas.items()}
    shares = {PHI: phi_share} | {n: [0.0] * len(phi_share) for n in others}
    order = {"shares_per_image": shares}
    accuracy = {"accuracy": 0.8, "ci95": [0.78, 0.82]}
    return {
        "model_dir": name,
        "accuracy": {
            "Shapley": accuracy,
            "plain": accuracy,
            "difference_plain_minus_shapley": 0.0,
            "difference_ci95": [0.0, 0.0],
        },
        "rows": [{"model": "Shapley", "explainer": PHI, "truth_centred_pearson": [0.9, 0.8, 1.0]}],
        "ranking": {
            "phi": PHI,
            "per_image": per_image,
            "truth_order": {"insertion": order, "deletion": order},
            "interaction_share_per_image": [0.2] * len(phi_share),
        },
        "budgets": [
            {
                "num_players": 16,
                "num_images": len(phi_share),
                "truth": "exact (all 2^16 coalitions)",
                "cost_per_evaluation": 0.5,
                "phi_pooled_error": math.sqrt(phi_squared / spread),
                "phi_squared_error": phi_squared,
                "truth_spread": spread,
                "pooled_error_trace": [[16 * (i + 1), error] for i, error in enumerate(ks_squared)],
            }
        ],
    }


def _two_runs() -> list[dict]:
    """Two runs of 4 images: Grad-CAM equals phi on run 0 and is 0.1 worse on run 1; one image
    of run 0 has no share (its truth and random orders are too close)."""
    phi = [0.9, 0.8, 0.85, 0.95]
    random = [0.5, 0.4, 0.6, 0.5]
    return [
        _run(
            "seed0",
            phi_squared=1.0,
            spread=4.0,
            ks_squared=[2.0, 1.0, 0.5],
            phi_ins=phi,
            others={"random": random, "Grad-CAM": phi},
            phi_share=[1.0, 0.9, float("nan"), 1.1],
        ),
        _run(
            "seed1",
            phi_squared=3.0,
            spread=12.0,
            ks_squared=[6.0, 5.0, 2.0],
            phi_ins=phi,
            others={"random": random, "Grad-CAM": [v - 0.1 for v in phi]},
            phi_share=[0.8, 1.0, 0.95, 0.9],
        ),
    ]


def test_pooled_error_sums_before_the_square_root(seeds_module):
    runs = _two_runs()
    runs[1]["budgets"][0]["phi_squared_error"] = 9.0  # run 1 alone: sqrt(9 / 12) = 0.866
    summary = seeds_module.pool_summary(runs)
    pooled = math.sqrt((1.0 + 9.0) / (4.0 + 12.0))
    assert summary["phi"]["pooled_error"] == pytest.approx(pooled)
    assert pooled != pytest.approx((0.5 + math.sqrt(9 / 12)) / 2)
    (budget,) = summary["budgets"]
    assert budget["phi_pooled_error"] == pytest.approx(pooled)
    # KernelSHAP's error per step, summed over both runs before the root: pooled, it reaches
    # phi's at the first step, where run 0 alone (2 / 4 > 1 / 4) has not.
    errors = [
        math.sqrt((a + b) / 16) for a, b in zip([2.0, 1.0, 0.5], [6.0, 5.0, 2.0], strict=True)
    ]
    expected = next(16 * (i + 1) for i, e in enumerate(errors) if e <= pooled)
    assert budget["reached_evaluations"] == expected == 16
    assert budget["num_images"] == 8 and budget["runs"] == 2


def test_budget_not_reached_says_so(seeds_module, tmp_path):
    runs = _two_runs()
    for run in runs:
        run["budgets"][0]["phi_squared_error"] = 0.01
    summary = seeds_module.pool_summary(runs)
    assert summary["budgets"][0]["reached_evaluations"] is None
    text = seeds_module.render_pooled(summary, "cmd")
    assert "not reached in 48 evals" in text


def test_gains_and_shares_pool_images_and_leave_out_nan(seeds_module):
    summary = seeds_module.pool_summary(_two_runs())
    gains = {row["explainer"]: row for row in summary["paired"]}
    # Grad-CAM equals phi on run 0 and is 0.1 worse on run 1: the mean gain over 8 images.
    assert gains["Grad-CAM"]["insertion_gain"][0] == pytest.approx(0.05)
    assert gains["Grad-CAM"]["deletion_gain"][0] == pytest.approx(0.05)
    assert gains["random"]["insertion_gain"][3] == 8
    # Mean areas over all 8 images: phi's 0.875 on run 0, 0.775 for Grad-CAM's on run 1.
    assert summary["areas"]["Grad-CAM"]["insertion"] == pytest.approx((0.875 + 0.775) / 2)
    assert summary["areas"]["Grad-CAM"]["deletion"] == pytest.approx(1 - (0.875 + 0.775) / 2)
    share = summary["shares"][PHI]["insertion"]
    kept = [1.0, 0.9, 1.1, 0.8, 1.0, 0.95, 0.9]  # the NaN image is left out
    assert share[0] == pytest.approx(sum(kept) / len(kept)) and share[3] == 7
    assert share[1] <= share[0] <= share[2]


def test_targets_met_and_missed(seeds_module, tmp_path):
    runs = _two_runs()
    for run in runs:  # Grad-CAM clearly worse everywhere, so every baseline is beaten.
        areas = run["ranking"]["per_image"]
        areas["Grad-CAM"] = {
            "insertion": [v - 0.3 for v in areas[PHI]["insertion"]],
            "deletion": [v + 0.3 for v in areas[PHI]["deletion"]],
        }
    summary = seeds_module.pool_summary(runs)
    text = seeds_module.render_pooled(summary, "cmd")
    assert "excluding 0: **met**" in text
    assert "exact values' order >= 0.9: **met**" in text
    # Grad-CAM equal to phi on every image of every run: its gain interval is [0, 0].
    runs = _two_runs()
    for run in runs:
        run["ranking"]["per_image"]["Grad-CAM"] = run["ranking"]["per_image"][PHI]
        shares = run["ranking"]["truth_order"]["insertion"]["shares_per_image"]
        shares[PHI] = [0.5] * 4
    text = seeds_module.render_pooled(seeds_module.pool_summary(runs), "cmd")
    assert "excluding 0: **missed** (not excluded for ['Grad-CAM'])" in text
    assert "exact values' order >= 0.9: **missed** (insertion 0.50" in text


def test_main_writes_markdown_and_json_and_rejects_old_runs(seeds_module, tmp_path):
    for i, run in enumerate(_two_runs()):
        (tmp_path / f"seed{i}").mkdir()
        (tmp_path / f"seed{i}" / "faithfulness.json").write_text(json.dumps(run))
    out = tmp_path / "pooled.md"
    seeds_module.main(
        ["--pool", str(tmp_path / "seed0"), str(tmp_path / "seed1"), "--out", str(out)]
    )
    assert out.read_text().startswith("# Faithfulness benchmark over seeds")
    saved = json.loads(out.with_suffix(".json").read_text())
    assert saved["runs"] == ["seed0", "seed1"]
    old = _two_runs()[0]
    del old["ranking"]["per_image"]
    (tmp_path / "old.json").write_text(json.dumps(old))
    with pytest.raises(SystemExit, match="no per-image areas"):
        seeds_module.main(["--pool", str(tmp_path / "old.json"), "--out", str(out)])
    with pytest.raises(SystemExit, match="does not exist"):
        seeds_module.main(["--pool", str(tmp_path / "missing"), "--out", str(out)])
