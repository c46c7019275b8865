"""Turn any image into the 8-bit RGB ``PIL.Image`` a model is trained on and explains.

transformers' ``load_image`` ends with ``image.convert("RGB")``, which is wrong for several
modes real data sets contain: 16-bit grayscale (medical, microscopy, depth) is *clipped* at 255
instead of scaled, so most of the image turns white; transparent pixels of RGBA/LA images keep
whatever colour they happened to store (often black). This module converts each mode by what
its values mean and names the file in every error.

:func:`to_rgb` converts an in-memory ``PIL.Image``; it is THE conversion of the package, used
for training (``ShapleyImageCollator``), inference (the pipeline, through
:func:`load_rgb_image`, which also opens paths and URLs), pictures (``visualization``) and the
model card, so a data set is trained on the same pixels it is explained on.

This file is shipped as remote code beside the pipeline: relative imports only.
"""

from __future__ import annotations

import os
from io import BytesIO
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

__all__ = ["ImageLoadingError", "describe_image_input", "load_rgb_image", "to_rgb"]

# Where transparent pixels are composited: white, the background of most documents and
# product photos (the image processor then normalizes it like any other pixel).
TRANSPARENT_BACKGROUND = (255, 255, 255)
_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")


class ImageLoadingError(ValueError):
    """An input could not be turned into an image; the message names the input."""


def describe_image_input(image: Any) -> str:
    """A short name for an input, for error messages (a path, a URL or a PIL image's size)."""
    if isinstance(image, (str, os.PathLike)):
        text = os.fspath(image)
        return repr(text if len(text) <= 200 else text[:100] + "..." + text[-40:])
    if isinstance(image, Image.Image):
        return f"a PIL image of mode {image.mode!r} and size {image.size}"
    return f"an object of type {type(image).__name__}"


def _open(image: str | os.PathLike, timeout: float | None) -> Image.Image:
    text = os.fspath(image)
    if text.startswith(("http://", "https://")):
        import urllib.request

        try:
            with urllib.request.urlopen(text, timeout=timeout) as response:  # noqa: S310
                content = response.read()
        except Exception as error:  # HTTP, URL, socket and timeout errors
            raise ImageLoadingError(
                f"Could not download the image {describe_image_input(text)}: {error}. Check the URL "
                "and the network (with HF_HUB_OFFLINE=1 or no network, pass a local file)."
            ) from error
        source: Any = BytesIO(content)
    elif os.path.isdir(text):
        raise ImageLoadingError(
            f"{describe_image_input(text)} is a directory, not an image file; pass the image "
            "files in it (examples/explain.py explains a whole folder)."
        )
    elif os.path.isfile(text):
        source = text
    else:
        raise ImageLoadingError(
            f"No image file at {describe_image_input(text)}: pass an existing path, an http(s) "
            "URL or a PIL.Image."
        )
    try:
        opened = Image.open(source)
        opened.load()  # decode now, so a truncated file fails here and not in the model
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise ImageLoadingError(
            f"Could not read {describe_image_input(text)} as an image ({type(error).__name__}: "
            f"{error}). The file is not an image or is corrupt; remove it or re-export it as "
            "PNG or JPEG."
        ) from error
    except Image.DecompressionBombError as error:
        raise ImageLoadingError(
            f"{describe_image_input(text)} is larger than PIL's safety limit ({error}). Downscale "
            "it first, or raise PIL.Image.MAX_IMAGE_PIXELS if you trust the file."
        ) from error
    return opened


def _scaled_to_uint8(image: Image.Image) -> Image.Image:
    """Grayscale with more than 8 bits (I;16*, I, F) scaled, not clipped, to 0..255."""
    values = np.asarray(image, dtype=np.float64)
    if image.mode in _SIXTEEN_BIT_MODES:
        full_scale = 65535.0
    elif image.mode == "F":
        # Float images: [0, 1] is the usual convention; anything larger is taken as 0..255.
        full_scale = 1.0 if values.size == 0 or np.nanmax(values) <= 1.0 else 255.0
    else:  # "I" (32-bit integers): PIL opens 16-bit PNGs this way; 8-bit data stays as is.
        peak = 0.0 if values.size == 0 else float(values.max())
        full_scale = 255.0 if peak <= 255 else (65535.0 if peak <= 65535 else peak)
    scaled = np.clip(np.nan_to_num(values) / full_scale * 255.0, 0.0, 255.0)
    return Image.fromarray(np.round(scaled).astype(np.uint8), mode="L")


