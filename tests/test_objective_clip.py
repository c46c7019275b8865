"""Tests for the pair objective's pure functions (hf_shapley.models.objective_clip)."""

from __future__ import annotations

import torch
from transformers.models.clip.modeling_clip import (
    image_text_contrastive_loss as clip_contrastive_loss,
)

from hf_shapley.models.objective import shapley_regression_loss
from hf_shapley.models.objective_clip import (
    clip_joint_objective,
    image_text_contrastive_loss,
    vector_shapley_regression_loss,
)


def test_contrastive_loss_is_clips():
    logits = torch.randn(5, 5, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(
        image_text_contrastive_loss(logits), clip_contrastive_loss(logits.t())
    )
    # Perfectly matched pairs with a large margin: near zero.
    assert image_text_contrastive_loss(20 * torch.eye(4)) < 1e-6


def additive_game(seed=0, B=2, M=12, P=5, D=7):
    gen = torch.Generator().manual_seed(seed)
    phi = torch.randn(B, P, D, generator=gen)
    coalitions = torch.rand(B, M, P, generator=gen) > 0.5
    targets = torch.einsum("bmp,bpd->bmd", coalitions.double(), phi.double()).float()
    return phi, coalitions, targets


def test_vector_regression_is_zero_exactly_at_an_additive_games_values():
    phi, coalitions, targets = additive_game()
    assert vector_shapley_regression_loss(phi, coalitions, targets) < 1e-10
    assert vector_shapley_regression_loss(phi + 0.1, coalitions, targets) > 1e-3
    # No centring over the embedding dimensions: a shift common to all dimensions is an error.
    shifted = phi + 0.3 * torch.ones(1, 1, phi.shape[-1])
    assert vector_shapley_regression_loss(shifted, coalitions, targets) > 1e-3


def test_text_regression_is_the_projected_scalar_games():
    phi, coalitions, targets = additive_game(seed=1)
    phi = phi + 0.2 * torch.randn(phi.shape, generator=torch.Generator().manual_seed(2))
    text = torch.nn.functional.normalize(torch.randn(3, phi.shape[-1]), dim=-1)
    expected = shapley_regression_loss(phi @ text.t(), coalitions, targets @ text.t())
    torch.testing.assert_close(
        vector_shapley_regression_loss(phi, coalitions, targets, text_embeds=text), expected
    )


def test_joint_objective_weights_and_skips_terms():
    phi, coalitions, targets = additive_game(seed=3, B=3)
    logits = torch.randn(3, 3)
    masked = torch.randn(3, 2, 3)
    base = torch.randn(3, phi.shape[-1])
    values = targets + base[:, None]
    frozen = clip_joint_objective(
        logits,
        contrastive_weight=0.0,
        alpha=0.0,
        lam=2.0,
        masked_logits_per_image=masked,
        shapley_vectors=phi + 0.1,
        base_vector=base,
        coalitions=coalitions,
        coalition_vectors=values,
    )
    regression = vector_shapley_regression_loss(phi + 0.1, coalitions, targets)
    torch.testing.assert_close(frozen.loss, 2.0 * regression)
    assert frozen.contrastive_loss == 0 and frozen.distill_loss == 0
    full = clip_joint_objective(
        logits, contrastive_weight=1.0, alpha=0.5, lam=0.0, masked_logits_per_image=masked
    )
    assert full.contrastive_loss > 0 and full.distill_loss > 0 and full.shapley_loss == 0
    torch.testing.assert_close(full.loss, full.contrastive_loss + 0.5 * full.distill_loss)
