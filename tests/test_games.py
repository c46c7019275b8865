"""The game interface (games_shapley.py) and the pure objective (objective.py).

* every family's game answers ``explain`` / ``values`` / ``empty`` consistently with the model's
  public ``coalition=`` API and with efficiency;
* a new way of removing players is one new game class: a token-removal game that masks absent
  tokens as attention keys (one sequence per coalition, no packing) plugs into an unchanged
  model and gives the same values as the packed game;
* the objective is a function of tensors: checked against a hand-written computation, and its
  module imports no model code;
* ``forward`` honours ``return_dict=False`` on every path.
"""

from __future__ import annotations

import ast
import inspect

import pytest
import torch
import torch.nn.functional as F

import hf_shapley.models.objective as objective
from conftest import FAMILIES, PIXEL_FAMILIES, close
from hf_shapley.models.games_shapley import (
    PixelBaselineGame,
    PlayerView,
    ShapleyGame,
    TokenRemovalGame,
    frozen_statistics,
)

ALL_FAMILIES = FAMILIES + PIXEL_FAMILIES
MODES = ("shapley_sum", "backbone_head")


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("family", ALL_FAMILIES)
def test_game_interface_matches_the_public_value_function(get_model, family, mode, pixel_values):
    model = get_model(family, mode, grid=(2, 2))
    game, readout = model.game, model.readout
    expected_class = PixelBaselineGame if family in PIXEL_FAMILIES else TokenRemovalGame
    assert isinstance(game, expected_class)
    coalitions = torch.rand(3, 6, 4, generator=torch.Generator().manual_seed(0)) > 0.5
    with torch.no_grad():
        context = game.prepare(pixel_values)
        explanation = game.explain(context, readout)
        values = game.values(context, coalitions, readout)
        empty = game.base_values(context, readout)
        everyone = torch.ones(3, 1, 4, dtype=torch.bool)
        public = model(pixel_values, coalition=torch.cat([coalitions, everyone, ~everyone], 1))
    assert values.shape == (3, 6, model.num_labels) and empty.shape == (3, model.num_labels)
    close(values, public.logits[:, :6])
    close(explanation.logits, public.logits[:, 6])  # v(all)
    close(empty, public.logits[:, 7])  # v(empty)
    close(explanation.base_values, empty)
    close(explanation.base_values + explanation.shapley_values.sum(1), explanation.logits)


class AttentionMaskGame(TokenRemovalGame):
    """Token removal by masking absent tokens as attention keys, one sequence per coalition.

    Present tokens then attend to exactly what they would see with the absent tokens dropped,
    so the values equal the packed game's: written only against the game interface.
    """

    removal = "attention_mask"

    def values(self, context, coalitions, readout, *, dropout=True, chunk_size=None):
        B, M, P = coalitions.shape
        s = self.num_special_tokens
        present = coalitions.reshape(B * M, P)[:, self.token_to_player]  # (n, N)
        keys = torch.cat([present.new_ones(B * M, s), present], dim=1)
        mask = torch.zeros(keys.shape, dtype=context.dtype)
        mask.masked_fill_(~keys, torch.finfo(context.dtype).min)
        sequence = context.repeat_interleave(M, dim=0)
        with frozen_statistics(self.backbone, *readout.modules(), disable_dropout=not dropout):
            states = self.adapter.encode_tokens(self.backbone, sequence, mask[:, None, None, :])
            patches = states[:, s:]
            view = PlayerView(
                patches,
                present,
                lambda: self.adapter.classifier_features(states[:, :s], patches, present),
            )
            return readout.value(view).reshape(B, M, -1)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("family", FAMILIES)
def test_a_new_game_plugs_into_an_unchanged_model(make_model, family, mode, pixel_values):
    model = make_model(family, players_grid=(2, 2), prediction_mode=mode)
    coalitions = torch.rand(3, 5, 4, generator=torch.Generator().manual_seed(1)) > 0.5
    coalitions[:, 0] = True  # every player present
    with torch.no_grad():
        packed = model(pixel_values, coalition=coalitions).logits
        full = model(pixel_values)
        model.game = AttentionMaskGame(model.config, model.adapter, model.backbone)
        masked = model(pixel_values, coalition=coalitions).logits
        explained = model(pixel_values)
    assert isinstance(model.game, ShapleyGame)
    # Masked keys are not bit-identical to dropped tokens (softmax over more entries).
    close(masked, packed, rtol=1e-4)
    close(masked[:, 0], full.logits, rtol=1e-4)
    close(explained.shapley_values, full.shapley_values)
    close(explained.logits, full.logits)


def test_pixel_game_caches_empty_only_in_eval_mode(make_model, pixel_values):
    model = make_model("resnet", players_grid=(2, 2))
    with torch.no_grad():
        first = model(pixel_values).base_values
        assert model.game._empty_cache is not None
        # The cache holds the baseline image's features, not values: a head edit shows at once.
        model.shapley_head.out_proj.bias[0] += 1.0
        doubled = model(pixel_values).base_values
    assert not torch.allclose(first, doubled)
    model.train()
    assert model.game._empty_cache is None


