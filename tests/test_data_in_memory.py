"""``hf_shapley.data.process_in_memory``: a split processed once gives the collator's batches
bit for bit, and a split that does not fit is left to the collator."""

from __future__ import annotations

import pytest
import torch
from transformers import ViTImageProcessorPil

from hf_shapley.data import InMemoryPixels, load_image_splits, process_in_memory
from hf_shapley.training.trainer import ShapleyImageCollator


@pytest.fixture(scope="module")
def split_and_processor():
    train, _ = load_image_splits(num_train=20, num_test=1, image_size=32)
    processor = ViTImageProcessorPil(
        size={"height": 32, "width": 32}, image_mean=[0.5] * 3, image_std=[0.5] * 3
    )
    return train, processor


def test_in_memory_pixels_are_the_collators_bit_for_bit(split_and_processor):
    train, processor = split_and_processor
    kept = process_in_memory(train, processor, max_gb=1.0, batch_size=8)  # batches of 8, 8, 4
    assert isinstance(kept, InMemoryPixels) and len(kept) == 20
    collator = ShapleyImageCollator(image_processor=processor, image_column="image")
    rows = [5, 17, 0, 19]
    from_images = collator([train[i] for i in rows])
    from_memory = collator([kept[i] for i in rows])
    assert torch.equal(from_memory["pixel_values"], from_images["pixel_values"])
    assert torch.equal(from_memory["labels"], from_images["labels"])


def test_a_split_over_the_limit_is_left_to_the_collator(split_and_processor):
    train, processor = split_and_processor
    assert process_in_memory(train, processor, max_gb=1e-6) is train
    assert process_in_memory(train, processor, max_gb=0.0) is train


def test_one_label_per_image_is_required():
    with pytest.raises(ValueError, match="3 images but 2 labels"):
        InMemoryPixels(torch.zeros(3, 3, 8, 8), [0, 1], "label")
