"""The vote-influence matrix (hf_shapley.evaluation.influence), checked against independent
computations: its rows add up to the exact Shapley values of the model's own game (computed
by exact enumeration of the logits), and a model whose tokens cannot see each other (no
attention blocks) has a diagonal matrix equal to its own votes."""

from __future__ import annotations

import pytest
import torch

from conftest import close
from hf_shapley import ShapleyConfig, ShapleyForImageClassification
from hf_shapley.evaluation import exact_model_shapley_values, vote_influence


@pytest.mark.parametrize("family", ["vit", "dinov2_with_registers", "resnet"])
def test_rows_add_up_to_the_exact_shapley_values(get_model, family, pixel_values):
    model = get_model(family, grid=(2, 2))
    result = vote_influence(model, pixel_values, center=False)
    truth = exact_model_shapley_values(model, pixel_values)  # (B, P, K), from the logits
    rows = torch.arange(3)
    close(result.shapley_values, truth[rows, :, result.classes])
    assert result.matrix.shape == (3, 4, 4)
    # Centered: the same identity for class-centered logits.
    centered = vote_influence(model, pixel_values)
    truth_c = truth - truth.mean(-1, keepdim=True)
    close(centered.shapley_values, truth_c[rows, :, centered.classes])


def test_tokens_that_cannot_interact_give_a_diagonal_matrix(make_backbone_config, pixel_values):
    """No encoder blocks: each token's vote depends on that token alone, so C is diagonal and
    its diagonal is the model's own per-player value r_i(x)."""
    torch.manual_seed(0)
    config = ShapleyConfig(
        backbone_config=make_backbone_config("vit", num_hidden_layers=0),
        num_labels=3,
        players_grid=(2, 2),
        initializer_range=0.2,
    )
    model = ShapleyForImageClassification(config).eval()
    result = vote_influence(model, pixel_values)
    off = result.matrix - torch.diag_embed(result.own)
    assert off.abs().max() < 1e-6
    close(result.own, result.model_values)
    assert result.off_diagonal_share().max() < 1e-5
    # A model with attention blocks moves credit between players.
    torch.manual_seed(0)
    config.backbone_config = make_backbone_config("vit")
    mixed = vote_influence(ShapleyForImageClassification(config).eval(), pixel_values)
    assert mixed.off_diagonal_share().min() > 1e-3


def test_backbone_head_models_are_refused(get_model, pixel_values):
    with pytest.raises(ValueError, match="soft-voting"):
        vote_influence(get_model("vit", "backbone_head", grid=(2, 2)), pixel_values)
