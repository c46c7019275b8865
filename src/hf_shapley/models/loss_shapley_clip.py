"""The training loss of :class:`~hf_shapley.models.modeling_shapley_clip.ShapleyCLIPModel`.

``ShapleyCLIPModel.forward`` in training mode with ``return_loss=True`` calls
``model.loss_function``, a :class:`ShapleyCLIPTrainingLoss`, as the classifier calls its
:class:`~hf_shapley.models.loss_shapley.ShapleyTrainingLoss`: it asks the model's game for the
passes the objective needs (the full pass, masked distillation passes, the Shapley kernel's
coalitions) and hands the tensors to :func:`~hf_shapley.models.objective_clip.clip_joint_objective`,
a pure function of them.

This file is shipped as remote code: relative imports only, and nothing from the training side.
"""

from __future__ import annotations

import torch
from torch import nn

from .coalitions import sample_complementary_pairs, sample_shapley_kernel_coalitions
from .loss_shapley import TrainingStepKeys
from .objective import loss_weight_schedule
from .objective_clip import clip_joint_objective


class ShapleyCLIPTrainingLoss(TrainingStepKeys):
    """The joint objective of one training step of the dual encoder (``model.loss_function``)."""

    def __call__(
        self,
        model: nn.Module,
        pixel_values: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None,
        example_index: torch.Tensor | None,
        epoch: int | None,
        global_step: int | None,
    ):
        """One training step of ``model`` (a ``ShapleyCLIPModel``) on B matching pairs (text i
        describes image i): a ``ShapleyCLIPOutput`` with the loss and its components.

        Coalitions are a pure function of ``(config.coalition_seed, epoch, example index,
        coalition index)``; without example indices a counter of training calls stands in.
        """
        # The model's file imports this one: its classes are looked up when a step runs.
        from .modeling_shapley_clip import ShapleyCLIPImageExplanation

        config, game, readout = model.config, model.game, model.readout
        P, B = game.num_players, pixel_values.shape[0]
        if input_ids.shape[0] != B:
            raise ValueError(
                f"training takes one matching text per image: {B} images but {input_ids.shape[0]} "
                "texts (input_ids rows)."
            )
        step, example_index, epoch = self.step_keys(global_step, example_index, epoch, B)
        warm = loss_weight_schedule(step, config.loss_warmup_steps)
        train_clip = config.train_clip
        alpha = config.distill_loss_weight * warm if train_clip else 0.0
        lam = config.shapley_loss_weight * warm
        device = pixel_values.device

        context = game.prepare(pixel_values)
        image = game.explain(context, readout)
        text = model.get_text_embeds(input_ids, attention_mask)
        out = model.explain_texts(
            ShapleyCLIPImageExplanation(
                image_embeds=image.image_embeds,
                image_vectors=image.logits,
                image_shapley_vectors=image.shapley_values,
                image_base_vector=image.base_values,
            ),
            text,
        )

        masked_logits = None
        g = config.num_distill_coalitions
        if g > 0 and alpha > 0:
            masks = sample_complementary_pairs(
                P,
                g,
                seed=config.coalition_seed,
                epoch=epoch,
                example_indices=example_index,
                device=device,
            )
            masked_logits = game.values(context, masks, readout) @ text.t()  # (B, g, B)

        coalitions = vectors = None
        m = config.num_shapley_coalitions
        if m > 0 and lam > 0:
            coalitions = sample_shapley_kernel_coalitions(
                P,
                m,
                seed=config.coalition_seed + 1,
                epoch=epoch,
                example_indices=example_index,
                device=device,
            )
            grad_targets = not config.shapley_stop_gradient
            with torch.set_grad_enabled(grad_targets and torch.is_grad_enabled()):
                vectors = game.values(
                    context if grad_targets else context.detach(),
                    coalitions,
                    readout,
                    dropout=False,
                )

        losses = clip_joint_objective(
            out.logits_per_image,
            contrastive_weight=config.contrastive_loss_weight if train_clip else 0.0,
            alpha=alpha,
            lam=lam,
            text_lam=config.text_shapley_loss_weight,
            masked_logits_per_image=masked_logits,
            shapley_vectors=out.image_shapley_vectors,
            base_vector=out.image_base_vector,
            coalitions=coalitions,
            coalition_vectors=vectors,
            text_embeds=text,
            stop_gradient=config.shapley_stop_gradient,
            normalization=config.shapley_loss_normalization,
        )
        out.loss = losses.loss
        out.contrastive_loss = losses.contrastive_loss
        out.distill_loss = losses.distill_loss
        out.shapley_loss = losses.shapley_loss
        return out
