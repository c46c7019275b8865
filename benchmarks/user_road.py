"""The user's road on a real data set: their own classifier and their own image folder.

The data: scikit-learn's handwritten digits (1,797 8 x 8 scans shipped with the package,
nothing downloaded), upscaled to 32 px grayscale PNGs and written as image folders
(``train/`` 80%, ``test/`` 20%, stratified) whose class folders are the digits' English
names, so that the folder's alphabetical order ("eight", "five", ...) is not the
classifier's order ("zero", "one", ...). Per seed:

* **the user's checkpoint**: a ``ViTForImageClassification`` (4 layers, 96 wide, 4 px patches
  at 32 px: 8 x 8 tokens) trained by plain transformers code (``Trainer``, cross-entropy, no
  hf-shapley) on ``train/`` and saved with its image processor;
* **road A**, the README's command on it: ``examples/train.py --backbone CKPT --train_dir
  train --validation_dir test --players_grid 4 4`` (the classifier kept, the head trained);
* **road B**, the two-phase road on the same folder: ``examples/train.py --train_dir train
  --validation_dir test --image_size 32 --players_grid 4 4`` (the built-in ViT trained here,
  then explained), beside **a plain classifier of the same backbone trained to convergence**
  (``train_plain_classifier``, ``--plain_steps`` steps on every training image, no early stop);
* for every model, on the predicted class's logit centered over classes, the pooled error and
  per-image r of its values against the Shapley values of its own game on the first
  ``--num_images`` test images (32): KernelSHAP run until its own estimated pooled error is at
  most 0.05 (its estimate reported beside), and exact enumeration of all 2^16 coalitions on the
  first ``--num_exact`` (4).

    python benchmarks/user_road.py --seeds 0 1 2 --out benchmarks/results/user_road

``--family resnet`` (or ``convnext``, ``swin``) makes the user's checkpoint a classifier of that
family (``USER_CONFIGS``: 32 px, a 4 x 4 final feature grid, saved with the image processor
its Hub checkpoints use) and runs road A only, with exact enumeration on ``--num_exact`` images
(a pixel-baseline coalition costs a whole forward pass, so the KernelSHAP truth is left out);
its results go to ``user_road_<family>.json`` and ``.md`` (with the head variant, when one is
given, in the name).

It writes ``user_road.json`` (per seed and image) and ``user_road.md`` (the summary with
hierarchical 95% intervals over seeds, then images) in ``--out``; a seed already in the JSON
is not run again.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from transformers.hf_argparser import string_to_bool

DIGIT_NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
IMAGE_SIZE = 32
USER_VIT = dict(
    image_size=IMAGE_SIZE,
    patch_size=4,
    hidden_size=96,
    num_hidden_layers=4,
    num_attention_heads=4,
    intermediate_size=192,
)
# The other families' user checkpoints: each reaches a 4 x 4 final feature grid at 32 px.
USER_CONFIGS = {
    "resnet": dict(embedding_size=32, hidden_sizes=[32, 64], depths=[2, 2], layer_type="basic"),
    "convnext": dict(image_size=IMAGE_SIZE, num_stages=2, hidden_sizes=[48, 96], depths=[2, 2]),
    "swin": dict(
        image_size=IMAGE_SIZE,
        patch_size=4,
        embed_dim=48,
        depths=[2, 2],
        num_heads=[3, 6],
        window_size=4,
    ),
}
ROOT = Path(__file__).resolve().parents[1]
# The KernelSHAP truth's largest estimated pooled error (tighter than the main job's 0.1).
TRUTH_TOLERANCE = 0.05


def write_digit_folders(root: Path) -> tuple[Path, Path]:
    """scikit-learn's digits as ``root/train/<name>/i.png`` and ``root/test/<name>/i.png``."""
    from PIL import Image
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    train_dir, test_dir = root / "train", root / "test"
    if train_dir.is_dir() and test_dir.is_dir():
        return train_dir, test_dir
    digits = load_digits()
    indices = np.arange(len(digits.target))
    train_idx, test_idx = train_test_split(
        indices, test_size=0.2, random_state=0, stratify=digits.target
    )
    for folder, chosen in ((train_dir, train_idx), (test_dir, test_idx)):
        for i in chosen:
            label_dir = folder / DIGIT_NAMES[digits.target[i]]
            label_dir.mkdir(parents=True, exist_ok=True)
            pixels = (digits.images[i] * (255 / 16)).astype(np.uint8)
            image = Image.fromarray(pixels, mode="L").resize((IMAGE_SIZE,) * 2, Image.BICUBIC)
            image.save(label_dir / f"{i:04d}.png")
    return train_dir, test_dir


