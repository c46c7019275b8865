"""Render the faithfulness benchmark's results (``faithfulness.json``) as Markdown and plots.

``benchmarks/faithfulness.py`` measures and writes ``faithfulness.json``; this module turns that
file into ``faithfulness.md`` (with the targets of issue 8 checked) and the PNG curves, without
running anything again:

    python benchmarks/faithfulness_report.py                 # benchmarks/results/faithfulness/
    python benchmarks/faithfulness_report.py --results benchmarks/results/faithfulness/faithfulness.json \\
        --out benchmarks/results/faithfulness.md             # links relative to the Markdown file
"""

from __future__ import annotations

import argparse
import json
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


def main(argv=None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--results", type=Path, default=RESULTS, help="faithfulness.json")
    parser.add_argument(
        "--out", type=Path, default=None, help="Markdown file (default: beside the results)"
    )
    args = parser.parse_args(argv)
    results = json.loads(args.results.read_text())
    text = write_report(results, args.results.parent, args.out)
    print(text)
    return text


if __name__ == "__main__":
    main()
