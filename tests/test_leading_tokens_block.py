"""The last encoder block computed for the special tokens only (``block_for_leading_tokens``).

A packed coalition pass whose readout reads the special tokens alone (a wrapped classifier's
CLS, CLIP's pooled CLS) needs no patch token after the last block. Checked here against the
real transformers block run whole, for every layout the helper knows (ViT, DeiT, CLIP) and
for one it does not (DINOv2, which then runs whole); and that the model's packed passes use
it exactly where the readout allows it (the last block's MLP sees 2 x specials rows, not
the whole sequence); and that a stock classifier trained with ``classifier_tokens_only`` has
the same loss and gradients as the stock forward.
"""

from __future__ import annotations

import pytest
import torch
import transformers
from transformers import CLIPVisionModel

from conftest import close, tiny_backbone_config, tiny_clip_config, tiny_shapley_model
from hf_shapley.models.backbones import (
    block_for_leading_tokens,
    classifier_tokens_only,
    get_adapter,
)

pytestmark = pytest.mark.usefixtures("single_thread")


def encoder_block(family: str) -> torch.nn.Module:
    """The last block of a tiny real backbone with O(1) weights."""
    torch.manual_seed(0)
    if family == "clip":
        return CLIPVisionModel(tiny_clip_config().vision_config).encoder.layers[-1].eval()
    config = tiny_backbone_config(family)
    adapter = get_adapter(config)
    backbone = adapter.build(config)
    return adapter.layers(backbone)[-1].eval()


def random_group_mask(n: int, length: int, seed: int) -> torch.Tensor:
    """An additive (n, 1, L, L) mask of two token groups, as a packed pair uses."""
    gen = torch.Generator().manual_seed(seed)
    group = torch.rand(n, length, generator=gen) < 0.5
    group[:, 0], group[:, 1] = True, False  # each leading token in its own group
    same = group[:, :, None] == group[:, None, :]
    mask = torch.zeros(n, length, length)
    mask.masked_fill_(~same, torch.finfo(mask.dtype).min)
    return mask[:, None]


@pytest.mark.parametrize("family", ["vit", "deit", "clip", "dinov2"])
@pytest.mark.parametrize("masked", [False, True])
def test_leading_tokens_match_the_whole_block(family, masked):
    block = encoder_block(family)
    n, length, num_outputs = 5, 18, 2
    hidden = torch.randn(n, length, 32, generator=torch.Generator().manual_seed(1))
    mask = random_group_mask(n, length, seed=2) if masked else None
    with torch.no_grad():
        whole = block(hidden, attention_mask=mask)
        rows: list[int] = []
        hook = block.mlp.register_forward_hook(lambda m, args, out: rows.append(args[0].shape[1]))
        leading = block_for_leading_tokens(block, hidden, mask, num_outputs)
        hook.remove()
    assert leading.shape == (n, num_outputs, 32)
    # A known layout computes the MLP for the leading tokens only; DINOv2 runs whole.
    assert rows == [length if family == "dinov2" else num_outputs]
    close(leading, whole[:, :num_outputs])
    # The other tokens matter through keys and values: changing one changes the output.
    changed = hidden.clone()
    changed[:, -1] += 1.0
    with torch.no_grad():
        moved = block_for_leading_tokens(block, changed, None, num_outputs)
    assert not torch.allclose(moved, block_for_leading_tokens(block, hidden, None, num_outputs))


def last_mlp_rows(model) -> list[int]:
    """Rows (tokens per sequence) the last encoder block's MLP sees, one entry per call."""
    seen: list[int] = []
    block = model.game.adapter.layers(model.backbone)[-1]
    block.mlp.register_forward_hook(lambda module, args, out: seen.append(args[0].shape[1]))
    return seen


@pytest.mark.parametrize(
    ("family", "mode", "specials_only"),
    [
        ("vit", "backbone_head", True),  # the wrapped classifier reads CLS alone
        ("deit", "backbone_head", True),  # CLS and distillation token
        ("vit", "shapley_sum", False),  # soft voting reads every patch token's vote
        ("dinov2", "backbone_head", False),  # DINOv2's classifier reads the patch mean
    ],
)
def test_packed_passes_skip_patch_tokens_only_where_the_readout_allows(
    family, mode, specials_only, pixel_values
):
    model = tiny_shapley_model(family, prediction_mode=mode)
    specials = model.game.num_special_tokens
    B, P = pixel_values.shape[0], model.num_players
    S = torch.rand(B, 2, P, generator=torch.Generator().manual_seed(5)) < 0.5
    pairs = torch.stack([S, ~S], dim=2).reshape(B, -1, P)
    seen = last_mlp_rows(model)
    with torch.no_grad():
        model(pixel_values, coalition=pairs)
    full_sequence = 2 * specials + 16  # a packed pair: both groups' specials, every patch
    assert seen == [2 * specials if specials_only else full_sequence]


def stock_classifier(family: str):
    """A stock transformers ``*ForImageClassification`` of a tiny config, in training mode."""
    classes = {
        "vit": transformers.ViTForImageClassification,
        "deit": transformers.DeiTForImageClassification,
        "dinov2": transformers.Dinov2ForImageClassification,
    }
    torch.manual_seed(0)
    return classes[family](tiny_backbone_config(family, num_labels=3)).train()


def loss_and_gradients(model, pixel_values, labels):
    model.zero_grad()
    loss = model(pixel_values=pixel_values, labels=labels).loss
    loss.backward()
    # Parameters no loss reaches (a mask token) keep no gradient either way.
    return loss.detach(), {
        n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None
    }


@pytest.mark.parametrize(("family", "applies"), [("vit", True), ("deit", True), ("dinov2", False)])
def test_classifier_tokens_only_keeps_loss_and_gradients(family, applies, pixel_values):
    model = stock_classifier(family)
    labels = torch.tensor([0, 2, 1, 2])[: pixel_values.shape[0]]
    block = get_adapter(model.config).layers(getattr(model, family))[-1]
    loss, grads = loss_and_gradients(model, pixel_values, labels)
    rows: list[int] = []
    hook = block.mlp.register_forward_hook(lambda m, args, out: rows.append(args[0].shape[1]))
    with classifier_tokens_only(model) as applied:
        fast_loss, fast_grads = loss_and_gradients(model, pixel_values, labels)
    hook.remove()
    assert applied is applies
    specials = get_adapter(model.config).num_special_tokens(model.config)
    assert rows == [specials if applies else specials + 16]
    close(fast_loss, loss)
    assert fast_grads.keys() == grads.keys()
    for name, grad in grads.items():
        close(fast_grads[name], grad)
    assert "forward" not in vars(block)  # restored on exit
