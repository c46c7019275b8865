"""Training a self-explaining dual encoder: ``ShapleyCLIPTrainer`` and its collator.

:class:`ShapleyCLIPTrainer` is :class:`~hf_shapley.ShapleyTrainer` for
:class:`~hf_shapley.ShapleyCLIPModel`: the same keys of the training coalitions (``example_index``,
``epoch``, ``global_step``), the same logging store and checkpoint files, with the pair objective's
components (``contrastive_loss``, ``distill_loss``, ``shapley_loss``) and evaluation metrics for
pairs:

* ``recall_at_1``: the share of images whose own caption scores highest among the batch's
  captions (in-batch retrieval, so it depends on the evaluation batch size);
* ``shapley_regression_proxy``: the per-image normalized residual of the Shapley regression of
  the image's vector game on fixed evaluation coalitions (a proxy, as for the classifier).

Data: examples with an image, a caption and an ``example_index`` column
(:func:`hf_shapley.training.trainer.add_example_index`); :class:`ShapleyCLIPCollator` turns them into
``pixel_values``, ``input_ids``, ``attention_mask``, ``example_index`` and ``return_loss=True``
(text i matches image i).

Launch as for the classifier (``trainer.py``): ``accelerate launch script.py``. The coalitions
are keyed by ``example_index``, not by process, and the Shapley regression is a mean of
per-image terms, as for the classifier. The pair objective's in-batch terms (the contrastive
loss, the distillation of the similarity distribution over the batch's texts, the text-game
regression) and the in-batch evaluation metrics (``eval_loss``, ``recall_at_1``) are computed
over each process's own micro-batch: no embeddings are gathered across processes. A step of N
processes with batch b therefore equals one process accumulating N micro-batches of b
(``gradient_accumulation_steps=N``), not one process with batch N * b, and the contrastive
loss sees b - 1 negatives per image, not N * b - 1 (tests/test_distributed.py checks both
phases of ``examples/train_clip.py`` against such runs). ``per_device_eval_batch_size`` and
the padding of the last evaluation batch across processes change ``recall_at_1``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..models.configuration_shapley_clip import CLIP_OBJECTIVE_SETTINGS, ShapleyCLIPConfig
from .regression_proxy import clip_regression_proxy
from .trainer import EXAMPLE_INDEX_COLUMN, ShapleyTrainer, ShapleyTrainingArguments, _rgb_if_pil

__all__ = ["CLIP_LOSS_COMPONENTS", "ShapleyCLIPCollator", "ShapleyCLIPTrainer"]

CLIP_LOSS_COMPONENTS = ("contrastive_loss", "distill_loss", "shapley_loss")
CLIP_OBJECTIVE_FIELDS = tuple(setting.name for setting in CLIP_OBJECTIVE_SETTINGS)


@dataclass
class ShapleyCLIPCollator:
    """Batches image-caption examples for :class:`ShapleyCLIPTrainer`.

    Returns ``{"pixel_values": (B, C, H, W), "input_ids": (B, L), "attention_mask": (B, L),
    "example_index": (B,), "return_loss": True}`` (``example_index`` only when the examples
    have it). PIL images are converted to 8-bit RGB as the pipelines convert them.

    Args:
        image_processor: e.g. ``CLIPImageProcessor``.
        tokenizer: the text encoder's tokenizer (padding on the right).
        image_column, text_column, index_column: the columns to read.
        max_length: longest caption in tokens; longer ones are truncated (``None``: an error
            from the model for a caption beyond the text encoder's context).
    """

    image_processor: Any
    tokenizer: Any
    image_column: str = "image"
    text_column: str = "caption"
    index_column: str = EXAMPLE_INDEX_COLUMN
    max_length: int | None = None

    def __call__(self, features: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        if not features:
            raise ValueError("ShapleyCLIPCollator got an empty list of examples.")
        first = features[0]
        for column in (self.image_column, self.text_column):
            if column not in first:
                raise ValueError(
                    f"Examples need an {column!r} column (image and caption pairs); got keys "
                    f"{sorted(first)}."
                )
        images = [_rgb_if_pil(f[self.image_column]) for f in features]
        batch: dict[str, Any] = {
            "pixel_values": self.image_processor(images, return_tensors="pt")["pixel_values"]
        }
        text = self.tokenizer(
            [f[self.text_column] for f in features],
            padding=True,
            truncation=self.max_length is not None,
            max_length=self.max_length,
            return_tensors="pt",
        )
        batch["input_ids"] = text["input_ids"]
        batch["attention_mask"] = text["attention_mask"]
        if self.index_column in first:
            batch["example_index"] = torch.as_tensor(
                [int(f[self.index_column]) for f in features], dtype=torch.long
            )
        batch["return_loss"] = True
        return batch


class ShapleyCLIPTrainer(ShapleyTrainer):
    """``ShapleyTrainer`` for :class:`~hf_shapley.ShapleyCLIPModel` (see the module docstring).

    ``args`` may be plain ``TrainingArguments`` or :class:`ShapleyTrainingArguments`; of the
    latter's objective overrides, those the dual encoder's config declares are applied (and
    recorded in ``config.json``), any other one set is an error. Pass a
    :class:`ShapleyCLIPCollator` as ``data_collator``.
    """

    loss_components = CLIP_LOSS_COMPONENTS
    objective_fields = CLIP_OBJECTIVE_FIELDS
    regression_proxy = staticmethod(clip_regression_proxy)

    def __init__(self, model: nn.Module | None = None, args=None, *a, **kw):
        if kw.get("data_collator") is None and len(a) == 0:
            raise ValueError(
                "ShapleyCLIPTrainer needs a data_collator that tokenizes the captions: "
                "data_collator=ShapleyCLIPCollator(image_processor, tokenizer)."
            )
        super().__init__(model, args, *a, **kw)

    def _shapley_model(self, model: nn.Module | None = None) -> nn.Module:
        unwrapped = self.accelerator.unwrap_model(model if model is not None else self.model)
        config = getattr(unwrapped, "config", None)
        if getattr(config, "model_type", None) != ShapleyCLIPConfig.model_type:
            raise TypeError(
                "ShapleyCLIPTrainer trains a ShapleyCLIPModel (a model whose config is a "
                f"ShapleyCLIPConfig); got {type(unwrapped).__name__}."
            )
        return unwrapped

    def _apply_overrides(self, model: nn.Module) -> None:
        config = self._shapley_model(model).config
        overrides = (
            self.args.shapley_overrides() if isinstance(self.args, ShapleyTrainingArguments) else {}
        )
        unknown = sorted(set(overrides) - set(CLIP_OBJECTIVE_FIELDS))
        if unknown:
            raise ValueError(
                f"{unknown} are not settings of the dual encoder's objective; it has "
                f"{CLIP_OBJECTIVE_FIELDS}. Leave the others unset."
            )
        previous = {name: getattr(config, name) for name in overrides}
        for name, value in overrides.items():
            setattr(config, name, value)
        try:
            config.validate_shapley_options()
        except ValueError:
            for name, value in previous.items():
                setattr(config, name, value)
            raise

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        """The model's own loss: the pair objective in training mode, the contrastive loss in
        eval mode; training batches must carry ``example_index``."""
        unwrapped = self._shapley_model(model)
        if unwrapped.training and inputs.get("example_index") is None:
            raise ValueError(
                "ShapleyCLIPTrainer needs an 'example_index' in every training batch: the "
                "coalitions are keyed by it. Add the column with "
                "hf_shapley.training.trainer.add_example_index(dataset)."
            )
        return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        # Predictions are logits_per_image; its transpose need not be gathered twice.
        config = getattr(self.accelerator.unwrap_model(self.model), "config", None)
        keys = list(ignore_keys or getattr(config, "keys_to_ignore_at_inference", None) or [])
        return super().prediction_step(
            model, inputs, prediction_loss_only, ignore_keys=[*keys, "logits_per_text"]
        )

    def _flush_eval_metrics(self, metrics: dict[str, Any], prefix: str) -> None:
        store = self._metrics["eval"]
        if store["paired"] > 0:
            metrics[f"{prefix}_recall_at_1"] = store["retrieved"] / store["paired"]
        if store["explained"] > 0:
            metrics[f"{prefix}_shapley_regression_proxy"] = store["proxy"] / store["explained"]
        store.clear()

    def _store_prediction_metrics(self, store, inputs: dict[str, Any], outputs: Any) -> None:
        logits = outputs["logits_per_image"]  # (B, B): image i matches text i
        retrieved = (logits.argmax(-1) == torch.arange(len(logits), device=logits.device)).float()
        retrieved = self.accelerator.gather_for_metrics(retrieved)
        store["retrieved"] += float(retrieved.sum())
        store["paired"] += retrieved.numel()
