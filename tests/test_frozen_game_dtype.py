"""``frozen_game_dtype="bfloat16"``: a frozen classifier's training passes run in bf16.

The passes of a frozen classifier train nothing, so they may run under bf16 autocast where the
hardware makes that faster. These tests check that the kept regression targets are the game's
values to bf16 precision (and really were computed in bf16), that the head, its gradients and
efficiency stay fp32, that inference is untouched, and that a game that trains refuses the
option with a message naming it.
"""

from __future__ import annotations

import pytest
import torch

from hf_shapley.models.coalitions import sample_shapley_kernel_coalitions
from test_reuse_coalitions import FROZEN, GRID

pytestmark = pytest.mark.usefixtures("single_thread")


def kept_and_fp32_values(model, x, index):
    """One training step's output, its kept coalition values, and the same coalitions' values
    through the fp32 ``coalition=`` API."""
    y = torch.zeros(len(x), dtype=torch.long)
    out = model.train()(x, labels=y, example_index=index, epoch=0, global_step=100)
    out.loss.backward()
    kept = model.coalition_value_cache.get(index, model.config.num_shapley_coalitions)
    coalitions = sample_shapley_kernel_coalitions(
        model.num_players,
        model.config.num_shapley_coalitions,
        seed=model.config.coalition_seed + 1,
        epoch=0,
        example_indices=index,
        device=x.device,
    )
    with torch.no_grad():
        exact = model.eval()(x, coalition=coalitions).logits
    return out, kept, exact


def test_bf16_game_keeps_the_games_values_to_bf16_precision_and_a_fp32_head(make_model):
    torch.manual_seed(0)
    x, index = torch.randn(3, 3, 32, 32), torch.tensor([4, 7, 8])
    options = dict(players_grid=GRID, reuse_shapley_coalitions=True, **FROZEN)
    fp32 = make_model("vit", **options)
    bf16 = make_model("vit", frozen_game_dtype="bfloat16", **options)
    bf16.load_state_dict(fp32.state_dict())

    _, kept32, exact = kept_and_fp32_values(fp32, x, index)
    out, kept16, exact16 = kept_and_fp32_values(bf16, x, index)
    torch.testing.assert_close(kept32, exact)  # fp32 training: the game's values exactly
    torch.testing.assert_close(exact16, exact)  # the coalition= API is fp32 either way
    # bf16 training: the same values to bf16 rounding, and not bit for bit (autocast was on).
    assert kept16.dtype == torch.float32
    scale = exact.abs().max()
    assert (kept16 - exact).abs().max() <= 0.05 * scale
    assert not torch.equal(kept16, exact)
    # The head trains in fp32, with fp32 efficiency on the step's own prediction.
    assert out.shapley_values.dtype == torch.float32
    torch.testing.assert_close(
        out.base_values + out.shapley_values.sum(1), out.logits.float(), atol=1e-5, rtol=1e-5
    )
    grads = [p.grad for p in bf16.shapley_head.parameters() if p.grad is not None]
    assert grads and all(g.dtype == torch.float32 and torch.isfinite(g).all() for g in grads)
    assert all(p.grad is None for p in bf16.backbone.parameters())


def test_bf16_game_leaves_inference_bit_identical(make_model):
    torch.manual_seed(1)
    x = torch.randn(2, 3, 32, 32)
    fp32 = make_model("vit", players_grid=GRID, **FROZEN).eval()
    bf16 = make_model("vit", players_grid=GRID, frozen_game_dtype="bfloat16", **FROZEN).eval()
    bf16.load_state_dict(fp32.state_dict())
    with torch.no_grad():
        a, b = fp32(x), bf16(x)
    assert torch.equal(a.logits, b.logits) and torch.equal(a.shapley_values, b.shapley_values)


@pytest.mark.parametrize(
    "options",
    [
        dict(prediction_mode="backbone_head", train_backbone=True),
        dict(prediction_mode="shapley_sum"),
    ],
)
def test_a_game_that_trains_refuses_a_bf16_frozen_game(make_backbone_config, options):
    from hf_shapley.models.configuration_shapley import ShapleyConfig

    with pytest.raises(ValueError, match="frozen_game_dtype='bfloat16'.*train_backbone=False"):
        ShapleyConfig(
            backbone_config=make_backbone_config("vit"), frozen_game_dtype="bfloat16", **options
        )
    with pytest.raises(ValueError, match="frozen_game_dtype"):
        ShapleyConfig(backbone_config=make_backbone_config("vit"), frozen_game_dtype="float16")
