"""The joint objective of a self-explaining dual encoder, for a batch of matching image-text pairs.

    loss = w_c * contrastive + alpha * distill + lambda * (shapley + w_t * text_shapley)

* ``contrastive``: CLIP's symmetric cross-entropy over the batch's similarity matrix (image i
  matches text i). Only when CLIP trains.
* ``distill``: the masked image's similarity distribution over the batch's texts is distilled
  towards the full image's (detached), KL(p(t | x) || p(t | x_S)): the self-surrogate of
  ``objective.self_distillation_loss`` with texts in the place of classes. Only when CLIP
  trains; it teaches the image tower to score partial images.
* ``shapley``: the Shapley regression on the image's VECTOR game ``u(x_S)`` (the scaled, unit
  image embedding with only the players in S present), the D embedding dimensions taking the
  place of the K classes of ``objective.shapley_regression_loss``. The minimizer under
  efficiency is the vector of Shapley values ``Phi_i`` whose projection on any text embedding
  is that text's Shapley value, so one regression covers every text, seen or not. No centering:
  the classifier centers logits over classes because softmax cannot see their common shift; the
  embedding dimensions have no such shared direction.
* ``text_shapley`` (off by default): the same residuals projected on the batch's text
  embeddings, i.e. the regression of the scalar games ``v_t(S) = <u(x_S), e_t>`` of those
  texts; it weights the fit towards the subspace real texts span.

Pure functions of tensors, as ``objective.py``: the model (``ShapleyCLIPModel.forward`` in
training mode with ``return_loss=True``) asks its game for the values and hands them over.

This file is shipped as remote code: relative imports only.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .objective import self_distillation_loss, shapley_regression_loss


def image_text_contrastive_loss(logits_per_image: torch.Tensor) -> torch.Tensor:
    """CLIP's symmetric contrastive loss: image i matches text i.

    Args:
        logits_per_image: (B, B) scaled cosine similarities, images by texts.

    Returns:
        Scalar: the mean of the image-to-text and text-to-image cross-entropies.
    """
    if logits_per_image.ndim != 2 or logits_per_image.shape[0] != logits_per_image.shape[1]:
        raise ValueError(
            "the contrastive loss needs one matching text per image (a square (B, B) similarity "
            f"matrix); got shape {tuple(logits_per_image.shape)}."
        )
    target = torch.arange(logits_per_image.shape[0], device=logits_per_image.device)
    return (
        F.cross_entropy(logits_per_image, target) + F.cross_entropy(logits_per_image.t(), target)
    ) / 2


def vector_shapley_regression_loss(
    shapley_vectors: torch.Tensor,
    coalitions: torch.Tensor,
    targets: torch.Tensor,
    *,
    normalization: str = "per_image",
    text_embeds: torch.Tensor | None = None,
) -> torch.Tensor:
    """Shapley regression of the vector game, or (with ``text_embeds``) of its texts' games.

    Args:
        shapley_vectors: (B, P, D) ``Phi``.
        coalitions: (B, M, P) bool.
        targets: (B, M, D) ``u(S) - u(empty)`` (detached by the caller if wanted).
        normalization: ``"per_image"`` or ``"none"`` (``objective.shapley_regression_loss``).
        text_embeds: (T, D) unit text embeddings: regress the scalar games ``<u(S), e_t>``
            instead, (B, P, T) values ``<Phi_i, e_t>``.

    Returns:
        Scalar loss.
    """
    if text_embeds is not None:
        text_embeds = text_embeds.to(shapley_vectors.dtype)
        shapley_vectors = shapley_vectors @ text_embeds.t()
        targets = targets.to(text_embeds.dtype) @ text_embeds.t()
    return shapley_regression_loss(
        shapley_vectors, coalitions, targets, normalization=normalization, center=False
    )


@dataclass
class CLIPObjectiveOutput:
    """The joint loss and its components (the components detached, for logging)."""

    loss: torch.Tensor
    contrastive_loss: torch.Tensor
    distill_loss: torch.Tensor
    shapley_loss: torch.Tensor


def clip_joint_objective(
    logits_per_image: torch.Tensor,
    *,
    contrastive_weight: float,
    alpha: float,
    lam: float,
    text_lam: float = 0.0,
    masked_logits_per_image: torch.Tensor | None = None,
    shapley_vectors: torch.Tensor | None = None,
    base_vector: torch.Tensor | None = None,
    coalitions: torch.Tensor | None = None,
    coalition_vectors: torch.Tensor | None = None,
    text_embeds: torch.Tensor | None = None,
    stop_gradient: bool = True,
    normalization: str = "per_image",
) -> CLIPObjectiveOutput:
    """The joint loss of one training step: tensors in, loss out.

    Args:
        logits_per_image: (B, B) scores of the full images against the batch's texts.
        contrastive_weight: weight of the contrastive term (0 skips it: a frozen CLIP).
        alpha, lam: distillation and Shapley weights (after warm-up).
        text_lam: weight of the texts' scalar-game regression, relative to ``lam``.
        masked_logits_per_image: (B, g, B) scores of the masked images; ``None`` skips the term.
        shapley_vectors: (B, P, D) ``Phi``.
        base_vector: (B, D) ``u(empty)``.
        coalitions: (B, m, P) bool Shapley-kernel coalitions; ``None`` skips the regression.
        coalition_vectors: (B, m, D) ``u(S)``.
        text_embeds: (T, D) the batch's unit text embeddings (for ``text_lam``; detached here).
        stop_gradient: detach the regression targets.
        normalization: of the regression (``objective.shapley_regression_loss``).
    """
    zero = logits_per_image.new_zeros(())
    loss = contrastive = distill = shapley = zero
    if contrastive_weight > 0:
        contrastive = image_text_contrastive_loss(logits_per_image)
        loss = loss + contrastive_weight * contrastive
    if masked_logits_per_image is not None and alpha > 0:
        distill = self_distillation_loss(masked_logits_per_image, logits_per_image)
        loss = loss + alpha * distill
    if coalitions is not None and lam > 0:
        targets = coalition_vectors - base_vector[:, None]
        if stop_gradient:
            targets = targets.detach()
        shapley = vector_shapley_regression_loss(
            shapley_vectors, coalitions, targets, normalization=normalization
        )
        if text_lam > 0:
            shapley = shapley + text_lam * vector_shapley_regression_loss(
                shapley_vectors,
                coalitions,
                targets,
                normalization=normalization,
                text_embeds=text_embeds.detach(),
            )
        loss = loss + lam * shapley
    return CLIPObjectiveOutput(loss, contrastive.detach(), distill.detach(), shapley.detach())


__all__ = [
    "CLIPObjectiveOutput",
    "clip_joint_objective",
    "image_text_contrastive_loss",
    "vector_shapley_regression_loss",
]
