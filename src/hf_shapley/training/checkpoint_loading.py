"""Checkpoints loaded through ``from_pretrained``, for every trainer of the package.

transformers 5.24's ``save_pretrained`` writes checkpoints in the original (Hub) key format
(e.g. ViT's ``encoder.layer.0.attention.attention.query`` for ``layers.0.attention.q_proj``),
but ``Trainer._load_from_checkpoint`` and ``Trainer._load_best_model`` read them back with a
raw, non-strict ``load_state_dict``: resuming, or loading the best model at the end, silently
keeps the current weights and only warns (huggingface/transformers#48805, #43701). Loading
through ``from_pretrained`` applies the key conversion; the load then insists on an exact match.
"""

from __future__ import annotations

import os

from torch import nn
from transformers import Trainer
from transformers.utils import logging

logger = logging.get_logger(__name__)


class ConvertedCheckpointLoading(Trainer):
    """A ``Trainer`` whose resumed and best checkpoints load through ``from_pretrained``.

    The overrides are of private ``Trainer`` methods, the only place both loads happen;
    DeepSpeed, FSDP and PEFT models keep the ``Trainer``'s own loading.
    """

    def _plain_checkpoint_load(self) -> bool:
        return not (
            self.is_deepspeed_enabled
            or self.is_fsdp_enabled
            or getattr(self, "is_fsdp_xla_enabled", False)
            or getattr(self.model, "peft_config", None) is not None
        )

    def _load_converted_weights(self, checkpoint: str, model: nn.Module | None = None) -> None:
        target = self.accelerator.unwrap_model(model if model is not None else self.model)
        loaded = type(target).from_pretrained(checkpoint, dtype=next(target.parameters()).dtype)
        target.load_state_dict(loaded.state_dict(), strict=True)
        del loaded

    def _load_from_checkpoint(
        self, resume_from_checkpoint: str, model: nn.Module | None = None
    ) -> None:
        if self._plain_checkpoint_load() and os.path.isfile(
            os.path.join(resume_from_checkpoint, "config.json")
        ):
            logger.info(f"Loading model from {resume_from_checkpoint} (with key conversion).")
            self._load_converted_weights(resume_from_checkpoint, model)
            return
        super()._load_from_checkpoint(resume_from_checkpoint, model)

    def _load_best_model(self) -> None:
        best = self.state.best_model_checkpoint
        if self._plain_checkpoint_load() and os.path.isfile(os.path.join(best, "config.json")):
            logger.info(f"Loading best model from {best} (score: {self.state.best_metric}).")
            self._load_converted_weights(best)
            return
        super()._load_best_model()
