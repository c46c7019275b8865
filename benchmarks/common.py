"""Shared helpers of the benchmark scripts: interleaved timing, device selection, data splits.

Every number a benchmark reports is a ratio against a baseline measured side by side in the
same process, interleaved round by round, so that machine load and clock changes hit both.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable

import torch

VIT_SMALL_224 = dict(
    image_size=224,
    patch_size=16,
    hidden_size=384,
    num_hidden_layers=12,
    num_attention_heads=6,
    intermediate_size=1536,
)


def pick_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda was asked for but torch sees no CUDA device.")
    return torch.device(name)


def device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"


def report(text: str, out=None) -> str:
    """Print a result and write it to ``out`` (a path) when given."""
    print(text)
    if out:
        out.write_text(text)
    return text


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def interleaved_medians(
    fns: dict[str, Callable[[], object]], *, device: torch.device, rounds: int, warmup: int = 2
) -> dict[str, float]:
    """Median seconds per call of each function, calling them round-robin ``rounds`` times."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    synchronize(device)
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            synchronize(device)
            start = time.perf_counter()
            fn()
            synchronize(device)
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(ts) for name, ts in times.items()}


def markdown_table(header: list[str], rows: list[list[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def load_image_splits(
    *,
    dataset_name: str | None = None,
    dataset_config_name: str | None = None,
    train_dir: str | None = None,
    validation_dir: str | None = None,
    eval_split: str = "test",
    num_train: int = 8000,
    num_test: int = 1000,
    image_size: int = 64,
):
    """(train, eval) splits as the main job (``examples/train.py``) reads them.

    The built-in shapes (``num_train``, ``num_test`` images of ``image_size`` px) unless a Hub
    data set or an imagefolder is named; without an ``eval_split`` split, 10% of ``train`` held
    out with seed 0, the main job's rule, so a benchmark evaluates on the images the main job
    held out.
    """
    import datasets

    if dataset_name is None and train_dir is None:
        from hf_shapley.data import load_shapes_dataset

        data = load_shapes_dataset(num_train, num_test, image_size=image_size)
        return data["train"], data["test"]
    if dataset_name is not None:
        data = datasets.load_dataset(dataset_name, dataset_config_name)
    else:
        files = {"train": os.path.join(train_dir, "**")}
        if validation_dir:
            files[eval_split] = os.path.join(validation_dir, "**")
        data = datasets.load_dataset("imagefolder", data_files=files)
    if "train" not in data:
        raise SystemExit(f"The data set has no 'train' split; it has {list(data)}.")
    if eval_split in data:
        return data["train"], data[eval_split]
    parts = data["train"].train_test_split(test_size=0.1, seed=0)
    return parts["train"], parts["test"]
