"""Tests for the built-in image-text pairs (hf_shapley.data.captions)."""

from __future__ import annotations

import numpy as np
import pytest

from hf_shapley.data import (
    SHAPES_LABELS,
    generate_shapes,
    load_shapes_caption_dataset,
    load_shapes_dataset,
    shapes_caption_tokenizer,
    shapes_captions,
    shapes_class_prompts,
)
from hf_shapley.data.captions import describe_position


@pytest.mark.parametrize("num_classes", [3, 4, 6])
@pytest.mark.parametrize("distractors", ["complement", "independent"])
def test_captions_name_the_class_object_first_and_no_other_class(num_classes, distractors):
    arrays = generate_shapes(
        200, image_size=64, num_classes=num_classes, distractors=distractors, num_distractors=5
    )
    captions = shapes_captions(arrays, 64)
    names = SHAPES_LABELS[:num_classes]
    for caption, label in zip(captions, arrays.labels, strict=True):
        assert caption.startswith(f"a {names[label]} "), caption
        # Distractors are never class conjunctions: the caption names exactly one class.
        named = [k for k, name in enumerate(names) if f"a {name} " in caption]
        assert named == [label], caption
        assert caption.count(" a ") + 1 == 6  # the class object and its 5 distractors


def test_positions_describe_where_the_object_is():
    assert describe_position(np.array([5.0, 5.0]), 64) == "at the top left"
    assert describe_position(np.array([32.0, 32.0]), 64) == "in the centre"
    assert describe_position(np.array([60.0, 30.0]), 64) == "at the middle right"
    assert describe_position(np.array([30.0, 63.9]), 64) == "at the bottom centre"
    # Against the rendered pixels: the class object's visible mask lies mostly in the cell the
    # caption names (objects near a border between cells straddle it).
    arrays = generate_shapes(300, image_size=64, distractors="independent")
    captions = shapes_captions(arrays, 64)
    agree = 0
    for caption, mask in zip(captions, arrays.masks, strict=True):
        ys, xs = np.nonzero(mask)
        phrase = describe_position(np.array([xs.mean() + 0.5, ys.mean() + 0.5]), 64)
        head = caption.split(", with")[0]
        agree += head.endswith(phrase)
    assert agree / len(captions) > 0.9


def test_class_prompts_map_one_to_one_to_classes():
    for num_classes in (3, 4, 5, 6):
        prompts = shapes_class_prompts(num_classes)
        assert len(prompts) == len(set(prompts)) == num_classes
        for k, prompt in enumerate(prompts):
            named = [j for j, name in enumerate(SHAPES_LABELS) if prompt.endswith(f" {name}")]
            assert named == [k]
    assert shapes_class_prompts(3, "{} on grey") == [f"{n} on grey" for n in SHAPES_LABELS[:3]]
    with pytest.raises(ValueError, match="template"):
        shapes_class_prompts(4, "a photo")


def test_tokenizer_knows_every_word_and_ends_with_eos():
    tokenizer = shapes_caption_tokenizer()
    arrays = generate_shapes(100, image_size=64, num_classes=6, num_distractors=7)
    texts = shapes_captions(arrays, 64) + shapes_class_prompts(6)
    encoded = tokenizer(texts, padding=True)
    for text, ids, mask in zip(texts, encoded["input_ids"], encoded["attention_mask"], strict=True):
        n = sum(mask)
        assert tokenizer.unk_token_id not in ids[:n]
        assert ids[0] == tokenizer.bos_token_id and ids[n - 1] == tokenizer.eos_token_id
        assert all(i == tokenizer.pad_token_id for i in ids[n:])
        assert tokenizer.decode(ids[1 : n - 1]) == text.replace(",", "")
    assert tokenizer.eos_token_id == len(tokenizer) - 1 and tokenizer.pad_token_id == 0


def test_caption_dataset_holds_the_built_in_images():
    pairs = load_shapes_caption_dataset(20, 10, image_size=32, distractors="complement")
    plain = load_shapes_dataset(20, 10, image_size=32, distractors="complement")
    assert set(pairs["train"].features) == {"image", "caption", "label", "mask"}
    assert pairs["train"].features["label"].names == plain["train"].features["label"].names
    for split in ("train", "test"):
        for a, b in zip(pairs[split], plain[split], strict=True):
            assert np.array_equal(np.asarray(a["image"]), np.asarray(b["image"]))
            assert np.array_equal(np.asarray(a["mask"]), np.asarray(b["mask"]))
            assert a["label"] == b["label"]
            assert a["caption"].startswith(f"a {SHAPES_LABELS[a['label']]} ")
