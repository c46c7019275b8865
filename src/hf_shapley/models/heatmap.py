"""Heatmaps of per-player Shapley values over the original image: the part of the drawing code
the explanation pipeline needs, shipped with every saved model as remote code.

A model explains a *players grid* ``(h, w)`` laid over the image it was fed, i.e. the image
*after* its image processor resized and possibly center-cropped it.
:func:`attribution_to_image_grid` inverts the processor's geometry (resize, center crop) and
returns one value per original pixel, ``NaN`` where the model never saw the pixel;
:func:`overlay_heatmap` blends a diverging colormap centered on 0 (red = evidence for the class,
blue = evidence against) over the original image, unexplained pixels greyed out and hatched.

Mapping rule: nearest player. Every original pixel is mapped through the processor's geometry
by its centre (``(y + 0.5) * scale - crop_offset``) and takes the value of the player whose
rectangle of the processed image contains that point, so cell boundaries stay sharp.

Only numpy and Pillow are needed for the default colormap (a built-in copy of ``RdBu_r`` is used
when matplotlib is not installed). The figures (``plot_explanation``...) are in
``visualization.py``, which is not shipped to the Hub.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from .image_loading import to_rgb

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.colors import Colormap, Normalize

__all__ = ["attribution_to_image_grid", "overlay_heatmap"]

# ColorBrewer "RdBu" (11 classes), the anchors matplotlib's RdBu is built from; reversed below
# so that low = blue and high = red, as in matplotlib's "RdBu_r".
_RDBU = (
    (0x67, 0x00, 0x1F),
    (0xB2, 0x18, 0x2B),
    (0xD6, 0x60, 0x4D),
    (0xF4, 0xA5, 0x82),
    (0xFD, 0xDB, 0xC7),
    (0xF7, 0xF7, 0xF7),
    (0xD1, 0xE5, 0xF0),
    (0x92, 0xC5, 0xDE),
    (0x43, 0x93, 0xC3),
    (0x21, 0x66, 0xAC),
    (0x05, 0x30, 0x61),
)

# Unexplained pixels: the image desaturated and pulled towards mid grey, crossed by dark
# diagonal hatch lines.
_UNEXPLAINED_GREY = 0.55
_UNEXPLAINED_KEEP = 0.35
_HATCH_GREY = 0.3


# ------------------------------------------------------------------------------ geometry
@dataclass(frozen=True)
class _Geometry:
    """Affine map from original pixel coordinates to processed-image coordinates, per axis:
    ``processed = original * scale - offset``; the processed image is ``processed_size``."""

    scale: tuple[float, float]
    offset: tuple[float, float]
    processed_size: tuple[int, int]


def _size_field(size: Any, key: str) -> Any:
    if size is None:
        return None
    if isinstance(size, Mapping):
        return size.get(key)
    return getattr(size, key, None)


def _dummy_chw(height: int, width: int) -> np.ndarray:
    """A zero-memory (1, H, W) array for transformers' size helpers, which read only its shape."""
    return np.broadcast_to(np.zeros((1, 1, 1), dtype=np.uint8), (1, height, width))


def _defining_class(cls: type, name: str) -> type | None:
    for klass in cls.__mro__:
        if name in vars(klass):
            return klass
    return None


def _backend_kind(image_processor: Any) -> str | None:
    """The backend, "pil" or "torchvision"; None when not a transformers backend class."""
    names = {klass.__name__ for klass in type(image_processor).__mro__}
    if "TorchvisionBackend" in names:
        return "torchvision"
    if "PilBackend" in names:
        return "pil"
    return None


def _is_convnext(image_processor: Any) -> bool:
    return any(
        klass.__name__.startswith("ConvNextImageProcessor")
        for klass in type(image_processor).__mro__
    )


def _check_invertible(image_processor: Any) -> str:
    name = type(image_processor).__name__
    kind = _backend_kind(image_processor)
    hint = (
        " Supported: transformers image processors that use the standard resize ({'height', "
        "'width'} or {'shortest_edge'[, 'longest_edge']} or {'max_height', 'max_width'}) and "
        "center crop, e.g. ViT, DeiT, BiT/DINOv2, CLIP, SigLIP, ConvNeXT/ResNet. Pass "
        "image_processor=None to stretch the players grid over the whole image instead."
    )
    if kind is None:
        raise ValueError(
            f"Cannot invert the geometry of {name}: it is not a transformers image processor "
            f"(PilBackend or TorchvisionBackend subclass).{hint}"
        )
    if not _is_convnext(image_processor):
        for method in ("resize", "_preprocess", "center_crop"):
            owner = _defining_class(type(image_processor), method)
            if owner is None or owner.__name__ not in ("PilBackend", "TorchvisionBackend"):
                raise ValueError(
                    f"Cannot invert the geometry of {name}: it overrides `{method}` "
                    f"(in {getattr(owner, '__name__', '?')}), so its resize/crop is not the "
                    f"standard one.{hint}"
                )
    if getattr(image_processor, "do_pad", None):
        raise ValueError(f"Cannot invert the geometry of {name} with do_pad=True.{hint}")
    return kind


