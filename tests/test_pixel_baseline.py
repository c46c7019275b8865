"""Pixel-baseline families (ResNet, ConvNeXt, Swin) on tiny real backbones.

docs/concepts.md ("Pixel baseline"): a player is the block of pixels under its cells of the final feature map;
an absent player's pixels take the baseline; every player votes, so ``v(empty)`` is the model on
the all-baseline image ``z``, ``base_values = b + sum_j r_j(z)`` and
``shapley_values_i = r_i(x) - (1/P) sum_j r_j(z)``. Masked, target and baseline passes run
normalization layers in eval mode.

The central check: ``model(x, coalition=S)`` equals the model's own plain prediction on the
image whose absent blocks were set to the baseline by hand (blocks written out from the
definition, not from the model's pixel map). Expected values elsewhere come from independent
computations: the backbone's ``last_hidden_state`` read per cell, or the stock
``*ForImageClassification`` on the baseline image.
"""

from __future__ import annotations

import copy
import json
import warnings

import pytest
import torch
from safetensors import safe_open
from transformers import (
    AutoModel,
    AutoModelForImageClassification,
    ConvNextConfig,
    ConvNextForImageClassification,
    ResNetConfig,
    ResNetForImageClassification,
    SwinConfig,
    SwinForImageClassification,
)

from conftest import close
from hf_shapley import ShapleyConfig, ShapleyForImageClassification
from hf_shapley.evaluation.estimators import exact_shapley_values, model_game
from hf_shapley.models.coalitions import sample_shapley_kernel_coalitions
from hf_shapley.models.objective import shapley_regression_loss

pytestmark = pytest.mark.usefixtures("single_thread")

MODES = ("shapley_sum", "backbone_head")
CLASSIFIERS = {
    "resnet": ResNetForImageClassification,
    "convnext": ConvNextForImageClassification,
    "swin": SwinForImageClassification,
}
ID2LABEL = {0: "cat", 1: "dog", 2: "bird"}


def random_coalitions(num_images, num_players, sizes, seed=0):
    gen = torch.Generator().manual_seed(seed)
    masks = torch.zeros(num_images, len(sizes), num_players, dtype=torch.bool)
    for b in range(num_images):
        for j, k in enumerate(sizes):
            masks[b, j, torch.randperm(num_players, generator=gen)[:k]] = True
    return masks


def mask_by_hand(image, present, grid, baseline):
    """(C, H, W) image with the blocks of absent players set to ``baseline`` (C,) by slicing."""
    out = image.clone()
    (ph, pw), (_, H, W) = grid, image.shape
    bh, bw = H // ph, W // pw
    for p in range(ph * pw):
        if not present[p]:
            r, c = divmod(p, pw)
            out[:, r * bh : (r + 1) * bh, c * bw : (c + 1) * bw] = baseline[:, None, None]
    return out


def cells_of(model, family, pixel_values):
    """(B, N, D) per-cell features read off the backbone's own output, row-major."""
    hidden = model.backbone(pixel_values).last_hidden_state
    if family == "swin":
        assert hidden.ndim == 3  # (B, h*w, C) tokens, after Swin's final norm
        return hidden
    assert hidden.ndim == 4  # (B, C, h, w)
    cells = hidden.permute(0, 2, 3, 1).reshape(hidden.shape[0], -1, hidden.shape[1])
    return model.backbone.layernorm(cells) if family == "convnext" else cells


