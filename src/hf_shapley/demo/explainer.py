"""What the page shows, without Gradio: one pipeline pass per image, every class cached.

:class:`DemoExplainer` runs the package's own ``image-shapley-explanation`` pipeline once per
uploaded image, for *every* class (``targets=`` all label ids), and keeps the result in an
:class:`ImageExplanation`. Choosing another class then only reads that cache and renders it
(:meth:`DemoExplainer.view`): no model pass. Every number on the page is a number the pipeline
returned.

Uploads take the package's image route (:func:`~hf_shapley.models.image_loading.load_rgb_image`),
whose errors name the file and say what to do; the demo adds a pixel limit
(:data:`MAX_IMAGE_PIXELS`, checked from the header before anything is decoded) and a note when
an image was converted (16-bit, CMYK, transparency).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image

from ..models.configuration_shapley import PIPELINE_TASK
from ..models.heatmap import overlay_heatmap
from ..models.image_loading import ImageLoadingError, load_rgb_image

__all__ = [
    "EAGER_HEATMAP_MAX_CLASSES",
    "EFFICIENCY_TOLERANCE",
    "MAX_IMAGE_PIXELS",
    "ClassView",
    "DemoExplainer",
    "DemoInputError",
    "ImageExplanation",
    "class_view",
    "format_values",
    "read_upload",
]

#: Largest upload, in pixels (about 5,000 x 4,000): the model sees a few hundred pixels a side
#: anyway, and larger images only cost memory in decoding and in drawing heatmaps.
MAX_IMAGE_PIXELS = 20_000_000

#: Up to this many classes every heatmap is drawn by the pipeline in the one call; beyond it
#: (ImageNet-size label sets) a class's heatmap is drawn when the class is first shown, with
#: the pipeline's own drawing function and settings, still without a model pass.
EAGER_HEATMAP_MAX_CLASSES = 64

#: ``|logit - base - sum(values)|`` above this fraction of the logit's scale is flagged.
EFFICIENCY_TOLERANCE = 1e-4

# The heatmap settings, passed to the pipeline (its defaults) and to the lazy drawing alike.
_PIPELINE_HEATMAP = {"colormap": "RdBu_r", "opacity": 0.5}

# What a conversion means, by the file's PIL mode (load_rgb_image does the conversion).
_MODE_NOTES = {
    "I;16": "a 16-bit grayscale image: scaled from its full 16-bit range to 8 bits",
    "I;16L": "a 16-bit grayscale image: scaled from its full 16-bit range to 8 bits",
    "I;16B": "a 16-bit grayscale image: scaled from its full 16-bit range to 8 bits",
    "I;16N": "a 16-bit grayscale image: scaled from its full 16-bit range to 8 bits",
    "I": "a 16/32-bit grayscale image (PIL mode I): scaled from its range to 8 bits",
    "F": "a floating-point grayscale image: scaled to 8 bits",
    "CMYK": (
        "a CMYK image: converted to RGB without a colour profile, so colours may differ "
        "slightly from a colour-managed viewer"
    ),
    "RGBA": "an image with transparency: transparent pixels are shown over white",
    "LA": "a grayscale image with transparency: transparent pixels are shown over white",
    "PA": "a palette image with transparency: transparent pixels are shown over white",
    "L": "a grayscale image: its gray level is copied to the three colour channels",
    "1": "a black-and-white image: copied to the three colour channels",
}


class DemoInputError(ValueError):
    """An upload the demo cannot explain; the message names the file and says what to do."""


@dataclass
class ImageExplanation:
    """The pipeline's output for one image and every class (the page's cache).

    Attributes:
        file_name: The uploaded file's name (for messages).
        image: The image as the model's pipeline read it (8-bit RGB, original size).
        entries: The pipeline's dict for each class, by label id.
        ranking: Label ids from the most to the least probable (the pipeline's ``top_k`` order).
        notes: What was converted on loading (16-bit, CMYK, transparency), for the page.
    """

    file_name: str
    image: Image.Image
    entries: dict[int, dict[str, Any]]
    ranking: list[int]
    notes: list[str] = field(default_factory=list)

    @property
    def top_label(self) -> str:
        """The most probable label."""
        return str(self.entries[self.ranking[0]]["label"])

    def probabilities(self, top: int | None = None) -> dict[str, float]:
        """``label -> probability`` of the ``top`` most probable classes (all by default)."""
        ids = self.ranking if top is None else self.ranking[:top]
        return {str(self.entries[k]["label"]): float(self.entries[k]["score"]) for k in ids}


@dataclass
class ClassView:
    """What the page shows for one class of one image (all from the pipeline's output)."""

    label: str
    label_id: int
    score: float
    explained: str
    logit: float
    base_value: float
    attributions: list[list[float]]
    efficiency_residual: float
    heatmap: Image.Image

    @property
    def values_sum(self) -> float:
        """Sum of the per-patch values."""
        return float(np.sum(self.attributions))

    @property
    def efficiency_ok(self) -> bool:
        """Whether ``logit = base + sum(values)`` holds up to float rounding."""
        scale = max(1.0, abs(self.logit), float(np.abs(self.attributions).sum()))
        return abs(self.efficiency_residual) <= EFFICIENCY_TOLERANCE * scale

    def table(self) -> list[list[str]]:
        """The ``h x w`` values as readable strings (see :func:`format_values`)."""
        return format_values(self.attributions)

    def efficiency_markdown(self) -> str:
        """The efficiency check as Markdown: logit = base value + sum of values, residual."""
        quantity = "class-centered logit" if self.explained == "centered_logit" else "logit"
        h = len(self.attributions)
        w = len(self.attributions[0]) if h else 0
        verdict = (
            "✅ zero up to float rounding: the values add up to the logit exactly"
            if self.efficiency_ok
            else "⚠️ larger than float rounding: the values do not add up to the logit"
        )
        return (
            f"**Efficiency check** for *{self.label}* (explained quantity: the {quantity}):\n\n"
            f"{quantity} **{self.logit:.4f}** = base value **{self.base_value:.4f}** + sum of "
            f"the {h} x {w} = {h * w} patch values **{self.values_sum:.4f}**\n\n"
            f"residual (logit - base value - sum): **{self.efficiency_residual:.2e}** ({verdict})"
        )


def format_values(grid: Any) -> list[list[str]]:
    """Format a grid of values with a sign and enough decimals for its largest value.

    The number of decimals gives the largest magnitude three significant digits (at least two
    decimals, at most eight), one for the whole grid so that the columns line up.
    """
    values = np.asarray(grid, dtype=np.float64)
    peak = float(np.abs(values).max()) if values.size else 0.0
    decimals = 2 if peak == 0.0 else min(8, max(2, 2 - math.floor(math.log10(peak))))
    return [[f"{v:+.{decimals}f}" for v in row] for row in values]


def _file_name(path: str) -> str:
    return os.path.basename(path) or path


def _conversion_note(mode: str, info: dict[str, Any]) -> str | None:
    if mode == "P":
        return _MODE_NOTES["PA"] if "transparency" in info else None
    return _MODE_NOTES.get(mode)


def read_upload(path: str | os.PathLike, max_image_pixels: int) -> tuple[Image.Image, list[str]]:
    """Read an uploaded file as the pipelines will, after the pixel limit ``max_image_pixels``.

    Returns:
        The 8-bit RGB image and notes on what was converted.

    Raises:
        DemoInputError: For no file, a file over the pixel limit, or any file
            :func:`~hf_shapley.models.image_loading.load_rgb_image` cannot read (a non-image,
            corrupt or truncated file), with its message, naming the file.
    """
    if path is None or not os.fspath(path):
        raise DemoInputError("No file was given: drop an image or pick an example.")
    path = os.fspath(path)
    name = _file_name(path)
    mode, info = None, {}
    try:
        with Image.open(path) as header:  # reads the header only: size and mode
            mode, info = header.mode, dict(header.info)
            width, height = header.size
    except Image.DecompressionBombError:
        raise DemoInputError(
            f"{name!r} is larger than PIL's safety limit for decoding; the demo takes images "
            f"of up to {max_image_pixels / 1e6:.0f} megapixels. Downscale it first."
        ) from None
    except Exception:  # not an image, or unreadable: load_rgb_image says which
        width = height = 0
    if width * height > max_image_pixels:
        raise DemoInputError(
            f"{name!r} is {width} x {height} pixels ({width * height / 1e6:.1f} megapixels), "
            f"above the demo's limit of {max_image_pixels / 1e6:.0f} megapixels. "
            "Downscale it first: the model sees only a few hundred pixels a side."
        )
    try:
        rgb = load_rgb_image(path)
    except ImageLoadingError as error:
        raise DemoInputError(str(error).replace(path, name)) from None
    notes = []
    note = _conversion_note(mode, info) if mode else None
    if note:
        notes.append(f"{name!r} is {note}.")
    return rgb, notes


class DemoExplainer:
    """The demo's engine: explain an uploaded file for every class in one pipeline pass.

    Args:
        model: A local model directory or Hub id, a ``ShapleyForImageClassification`` with an
            image processor attached (``model.image_processor``), or an
            ``image-shapley-explanation`` pipeline.
        device: Passed to ``pipeline()`` when ``model`` is a path or id (e.g. ``"cuda"``).
        max_image_pixels: The upload limit (default :data:`MAX_IMAGE_PIXELS`).
        eager_heatmap_max_classes: See :data:`EAGER_HEATMAP_MAX_CLASSES`.
    """

    def __init__(
        self,
        model: Any,
        *,
        device: Any = None,
        max_image_pixels: int = MAX_IMAGE_PIXELS,
        eager_heatmap_max_classes: int = EAGER_HEATMAP_MAX_CLASSES,
    ):
        from transformers import Pipeline, pipeline

        from ..models.pipeline_shapley import ImageShapleyExplanationPipeline

        if isinstance(model, Pipeline):
            self.pipeline = model
        elif isinstance(model, (str, os.PathLike)):
            self.pipeline = pipeline(PIPELINE_TASK, model=os.fspath(model), device=device)
        else:
            self.pipeline = ImageShapleyExplanationPipeline(
                model=model, image_processor=getattr(model, "image_processor", None)
            )
        if not isinstance(self.pipeline, ImageShapleyExplanationPipeline) and (
            getattr(self.pipeline.model.config, "model_type", None) != "shapley"
        ):
            raise ValueError(
                f"The demo needs an {PIPELINE_TASK!r} pipeline; got {type(self.pipeline).__name__}."
            )
        self.max_image_pixels = int(max_image_pixels)
        self.eager_heatmap_max_classes = int(eager_heatmap_max_classes)
        config = self.pipeline.model.config
        self.label_ids = sorted(int(k) for k in config.id2label)
        self.labels = [str(config.id2label[k]) for k in self.label_ids]
        self.players_grid = tuple(int(s) for s in config.players_grid)

    @property
    def config(self) -> Any:
        """The model's config."""
        return self.pipeline.model.config

    @property
    def image_processor(self) -> Any:
        """The model's image processor."""
        return self.pipeline.image_processor

    # ------------------------------------------------------------------ input
    def load_image(self, path: str | os.PathLike) -> tuple[Image.Image, list[str]]:
        """Read an uploaded file as the pipeline will, after the pixel limit (see
        :func:`read_upload`)."""
        return read_upload(path, self.max_image_pixels)

    # ------------------------------------------------------------------ the one model pass
    def explain(self, path: str | os.PathLike) -> ImageExplanation:
        """Explain an uploaded file for every class with one pipeline call (one model pass).

        Raises:
            DemoInputError: For a file the demo cannot read (see :meth:`load_image`).
        """
        rgb, notes = self.load_image(path)
        eager = len(self.label_ids) <= self.eager_heatmap_max_classes
        results = self.pipeline(
            rgb, targets=list(self.label_ids), heatmap=eager, **_PIPELINE_HEATMAP
        )
        entries = {int(entry["label_id"]): entry for entry in results}
        scores = np.array([entries[k]["score"] for k in self.label_ids])
        # The pipeline's top_k order: stable, so equal scores keep label order.
        ranking = [self.label_ids[i] for i in np.argsort(-scores, kind="stable")]
        return ImageExplanation(
            file_name=_file_name(os.fspath(path)),
            image=rgb,
            entries=entries,
            ranking=ranking,
            notes=notes,
        )

    # ------------------------------------------------------------------ no model pass
    def label_id(self, label: str | int) -> int:
        """A label name or id -> its id."""
        if isinstance(label, (int, np.integer)) and not isinstance(label, bool):
            if int(label) in self.label_ids:
                return int(label)
        elif str(label) in self.labels:
            return self.label_ids[self.labels.index(str(label))]
        raise ValueError(f"Unknown class {label!r}; this model's classes: {self.labels}.")

    def view(self, explanation: ImageExplanation, label: str | int | None = None) -> ClassView:
        """What the page shows for one class (default: the top one), from the cache only."""
        label_id = explanation.ranking[0] if label is None else self.label_id(label)
        return class_view(explanation, label_id, self.image_processor)


def class_view(explanation: ImageExplanation, label_id: int, image_processor: Any) -> ClassView:
    """One label's :class:`ClassView` from an explanation's entries, its heatmap drawn (as the
    pipelines draw it) and kept the first time it is asked for: no model pass."""
    entry = explanation.entries[label_id]
    heatmap = entry.get("heatmap")
    if heatmap is None:
        heatmap = overlay_heatmap(
            explanation.image,
            np.asarray(entry["attributions"]),
            image_processor,
            cmap=_PIPELINE_HEATMAP["colormap"],
            alpha=_PIPELINE_HEATMAP["opacity"],
        )
        entry["heatmap"] = heatmap
    return ClassView(
        label=str(entry["label"]),
        label_id=label_id,
        score=float(entry["score"]),
        explained=str(entry["explained"]),
        logit=float(entry["logit"]),
        base_value=float(entry["base_value"]),
        attributions=entry["attributions"],
        efficiency_residual=float(entry["efficiency_residual"]),
        heatmap=heatmap,
    )
