"""The faithfulness benchmark over seeds: pools runs of ``benchmarks/faithfulness.py``.

One run explains one model; issue 13's ranking targets are judged over 3 training seeds. Run the
benchmark once per seed, then pool:

    for s in 0 1 2; do
      python benchmarks/faithfulness.py --model-dir outputs/seed$s --skip-plain \\
          --num-truth-images 16 --out-dir benchmarks/results/faithfulness_v10/seed$s
    done
    python benchmarks/faithfulness_seeds.py benchmarks/results/faithfulness_v10/seed{0,1,2} \\
        --output benchmarks/results/faithfulness_v10/faithfulness_seeds.md

Reads each run's ``faithfulness.json`` (which keeps its per-image areas, shares and the pooled
error's sums for this) and writes, pooled over the runs:

* accuracy per seed, of the Shapley model and of its classifier continued with cross-entropy
  for the same steps;
* phi's agreement with the exact values (the predicted class centred over classes): pooled
  relative error, exact over the union of images, and mean per-image r;
* phi's paired gain over each explainer (insertion ``phi - other``, deletion ``other - phi``),
  and each map's share of the way from a random order to the exact values' order, with 95%
  intervals from a hierarchical bootstrap (seeds, then images within each);
* the game's interaction share;
* the KernelSHAP budget whose pooled error first reaches phi's (P = 16 on every seed; P = 49
  where a run measured it).

Writes the Markdown to ``--output`` and everything to the same name with ``.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

from common import markdown_table  # noqa: E402
from faithfulness_report import budget_reached  # noqa: E402
from faithfulness_report import fmt as fmt_interval  # noqa: E402
from recipe import hierarchical_interval  # noqa: E402

#: The baselines issue 13 asks phi to beat with paired intervals that exclude 0.
RANKING_BASELINES = ("random", "attention rollout", "Grad-CAM", "KernelSHAP (20 evals)")
SHARE_TARGET = 0.9


def load_runs(paths: list[Path]) -> list[dict]:
    """Each path's ``faithfulness.json`` (a run folder or the file itself)."""
    runs = []
    for path in paths:
        file = path / "faithfulness.json" if path.is_dir() else path
        if not file.is_file():
            raise SystemExit(f"{file} does not exist: run benchmarks/faithfulness.py first.")
        run = json.loads(file.read_text())
        ranking = run.get("ranking") or {}
        if "per_image" not in ranking:
            raise SystemExit(
                f"{file} has no per-image areas (written by an older faithfulness.py); rerun it."
            )
        runs.append(run)
    return runs


def _finite(values: list[float]) -> list[float]:
    return [v for v in values if v is not None and math.isfinite(v)]


def pooled_mean(per_seed: list[list[float]]) -> tuple[float, float, float, int]:
    """Mean over every finite per-image value of every seed, its hierarchical 95% interval
    (seeds with no finite value left out), and the number of values."""
    kept = [_finite(values) for values in per_seed]
    kept = [values for values in kept if values]
    flat = [v for values in kept for v in values]
    if not flat:
        return math.nan, math.nan, math.nan, 0
    low, high = hierarchical_interval(kept)
    return sum(flat) / len(flat), low, high, len(flat)


def mean_areas(runs: list[dict]) -> dict[str, dict[str, float]]:
    """Each explainer's mean insertion and deletion AUC over every image of every run."""
    names = runs[0]["ranking"]["per_image"]
    out = {}
    for name in names:
        out[name] = {}
        for mode in ("insertion", "deletion"):
            values = [v for run in runs for v in run["ranking"]["per_image"][name][mode]]
            out[name][mode] = sum(values) / len(values)
    return out


def paired_gains(runs: list[dict]) -> list[dict]:
    """phi's gain over every other explainer, pooled over seeds (images paired within a run)."""
    phi = runs[0]["ranking"]["phi"]
    names = [name for name in runs[0]["ranking"]["per_image"] if name != phi]
    rows = []
    for name in names:
        gains = {"insertion": [], "deletion": []}
        for run in runs:
            areas = run["ranking"]["per_image"]
            ins = zip(areas[phi]["insertion"], areas[name]["insertion"], strict=True)
            dele = zip(areas[phi]["deletion"], areas[name]["deletion"], strict=True)
            gains["insertion"].append([p - o for p, o in ins])
            gains["deletion"].append([o - p for p, o in dele])
        rows.append(
            {
                "explainer": name,
                "insertion_gain": pooled_mean(gains["insertion"]),
                "deletion_gain": pooled_mean(gains["deletion"]),
            }
        )
    return rows


def ranking_shares(runs: list[dict]) -> dict[str, dict[str, tuple]]:
    """Each explainer's share of the way to the exact values' order, pooled over seeds."""
    order = [run["ranking"].get("truth_order") for run in runs]
    if not all(order):
        return {}
    names = list(order[0]["insertion"]["shares_per_image"])
    return {
        name: {
            mode: pooled_mean([o[mode]["shares_per_image"][name] for o in order])
            for mode in ("insertion", "deletion")
        }
        for name in names
    }