def user_checkpoint(
    train_dir: Path, out: Path, seed: int, epochs: int, family: str = "vit"
) -> Path:
    """What a user brings: a classifier (a ViT, or ``family``'s) trained by plain transformers
    code, with its own label order (zero..nine) and its image processor."""
    if (out / "model.safetensors").is_file():
        return out
    import datasets
    from transformers import (
        Trainer,
        TrainingArguments,
        ViTConfig,
        ViTForImageClassification,
        ViTImageProcessor,
    )

    data = datasets.load_dataset("imagefolder", data_dir=str(train_dir), split="train")
    data = data.align_labels_with_mapping({n: i for i, n in enumerate(DIGIT_NAMES)}, "label")
    if family == "vit":
        processor = ViTImageProcessor(
            size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
            image_mean=[0.5] * 3,
            image_std=[0.5] * 3,
        )
    else:
        from transformers import ConvNextImageProcessor

        # As the Hub's ResNet, ConvNeXt and Swin checkpoints: a shortest edge and a crop.
        processor = ConvNextImageProcessor(size={"shortest_edge": IMAGE_SIZE}, crop_pct=1.0)

    def collate(rows):
        images = [row["image"].convert("RGB") for row in rows]
        return {
            "pixel_values": processor(images, return_tensors="pt")["pixel_values"],
            "labels": torch.tensor([row["label"] for row in rows]),
        }

    torch.manual_seed(seed)
    labels = dict(
        id2label=dict(enumerate(DIGIT_NAMES)),
        label2id={n: i for i, n in enumerate(DIGIT_NAMES)},
    )
    if family == "vit":
        model = ViTForImageClassification(ViTConfig(**USER_VIT, **labels))
    else:
        from transformers import CONFIG_MAPPING, AutoModelForImageClassification

        config = CONFIG_MAPPING[family](**USER_CONFIGS[family], **labels)
        model = AutoModelForImageClassification.from_config(config)
    args = TrainingArguments(
        output_dir=str(out / "trainer"),
        num_train_epochs=epochs,
        per_device_train_batch_size=64,
        learning_rate=1e-3,
        weight_decay=0.05,
        warmup_steps=50,
        lr_scheduler_type="cosine",
        save_strategy="no",
        report_to="none",
        seed=seed,
        remove_unused_columns=False,
        logging_steps=50,
    )
    Trainer(model=model, args=args, train_dataset=data, data_collator=collate).train()
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out


def run_train_script(arguments: list[str], out: Path, log: Path) -> dict:
    """``examples/train.py`` as a user runs it; returns its metrics.json."""
    if (out / "metrics.json").is_file():
        return json.loads((out / "metrics.json").read_text())
    command = [sys.executable, str(ROOT / "examples" / "train.py"), *arguments]
    # Exact enumeration is this benchmark's own (agreement()); the run's KernelSHAP check stays.
    command += ["--output_dir", str(out), "--num_explained_images", "1", "--num_exact_images", "0"]
    start = time.perf_counter()
    with log.open("w") as handle:
        subprocess.run(command, check=True, stdout=handle, stderr=subprocess.STDOUT)
    metrics = json.loads((out / "metrics.json").read_text())
    metrics["wall_seconds"] = time.perf_counter() - start
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return metrics


