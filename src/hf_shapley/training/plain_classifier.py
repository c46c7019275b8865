"""Train a plain (non-Shapley) image classifier with cross-entropy: the one place that does it.

The main job (``examples/train.py``) pretrains its stock ViT classifier with it before wrapping
it with ``ShapleyForImageClassification.from_backbone``; the faithfulness benchmark continues
that classifier with it for the same number of steps as the Shapley fine-tuning (the plain
baseline at equal optimizer steps).

It runs transformers' ``Trainer`` on a ``datasets.Dataset`` of images and labels, batched by
:class:`~hf_shapley.training.trainer.ShapleyImageCollator` with the given image processor. Not imported
by ``import hf_shapley`` (it loads the Trainer and accelerate)::

    from hf_shapley.training.plain_classifier import train_plain_classifier
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from transformers import EarlyStoppingCallback, PreTrainedModel, TrainingArguments

from ..models.backbones import classifier_tokens_only
from .checkpoint_loading import ConvertedCheckpointLoading
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
    eval_dataset: Any | None = None,
    eval_steps: int = 100,
    early_stopping_patience: int | None = None,
    per_device_eval_batch_size: int = 64,
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
        eval_dataset: held-out images: evaluated every ``eval_steps``; the step with the lowest
            loss is the one kept, and with ``early_stopping_patience`` training stops after that
            many evaluations without improvement.
        per_device_eval_batch_size: batch of those evaluations.

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
    selection = {}
    if eval_dataset is not None:
        selection = dict(
            eval_strategy="steps",
            eval_steps=eval_steps,
            save_strategy="steps",
            save_steps=eval_steps,
            save_total_limit=1,
            load_best_model_at_end=True,
            metric_for_best_model="loss",
            greater_is_better=False,
            per_device_eval_batch_size=per_device_eval_batch_size,
        )
    args = TrainingArguments(
        output_dir=output_dir,
        **length,
        per_device_train_batch_size=per_device_train_batch_size,
        learning_rate=learning_rate,
        weight_decay=weight_decay,
        warmup_steps=warmup_steps,
        lr_scheduler_type=lr_scheduler_type,
        logging_steps=logging_steps,
        **({"save_strategy": "no"} | selection),
        report_to="none",
        seed=seed,
        remove_unused_columns=False,
        dataloader_pin_memory=dataloader_pin_memory,
        use_cpu=use_cpu,
    )
    collator = ShapleyImageCollator(
        image_processor=image_processor, image_column=image_column, label_column=label_column
    )
    callbacks = []
    if eval_dataset is not None and early_stopping_patience:
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=early_stopping_patience))
    trainer = _PlainTrainer(
        model=model,
        args=args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        data_collator=collator,
        callbacks=callbacks,
    )
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
        # The steps taken, the evaluations and the step kept, beside the model.
        trainer.state.save_to_json(os.path.join(output_dir, "trainer_state.json"))
    # Under several processes: every one has loaded the best checkpoint, and none goes on to
    # read the model, before the main one wrote it; then its checkpoints can go.
    trainer.accelerator.wait_for_everyone()
    if trainer.args.should_save:
        for checkpoint in Path(output_dir).glob("checkpoint-*"):
            shutil.rmtree(checkpoint, ignore_errors=True)
    metrics = {**result.metrics, "train_steps": result.global_step}
    if eval_dataset is not None:
        metrics["best_step"] = trainer.state.best_global_step or result.global_step
        metrics["best_eval_loss"] = trainer.state.best_metric
    return model, metrics


class _PlainTrainer(ConvertedCheckpointLoading):
    """``Trainer`` whose best checkpoint loads through ``from_pretrained`` (see
    ``checkpoint_loading``: transformers' own load silently keeps the last ViT weights)."""
