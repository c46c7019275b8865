"""Render the faithfulness benchmark's results (``faithfulness.json``) as Markdown and plots,
and pool runs over seeds.

``benchmarks/faithfulness.py`` measures and writes ``faithfulness.json``; this module turns that
file into ``faithfulness.md`` (with the targets of issue 8 checked) and the PNG curves, without
running anything again:

    python benchmarks/faithfulness_report.py                 # benchmarks/results/faithfulness/
    python benchmarks/faithfulness_report.py --results benchmarks/results/faithfulness/faithfulness.json \\
        --out benchmarks/results/faithfulness.md             # links relative to the Markdown file

``--pool RUN ...`` pools runs of ``faithfulness.py`` over seeds instead. One run explains one
model; issue 13's ranking targets are judged over 3 training seeds. Run the benchmark once per
seed, then pool:

    for s in 0 1 2; do
      python benchmarks/faithfulness.py --model-dir outputs/seed$s --skip-plain \\
          --num-truth-images 16 --out-dir benchmarks/results/faithfulness_v10/seed$s
    done
    python benchmarks/faithfulness_report.py --pool benchmarks/results/faithfulness_v10/seed{0,1,2} \\
        --out benchmarks/results/faithfulness_v10/faithfulness_seeds.md

Pooling reads each run's ``faithfulness.json`` (which keeps its per-image areas, shares and the
pooled error's sums for this) and writes, pooled over the runs:

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

It writes the Markdown to ``--out`` and everything to the same name with ``.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

from common import markdown_table  # noqa: E402

RESULTS = REPO / "benchmarks" / "results" / "faithfulness" / "faithfulness.json"


def fmt(value, digits=3) -> str:
    if value is None:
        return "-"
    if isinstance(value, (tuple, list)):
        mean, lo, hi = value
        if mean != mean:
            return "-"
        return f"{mean:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"
    if isinstance(value, float) and value != value:
        return "-"
    return f"{value:.{digits}f}"


def short(value, digits=3) -> str:
    if value is None:
        return "-"
    mean = value[0] if isinstance(value, (tuple, list)) else value
    return "-" if mean != mean else f"{mean:.{digits}f}"


def plot_names(results: dict) -> list[str]:
    """File names of the plots :func:`write_plots` draws from ``results``."""
    names = [f"curves_{model_name.replace(' ', '_')}.png" for model_name in results["curves"]]
    return names + (["kernelshap_budget.png"] if results["budgets"] else [])


def write_plots(results: dict, out_dir: Path) -> list[str]:
    """The mean player-level curves of every explainer (one figure per model) and the
    KernelSHAP budget curve, as PNG files in ``out_dir``; returns their names."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from hf_shapley.visualization import plot_faithfulness_curves, save_figure

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    budgets = results["budgets"]
    paths = []
    for model_name, per_explainer in results["curves"].items():
        phi = next((name for name in per_explainer if name.startswith("phi")), None)
        fig = plot_faithfulness_curves(
            per_explainer, title=f"{model_name} (player level)", highlight=phi
        )
        path = out_dir / f"curves_{model_name.replace(' ', '_')}.png"
        save_figure(fig, path, dpi=120)
        paths.append(path.name)
    if budgets:
        with_error = any("pooled_error_trace" in budget for budget in budgets)
        fig = Figure(figsize=(11 if with_error else 6, 4.2), layout="constrained")
        FigureCanvasAgg(fig)
        axes = fig.subplots(1, 2 if with_error else 1, squeeze=False)[0]
        for budget in budgets:
            players = budget["num_players"]
            evals, rs = zip(*budget["trace"], strict=True)
            line = axes[0].plot(evals, rs, label=f"KernelSHAP, P = {players}")[0]
            color = line.get_color()
            axes[0].axhline(
                budget["phi_pearson"], color=color, ls="--", label=f"phi, P = {players}"
            )
            if with_error and "pooled_error_trace" in budget:
                evals, squared = zip(*budget["pooled_error_trace"], strict=True)
                errors = [(e / budget["truth_spread"]) ** 0.5 for e in squared]
                axes[1].plot(evals, errors, color=color, label=f"KernelSHAP, P = {players}")
                axes[1].axhline(
                    budget["phi_pooled_error"], color=color, ls="--", label=f"phi, P = {players}"
                )
        axes[0].set_ylabel("mean per-image Pearson r with the truth")
        if with_error:
            axes[1].set_yscale("log")
            axes[1].set_ylabel("pooled relative error (centred predicted class)")
        for ax in axes:
            ax.set_xscale("log")
            ax.set_xlabel("coalition evaluations per image")
            ax.legend(fontsize="small")
        path = out_dir / "kernelshap_budget.png"
        fig.savefig(path, dpi=120)
        paths.append(path.name)
    return paths