def player_sums(per_cell, grid, cell_grid=(4, 4)):
    """(B, N, K) -> (B, P, K) by explicit loops over the definition of a player's cells."""
    (gh, gw), (ph, pw) = cell_grid, grid
    out = per_cell.new_zeros(per_cell.shape[0], ph * pw, per_cell.shape[-1])
    for r in range(gh):
        for c in range(gw):
            out[:, (r // (gh // ph)) * pw + c // (gw // pw)] += per_cell[:, r * gw + c]
    return out


def baseline_image(model, batch=1):
    channels, (H, W) = 3, model.image_size
    value = torch.tensor(model.config.pixel_baseline, dtype=torch.float32).reshape(-1)
    return value.expand(channels)[None, :, None, None].expand(batch, -1, H, W).clone()


# --------------------------------------------------------------------------------------
# Geometry
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("config", "size"),
    [
        (ResNetConfig(), 64),  # ResNet-50 layout: 4 stages, bottlenecks
        (ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1]), 36),
        (
            ResNetConfig(
                embedding_size=8,
                hidden_sizes=[8, 16],
                depths=[1, 1],
                layer_type="basic",
                downsample_in_first_stage=True,
            ),
            50,
        ),
        (ConvNextConfig(num_stages=2, hidden_sizes=[8, 16], depths=[1, 1]), 40),
        (ConvNextConfig(num_stages=3, hidden_sizes=[8, 8, 8], depths=[1, 1, 1]), 66),
        (SwinConfig(embed_dim=8, depths=[1, 1, 1], num_heads=[2, 2, 2], window_size=2), 36),
        (SwinConfig(embed_dim=8, depths=[1, 1], num_heads=[2, 2], window_size=4), 44),
    ],
    ids=lambda v: getattr(v, "model_type", str(v)),
)
def test_feature_grid_is_the_backbones_own(config, size):
    if hasattr(config, "image_size"):
        config.image_size = size
    model = ShapleyForImageClassification(
        ShapleyConfig(backbone_config=config, num_labels=2, image_size=size)
    ).eval()
    with torch.no_grad():
        hidden = model.backbone(torch.zeros(1, 3, size, size)).last_hidden_state
    if config.model_type == "swin":
        expected = hidden.shape[1]
        assert model.token_grid[0] * model.token_grid[1] == expected
    else:
        assert model.token_grid == tuple(hidden.shape[2:])
    assert model.players_grid == model.token_grid  # default: one cell per player


def test_players_grid_must_divide_the_feature_grid(make_backbone_config):
    config = ShapleyConfig(
        backbone_config=make_backbone_config("resnet"),
        num_labels=3,
        image_size=32,
        players_grid=(3, 3),
    )
    with pytest.raises(
        ValueError,
        match=r"players_grid=\(3, 3\) does not divide the backbone's 4 x 4 final feature grid\. "
        r"Choose rows from \[1, 2, 4\] and columns from \[1, 2, 4\]",
    ):
        ShapleyForImageClassification(config)


def test_bad_pixel_baseline_is_rejected(make_backbone_config):
    with pytest.raises(ValueError, match="pixel_baseline must be a finite number"):
        ShapleyConfig(backbone_config=make_backbone_config("resnet"), pixel_baseline=[0.0, "a"])
    config = ShapleyConfig(
        backbone_config=make_backbone_config("resnet"), num_labels=2, pixel_baseline=[0.0, 1.0]
    )
    with pytest.raises(ValueError, match="pixel_baseline has 2 values but the backbone reads 3"):
        ShapleyForImageClassification(config)


def test_image_size_is_checked(get_model):
    model = get_model("resnet")
    with pytest.raises(ValueError, match=r"size \(64, 64\) but the backbone was built for 32 x 32"):
        model(torch.zeros(1, 3, 64, 64))


# --------------------------------------------------------------------------------------
# Invariants (eval mode)
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_logits_base_values_and_efficiency(get_model, pixel_family, mode, pixel_values):
    model = get_model(pixel_family, mode)
    B, P, K = pixel_values.shape[0], 16, 3
    with torch.no_grad():
        out = model(pixel_values)
        v_all = model(pixel_values, coalition=torch.ones(B, P, dtype=torch.bool)).logits
        v_empty = model(pixel_values, coalition=torch.zeros(B, P, dtype=torch.bool)).logits
        on_baseline = model(baseline_image(model)).logits
    assert out.logits.shape == (B, K) and out.base_values.shape == (B, K)
    assert out.shapley_values.shape == (B, P, K)
    close(out.logits, out.base_values + out.shapley_values.sum(1))
    close(out.shapley_values.sum(1), v_all - v_empty)
    close(out.logits, v_all)
    # v(empty) is the model's own prediction on the all-baseline image.
    close(out.base_values, on_baseline.expand(B, -1))
    close(v_empty, on_baseline.expand(B, -1))


