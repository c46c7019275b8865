"""Image splits processed once and kept in memory, for data sets that fit.

The Trainer's data loader hands ``ShapleyImageCollator`` a batch of examples a step; with an
image column it decodes and processes those images every time, in the training process. For a
split without augmentation that fits in memory, doing it once saves that work in every epoch
(the main job: 75 s of batch processing against 8 s, ``benchmarks/results/data_cost_cpu.md``).
"""

from __future__ import annotations

from typing import Any

import torch

from ..models.image_loading import to_rgb


class InMemoryPixels(torch.utils.data.Dataset):
    """A split whose images went through the image processor once.

    Items are ``{"pixel_values": (C, H, W) tensor, label_column: int}``, which
    ``ShapleyImageCollator`` takes as they are.
    """

    def __init__(self, pixel_values: torch.Tensor, labels: list[int], label_column: str):
        if len(pixel_values) != len(labels):
            raise ValueError(
                f"{len(pixel_values)} images but {len(labels)} labels: give one label per image."
            )
        self.pixel_values, self.labels, self.label_column = pixel_values, labels, label_column

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return {"pixel_values": self.pixel_values[index], self.label_column: self.labels[index]}


def process_in_memory(
    split: Any,
    image_processor: Any,
    *,
    image_column: str = "image",
    label_column: str = "label",
    max_gb: float = 2.0,
    batch_size: int = 256,
) -> Any:
    """``split`` with its pixel values computed once (an :class:`InMemoryPixels`) when they take
    at most ``max_gb`` GB; otherwise ``split`` itself, for the collator to process batch by batch.

    Args:
        split: a ``datasets.Dataset`` (or anything sliceable by rows into column lists) with an
            image column and an integer label column.
        image_processor: the processor the collator would apply (e.g. ``ViTImageProcessor``);
            images are converted to 8-bit RGB first, as the collator converts them, so the
            pixel values are the collator's bit for bit.
        max_gb: the memory the pixel values may take (0: never keep them).
    """
    if max_gb <= 0 or len(split) == 0:
        return split
    first = image_processor([to_rgb(split[0][image_column])], return_tensors="pt")["pixel_values"]
    if first.numel() * first.element_size() * len(split) > max_gb * 2**30:
        return split
    pixel_values = torch.empty((len(split), *first.shape[1:]), dtype=first.dtype)
    for start in range(0, len(split), batch_size):
        rows = split[start : start + batch_size]
        images = [to_rgb(image) for image in rows[image_column]]
        processed = image_processor(images, return_tensors="pt")["pixel_values"]
        pixel_values[start : start + len(images)] = processed
    return InMemoryPixels(pixel_values, [int(y) for y in split[label_column]], label_column)


__all__ = ["InMemoryPixels", "process_in_memory"]