def render(report: dict, link_prefix: str = "") -> str:
    """The Markdown report of ``report`` (the contents of ``faithfulness.json``); files it
    links (plots, the JSON) are named ``link_prefix + name``."""
    acc = report["accuracy"]
    lines = [
        "# Faithfulness benchmark",
        "",
        f"Command: `{report['command']}`  ",
        f"Machine: {report['machine']}; {report['threads']} torch thread(s); wall time "
        f"{report['seconds'] / 60:.1f} min (1-min load average {report['load_average'][0]:.1f} at "
        f"the start, {report['load_average'][1]:.1f} at the end){report.get('note', '')}.  ",
        "Time per stage: "
        + ", ".join(f"{k} {v:.0f} s" for k, v in report["timings"].items())
        + ".",
        "",
        f"Models: **Shapley** = `{report['model_dir']}` (the main job); **plain** = "
        + (
            f"`{report['plain_dir']}`, whose accuracy is compared but which is not explained "
            "(--skip-plain: the Shapley model's classifier is this one, frozen, so their games "
            "are the same)."
            if not any(row["model"] == "plain" for row in report["rows"])
            else f"the same pretrained ViT classifier continued with cross-entropy for the same "
            f"{report['train_steps']} steps (`{report['plain_dir']}`), explained through "
            "`from_backbone(..., prediction_mode='backbone_head', train_backbone=False)` (its "
            "value function removes tokens from a classifier never trained on masked inputs, so "
            "its curves are context, not a like-for-like comparison)."
        )
        + " One training seed per model.",
        "",
        "## Accuracy (equal optimizer steps)",
        "",
        markdown_table(
            ["model", "test accuracy [95% Wilson]", "test images"],
            [
                [
                    "Shapley",
                    fmt((acc["Shapley"]["accuracy"], *acc["Shapley"]["ci95"])),
                    acc["num_images"],
                ],
                [
                    "plain",
                    fmt((acc["plain"]["accuracy"], *acc["plain"]["ci95"])),
                    acc["num_images"],
                ],
            ],
        ),
        "",
        f"Paired difference plain - Shapley: {acc['difference_plain_minus_shapley']:+.3f} "
        f"[{acc['difference_ci95'][0]:+.3f}, {acc['difference_ci95'][1]:+.3f}] (bootstrap over "
        "images, one seed each; docs/evaluation.md asks for 3 seeds and the upper bound of this interval).",
        "",
        "## Explainers",
        "",
        f"{report['num_images']} test images, each explained for the model's predicted class; "
        f"truth agreement on the first {report['num_truth_images']} (exact Shapley values of that "
        "model's own game, all 2^16 coalitions). Cost in full-forward equivalents per image (a "
        "backward = 2 forwards; KernelSHAP pairs share one packed pass). ins/del: area under the "
        "player-level insertion/deletion curve of the predicted class's probability (higher / "
        "lower is better); pix: the same with pixel replacement by 0 (RISE); AOPC on the "
        "player-level deletion curve; sens-n: mean over n in "
        f"{report['sensitivity_sizes']} of the per-image Pearson r between the summed map and the "
        "logit drop; point/AUROC: pointing game and AUROC against the object mask (a player is "
        "object if it holds any object pixel); r/rho: mean per-image Pearson/Spearman with the "
        "truth [bootstrap 95%]; rel. L2 only means something for Shapley-scaled maps (phi, "
        "leave-one-out, KernelSHAP); r other: Pearson on the other classes (methods that give "
        "every class at once); centred err: the pooled relative error of the predicted class's "
        "values centred over classes (the issue's agreement figure; methods that give every "
        f"class at once). Means; intervals in `{link_prefix}faithfulness.json`.",
        "",
    ]
    header = [
        "model", "explainer", "cost (fwd)", "ins ↑", "del ↓", "pix ins ↑", "pix del ↓",
        "AOPC ↑", "sens-n ↑", "point ↑", "AUROC ↑", "r truth [95%]", "rho", "rel. L2", "r other",
        "centred err",
    ]  # fmt: skip
    table = []
    for row in report["rows"]:
        table.append(
            [
                row["model"],
                row["explainer"],
                f"{row['cost_forward_equivalents']:g}",
                short(row["insertion_auc"]),
                short(row["deletion_auc"]),
                short(row["pixel_insertion_auc"]),
                short(row["pixel_deletion_auc"]),
                short(row["aopc"]),
                short(row["sensitivity_n_mean"]),
                short(row.get("pointing_game"), 2),
                short(row.get("mask_auroc")),
                fmt(row["truth_pearson"], 2),
                short(row["truth_spearman"], 2),
                short(row["truth_relative_l2"], 2),
                short(row.get("truth_pearson_other_classes"), 2),
                short(row.get("truth_centred_pooled_error")),
            ]
        )
    lines += [markdown_table(header, table), ""]
    lines += ["## KernelSHAP budget to match phi's agreement with the truth", ""]
    budget_rows = []
    for budget in report["budgets"]:
        budget_rows.append(
            [
                budget["num_players"],
                budget["model"],
                budget["truth"],
                budget["num_images"],
                f"{budget['phi_pearson']:.3f}",
                budget_reached(budget, budget["reached_evaluations"]),
                short(budget.get("phi_pooled_error")),
                budget_reached(budget, budget.get("reached_pooled_error_evaluations"))
                if "phi_pooled_error" in budget
                else "-",
                *[
                    "-"
                    if evals is None
                    else f"{evals:,} ({evals * budget['cost_per_evaluation']:,.0f} fwd)"
                    for evals in budget["evaluations_to_reach_r"].values()
                ],
            ]
        )
    lines += [
        markdown_table(
            [
                "P",
                "model",
                "truth",
                "images",
                "phi: mean r",
                "KernelSHAP budget reaching it",
                "phi: pooled error (centred)",
                "KernelSHAP budget reaching it",
                "KS evals to r >= 0.9",
                "r >= 0.95",
                "r >= 0.99",
            ],
            budget_rows,
        ),
        "",
        "KernelSHAP (paired sampling, regression estimator, a coalition stream independent of "
        f"the truth's) read off every {report['budget_step']} evaluations; the curve of r against "
        f"the budget is `{link_prefix}kernelshap_budget.png`. Pooled error: "
        "sqrt(sum |phi - t|^2 / sum |t - mean_P t|^2) over the images, on the predicted class's "
        "values centred over classes (lower is better; KernelSHAP matches phi once its error is "
        "at most phi's).",
        "",
    ]
    lines += ranking_lines(report.get("ranking"), link_prefix)
    lines += ["## Targets (issues 8 and 13)", ""]
    lines += [f"- {line}" for line in check_targets(report)]
    lines += ["", "Plots: " + ", ".join(f"`{link_prefix}{p}`" for p in plot_names(report)), ""]
    return "\n".join(lines)


