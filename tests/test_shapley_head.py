"""The Shapley head's attention mixer runs ``nn.TransformerEncoderLayer``'s parameters through
its own forward (``pre_norm_encoder_layer``, faster in training): checked against the torch
layer itself, values and gradients, in both modes."""

from __future__ import annotations

import pytest
import torch

from conftest import close
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
