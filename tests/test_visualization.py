"""Heatmaps on the original image: inverse processor geometry, overlays, figures.

Real transformers image processors (PIL backend) and real PIL images; tiny sizes.
"""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import (
    BitImageProcessor,
    ConvNextImageProcessor,
    LevitImageProcessor,
    ViTImageProcessor,
)

from hf_shapley.visualization import (
    attribution_to_image_grid,
    overlay_heatmap,
    plot_class_grid,
    save_figure,
)

GRID_4X4 = np.arange(16, dtype=np.float64).reshape(4, 4) + 1.0  # distinct, non-zero per cell


def _grey_image(height: int, width: int, level: int = 128) -> Image.Image:
    return Image.new("RGB", (width, height), (level, level, level))


def _processed_block_values(image_processor, grid_map: np.ndarray, grid: tuple[int, int]):
    """Paint the original image with the mapped values, run the real processor, and read the
    processed image at each player's centre: it must show that player's own value."""
    painted = np.where(np.isnan(grid_map), 255.0, grid_map * 10.0)
    image = Image.fromarray(np.repeat(painted[..., None], 3, axis=2).astype(np.uint8))
    pixels = image_processor(image, do_rescale=False, do_normalize=False, return_tensors="np")[
        "pixel_values"
    ][0, 0]
    height, width = pixels.shape
    rows = ((np.arange(grid[0]) + 0.5) * height / grid[0]).astype(int)
    cols = ((np.arange(grid[1]) + 0.5) * width / grid[1]).astype(int)
    return pixels[np.ix_(rows, cols)] / 10.0


# ------------------------------------------------------------------------------ inverse map
def test_vit_resize_maps_quadrants_back():
    processor = ViTImageProcessor(size={"height": 32, "width": 32})  # 64 x 64 -> 32 x 32
    values = np.array([[1.0, -2.0], [3.0, -4.0]])
    out = attribution_to_image_grid(values, processor, (64, 64))
    assert out.shape == (64, 64)
    assert not np.isnan(out).any()
    # Quadrants carry their cell's value, exactly; the boundary is between pixels 31 and 32.
    np.testing.assert_array_equal(out[:32, :32], 1.0)
    np.testing.assert_array_equal(out[:32, 32:], -2.0)
    np.testing.assert_array_equal(out[32:, :32], 3.0)
    np.testing.assert_array_equal(out[32:, 32:], -4.0)


def test_vit_resize_non_square_4x4_boundaries():
    processor = ViTImageProcessor(size={"height": 32, "width": 32})
    out = attribution_to_image_grid(GRID_4X4, processor, (48, 80))  # H 48, W 80 (stretched)
    assert out.shape == (48, 80)
    row_edges, col_edges = [0, 12, 24, 36, 48], [0, 20, 40, 60, 80]
    for i in range(4):
        for j in range(4):
            block = out[row_edges[i] : row_edges[i + 1], col_edges[j] : col_edges[j + 1]]
            np.testing.assert_array_equal(block, GRID_4X4[i, j])
            centre = (
                (row_edges[i] + row_edges[i + 1]) // 2,
                (col_edges[j] + col_edges[j + 1]) // 2,
            )
            assert out[centre] == GRID_4X4[i, j]
    # Agrees with what the real processor does to a painted image.
    np.testing.assert_allclose(_processed_block_values(processor, out, (4, 4)), GRID_4X4, atol=0.11)


def test_no_processor_and_no_resize_cover_the_whole_image():
    values = np.array([[1.0, 2.0], [3.0, 4.0]])
    stretched = attribution_to_image_grid(values, None, (10, 6))
    np.testing.assert_array_equal(stretched[:5, :3], 1.0)
    np.testing.assert_array_equal(stretched[5:, 3:], 4.0)
    processor = ViTImageProcessor(do_resize=False)
    np.testing.assert_array_equal(attribution_to_image_grid(values, processor, (10, 6)), stretched)


def test_convnext_crop_non_square_borders_nan_inside_right():
    # shortest_edge 32, crop_pct 0.875: resize the short side to int(32 / 0.875) = 36, i.e.
    # (72, 108) -> (36, 54), then center-crop 32 x 32 at offset (2, 11), i.e. original rows
    # 4..67 and columns 22..85; each of the 4 x 4 players covers 16 x 16 original pixels.
    processor = ConvNextImageProcessor(size={"shortest_edge": 32}, crop_pct=0.875)
    out = attribution_to_image_grid(GRID_4X4, processor, (72, 108))
    assert out.shape == (72, 108)
    seen = ~np.isnan(out)
    np.testing.assert_array_equal(np.flatnonzero(seen.any(axis=1)), np.arange(4, 68))
    np.testing.assert_array_equal(np.flatnonzero(seen.any(axis=0)), np.arange(22, 86))
    assert seen[4:68, 22:86].all()
    for i in range(4):
        for j in range(4):
            top, left = 4 + 16 * i, 22 + 16 * j
            np.testing.assert_array_equal(out[top : top + 16, left : left + 16], GRID_4X4[i, j])
    np.testing.assert_allclose(_processed_block_values(processor, out, (4, 4)), GRID_4X4, atol=0.11)