def budget_rows(runs: list[dict]) -> list[dict]:
    """Per number of players: phi's pooled error over every run that measured it, and the
    first KernelSHAP budget whose pooled error over the same images reaches it."""
    by_players: dict[int, list[dict]] = {}
    for run in runs:
        for budget in run["budgets"]:
            if "pooled_error_trace" in budget:
                by_players.setdefault(budget["num_players"], []).append(budget)
    rows = []
    for players, budgets in sorted(by_players.items()):
        spread = sum(b["truth_spread"] for b in budgets)
        phi_error = math.sqrt(sum(b["phi_squared_error"] for b in budgets) / spread)
        steps = min(len(b["pooled_error_trace"]) for b in budgets)
        trace = []
        for i in range(steps):
            evaluations = budgets[0]["pooled_error_trace"][i][0]
            error = math.sqrt(sum(b["pooled_error_trace"][i][1] for b in budgets) / spread)
            trace.append((evaluations, error))
        reached = next((evals for evals, error in trace if error <= phi_error), None)
        rows.append(
            {
                "num_players": players,
                "runs": len(budgets),
                "num_images": sum(b["num_images"] for b in budgets),
                "truth": budgets[0]["truth"],
                "phi_pooled_error": phi_error,
                "reached_evaluations": reached,
                "cost_per_evaluation": budgets[0]["cost_per_evaluation"],
                "max_evaluations": trace[-1][0] if trace else None,
                "trace": trace,
            }
        )
    return rows


def phi_agreement(runs: list[dict]) -> dict:
    """phi's centred agreement per seed and pooled (the P = 16 budget holds the sums)."""
    per_seed = []
    squared = spread = 0.0
    for run in runs:
        budget = next(b for b in run["budgets"] if b["num_players"] != 49)
        phi = run["ranking"]["phi"]
        row = next(r for r in run["rows"] if r["model"] == "Shapley" and r["explainer"] == phi)
        per_seed.append(
            {
                "pooled_error": budget["phi_pooled_error"],
                "pearson": row["truth_centred_pearson"][0],
                "num_images": budget["num_images"],
            }
        )
        squared += budget["phi_squared_error"]
        spread += budget["truth_spread"]
    return {"per_seed": per_seed, "pooled_error": math.sqrt(squared / spread)}


def summarize(runs: list[dict]) -> dict:
    return {
        "runs": [run["model_dir"] for run in runs],
        "phi_name": runs[0]["ranking"]["phi"],
        "accuracy": [run["accuracy"] for run in runs],
        "phi": phi_agreement(runs),
        "areas": mean_areas(runs),
        "paired": paired_gains(runs),
        "shares": ranking_shares(runs),
        "interaction_share": pooled_mean(
            [run["ranking"].get("interaction_share_per_image", []) for run in runs]
        ),
        "budgets": budget_rows(runs),
    }


def fmt(values: tuple, digits: int = 3) -> str:
    """``mean [low, high]`` of a :func:`pooled_mean` (its image count left out)."""
    return fmt_interval(tuple(values[:3]), digits)


def equal_steps_line(accuracies: list[dict]) -> str:
    """The paired accuracy differences over seeds, with the issue's non-inferiority bound
    mean(d) + t(0.95, n - 1) sd(d) / sqrt(n)."""
    from scipy.stats import t as student_t

    d = [100 * acc["difference_plain_minus_shapley"] for acc in accuracies]
    mean = sum(d) / len(d)
    if len(d) < 2:
        return f"d = {mean:+.1f} points (one seed)."
    sd = math.sqrt(sum((v - mean) ** 2 for v in d) / (len(d) - 1))
    bound = mean + student_t.ppf(0.95, len(d) - 1) * sd / math.sqrt(len(d))
    return (
        f"mean d = {mean:+.1f} points, mean(d) + t(0.95, {len(d) - 1}) sd(d)/sqrt({len(d)}) = "
        f"{bound:+.1f} points."
    )


def signed(mean: float, interval: list[float]) -> str:
    """A difference in points with its interval: ``+3.5 [+1.5, +5.4]``."""
    low, high = interval
    return f"{100 * mean:+.1f} [{100 * low:+.1f}, {100 * high:+.1f}]"


def targets(summary: dict) -> list[str]:
    """Issue 13's ranking targets, judged on the pooled figures."""
    phi = summary["phi_name"]
    compared = [row for row in summary["paired"] if row["explainer"] in RANKING_BASELINES]
    short_of = [
        row["explainer"]
        for row in compared
        if not (row["insertion_gain"][1] > 0 and row["deletion_gain"][1] > 0)
    ]
    lines = [
        f"phi's insertion and deletion AUC better than {', '.join(RANKING_BASELINES)} with "
        "paired 95% intervals (seeds, then images) excluding 0: "
        f"**{'met' if compared and not short_of else 'missed'}**"
        + (f" (not excluded for {short_of})" if short_of else "")
        + "."
    ]
    shares = summary["shares"].get(phi)
    if shares:
        ok = all(shares[m][0] >= SHARE_TARGET for m in ("insertion", "deletion"))
        lines.append(
            f"phi's share of the way from a random order to the exact values' order >= "
            f"{SHARE_TARGET}: **{'met' if ok else 'missed'}** (insertion "
            f"{fmt(shares['insertion'], 2)} on {shares['insertion'][3]} images, deletion "
            f"{fmt(shares['deletion'], 2)} on {shares['deletion'][3]})."
        )
    return lines