def budget_reached(budget: dict, evaluations: int | None) -> str:
    """``"N evals = M fwd"``, or that the budget ran out first."""
    if evaluations is None:
        return f"not reached in {budget['max_evaluations']:,} evals"
    return f"{evaluations:,} evals = {evaluations * budget['cost_per_evaluation']:,.0f} fwd"


def ranking_lines(ranking: dict | None, link_prefix: str = "") -> list[str]:
    """The ranking section: phi against every other explainer (paired), and each map's share of
    the way from a random order to the exact values' order."""
    if not ranking:
        return []
    lines = [
        "## Ranking: phi against each explainer, and against the truth's order",
        "",
        f"Gain of phi over each explainer on the same {ranking['num_images']} images (insertion: "
        "phi - other; deletion: other - phi; > 0 = phi ranks better), with paired bootstrap 95% "
        "intervals over images.",
    ]
    order = ranking.get("truth_order")
    if order:
        lines[-1] += (
            f" Share: per image, (AUC - AUC_random) / (AUC_truth - AUC_random) on the "
            f"{ranking['num_truth_images']} exact-truth images, where AUC_truth ranks by the exact "
            "Shapley values and AUC_random averages 16 random orders; images where the two differ "
            "by < 0.05 are left out (n = images kept)."
        )
    lines.append("")
    header = ["explainer", "cost (fwd)", "insertion gain [95%]", "deletion gain [95%]"]
    if order:
        header += ["ins share (n)", "del share (n)"]
    rows = []
    names = [ranking["phi"]] + [p["explainer"] for p in ranking["paired"]]
    paired = {p["explainer"]: p for p in ranking["paired"]}
    for name in names:
        p = paired.get(name)
        row = [
            name,
            f"{p['cost_forward_equivalents']:g}" if p else "1",
            fmt(p["insertion_gain"]) if p else "-",
            fmt(p["deletion_gain"]) if p else "-",
        ]
        if order:
            for mode in ("insertion", "deletion"):
                share = order[mode]["explainers"].get(name)
                row.append(f"{short(share['share'], 2)} ({share['num_images']})" if share else "-")
        rows.append(row)
    lines += [markdown_table(header, rows), ""]
    if order:
        lines.append(
            "Truth's order: insertion AUC "
            f"{fmt(order['insertion']['truth_auc'])} against random "
            f"{fmt(order['insertion']['random_auc'])}; deletion AUC "
            f"{fmt(order['deletion']['truth_auc'])} against random "
            f"{fmt(order['deletion']['random_auc'])}."
        )
    if "interaction_share" in ranking:
        lines.append(
            "Interaction share of the game (1 - R^2 of the Shapley-kernel additive fit of the "
            "centred predicted-class logit, exact-truth images): "
            f"{fmt(ranking['interaction_share'])}: the part no additive explanation can carry."
        )
    return lines + [""]


