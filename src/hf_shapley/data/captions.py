"""Image-text pairs from the built-in coloured shapes: captions generated from each image's content.

The generator (``shapes.py``) knows every object's colour, shape and position, so a caption can
say exactly what the image holds: the class object first, then the distractors, each with a
rough position on a 3 x 3 grid of the image::

    "a red circle at the top left, with a green triangle in the centre, a blue cross at the
     bottom right and a yellow square at the middle left"

Both image-text tasks then have a known answer:

* zero-shot classification: the class prompts (:func:`shapes_class_prompts`, "a photo of a red
  circle") name the colour-shape conjunctions of the classes. Distractors never form a class
  conjunction, so an image's caption names exactly one class, its label;
* retrieval: a caption describes its own image (objects, colours, positions);

and the class object's mask scores localization, as for the classifier.

:func:`shapes_caption_tokenizer` is a word-level tokenizer over the captions' closed vocabulary,
for training a small CLIP from scratch offline (no BPE files needed).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

from .shapes import (
    COLOR_NAMES,
    SHAPE_NAMES,
    ShapesArrays,
    _check_arguments,
    _encode_all,
    generate_shapes,
    shapes_label_names,
)

if TYPE_CHECKING:
    import datasets
    from transformers import PreTrainedTokenizerFast

__all__ = [
    "CAPTION_WORDS",
    "describe_position",
    "load_shapes_caption_dataset",
    "shapes_caption_tokenizer",
    "shapes_captions",
    "shapes_class_prompts",
]

_ROWS = ("top", "middle", "bottom")
_COLUMNS = ("left", "centre", "right")
#: The default zero-shot template, CLIP style.
PROMPT_TEMPLATE = "a photo of a {}"
#: Every word a caption or a class prompt uses (the word-level tokenizer's vocabulary).
CAPTION_WORDS: tuple[str, ...] = (
    *COLOR_NAMES,
    *SHAPE_NAMES,
    *_ROWS,
    *_COLUMNS,
    "a",
    "at",
    "in",
    "the",
    "with",
    "and",
    "photo",
    "of",
)


def describe_position(center: np.ndarray, image_size: int) -> str:
    """Where an object's centre ``(x, y)`` (pixels) lies on a 3 x 3 grid of the image:
    ``"at the top left"``, ``"in the centre"``, ``"at the middle right"``, ``"at the bottom centre"``..."""
    x, y = float(center[0]), float(center[1])
    col = min(int(3 * x / image_size), 2)
    row = min(int(3 * y / image_size), 2)
    if (row, col) == (1, 1):
        return "in the centre"
    return f"at the {_ROWS[row]} {_COLUMNS[col]}"


def _object_phrase(color: int, shape: int, center: np.ndarray, image_size: int) -> str:
    return f"a {COLOR_NAMES[color]} {SHAPE_NAMES[shape]} {describe_position(center, image_size)}"


def shapes_captions(arrays: ShapesArrays, image_size: int) -> list[str]:
    """One caption per image of ``arrays``: the class object (slot 0), then the distractors in
    slot order, each with its position."""
    captions = []
    for colors, shapes, centers in zip(arrays.colors, arrays.shapes, arrays.centers, strict=True):
        phrases = [
            _object_phrase(c, s, xy, image_size)
            for c, s, xy in zip(colors, shapes, centers, strict=True)
        ]
        caption = phrases[0]
        others = phrases[1:]
        if len(others) == 1:
            caption += f", with {others[0]}"
        elif others:
            caption += f", with {', '.join(others[:-1])} and {others[-1]}"
        captions.append(caption)
    return captions


def shapes_class_prompts(num_classes: int = 4, template: str = PROMPT_TEMPLATE) -> list[str]:
    """The zero-shot prompts, one per class in label order: ``"a photo of a red circle"``..."""
    if "{}" not in template:
        raise ValueError(f"template must hold '{{}}' for the class name; got {template!r}.")
    return [template.format(name) for name in shapes_label_names(num_classes)]


def shapes_caption_tokenizer(model_max_length: int = 77) -> PreTrainedTokenizerFast:
    """A word-level tokenizer for the captions and prompts: ``[BOS] words [EOS]``, right-padded
    with ``[PAD]`` (id 0). ``[EOS]`` has the largest id, so a CLIP text config built with
    ``eos_token_id=tokenizer.eos_token_id`` pools the end-of-text token as CLIP does."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    words = list(dict.fromkeys(CAPTION_WORDS))
    vocab = {token: i for i, token in enumerate(["[PAD]", "[UNK]", "[BOS]", *words, "[EOS]"])}
    tokenizer = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Whitespace(), pre_tokenizers.Punctuation("removed")]
    )
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[BOS] $A [EOS]",
        special_tokens=[("[BOS]", vocab["[BOS]"]), ("[EOS]", vocab["[EOS]"])],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        pad_token="[PAD]",
        unk_token="[UNK]",
        bos_token="[BOS]",
        eos_token="[EOS]",
        model_max_length=model_max_length,
    )


def load_shapes_caption_dataset(
    num_train: int = 6000,
    num_test: int = 2000,
    *,
    image_size: int = 64,
    num_classes: int = 4,
    seed: int = 0,
    num_distractors: int | None = None,
    distractors: str = "independent",
) -> datasets.DatasetDict:
    """The built-in shapes as image-text pairs.

    Args: as :func:`hf_shapley.data.load_shapes_dataset` (same images for the same arguments),
        except that ``distractors`` defaults to ``"independent"``, the design whose class
        evidence lies in the class object alone (``shapes.py``).

    Returns:
        ``datasets.DatasetDict`` with splits ``"train"`` and ``"test"`` and features ``image``
        (RGB), ``caption`` (string), ``label`` (``ClassLabel``, names ``"red circle"``...) and
        ``mask`` (mode "L", 255 on the visible pixels of the class object).
    """
    import datasets
    from datasets.table import InMemoryTable

    features = datasets.Features(
        {
            "image": datasets.Image(),
            "caption": datasets.Value("string"),
            "label": datasets.ClassLabel(names=shapes_label_names(num_classes)),
            "mask": datasets.Image(),
        }
    )
    for count in (num_train, num_test):
        _check_arguments(count, image_size, num_classes, num_distractors, distractors)
    splits = {}
    for split, count in (("train", num_train), ("test", num_test)):
        arrays = generate_shapes(
            count,
            image_size=image_size,
            num_classes=num_classes,
            seed=seed,
            split=split,
            num_distractors=num_distractors,
            distractors=distractors,
        )
        table = pa.table(
            {
                "image": _encode_all(arrays.images, "BMP"),
                "caption": pa.array(shapes_captions(arrays, image_size), type=pa.string()),
                "label": pa.array(arrays.labels, type=pa.int64()),
                "mask": _encode_all(arrays.masks.astype(np.uint8) * 255, "PNG"),
            },
            schema=features.arrow_schema,
        )
        splits[split] = datasets.Dataset(
            InMemoryTable(table),
            info=datasets.DatasetInfo(features=features),
            split=datasets.NamedSplit(split),
        )
    return datasets.DatasetDict(splits)
