"""benchmarks/faithfulness_report.py renders the faithfulness benchmark's results (the JSON
that benchmarks/faithfulness.py writes) without measuring anything."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from PIL import Image

from conftest import load_benchmark_script

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def report_module():
    return load_benchmark_script("faithfulness_report")


def _row(model: str, explainer: str, cost: float, ins: float, dele: float, r: float) -> dict:
    interval = lambda v: [v, v - 0.05, v + 0.05]  # noqa: E731
    return {
        "model": model,
        "explainer": explainer,
        "cost_forward_equivalents": cost,
        "seconds_per_image": 0.01,
        "insertion_auc": interval(ins),
        "deletion_auc": interval(dele),
        "pixel_insertion_auc": interval(ins - 0.01),
        "pixel_deletion_auc": interval(dele + 0.01),
        "aopc": interval(0.2),
        "sensitivity_n": {"2": 0.1, "4": 0.2},
        "sensitivity_n_mean": interval(0.15),
        "truth_pearson": interval(r),
        "truth_spearman": interval(r - 0.1),
        "truth_relative_l2": 0.5,
        "num_images": 4,
        "num_truth_images": 2,
        "pointing_game": interval(0.25),
        "mask_auroc": interval(0.6),
    }


def _results() -> dict:
    curve = [[1.0, 0.5, 0.25], [0.25, 0.5, 1.0]]
    return {
        "command": "python benchmarks/faithfulness.py --num-images 4",
        "machine": "a test CPU, 2 cores (CPU)",
        "load_average": [1.0, 2.0],
        "timings": {"Shapley: exact truth": 12.0},
        "threads": 1,
        "note": "",
        "model_dir": "outputs/shapley-vit-shapes",
        "plain_dir": "outputs/shapley-vit-shapes/plain-classifier-equal-steps",
        "train_steps": 375,
        "accuracy": {
            "num_images": 2000,
            "Shapley": {"accuracy": 0.56, "ci95": [0.539, 0.582]},
            "plain": {"accuracy": 0.575, "ci95": [0.553, 0.596]},
            "difference_plain_minus_shapley": 0.015,
            "difference_ci95": [-0.004, 0.034],
        },
        "rows": [
            _row("Shapley", "random", 0, 0.36, 0.35, 0.0),
            _row("Shapley", "phi (one pass)", 1, 0.50, 0.20, 0.97),
            _row("Shapley", "Grad-CAM", 3, 0.45, 0.30, 0.10),
            _row("Shapley", "KernelSHAP (1024 evals)", 512, 0.55, 0.15, 1.0),
            _row("plain", "random", 0, 0.41, 0.40, 0.03),
        ],
        "budgets": [
            {
                "phi_pearson": 0.97,
                "cost_per_evaluation": 0.5,
                "evaluations_to_reach_r": {"0.9": 32, "0.95": 64, "0.99": None},
                "reached_evaluations": 80,
                "reached_forward_equivalents": 40.0,
                "max_evaluations": 128,
                "trace": [[16, 0.5], [32, 0.9], [64, 0.95], [80, 0.97], [128, 0.98]],
                "num_players": 16,
                "model": "shapley-vit-shapes",
                "truth": "exact (all 2^16 coalitions)",
                "num_images": 2,
            }
        ],
        "budget_step": 16,
        "num_images": 4,
        "num_truth_images": 2,
        "sensitivity_sizes": [2, 4],
        "curves": {
            "Shapley": {"random": curve, "phi (one pass)": curve},
            "plain": {"random": curve},
        },
        "seconds": 90.0,
    }


def test_render_reports_the_measurements(report_module):
    text = report_module.render(_results())
    assert "wall time 1.5 min" in text
    assert "| Shapley | 0.560 [0.539, 0.582] | 2000 |" in text
    assert "Paired difference plain - Shapley: +0.015 [-0.004, +0.034]" in text
    row = next(line for line in text.splitlines() if line.startswith("| Shapley | phi (one pass)"))
    assert row.startswith("| Shapley | phi (one pass) | 1 | 0.500 | 0.200 |")
    assert "0.97 [0.92, 1.02]" in row
    budget = next(line for line in text.splitlines() if line.startswith("| 16 |"))
    assert "80 evals = 40 fwd" in budget and "32 (16 fwd)" in budget and budget.endswith("| - |")
    # Targets: phi beats every baseline costing <= 10 passes (random, Grad-CAM) and r >= 0.95.
    assert "costing <= 10 forward passes (random, Grad-CAM): **met**" in text
    assert "mean per-image r >= 0.95 with the truth (predicted class, P = 16): **met**" in text
    assert "P = 49: not run (--skip-p49)." in text
    assert "Plots: `curves_Shapley.png`, `curves_plain.png`, `kernelshap_budget.png`" in text


def test_targets_missed_name_the_better_baseline(report_module):
    results = _results()
    results["rows"][2] = _row("Shapley", "Grad-CAM", 3, 0.60, 0.30, 0.1)
    results["rows"][1]["truth_pearson"] = [0.5, 0.3, 0.7]
    text = report_module.render(results)
    assert "**missed** (phi ins 0.500, del 0.200; better insertion: ['Grad-CAM'])" in text
    assert "(predicted class, P = 16): **missed** (r = 0.500 [0.300, 0.700]" in text


def test_write_report_renders_from_the_json_file(report_module, tmp_path):
    """The measurement writes faithfulness.json; the renderer alone turns it into Markdown
    (links relative to where the Markdown goes) and plots."""
    results = _results()
    results["rows"][0]["truth_relative_l2"] = math.nan  # JSON of a real run holds NaN
    out_dir = tmp_path / "results" / "faithfulness"
    out_dir.mkdir(parents=True)
    (out_dir / "faithfulness.json").write_text(json.dumps(results))

    text = report_module.main(
        [
            "--results",
            str(out_dir / "faithfulness.json"),
            "--out",
            str(tmp_path / "results" / "f.md"),
        ]
    )
    assert (tmp_path / "results" / "f.md").read_text() == text
    assert "`faithfulness/kernelshap_budget.png`" in text
    assert "intervals in `faithfulness/faithfulness.json`" in text
    for name in ("curves_Shapley.png", "curves_plain.png", "kernelshap_budget.png"):
        Image.open(out_dir / name).verify()

    # Default: the Markdown beside the results, links without a folder.
    text = report_module.main(["--results", str(out_dir / "faithfulness.json")])
    assert (out_dir / "faithfulness.md").read_text() == text
    assert "the budget is `kernelshap_budget.png`" in text


def _ranking(gain_lower: float) -> dict:
    def paired(name: str, cost: float) -> dict:
        return {
            "explainer": name,
            "cost_forward_equivalents": cost,
            "insertion_gain": [0.2, gain_lower, 0.3],
            "deletion_gain": [0.1, 0.05, 0.15],
        }

    def share(value: float, n: int) -> dict:
        return {"share": [value, value - 0.1, value + 0.1], "num_images": n}

    names = ["phi (one pass)", "random", "attention rollout", "Grad-CAM", "KernelSHAP (20 evals)"]
    return {
        "phi": "phi (one pass)",
        "num_images": 4,
        "num_truth_images": 2,
        "paired": [paired(n, c) for n, c in zip(names[1:], [0, 1, 3, 10], strict=True)],
        "truth_order": {
            mode: {
                "truth_auc": [0.9, 0.85, 0.95],
                "random_auc": [0.6, 0.55, 0.65],
                "explainers": {n: share(0.95 if n.startswith("phi") else 0.4, 2) for n in names},
            }
            for mode in ("insertion", "deletion")
        },
        "interaction_share": [0.12, 0.08, 0.16],
    }


def test_ranking_section_and_its_targets(report_module):
    results = _results()
    results["ranking"] = _ranking(gain_lower=0.1)
    text = report_module.render(results)
    assert (
        "| Grad-CAM | 3 | 0.200 [0.100, 0.300] | 0.100 [0.050, 0.150] | 0.40 (2) | 0.40 (2) |"
        in (text)
    )
    assert "| phi (one pass) | 1 | - | - | 0.95 (2) | 0.95 (2) |" in text
    assert "Interaction share of the game" in text and "0.120 [0.080, 0.160]" in text
    assert "KernelSHAP (20 evals) with paired 95% intervals excluding 0: **met**." in text
    assert "random order to the exact values' order >= 0.9: **met** (insertion 0.95" in text
    # An interval that reaches 0 misses the target and says against whom.
    results["ranking"] = _ranking(gain_lower=-0.01)
    results["ranking"]["truth_order"]["deletion"]["explainers"]["phi (one pass)"]["share"][0] = 0.8
    text = report_module.render(results)
    assert "excluding 0: **missed** (not excluded for ['random', 'attention rollout'," in text
    assert (
        "the exact values' order >= 0.9: **missed** (insertion 0.95 on 2 images, deletion 0.80"
        in (text)
    )
    # Without a ranking (older JSON files) the section is left out.
    assert "## Ranking" not in report_module.render(_results())


def test_header_says_when_the_plain_model_was_not_explained(report_module):
    results = _results()
    assert "explained through `from_backbone(" in report_module.render(results)
    results["rows"] = [row for row in results["rows"] if row["model"] == "Shapley"]
    text = report_module.render(results)
    assert "which is not explained (--skip-plain" in text
    assert "explained through `from_backbone(" not in text


def test_budget_table_reports_the_pooled_error_budget(report_module, tmp_path):
    results = _results()
    # Older runs (no pooled error) keep their table, with "-" in the new columns.
    assert "| 0.970 | 80 evals = 40 fwd | - | - |" in report_module.render(results)
    results["budgets"][0].update(
        phi_pooled_error=0.25,
        phi_squared_error=1.0,
        reached_pooled_error_evaluations=None,
        truth_spread=16.0,
        pooled_error_trace=[[16, 8.0], [32, 4.0], [48, 2.0]],
    )
    text = report_module.render(results)
    assert "| 0.970 | 80 evals = 40 fwd | 0.250 | not reached in 128 evals |" in text
    results["budgets"][0]["reached_pooled_error_evaluations"] = 48
    assert "| 0.250 | 48 evals = 24 fwd |" in report_module.render(results)
    # The plot gains a pooled-error panel: a wider figure than the r panel alone.
    report_module.write_plots(results, tmp_path / "with")
    del results["budgets"][0]["pooled_error_trace"]
    report_module.write_plots(results, tmp_path / "without")
    width = {
        d: Image.open(tmp_path / d / "kernelshap_budget.png").size[0] for d in ("with", "without")
    }
    assert width["with"] > 1.5 * width["without"]