def test_images(test_dir: Path, count: int) -> tuple[list, list[str]]:
    """The first ``count`` test images, in a fixed order interleaving the classes."""
    from PIL import Image

    paths = sorted(test_dir.glob("*/*.png"), key=lambda p: (int(p.stem), p.parent.name))
    return [Image.open(p) for p in paths[:count]], [p.parent.name for p in paths[:count]]


@torch.no_grad()
def agreement(model_dir: Path, images: list, num_exact: int, kernel_truth: bool = True) -> dict:
    """phi against the Shapley values of the model's own game on the predicted class's centred
    logit, per image: a KernelSHAP truth run until its own estimated pooled error is at most
    ``TRUTH_TOLERANCE``, and exact enumeration (all 2^P coalitions) on the first ``num_exact``."""
    from transformers import AutoImageProcessor

    from hf_shapley import ShapleyForImageClassification
    from hf_shapley.evaluation import centered_class_values, converged_kernel_truth
    from hf_shapley.evaluation.stats import pearson_rows
    from hf_shapley.evaluation.truth import exact_model_shapley_values

    model = ShapleyForImageClassification.from_pretrained(model_dir).eval()
    processor = AutoImageProcessor.from_pretrained(model_dir)
    x = processor([im.convert("RGB") for im in images], return_tensors="pt")["pixel_values"]
    out = model(x)
    predicted = out.logits.argmax(-1)
    phi = centered_class_values(out.shapley_values, predicted)
    result = {"predicted": predicted.tolist()}
    truths = {}
    if kernel_truth:
        kernel = converged_kernel_truth(
            model, x, predicted, tolerance=TRUTH_TOLERANCE, evaluations=4096, max_evaluations=32768
        )
        result["kernel_truth_evaluations"] = kernel.evaluations
        result["kernel_truth_estimated_error"] = kernel.estimated_error
        truths["kernel"] = centered_class_values(kernel.values, predicted)
    if num_exact:
        exact = exact_model_shapley_values(model, x[:num_exact])
        truths["exact"] = centered_class_values(exact, predicted[:num_exact])
    for name, t in truths.items():
        estimate = phi[: len(t)]
        result[name] = {
            "pearson_r": pearson_rows(estimate, t).tolist(),
            "squared_error": (estimate - t).pow(2).sum(1).tolist(),
            "spread": (t - t.mean(1, keepdim=True)).pow(2).sum(1).tolist(),
        }
    return result


def plain_baseline(
    train_dir: Path, test_dir: Path, road_b: Path, out: Path, seed: int, steps: int
) -> dict:
    """The built-in ViT at 32 px trained plainly on every training image for ``steps`` steps:
    the accuracy road B's classifier is compared with."""
    result = out / "result.json"
    if result.is_file():
        return json.loads(result.read_text())
    import datasets
    from transformers import AutoConfig, AutoImageProcessor, AutoModelForImageClassification

    from hf_shapley.data import align_labels
    from hf_shapley.training.plain_classifier import train_plain_classifier

    # Road B's own classifier architecture and processor, from scratch: the same backbone.
    [road_b_classifier] = road_b.glob("pretrained-classifier-*")
    data = datasets.load_dataset(
        "imagefolder", data_files={"train": f"{train_dir}/**", "test": f"{test_dir}/**"}
    )
    torch.manual_seed(seed)
    config = AutoConfig.from_pretrained(road_b_classifier)
    model = AutoModelForImageClassification.from_config(config)
    id2label = config.id2label
    data = {name: align_labels(split, id2label) for name, split in data.items()}
    processor = AutoImageProcessor.from_pretrained(road_b_classifier)
    train_plain_classifier(
        model,
        data["train"],
        image_processor=processor,
        output_dir=out,
        max_steps=steps,
        per_device_train_batch_size=64,
        learning_rate=1e-3,
        weight_decay=0.05,
        warmup_steps=30,
        lr_scheduler_type="cosine",
        seed=seed,
    )
    test = data["test"]
    model.eval()
    correct = 0
    for start in range(0, len(test), 128):
        rows = test[start : start + 128]
        x = processor([im.convert("RGB") for im in rows["image"]], return_tensors="pt")
        with torch.no_grad():
            predicted = model(x["pixel_values"]).logits.argmax(-1)
        correct += int((predicted == torch.tensor(rows["label"])).sum())
    summary = {"accuracy": correct / len(test), "steps": steps, "num_test": len(test)}
    result.write_text(json.dumps(summary, indent=2))
    return summary


