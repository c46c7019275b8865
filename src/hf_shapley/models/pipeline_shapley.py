"""The ``image-shapley-explanation`` pipeline: predictions with their Shapley explanations.

>>> import hf_shapley  # registers the task
>>> from transformers import pipeline
>>> explainer = pipeline("image-shapley-explanation", model="path/or/hub-id")
>>> explainer("cat.jpg", top_k=3)[0]["heatmap"].save("cat_explained.png")

One forward pass of a :class:`~hf_shapley.ShapleyForImageClassification` gives both the logits
and the per-player Shapley values, so an explanation costs what a classification costs; the
heatmaps are drawn afterwards on the CPU.

Batches: ``batch_size > 1`` runs several images through the model at once and gives the same
results as one at a time. If any input of a list cannot be read (missing, corrupt or non-image
file, failed download), the whole call raises an error naming that input and returns nothing
for the others: check inputs first (``hf_shapley.models.image_loading.load_rgb_image``) or use
``examples/explain.py``, which skips unreadable files with a warning.

This file is shipped as remote code (saved beside the model): relative imports only.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from transformers import Pipeline

from .configuration_shapley import PIPELINE_TASK
from .heatmap import overlay_heatmap
from .image_loading import load_rgb_image

DEFAULT_TOP_K = 5

__all__ = ["DEFAULT_TOP_K", "PIPELINE_TASK", "ImageShapleyExplanationPipeline"]


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max()
    exp = np.exp(shifted)
    return exp / exp.sum()


def _sigmoid(logits: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-logits))


def first_explanation(model_outputs: dict[str, Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The one image's ``(logits (K,), shapley_values (P, K), base_values (K,))`` in float64."""
    return tuple(
        model_outputs[key][0].detach().float().numpy().astype(np.float64)
        for key in ("logits", "shapley_values", "base_values")
    )


def explanation_entries(
    image: Any,
    logits: np.ndarray,
    phi: np.ndarray,
    base: np.ndarray,
    scores: np.ndarray,
    label_ids: Sequence[int],
    label_names: Sequence[str],
    players_grid: Sequence[int],
    image_processor: Any,
    *,
    centered: bool,
    heatmap: bool,
    colormap: Any,
    opacity: float,
) -> list[dict[str, Any]]:
    """One result entry per label id (the format of both explanation pipelines): ``logits``
    (K,), ``phi`` (P, K), ``base`` (K,), ``scores`` (K,) of one image."""
    if centered:  # linear in the logits: the efficiency identity still holds
        logits = logits - logits.mean()
        base = base - base.mean()
        phi = phi - phi.mean(axis=1, keepdims=True)
    h, w = players_grid
    results = []
    for k in label_ids:
        grid = phi[:, k].reshape(h, w)
        entry = {
            "label": label_names[k],
            "label_id": k,
            "score": float(scores[k]),
            "explained": "centered_logit" if centered else "logit",
            "logit": float(logits[k]),
            "base_value": float(base[k]),
            "attributions": grid.tolist(),
            "efficiency_residual": float(logits[k] - base[k] - phi[:, k].sum()),
        }
        if heatmap:
            entry["heatmap"] = overlay_heatmap(
                image, grid, image_processor, cmap=colormap, alpha=opacity
            )
        results.append(entry)
    return results