@pytest.mark.parametrize("center_votes", [None, False])
def test_soft_voting_values_are_normalized_against_the_baseline(
    make_model, pixel_family, center_votes
):
    model = make_model(pixel_family, players_grid=(2, 2), center_votes=center_votes)
    # Centered votes are the default for the pixel-baseline families.
    assert model.center_votes is (center_votes is None)

    def votes(cells):
        v = model.shapley_head(cells)
        return v - v.mean(-1, keepdim=True) if center_votes is None else v

    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        out = model(x)
        r_x = player_sums(votes(cells_of(model, pixel_family, x)), (2, 2))
        r_z = player_sums(votes(cells_of(model, pixel_family, baseline_image(model))), (2, 2))
    if center_votes is None:  # no class-common direction left in the values
        close(out.shapley_values.sum(-1), torch.zeros(2, 4))
    b = model.shapley_bias
    close(out.shapley_values, r_x - r_z.sum(1, keepdim=True) / 4)
    close(out.base_values, (b + r_z.sum(1)).expand(2, -1))
    close(out.logits, b + r_x.sum(1))


@pytest.mark.parametrize("grid", [(2, 2), (4, 4), (2, 4)])
@pytest.mark.parametrize("mode", MODES)
def test_coalition_is_the_model_on_the_baseline_filled_image(
    make_model, pixel_family, mode, grid, pixel_values
):
    baseline = [0.5, -1.0, 0.25]  # per channel, not the default 0
    model = make_model(
        pixel_family, players_grid=grid, prediction_mode=mode, pixel_baseline=baseline
    )
    P = grid[0] * grid[1]
    sizes = sorted({0, 1, P // 2, P - 1, P})
    masks = random_coalitions(pixel_values.shape[0], P, sizes, seed=P)
    with torch.no_grad():
        values = model(pixel_values, coalition=masks).logits
        masked = torch.stack(
            [
                mask_by_hand(image, m, grid, torch.tensor(baseline))
                for image, image_masks in zip(pixel_values, masks, strict=True)
                for m in image_masks
            ]
        )
        expected = model(masked).logits.reshape(values.shape)
    assert values.shape == (*masks.shape[:2], 3) and values.dtype == torch.float32
    close(values, expected)


def test_coalition_batch_size_does_not_change_values(make_model, pixel_family, pixel_values):
    model = make_model(pixel_family, coalition_batch_size=2)
    masks = random_coalitions(3, 16, [0, 3, 8, 15, 16], seed=4)
    with torch.no_grad():
        chunked = model(pixel_values, coalition=masks).logits
        model.config.coalition_batch_size = 1000
        whole = model(pixel_values, coalition=masks).logits
    close(chunked, whole)


@pytest.mark.parametrize("mode", MODES)
def test_exact_shapley_values_of_the_game_satisfy_efficiency(get_model, pixel_family, mode):
    model = get_model(pixel_family, mode, (2, 2))
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(8))
    phi = exact_shapley_values(model_game(model, x), 4)  # (P, B, K)
    with torch.no_grad():
        out = model(x)
    close(phi.sum(0), out.logits - out.base_values)


@pytest.mark.parametrize("mode", MODES)
def test_bf16_autocast_keeps_fp32_outputs_and_efficiency(
    get_model, pixel_family, mode, pixel_values
):
    model = get_model(pixel_family, mode)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(pixel_values)
        values = model(pixel_values, coalition=random_coalitions(3, 16, [3, 16], seed=5)).logits
    for tensor in (out.logits, out.shapley_values, out.base_values, values):
        assert tensor.dtype == torch.float32 and torch.isfinite(tensor).all()
    close(out.logits, out.base_values + out.shapley_values.sum(1))


# --------------------------------------------------------------------------------------
# The cached v(empty)
# --------------------------------------------------------------------------------------


def count_backbone_images(model):
    """A list that receives the batch size of every backbone call, and the hook handle."""
    seen = []
    handle = model.backbone.register_forward_pre_hook(
        lambda module, args, kwargs: seen.append(
            (args[0] if args else kwargs["pixel_values"]).shape[0]
        ),
        with_kwargs=True,
    )
    return seen, handle


def test_baseline_pass_is_cached_in_eval_mode_only(make_model, pixel_family, pixel_values):
    model = make_model(pixel_family)
    seen, handle = count_backbone_images(model)
    try:
        with torch.no_grad():
            first = model(pixel_values)
            assert seen == [3, 1]  # the batch, then the one all-baseline image
            second = model(pixel_values[:2])
            assert seen == [3, 1, 2]  # cached
            model.train()
            model.eval()
            third = model(pixel_values)
            assert seen == [3, 1, 2, 3, 1]  # eval() (train(False)) dropped the cache
            model.train()
            model(pixel_values)
            model(pixel_values)
            assert seen == [3, 1, 2, 3, 1, 3, 1, 3, 1]  # never cached in training mode
    finally:
        handle.remove()
        model.eval()
    assert torch.equal(first.base_values[:2], second.base_values)
    assert torch.equal(first.base_values, third.base_values)


def test_weight_loading_drops_the_cached_baseline(make_model, pixel_family, pixel_values, tmp_path):
    model = make_model(pixel_family, seed=0)
    other = make_model(pixel_family, seed=1)
    with torch.no_grad():
        before = model(pixel_values).base_values  # fills the cache
        model.load_state_dict(other.state_dict())
        after = model(pixel_values).base_values
        expected = other(pixel_values).base_values
        independent = model(baseline_image(model), coalition=torch.ones(1, 16, dtype=torch.bool))
    assert not torch.allclose(before, after)
    close(after, expected)
    close(after, independent.logits.expand(3, -1))

    # from_pretrained: the loaded model's v(empty) is that of the saved weights.
    other.save_pretrained(tmp_path)
    loaded = ShapleyForImageClassification.from_pretrained(tmp_path)
    with torch.no_grad():
        assert torch.equal(loaded(pixel_values).base_values, expected)


def test_baseline_cached_under_inference_mode_serves_autograd(make_model, pixel_values):
    model = make_model("resnet")
    with torch.inference_mode():
        expected = model(pixel_values).base_values
    x = pixel_values.clone().requires_grad_(True)
    out = model(x)  # reuses the cached v(empty), with autograd on
    out.shapley_values[:, :, 0].sum().backward()
    assert torch.equal(out.base_values, expected)
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_moving_dtype_drops_the_cached_baseline(make_model, pixel_values):
    model = make_model("resnet")
    with torch.no_grad():
        model(pixel_values)
        model.double()
        out = model(pixel_values.double())
    assert model.game._empty_cache[0][1] == torch.float64
    close(out.logits, out.base_values + out.shapley_values.sum(1))


# --------------------------------------------------------------------------------------
# Training: eval-mode normalization for masked passes, the regression on normalized values
# --------------------------------------------------------------------------------------


def batchnorm_state(module):
    return {
        name: tensor.clone()
        for name, tensor in module.state_dict().items()
        if name.endswith(("running_mean", "running_var", "num_batches_tracked"))
    }


@pytest.mark.parametrize("mode", MODES)
def test_masked_passes_leave_batchnorm_statistics_alone(make_model, mode, pixel_values):
    model = make_model("resnet", prediction_mode=mode, num_shapley_coalitions=6)
    reference = copy.deepcopy(model.backbone).train()
    start = batchnorm_state(model.backbone)
    assert len(start) == 3 * sum(
        1 for m in model.backbone.modules() if isinstance(m, torch.nn.BatchNorm2d)
    )
    model.train()
    try:
        with torch.no_grad():  # value function calls in training mode: no update at all
            model(pixel_values, coalition=random_coalitions(3, 16, [2, 9], seed=1))
        assert all(torch.equal(v, start[k]) for k, v in batchnorm_state(model.backbone).items())

        out = model(pixel_values, labels=torch.tensor([0, 1, 2]), example_index=torch.arange(3))
        out.loss.backward()
    finally:
        model.eval()
    assert out.distill_loss > 0 and out.shapley_loss > 0
    # Exactly the one unmasked pass updated them: as one plain training forward of the backbone.
    with torch.no_grad():
        reference(pixel_values)
    expected = batchnorm_state(reference)
    after = batchnorm_state(model.backbone)
    for name, value in after.items():
        close(value, expected[name])
        if name.endswith("num_batches_tracked"):
            assert int(value) == int(start[name]) + 1, name


def test_frozen_classifier_never_changes_batchnorm_statistics(make_model, pixel_values):
    model = make_model("resnet", prediction_mode="backbone_head", train_backbone=False)
    with torch.no_grad():
        before = model(pixel_values).logits
    start = batchnorm_state(model.backbone)
    model.train()
    assert not model.backbone.training and model.shapley_head.training
    out = model(pixel_values, labels=torch.tensor([0, 1, 2]), example_index=torch.arange(3))
    assert torch.equal(out.logits, before)  # eval-mode backbone in the training step too
    out.loss.backward()
    model.eval()
    assert all(torch.equal(v, start[k]) for k, v in batchnorm_state(model.backbone).items())


def test_regression_uses_the_normalized_values(make_model, pixel_family, pixel_values):
    m = 6
    model = make_model(
        pixel_family, players_grid=(2, 2), num_shapley_coalitions=m, distill_loss_weight=0.0
    )
    index = torch.tensor([4, 5, 6])
    model.train()
    try:
        out = model(pixel_values, labels=torch.tensor([2, 0, 1]), example_index=index)
        masks = sample_shapley_kernel_coalitions(
            4, m, seed=model.config.coalition_seed + 1, epoch=0, example_indices=index
        )
        with torch.no_grad():
            values = model(pixel_values, coalition=masks).logits  # eval-mode norms, as in the step
    finally:
        model.eval()
    expected = shapley_regression_loss(out.shapley_values, masks, values - out.base_values[:, None])
    close(out.shapley_loss, expected)
    # The values regressed are r(x) minus the baseline share, not the raw head outputs.
    assert out.shapley_values.sum(1).sub(out.logits - out.base_values).abs().max() < 1e-4


@pytest.mark.parametrize("mode", MODES)
def test_training_step_trains_every_trainable_parameter(
    make_model, pixel_family, mode, pixel_values
):
    model = make_model(pixel_family, prediction_mode=mode, num_shapley_coalitions=4)
    model.train()
    out = model(pixel_values, labels=torch.tensor([0, 2, 1]), example_index=torch.arange(3))
    for name in ("loss", "cls_loss", "distill_loss", "shapley_loss"):
        value = getattr(out, name)
        assert value.shape == () and torch.isfinite(value), name
    out.loss.backward()
    model.eval()
    unused = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert unused == []  # DDP without find_unused_parameters
    grads = [p.grad.abs().sum() for p in model.backbone.parameters() if p.requires_grad]
    assert sum(grads) > 0


# --------------------------------------------------------------------------------------
# Save / load
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_save_and_load_round_trip(make_model, pixel_family, mode, tmp_path, pixel_values):
    grid = (2, 4)
    model = make_model(
        pixel_family, players_grid=grid, prediction_mode=mode, pixel_baseline=[0.1, 0.2, -0.3]
    )
    masks = random_coalitions(3, 8, [0, 3, 8], seed=9)
    with torch.no_grad():
        expected = model(pixel_values)
        expected_values = model(pixel_values, coalition=masks).logits
    model.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["backbone_config"]["model_type"] == pixel_family
    assert saved["image_size"] == [32, 32] and saved["pixel_baseline"] == [0.1, 0.2, -0.3]
    with safe_open(str(tmp_path / "model.safetensors"), framework="pt") as weights:
        stored = set(weights.keys())
    assert not {"pixel_to_player", "baseline_pixels", "token_to_player"} & {
        k.split(".")[-1] for k in stored
    }

    for load in (
        ShapleyForImageClassification.from_pretrained,
        AutoModelForImageClassification.from_pretrained,
        AutoModel.from_pretrained,
    ):
        loaded = load(tmp_path)
        assert type(loaded) is ShapleyForImageClassification and not loaded.training
        assert torch.equal(loaded.game.baseline_pixels, model.game.baseline_pixels)
        assert torch.equal(loaded.game.pixel_to_player, model.game.pixel_to_player)
        with torch.no_grad():
            out = loaded(pixel_values)
            values = loaded(pixel_values, coalition=masks).logits
        for name in ("logits", "shapley_values", "base_values"):
            assert torch.equal(getattr(out, name), getattr(expected, name)), (load, name)
        assert torch.equal(values, expected_values)


# --------------------------------------------------------------------------------------
# Wrapping a stock classifier
# --------------------------------------------------------------------------------------


def make_classifier(make_backbone_config, family, seed=0):
    torch.manual_seed(seed)
    config = make_backbone_config(
        family, id2label=ID2LABEL, label2id={v: k for k, v in ID2LABEL.items()}
    )
    classifier = CLASSIFIERS[family](config)
    with torch.no_grad():
        head = classifier.classifier[-1] if family == "resnet" else classifier.classifier
        head.bias.normal_()
        # Non-trivial BatchNorm statistics, as a trained ResNet has.
        for module in classifier.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.normal_(0, 0.5)
                module.running_var.uniform_(0.5, 2.0)
    return classifier.eval()


def test_frozen_classifier_predictions_are_bit_identical(
    make_backbone_config, pixel_family, pixel_values
):
    classifier = make_classifier(make_backbone_config, pixel_family)
    model = ShapleyForImageClassification.from_backbone(
        classifier, train_backbone=False, players_grid=(2, 2), image_size=32
    ).eval()
    assert model.config.prediction_mode == "backbone_head" and model.config.id2label == ID2LABEL
    with torch.no_grad():
        reference = classifier(pixel_values).logits
        on_baseline = classifier(torch.zeros(1, 3, 32, 32)).logits
        out = model(pixel_values)
        v = model(pixel_values, coalition=torch.tensor([[1, 0, 0, 1]] * 3, dtype=torch.bool)).logits
        masked = pixel_values.clone()
        masked[:, :, :16, 16:] = 0
        masked[:, :, 16:, :16] = 0
        v_expected = classifier(masked).logits
    assert torch.equal(out.logits, reference)
    close(out.base_values, on_baseline.expand(3, -1))  # v(empty): the classifier on z
    close(out.logits, out.base_values + out.shapley_values.sum(1))
    close(v, v_expected)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    # Only the Shapley head (the recipe's attention layer and MLP) trains.
    assert trainable == {f"shapley_head.{n}" for n, _ in model.shapley_head.named_parameters()}

    model.train()
    step = model(pixel_values, labels=torch.tensor([0, 1, 2]), example_index=torch.arange(3))
    step.loss.backward()
    torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1.0).step()
    model.eval()
    with torch.no_grad():
        after = model(pixel_values)
    assert torch.equal(after.logits, reference)
    assert not torch.equal(after.shapley_values, out.shapley_values)