def head_options(head_reads_hidden_states: bool | None, head_width: int | None) -> list:
    """The head variant given to train.py, as (option name, value) pairs; it also names the
    run's work directory and results files."""
    given = (("head_reads_hidden_states", head_reads_hidden_states), ("head_width", head_width))
    return [(key, str(value)) for key, value in given if value is not None]


def run_family_seed(args, seed: int, train_dir: Path, test_dir: Path) -> dict:
    """Road A with a ResNet, ConvNeXt or Swin checkpoint, against exact enumeration."""
    work = args.work / args.family / f"seed{seed}"
    work.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    checkpoint = user_checkpoint(
        train_dir, work / "user-checkpoint", seed, args.user_epochs, args.family
    )
    checkpoint_seconds = time.perf_counter() - start
    arguments = ["--backbone", str(checkpoint), "--train_dir", str(train_dir)]
    arguments += ["--validation_dir", str(test_dir), "--players_grid", "4", "4"]
    arguments += ["--seed", str(seed)]
    if args.max_steps:
        arguments += ["--max_steps", str(args.max_steps)]
    options = head_options(args.head_reads_hidden_states, args.head_width)
    road = "road-a" + "".join(f"-{key}-{value}".replace("_", "-").lower() for key, value in options)
    arguments += [part for key, value in options for part in (f"--{key}", value)]
    road_a = run_train_script(arguments, work / road, work / f"{road}.log")
    images, _ = test_images(test_dir, args.num_exact)
    start = time.perf_counter()
    measured = agreement(work / road, images, args.num_exact, kernel_truth=False)
    return {
        "seed": seed,
        "family": args.family,
        "user_checkpoint_seconds": checkpoint_seconds,
        "exact_seconds": time.perf_counter() - start,
        "head_reads_hidden_states": args.head_reads_hidden_states,
        "head_width": args.head_width,
        "road_a": {"metrics": road_a, **measured},
    }


def summarize_family(runs: list[dict]) -> str:
    sys.path.insert(0, str(Path(__file__).parent))
    from recipe import hierarchical_interval

    family = runs[0]["family"]
    count = len(runs[0]["road_a"]["exact"]["pearson_r"])
    options = head_options(runs[0].get("head_reads_hidden_states"), runs[0].get("head_width"))
    option = "".join(f" --{key} {value}" for key, value in options)
    lines = [
        f"# The user's road with a {family} checkpoint on scikit-learn's digits (32 px, P = 16)",
        "",
        f"Seeds {[r['seed'] for r in runs]}. The checkpoint kept (road A), its head trained by "
        "`examples/train.py --backbone CKPT`; agreement on the predicted class's centered logit "
        f"against exact enumeration (all 2^16 coalitions) on the first {count} test images per "
        "seed. Intervals: hierarchical 95% bootstrap (seeds, then images). Command: "
        f"`python benchmarks/user_road.py --family {family} --seeds 0 1 2 --num_exact {count}"
        f"{option}`.",
        "",
        "| seed | accuracy (test) | logits identical | best step | pooled error | r | wall (s) |",
        "|---|---|---|---|---|---|---|",
    ]
    for run in runs:
        m, exact = run["road_a"]["metrics"], run["road_a"]["exact"]
        lines.append(
            f"| {run['seed']} | {m['accuracy']:.3f} | {m['classifier']['logits_identical']} "
            f"| {m['best_step']} / {m['train_steps']} | {pooled([exact]):.3f} "
            f"| {np.mean(exact['pearson_r']):.3f} | {m.get('wall_seconds', float('nan')):.0f} |"
        )
    exacts = [run["road_a"]["exact"] for run in runs]
    rs = [e["pearson_r"] for e in exacts]
    interval = hierarchical_interval(rs) if len(rs) > 1 else (float("nan"),) * 2
    lines += [
        "",
        f"Pooled error {pooled(exacts):.3f} (largest seed {max(pooled([e]) for e in exacts):.3f}); "
        f"mean r {np.mean([np.mean(r) for r in rs]):.3f} [{interval[0]:.3f}, {interval[1]:.3f}].",
    ]
    return "\n".join(lines) + "\n"


