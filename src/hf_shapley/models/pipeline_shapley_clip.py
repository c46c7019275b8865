"""The ``zero-shot-image-shapley-explanation`` pipeline: zero-shot labels with Shapley explanations.

>>> import hf_shapley  # registers the task
>>> from transformers import pipeline
>>> explainer = pipeline("zero-shot-image-shapley-explanation", model="path/to/shapley-clip")
>>> explainer("cat.jpg", candidate_labels=["cat", "dog"])[0]["heatmap"].save("cat.png")

Without the package, ``pipeline("zero-shot-image-shapley-explanation", model=dir,
trust_remote_code=True)`` loads this file from the saved model directory.

A :class:`~hf_shapley.ShapleyCLIPModel` explains an image once (its per-player vectors) and each
candidate label with a dot product, so explaining every label costs about what zero-shot
classification costs. The output has the format of the ``image-shapley-explanation`` pipeline
(``pipeline_shapley.py``), one entry per candidate label, most probable first.

This file is shipped as remote code (``ShapleyCLIPModel.save_pretrained`` copies it beside the
model, with what it imports): relative imports only, and no training code.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from transformers import Pipeline

from .configuration_shapley_clip import ZERO_SHOT_PIPELINE_TASK
from .image_loading import load_rgb_image
from .pipeline_shapley import _softmax, explanation_entries, first_explanation

DEFAULT_HYPOTHESIS_TEMPLATE = "This is a photo of {}."

__all__ = [
    "DEFAULT_HYPOTHESIS_TEMPLATE",
    "ZERO_SHOT_PIPELINE_TASK",
    "ZeroShotImageShapleyExplanationPipeline",
    "register_zero_shot_pipeline",
]


class ZeroShotImageShapleyExplanationPipeline(Pipeline):
    r"""Score images against candidate labels and explain every label by per-player Shapley values.

    Works with a :class:`~hf_shapley.ShapleyCLIPModel` and its tokenizer and image processor
    (saved beside the model, or passed to ``pipeline()``). Call it with an image (path, URL or
    ``PIL.Image``) or a list of them, and ``candidate_labels``.

    Call options:
        candidate_labels (`str` or list of `str`, required): The labels to score and explain.
        hypothesis_template (`str`, defaults to ``"This is a photo of {}."``): Each label's text.
        top_k (`int`, *optional*): Return only the ``top_k`` most probable labels.
        heatmap (`bool`, defaults to `True`): Draw a heatmap per label.
        colormap, opacity: As for the ``image-shapley-explanation`` pipeline.
        centered (`bool`, defaults to `True`): Explain the label-centered score (the score minus
            its mean over the candidate labels), the part the softmax over labels sees.
        timeout (`float`): Seconds to wait for a URL.

    Returns:
        For one image, a list of dicts, one per label, most probable first; for a list of
        images, a list of such lists. Each dict holds ``label``, ``label_id`` (its index in
        ``candidate_labels``), ``score`` (softmax over the labels), ``explained``
        (``"centered_logit"`` or ``"logit"``), ``logit`` (CLIP's scaled cosine similarity, or
        its centered value), ``base_value``, ``attributions`` (``h x w`` grid),
        ``efficiency_residual`` and ``heatmap`` (with ``heatmap=True``).
    """

    _load_processor = False
    _load_image_processor = True
    _load_feature_extractor = False
    _load_tokenizer = True

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        config = self.model.config
        if getattr(config, "model_type", None) != "shapley_clip":
            raise ValueError(
                f"The {ZERO_SHOT_PIPELINE_TASK!r} pipeline needs a ShapleyCLIPModel; got "
                f"{type(self.model).__name__} (model_type={getattr(config, 'model_type', None)!r}). "
                "Wrap a CLIP model first: ShapleyCLIPModel.from_clip(clip_model, players_grid=...)."
            )
        if self.image_processor is None or self.tokenizer is None:
            raise ValueError(
                "This model needs an image processor and a tokenizer: pass image_processor=... "
                "and tokenizer=... to pipeline(), or save them beside the model."
            )
        self.players_grid = tuple(int(s) for s in config.players_grid)
        self.context_length = config.clip_config.text_config.max_position_embeddings

    def _sanitize_parameters(
        self,
        candidate_labels: str | Sequence[str] | None = None,
        hypothesis_template: str | None = None,
        top_k: int | None = None,
        heatmap: bool | None = None,
        colormap: Any = None,
        opacity: float | None = None,
        centered: bool | None = None,
        timeout: float | None = None,
    ) -> tuple[dict, dict, dict]:
        preprocess: dict[str, Any] = {}
        if candidate_labels is not None:
            labels = [candidate_labels] if isinstance(candidate_labels, str) else candidate_labels
            labels = list(labels)
            if not labels:
                raise ValueError(
                    "candidate_labels is empty: pass at least one label to score and explain."
                )
            if not all(isinstance(label, str) and label for label in labels):
                raise ValueError(
                    f"candidate_labels must be non-empty strings; got {candidate_labels!r}."
                )
            preprocess["candidate_labels"] = labels
        if hypothesis_template is not None:
            if "{}" not in hypothesis_template:
                raise ValueError(
                    f"hypothesis_template must hold '{{}}' for the label; got {hypothesis_template!r}."
                )
            preprocess["hypothesis_template"] = hypothesis_template
        if timeout is not None:
            preprocess["timeout"] = timeout
        postprocess: dict[str, Any] = {}
        if top_k is not None:
            if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
                raise ValueError(f"top_k must be a positive integer; got {top_k!r}.")
            postprocess["top_k"] = top_k
        if heatmap is not None:
            postprocess["heatmap"] = bool(heatmap)
        if colormap is not None:
            postprocess["colormap"] = colormap
        if opacity is not None:
            if not 0.0 <= float(opacity) <= 1.0:
                raise ValueError(f"opacity must be in [0, 1]; got {opacity!r}.")
            postprocess["opacity"] = float(opacity)
        if centered is not None:
            if not isinstance(centered, bool):
                raise ValueError(f"centered must be True or False; got {centered!r}.")
            postprocess["centered"] = centered
        return preprocess, {}, postprocess

    def __call__(self, inputs: Any = None, **kwargs: Any) -> Any:
        """Explain one image or a list of images against ``candidate_labels``."""
        if "images" in kwargs:
            inputs = kwargs.pop("images")
        if inputs is None:
            raise ValueError(
                f"Call the {ZERO_SHOT_PIPELINE_TASK!r} pipeline with an image or a list of images."
            )
        if kwargs.get("candidate_labels") is None:
            raise ValueError("candidate_labels is required: the labels to score the image against.")
        if isinstance(inputs, tuple):
            inputs = list(inputs)
        if isinstance(inputs, list) and not inputs:
            raise ValueError("The list of images is empty: pass at least one image.")
        return super().__call__(inputs, **kwargs)

    def preprocess(
        self,
        image: Any,
        candidate_labels: list[str] | None = None,
        hypothesis_template: str = DEFAULT_HYPOTHESIS_TEMPLATE,
        timeout: float | None = None,
    ) -> dict[str, Any]:
        rgb = load_rgb_image(image, timeout=timeout)
        pixel_values = self.image_processor(images=rgb, return_tensors="pt")["pixel_values"]
        if self.dtype is not None:
            pixel_values = pixel_values.to(self.dtype)
        text_inputs = self.label_texts(candidate_labels, hypothesis_template)
        # Lists survive batching: every image of a call shares the labels' texts.
        return {
            "pixel_values": pixel_values,
            "text_inputs": [dict(text_inputs)],
            "candidate_labels": [candidate_labels],
            "image": [rgb],
        }

    def label_texts(
        self,
        candidate_labels: Sequence[str],
        hypothesis_template: str = DEFAULT_HYPOTHESIS_TEMPLATE,
    ) -> Any:
        """Each label's text, tokenized (padded): the tokenizer's output.

        Raises:
            ValueError: a text longer than the text encoder's context.
        """
        texts = [hypothesis_template.format(label) for label in candidate_labels]
        text_inputs = self.tokenizer(texts, padding=True, return_tensors="pt")
        lengths = text_inputs["attention_mask"].sum(1)
        if int(lengths.max()) > self.context_length:
            longest = int(lengths.argmax())
            raise ValueError(
                f"The candidate label {candidate_labels[longest]!r} gives a text of "
                f"{int(lengths[longest])} tokens, longer than the text encoder's context of "
                f"{self.context_length}; shorten the label or the hypothesis_template."
            )
        return text_inputs

    def _forward(self, model_inputs: dict[str, Any]) -> dict[str, Any]:
        text_inputs = model_inputs["text_inputs"]
        while isinstance(text_inputs, list):  # un-batched: [dict]; batched: [[dict], ...]
            text_inputs = text_inputs[0]
        outputs = self.model(
            pixel_values=model_inputs["pixel_values"],
            input_ids=text_inputs["input_ids"],
            attention_mask=text_inputs.get("attention_mask"),
        )
        return {
            "logits": outputs.logits_per_image,
            "shapley_values": outputs.shapley_values,
            "base_values": outputs.base_values,
            "candidate_labels": model_inputs["candidate_labels"],
            "image": model_inputs["image"],
        }

    def postprocess(
        self,
        model_outputs: dict[str, Any],
        top_k: int | None = None,
        heatmap: bool = True,
        colormap: Any = "RdBu_r",
        opacity: float = 0.5,
        centered: bool = True,
    ) -> list[dict[str, Any]]:
        logits, phi, base = first_explanation(model_outputs)
        labels, image = model_outputs["candidate_labels"], model_outputs["image"]
        while isinstance(labels[0], list):
            labels = labels[0]
        while isinstance(image, list):
            image = image[0]
        scores = _softmax(logits)
        order = [int(i) for i in np.argsort(-scores, kind="stable")]
        if top_k is not None:
            order = order[:top_k]
        return explanation_entries(
            image,
            logits,
            phi,
            base,
            scores,
            order,
            labels,
            self.players_grid,
            self.image_processor,
            centered=centered,
            heatmap=heatmap,
            colormap=colormap,
            opacity=opacity,
        )


def register_zero_shot_pipeline() -> None:
    """Register the task with transformers (done by ``import hf_shapley``)."""
    from transformers import AutoModelForZeroShotImageClassification
    from transformers.pipelines import PIPELINE_REGISTRY

    PIPELINE_REGISTRY.register_pipeline(
        ZERO_SHOT_PIPELINE_TASK,
        pipeline_class=ZeroShotImageShapleyExplanationPipeline,
        pt_model=AutoModelForZeroShotImageClassification,
        type="multimodal",
    )