def test_trainable_classifier_starts_from_its_predictions(make_backbone_config, pixel_values):
    classifier = make_classifier(make_backbone_config, "swin")
    model = ShapleyForImageClassification.from_backbone(
        classifier, players_grid=(2, 2), image_size=32, train_backbone=True
    )
    assert model.config.train_backbone and "classifier.weight" in {
        n for n, p in model.named_parameters() if p.requires_grad
    }
    with torch.no_grad():
        assert torch.equal(model.eval()(pixel_values).logits, classifier(pixel_values).logits)


def test_classifier_from_a_local_directory(make_backbone_config, tmp_path, pixel_values):
    classifier = make_classifier(make_backbone_config, "resnet")
    classifier.save_pretrained(tmp_path)
    model = ShapleyForImageClassification.from_backbone(
        tmp_path, train_backbone=False, players_grid=(2, 2), image_size=32
    ).eval()
    assert model.config.prediction_mode == "backbone_head" and model.config.image_size == [32, 32]
    with torch.no_grad():
        assert torch.equal(model(pixel_values).logits, classifier(pixel_values).logits)


@pytest.mark.parametrize("family", ["resnet", "swin"])
def test_soft_voting_from_an_average_pool_linear_classifier_reproduces_it(
    make_backbone_config, family, pixel_values
):
    classifier = make_classifier(make_backbone_config, family)
    exact = ShapleyForImageClassification.from_backbone(
        classifier, prediction_mode="shapley_sum", image_size=32, center_votes=False
    ).eval()
    centered = ShapleyForImageClassification.from_backbone(
        classifier, prediction_mode="shapley_sum", image_size=32
    ).eval()
    assert exact.classifier is None and exact.config.id2label == ID2LABEL
    with torch.no_grad():
        reference = classifier(pixel_values).logits
        out = exact(pixel_values)
        out_centered = centered(pixel_values)
    assert reference.abs().max() > 0.1
    close(out.logits, reference)  # the classifier's logits
    close(out.logits, out.base_values + out.shapley_values.sum(1))
    # Centered votes (the default): the same logits up to a per-image shift over classes.
    bias = (classifier.classifier[-1] if family == "resnet" else classifier.classifier).bias
    shift = reference.mean(-1, keepdim=True) - bias.mean()
    close(out_centered.logits, reference - shift)
    close(out_centered.logits.softmax(-1), reference.softmax(-1))


