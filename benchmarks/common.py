"""Shared helpers of the benchmark scripts: interleaved timing, device selection, data splits.

Every number a benchmark reports is a ratio against a baseline measured side by side in the
same process, interleaved round by round, so that machine load and clock changes hit both.
"""

from __future__ import annotations

import platform
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


def host_description(device: torch.device) -> str:
    """The device, the CPU's architecture and AMX support, threads and torch: what a CPU
    timing of bf16 work depends on."""
    has_amx = getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)()
    return (
        f"{device_name(device)} ({platform.processor() or platform.machine()}, AMX: {has_amx}, "
        f"{torch.get_num_threads()} torch threads), torch {torch.__version__}"
    )


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


def builtin_test_images(model_dir: str, num_images: int, *, seed: int = 0, distractors: str):
    """A saved model, its image processor, and the first built-in test images at its size.

    Returns ``(model, pixel_values, arrays)``: the model in eval mode, the processed images
    (converted as the pipeline converts them) and the generator's arrays (labels, masks).
    """
    from PIL import Image
    from transformers import AutoImageProcessor

    from hf_shapley import ShapleyForImageClassification
    from hf_shapley.data import generate_shapes
    from hf_shapley.models.image_loading import to_rgb

    model = ShapleyForImageClassification.from_pretrained(model_dir).eval()
    processor = AutoImageProcessor.from_pretrained(model_dir)
    arrays = generate_shapes(
        num_images,
        image_size=model.image_size[0],
        seed=seed,
        split="test",
        distractors=distractors,
    )
    images = [to_rgb(Image.fromarray(a)) for a in arrays.images]
    return model, processor(images, return_tensors="pt")["pixel_values"], arrays
