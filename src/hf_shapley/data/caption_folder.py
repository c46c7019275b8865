"""A user's images with their captions: the ``datasets`` imagefolder convention, checked.

The folder holds images (in class sub-folders or not) and a ``metadata.jsonl`` beside them,
one JSON object per image: ``{"file_name": "cat/1.jpg", "caption": "a cat on a sofa"}``.
``datasets``' own imagefolder loader silently drops an image that has no metadata line; an
explainer trained on a folder should say so instead, so the folder is read and checked here
and returned as a ``datasets.Dataset`` of the same features.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import datasets

METADATA_FILE = "metadata.jsonl"
IMAGE_EXTENSIONS = (".bmp", ".gif", ".jpeg", ".jpg", ".png", ".tif", ".tiff", ".webp")


def _metadata_rows(path: Path, caption_column: str) -> list[tuple[str, str]]:
    """(file_name, caption) of each line of ``metadata.jsonl``, checked."""
    metadata = path / METADATA_FILE
    if not metadata.is_file():
        raise ValueError(
            f"The caption folder {path} has no {METADATA_FILE}: add one line per image, e.g. "
            f'{{"file_name": "cat/1.jpg", "{caption_column}": "a cat on a sofa"}} '
            "(file names relative to the folder)."
        )
    rows = []
    for number, line in enumerate(metadata.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except json.JSONDecodeError as error:
            raise ValueError(f"{metadata}, line {number}: not valid JSON ({error}).") from error
        if not isinstance(entry, dict) or "file_name" not in entry:
            raise ValueError(f"{metadata}, line {number}: needs a 'file_name' field.")
        caption = entry.get(caption_column)
        if not isinstance(caption, str) or not caption.strip():
            raise ValueError(
                f"{metadata}, line {number} ({entry['file_name']}): no {caption_column!r} text. "
                f"Every image needs a non-empty caption (or name its column with "
                "--caption_column)."
            )
        rows.append((str(entry["file_name"]), caption))
    return rows


def load_caption_folder(
    path: str | os.PathLike, caption_column: str = "caption"
) -> datasets.Dataset:
    """Images and their captions from a folder with a ``metadata.jsonl``.

    Args:
        path: the folder.
        caption_column: the caption's field in ``metadata.jsonl``.

    Returns:
        A ``datasets.Dataset`` with ``image`` and ``caption`` (whatever ``caption_column`` is
        called in the file), sorted by file name; images in two or more class sub-folders
        also get a ``label`` (``ClassLabel`` named by the sub-folders), which zero-shot
        accuracy reads.

    Raises:
        ValueError: no such folder, no ``metadata.jsonl``, a line without a file name or
            caption, a file listed twice or missing, an image without a caption, no image at
            all, or a file that is not a readable image.
    """
    import datasets
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_dir():
        raise ValueError(f"The caption folder {path} does not exist.")
    rows = _metadata_rows(path, caption_column)
    names = [name for name, _ in rows]
    repeated = sorted(name for name, count in Counter(names).items() if count > 1)
    if repeated:
        raise ValueError(f"{path / METADATA_FILE} lists {repeated[:5]} more than once.")
    missing = [name for name in names if not (path / name).is_file()]
    if missing:
        raise ValueError(
            f"{path / METADATA_FILE} lists {len(missing)} file(s) not in {path}: {missing[:5]}."
        )
    images = {
        file.relative_to(path).as_posix()
        for file in path.rglob("*")
        if file.suffix.lower() in IMAGE_EXTENSIONS and not file.name.startswith(".")
    }
    uncaptioned = sorted(images - {Path(name).as_posix() for name in names})
    if uncaptioned:
        raise ValueError(
            f"{len(uncaptioned)} image(s) in {path} have no caption in {METADATA_FILE}: "
            f"{uncaptioned[:5]}. Add a line for each, or move them out of the folder."
        )
    if not rows:
        raise ValueError(f"The caption folder {path} holds no image.")
    for name in names:
        try:
            with Image.open(path / name) as image:
                image.verify()
        except (UnidentifiedImageError, OSError, SyntaxError) as error:
            raise ValueError(
                f"{path / name} is not a readable image ({error}); fix or remove it."
            ) from error
    rows.sort()
    columns: dict = {
        "image": [str(path / name) for name, _ in rows],
        caption_column: [caption for _, caption in rows],
    }
    features = {"image": datasets.Image(), caption_column: datasets.Value("string")}
    folders = [Path(name).parts[0] if len(Path(name).parts) > 1 else None for name, _ in rows]
    classes = sorted(set(folders) - {None})
    if len(classes) >= 2 and None not in folders:
        columns["label"] = [classes.index(folder) for folder in folders]
        features["label"] = datasets.ClassLabel(names=classes)
    return datasets.Dataset.from_dict(columns, features=datasets.Features(features))


def save_caption_folder(
    dataset: datasets.Dataset,
    path: str | os.PathLike,
    caption_column: str = "caption",
    *,
    image_column: str = "image",
    label_column: str = "label",
) -> Path:
    """Write images and captions as a caption folder, the form :func:`load_caption_folder` reads.

    Each image is saved as PNG in its class's sub-folder (the ``ClassLabel`` name of
    ``label_column``, when the data set has one) and gets a ``metadata.jsonl`` line with its
    caption under ``caption_column``, the data set's column of that name.

    Returns:
        The folder.

    Raises:
        ValueError: a column that is not in the data set, or a folder that already holds a
            ``metadata.jsonl`` (nothing is overwritten).
    """
    path = Path(path)
    for column in (image_column, caption_column):
        if column not in dataset.column_names:
            raise ValueError(
                f"The data set has no column {column!r} (columns: {dataset.column_names})."
            )
    if (path / METADATA_FILE).exists():
        raise ValueError(f"{path / METADATA_FILE} exists already: choose an empty folder.")
    feature = dataset.features.get(label_column)
    names = getattr(feature, "names", None)
    lines = []
    for i, row in enumerate(dataset):
        name = f"{i:05d}.png"
        if names is not None:
            name = f"{names[row[label_column]].replace(' ', '_').replace('/', '_')}/{name}"
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        row[image_column].save(path / name)
        lines.append(json.dumps({"file_name": name, caption_column: row[caption_column]}))
    path.mkdir(parents=True, exist_ok=True)
    (path / METADATA_FILE).write_text("\n".join(lines) + "\n")
    return path


__all__ = ["METADATA_FILE", "load_caption_folder", "save_caption_folder"]