def run_seed(args, seed: int, train_dir: Path, test_dir: Path) -> dict:
    work = args.work / f"seed{seed}"
    work.mkdir(parents=True, exist_ok=True)
    common = ["--train_dir", str(train_dir), "--validation_dir", str(test_dir)]
    common += ["--players_grid", "4", "4", "--seed", str(seed)]
    if args.max_steps:  # a quick run of the whole road (a smoke test, not a result)
        common += ["--max_steps", str(args.max_steps), "--num_truth_images", "2"]
    start = time.perf_counter()
    checkpoint = user_checkpoint(train_dir, work / "user-checkpoint", seed, args.user_epochs)
    checkpoint_seconds = time.perf_counter() - start
    road_a = run_train_script(
        ["--backbone", str(checkpoint), *common], work / "road-a", work / "road-a.log"
    )
    road_b = run_train_script(
        ["--image_size", str(IMAGE_SIZE), *common], work / "road-b", work / "road-b.log"
    )
    plain = plain_baseline(
        train_dir, test_dir, work / "road-b", work / "plain", seed, args.plain_steps
    )
    images, _ = test_images(test_dir, args.num_images)
    return {
        "seed": seed,
        "user_checkpoint_seconds": checkpoint_seconds,
        "road_a": {"metrics": road_a, **agreement(work / "road-a", images, args.num_exact)},
        "road_b": {"metrics": road_b, **agreement(work / "road-b", images, args.num_exact)},
        "plain": plain,
    }


def pooled(entries: list[dict]) -> float:
    """The pooled relative error over several runs' per-image sums."""
    squared = sum(np.sum(e["squared_error"]) for e in entries)
    spread = sum(np.sum(e["spread"]) for e in entries)
    return float(np.sqrt(squared / spread))


def paired_pooled_difference(
    first: list[dict], second: list[dict], resamples: int = 4000
) -> tuple[float, float, float]:
    """Pooled error of ``second`` minus ``first`` on the same images (runs of the same seeds),
    with a paired hierarchical 95% bootstrap interval: seeds, then images, drawn once for both."""
    rng = np.random.default_rng(0)

    def arrays(runs):
        return [(np.asarray(e["squared_error"]), np.asarray(e["spread"])) for e in runs]

    a, b = arrays(first), arrays(second)
    differences = []
    for _ in range(resamples):
        totals = np.zeros(4)
        for seed in rng.integers(len(a), size=len(a)):
            images = rng.integers(len(a[seed][0]), size=len(a[seed][0]))
            totals += [
                a[seed][0][images].sum(),
                a[seed][1][images].sum(),
                b[seed][0][images].sum(),
                b[seed][1][images].sum(),
            ]
        differences.append(np.sqrt(totals[2] / totals[3]) - np.sqrt(totals[0] / totals[1]))
    low, high = np.quantile(differences, [0.025, 0.975])
    return pooled(second) - pooled(first), float(low), float(high)