def test_bit_center_crop_portrait_image():
    # shortest_edge 40: (120, 80) -> (60, 40); crop 32 x 32 at (14, 4) -> original rows 28..91,
    # columns 8..71. Players grid 2 x 2: 32 x 32 original pixels each.
    processor = BitImageProcessor(
        size={"shortest_edge": 40}, crop_size={"height": 32, "width": 32}, do_center_crop=True
    )
    values = np.array([[1.0, 2.0], [3.0, 4.0]])
    out = attribution_to_image_grid(values, processor, (120, 80))
    assert np.isnan(out[:28]).all() and np.isnan(out[92:]).all()
    assert np.isnan(out[:, :8]).all() and np.isnan(out[:, 72:]).all()
    np.testing.assert_array_equal(out[28:60, 8:40], 1.0)
    np.testing.assert_array_equal(out[28:60, 40:72], 2.0)
    np.testing.assert_array_equal(out[60:92, 8:40], 3.0)
    np.testing.assert_array_equal(out[60:92, 40:72], 4.0)
    np.testing.assert_allclose(_processed_block_values(processor, out, (2, 2)), values, atol=0.11)


def test_uninvertible_processor_is_a_clear_error():
    with pytest.raises(ValueError, match="Cannot invert"):
        attribution_to_image_grid(GRID_4X4, LevitImageProcessor(), (64, 64))
    with pytest.raises(ValueError, match="Cannot invert"):
        attribution_to_image_grid(GRID_4X4, object(), (64, 64))
    with pytest.raises(ValueError, match="2-D"):
        attribution_to_image_grid(GRID_4X4.ravel(), None, (64, 64))


# ------------------------------------------------------------------------------ overlays
def test_overlay_size_mode_and_colours():
    processor = ConvNextImageProcessor(size={"shortest_edge": 32}, crop_pct=0.875)
    image = _grey_image(72, 108)
    values = np.zeros((4, 4))
    values[0, 0], values[3, 3] = 2.0, -2.0
    overlay = overlay_heatmap(image, values, processor)
    assert overlay.mode == "RGB" and overlay.size == image.size
    pixels = np.asarray(overlay).astype(int)
    red, blue = pixels[4 + 8, 22 + 8], pixels[4 + 48 + 8, 22 + 48 + 8]
    assert red[0] > red[2] + 25 and red[0] > red[1] + 25  # positive: reddish
    assert blue[2] > blue[0] + 25 and blue[2] > blue[1] + 15  # negative: bluish
    zero = pixels[4 + 24, 22 + 24]
    assert abs(zero[0] - zero[2]) <= 3  # zero: the neutral centre colour
    # Cropped-out border: greyed (R = G = B), not coloured.
    border = pixels[:4].reshape(-1, 3)
    assert (border[:, 0] == border[:, 1]).all() and (border[:, 1] == border[:, 2]).all()


def test_overlay_accepts_torch_and_other_modes():
    torch = pytest.importorskip("torch")
    image = Image.new("L", (20, 10), 100)
    overlay = overlay_heatmap(image, torch.tensor([[1.0, -1.0]]), None, alpha=1.0, vmax=1.0)
    assert overlay.mode == "RGB" and overlay.size == (20, 10)
    pixels = np.asarray(overlay).astype(int)
    assert pixels[5, 2, 0] > pixels[5, 2, 2] and pixels[5, 17, 2] > pixels[5, 17, 0]


# ------------------------------------------------------------------------------ figures
def test_plot_class_grid_and_save(tmp_path):
    pyplot_loaded = "matplotlib.pyplot" in sys.modules
    rng = np.random.default_rng(0)
    values = rng.normal(size=(16, 3))
    base = np.array([0.5, -0.5, 0.0])
    id2label = {"0": "red circle", "1": "green square", "2": "blue triangle"}
    processor = ConvNextImageProcessor(size={"shortest_edge": 32}, crop_pct=0.875)
    fig = plot_class_grid(
        _grey_image(72, 108), values, (4, 4), id2label, base_values=base, image_processor=processor
    )
    logits = base + values.sum(0)
    top = np.argsort(-logits)[:3]
    titles = [ax.get_title() for ax in fig.axes]
    assert len(fig.axes) == 1 + 3 + 1  # image, one per class, colour bar
    for title, k in zip(titles[1:4], top, strict=True):
        assert title.startswith(id2label[str(k)] + ":")
        assert f"{logits[k]:.3g}" in title and f"{base[k]:.3g}" in title
    fig2 = plot_class_grid(_grey_image(32, 32), values[None], (4, 4), None, classes=[2])
    assert len(fig2.axes) == 3 and fig2.axes[1].get_title().startswith("2:")

    path = save_figure(fig, tmp_path / "figs" / "grid.png", dpi=50)
    with Image.open(path) as png:
        assert png.format == "PNG" and png.size[0] > png.size[1] > 0
    if not pyplot_loaded:
        assert "matplotlib.pyplot" not in sys.modules  # no global backend state touched