def _resized_size(size: Any, height: int, width: int, name: str) -> tuple[int, int]:
    """The (height, width) the standard transformers resize produces (same helpers, same order)."""
    from transformers.image_transforms import (
        get_resize_output_image_size,
        get_size_with_aspect_ratio,
    )

    shortest = _size_field(size, "shortest_edge")
    longest = _size_field(size, "longest_edge")
    max_h, max_w = _size_field(size, "max_height"), _size_field(size, "max_width")
    h, w = _size_field(size, "height"), _size_field(size, "width")
    if shortest and longest:
        new = get_size_with_aspect_ratio((height, width), shortest, longest)
    elif shortest:
        new = get_resize_output_image_size(
            _dummy_chw(height, width),
            size=shortest,
            default_to_square=False,
            input_data_format="channels_first",
        )
    elif max_h and max_w:
        from transformers.image_processing_utils import get_image_size_for_max_height_width

        new = get_image_size_for_max_height_width((height, width), max_h, max_w)
    elif h and w:
        new = (h, w)
    else:
        raise ValueError(f"Cannot invert the resize of {name}: unsupported size {size!r}.")
    return int(new[0]), int(new[1])


def _crop_offset(current: int, crop: int, kind: str) -> int:
    """Top (or left) index of a center crop of length ``crop`` from ``current``, as the backend
    computes it; negative when the crop is larger than the image and pads it."""
    if crop <= current:
        return (current - crop) // 2
    # Crop larger than the image: both backends zero-pad; the image starts at -offset.
    if kind == "torchvision":
        return -((crop - current) // 2)
    return -math.ceil((crop - current) / 2)


def _processor_geometry(image_processor: Any, original_size: tuple[int, int]) -> _Geometry:
    height, width = original_size
    if image_processor is None:
        return _Geometry((1.0, 1.0), (0.0, 0.0), (height, width))
    # A multimodal processor (e.g. CLIPProcessor) wraps the image processor.
    image_processor = getattr(image_processor, "image_processor", None) or image_processor
    kind = _check_invertible(image_processor)
    name = type(image_processor).__name__
    cur_h, cur_w = height, width
    scale = [1.0, 1.0]
    offset = [0.0, 0.0]

    def crop(crop_h: int, crop_w: int) -> None:
        nonlocal cur_h, cur_w
        top, left = _crop_offset(cur_h, crop_h, kind), _crop_offset(cur_w, crop_w, kind)
        offset[0] += top
        offset[1] += left
        cur_h, cur_w = crop_h, crop_w

    def resize(new_h: int, new_w: int) -> None:
        nonlocal cur_h, cur_w
        sy, sx = new_h / cur_h, new_w / cur_w
        scale[0] *= sy
        scale[1] *= sx
        offset[0] *= sy
        offset[1] *= sx
        cur_h, cur_w = new_h, new_w

    size = getattr(image_processor, "size", None)
    if getattr(image_processor, "do_resize", False):
        if _is_convnext(image_processor):
            # ConvNextImageProcessor.resize: below 384 px, resize the shortest edge to
            # int(shortest_edge / crop_pct) and center-crop a square; from 384 on, warp.
            shortest = _size_field(size, "shortest_edge")
            if not shortest:
                raise ValueError(f"{name} needs size={{'shortest_edge': ...}}; got {size!r}.")
            crop_pct = getattr(image_processor, "crop_pct", None) or 224 / 256
            if shortest < 384:
                resize(
                    *_resized_size({"shortest_edge": int(shortest / crop_pct)}, cur_h, cur_w, name)
                )
                crop(shortest, shortest)
            else:
                resize(shortest, shortest)
        else:
            resize(*_resized_size(size, cur_h, cur_w, name))
    if getattr(image_processor, "do_center_crop", False):
        crop_size = getattr(image_processor, "crop_size", None)
        crop_h, crop_w = _size_field(crop_size, "height"), _size_field(crop_size, "width")
        if not (crop_h and crop_w):
            raise ValueError(f"{name}: do_center_crop needs crop_size with height and width.")
        crop(int(crop_h), int(crop_w))
    return _Geometry((scale[0], scale[1]), (offset[0], offset[1]), (cur_h, cur_w))


def _to_numpy(values: Any) -> np.ndarray:
    if hasattr(values, "detach"):  # a torch tensor; no torch import needed here
        values = values.detach().float().cpu().numpy()
    return np.asarray(values, dtype=np.float64)


def _axis_lookup(n_orig: int, scale: float, offset: float, n_proc: int, n_players: int):
    """Per original pixel along one axis: the player index and whether the model saw it."""
    centres = (np.arange(n_orig, dtype=np.float64) + 0.5) * scale - offset
    inside = (centres >= 0) & (centres < n_proc)
    index = np.floor(centres * n_players / n_proc).astype(np.int64)
    return np.clip(index, 0, n_players - 1), inside


def attribution_to_image_grid(
    values_hw: Any, image_processor: Any, original_size: tuple[int, int]
) -> np.ndarray:
    """Map a players-grid map onto the original image, inverting the processor's geometry.

    Args:
        values_hw: ``(h, w)`` values, one per player (a numpy array, torch tensor or nested
            list), in the players grid the model was trained on (row-major players: the value
            of player ``row * w + col`` goes at ``[row, col]``).
        image_processor: The processor that turned the original image into the model's input
            (a transformers image processor), or ``None``: the grid then covers the whole
            original image (a plain stretch).
        original_size: ``(height, width)`` of the original image (note: PIL's ``image.size``
            is ``(width, height)``).

    Returns:
        A float array ``(height, width)``: each original pixel carries the value of the player
        that covers it in the processed image (nearest-player lookup by pixel centre, no
        interpolation), and ``NaN`` where the processor cropped the pixel away, so the model
        never saw it ("unexplained").

    Raises:
        ValueError: For a processor whose geometry cannot be inverted (custom resize or
            preprocessing, padding), naming what is supported.
    """
    values = _to_numpy(values_hw)
    rows, rows_in, cols, cols_in = _player_lookup(values, image_processor, original_size)
    out = values[rows[:, None], cols[None, :]]
    out[~(rows_in[:, None] & cols_in[None, :])] = np.nan
    return out


def _player_lookup(values: np.ndarray, image_processor: Any, original_size: tuple[int, int]):
    """Per original row and column: the player row/column covering it, and whether the model
    saw it (``rows, rows_in, cols, cols_in``)."""
    if values.ndim != 2:
        raise ValueError(f"values_hw must be 2-D (h, w); got shape {values.shape}.")
    height, width = (int(s) for s in original_size)
    if height < 1 or width < 1:
        raise ValueError(f"original_size must be positive (height, width); got {original_size}.")
    geometry = _processor_geometry(image_processor, (height, width))
    grid_h, grid_w = values.shape
    rows, rows_in = _axis_lookup(
        height, geometry.scale[0], geometry.offset[0], geometry.processed_size[0], grid_h
    )
    cols, cols_in = _axis_lookup(
        width, geometry.scale[1], geometry.offset[1], geometry.processed_size[1], grid_w
    )
    return rows, rows_in, cols, cols_in


# ------------------------------------------------------------------------------ colours
class _ListedCmap:
    """Minimal stand-in for a matplotlib colormap (linear segments between anchors)."""

    def __init__(self, anchors: Sequence[Sequence[int]], name: str):
        self.anchors = np.asarray(anchors, dtype=np.float64) / 255.0
        self.name = name

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = np.clip(np.asarray(x, dtype=np.float64), 0.0, 1.0)
        grid = np.linspace(0.0, 1.0, len(self.anchors))
        rgb = np.stack([np.interp(x, grid, self.anchors[:, c]) for c in range(3)], axis=-1)
        return np.concatenate([rgb, np.ones(rgb.shape[:-1] + (1,))], axis=-1)


def _get_cmap(cmap: str | Colormap) -> Any:
    if not isinstance(cmap, str):
        return cmap
    try:
        import matplotlib

        return matplotlib.colormaps[cmap]
    except ImportError:
        if cmap == "RdBu_r":
            return _ListedCmap(_RDBU[::-1], "RdBu_r")
        if cmap == "RdBu":
            return _ListedCmap(_RDBU, "RdBu")
        raise ImportError(
            f"cmap={cmap!r} needs matplotlib (pip install matplotlib); without it only "
            "'RdBu_r' and 'RdBu' are available."
        ) from None


class _Norm:
    """Maps values to [0, 1] with 0 at 0.5 (a diverging scale centered on zero)."""

    def __init__(self, vmin: float, vmax: float):
        self.vmin, self.vmax = float(vmin), float(vmax)

    def __call__(self, values: np.ndarray) -> np.ndarray:
        values = np.asarray(values, dtype=np.float64)
        out = np.full(values.shape, 0.5)
        neg, pos = values < 0, values > 0
        if self.vmin < 0:
            out[neg] = 0.5 - 0.5 * values[neg] / self.vmin
        if self.vmax > 0:
            out[pos] = 0.5 + 0.5 * values[pos] / self.vmax
        return np.clip(out, 0.0, 1.0)


def _value_range(values: np.ndarray, symmetric: bool, vmax: float | None) -> tuple[float, float]:
    finite = values[np.isfinite(values)]
    if vmax is not None:
        vmax = abs(float(vmax))
        lo, hi = -vmax, vmax
    elif finite.size == 0:
        lo, hi = -1.0, 1.0
    elif symmetric:
        bound = float(np.abs(finite).max())
        lo, hi = -bound, bound
    else:
        lo, hi = min(float(finite.min()), 0.0), max(float(finite.max()), 0.0)
    if lo == 0.0 and hi == 0.0:
        lo, hi = -1.0, 1.0  # all zeros: everything gets the centre colour
    return lo, hi


def _matplotlib_norm(lo: float, hi: float) -> Normalize:
    """The matplotlib norm equivalent to :class:`_Norm` (for colour bars)."""
    from matplotlib.colors import Normalize, TwoSlopeNorm

    if lo < 0 < hi and lo != -hi:
        return TwoSlopeNorm(vcenter=0.0, vmin=lo, vmax=hi)
    return Normalize(vmin=lo, vmax=hi)


def overlay_heatmap(
    image: Image.Image,
    values_hw: Any,
    image_processor: Any = None,
    *,
    cmap: str | Colormap = "RdBu_r",
    alpha: float = 0.5,
    symmetric: bool = True,
    vmax: float | None = None,
) -> Image.Image:
    """Blend a players-grid attribution map over the original image.

    Args:
        image: The original image (any PIL mode; converted by
            :func:`~hf_shapley.models.image_loading.to_rgb`, as the pipeline and the training
            collator convert it, so it is drawn upright).
        values_hw: ``(h, w)`` per-player values for one class.
        image_processor: The processor that produced the model input; its resize and center
            crop are inverted (see :func:`attribution_to_image_grid`). ``None`` stretches the
            grid over the whole image.
        cmap: A diverging colormap (name or matplotlib ``Colormap``), centered on 0: with the
            default ``"RdBu_r"`` positive values (evidence for the class) are red, negative
            ones blue, zero white.
        alpha: Weight of the colour over the image, in [0, 1].
        symmetric: Scale to ``[-m, m]`` with ``m = max |value|``. With ``False`` each sign is
            scaled to its own extreme, still with 0 at the centre colour.
        vmax: Fixed scale ``[-vmax, vmax]`` (overrides ``symmetric``); use one ``vmax`` for
            several overlays that must be compared.

    Returns:
        An RGB image of the original size. Pixels the model never saw (cropped away by the
        processor) are greyed out and hatched instead of coloured.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1]; got {alpha}.")
    rgb_image = to_rgb(image)
    width, height = rgb_image.size
    values = _to_numpy(values_hw)
    rows, rows_in, cols, cols_in = _player_lookup(values, image_processor, (height, width))
    # The colour scale covers the players the image shows (a crop can hide whole players).
    shown = values[np.ix_(np.unique(rows[rows_in]), np.unique(cols[cols_in]))]
    lo, hi = _value_range(shown, symmetric, vmax)
    # Colour each player once, gather the colours per pixel (rows, then columns) and let Pillow
    # blend: the colormap never sees H x W values and the per-pixel work is in C, which keeps a
    # 12-megapixel overlay well under a second.
    player_colours = np.asarray(_get_cmap(cmap)(_Norm(lo, hi)(np.nan_to_num(values))))
    player_rgb = np.round(player_colours[..., :3] * 255.0).astype(np.uint8)
    colours = np.take(np.take(player_rgb, rows, axis=0), cols, axis=1)
    blended = Image.blend(rgb_image, Image.fromarray(colours, mode="RGB"), alpha)

    unexplained = ~(rows_in[:, None] & cols_in[None, :])
    if not unexplained.any():
        return blended
    out = np.array(blended)
    ys, xs = np.nonzero(unexplained)
    base = np.asarray(rgb_image, dtype=np.float32)[ys, xs] / 255.0
    luminance = base @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    grey = _UNEXPLAINED_KEEP * luminance + (1.0 - _UNEXPLAINED_KEEP) * _UNEXPLAINED_GREY
    spacing = max(4, min(height, width) // 16)
    line = max(1, spacing // 4)
    grey = np.where((xs + ys) % spacing < line, _HATCH_GREY, grey)
    out[ys, xs] = np.round(grey * 255.0).astype(np.uint8)[:, None]
    return Image.fromarray(out, mode="RGB")
