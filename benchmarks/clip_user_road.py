"""The user's CLIP road: a pretrained CLIP checkpoint explained on the user's own captions.

Per seed and players grid:

* **the user's CLIP**: a ``CLIPModel`` trained contrastively (plain CLIP: no Shapley loss, no
  head; ``examples/train_clip.py`` with the pair objective's other weights at 0) on the built-in
  shapes pairs of that seed, saved as a plain CLIP directory with its tokenizer and image
  processor, as a Hub checkpoint is. ``--players_grid 4 4`` uses a 4 x 4 token grid (64 px,
  16 px patches: P = 16); ``7 7`` a 7 x 7 grid (56 px, 8 px patches: the ViT-B/32 layout at
  224 px, P = 49);
* **the user's captions**: other shapes images (another generator seed) written as an image
  folder with class sub-folders and a ``metadata.jsonl`` of captions (``train/``, ``test/``);
* **the README's command** on them: ``examples/train_clip.py --clip_model CLIP --train_dir
  train --test_dir test --players_grid G G --num_truth_images N``: CLIP frozen, the head
  trained on CLIP's own game; its ``metrics.json`` gives the scores' bit-identity, zero-shot
  accuracy and the agreement of phi with the Shapley values of CLIP's own games on the test
  images' captions, the other test images' captions and the class prompts (texts the head
  never trained on): exact enumeration at P = 16, KernelSHAP run until its own estimated pooled
  error is at most 0.1 at P = 49.

    python benchmarks/clip_user_road.py --seeds 0 1 2 --players_grid 4 4
    python benchmarks/clip_user_road.py --seeds 0 1 2 --players_grid 7 7

It writes ``clip_user_road_p<P>.json`` (each run's metrics) and ``.md`` (per seed, and the mean
over seeds with a t interval) in ``--out``; a run whose ``metrics.json`` exists is not redone.
``--variant NAME --explainer_args "..."`` runs the explainer with other ``train_clip.py``
options on the same user CLIP and captions (results named after the variant): the head screen.
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Token grid and image size of the user's CLIP for each players grid.
GEOMETRY = {(4, 4): dict(image_size=64, patch_size=16), (7, 7): dict(image_size=56, patch_size=8)}
# The parts of the faithfulness report (texts of held-out images, or prompts: none trained on).
PARTS = {
    "the image's own caption": ("", None),
    "other images' captions": ("other_texts_", None),
    "the image's class prompt": ("", "label_prompts"),
    "other class prompts": ("other_texts_", "label_prompts"),
}


# The deletion R@1 curves of metrics.json: players removed by phi, at random, in the exact order.
ORDERS = ("phi", "random", "truth")


def run_train_clip(arguments: list[str], out: Path) -> dict:
    """``examples/train_clip.py`` as a user runs it (its log beside ``out``); its metrics."""
    command = [sys.executable, str(ROOT / "examples" / "train_clip.py"), *arguments]
    command += ["--output_dir", str(out), "--disable_tqdm", "True"]
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.with_suffix(".log").open("w") as handle:
        subprocess.run(command, check=True, stdout=handle, stderr=subprocess.STDOUT)
    return json.loads((out / "metrics.json").read_text())


def user_clip(work: Path, seed: int, grid: tuple[int, int], epochs: int, count: int) -> Path:
    """A plain CLIP trained contrastively on the built-in pairs, saved as a CLIP checkpoint."""
    from transformers import AutoImageProcessor, AutoTokenizer

    from hf_shapley import ShapleyCLIPModel

    target = work / "user-clip"
    if (target / "model.safetensors").is_file():
        return target
    geometry = GEOMETRY[grid]
    trained = work / "plain-clip-run"
    run_train_clip(
        [
            "--seed", str(seed), "--num_train_epochs", str(epochs), "--num_train", str(count),
            "--image_size", str(geometry["image_size"]),
            "--patch_size", str(geometry["patch_size"]),
            "--players_grid", *map(str, grid),
            "--distill_loss_weight", "0", "--shapley_loss_weight", "0",
            "--explainer_epochs", "0", "--num_truth_images", "0", "--num_retrieval_images", "0",
        ],
        trained,
    )  # fmt: skip
    ShapleyCLIPModel.from_pretrained(trained).clip.save_pretrained(target)
    AutoTokenizer.from_pretrained(trained).save_pretrained(target)
    AutoImageProcessor.from_pretrained(trained).save_pretrained(target)
    return target


def caption_folder(path: Path, count: int, image_size: int, seed: int) -> Path:
    """Built-in shapes as a user keeps captioned images: class folders and a metadata.jsonl."""
    from hf_shapley.data import load_shapes_caption_dataset, save_caption_folder

    if (path / "metadata.jsonl").is_file():
        return path
    data = load_shapes_caption_dataset(count, 1, image_size=image_size, seed=seed)["train"]
    return save_caption_folder(data.remove_columns("mask"), path)


def run(args, seed: int) -> dict:
    grid = tuple(args.players_grid)
    work = args.work / f"p{grid[0] * grid[1]}-seed{seed}"
    out = work / ("explained" if args.variant is None else f"explained-{args.variant}")
    if (out / "metrics.json").is_file():
        return json.loads((out / "metrics.json").read_text())
    image_size = GEOMETRY[grid]["image_size"]
    start = time.perf_counter()
    clip = user_clip(work, seed, grid, args.clip_epochs, args.num_train)
    clip_seconds = time.perf_counter() - start
    # Another generator seed than the CLIP's pairs: images and captions it never saw.
    train = caption_folder(work / "captions" / "train", args.num_train, image_size, 1000 + seed)
    test = caption_folder(work / "captions" / "test", args.num_test, image_size, 2000 + seed)
    start = time.perf_counter()
    metrics = run_train_clip(
        [
            "--clip_model", str(clip), "--train_dir", str(train), "--test_dir", str(test),
            "--players_grid", *map(str, grid), "--seed", str(seed),
            "--num_truth_images", str(args.num_truth_images),
            "--truth_max_evaluations", str(args.truth_max_evaluations),
            *shlex.split(args.explainer_args),
        ],
        out,
    )  # fmt: skip
    metrics["wall_seconds"] = {"user_clip": clip_seconds, "explainer": time.perf_counter() - start}
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")
    return metrics


def part(metrics: dict, name: str) -> dict:
    prefix, key = PARTS[name]
    report = metrics["faithfulness"]
    report = report[key] if key else report
    if "agreement_withheld" in report:
        return {"withheld": report["agreement_withheld"]}
    return {
        "pooled_relative_error": report[f"{prefix}pooled_relative_error"],
        "pearson_r": report[f"{prefix}pearson_r"],
        "pearson_r_ci95": report[f"{prefix}pearson_r_ci95"],
        "spearman_r": report[f"{prefix}spearman_r"],
        "truth_estimated_error": report.get("truth_estimated_error"),
    }


def mean_interval(values: list[float]) -> str:
    """Mean and a t interval over seeds (two-sided 95%)."""
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return f"{mean:.3f}"
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    t = {2: 12.706, 3: 4.303, 4: 3.182, 5: 2.776}.get(n, 2.0)
    half = t * sd / math.sqrt(n)
    return f"{mean:.3f} [{mean - half:.3f}, {mean + half:.3f}]"


def summarize(args, runs: dict[int, dict]) -> str:
    grid = tuple(args.players_grid)
    seeds = sorted(runs)
    first = runs[seeds[0]]["faithfulness"]
    variant = ""
    if args.variant is not None:
        variant = f" --variant {args.variant} --explainer_args {shlex.quote(args.explainer_args)}"
    lines = [
        f"# The user's CLIP road, P = {grid[0] * grid[1]}",
        "",
        f"`python benchmarks/clip_user_road.py --seeds {' '.join(map(str, seeds))} "
        f"--players_grid {grid[0]} {grid[1]}{variant}`; truth: {first['truth']} on "
        f"{first['num_images']} test images a seed.",
        "",
        "| seed | scores bit-identical | zero-shot accuracy | deletion R@1 at k = P/4, "
        "phi / random / exact order | wall time (CLIP, explainer) |",
        "|---|---|---|---|---|",
    ]
    for seed in seeds:
        m = runs[seed]
        recall = m["deletion_recall_at_1"]
        quarter = recall["ks"].index(grid[0] * grid[1] // 4)
        # The exact order needs exact values of the whole gallery (P <= 16).
        orders = [recall[name][quarter] if name in recall else None for name in ORDERS]
        lines.append(
            f"| {seed} | {m['scores_identical_to_clip']} | {m['zero_shot_accuracy']:.3f} | "
            f"{' / '.join('-' if v is None else f'{v:.3f}' for v in orders)} | "
            f"{m['wall_seconds']['user_clip']:.0f} s, {m['wall_seconds']['explainer']:.0f} s |"
        )
    lines += [
        "",
        "| texts | pooled error, per seed | mean [95%] | per-image r, per seed [95%] | "
        "truth's estimated error |",
        "|---|---|---|---|---|",
    ]
    for name in PARTS:
        parts = [part(runs[s], name) for s in seeds]
        if any("withheld" in p for p in parts):
            reasons = "; ".join(p["withheld"] for p in parts if "withheld" in p)
            lines.append(f"| {name} | withheld: {reasons} | | | |")
            continue
        errors = [p["pooled_relative_error"] for p in parts]
        r = [
            f"{p['pearson_r']:.3f} [{p['pearson_r_ci95'][0]:.3f}, {p['pearson_r_ci95'][1]:.3f}]"
            for p in parts
        ]
        truth = [p["truth_estimated_error"] for p in parts]
        truth_text = "exact" if truth[0] is None else " / ".join(f"{t:.3f}" for t in truth)
        lines.append(
            f"| {name} | {' / '.join(f'{e:.3f}' for e in errors)} | {mean_interval(errors)} | "
            f"{' / '.join(r)} | {truth_text} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--players_grid", type=int, nargs=2, default=[4, 4])
    parser.add_argument("--clip_epochs", type=int, default=20)
    parser.add_argument("--num_train", type=int, default=4000)
    parser.add_argument("--num_test", type=int, default=256)
    parser.add_argument("--num_truth_images", type=int, default=32)
    parser.add_argument("--truth_max_evaluations", type=int, default=65536)
    parser.add_argument("--variant", help="Name of an explainer variant (see --explainer_args).")
    parser.add_argument(
        "--explainer_args", default="", help="More examples/train_clip.py options, one string."
    )
    parser.add_argument("--work", type=Path, default=Path("outputs/clip_user_road"))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/clip_user_road"))
    args = parser.parse_args(argv)
    if tuple(args.players_grid) not in GEOMETRY:
        parser.error(f"--players_grid must be one of {sorted(GEOMETRY)}.")
    runs = {seed: run(args, seed) for seed in args.seeds}
    args.out.mkdir(parents=True, exist_ok=True)
    name = f"clip_user_road_p{args.players_grid[0] * args.players_grid[1]}"
    name += "" if args.variant is None else f"_{args.variant}"
    (args.out / f"{name}.json").write_text(json.dumps(runs, indent=2, sort_keys=True) + "\n")
    summary = summarize(args, runs)
    (args.out / f"{name}.md").write_text(summary)
    print(summary)


if __name__ == "__main__":
    main()