def test_plot_class_grid_checks_shapes():
    with pytest.raises(ValueError, match="players"):
        plot_class_grid(_grey_image(8, 8), np.zeros((9, 2)), (4, 4), None)


def test_builtin_colormap_matches_matplotlib():
    """Without matplotlib, overlays use a built-in RdBu_r; it must look the same."""
    matplotlib = pytest.importorskip("matplotlib")
    from hf_shapley.models.heatmap import _RDBU, _ListedCmap

    x = np.linspace(0.0, 1.0, 101)
    builtin = _ListedCmap(_RDBU[::-1], "RdBu_r")(x)[:, :3]
    np.testing.assert_allclose(builtin, matplotlib.colormaps["RdBu_r"](x)[:, :3], atol=0.011)


def test_plot_faithfulness_curves_draws_one_line_per_explainer_and_panel():
    pytest.importorskip("matplotlib")
    from hf_shapley.visualization import plot_faithfulness_curves

    curves = {
        "phi": (np.linspace(0, 1, 5), np.linspace(1, 0, 5)),
        "random": (np.full(5, 0.5), np.full(5, 0.5)),
    }
    fig = plot_faithfulness_curves(curves, title="model", highlight="phi")
    insertion, deletion = fig.axes[:2]
    assert [line.get_label() for line in insertion.lines] == ["phi", "random"]
    assert np.allclose(deletion.lines[0].get_ydata(), np.linspace(1, 0, 5))
    assert insertion.lines[0].get_linewidth() > insertion.lines[1].get_linewidth()
    with pytest.raises(ValueError, match="empty"):
        plot_faithfulness_curves({})


def test_plot_explanation_runs_the_model_and_keeps_its_mode(make_model):
    from transformers import ViTImageProcessorPil

    from hf_shapley.visualization import plot_explanation

    model = make_model("vit", players_grid=(2, 2))
    model.config.id2label = {0: "a", 1: "b", 2: "c"}
    processor = ViTImageProcessorPil(size={"height": 32, "width": 32})
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (20, 30, 3), dtype=np.uint8))
    with torch.no_grad():
        logits = model(processor(image, return_tensors="pt")["pixel_values"]).logits[0]
    model.train()
    fig = plot_explanation(model, image, processor, top_k=2)
    assert model.training  # the caller's mode is restored
    top = torch.argsort(logits, descending=True)[:2].tolist()
    titles = [ax.get_title() for ax in fig.axes[1:3]]
    assert [t.split(":")[0] for t in titles] == [model.config.id2label[k] for k in top]
    # The default draws the class-centered logit; centered=False the raw one.
    assert f"{(logits[top[0]] - logits.mean()).item():.3g}" in titles[0]
    raw = plot_explanation(model, image, processor, top_k=2, centered=False)
    assert f"{logits[top[0]].item():.3g}" in raw.axes[1].get_title()
    with pytest.raises(ValueError, match="image processor"):
        plot_explanation(model, image)


def _sixteen_bit_image() -> tuple[Image.Image, np.ndarray]:
    """A mode ``I;16`` image and the 8-bit grey it must be drawn as (scaled, not clipped)."""
    values = np.random.default_rng(5).integers(0, 65536, (20, 30), dtype=np.uint16)
    image = Image.fromarray(values)
    assert image.mode == "I;16"
    grey = np.round(values / 65535.0 * 255.0).astype(np.uint8)
    return image, np.repeat(grey[..., None], 3, axis=-1)


def test_overlay_and_figures_draw_a_16_bit_image_scaled_not_clipped():
    image, expected = _sixteen_bit_image()
    overlay = overlay_heatmap(image, np.ones((2, 2)), None, alpha=0.0)
    assert np.array_equal(np.asarray(overlay), expected)
    assert not np.array_equal(np.asarray(image.convert("RGB")), expected)  # PIL clips
    fig = plot_class_grid(image, np.zeros((4, 2)), (2, 2), None, classes=[0])
    assert np.array_equal(np.asarray(fig.axes[0].images[0].get_array()), expected)


def test_plot_explanation_explains_the_pixels_the_pipeline_sees(make_model):
    from transformers import ViTImageProcessorPil

    from hf_shapley.visualization import plot_explanation

    model = make_model("vit", players_grid=(2, 2))
    model.config.id2label = {0: "a", 1: "b", 2: "c"}
    processor = ViTImageProcessorPil(size={"height": 32, "width": 32})
    image, expected = _sixteen_bit_image()
    with torch.no_grad():
        pixel_values = processor(Image.fromarray(expected), return_tensors="pt")["pixel_values"]
        logits = model(pixel_values).logits[0]
    fig = plot_explanation(model, image, processor, top_k=1)
    top = int(logits.argmax())
    title = fig.axes[1].get_title()
    assert title.startswith(model.config.id2label[top] + ":")
    assert f"{(logits[top] - logits.mean()).item():.3g}" in title  # class-centered by default
    assert np.array_equal(np.asarray(fig.axes[0].images[0].get_array()), expected)
