"""Baseline explainers on real tiny backbones built from configs, each against a direct
computation of what it claims to compute."""

from __future__ import annotations

import pytest
import torch
from transformers import ViTForImageClassification

from hf_shapley import ShapleyForImageClassification
from hf_shapley.evaluation import (
    AttentionRolloutExplainer,
    GradCamExplainer,
    IntegratedGradientsExplainer,
    KernelShapExplainer,
    LeaveOneOutExplainer,
    RandomExplainer,
    ShapleyValuesExplainer,
    exact_model_shapley_values,
    pool_to_players,
)

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture
def images():
    return torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(7))


@pytest.mark.parametrize("mode", ["shapley_sum", "backbone_head"])
def test_leave_one_out_is_the_drop_without_each_player(make_model, images, mode):
    model = make_model("deit", players_grid=(2, 2), prediction_mode=mode)
    explainer = LeaveOneOutExplainer(model)
    assert explainer.cost == 5
    got = explainer.attribute_all(images)
    with torch.no_grad():
        full = model(images).logits
        for i in range(4):
            mask = torch.ones(2, 4, dtype=torch.bool)
            mask[:, i] = False
            expected = full - model(images, coalition=mask).logits
            assert torch.allclose(got[:, i], expected, atol=1e-5)


def test_kernel_shap_at_a_large_budget_matches_exact(make_model, images):
    model = make_model("vit", players_grid=(2, 2))
    exact = exact_model_shapley_values(model, images).float()
    explainer = KernelShapExplainer(model, budget=4000, seed=1)
    assert explainer.cost == 2000  # token removal: a complementary pair shares one pass
    estimate = explainer.attribute_all(images)
    assert torch.allclose(estimate, exact, atol=0.02 * float(exact.abs().max()))
    target = torch.tensor([2, 0])
    assert torch.equal(explainer.attribute(images, target), estimate[torch.arange(2), :, target])


def test_phi_explainer_returns_the_model_values(make_model, images):
    model = make_model("dinov2", players_grid=(2, 2))
    with torch.no_grad():
        out = model(images)
    target = torch.tensor([1, 2])
    got = ShapleyValuesExplainer(model).attribute(images, target)
    assert torch.equal(got, out.shapley_values[torch.arange(2), :, target])


def test_integrated_gradients_completeness(make_model, images):
    model = make_model("vit", players_grid=(2, 2))
    explainer = IntegratedGradientsExplainer(model, n_steps=128)
    target = torch.tensor([0, 1])
    pixels, delta = explainer.attribute_pixels(images, target, return_convergence_delta=True)
    with torch.no_grad():
        gap = model(images).logits - model(torch.zeros_like(images)).logits
    gap = gap[torch.arange(2), target]
    assert torch.allclose(pixels.sum((1, 2, 3)), gap, atol=0.02 * float(gap.abs().max()))
    players = explainer.attribute(images, target)
    # Pooling keeps completeness: the players add up to the pixels.
    assert torch.allclose(players.sum(1), pixels.sum((1, 2, 3)).float(), atol=1e-4)
    assert explainer.cost == 3 * 128


@pytest.mark.parametrize("family", ["vit", "dinov2_with_registers"])
def test_attention_rollout_rows_are_distributions(make_model, images, family):
    model = make_model(family, players_grid=(2, 2), prediction_mode="backbone_head")
    explainer = AttentionRolloutExplainer(model)
    assert explainer.query == "cls"
    matrix = explainer.rollout(images)
    assert (matrix >= 0).all()
    assert torch.allclose(matrix.sum(-1), torch.ones(matrix.shape[:2], dtype=matrix.dtype))
    players = explainer.attribute(images, torch.tensor([0, 0]))
    specials = matrix.shape[-1] - 16
    assert torch.allclose(players.double().sum(1), matrix[:, 0, specials:].sum(1), atol=1e-6)
    # Rollout must leave the backbone's attention implementation as it found it.
    assert model.backbone.config._attn_implementation != "eager"
    assert AttentionRolloutExplainer(make_model(family)).query == "patches"


@pytest.mark.parametrize("mode", ["shapley_sum", "backbone_head"])
def test_grad_cam_matches_a_hand_computation(make_model, images, mode):
    model = make_model("vit", players_grid=(2, 2), prediction_mode=mode)
    explainer = GradCamExplainer(model)
    target = torch.tensor([1, 2])
    got = explainer.attribute(images, target)
    assert got.shape == (2, 4) and (got >= 0).all() and (got > 0).any()

    captured = {}

    def keep(module, inputs, output):
        if output.shape[1] == 17:  # the full image (backbone_head also runs the empty coalition)
            output.retain_grad()
            captured["tokens"] = output

    handle = model.adapter.layers(model.backbone)[-2].register_forward_hook(keep)
    try:
        logits = model(images).logits
    finally:
        handle.remove()
    logits[torch.arange(2), target].sum().backward()
    tokens = captured["tokens"]
    patches, grads = tokens[:, 1:].detach(), tokens.grad[:, 1:]  # ViT: one CLS token
    weights = grads.mean(1, keepdim=True)  # per channel, averaged over the 4 x 4 token grid
    cam = torch.relu((weights * patches).sum(-1)).reshape(2, 4, 4)
    expected = pool_to_players(cam, (2, 2))
    assert torch.allclose(got, expected, atol=1e-5)


def test_random_explainer_is_seeded():
    class Stub:
        num_players = 6
        players_grid = (2, 3)

    x = torch.zeros(3, 3, 8, 8)
    a = RandomExplainer(Stub(), seed=3).attribute(x, torch.zeros(3, dtype=torch.long))
    b = RandomExplainer(Stub(), seed=3).attribute(x, torch.zeros(3, dtype=torch.long))
    assert a.shape == (3, 6) and torch.equal(a, b)


def test_explainers_on_a_vanilla_classifier(make_backbone_config, images):
    """A plain classifier gets a value function through backbone_head (frozen, same logits)."""
    torch.manual_seed(0)
    config = make_backbone_config("vit", num_labels=3)
    classifier = ViTForImageClassification(config).eval()
    model = ShapleyForImageClassification.from_backbone(
        classifier, prediction_mode="backbone_head", train_backbone=False, players_grid=(2, 2)
    ).eval()
    with torch.no_grad():
        logits = classifier(images).logits
    target = logits.argmax(-1)
    loo = LeaveOneOutExplainer(model).attribute(images, target)
    with torch.no_grad():
        full = model(images, coalition=torch.ones(2, 4, dtype=torch.bool)).logits
    assert torch.allclose(full, logits, atol=1e-5)
    assert loo.shape == (2, 4)
    for explainer in (GradCamExplainer(model), AttentionRolloutExplainer(model)):
        assert explainer.attribute(images, target).shape == (2, 4)


def test_bad_targets_are_refused(make_model, images):
    model = make_model("vit", players_grid=(2, 2))
    with pytest.raises(ValueError, match="target must"):
        LeaveOneOutExplainer(model).attribute(images, torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match="budget"):
        KernelShapExplainer(model, budget=2)