def compare_head_variants(out: Path, family: str) -> str | None:
    """The head reading every stage against the final features alone, on the same checkpoints
    and images, when both variants' results are in ``out``."""
    paths = [
        out / f"user_road_{family}_head_reads_hidden_states_{variant}.json"
        for variant in ("false", "true")
    ]
    if not all(path.is_file() for path in paths):
        return None
    off, on = (json.loads(path.read_text()) for path in paths)
    seeds = sorted({r["seed"] for r in off} & {r["seed"] for r in on})
    pick = {
        name: [next(r["road_a"]["exact"] for r in runs if r["seed"] == s) for s in seeds]
        for name, runs in (("off", off), ("on", on))
    }
    difference, low, high = paired_pooled_difference(pick["off"], pick["on"])
    r_off = np.mean([np.mean(e["pearson_r"]) for e in pick["off"]])
    r_on = np.mean([np.mean(e["pearson_r"]) for e in pick["on"]])
    per_seed = " / ".join(
        f"{pooled([x]):.3f} -> {pooled([y]):.3f}"
        for x, y in zip(pick["off"], pick["on"], strict=True)
    )
    return (
        f"| {family} | {len(seeds)} x {len(pick['on'][0]['pearson_r'])} | {pooled(pick['off']):.3f} "
        f"| {pooled(pick['on']):.3f} | {difference:+.3f} [{low:+.3f}, {high:+.3f}] "
        f"| {r_off:.3f} -> {r_on:.3f} | {per_seed} |"
    )


ROADS = (("road_a", "A: your checkpoint"), ("road_b", "B: trained here"))