def check_ranking(ranking: dict | None) -> list[str]:
    """Issue 13's ranking targets: phi beats random, attention rollout, Grad-CAM and KernelSHAP
    at 20 evaluations with paired intervals that exclude 0, and goes >= 0.9 of the way from a
    random order to the truth's."""
    if not ranking:
        return []
    wanted = ("random", "attention rollout", "Grad-CAM", "KernelSHAP (20 evals)")
    compared = [p for p in ranking["paired"] if p["explainer"] in wanted]
    short_of = [
        p["explainer"]
        for p in compared
        if p["insertion_gain"][1] <= 0 or p["deletion_gain"][1] <= 0
    ]
    out = [
        "phi's insertion and deletion AUC better than "
        f"{', '.join(p['explainer'] for p in compared)} with paired 95% intervals excluding 0: "
        f"**{'met' if compared and not short_of else 'missed'}**"
        + (f" (not excluded for {short_of})" if short_of else "")
        + "."
    ]
    order = ranking.get("truth_order")
    if order:
        shares = [order[m]["explainers"][ranking["phi"]] for m in ("insertion", "deletion")]
        ok = all(s["num_images"] and s["share"][0] >= 0.9 for s in shares)
        out.append(
            "phi's share of the way from a random order to the exact values' order >= 0.9: "
            f"**{'met' if ok else 'missed'}** (insertion {short(shares[0]['share'], 2)} on "
            f"{shares[0]['num_images']} images, deletion {short(shares[1]['share'], 2)} on "
            f"{shares[1]['num_images']})."
        )
    return out


def check_targets(report: dict) -> list[str]:
    out = check_ranking(report.get("ranking"))
    rows = [r for r in report["rows"] if r["model"] == "Shapley"]
    phi = next((r for r in rows if r["explainer"].startswith("phi")), None)
    if phi is not None:
        cheap = [r for r in rows if r is not phi and r["cost_forward_equivalents"] <= 10]
        beaten_ins = [
            r["explainer"] for r in cheap if r["insertion_auc"][0] > phi["insertion_auc"][0]
        ]
        beaten_del = [
            r["explainer"] for r in cheap if r["deletion_auc"][0] < phi["deletion_auc"][0]
        ]
        ok = not beaten_ins and not beaten_del
        out.append(
            f"phi's insertion/deletion AUC at least as good as every baseline costing <= 10 "
            f"forward passes ({', '.join(r['explainer'] for r in cheap)}): "
            f"**{'met' if ok else 'missed'}** (phi ins {phi['insertion_auc'][0]:.3f}, del "
            f"{phi['deletion_auc'][0]:.3f}"
            + (f"; better insertion: {beaten_ins}" if beaten_ins else "")
            + (f"; better deletion: {beaten_del}" if beaten_del else "")
            + ")."
        )
        acc = report["accuracy"]
        upper = acc["difference_ci95"][1]
        r_ok = phi["truth_pearson"][0] >= 0.95
        out.append(
            f"mean per-image r >= 0.95 with the truth (predicted class, P = 16): "
            f"**{'met' if r_ok else 'missed'}** (r = {phi['truth_pearson'][0]:.3f} "
            f"[{phi['truth_pearson'][1]:.3f}, {phi['truth_pearson'][2]:.3f}] on "
            f"{phi['num_truth_images']} images); accuracy non-inferiority: plain - Shapley = "
            f"{acc['difference_plain_minus_shapley']:+.3f}, upper 95% bound {upper:+.3f} "
            "(one seed; not the 3-seed protocol)."
        )
    p49 = next((b for b in report["budgets"] if b["num_players"] == 49), None)
    if p49 is not None:
        reached = p49["reached_forward_equivalents"]
        ok = reached is None or reached >= 500
        out.append(
            "KernelSHAP needs >= 500 forward-pass equivalents to match phi at P = 49: "
            f"**{'met' if ok else 'missed'}** ("
            + (
                f"reached at {reached:,.0f}"
                if reached is not None
                else f"not reached within {p49['max_evaluations'] * 0.5:,.0f}"
            )
            + f" for phi's r = {p49['phi_pearson']:.3f})."
        )
    else:
        out.append("P = 49: not run (--skip-p49).")
    return out