def test_token_game_keeps_one_empty_row_in_eval_mode(make_model, pixel_values):
    """The special tokens alone do not depend on the image: inference encodes them once."""
    model = make_model("vit", players_grid=(2, 2), prediction_mode="backbone_head").eval()
    nobody = torch.zeros(pixel_values.shape[0], model.num_players, dtype=torch.bool)
    with torch.no_grad():
        first = model(pixel_values).base_values
        assert model.game._empty_cache is not None
        # v(empty) through the coalition passes, which never read the cache.
        close(first, model(pixel_values, coalition=nobody).logits)
        model.classifier.bias[0] += 1.0
        moved = model(pixel_values).base_values
    close(moved[:, 0], first[:, 0] + 1.0)
    model.train()
    assert model.game._empty_cache is None


# ------------------------------------------------------------------ the objective
def test_objective_module_is_pure():
    tree = ast.parse(inspect.getsource(objective))
    imported = {
        node.module or ""
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom)
        for _ in node.names
    } | {
        alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
    }
    assert not any("modeling" in name or "games" in name for name in imported), imported
    for name in ("joint_objective", "shapley_regression_loss", "self_distillation_loss"):
        parameters = inspect.signature(getattr(objective, name)).parameters
        assert "model" not in parameters


def test_joint_objective_against_a_hand_computation():
    g = torch.Generator().manual_seed(3)
    B, P, K, m, d = 4, 5, 3, 6, 2
    logits = torch.randn(B, K, generator=g, requires_grad=True)
    labels = torch.tensor([0, 2, 1, 2])
    phi = torch.randn(B, P, K, generator=g, requires_grad=True)
    base = torch.randn(B, K, generator=g)
    coalitions = torch.rand(B, m, P, generator=g) > 0.5
    values = torch.randn(B, m, K, generator=g, requires_grad=True)
    masked = torch.randn(B, d, K, generator=g, requires_grad=True)
    out = objective.joint_objective(
        logits,
        labels,
        alpha=0.3,
        lam=2.0,
        masked_logits=masked,
        shapley_values=phi,
        base_values=base,
        coalitions=coalitions,
        coalition_values=values,
    )
    # By hand: cross-entropy, KL(p || q_S) and the per-image normalized regression.
    ce = -F.log_softmax(logits, -1)[torch.arange(B), labels].mean()
    p = F.softmax(logits, -1)[:, None]
    kl = (p * (p.log() - F.log_softmax(masked, -1))).sum(-1).mean()
    targets = values - base[:, None]
    residual = targets - (coalitions.float()[..., None] * phi[:, None]).sum(2)
    per_image = residual.pow(2).mean((1, 2)) / (targets.pow(2).mean((1, 2)) + 1e-4)
    expected = ce + 0.3 * kl + 2.0 * per_image.mean()
    close(out.loss, expected)
    close(out.cls_loss, ce)
    close(out.distill_loss, kl)
    close(out.shapley_loss, per_image.mean())
    # Stop-gradient: the targets get no gradient; the teacher neither.
    out.loss.backward()
    assert values.grad is None or torch.count_nonzero(values.grad) == 0
    grad_ce = torch.autograd.grad(ce, logits)[0]
    close(logits.grad, grad_ce)  # only cross-entropy reaches the full-image logits


def test_joint_objective_skips_terms_without_their_tensors():
    logits = torch.randn(2, 3)
    out = objective.joint_objective(logits, torch.tensor([0, 1]), alpha=1.0, lam=1.0)
    assert out.distill_loss == 0 and out.shapley_loss == 0
    close(out.loss, F.cross_entropy(logits, torch.tensor([0, 1])))


def test_warm_up_step_is_a_forward_argument(make_model, pixel_values):
    """The loss weights ramp with ``global_step``: at step 0 of a 10-step warm-up the Shapley
    term weighs 1/10 of what it weighs at step 9."""
    model = make_model("vit", players_grid=(2, 2), loss_warmup_steps=10, distill_loss_weight=0)
    model.train()
    labels = torch.tensor([0, 1, 2])
    index = torch.arange(3)
    losses = {}
    for step in (0, 9):
        out = model(pixel_values, labels=labels, example_index=index, global_step=step)
        losses[step] = (out.loss - out.cls_loss).item() / out.shapley_loss.item()
    assert losses[0] == pytest.approx(0.1, rel=1e-4)
    assert losses[9] == pytest.approx(1.0, rel=1e-4)


@pytest.mark.parametrize("family", ["vit", "resnet"])
def test_return_dict_false_on_every_path(make_model, family, pixel_values):
    model = make_model(family, players_grid=(2, 2))
    labels = torch.tensor([0, 1, 2])
    coalition = torch.ones(3, 4, dtype=torch.bool)
    with torch.no_grad():
        explained = model(pixel_values, return_dict=False)
        valued = model(pixel_values, coalition=coalition, return_dict=False)
    model.train()
    trained = model(pixel_values, labels=labels, example_index=torch.arange(3), return_dict=False)
    for result in (explained, valued, trained):
        assert isinstance(result, tuple)
    assert len(explained) == 3  # logits, shapley_values, base_values
    close(valued[0], explained[0])
    assert trained[0].ndim == 0  # the loss first


def test_unsupported_forward_arguments_fail_clearly(get_model, pixel_values):
    with pytest.raises(TypeError, match="output_attentions"):
        get_model("vit")(pixel_values, output_attentions=True)
