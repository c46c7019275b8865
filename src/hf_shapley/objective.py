"""The joint training objective: accurate AND faithful.

    loss = CE(logits, y) + alpha * distill + lambda * shapley

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

Why the regression is normalized per image: phi and v come from the same head, so phi = 0
makes an unnormalized loss (and its targets) zero; on raw logits the regression pulls the
logit scale towards zero and only cross-entropy resists. Dividing each image's mean squared
residual by ``sg[mean (v(S) - v(empty))^2] + eps`` keeps each image's optimum, makes the
loss scale-free, and (unlike a batch variance) gives identical gradients under gradient
accumulation and across processes.

Stop-gradient does not freeze the game: the network that gives phi also gives v, so
faithfulness is a property of the final checkpoint, measured by the evaluation, and the
training-time regression error is only a proxy.

``shapley_objective`` is what ``ShapleyForImageClassification.forward`` calls in training mode
with labels, so the stock Trainer, a plain Accelerate loop and DDP see one forward per step.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from .coalitions import sample_shapley_kernel_coalitions, sample_uniform_size_coalitions

if TYPE_CHECKING:
    from .modeling_shapley import ShapleyForImageClassification, ShapleyImageClassifierOutput

# Added to the per-image normalizer: targets are logit differences, O(1) once trained.
NORMALIZATION_EPS = 1e-4


@contextlib.contextmanager
def frozen_statistics(model: nn.Module, *, disable_dropout: bool) -> Iterator[None]:
    """Run normalization layers in eval mode (no BatchNorm statistics updates), optionally dropout too.

    Masked passes see partial images; letting them update running statistics would corrupt the
    statistics that inference uses (measured here: test accuracy at chance).
    """
    changed = []
    for module in model.modules():
        is_norm = isinstance(module, nn.modules.batchnorm._BatchNorm)
        is_dropout = disable_dropout and isinstance(module, nn.modules.dropout._DropoutNd)
        if (is_norm or is_dropout) and module.training:
            module.training = False
            changed.append(module)
    try:
        yield
    finally:
        for module in changed:
            module.training = True


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


def shapley_objective(
    model: ShapleyForImageClassification,
    pixel_values: torch.Tensor,
    labels: torch.Tensor,
    *,
    example_index: torch.Tensor | None = None,
    epoch: int | None = None,
) -> ShapleyImageClassifierOutput:
    """Joint loss of one training step; returns the model output with the loss components.

    Args:
        model: the self-explaining model (in training mode).
        pixel_values: (B, C, H, W).
        labels: (B,) class indices.
        example_index: (B,) data set indices; coalitions are a pure function of
            ``(config.coalition_seed, epoch, example index, coalition index)``. Without them a
            per-model counter stands in (reproducible in one process, not across resumes).
        epoch: the epoch (default 0).
    """
    config = model.config
    P, B = model.num_players, pixel_values.shape[0]
    step = getattr(model, "objective_step", None)
    if step is None:
        step = model._objective_calls
    model._objective_calls += 1
    warm = loss_weight_schedule(step, config.loss_warmup_steps)
    alpha, lam = config.distill_loss_weight * warm, config.shapley_loss_weight * warm
    if example_index is None:
        example_index = torch.arange(B) + model._objective_calls * B
    example_index = example_index.detach().cpu()
    epoch = int(epoch or 0)

    embeddings = model.adapter.embed(model.backbone, pixel_values)
    out = model._explain_from_embeddings(embeddings)
    cls_loss = F.cross_entropy(out.logits, labels)
    loss = cls_loss
    device = pixel_values.device

    distill_loss = out.logits.new_zeros(())
    backbone_trainable = config.prediction_mode == "shapley_sum" or config.train_backbone
    g = config.num_distill_coalitions
    if g > 0 and alpha > 0 and backbone_trainable:
        # Drawn in complementary pairs: a pair shares one packed sequence, so S and ~S cost one pass.
        half = sample_uniform_size_coalitions(
            P,
            (g + 1) // 2,
            seed=config.coalition_seed,
            epoch=epoch,
            example_indices=example_index,
            device=device,
        )
        masks = torch.stack([half, ~half], dim=2).reshape(B, -1, P)[:, :g]
        with frozen_statistics(model, disable_dropout=False):
            masked_logits = model.coalition_values_from_embeddings(embeddings, masks)  # (B, g, K)
        teacher = F.log_softmax(out.logits.detach(), dim=-1)[:, None].expand_as(masked_logits)
        distill_loss = (
            F.kl_div(
                F.log_softmax(masked_logits, dim=-1), teacher, log_target=True, reduction="none"
            )
            .sum(-1)
            .mean()
        )
        loss = loss + alpha * distill_loss

    shapley_loss = out.logits.new_zeros(())
    m = config.num_shapley_coalitions
    if m > 0 and lam > 0:
        masks = sample_shapley_kernel_coalitions(
            P,
            m,
            seed=config.coalition_seed + 1,
            epoch=epoch,
            example_indices=example_index,
            device=device,
        )
        grad_targets = not config.shapley_stop_gradient
        with frozen_statistics(model, disable_dropout=True), torch.set_grad_enabled(grad_targets):
            values = model.coalition_values_from_embeddings(
                embeddings if grad_targets else embeddings.detach(), masks
            )
        base = out.base_values if grad_targets else out.base_values.detach()
        targets = values - base[:, None]
        generator = torch.Generator().manual_seed(
            int(config.coalition_seed * 1_000_003 + epoch * 7_919 + int(example_index[0]))
        )
        classes = explained_class_indices(
            out.logits, labels, config.explained_classes, config.num_explained_classes, generator
        )
        shapley_loss = shapley_regression_loss(
            out.shapley_values,
            masks,
            targets,
            normalization=config.shapley_loss_normalization,
            center=config.center_logits,
            classes=classes,
        )
        loss = loss + lam * shapley_loss

    out.loss = loss
    out.cls_loss = cls_loss.detach()
    out.distill_loss = distill_loss.detach()
    out.shapley_loss = shapley_loss.detach()
    return out


__all__ = [
    "explained_class_indices",
    "frozen_statistics",
    "loss_weight_schedule",
    "shapley_objective",
    "shapley_regression_loss",
]
