"""Example images for the page: test images of the built-in data set, for models trained on it.

A model was trained on the built-in "coloured shapes" data set when its labels are that data
set's class names in order (``config.id2label == shapes_label_names(num_labels)``); the
examples are then freshly generated *test-split* images at the model's input size, written as
PNG files so that they take the same route as an upload.
"""

from __future__ import annotations

import os
from typing import Any

from PIL import Image

from ..data.shapes import (
    MIN_IMAGE_SIZE,
    SUPPORTED_NUM_CLASSES,
    generate_shapes,
    shapes_label_names,
)

__all__ = ["DEFAULT_NUM_EXAMPLES", "is_builtin_shapes_model", "model_image_size", "write_examples"]

DEFAULT_NUM_EXAMPLES = 4
# The main job's data (examples/train.py --builtin_distractors default).
DEFAULT_DISTRACTORS = "independent"
# A seed the training data of examples/train.py does not use for its test split (seed 0).
EXAMPLES_SEED = 2026


def is_builtin_shapes_model(config: Any) -> bool:
    """Whether the model's labels are those of the built-in data set, in the same order."""
    num_labels = int(getattr(config, "num_labels", 0) or 0)
    if num_labels not in SUPPORTED_NUM_CLASSES:
        return False
    id2label = getattr(config, "id2label", None) or {}
    try:
        labels = [str(id2label[k]) for k in sorted(id2label, key=int)]
    except (TypeError, ValueError):
        return False
    return labels == shapes_label_names(num_labels)


def model_image_size(config: Any, image_processor: Any = None) -> int:
    """The model's input side in pixels (from the image processor, else the config)."""
    size = getattr(image_processor, "size", None) or {}
    if isinstance(size, dict):
        for key in ("height", "shortest_edge", "width"):
            if size.get(key):
                return int(size[key])
    image_size = getattr(config, "image_size", None)
    if isinstance(image_size, (list, tuple)):
        image_size = image_size[0]
    if image_size is None:
        image_size = getattr(getattr(config, "backbone_config", None), "image_size", None)
    return int(image_size or 64)


def write_examples(
    directory: str | os.PathLike,
    config: Any,
    image_processor: Any = None,
    *,
    num_examples: int = DEFAULT_NUM_EXAMPLES,
    distractors: str = DEFAULT_DISTRACTORS,
    seed: int = EXAMPLES_SEED,
) -> list[str]:
    """Write built-in test images for a model trained on the built-in data set.

    Args:
        directory: Where to write ``shapes_<i>_<label>.png`` (created if missing).
        config: The model's config (its labels and input size).
        image_processor: The model's image processor (its input size), optional.
        num_examples: How many images; with at least as many as classes, every class appears.
        distractors: The data set's distractor design (see ``generate_shapes``).
        seed: Generation seed (the test split's stream).

    Returns:
        The file paths, or an empty list when the model was not trained on the built-in data.
    """
    if num_examples < 1 or not is_builtin_shapes_model(config):
        return []
    num_classes = int(config.num_labels)
    size = max(model_image_size(config, image_processor), MIN_IMAGE_SIZE)
    # Labels are balanced (counts differ by at most one): num_examples >= K covers every class.
    arrays = generate_shapes(
        num_examples,
        image_size=size,
        num_classes=num_classes,
        seed=seed,
        split="test",
        distractors=distractors,
    )
    os.makedirs(directory, exist_ok=True)
    names = shapes_label_names(num_classes)
    paths = []
    for i, (image, label) in enumerate(zip(arrays.images, arrays.labels, strict=True)):
        name = names[int(label)].replace(" ", "_")
        path = os.path.join(os.fspath(directory), f"shapes_{i}_{name}.png")
        Image.fromarray(image).save(path)
        paths.append(path)
    return paths
