"""What the main job's batches cost: images processed in every batch against once, in memory.

The Trainer's data loader hands ``ShapleyImageCollator`` 64 examples a step; by default the
collator decodes and processes their images every time, in the training process (the main job
uses no loader workers: 2 cores). ``examples/train.py --preprocess_in_memory_gb`` processes each
split once instead (``hf_shapley.data.process_in_memory``). This script times both on the
built-in training split with a main-job model's image processor, side by side in one process:
the one-time processing, and one epoch of batches each way, through the same ``DataLoader`` and
collator the Trainer builds.

    python benchmarks/data_cost.py --model outputs/shapley-vit-shapes
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import markdown_table, report  # noqa: E402


def epoch_seconds(dataset, collator, batch_size: int) -> float:
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, shuffle=True, collate_fn=collator, num_workers=0
    )
    start = time.perf_counter()
    for _ in loader:
        pass
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="outputs/shapley-vit-shapes", help="its processor")
    parser.add_argument("--num-train", type=int, default=8000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=16, help="the main job's, both phases")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    from transformers import AutoImageProcessor

    from hf_shapley.data import load_image_splits, process_in_memory
    from hf_shapley.trainer import ShapleyImageCollator

    processor = AutoImageProcessor.from_pretrained(args.model)
    size = processor.size["height"]
    train, _ = load_image_splits(num_train=args.num_train, num_test=1, image_size=size)
    collator = ShapleyImageCollator(image_processor=processor, image_column="image")
    start = time.perf_counter()
    kept = process_in_memory(train, processor, max_gb=2.0)
    once = time.perf_counter() - start
    every, memory = [], []
    for _ in range(2):  # interleaved
        every.append(epoch_seconds(train, collator, args.batch_size))
        memory.append(epoch_seconds(kept, collator, args.batch_size))
    every_s, memory_s = min(every), min(memory)
    total_every, total_memory = args.epochs * every_s, once + args.epochs * memory_s
    text = "\n".join(
        [
            "# The main job's batches: processed every batch against once, in memory",
            "",
            f"Written by `benchmarks/data_cost.py`: {args.num_train} built-in images, batches of "
            f"{args.batch_size}, best of 2 interleaved epochs each; {platform.machine()}, "
            f"{torch.get_num_threads()} torch threads.",
            "",
            markdown_table(
                ["", "every batch", "in memory"],
                [
                    ["one-time processing s", "-", f"{once:.1f}"],
                    ["one epoch of batches s", f"{every_s:.1f}", f"{memory_s:.2f}"],
                    [
                        f"{args.epochs} epochs (the main job) s",
                        f"{total_every:.0f}",
                        f"{total_memory:.0f}",
                    ],
                ],
            ),
            "",
        ]
    )
    report(text, args.out)


if __name__ == "__main__":
    main()