def summarize(runs: list[dict]) -> str:
    sys.path.insert(0, str(Path(__file__).parent))
    from recipe import hierarchical_interval

    first = runs[0]["road_a"]
    lines = [
        "# The user's road on scikit-learn's digits (32 px, P = 16)",
        "",
        f"Seeds {[r['seed'] for r in runs]}. Agreement on the predicted class's centered logit "
        f"over the first {len(first['kernel']['pearson_r'])} test images per seed against "
        "KernelSHAP run until its estimated pooled error is at most "
        f"{TRUTH_TOLERANCE} (`truth err.`), and on the first {len(first.get('exact', {}).get('pearson_r', []))} "
        "against exact enumeration of all 2^16 coalitions. Intervals: hierarchical 95% bootstrap "
        "(seeds, then images). Command: `python benchmarks/user_road.py --seeds 0 1 2 --num_exact 16`.",
        "",
        "| road | seed | accuracy (test) | classifier before | logits identical | best step "
        "| pooled error | r | truth err. | exact: pooled error / r | wall (s) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for road, name in ROADS:
        for run in runs:
            m, entry = run[road]["metrics"], run[road]
            c = m["classifier"]
            exact = entry.get("exact")
            exact_text = (
                f"{pooled([exact]):.3f} / {np.mean(exact['pearson_r']):.3f}" if exact else "-"
            )
            lines.append(
                f"| {name} | {run['seed']} | {m['accuracy']:.3f} | {c['accuracy_before']:.3f} "
                f"| {c['logits_identical']} | {m['best_step']} / {m['train_steps']} "
                f"| {pooled([entry['kernel']]):.3f} | {np.mean(entry['kernel']['pearson_r']):.3f} "
                f"| {entry['kernel_truth_estimated_error']:.3f} | {exact_text} "
                f"| {m.get('wall_seconds', float('nan')):.0f} |"
            )
    lines += [
        "",
        "| road | pooled error (KernelSHAP) | max over seeds | mean r [95%] | exact: pooled error "
        "| exact: mean r |",
        "|---|---|---|---|---|---|",
    ]
    for road, name in ROADS:
        kernels = [run[road]["kernel"] for run in runs]
        rs = [k["pearson_r"] for k in kernels]
        interval = hierarchical_interval(rs) if len(rs) > 1 else (float("nan"),) * 2
        exacts = [run[road]["exact"] for run in runs if "exact" in run[road]]
        exact_rs = [e["pearson_r"] for e in exacts]
        exact_r = np.mean([np.mean(r) for r in exact_rs]) if exacts else float("nan")
        exact_interval = (
            hierarchical_interval(exact_rs) if len(exact_rs) > 1 else (float("nan"),) * 2
        )
        lines.append(
            f"| {name} | {pooled(kernels):.3f} | {max(pooled([k]) for k in kernels):.3f} "
            f"| {np.mean([np.mean(r) for r in rs]):.3f} [{interval[0]:.3f}, {interval[1]:.3f}] "
            f"| {pooled(exacts) if exacts else float('nan'):.3f} "
            f"| {exact_r:.3f} [{exact_interval[0]:.3f}, {exact_interval[1]:.3f}] |"
        )
    plain = np.array([run["plain"]["accuracy"] for run in runs])
    road_b = np.array([run["road_b"]["metrics"]["accuracy"] for run in runs])
    d = plain - road_b
    bound = (
        f", upper 95% bound {100 * (d.mean() + _t95(len(d)) * d.std(ddof=1) / np.sqrt(len(d))):+.1f}"
        if len(d) > 1
        else ""
    )
    lines += [
        "",
        "Road B against a plain classifier of the same backbone trained to convergence "
        f"({runs[0]['plain']['steps']} steps on every training image): plain "
        f"{' / '.join(f'{a:.3f}' for a in plain)}, road B "
        f"{' / '.join(f'{a:.3f}' for a in road_b)}; difference (plain - road B) mean "
        f"{100 * d.mean():+.1f} points{bound}.",
    ]
    return "\n".join(lines) + "\n"


def _t95(n: int) -> float:
    from scipy.stats import t

    return float(t.ppf(0.95, n - 1))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--num_images", type=int, default=32)
    parser.add_argument("--num_exact", type=int, default=4)
    parser.add_argument("--user_epochs", type=int, default=30)
    parser.add_argument("--plain_steps", type=int, default=2000)
    parser.add_argument(
        "--max_steps", type=int, default=0, help="Bound every phase of train.py (smoke runs)."
    )
    parser.add_argument("--work", type=Path, default=Path("outputs/user_road"))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/user_road"))
    parser.add_argument("--family", choices=["vit", *USER_CONFIGS], default="vit")
    parser.add_argument(
        "--head_reads_hidden_states",
        type=string_to_bool,
        default=None,
        help="Pixel families: pass this head variant to train.py (default: its own default).",
    )
    parser.add_argument(
        "--head_width",
        type=int,
        default=None,
        help="Pixel families: pass this head width to train.py (default: its own default).",
    )
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    train_dir, test_dir = write_digit_folders(args.work / "digits")
    name = "user_road" if args.family == "vit" else f"user_road_{args.family}"
    options = head_options(args.head_reads_hidden_states, args.head_width)
    name += "".join(f"_{key}_{value}".lower() for key, value in options)
    run, summary = (
        (run_seed, summarize) if args.family == "vit" else (run_family_seed, summarize_family)
    )
    results_path = args.out / f"{name}.json"
    runs = json.loads(results_path.read_text()) if results_path.is_file() else []
    done = {run["seed"] for run in runs}
    for seed in args.seeds:
        if seed in done:
            continue
        runs.append(run(args, seed, train_dir, test_dir))
        runs.sort(key=lambda entry: entry["seed"])
        results_path.write_text(json.dumps(runs, indent=1))
        (args.out / f"{name}.md").write_text(summary(runs))
        print(summary(runs))
    rows = [compare_head_variants(args.out, family) for family in USER_CONFIGS]
    if any(rows):
        table = [
            "# The pixel families' head: every stage against the final features alone",
            "",
            "Same checkpoints, same exact truth, same images (road A, P = 16). Difference: "
            "pooled error with every stage minus without, paired hierarchical 95% bootstrap "
            "(seeds, then images). Commands: `python benchmarks/user_road.py --family FAMILY "
            "--seeds 0 1 2 --num_exact 16 --head_reads_hidden_states {False,True}`.",
            "",
            "| family | seeds x images | final features | every stage | difference [95%] "
            "| mean r | per seed |",
            "|---|---|---|---|---|---|---|",
            *[row for row in rows if row],
        ]
        (args.out / "pixel_head_variants.md").write_text("\n".join(table) + "\n")


if __name__ == "__main__":
    main()
