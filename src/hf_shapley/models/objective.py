"""The joint training objective: accurate AND faithful.

    loss = CE(logits, y) + alpha * distill + lambda * shapley + beta * consistency

* ``CE``: cross-entropy of the full-image prediction (soft voting: ``b + sum_i phi_i``).
* ``distill`` (the self-surrogate): the model on ``g`` coalitions per image, whose sizes are
  uniformly distributed, is distilled towards its own detached full-image prediction
  (KL(p(x) || p(x_S))). This teaches the model to predict on partial images, so that its
  value function ``v_x(S) = model(x, coalition=S)`` is meaningful. A KL-trained surrogate
  approaches E[p(x) | x_S]: the game in logit space is log E[p | x_S].
* ``shapley``: the Shapley regression. Per image, ``m`` coalitions drawn from the Shapley
  kernel in complementary pairs; residual ``e_S = sg[v(S) - v(empty)] - sum_{i in S} phi_i``.
  The minimizer of the kernel-weighted least squares under efficiency is the Shapley value;
  sampling S from the kernel turns the weighting into a plain mean.

* ``consistency`` (soft voting, off by default): each player's full-image vote ``r_i(x)``, which
  the model reports as its value, is pulled towards its detached votes ``r_i(x_S)`` on the
  distillation coalitions that contain it. Why: with soft voting the true value of player i is
  the worth of its own vote over contexts PLUS its influence on the others' votes
  (``evaluation/influence.py``); a background player that reads the object through attention
  casts votes the object causes. The pull removes from a full-image vote what the player only
  reads from others. Only the full-image side gets gradients: pulling masked votes towards the
  full ones teaches background to vote for the class without the object (the game goes flat).

Why the regression is normalized per image: phi and v come from the same head, so phi = 0
makes an unnormalized loss (and its targets) zero; on raw logits the regression pulls the
logit scale towards zero and only cross-entropy resists. Dividing each image's mean squared
residual by ``sg[mean (v(S) - v(empty))^2] + eps`` keeps each image's optimum, makes the
loss scale-free, and (unlike a batch variance) gives identical gradients under gradient
accumulation and across processes.

Stop-gradient does not freeze the game: the network that gives phi also gives v, so
faithfulness is a property of the final checkpoint, measured by the evaluation, and the
training-time regression error is only a proxy.

Everything here is a pure function of tensors, as transformers' losses are: the model
(``ShapleyForImageClassification.forward`` in training mode with labels) asks its game for the
values these functions need and hands them over, so the stock Trainer, a plain Accelerate loop
and DDP see one forward per step. The coalitions are drawn by ``coalitions.py``.

This file is shipped as remote code: relative imports only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

# Added to the per-image normalizer: targets are logit differences, O(1) once trained.
NORMALIZATION_EPS = 1e-4


def loss_weight_schedule(step: int, warmup_steps: int) -> float:
    """Linear warm-up factor in [0, 1] for alpha and lambda (early on, the teacher is noise)."""
    if warmup_steps <= 0:
        return 1.0
    return min(1.0, (step + 1) / warmup_steps)


def shapley_regression_loss(
    phi: torch.Tensor,
    coalitions: torch.Tensor,
    targets: torch.Tensor,
    *,
    normalization: str = "per_image",
    center: bool = False,
    classes: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean (normalized) squared residual of ``targets - coalitions @ phi``.

    Args:
        phi: (B, P, K) Shapley values.
        coalitions: (B, M, P) bool, the sampled coalitions S.
        targets: (B, M, K), ``v(S) - v(empty)`` (detached by the caller if wanted).
        normalization: ``"per_image"`` or ``"none"`` (see the module docstring).
        center: subtract the mean over classes from both sides (explain centered logits).
        classes: (B, C) long, the classes to regress per image; ``None`` = all.

    Returns:
        Scalar loss.
    """
    predicted = torch.einsum("bmp,bpk->bmk", coalitions.to(phi.dtype), phi)
    targets = targets.to(phi.dtype)
    if center:
        predicted = predicted - predicted.mean(-1, keepdim=True)
        targets = targets - targets.mean(-1, keepdim=True)
    if classes is not None:
        index = classes[:, None, :].expand(-1, predicted.shape[1], -1)
        predicted, targets = predicted.gather(2, index), targets.gather(2, index)
    squared = (targets - predicted).pow(2).mean(dim=(1, 2))  # (B,)
    if normalization == "per_image":
        scale = targets.detach().pow(2).mean(dim=(1, 2)) + NORMALIZATION_EPS
        squared = squared / scale
    return squared.mean()


def vote_consistency_loss(
    full_votes: torch.Tensor,
    masked_votes: torch.Tensor,
    coalitions: torch.Tensor,
    *,
    center: bool = False,
) -> torch.Tensor:
    """Mean squared gap between each player's full-image vote and its mean detached vote over
    the coalitions that contain it, normalized per image like the regression.

    Args:
        full_votes: (B, P, K) ``r_i(x)``, with gradients.
        masked_votes: (B, G, P, K) ``r_i(x_S)`` of the G coalitions (detached here; an absent
            player's entry is ignored).
        coalitions: (B, G, P) bool, the coalitions S; every player must be in at least one
            (complementary pairs guarantee it).
        center: compare class-centered votes (what softmax sees).

    Returns:
        Scalar loss.
    """
    present = coalitions.to(full_votes.dtype)[..., None]  # (B, G, P, 1)
    counts = present.sum(1)  # (B, P, 1)
    if bool((counts == 0).any()):
        raise ValueError(
            "vote_consistency_loss: a player is absent from every coalition; draw the "
            "coalitions in complementary pairs."
        )
    target = (masked_votes.detach().to(full_votes.dtype) * present).sum(1) / counts  # (B, P, K)
    votes = full_votes
    if center:
        votes = votes - votes.mean(-1, keepdim=True)
        target = target - target.mean(-1, keepdim=True)
    squared = (votes - target).pow(2).mean(dim=(1, 2))  # (B,)
    scale = target.pow(2).mean(dim=(1, 2)) + NORMALIZATION_EPS
    return (squared / scale).mean()


