"""Tests for ShapleyForImageClassification on tiny real backbones (ViT, DeiT, DINOv2, DINOv2+reg).

The central check is that ``model(x, coalition=S)`` is the model's own prediction on the image
cut down to the players of ``S``: it is compared with an independent forward over the
physically shortened token sequence (special tokens + present patch tokens, no mask at all),
which is what docs/concepts.md ("Token removal") defines as removing a player. Everything else (efficiency,
``v(empty) == base_values``, packing, chunking) is checked against that value function.

Tolerances: fp32 results that differ only in summation order (masked vs shortened attention,
packed vs unpacked batches) agree to ~1e-7 relative; we allow 1e-5 relative to the size of
the values compared (``close``).
"""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
import transformers
from safetensors import safe_open
from transformers import AutoConfig, AutoModel, AutoModelForImageClassification

import hf_shapley
from conftest import close
from hf_shapley import ShapleyConfig, ShapleyForImageClassification
from hf_shapley.evaluation.estimators import exact_shapley_values, model_game

pytestmark = pytest.mark.usefixtures("single_thread")

MODES = ("shapley_sum", "backbone_head")
GRIDS = ((2, 2), (4, 4))
TOKEN_GRID = (4, 4)  # 32 px / 8 px patches
# Tokens before the patch tokens, per family (docs/concepts.md, "Token removal"), written out independently
# of the adapters: CLS; CLS + distillation; CLS; CLS + 2 registers.
SPECIAL_TOKENS = {"vit": 1, "deit": 2, "dinov2": 1, "dinov2_with_registers": 3}
READS_PATCH_MEAN = {"vit": False, "deit": False, "dinov2": True, "dinov2_with_registers": True}


def random_coalitions(num_images: int, num_players: int, sizes, seed: int = 0) -> torch.Tensor:
    """(B, len(sizes), P) bool: per image, a uniform random subset of each given size."""
    gen = torch.Generator().manual_seed(seed)
    masks = torch.zeros(num_images, len(sizes), num_players, dtype=torch.bool)
    for b in range(num_images):
        for j, k in enumerate(sizes):
            masks[b, j, torch.randperm(num_players, generator=gen)[:k]] = True
    return masks