def write_report(results: dict, out_dir: Path, markdown: Path | None = None) -> str:
    """Draw the plots into ``out_dir`` and write the Markdown report to ``markdown`` (default
    ``out_dir/faithfulness.md``), its links relative to the Markdown file; returns the text."""
    out_dir = Path(out_dir)
    markdown = Path(markdown) if markdown is not None else out_dir / "faithfulness.md"
    write_plots(results, out_dir)
    prefix = os.path.relpath(out_dir.resolve(), markdown.parent.resolve())
    prefix = "" if prefix == "." else prefix.replace(os.sep, "/") + "/"
    text = render(results, link_prefix=prefix)
    markdown.parent.mkdir(parents=True, exist_ok=True)
    markdown.write_text(text)
    return text


# ----------------------------------------------------------------------------- pooling seeds

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
    from recipe import hierarchical_interval  # torch: imported only when pooling

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


def pooled_budget_rows(runs: list[dict]) -> list[dict]:
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


def pool_summary(runs: list[dict]) -> dict:
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
        "budgets": pooled_budget_rows(runs),
    }


def fmt_pooled(values: tuple, digits: int = 3) -> str:
    """``mean [low, high]`` of a :func:`pooled_mean` (its image count left out)."""
    return fmt(tuple(values[:3]), digits)


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


def pooled_targets(summary: dict) -> list[str]:
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
            f"{fmt_pooled(shares['insertion'], 2)} on {shares['insertion'][3]} images, deletion "
            f"{fmt_pooled(shares['deletion'], 2)} on {shares['deletion'][3]})."
        )
    return lines


def render_pooled(summary: dict, command: str) -> str:
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
                    fmt_pooled((acc["Shapley"]["accuracy"], *acc["Shapley"]["ci95"])),
                    fmt_pooled((acc["plain"]["accuracy"], *acc["plain"]["ci95"])),
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
                fmt_pooled(row["insertion_gain"]) if "insertion_gain" in row else "-",
                fmt_pooled(row["deletion_gain"]) if "deletion_gain" in row else "-",
                f"{fmt_pooled(share['insertion'], 2)} ({share['insertion'][3]})" if share else "-",
                f"{fmt_pooled(share['deletion'], 2)} ({share['deletion'][3]})" if share else "-",
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
        f"centred predicted-class logit, exact-truth images): {fmt_pooled(summary['interaction_share'])}"
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
    lines += [f"- {line}" for line in pooled_targets(summary)]
    return "\n".join(lines) + "\n"


def pool(runs: list[Path], output: Path, command: str) -> str:
    """Pool the ``faithfulness.json`` of ``runs``; write the Markdown to ``output`` and the
    summary to the same name with ``.json``; returns the Markdown."""
    summary = pool_summary(load_runs(runs))
    text = render_pooled(summary, command)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(text)
    output.with_suffix(".json").write_text(json.dumps(summary, indent=1))
    return text


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--results", type=Path, default=RESULTS, help="faithfulness.json")
    parser.add_argument(
        "--out",
        "--output",
        type=Path,
        default=None,
        help="Markdown file (default: beside the results; required with --pool)",
    )
    parser.add_argument(
        "--pool",
        nargs="+",
        type=Path,
        default=None,
        metavar="RUN",
        help="pool these faithfulness.py output folders (or faithfulness.json files) over seeds",
    )
    args = parser.parse_args(argv)
    if args.pool:
        if args.out is None:
            parser.error("--pool needs --out, the Markdown file to write")
        command = "python benchmarks/faithfulness_report.py " + " ".join(
            sys.argv[1:] if argv is None else argv
        )
        text = pool(args.pool, args.out, command)
    else:
        results = json.loads(args.results.read_text())
        text = write_report(results, args.results.parent, args.out)
    print(text)
    return text


if __name__ == "__main__":
    main()