# --------------------------------------------------------------------------------------
# Gradient checkpointing
# --------------------------------------------------------------------------------------


def checkpointed_layers(model):
    return [m for m in model.modules() if getattr(m, "gradient_checkpointing", False)]


@pytest.mark.parametrize("family", ["swin", "vit"])
def test_gradient_checkpointing_gives_the_same_gradients(make_model, family, pixel_values):
    def grads(model):
        model.zero_grad(set_to_none=True)
        model.train()
        out = model(pixel_values, labels=torch.tensor([1, 0, 2]), example_index=torch.arange(3))
        out.loss.backward()
        model.eval()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    model = make_model(family, num_shapley_coalitions=4)
    plain = grads(model)
    model.activation_checkpointing_enable()
    layers = checkpointed_layers(model)
    assert layers and all(m in set(model.backbone.modules()) for m in layers)
    assert all(m._gradient_checkpointing_func.keywords["use_reentrant"] is False for m in layers)
    assert model.is_activation_checkpointing
    checkpointed = grads(model)
    assert plain.keys() == checkpointed.keys()
    for name, grad in plain.items():
        close(checkpointed[name], grad, rtol=1e-4)
    model.activation_checkpointing_disable()
    assert not checkpointed_layers(model)

    # The deprecated entry point (what older Trainers call) reaches the same delegation.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    assert checkpointed_layers(model)
    model.activation_checkpointing_disable()


