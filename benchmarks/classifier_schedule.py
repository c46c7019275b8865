"""How long must the main job's plain classifier train before more steps stop paying?

The main job pretrains a plain ViT with cross-entropy, freezes it and trains the Shapley head
on its game; the model's logits are that classifier's, bit for bit. Non-inferiority against a
plain fine-tune is only meaningful if the plain fine-tune would not be better with the steps the
head takes: the faithfulness benchmark's plain arm (the same classifier continued for the head's
1,000 steps) reached 85.0% against the 8-epoch classifier's 75.1%.

This script trains the main job's classifier as ``examples/train.py`` does
(``hf_shapley.plain_classifier.train_plain_classifier`` on the main job's data; the
architecture and image processor of a classifier the main job wrote, ``--like``, trained afresh;
the main job's batch size, weight decay, warm-up and schedule) under several schedules side by side, and measures accuracy and NLL on the same
10,000 generated test images ``main_job_seeds.py`` uses, with the seconds each took. One row per
(schedule, seed) in ``results/classifier_schedule.{jsonl,md}``; rows are kept.

    python benchmarks/classifier_schedule.py --epochs 8 --learning-rates 1e-3 3e-3 --seeds 0 \
        --like outputs/shapley-vit-shapes/pretrained-classifier-64px-independent-8000-8ep-seed0
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from recipe import tensors

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
# The main job's pretraining settings (examples/train.py default_training_args).
MAIN_JOB = dict(per_device_train_batch_size=64, weight_decay=0.05, warmup_steps=30)


def accuracy_and_nll(model, x: torch.Tensor, y: torch.Tensor, batch: int = 500) -> dict:
    model.eval()
    logits = []
    with torch.no_grad():
        for start in range(0, len(x), batch):
            logits.append(model(pixel_values=x[start : start + batch]).logits.float())
    logits = torch.cat(logits)
    return {
        "accuracy": float((logits.argmax(-1) == y).double().mean()),
        "nll": float(F.cross_entropy(logits, y)),
    }


def run(epochs: float, lr: float, seed: int, args, train, test) -> dict:
    from transformers import (
        AutoConfig,
        AutoImageProcessor,
        AutoModelForImageClassification,
        set_seed,
    )

    from hf_shapley.plain_classifier import train_plain_classifier

    set_seed(seed)
    model = AutoModelForImageClassification.from_config(AutoConfig.from_pretrained(args.like))
    batch_size = args.batch_size or MAIN_JOB["per_device_train_batch_size"]
    out = REPO / "outputs" / "classifier-schedule" / f"{epochs:g}ep-lr{lr:g}-seed{seed}"
    start = time.perf_counter()
    _, metrics = train_plain_classifier(
        model,
        train,
        image_processor=AutoImageProcessor.from_pretrained(args.like),
        output_dir=out,
        num_train_epochs=epochs,
        per_device_train_batch_size=batch_size,
        learning_rate=lr,
        weight_decay=MAIN_JOB["weight_decay"],
        warmup_steps=MAIN_JOB["warmup_steps"],
        lr_scheduler_type="cosine",
        seed=seed,
        logging_steps=50,
    )
    seconds = time.perf_counter() - start
    row = dict(
        epochs=epochs,
        learning_rate=lr,
        batch_size=batch_size,
        seed=seed,
        steps=metrics["train_steps"],
        train_loss=metrics.get("train_loss"),
        train_seconds=round(seconds, 1),
        num_test=len(test[1]),
        **accuracy_and_nll(model, *test),
    )
    print(json.dumps(row), flush=True)
    return row


def write_table(jsonl: Path, path: Path) -> None:
    rows = [json.loads(line) for line in jsonl.read_text().splitlines() if line.strip()]
    lines = [
        "# The main job's plain classifier: schedule against accuracy",
        "",
        "Written by `benchmarks/classifier_schedule.py` (see its docstring): the main job's "
        "classifier, data and defaults; accuracy and NLL on the same 10,000 generated test images "
        "as `main_job_seeds.py`.",
        "",
        "| epochs | steps | lr | batch | seed | train loss | seconds | accuracy | NLL |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['epochs']:g} | {r['steps']} | {r['learning_rate']:g} | {r['batch_size']} | "
            f"{r['seed']} | {r['train_loss']:.3f} | {r['train_seconds']:.0f} | "
            f"{100 * r['accuracy']:.2f}% | {r['nll']:.3f} |"
        )
    path.write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--like",
        required=True,
        help="a classifier the main job wrote (outputs/.../pretrained-classifier-*): its "
        "architecture and image processor",
    )
    parser.add_argument("--epochs", type=float, nargs="+", default=[8])
    parser.add_argument("--learning-rates", type=float, nargs="+", default=[1e-3])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--num-train", type=int, default=8000)
    parser.add_argument("--num-test", type=int, default=10000)
    parser.add_argument("--tag", default="classifier_schedule")
    args = parser.parse_args(argv)
    if min(args.epochs) <= 0 or min(args.learning_rates) <= 0:
        parser.error("--epochs and --learning-rates must be positive.")

    from transformers import AutoConfig

    from hf_shapley.data import load_image_splits

    size = AutoConfig.from_pretrained(args.like).image_size
    train, _ = load_image_splits(num_train=args.num_train, num_test=1, image_size=size)
    test = tensors(args.num_test, "test", image_size=size)
    jsonl = RESULTS / f"{args.tag}.jsonl"
    for seed in args.seeds:
        for lr in args.learning_rates:
            for epochs in args.epochs:
                row = run(epochs, lr, seed, args, train, test)
                with jsonl.open("a") as f:
                    f.write(json.dumps(row) + "\n")
                write_table(jsonl, RESULTS / f"{args.tag}.md")


if __name__ == "__main__":
    main()
