"""The training loss of :class:`~hf_shapley.models.modeling_shapley.ShapleyForImageClassification`.

``ShapleyForImageClassification.forward`` in training mode calls ``model.loss_function``, a
:class:`ShapleyTrainingLoss`, as transformers' models call theirs. It assembles one training
step: it asks the model's game for the passes the objective needs (the full pass, masked
distillation passes, the Shapley kernel's coalitions, kept per example for a frozen classifier)
and hands the tensors to :func:`~hf_shapley.models.objective.joint_objective`, a pure function of them.

This file is shipped as remote code: relative imports only, and nothing from the training side.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from .coalitions import sample_complementary_pairs, sample_shapley_kernel_coalitions
from .objective import explained_class_indices, joint_objective, loss_weights


def frozen_game_precision(
    model: nn.Module, device: torch.device
) -> contextlib.AbstractContextManager:
    """bf16 autocast for a frozen classifier's training passes when the config asks for it."""
    if model.config.frozen_game_dtype == "float32" or not model._frozen_classifier():
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=getattr(torch, model.config.frozen_game_dtype))


class TrainingStepKeys:
    """What keys a training step's coalitions and loss warm-up: the given example indices,
    epoch and optimizer step, or, in a plain loop that passes none, a count of training calls
    (reproducible in one process, not across resumes)."""

    def __init__(self) -> None:
        self.training_calls = 0

    def step_keys(
        self,
        global_step: int | None,
        example_index: torch.Tensor | None,
        epoch: int | None,
        batch_size: int,
    ) -> tuple[int, torch.Tensor, int]:
        """``(step, example indices on the CPU, epoch)`` of this training call."""
        step = global_step if global_step is not None else self.training_calls
        self.training_calls += 1
        if example_index is None:
            example_index = torch.arange(batch_size) + self.training_calls * batch_size
        return step, example_index.detach().cpu(), int(epoch or 0)


class ShapleyTrainingLoss(TrainingStepKeys):
    """The joint objective of one training step (``model.loss_function``)."""

    def __call__(
        self,
        model: nn.Module,
        pixel_values: torch.Tensor,
        labels: torch.Tensor,
        example_index: torch.Tensor | None,
        epoch: int | None,
        global_step: int | None,
    ):
        """One training step of ``model`` (a ``ShapleyForImageClassification``): a
        ``ShapleyImageClassifierOutput`` with the loss, its components, the logits and values.

        Coalitions are a pure function of ``(config.coalition_seed, epoch, example index,
        coalition index)``; without example indices a counter of training calls stands in
        (reproducible in one process, not across resumes).
        """
        # The model's file imports this one: its classes are looked up when a step runs.
        from .modeling_shapley import PlayerVotesReadout, ShapleyImageClassifierOutput

        config, game, readout = model.config, model.game, model.readout
        P, B = game.num_players, pixel_values.shape[0]
        indices_given = example_index is not None
        step, example_index, epoch = self.step_keys(global_step, example_index, epoch, B)
        alpha, lam, beta = loss_weights(config, step)
        device = pixel_values.device
        # A frozen game's values are kept per example; its coalitions must then not change with
        # the epoch. Counter indices (no example_index given) are no key to keep values under.
        reuse = config.reuse_shapley_coalitions and indices_given

        # A frozen classifier's passes train nothing: with frozen_game_dtype="bfloat16" they
        # run under autocast (the head keeps itself in fp32; see ShapleyHead).
        game_precision = frozen_game_precision(model, device)
        # A frozen classifier's full pass is the same in every epoch: a kept one serves the
        # head without the backbone (the coalition values below are kept alike).
        keep_pass = reuse and not readout.head_gradients
        kept_pass = model.full_pass_cache.get(example_index, device) if keep_pass else None
        context = None
        if kept_pass is not None:
            out = readout.explain_features(*kept_pass, game.player_sum)
        else:
            with game_precision:
                context = game.prepare(pixel_values)
                out = game.explain(context, readout)
            if keep_pass:
                model.full_pass_cache.put(
                    example_index, out.head_features, out.logits, out.base_values
                )

        masked_logits = masked_votes = masks = full_votes = None
        g = config.num_distill_coalitions
        if g > 0 and (alpha > 0 or beta > 0) and not model._frozen_classifier():
            masks = sample_complementary_pairs(
                P,
                g,
                seed=config.coalition_seed,
                epoch=epoch,
                example_indices=example_index,
                device=device,
            )
            if beta > 0:
                # Who cast which votes on the same passes: the logits are their sum.
                votes = game.values(context, masks, PlayerVotesReadout(readout, game.player_sum))
                masked_votes = votes.reshape(B, g, P, -1)
                masked_logits = readout.bias.float() + masked_votes.sum(2)
                # r_i(x): phi_i plus its share of the empty coalition's votes (0 with token removal).
                full_votes = (
                    out.shapley_values + (out.base_values - readout.bias.float())[:, None] / P
                )
            else:
                masked_logits = game.values(context, masks, readout)

        coalitions = values = classes = None
        m = config.num_shapley_coalitions
        if m > 0 and lam > 0:
            coalitions = sample_shapley_kernel_coalitions(
                P,
                m,
                seed=config.coalition_seed + 1,
                epoch=0 if reuse else epoch,
                example_indices=example_index,
                device=device,
            )
            grad_targets = not config.shapley_stop_gradient
            values = model.coalition_value_cache.get(example_index, m) if reuse else None
            if values is not None:
                values = values.to(device)
            else:
                if context is None:  # the full pass was kept, these values were not
                    with game_precision:
                        context = game.prepare(pixel_values)
                with torch.set_grad_enabled(grad_targets), game_precision:
                    values = game.values(
                        context if grad_targets else context.detach(),
                        coalitions,
                        readout,
                        dropout=False,
                    )
                if reuse:
                    model.coalition_value_cache.put(example_index, values)
            generator = torch.Generator().manual_seed(
                int(config.coalition_seed * 1_000_003 + epoch * 7_919 + int(example_index[0]))
            )
            classes = explained_class_indices(
                out.logits,
                labels,
                config.explained_classes,
                config.num_explained_classes,
                generator,
            )

        losses = joint_objective(
            out.logits,
            labels,
            alpha=alpha,
            lam=lam,
            masked_logits=masked_logits,
            shapley_values=out.shapley_values,
            base_values=out.base_values,
            coalitions=coalitions,
            coalition_values=values,
            explained_classes=classes,
            stop_gradient=config.shapley_stop_gradient,
            normalization=config.shapley_loss_normalization,
            center=config.center_logits,
            beta=beta,
            full_votes=full_votes,
            masked_votes=masked_votes,
            distill_coalitions=masks,
        )
        return ShapleyImageClassifierOutput(
            loss=losses.loss,
            logits=out.logits,
            shapley_values=out.shapley_values,
            base_values=out.base_values,
            cls_loss=losses.cls_loss,
            distill_loss=losses.distill_loss,
            shapley_loss=losses.shapley_loss,
            consistency_loss=losses.consistency_loss,
        )


__all__ = ["ShapleyTrainingLoss", "frozen_game_precision"]