class ImageShapleyExplanationPipeline(Pipeline):
    r"""Classify images and explain each predicted label by per-player Shapley values.

    Works with any :class:`~hf_shapley.ShapleyForImageClassification` (by Hub id, local
    directory or model object). Call it with a path, an http(s) URL, a ``PIL.Image`` or a list
    of them.

    Call options:
        top_k (`int`, defaults to 5): Explain the ``top_k`` most probable labels (capped at the
            number of labels).
        targets (`str`, `int` or a list of them): Explain these labels instead, by name
            (``config.id2label`` values) or id, in the order given. Cannot be combined with
            ``top_k``.
        heatmap (`bool`, defaults to `True`): Draw a heatmap per explained label.
        colormap (`str` or matplotlib ``Colormap``, defaults to ``"RdBu_r"``): Diverging map
            centered on 0 (red = evidence for the label, blue = against). Names other than
            ``RdBu_r``/``RdBu`` need matplotlib.
        opacity (`float`, defaults to 0.5): Weight of the colours over the image, in [0, 1].
        centered (`bool`): Explain the class-centered logit (the logit minus its mean over the
            classes), the part softmax sees: a shift shared by every class changes no
            probability, so it tells nothing about why one class and not another. Defaults to
            `True` for single-label (softmax) models and `False` for multi-label (sigmoid) ones,
            whose logits are not shift-invariant. `False` explains the raw logit.
        timeout (`float`): Seconds to wait for a URL.
        batch_size (`int`): Images per forward pass (the standard pipeline option).

    Returns:
        For one image, a list with one dict per explained label (most probable first for
        ``top_k``; in the requested order for ``targets``); for a list of images, a list of such
        lists. Each dict holds:

        - ``label`` (`str`) and ``label_id`` (`int`),
        - ``score`` (`float`): probability (softmax; sigmoid for multi-label models),
        - ``explained`` (`str`): ``"centered_logit"`` or ``"logit"``, the quantity that
          ``logit``, ``base_value`` and ``attributions`` describe,
        - ``logit`` (`float`) and ``base_value`` (`float`): the explained quantity of the full
          image and of ``v(empty)`` (each minus its mean over classes when centered),
        - ``attributions`` (``h x w`` nested list of floats): one Shapley value per player
          (centered: minus its mean over classes), laid out as the players grid over the image
          the model saw,
        - ``efficiency_residual`` (`float`): ``logit - base_value - sum(attributions)``, zero up
          to float rounding for a faithful additive explanation (centering keeps the identity:
          it is linear),
        - ``heatmap`` (``PIL.Image``, only with ``heatmap=True``): the attributions overlaid on
          the input at its original size, the processor's resize and crop inverted.

        Everything except ``heatmap`` is JSON-serializable.
    """

    _load_processor = False
    _load_image_processor = True
    _load_feature_extractor = False
    _load_tokenizer = False

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        config = self.model.config
        # Checked by model_type, not isinstance: a model loaded as remote code has its own class.
        if getattr(config, "model_type", None) != "shapley":
            raise ValueError(
                f"The {PIPELINE_TASK!r} pipeline needs a ShapleyForImageClassification model; got "
                f"{type(self.model).__name__} (model_type={getattr(config, 'model_type', None)!r}). "
                "Wrap a classifier first: ShapleyForImageClassification.from_backbone(model_id, "
                "num_labels=...) and train it (examples/train.py), or use "
                "pipeline('image-classification') for predictions without explanations."
            )
        if self.image_processor is None:
            raise ValueError(
                "This model has no image processor: pass image_processor=... to pipeline(), or "
                "save one beside the model (model.image_processor = processor; model.save_pretrained)."
            )
        self.players_grid = tuple(int(s) for s in config.players_grid)

    # ------------------------------------------------------------------ parameters
    def _sanitize_parameters(
        self,
        top_k: int | None = None,
        targets: int | str | Sequence[int | str] | None = None,
        heatmap: bool | None = None,
        colormap: Any = None,
        opacity: float | None = None,
        timeout: float | None = None,
        centered: bool | None = None,
    ) -> tuple[dict, dict, dict]:
        preprocess: dict[str, Any] = {}
        if timeout is not None:
            preprocess["timeout"] = timeout
        postprocess: dict[str, Any] = {}
        if top_k is not None and targets is not None:
            raise ValueError(
                "Pass either top_k (explain the most probable labels) or targets (explain these "
                "labels), not both."
            )
        if top_k is not None:
            if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
                raise ValueError(f"top_k must be a positive integer; got {top_k!r}.")
            postprocess["top_k"] = top_k
            postprocess["targets"] = None
        if targets is not None:
            postprocess["targets"] = self._resolve_targets(targets)
            postprocess["top_k"] = None
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

    def _resolve_targets(self, targets: int | str | Sequence[int | str]) -> list[int]:
        """Label names or ids -> ids, with an error listing the valid labels."""
        id2label = {int(k): str(v) for k, v in self.model.config.id2label.items()}
        label2id = {name: k for k, name in id2label.items()}
        items = [targets] if isinstance(targets, (int, str)) else list(targets)
        if not items:
            raise ValueError("targets is empty: name at least one label to explain.")
        ids = []
        for item in items:
            if isinstance(item, (int, np.integer)) and not isinstance(item, bool):
                if int(item) not in id2label:
                    raise ValueError(
                        f"Unknown target label id {item}: this model has ids 0..{len(id2label) - 1}."
                    )
                ids.append(int(item))
            elif isinstance(item, str) and item in label2id:
                ids.append(label2id[item])
            else:
                known = sorted(label2id)
                shown = ", ".join(repr(n) for n in known[:20]) + (" ..." if len(known) > 20 else "")
                raise ValueError(
                    f"Unknown target label {item!r}. Pass a label name from the model's "
                    f"config.id2label ({shown}) or an integer id."
                )
        return ids

    # ------------------------------------------------------------------ running
    def __call__(self, inputs: Any = None, **kwargs: Any) -> Any:
        """Explain one image or a list of images; see the class docstring for options."""
        if "images" in kwargs:
            inputs = kwargs.pop("images")
        if inputs is None:
            raise ValueError(
                f"Call the {PIPELINE_TASK!r} pipeline with an image or a list of images."
            )
        if isinstance(inputs, tuple):
            inputs = list(inputs)
        if isinstance(inputs, list) and not inputs:
            raise ValueError("The list of images is empty: pass at least one image.")
        return super().__call__(inputs, **kwargs)

    def preprocess(self, image: Any, timeout: float | None = None) -> dict[str, Any]:
        rgb = load_rgb_image(image, timeout=timeout)
        pixel_values = self.image_processor(images=rgb, return_tensors="pt")["pixel_values"]
        if self.dtype is not None:
            pixel_values = pixel_values.to(self.dtype)
        # The image rides along (a list entry survives batching and un-batching) for the heatmap.
        return {"pixel_values": pixel_values, "image": [rgb]}

    def _forward(self, model_inputs: dict[str, Any]) -> dict[str, Any]:
        outputs = self.model(pixel_values=model_inputs["pixel_values"])
        # Batch-first tensors (and the image list) only: the pipeline splits a batch by index.
        return {
            "logits": outputs.logits,
            "shapley_values": outputs.shapley_values,
            "base_values": outputs.base_values,
            "image": model_inputs["image"],
        }

    def _multi_label(self) -> bool:
        config = self.model.config
        return config.problem_type == "multi_label_classification" or config.num_labels == 1

    def _scores(self, logits: np.ndarray) -> np.ndarray:
        return _sigmoid(logits) if self._multi_label() else _softmax(logits)

    def postprocess(
        self,
        model_outputs: dict[str, Any],
        top_k: int | None = DEFAULT_TOP_K,
        targets: list[int] | None = None,
        heatmap: bool = True,
        colormap: Any = "RdBu_r",
        opacity: float = 0.5,
        centered: bool | None = None,
    ) -> list[dict[str, Any]]:
        logits, phi, base = first_explanation(model_outputs)
        image = model_outputs["image"]
        while isinstance(image, list):  # one image per example, un-batched or not
            image = image[0]
        scores = self._scores(logits)
        if centered is None:
            centered = not self._multi_label()
        if targets is None:
            k = min(top_k or DEFAULT_TOP_K, len(logits))
            # Stable sort: equal scores keep label order, so batched and single runs agree.
            label_ids = [int(i) for i in np.argsort(-scores, kind="stable")[:k]]
        else:
            label_ids = list(targets)
        id2label = self.model.config.id2label
        return explanation_entries(
            image,
            logits,
            phi,
            base,
            scores,
            label_ids,
            [str(id2label[k]) for k in range(len(logits))],
            self.players_grid,
            self.image_processor,
            centered=centered,
            heatmap=heatmap,
            colormap=colormap,
            opacity=opacity,
        )


def register_pipeline() -> None:
    """Register the task with transformers (done by ``import hf_shapley``)."""
    from transformers import AutoModelForImageClassification
    from transformers.pipelines import PIPELINE_REGISTRY

    PIPELINE_REGISTRY.register_pipeline(
        PIPELINE_TASK,
        pipeline_class=ImageShapleyExplanationPipeline,
        pt_model=AutoModelForImageClassification,
        type="image",
    )