def explained_class_indices(
    logits: torch.Tensor,
    labels: torch.Tensor,
    mode: str,
    count: int | None,
    generator: torch.Generator | None = None,
) -> torch.Tensor | None:
    """(B, C) classes the regression covers: all (None), the label plus random others, or the top-C."""
    num_classes = logits.shape[-1]
    if mode == "all" or count is None or count >= num_classes:
        return None
    if mode == "top":
        return logits.detach().topk(count, dim=-1).indices
    # "label": the label first, then count - 1 others drawn uniformly without replacement.
    noise = torch.rand(logits.shape, generator=generator, device="cpu").to(logits.device)
    noise.scatter_(1, labels[:, None], -1.0)  # the label sorts first
    return noise.argsort(dim=-1)[:, :count]


@dataclass
class ObjectiveOutput:
    """The joint loss and its components (the components detached, for logging)."""

    loss: torch.Tensor
    cls_loss: torch.Tensor
    distill_loss: torch.Tensor
    shapley_loss: torch.Tensor
    consistency_loss: torch.Tensor


def loss_weights(config: Any, step: int) -> tuple[float, float, float]:
    """``(alpha, lambda, beta)`` at optimizer step ``step``, after the warm-up."""
    warm = loss_weight_schedule(step, config.loss_warmup_steps)
    return (
        config.distill_loss_weight * warm,
        config.shapley_loss_weight * warm,
        config.vote_consistency_weight * warm,
    )


def self_distillation_loss(masked_logits: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """KL(p(x) || p(x_S)) averaged over images and coalitions, towards the detached full-image
    prediction.

    Args:
        masked_logits: (B, g, K) the model on g coalitions per image.
        logits: (B, K) the full-image logits (detached here).
    """
    teacher = F.log_softmax(logits.detach(), dim=-1)[:, None].expand_as(masked_logits)
    return (
        F.kl_div(F.log_softmax(masked_logits, dim=-1), teacher, log_target=True, reduction="none")
        .sum(-1)
        .mean()
    )


def joint_objective(
    logits: torch.Tensor,
    labels: torch.Tensor,
    *,
    alpha: float,
    lam: float,
    masked_logits: torch.Tensor | None = None,
    shapley_values: torch.Tensor | None = None,
    base_values: torch.Tensor | None = None,
    coalitions: torch.Tensor | None = None,
    coalition_values: torch.Tensor | None = None,
    explained_classes: torch.Tensor | None = None,
    stop_gradient: bool = True,
    normalization: str = "per_image",
    center: bool = False,
    beta: float = 0.0,
    full_votes: torch.Tensor | None = None,
    masked_votes: torch.Tensor | None = None,
    distill_coalitions: torch.Tensor | None = None,
) -> ObjectiveOutput:
    """``CE + alpha * distill + lambda * shapley + beta * consistency`` of one training step:
    tensors in, loss out.

    Args:
        logits: (B, K) the full-image prediction ``v(all)``.
        labels: (B,) class indices.
        alpha, lam: the loss weights (after warm-up, see :func:`loss_weights`).
        masked_logits: (B, g, K) the model on the distillation coalitions; ``None`` skips the term.
        shapley_values: (B, P, K) phi.
        base_values: (B, K) ``v(empty)``.
        coalitions: (B, m, P) bool, the Shapley-kernel coalitions; ``None`` skips the term.
        coalition_values: (B, m, K) ``v(S)`` of those coalitions.
        explained_classes: (B, C) long, the classes the regression covers; ``None`` = all.
        stop_gradient: detach the regression targets ``v(S) - v(empty)``.
        normalization, center: see :func:`shapley_regression_loss` (``center`` also applies
            to the consistency term).
        beta: weight of the vote-consistency term; it runs when ``masked_votes`` is given.
        full_votes: (B, P, K) each player's full-image vote.
        masked_votes: (B, g, P, K) each player's vote on the distillation coalitions.
        distill_coalitions: (B, g, P) bool, those coalitions.
    """
    cls_loss = F.cross_entropy(logits, labels)
    loss = cls_loss
    distill_loss = shapley_loss = consistency_loss = logits.new_zeros(())
    if masked_logits is not None:
        distill_loss = self_distillation_loss(masked_logits, logits)
        loss = loss + alpha * distill_loss
    if coalitions is not None:
        targets = coalition_values - base_values[:, None]
        if stop_gradient:
            targets = targets.detach()
        shapley_loss = shapley_regression_loss(
            shapley_values,
            coalitions,
            targets,
            normalization=normalization,
            center=center,
            classes=explained_classes,
        )
        loss = loss + lam * shapley_loss
    if masked_votes is not None:
        consistency_loss = vote_consistency_loss(
            full_votes, masked_votes, distill_coalitions, center=center
        )
        loss = loss + beta * consistency_loss
    return ObjectiveOutput(
        loss,
        cls_loss.detach(),
        distill_loss.detach(),
        shapley_loss.detach(),
        consistency_loss.detach(),
    )


__all__ = [
    "ObjectiveOutput",
    "explained_class_indices",
    "joint_objective",
    "loss_weight_schedule",
    "loss_weights",
    "self_distillation_loss",
    "shapley_regression_loss",
    "vote_consistency_loss",
]
