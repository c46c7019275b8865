"""One image conversion for training, inference and pictures (``hf_shapley.models.image_loading.to_rgb``).

PIL's ``convert("RGB")`` clips 16-bit grayscale at 255; a model trained on those clipped pixels
and explained on correctly scaled ones sees two different images. These tests feed the same
16-bit image through the training collator and through the pipeline and require the same
``pixel_values``, and check the conversion itself against independent numpy computations.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import ViTImageProcessorPil, pipeline

from hf_shapley.models import image_loading
from hf_shapley.models.image_loading import ImageLoadingError, load_rgb_image, to_rgb
from hf_shapley.training.trainer import ShapleyImageCollator

pytestmark = pytest.mark.usefixtures("single_thread")

TASK = "image-shapley-explanation"


def sixteen_bit_image(seed: int = 0, size=(20, 24)) -> tuple[Image.Image, np.ndarray]:
    """A mode ``I;16`` image (``size`` = (width, height)) whose values spread over 0..65535."""
    rng = np.random.default_rng(seed)
    values = rng.integers(0, 65536, (size[1], size[0]), dtype=np.uint16)
    values[0, 0], values[0, 1] = 0, 65535
    image = Image.fromarray(values)
    assert image.mode == "I;16"
    return image, values


def scaled_rgb(values: np.ndarray) -> np.ndarray:
    """What a 16-bit image must become: each value scaled by 255 / 65535, grey in R, G and B."""
    grey = np.round(values.astype(np.float64) / 65535.0 * 255.0).astype(np.uint8)
    return np.repeat(grey[..., None], 3, axis=-1)


def test_to_rgb_is_exported_and_takes_one_image():
    assert "to_rgb" in image_loading.__all__
    rgb = Image.new("RGB", (3, 2), (1, 2, 3))
    converted = to_rgb(rgb)
    assert converted.mode == "RGB" and converted is not rgb  # a new image, safe to modify
    assert np.array_equal(np.asarray(converted), np.asarray(rgb))
    with pytest.raises(TypeError, match="load_rgb_image"):
        to_rgb("image.png")
    with pytest.raises(TypeError, match="fromarray"):
        to_rgb(np.zeros((2, 2, 3), dtype=np.uint8))
    with pytest.raises(ImageLoadingError, match="no pixels"):
        to_rgb(Image.new("RGB", (0, 3)))


def test_to_rgb_scales_16_bit_and_32_bit_grayscale():
    image, values = sixteen_bit_image()
    assert np.array_equal(np.asarray(to_rgb(image)), scaled_rgb(values))
    # Mode "I" (how PIL opens 16-bit PNG files) holding 16-bit data: the same scaling.
    as_int32 = Image.fromarray(values.astype(np.int32))
    assert as_int32.mode == "I"
    assert np.array_equal(np.asarray(to_rgb(as_int32)), scaled_rgb(values))
    # Float images in [0, 1].
    fractions = values.astype(np.float32) / 65535.0
    expected = np.round(fractions.astype(np.float64) * 255.0).astype(np.uint8)
    got = np.asarray(to_rgb(Image.fromarray(fractions)))
    assert np.array_equal(got, np.repeat(expected[..., None], 3, axis=-1))


def test_to_rgb_composites_transparency_over_white():
    rng = np.random.default_rng(1)
    rgba = rng.integers(0, 256, (4, 6, 4), dtype=np.uint8)
    rgba[0, 0, 3] = 0  # fully transparent: white whatever colour it stores
    alpha = rgba[..., 3:] / 255.0
    over_white = rgba[..., :3] * alpha + 255.0 * (1.0 - alpha)
    got = np.asarray(to_rgb(Image.fromarray(rgba, mode="RGBA"))).astype(np.float64)
    assert np.abs(got - over_white).max() <= 1.0
    assert tuple(got[0, 0]) == (255.0, 255.0, 255.0)


def test_to_rgb_applies_exif_orientation_and_matches_load_rgb_image(tmp_path):
    pixels = np.arange(4 * 6 * 3, dtype=np.uint8).reshape(4, 6, 3)  # height 4, width 6
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    Image.fromarray(pixels).save(tmp_path / "rotated.png", exif=exif.tobytes())
    opened = Image.open(tmp_path / "rotated.png")
    upright = to_rgb(opened)
    # Orientation 6 displays the stored pixels turned 90 degrees clockwise.
    assert np.array_equal(np.asarray(upright), np.rot90(pixels, k=-1))
    assert np.array_equal(np.asarray(to_rgb(upright)), np.asarray(upright))  # idempotent
    assert np.array_equal(np.asarray(load_rgb_image(tmp_path / "rotated.png")), np.asarray(upright))
    assert np.array_equal(np.asarray(load_rgb_image(opened)), np.asarray(upright))


def test_a_16_bit_image_trains_on_the_pixels_it_is_explained_on(make_model):
    """Training path (the collator) and inference path (the pipeline) give the same
    pixel_values for a 16-bit image, and those are not PIL's clipped conversion."""
    processor = ViTImageProcessorPil(size={"height": 32, "width": 32})
    image, values = sixteen_bit_image(seed=2, size=(40, 28))

    collator = ShapleyImageCollator(image_processor=processor)
    training = collator([{"image": image, "label": 0}])["pixel_values"]

    model = make_model("vit", players_grid=(2, 2))
    explainer = pipeline(TASK, model=model, image_processor=processor)
    inference = explainer.preprocess(image)["pixel_values"]
    loaded = processor(load_rgb_image(image), return_tensors="pt")["pixel_values"]
    # Independent: the scaled pixels built with numpy, then the same processor.
    expected = processor(Image.fromarray(scaled_rgb(values)), return_tensors="pt")["pixel_values"]

    assert training.shape == inference.shape == (1, 3, 32, 32)
    assert torch.equal(inference, expected) and torch.equal(loaded, expected)
    clipped = processor(image.convert("RGB"), return_tensors="pt")["pixel_values"]
    assert (clipped - expected).abs().max() > 0.5  # the clipped image is another image
    assert torch.equal(training, inference)


def test_a_16_bit_png_file_converts_like_the_image_in_memory():
    image, values = sixteen_bit_image(seed=3)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    buffer.seek(0)
    reopened = Image.open(buffer)  # PIL opens 16-bit PNG files as mode "I" or "I;16"
    assert np.array_equal(np.asarray(to_rgb(reopened)), scaled_rgb(values))