@pytest.mark.parametrize(("family", "name"), [("resnet", "ResNet"), ("convnext", "ConvNeXt")])
def test_gradient_checkpointing_unsupported_family_is_a_clear_error(make_model, family, name):
    model = make_model(family)
    with pytest.raises(
        ValueError, match=rf"Gradient checkpointing is not supported for {name} backbones"
    ):
        model.activation_checkpointing_enable()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        with pytest.raises(ValueError, match=rf"not supported for {name} backbones"):
            model.gradient_checkpointing_enable()


# --------------------------------------------------------------------------------------
# Class-centered votes
# --------------------------------------------------------------------------------------


def test_center_votes_defaults_and_token_families(make_model, pixel_values):
    assert make_model("resnet").center_votes is True
    assert make_model("resnet", prediction_mode="backbone_head").config.center_votes is None
    assert make_model("vit").center_votes is False  # token-removal families keep raw votes
    model = make_model("vit", center_votes=True)
    plain = make_model("vit")  # same seed, same weights
    B, P = 3, 16
    with torch.no_grad():
        out, ref = model(pixel_values), plain(pixel_values)
        v_all = model(pixel_values, coalition=torch.ones(B, P, dtype=torch.bool)).logits
        v_empty = model(pixel_values, coalition=torch.zeros(B, P, dtype=torch.bool)).logits
    close(out.shapley_values.sum(-1), torch.zeros(B, P))
    close(out.shapley_values.sum(1), v_all - v_empty)
    close(out.logits.softmax(-1), ref.logits.softmax(-1))  # predictions unchanged