def coalition_sizes(num_players: int) -> list[int]:
    return sorted({0, 1, num_players // 2, num_players - 1, num_players})


def player_of_token(players_grid) -> torch.Tensor:
    """(N,) player of each patch token, row-major, written out from the definition."""
    (gh, gw), (ph, pw) = TOKEN_GRID, players_grid
    return torch.tensor(
        [(r // (gh // ph)) * pw + c // (gw // pw) for r in range(gh) for c in range(gw)]
    )


def encoder_blocks(backbone):
    return backbone.layers if hasattr(backbone, "layers") else backbone.encoder.layer


@torch.no_grad()
def shortened_sequence_value(model, family, image, present) -> torch.Tensor:
    """v_x(S) from an unmasked forward over [special tokens, present players' patch tokens].

    ``image``: (C, H, W); ``present``: (P,) bool. Returns (K,).
    """
    backbone = model.backbone
    s = SPECIAL_TOKENS[family]
    embeddings = backbone.embeddings(image[None])
    assert embeddings.shape[1] == s + TOKEN_GRID[0] * TOKEN_GRID[1]
    tokens = present[player_of_token(model.config.players_grid)].nonzero().flatten()
    hidden = embeddings[:, torch.cat([torch.arange(s), s + tokens])]
    for block in encoder_blocks(backbone):
        hidden = block(hidden)
    hidden = backbone.layernorm(hidden)
    patches = hidden[:, s:]
    if model.config.prediction_mode == "shapley_sum":
        return (model.shapley_head(patches).sum(1) + model.shapley_bias)[0]
    features = hidden[:, 0]
    if READS_PATCH_MEAN[family]:
        mean = patches.mean(1) if patches.shape[1] else torch.zeros_like(features)
        features = torch.cat([features, mean], dim=-1)
    return model.classifier(features)[0]


# --------------------------------------------------------------------------------------
# Invariants (eval mode)
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_logits_are_base_plus_sum_of_shapley_values(get_model, family, mode, pixel_values):
    model = get_model(family, mode)
    with torch.no_grad():
        out = model(pixel_values)
    B, P, K = pixel_values.shape[0], 16, model.config.num_labels
    assert out.logits.shape == (B, K)
    assert out.shapley_values.shape == (B, P, K)
    assert out.base_values.shape == (B, K)
    close(out.logits, out.base_values + out.shapley_values.sum(1))


@pytest.mark.parametrize("mode", MODES)
def test_efficiency_against_the_value_function(get_model, family, mode, pixel_values):
    model = get_model(family, mode)
    B, P = pixel_values.shape[0], model.num_players
    with torch.no_grad():
        out = model(pixel_values)
        v_all = model(pixel_values, coalition=torch.ones(B, P, dtype=torch.bool)).logits
        v_empty = model(pixel_values, coalition=torch.zeros(B, P, dtype=torch.bool)).logits
    close(out.shapley_values.sum(1), v_all - v_empty)
    close(out.base_values, v_empty)
    close(out.logits, v_all)


@pytest.mark.parametrize("grid", GRIDS)
@pytest.mark.parametrize("mode", MODES)
def test_coalition_equals_forward_over_shortened_sequence(
    get_model, family, mode, grid, pixel_values
):
    model = get_model(family, mode, grid)
    P = grid[0] * grid[1]
    masks = random_coalitions(pixel_values.shape[0], P, coalition_sizes(P), seed=P)
    with torch.no_grad():
        values = model(pixel_values, coalition=masks).logits
    assert values.shape == (*masks.shape[:2], model.config.num_labels)
    assert values.dtype == torch.float32
    expected = torch.stack(
        [
            torch.stack([shortened_sequence_value(model, family, image, m) for m in image_masks])
            for image, image_masks in zip(pixel_values, masks, strict=True)
        ]
    )
    close(values, expected)


@pytest.mark.parametrize("mode", MODES)
def test_packed_pairs_and_unpacked_coalitions_agree(get_model, family, mode, pixel_values):
    model = get_model(family, mode)
    B, P = pixel_values.shape[0], model.num_players
    S = random_coalitions(B, P, [1, 3, 8, 14], seed=7)
    paired = torch.stack([S, ~S], dim=2).reshape(B, -1, P)  # [S0, ~S0, S1, ~S1, ...]
    unpaired = torch.cat([S, ~S], dim=1)  # [S0, S1, ..., ~S0, ~S1, ...]: no adjacent pairs

    sequences = []
    hook = encoder_blocks(model.backbone)[0].register_forward_pre_hook(
        lambda module, args: sequences.append(args[0].shape[0])
    )
    try:
        with torch.no_grad():
            v_paired = model(pixel_values, coalition=paired).logits
            n_paired = sum(sequences)
            sequences.clear()
            v_unpaired = model(pixel_values, coalition=unpaired).logits
            n_unpaired = sum(sequences)
    finally:
        hook.remove()

    M = S.shape[1]
    close(v_paired[:, 0::2], v_unpaired[:, :M])
    close(v_paired[:, 1::2], v_unpaired[:, M:])
    # A complementary pair shares one packed sequence; any other coalition costs its own.
    assert n_paired == B * M
    assert n_unpaired == 2 * B * M


def test_coalition_shapes(get_model, family, pixel_values):
    model = get_model(family)
    B, P, K = pixel_values.shape[0], model.num_players, model.config.num_labels
    masks = random_coalitions(B, P, [2, 9, 5], seed=3)
    with torch.no_grad():
        v2 = model(pixel_values, coalition=masks[:, 0]).logits
        v3 = model(pixel_values, coalition=masks).logits
        v3_single = model(pixel_values, coalition=masks[:, :1]).logits
    assert v2.shape == (B, K)
    assert v3.shape == (B, 3, K)
    assert v3_single.shape == (B, 1, K)
    close(v2, v3[:, 0])
    close(v3_single[:, 0], v2)


@pytest.mark.parametrize("mode", MODES)
def test_coalition_batch_size_does_not_change_values(make_model, mode, pixel_values):
    model = make_model("dinov2_with_registers", prediction_mode=mode, coalition_batch_size=1)
    B, P = pixel_values.shape[0], model.num_players
    S = random_coalitions(B, P, [1, 4, 8, 12, 15], seed=11)
    masks = torch.cat([torch.stack([S, ~S], dim=2).reshape(B, -1, P), S[:, :3]], dim=1)
    with torch.no_grad():
        chunked = model(pixel_values, coalition=masks).logits
        model.config.coalition_batch_size = 10_000
        whole = model(pixel_values, coalition=masks).logits
    close(chunked, whole)


@pytest.mark.parametrize("mode", MODES)
def test_bf16_autocast_keeps_fp32_outputs_and_efficiency(get_model, family, mode, pixel_values):
    model = get_model(family, mode)
    B, P = pixel_values.shape[0], model.num_players
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(pixel_values)
        values = model(pixel_values, coalition=random_coalitions(B, P, [3, 16], seed=5)).logits
    for tensor in (out.logits, out.shapley_values, out.base_values, values):
        assert tensor.dtype == torch.float32
        assert torch.isfinite(tensor).all()
    # bf16 is in the backbone only: the identity is assembled in fp32, so it holds to fp32.
    close(out.logits, out.base_values + out.shapley_values.sum(1))


# --------------------------------------------------------------------------------------
# Exact Shapley values of the model's own game (P = 4)
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_value_function_game_with_exact_shapley_values(get_model, family, mode, pixel_values):
    model = get_model(family, mode, (2, 2))
    B, P, K = pixel_values.shape[0], 4, model.config.num_labels
    game = model_game(model, pixel_values)
    masks = random_coalitions(1, P, [0, 1, 2, 3, 4], seed=2)[0]
    game_values = game(masks)
    assert game_values.shape == (masks.shape[0], B, K)
    with torch.no_grad():
        direct = model(pixel_values, coalition=masks[None].expand(B, -1, -1)).logits
    close(game_values, direct.transpose(0, 1))

    phi = exact_shapley_values(game, P)
    assert phi.shape == (P, B, K)
    with torch.no_grad():
        v_all = model(pixel_values, coalition=torch.ones(B, P, dtype=torch.bool)).logits
        v_empty = model(pixel_values, coalition=torch.zeros(B, P, dtype=torch.bool)).logits
    close(phi.sum(0), v_all - v_empty)
    # (An untrained model's own shapley_values are not expected to equal phi.)


# --------------------------------------------------------------------------------------
# Bad input
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def vit_model(get_model):
    return get_model("vit")


@pytest.mark.parametrize(
    ("shape", "match"),
    [
        ((2, 3, 48, 48), r"size \(48, 48\) but the backbone was built for 32 x 32"),
        ((2, 3, 32, 40), r"size \(32, 40\) but the backbone was built for 32 x 32"),
        ((2, 1, 32, 32), r"has 1 channels but the backbone expects 3"),
        ((3, 32, 32), r"must be 4D \(B, 3, 32, 32\); got shape \(3, 32, 32\)"),
        ((0, 3, 32, 32), r"empty batch"),
    ],
)
def test_bad_pixel_values_shape(vit_model, shape, match):
    with pytest.raises(ValueError, match=match):
        vit_model(torch.zeros(shape))


def test_nan_pixels(vit_model, pixel_values):
    bad = pixel_values.clone()
    bad[1, 2, 3, 4] = float("nan")
    with pytest.raises(ValueError, match="NaN or infinite"):
        vit_model(bad)
    bad[1, 2, 3, 4] = float("inf")
    with pytest.raises(ValueError, match="NaN or infinite"):
        vit_model(bad, coalition=torch.ones(3, 16, dtype=torch.bool))


def test_not_a_tensor(vit_model, pixel_values):
    with pytest.raises(TypeError, match="must be a torch.Tensor"):
        vit_model(pixel_values.numpy())


@pytest.mark.parametrize(
    ("grid", "match"),
    [
        ((3, 3), r"players_grid=\(3, 3\) does not divide the backbone's 4 x 4 token grid"),
        ((4, 3), r"Choose rows from \[1, 2, 4\] and columns from \[1, 2, 4\]"),
        ((8, 8), r"Choose rows from \[1, 2, 4\]"),
    ],
)
def test_players_grid_must_divide_token_grid(make_backbone_config, grid, match):
    config = ShapleyConfig(
        backbone_config=make_backbone_config("vit"), num_labels=3, players_grid=grid
    )
    with pytest.raises(ValueError, match=match):
        ShapleyForImageClassification(config)


def test_single_player_grid_is_rejected(make_backbone_config):
    with pytest.raises(ValueError, match=r"players_grid=\(1, 1\).*at least 2 players"):
        ShapleyConfig(backbone_config=make_backbone_config("vit"), players_grid=(1, 1))


def test_odd_num_shapley_coalitions_is_rejected(make_backbone_config):
    with pytest.raises(ValueError, match=r"num_shapley_coalitions must be .*even.*got 3"):
        ShapleyConfig(backbone_config=make_backbone_config("vit"), num_shapley_coalitions=3)


def test_bad_coalitions(vit_model, pixel_values):
    B, P = pixel_values.shape[0], 16
    with pytest.raises(TypeError, match=r"dtype torch.bool.*got torch.float32"):
        vit_model(pixel_values, coalition=torch.ones(B, P))
    with pytest.raises(TypeError, match=r"dtype torch.bool.*got torch.int64"):
        vit_model(pixel_values, coalition=torch.ones(B, P, dtype=torch.long))
    with pytest.raises(ValueError, match=r"of size P=16; got shape \(3, 4\)"):
        vit_model(pixel_values, coalition=torch.ones(B, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"coalition has 4 rows but pixel_values has 3 images"):
        vit_model(pixel_values, coalition=torch.ones(B + 1, P, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"must have 2 or 3 dimension\(s\).*\(3, 1, 1, 16\)"):
        vit_model(pixel_values, coalition=torch.ones(B, 1, 1, P, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"must have 2 or 3 dimension\(s\)"):
        vit_model(pixel_values, coalition=torch.ones(P, dtype=torch.bool))


@pytest.mark.parametrize("train", [False, True])
def test_labels_out_of_range(make_model, train, pixel_values):
    model = make_model("vit").train(train)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 2\].*got values in \[0, 3\]"):
        model(pixel_values, labels=torch.tensor([0, 3, 1]))
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 2\].*got values in \[-1, 1\]"):
        model(pixel_values, labels=torch.tensor([0, -1, 1]))
    with pytest.raises(ValueError, match=r"labels must have shape \(3,\)"):
        model(pixel_values, labels=torch.tensor([0, 1]))


def test_eval_loss_is_cross_entropy(vit_model, pixel_values):
    labels = torch.tensor([2, 0, 1])
    with torch.no_grad():
        out = vit_model(pixel_values, labels=labels)
    close(out.loss, F.cross_entropy(out.logits, labels))


# --------------------------------------------------------------------------------------
# Training mode: the joint objective inside forward
# --------------------------------------------------------------------------------------

ALPHA, LAMBDA = 0.5, 2.0


@pytest.fixture(scope="module")
def vit_training_model(make_model):
    return make_model(
        "vit",
        distill_loss_weight=ALPHA,
        shapley_loss_weight=LAMBDA,
        num_shapley_coalitions=6,
        num_distill_coalitions=2,
    )


@pytest.mark.parametrize("mode", MODES)
def test_training_forward_returns_joint_loss_and_trains_head_and_backbone(
    make_model, family, mode, pixel_values
):
    model = make_model(
        family,
        prediction_mode=mode,
        distill_loss_weight=ALPHA,
        shapley_loss_weight=LAMBDA,
        num_shapley_coalitions=6,
        num_distill_coalitions=2,
    )
    with torch.no_grad():
        eval_logits = model(pixel_values).logits
    model.train()
    labels = torch.tensor([0, 2, 1])
    out = model(pixel_values, labels=labels, example_index=torch.tensor([10, 11, 12]))

    for name in ("loss", "cls_loss", "distill_loss", "shapley_loss"):
        value = getattr(out, name)
        assert value is not None and value.shape == () and torch.isfinite(value), name
    assert out.distill_loss > 0 and out.shapley_loss > 0
    # Dropout is 0 in these configs, so the training-mode prediction is the eval prediction.
    close(out.logits, eval_logits)
    close(out.cls_loss, F.cross_entropy(eval_logits, labels))
    close(out.loss, out.cls_loss + ALPHA * out.distill_loss + LAMBDA * out.shapley_loss)

    out.loss.backward()
    head_grad = model.shapley_head.out_proj.weight.grad
    backbone_grad = model.backbone.embeddings.patch_embeddings.projection.weight.grad
    for grad in (head_grad, backbone_grad):
        assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0
    # DDP without find_unused_parameters needs every trainable parameter in the graph.
    unused = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert unused == []


def test_training_loss_is_a_pure_function_of_example_index(vit_training_model, pixel_values):
    model = vit_training_model.train()
    labels = torch.tensor([1, 1, 0])
    index = torch.tensor([3, 4, 5])
    try:
        with torch.no_grad():
            first = model(pixel_values, labels=labels, example_index=index)
            second = model(pixel_values, labels=labels, example_index=index)
            other = model(pixel_values, labels=labels, example_index=index + 100)
    finally:
        model.eval()
    for name in ("loss", "cls_loss", "distill_loss", "shapley_loss"):
        assert torch.equal(getattr(first, name), getattr(second, name)), name
    # Other examples draw other coalitions (the full-image part is the same).
    assert torch.equal(first.cls_loss, other.cls_loss)
    assert not torch.equal(first.shapley_loss, other.shapley_loss)
    assert not torch.equal(first.distill_loss, other.distill_loss)


def test_keys_to_ignore_at_inference(vit_model):
    assert {"shapley_values", "base_values"} <= set(vit_model.config.keys_to_ignore_at_inference)


def test_tokens_per_player(get_model):
    assert get_model("vit", grid=(2, 2)).tokens_per_player == math.prod(TOKEN_GRID) // 4
    assert get_model("vit", grid=(4, 4)).tokens_per_player == 1


# --------------------------------------------------------------------------------------
# Save / load
# --------------------------------------------------------------------------------------

SAVED_FIELDS = dict(
    num_shapley_coalitions=4,
    num_distill_coalitions=3,
    distill_loss_weight=0.25,
    shapley_loss_weight=3.0,
    loss_warmup_steps=7,
    center_logits=True,
    coalition_seed=5,
    coalition_batch_size=2,
)


@pytest.mark.parametrize("mode", MODES)
def test_save_and_load_round_trip(make_model, family, mode, tmp_path, pixel_values):
    grid = (2, 4)  # not square: row-major player order must survive the round trip
    model = make_model(family, players_grid=grid, prediction_mode=mode, **SAVED_FIELDS)
    B, P = pixel_values.shape[0], 8
    masks = random_coalitions(B, P, [0, 3, 5, 8], seed=9)
    with torch.no_grad():
        expected = model(pixel_values)
        expected_values = model(pixel_values, coalition=masks).logits
    model.save_pretrained(tmp_path)

    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["model_type"] == "shapley"
    assert saved["backbone_config"]["model_type"] == family
    assert saved["players_grid"] == list(grid)
    assert saved["prediction_mode"] == mode
    assert saved["hf_shapley_version"] == hf_shapley.__version__
    assert saved["transformers_version"] == transformers.__version__
    for name, value in SAVED_FIELDS.items():
        assert saved[name] == value, name
    with safe_open(str(tmp_path / "model.safetensors"), framework="pt") as weights:
        stored = list(weights.keys())
    assert not {"token_to_player", "game.token_to_player"} & set(stored)  # rebuilt on load
    assert "shapley_bias" in stored

    config = AutoConfig.from_pretrained(tmp_path)
    assert isinstance(config, ShapleyConfig)
    assert tuple(config.players_grid) == grid and config.prediction_mode == mode
    assert {"shapley_values", "base_values"} <= set(config.keys_to_ignore_at_inference)

    loaders = (
        ShapleyForImageClassification.from_pretrained,
        AutoModelForImageClassification.from_pretrained,
        AutoModel.from_pretrained,
    )
    for load in loaders:
        loaded = load(tmp_path)
        assert type(loaded) is ShapleyForImageClassification
        assert not loaded.training
        assert torch.equal(loaded.game.token_to_player, player_of_token(grid))
        assert loaded.players_grid == grid and loaded.num_players == P
        for name, value in SAVED_FIELDS.items():
            assert getattr(loaded.config, name) == value, name
        with torch.no_grad():
            out = loaded(pixel_values)
            values = loaded(pixel_values, coalition=masks).logits
        for name in ("logits", "shapley_values", "base_values"):
            assert torch.equal(getattr(out, name), getattr(expected, name)), (load, name)
        assert torch.equal(values, expected_values)


@pytest.mark.parametrize("detach", [False, True])
def test_detach_head_features_keeps_the_regression_out_of_the_backbone(
    make_model, pixel_values, detach
):
    """backbone_head with detach_head_features: the Shapley regression trains the head alone, so
    the backbone's gradients are those of cross-entropy alone (a plain fine-tune's)."""
    grads = {}
    for lam in (0.0, 1.0):
        model = make_model(
            "vit",
            players_grid=(2, 2),
            prediction_mode="backbone_head",
            detach_head_features=detach,
            shapley_loss_weight=lam,
            distill_loss_weight=0.0,
        ).train()
        out = model(pixel_values, labels=torch.tensor([0, 1, 2]), example_index=torch.arange(3))
        out.loss.backward()
        grads[lam] = torch.cat(
            [p.grad.flatten() for p in model.backbone.parameters() if p.grad is not None]
        )
        if lam:  # the head learns either way
            head = torch.cat([p.grad.flatten() for p in model.shapley_head.parameters()])
            assert torch.count_nonzero(head) > 0
    same = torch.allclose(grads[0.0], grads[1.0], rtol=0, atol=0)
    assert same == detach


def test_attention_head_explains_with_efficiency_and_reloads(make_model, pixel_values, tmp_path):
    model = make_model(
        "vit", players_grid=(2, 2), prediction_mode="backbone_head", head_num_layers=1
    )
    assert model.shapley_head.mixer is not None
    with torch.no_grad():
        out = model(pixel_values)
    torch.testing.assert_close(out.logits, out.base_values + out.shapley_values.sum(1))
    model.save_pretrained(tmp_path)
    again = hf_shapley.ShapleyForImageClassification.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        torch.testing.assert_close(
            again(pixel_values).shapley_values, out.shapley_values, rtol=0, atol=0
        )


def test_attention_head_needs_the_backbone_head_mode(make_backbone_config):
    with pytest.raises(ValueError, match="head_num_layers=1 needs prediction_mode='backbone_head'"):
        hf_shapley.ShapleyConfig(backbone_config=make_backbone_config("vit"), head_num_layers=1)
