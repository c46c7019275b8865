"""The Shapley head that reads every depth of the backbone (``head_reads_hidden_states``).

Checked against transformers' own ``output_hidden_states=True``: the head must see exactly the
hidden states the backbone computes, at no extra pass, and must depend on the early ones.
"""

from __future__ import annotations

import pytest
import torch

import hf_shapley
from conftest import FAMILIES, assert_reloads_identically


def values_after_changing_mix_slot(model, pixel_values, slot: int) -> torch.Tensor:
    """phi after a random change to the columns of the head's mixing matrix that read input
    slot ``slot`` (a depth, or the attention): moved phi shows the slot is read. Random, since
    a constant change vanishes (each slot is normalized, so its features sum to 0)."""
    mix = model.shapley_head.hidden_states_mix[-1]
    width = mix.out_features
    change = torch.randn(width, width, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        weight = mix.weight.clone()
        mix.weight[:, slot * width : (slot + 1) * width].add_(change)
        moved = model(pixel_values).shapley_values
        mix.weight.copy_(weight)
    return moved


@pytest.mark.parametrize("family", FAMILIES)
def test_the_full_view_carries_the_backbones_own_hidden_states(make_model, pixel_values, family):
    model = make_model(
        family, players_grid=(2, 2), prediction_mode="backbone_head", head_reads_hidden_states=True
    )
    game = model.game
    with torch.no_grad():
        view = game.full(game.prepare(pixel_values))
        ours = view.hidden_states()
        reference = model.backbone(pixel_values, output_hidden_states=True).hidden_states
    s = game.num_special_tokens
    expected = torch.stack([h[:, s:] for h in reference], dim=2)
    assert (
        ours.shape
        == expected.shape
        == (
            3,
            game.adapter.token_grid(model.config.backbone_config)[0] ** 2,
            len(reference),
            ours.shape[-1],
        )
    )
    torch.testing.assert_close(ours, expected)
    # A head that reads the final features alone keeps no other depth alive.
    model.config.head_reads_hidden_states = False
    with torch.no_grad():
        assert game.full(game.prepare(pixel_values)).hidden_states is None


def test_hidden_states_head_explains_with_efficiency_reads_the_embeddings_and_reloads(
    make_model, pixel_values, tmp_path
):
    model = make_model(
        "vit",
        players_grid=(2, 2),
        prediction_mode="backbone_head",
        head_num_layers=1,
        head_reads_hidden_states=True,
    )
    plain = make_model("vit", players_grid=(2, 2), prediction_mode="backbone_head")
    mix = model.shapley_head.hidden_states_mix[-1]
    depths = model.config.backbone_config.num_hidden_layers + 1
    assert mix.in_features == depths * mix.out_features
    model.backbone.load_state_dict(plain.backbone.state_dict())
    model.classifier.load_state_dict(plain.classifier.state_dict())
    with torch.no_grad():
        out = model(pixel_values)
        # Same backbone, same classifier: the logits do not depend on what the head reads.
        torch.testing.assert_close(out.logits, plain(pixel_values).logits, rtol=0, atol=0)
    torch.testing.assert_close(out.logits, out.base_values + out.shapley_values.sum(1))

    # The embeddings' block of the mixing matrix reaches the values (depth 0 is read).
    moved = values_after_changing_mix_slot(model, pixel_values, 0)
    assert (moved - out.shapley_values).abs().max() > 1e-3
    assert_reloads_identically(model, pixel_values, tmp_path, out.shapley_values)


def test_hidden_states_head_needs_the_backbone_head_mode(make_backbone_config):
    with pytest.raises(ValueError, match="head_reads_hidden_states=True needs prediction_mode"):
        hf_shapley.ShapleyConfig(
            backbone_config=make_backbone_config("vit"), head_reads_hidden_states=True
        )


def cell_means(feature_map: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """(B, C, H, W) -> (B, h * w, C): the mean over each final cell's block of the map,
    row-major, by explicit slicing (H and W multiples of the grid)."""
    rows, cols = feature_map.shape[2] // grid[0], feature_map.shape[3] // grid[1]
    return torch.stack(
        [
            feature_map[:, :, i * rows : (i + 1) * rows, j * cols : (j + 1) * cols].mean((2, 3))
            for i in range(grid[0])
            for j in range(grid[1])
        ],
        dim=1,
    )


@pytest.mark.parametrize("family", ["resnet", "convnext", "swin"])
def test_pixel_family_head_reads_every_stage_averaged_over_each_cell(
    make_model, pixel_values, family, tmp_path
):
    model = make_model(
        family,
        players_grid=(2, 2),
        prediction_mode="backbone_head",
        head_num_layers=1,
        head_reads_hidden_states=True,
    )
    game = model.game
    with torch.no_grad():
        view = game.full(game.prepare(pixel_values))
        ours = view.hidden_states()
        out = model.backbone(pixel_values, output_hidden_states=True)
    maps = out.reshaped_hidden_states if family == "swin" else out.hidden_states
    width = view.tokens.shape[-1]
    assert ours.shape == (3, 16, len(maps), width)
    assert model.shapley_head.hidden_states_mix[-1].in_features == len(maps) * width
    for slot, feature_map in enumerate(maps[:-1]):
        channels = feature_map.shape[1]
        torch.testing.assert_close(ours[:, :, slot, :channels], cell_means(feature_map, (4, 4)))
        assert (ours[:, :, slot, channels:] == 0).all()
    # The last slot is what a head reading the final features alone reads.
    torch.testing.assert_close(ours[:, :, -1], view.tokens, rtol=0, atol=0)

    with torch.no_grad():
        explained = model(pixel_values)
    torch.testing.assert_close(
        explained.logits, explained.base_values + explained.shapley_values.sum(1)
    )
    moved = values_after_changing_mix_slot(model, pixel_values, 0)  # the stem's map is read
    assert (moved - explained.shapley_values).abs().max() > 1e-3
    assert_reloads_identically(model, pixel_values, tmp_path, explained.shapley_values)


def test_pixel_family_stages_wider_than_the_final_features_are_refused(make_backbone_config):
    config = hf_shapley.ShapleyConfig(
        backbone_config=make_backbone_config("resnet", embedding_size=32),
        num_labels=3,
        players_grid=(2, 2),
        image_size=32,
        prediction_mode="backbone_head",
        head_reads_hidden_states=True,
    )
    with pytest.raises(
        ValueError, match=r"stages have \[32, 8, 16\].*head_reads_hidden_states=False"
    ):
        hf_shapley.ShapleyForImageClassification(config)


@pytest.mark.parametrize(
    ("family", "reads", "row"),
    [
        ("vit", True, "every depth of the backbone"),
        ("vit", False, "the backbone's final features"),
        ("resnet", True, "every stage of the backbone, averaged over each final cell"),
    ],
)
def test_card_states_what_the_head_reads(make_model, family, reads, row):
    from hf_shapley.publishing import render_model_card

    model = make_model(
        family, players_grid=(2, 2), prediction_mode="backbone_head", head_reads_hidden_states=reads
    )
    card = str(render_model_card(model))
    assert f"| Shapley head reads | {row} |" in card


@pytest.mark.parametrize(
    ("family", "classifier_class", "expected"),
    [
        ("vit", "ViTForImageClassification", True),
        ("dinov2", "Dinov2ForImageClassification", True),
        ("resnet", "ResNetForImageClassification", True),
        ("convnext", "ConvNextForImageClassification", True),
        ("swin", "SwinForImageClassification", True),
    ],
)
def test_the_explainer_recipe_reads_every_depth_of_a_classifier(
    make_backbone_config, family, classifier_class, expected
):
    import transformers

    config = make_backbone_config(family, num_labels=3)
    classifier = getattr(transformers, classifier_class)(config)
    kwargs = {"image_size": 32} if family in ("resnet", "convnext", "swin") else {}
    model = hf_shapley.ShapleyForImageClassification.from_backbone(
        classifier, players_grid=(2, 2), **kwargs
    )
    assert model.config.prediction_mode == "backbone_head"
    assert model.config.head_reads_hidden_states is expected
    assert (model.shapley_head.hidden_states_mix is not None) is expected
    # The attention slot where the blocks' query and key maps can be read (not DINOv2's).
    assert model.config.head_reads_attention is (family == "vit")
    # What the caller passes wins over the recipe.
    off = hf_shapley.ShapleyForImageClassification.from_backbone(
        classifier, players_grid=(2, 2), head_reads_hidden_states=False, **kwargs
    )
    assert off.config.head_reads_hidden_states is False
    assert off.config.head_reads_attention is False


def test_the_recipe_reads_final_features_alone_when_a_stage_is_wider(make_backbone_config):
    import transformers

    config = make_backbone_config("resnet", embedding_size=32, num_labels=3)
    model = hf_shapley.ShapleyForImageClassification.from_backbone(
        transformers.ResNetForImageClassification(config), players_grid=(2, 2), image_size=32
    )
    assert model.config.head_reads_hidden_states is False
    assert model.shapley_head.hidden_states_mix is None


@pytest.mark.parametrize("family", ["vit", "resnet", "swin"])
def test_hidden_states_head_under_bf16_autocast_stays_fp32_and_efficient(
    make_model, pixel_values, family
):
    model = make_model(
        family, players_grid=(2, 2), prediction_mode="backbone_head", head_reads_hidden_states=True
    )
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(pixel_values)
    assert out.shapley_values.dtype == torch.float32 and torch.isfinite(out.shapley_values).all()
    torch.testing.assert_close(out.logits, out.base_values + out.shapley_values.sum(1))


@pytest.mark.parametrize(
    "family, queries", [("vit", "class_and_mean"), ("deit", "class_and_mean"), ("vit", "class")]
)
def test_attention_features_are_the_backbones_own_attention(
    make_model, pixel_values, family, queries
):
    """``head_reads_attention``: the extra slot holds, per patch token, the attention it
    received in each block and head, checked against transformers' eager attention weights."""
    model = make_model(
        family,
        players_grid=(2, 2),
        prediction_mode="backbone_head",
        head_reads_hidden_states=True,
        head_reads_attention=True,
        head_attention_from=queries,
    )
    game = model.game
    backbone = model.backbone
    backbone.config._attn_implementation = "eager"
    with torch.no_grad():
        features = game.full(game.prepare(pixel_values)).hidden_states()
        # Read from the pass's own query and key maps: the hooks that recorded them are gone.
        assert not any(module._forward_hooks for module in backbone.modules())
        reference = backbone(pixel_values, output_attentions=True).attentions
    s = game.num_special_tokens
    depths = len(reference) + 1
    assert features.shape[2] == depths + 1
    parts = []
    for weights in reference:  # (B, H, T, T)
        received = weights[..., s:] * weights.shape[-1]
        parts += [received[:, :, 0]] + ([received.mean(2)] if queries == "class_and_mean" else [])
    expected = torch.cat(parts, dim=1).transpose(1, 2)  # (B, N, 2 L H)
    width = expected.shape[-1]
    torch.testing.assert_close(features[:, :, depths, :width], expected)
    assert (features[:, :, depths, width:] == 0).all()
    torch.testing.assert_close(
        features[:, :, :depths],
        torch.stack(
            [h[:, s:] for h in backbone(pixel_values, output_hidden_states=True).hidden_states], 2
        ),
    )


def test_attention_head_reads_the_slot_keeps_efficiency_and_reloads(
    make_model, pixel_values, tmp_path
):
    model = make_model(
        "vit",
        players_grid=(2, 2),
        prediction_mode="backbone_head",
        head_num_layers=1,
        head_reads_hidden_states=True,
        head_reads_attention=True,
    )
    mix = model.shapley_head.hidden_states_mix[-1]
    depths = model.config.backbone_config.num_hidden_layers + 1
    assert mix.in_features == (depths + 1) * mix.out_features
    with torch.no_grad():
        out = model(pixel_values)
    torch.testing.assert_close(out.logits, out.base_values + out.shapley_values.sum(1))
    moved = values_after_changing_mix_slot(model, pixel_values, depths)  # the attention slot
    assert (moved - out.shapley_values).abs().max() > 1e-3
    assert_reloads_identically(model, pixel_values, tmp_path, out.shapley_values)


def test_attention_head_needs_hidden_states_and_a_known_block(make_backbone_config, make_model):
    with pytest.raises(
        ValueError, match="head_reads_attention=True needs head_reads_hidden_states"
    ):
        hf_shapley.ShapleyConfig(
            backbone_config=make_backbone_config("vit"),
            prediction_mode="backbone_head",
            head_reads_attention=True,
        )
    with pytest.raises(
        ValueError, match="head_reads_attention=True needs ViT- or DeiT-like .* DINOv2"
    ):
        make_model(
            "dinov2",
            players_grid=(2, 2),
            prediction_mode="backbone_head",
            head_reads_hidden_states=True,
            head_reads_attention=True,
        )


def test_attention_head_needs_room_for_its_features_in_the_hidden_size(make_backbone_config):
    # 2 blocks x 4 heads x 2 = 16 attention features per token, hidden size 8.
    config = hf_shapley.ShapleyConfig(
        backbone_config=make_backbone_config("vit", hidden_size=8, intermediate_size=16),
        num_labels=3,
        players_grid=(2, 2),
        prediction_mode="backbone_head",
        head_reads_hidden_states=True,
        head_reads_attention=True,
    )
    with pytest.raises(ValueError, match="16 attention features per token .* hidden size 8"):
        hf_shapley.ShapleyForImageClassification(config)
    # From the class token alone: 8 features, which fit.
    config.head_attention_from = "class"
    model = hf_shapley.ShapleyForImageClassification(config)
    assert model.shapley_head is not None


def test_attention_from_must_name_known_queries(make_backbone_config):
    with pytest.raises(ValueError, match="head_attention_from must be 'class_and_mean' or 'class'"):
        hf_shapley.ShapleyConfig(
            backbone_config=make_backbone_config("vit"), head_attention_from="cls"
        )
