"""The CLIP page's engine, without Gradio: one image pass per upload, any labels typed after.

:class:`CLIPDemoExplainer` runs the vision side of a :class:`~hf_shapley.ShapleyCLIPModel`
once per uploaded image (:meth:`~hf_shapley.ShapleyCLIPModel.explain_image`: the per-player
vectors) and keeps it in a :class:`CLIPImage`. Each set of labels the user types then costs
the text encoder and a dot product per label
(:meth:`~hf_shapley.ShapleyCLIPModel.explain_texts`): no image pass. The entries it returns
have the zero-shot pipeline's format and are rendered by the classifier page's own code.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from PIL import Image

from ..models.pipeline_shapley import _softmax, explanation_entries, first_explanation
from ..models.pipeline_shapley_clip import DEFAULT_HYPOTHESIS_TEMPLATE
from .explainer import (
    _PIPELINE_HEATMAP,
    MAX_IMAGE_PIXELS,
    ClassView,
    DemoInputError,
    ImageExplanation,
    _file_name,
    class_view,
    read_upload,
)

__all__ = ["CLIPDemoExplainer", "CLIPImage", "parse_labels"]

#: At most this many labels a request: a page, not a batch job.
MAX_LABELS = 100


@dataclass
class CLIPImage:
    """One uploaded image explained for any text: what the vision side gave, kept.

    Attributes:
        file_name: The uploaded file's name (for messages).
        image: The image as the model read it (8-bit RGB, original size).
        vectors: The model's :class:`~hf_shapley.ShapleyCLIPImageExplanation` for it.
        notes: What was converted on loading, for the page.
    """

    file_name: str
    image: Image.Image
    vectors: Any
    notes: list[str] = field(default_factory=list)


def parse_labels(text: str | Sequence[str]) -> list[str]:
    """Comma-separated labels (or a list) -> the distinct non-empty labels, in order.

    Raises:
        DemoInputError: no label, or more than :data:`MAX_LABELS`.
    """
    parts = text.split(",") if isinstance(text, str) else list(text)
    labels = list(dict.fromkeys(str(part).strip() for part in parts if str(part).strip()))
    if not labels:
        raise DemoInputError("Type at least one label (comma-separated: cat, dog, car).")
    if len(labels) > MAX_LABELS:
        raise DemoInputError(f"{len(labels)} labels: the page explains at most {MAX_LABELS}.")
    return labels


class CLIPDemoExplainer:
    """Explain an uploaded image once, then any labels the user types, for a self-explaining CLIP.

    Args:
        model: A local ``ShapleyCLIPModel`` directory or Hub id (with its tokenizer and image
            processor), or a ``zero-shot-image-shapley-explanation`` pipeline.
        device: Passed to ``pipeline()`` for a path or Hub id.
        hypothesis_template: Each label's text (``"{}"`` is the label).
        max_image_pixels: The upload limit.
    """

    def __init__(
        self,
        model: Any,
        *,
        device: Any = None,
        hypothesis_template: str = DEFAULT_HYPOTHESIS_TEMPLATE,
        max_image_pixels: int = MAX_IMAGE_PIXELS,
    ):
        from transformers import Pipeline, pipeline

        from ..models.configuration_shapley_clip import ZERO_SHOT_PIPELINE_TASK

        if isinstance(model, Pipeline):
            self.pipeline = model
        else:
            self.pipeline = pipeline(ZERO_SHOT_PIPELINE_TASK, model=os.fspath(model), device=device)
        if "{}" not in hypothesis_template:
            raise ValueError(
                f"hypothesis_template must hold '{{}}' for the label; got {hypothesis_template!r}."
            )
        self.hypothesis_template = hypothesis_template
        self.max_image_pixels = int(max_image_pixels)
        self.players_grid = self.pipeline.players_grid

    @property
    def config(self) -> Any:
        return self.pipeline.model.config

    @property
    def image_processor(self) -> Any:
        return self.pipeline.image_processor

    @torch.no_grad()
    def read(self, path: str | os.PathLike) -> CLIPImage:
        """The one image pass: an uploaded file's per-player vectors, for any labels later.

        Raises:
            DemoInputError: a file the demo cannot read (see :func:`read_upload`).
        """
        rgb, notes = read_upload(path, self.max_image_pixels)
        model = self.pipeline.model
        pixels = self.image_processor(images=rgb, return_tensors="pt")["pixel_values"]
        pixels = pixels.to(device=model.device, dtype=self.pipeline.dtype or pixels.dtype)
        vectors = model.explain_image(pixels)
        return CLIPImage(_file_name(os.fspath(path)), rgb, vectors, notes)

    @torch.no_grad()
    def explain(self, image: CLIPImage, labels: str | Sequence[str]) -> ImageExplanation:
        """Score and explain ``labels`` for a read image: the text encoder only.

        Raises:
            DemoInputError: no labels, too many, or a label whose text is longer than the text
                encoder's context.
        """
        labels = parse_labels(labels)
        model = self.pipeline.model
        try:
            tokens = self.pipeline.label_texts(labels, self.hypothesis_template)
        except ValueError as error:  # a label too long for the text encoder
            raise DemoInputError(str(error)) from None
        text = model.get_text_embeds(
            tokens["input_ids"].to(model.device), tokens["attention_mask"].to(model.device)
        )
        out = model.explain_texts(image.vectors, text)
        logits, phi, base = first_explanation(
            {
                "logits": out.logits_per_image.cpu(),
                "shapley_values": out.shapley_values.cpu(),
                "base_values": out.base_values.cpu(),
            }
        )
        scores = _softmax(logits)
        ranking = [int(i) for i in np.argsort(-scores, kind="stable")]
        entries = explanation_entries(
            image.image, logits, phi, base, scores, ranking, labels, self.players_grid,
            self.image_processor, centered=True, heatmap=len(labels) <= 16,
            colormap=_PIPELINE_HEATMAP["colormap"], opacity=_PIPELINE_HEATMAP["opacity"],
        )  # fmt: skip
        return ImageExplanation(
            file_name=image.file_name,
            image=image.image,
            entries={int(entry["label_id"]): entry for entry in entries},
            ranking=ranking,
            notes=list(image.notes),
        )

    def view(self, explanation: ImageExplanation, label: str | None = None) -> ClassView:
        """What the page shows for one label (default: the most probable): no model pass."""
        if label is None:
            return class_view(explanation, explanation.ranking[0], self.image_processor)
        for label_id, entry in explanation.entries.items():
            if entry["label"] == label:
                return class_view(explanation, label_id, self.image_processor)
        known = [entry["label"] for entry in explanation.entries.values()]
        raise ValueError(f"Unknown label {label!r}; the labels typed: {known}.")
