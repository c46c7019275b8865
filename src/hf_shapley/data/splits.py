"""Train and evaluation splits from the built-in data, a Hub data set or an imagefolder.

One rule for the main job (``examples/train.py``) and the benchmarks, so that a benchmark
evaluates on exactly the images the main job held out.
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING

from .shapes import load_shapes_dataset

if TYPE_CHECKING:
    import datasets

logger = logging.getLogger(__name__)

# Share of 'train' held out for evaluation when the data set has no evaluation split.
HOLDOUT_FRACTION = 0.1
HOLDOUT_SEED = 0


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
    distractors: str = "independent",
) -> tuple[datasets.Dataset, datasets.Dataset]:
    """(train, eval) splits.

    The built-in shapes (``num_train``, ``num_test`` images of ``image_size`` px, with
    ``distractors`` drawn as ``load_shapes_dataset`` describes) unless a Hub
    data set (``dataset_name``) or an imagefolder (``train_dir``, optionally
    ``validation_dir``) is named. Without an ``eval_split`` split, 10% of ``train`` is held out
    with seed 0.

    Raises:
        ValueError: the data set has no ``train`` split.
    """
    import datasets  # imported on use, as by the built-in data set

    if dataset_name is None and train_dir is None:
        data = load_shapes_dataset(
            num_train, num_test, image_size=image_size, distractors=distractors
        )
        return data["train"], data["test"]
    if dataset_name is not None:
        data = datasets.load_dataset(dataset_name, dataset_config_name)
    else:
        check_image_folder(train_dir)
        files = {"train": os.path.join(train_dir, "**")}
        if validation_dir:
            check_image_folder(validation_dir, min_classes=1)
            files[eval_split] = os.path.join(validation_dir, "**")
        data = datasets.load_dataset("imagefolder", data_files=files)
    if "train" not in data:
        raise ValueError(f"The data set has no 'train' split; it has {list(data)}.")
    if eval_split in data:
        return data["train"], data[eval_split]
    logger.warning(
        "No %r split: holding out %d%% of 'train' for evaluation.",
        eval_split,
        round(100 * HOLDOUT_FRACTION),
    )
    parts = data["train"].train_test_split(test_size=HOLDOUT_FRACTION, seed=HOLDOUT_SEED)
    return parts["train"], parts["test"]


def check_image_folder(path: str | os.PathLike, min_classes: int = 2) -> list[str]:
    """The class names of an image folder (one sub-folder of images per class), checked.

    Raises:
        ValueError: the folder does not exist, has fewer than ``min_classes`` class folders, or
            a class folder holds no file.
    """
    if not os.path.isdir(path):
        raise ValueError(f"The image folder {path} does not exist.")
    classes = sorted(e.name for e in os.scandir(path) if e.is_dir() and not e.name.startswith("."))
    if len(classes) < min_classes:
        raise ValueError(
            f"The image folder {path} has {len(classes)} class folder(s) {classes}; it needs at "
            f"least {min_classes}: one sub-folder per class, named as the class, holding its "
            "images (path/cat/1.jpg, path/dog/2.jpg, ...)."
        )
    empty = [
        name
        for name in classes
        if not any(files for _, _, files in os.walk(os.path.join(path, name)))
    ]
    if empty:
        raise ValueError(
            f"The class folder(s) {empty} in {path} hold no image: add images or remove them."
        )
    return classes


__all__ = ["check_image_folder", "load_image_splits"]
