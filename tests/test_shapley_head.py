"""The Shapley head's attention mixer runs ``nn.TransformerEncoderLayer``'s parameters through
its own forward (``pre_norm_encoder_layer``, faster in training): checked against the torch
layer itself, values and gradients, in both modes."""

from __future__ import annotations

import pytest
import torch

import hf_shapley
from conftest import assert_reloads_identically, close
from hf_shapley.models.modeling_shapley import ShapleyHead, pre_norm_encoder_layer


@pytest.mark.parametrize("training", [False, True])
def test_mixer_layer_matches_torch_encoder_layer(training):
    torch.manual_seed(0)
    head = ShapleyHead(32, 3, head_hidden_size=16, num_layers=2).train(training)
    for p in head.parameters():  # O(1) weights: every part of the layer matters
        torch.nn.init.normal_(p, std=0.3)
    x = torch.randn(4, 9, 32, requires_grad=True)

    def gradients(run):
        x.grad = None
        head.zero_grad()
        out = run(x)
        (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
        grads = [p.grad.clone() for p in head.mixer.parameters()]
        return out.detach(), x.grad.clone(), grads

    def ours(h):
        for layer in head.mixer.layers:
            h = pre_norm_encoder_layer(layer, h)
        return h

    out, dx, grads = gradients(ours)
    ref_out, ref_dx, ref_grads = gradients(head.mixer)
    close(out, ref_out)
    close(dx, ref_dx)
    for g, ref in zip(grads, ref_grads, strict=True):
        close(g, ref)
    # The head itself goes through it.
    with torch.no_grad():
        features = torch.randn(4, 9, 32)
        expected = head.out_proj(head.activation(head.dense(head.mixer(features))))
        close(head(features), expected)


@pytest.mark.parametrize("reads_hidden_states", [False, True])
def test_head_width_sets_where_the_head_works_and_keeps_efficiency(
    make_model, pixel_values, tmp_path, reads_hidden_states
):
    model = make_model(
        "resnet",
        players_grid=(2, 2),
        prediction_mode="backbone_head",
        head_num_layers=1,
        head_hidden_size=8,
        head_width=24,
        head_reads_hidden_states=reads_hidden_states,
    )
    head = model.shapley_head
    assert head.mixer.layers[0].self_attn.embed_dim == 24 and head.dense.in_features == 24
    first = head.hidden_states_mix[-1] if reads_hidden_states else head.input_proj
    assert first.out_features == 24 and first.in_features % 16 == 0  # from the width D = 16
    with torch.no_grad():
        out = model(pixel_values)
    torch.testing.assert_close(out.logits, out.base_values + out.shapley_values.sum(1))
    assert model.config.head_width == 24
    assert_reloads_identically(model, pixel_values, tmp_path, out.shapley_values)


def test_head_width_must_be_a_non_negative_int(make_backbone_config):
    with pytest.raises(ValueError, match="head_width must be a non-negative int"):
        hf_shapley.ShapleyConfig(
            backbone_config=make_backbone_config("vit"),
            prediction_mode="backbone_head",
            head_width=-1,
        )