def _convert_mode(image: Image.Image) -> Image.Image:
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in _SIXTEEN_BIT_MODES or mode in ("I", "F"):
        return _scaled_to_uint8(image).convert("RGB")
    if mode == "P":
        # Palette images may mark one index transparent: honour it like an alpha channel.
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
        mode = image.mode
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, TRANSPARENT_BACKGROUND + (255,))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if mode == "1":
        return image.convert("L").convert("RGB")
    # L, CMYK, YCbCr, LAB, HSV: PIL's conversions (CMYK without an ICC profile is naive but
    # standard: what every browser shows for an untagged CMYK JPEG is close to it).
    return image.convert("RGB")


def _upright_rgb(image: Image.Image, name: str) -> Image.Image:
    """EXIF orientation, then the mode conversion; errors name the input as ``name``."""
    if image.width < 1 or image.height < 1:
        raise ImageLoadingError(f"{name} has no pixels {image.size}.")
    try:
        upright = ImageOps.exif_transpose(image)
        return _convert_mode(upright if upright is not None else image)
    except (OSError, ValueError) as error:
        raise ImageLoadingError(
            f"Could not convert {name} (mode {image.mode!r}) to RGB: {error}."
        ) from error


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert a ``PIL.Image`` of any mode to 8-bit RGB, upright (EXIF orientation applied).

    The one image conversion of the package: training, inference, pictures and the model card
    use it, so the model is trained on the pixels it is explained on. Use it instead of PIL's
    ``image.convert("RGB")``, which clips 16-bit grayscale at 255.

    Conversions:
        * 16-bit and 32-bit grayscale (``I;16``, ``I``) are scaled from their full range to
          0..255 (PIL's own ``convert`` clips them at 255); float images (``F``) from [0, 1].
        * Transparent images (``RGBA``, ``LA``, palette with transparency) are composited over
          white (``TRANSPARENT_BACKGROUND``).
        * ``CMYK``, ``L``, ``1``, ``YCbCr`` and palette images use PIL's conversion.
        Image size is not changed (apart from the EXIF rotation): the model's image processor
        resizes tiny and huge images. The result is a new image, never ``image`` itself.

    Raises:
        ImageLoadingError: (a ``ValueError``) for an image with no pixels or one that cannot
            be decoded or converted.
        TypeError: For anything that is not a ``PIL.Image.Image`` (use :func:`load_rgb_image`
            for paths and URLs, ``PIL.Image.fromarray`` for arrays).
    """
    if not isinstance(image, Image.Image):
        raise TypeError(
            f"to_rgb takes a PIL.Image; got {describe_image_input(image)}. Use load_rgb_image "
            "for a path or URL, PIL.Image.fromarray(array) for an array."
        )
    return _upright_rgb(image, describe_image_input(image))


def load_rgb_image(image: Any, timeout: float | None = None) -> Image.Image:
    """Load an image and convert it to 8-bit RGB, upright (EXIF orientation applied).

    Args:
        image: A local path (``str`` or ``os.PathLike``), an ``http(s)://`` URL, or a
            ``PIL.Image.Image`` of any mode.
        timeout: Seconds to wait for a URL.

    The conversion is :func:`to_rgb` (16-bit and 32-bit grayscale scaled, transparency over
    white, EXIF orientation).

    Raises:
        ImageLoadingError: (a ``ValueError``) for a missing, unreadable, corrupt or non-image
            file, a directory, a failed download, or an image with no pixels; the message
            names the input.
        TypeError: For anything that is not a path, URL or PIL image.
    """
    if isinstance(image, Image.Image):
        return to_rgb(image)
    if isinstance(image, (str, os.PathLike)):
        # Same conversion as to_rgb, with the file (not the decoded image) named in errors.
        return _upright_rgb(_open(image, timeout), describe_image_input(image))
    raise TypeError(
        f"Cannot explain {describe_image_input(image)}: pass a path, an http(s) URL or a "
        "PIL.Image (or a list of them). For arrays use PIL.Image.fromarray(array) first."
    )
