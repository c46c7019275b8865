"""Train a plain (non-Shapley) image classifier with cross-entropy: the one place that does it.

The main job (``examples/train.py``) pretrains its stock ViT classifier with it before wrapping
it with ``ShapleyForImageClassification.from_backbone``; the faithfulness benchmark continues
that classifier with it for the same number of steps as the Shapley fine-tuning (the plain
baseline at equal optimizer steps).

It runs transformers' ``Trainer`` on a ``datasets.Dataset`` of images and labels, batched by
:class:`~hf_shapley.trainer.ShapleyImageCollator` with the given image processor. Not imported
by ``import hf_shapley`` (it loads the Trainer and accelerate)::

    from hf_shapley.plain_classifier import train_plain_classifier
"""

from __future__ import annotations

import logging
import os
from typing import Any

import torch
from transformers import PreTrainedModel, Trainer, TrainingArguments

from .backbones import classifier_tokens_only
from .trainer import ShapleyImageCollator

logger = logging.getLogger(__name__)

__all__ = ["train_plain_classifier"]


def train_plain_classifier(
    model: PreTrainedModel,
    train_dataset: Any,
    *,
    image_processor: Any,
    output_dir: str | os.PathLike,
    num_train_epochs: float | None = None,
    max_steps: int | None = None,
    per_device_train_batch_size: int,
    learning_rate: float,
    weight_decay: float,
    warmup_steps: int,
    lr_scheduler_type: str,
    seed: int,
    logging_steps: int = 10,
    image_column: str = "image",
    label_column: str = "label",
    dataloader_pin_memory: bool | None = None,
    use_cpu: bool = False,
) -> tuple[PreTrainedModel, dict[str, Any]]:
    """Train ``model`` with its own cross-entropy loss and save it with ``image_processor``.

    Args:
        model: an image classifier that returns ``loss`` when given ``labels`` (e.g.
            ``ViTForImageClassification``), freshly built or loaded; it is trained in place.
        train_dataset: a ``datasets.Dataset`` (or a map-style data set of dicts) with an image
            column and an integer label column.
        image_processor: turns the images into ``pixel_values``; saved beside the model.
        output_dir: where the Trainer works and the trained model and processor are saved.
        num_train_epochs: train this many epochs; or
        max_steps: this many optimizer steps (exactly one of the two).
        per_device_train_batch_size, learning_rate, weight_decay, warmup_steps,
            lr_scheduler_type, seed, logging_steps: the ``TrainingArguments`` of that name
            (AdamW, gradients clipped at the Trainer's default norm 1.0).
        image_column, label_column: the columns of ``train_dataset``.
        dataloader_pin_memory: default: when CUDA is available.
        use_cpu: train on the CPU even when an accelerator is available.

    Returns:
        ``(model, metrics)``: the trained model (in training mode, on the Trainer's device) and
        the Trainer's training metrics (``train_loss``, ``train_runtime``...) with
        ``train_steps``, the optimizer steps taken.
    """
    if (num_train_epochs is None) == (max_steps is None):
        raise ValueError("Pass exactly one of num_train_epochs and max_steps.")
    length = (
        {"num_train_epochs": num_train_epochs} if max_steps is None else {"max_steps": max_steps}
    )
    if dataloader_pin_memory is None:
        dataloader_pin_memory = torch.cuda.is_available()
    output_dir = os.fspath(output_dir)
    args = TrainingArguments(
        output_dir=output_dir,
        **length,
        per_device_train_batch_size=per_device_train_batch_size,
        learning_rate=learning_rate,
        weight_decay=weight_decay,
        warmup_steps=warmup_steps,
        lr_scheduler_type=lr_scheduler_type,
        logging_steps=logging_steps,
        save_strategy="no",
        report_to="none",
        seed=seed,
        remove_unused_columns=False,
        dataloader_pin_memory=dataloader_pin_memory,
        use_cpu=use_cpu,
    )
    collator = ShapleyImageCollator(
        image_processor=image_processor, image_column=image_column, label_column=label_column
    )
    trainer = Trainer(model=model, args=args, train_dataset=train_dataset, data_collator=collator)
    logger.info(
        "Training a plain %s with cross-entropy for %s.",
        type(model).__name__,
        f"{max_steps} steps" if max_steps is not None else f"{num_train_epochs} epochs",
    )
    # The head reads the special tokens alone: the last block skips the patch tokens.
    with classifier_tokens_only(trainer.model):
        result = trainer.train()
    trainer.save_model(output_dir)
    if trainer.args.should_save:
        image_processor.save_pretrained(output_dir)
    return model, {**result.metrics, "train_steps": result.global_step}