def render(summary: dict, command: str) -> str:
    phi = summary["phi"]
    lines = [
        "# Faithfulness benchmark over seeds",
        "",
        f"Command: `{command}`  ",
        "Runs: " + ", ".join(f"`{run}`" for run in summary["runs"]) + ".",
        "",
        "## Accuracy and agreement per seed",
        "",
        markdown_table(
            [
                "run",
                "Shapley accuracy [95%]",
                "classifier + the head's steps in cross-entropy [95%]",
                "plain - Shapley, points [95%]",
                "phi: pooled error (centred)",
                "phi: mean r (centred)",
                "exact-truth images",
            ],
            [
                [
                    f"`{run}`",
                    fmt((acc["Shapley"]["accuracy"], *acc["Shapley"]["ci95"])),
                    fmt((acc["plain"]["accuracy"], *acc["plain"]["ci95"])),
                    signed(acc["difference_plain_minus_shapley"], acc["difference_ci95"]),
                    f"{seed['pooled_error']:.3f}",
                    f"{seed['pearson']:.3f}",
                    seed["num_images"],
                ]
                for run, acc, seed in zip(
                    summary["runs"], summary["accuracy"], phi["per_seed"], strict=True
                )
            ],
        ),
        "",
        f"Pooled over the runs: phi's pooled relative error {phi['pooled_error']:.3f} against "
        "the exact Shapley values of each model's own game (all 2^16 coalitions). The Shapley "
        "model's logits are its frozen classifier's; the next column continues that classifier "
        "with cross-entropy for as many steps as the head trained (the benchmark's plain arm): "
        + equal_steps_line(summary["accuracy"]),
        "",
        "## Ranking: phi against each explainer, and against the exact values' order",
        "",
        "AUC: mean area under the player-level insertion / deletion curve of the predicted "
        "class's probability over every explained image. Gain: per image, insertion AUC of phi minus the explainer's, deletion AUC of the "
        "explainer minus phi's (> 0: phi ranks better), on every explained image of every run. "
        "Share: per exact-truth image, (AUC - AUC_random) / (AUC_truth - AUC_random), images "
        "whose truth and random orders differ by < 0.05 left out. Means with 95% intervals "
        "(hierarchical bootstrap: seeds, then images; n = images).",
        "",
    ]
    shares = summary["shares"]
    table = []
    for row in [{"explainer": summary["phi_name"]}] + summary["paired"]:
        name = row["explainer"]
        share = shares.get(name, {})
        areas = summary["areas"][name]
        table.append(
            [
                name,
                f"{areas['insertion']:.3f}",
                f"{areas['deletion']:.3f}",
                fmt(row["insertion_gain"]) if "insertion_gain" in row else "-",
                fmt(row["deletion_gain"]) if "deletion_gain" in row else "-",
                f"{fmt(share['insertion'], 2)} ({share['insertion'][3]})" if share else "-",
                f"{fmt(share['deletion'], 2)} ({share['deletion'][3]})" if share else "-",
            ]
        )
    lines += [
        markdown_table(
            [
                "explainer",
                "ins AUC ↑",
                "del AUC ↓",
                "insertion gain [95%]",
                "deletion gain [95%]",
                "ins share",
                "del share",
            ],
            table,
        ),
        "",
        "Interaction share of the games (1 - R^2 of the Shapley-kernel additive fit of the "
        f"centred predicted-class logit, exact-truth images): {fmt(summary['interaction_share'])}"
        ": the part no additive explanation can carry.",
        "",
        "## KernelSHAP budget to match phi's pooled error",
        "",
    ]
    budget_table = [
        [
            b["num_players"],
            b["runs"],
            b["num_images"],
            b["truth"],
            f"{b['phi_pooled_error']:.3f}",
            budget_reached(b, b["reached_evaluations"]),
        ]
        for b in summary["budgets"]
    ]
    lines += [
        markdown_table(
            ["P", "runs", "images", "truth", "phi: pooled error", "KernelSHAP budget reaching it"],
            budget_table,
        ),
        "",
        "KernelSHAP with paired sampling and a coalition stream independent of the truth's; its "
        "pooled error is summed over the same images as phi's before the square root.",
        "",
        "## Targets (issue 13)",
        "",
    ]
    lines += [f"- {line}" for line in targets(summary)]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("runs", nargs="+", type=Path, help="faithfulness.py output folders")
    parser.add_argument("--output", type=Path, required=True, help="Markdown file to write")
    args = parser.parse_args(argv)
    summary = summarize(load_runs(args.runs))
    command = "python benchmarks/faithfulness_seeds.py " + " ".join(
        sys.argv[1:] if argv is None else argv
    )
    text = render(summary, command)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text)
    args.output.with_suffix(".json").write_text(json.dumps(summary, indent=1))
    print(text)
    return summary


if __name__ == "__main__":
    main()
