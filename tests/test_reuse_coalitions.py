"""``reuse_shapley_coalitions``: a frozen game's values are computed once per example.

With a frozen classifier the head learns a fixed game, so the masked passes of the first epoch
serve every later one. These tests check that a second visit makes no masked pass, that it
gives the loss a fresh computation gives, that the Trainer's example indices fill the store,
and that a game that trains refuses the option; and that the kept full passes
(``FullPassCache``) serve a later epoch with no encoder pass at all, the same head training as
without them, within their memory budget.
"""

from __future__ import annotations

import pytest
import torch
from transformers import TrainerCallback

from conftest import NUM_LABELS
from hf_shapley.models.configuration_shapley import ShapleyConfig
from hf_shapley.training.trainer import ShapleyTrainer
from test_trainer import make_args, make_dataset

pytestmark = pytest.mark.usefixtures("single_thread")

GRID = (2, 2)
FROZEN = dict(
    prediction_mode="backbone_head",
    train_backbone=False,
    distill_loss_weight=0.0,
    center_logits=True,
    num_shapley_coalitions=6,
    head_hidden_size=16,
    head_num_layers=1,
)


def count_encoder_rows(model) -> list[int]:
    """Rows through the backbone's first encoder block, per call (a forward hook)."""
    rows: list[int] = []
    first = model.adapter.layers(model.backbone)[0]
    first.register_forward_hook(lambda module, args, output: rows.append(args[0].shape[0]))
    return rows


def joint_loss(model, x, y, index, epoch):
    return model.train()(
        x, labels=y, example_index=index, epoch=epoch, global_step=100
    ).shapley_loss.detach()


def test_second_visit_makes_no_masked_pass_and_gives_the_fresh_loss(make_model):
    torch.manual_seed(0)
    reused = make_model("vit", players_grid=GRID, reuse_shapley_coalitions=True, **FROZEN)
    fresh = make_model("vit", players_grid=GRID, **FROZEN)
    fresh.load_state_dict(reused.state_dict())
    x, y, index = torch.randn(3, 3, 32, 32), torch.tensor([0, 1, 2]), torch.tensor([5, 9, 11])

    rows = count_encoder_rows(reused)
    first = joint_loss(reused, x, y, index, epoch=0)
    first_rows = sum(rows)
    assert len(reused.coalition_value_cache) == 3
    rows.clear()
    second = joint_loss(reused, x, y, index, epoch=3)  # a later epoch: the same coalitions
    # Only the full images (and the special tokens alone, for v(empty)) pass the encoder now:
    # no packed pair of coalitions.
    assert sum(rows) <= 2 * len(x) < first_rows
    torch.testing.assert_close(second, first)
    # The kept values are the game's: a model that recomputes them at epoch 0 agrees.
    torch.testing.assert_close(joint_loss(fresh, x, y, index, epoch=0), first)
    # Without reuse, a later epoch draws other coalitions: another loss.
    assert not torch.allclose(joint_loss(fresh, x, y, index, epoch=3), first)


def test_partly_known_batch_recomputes_and_counter_indices_keep_nothing(make_model):
    model = make_model("vit", players_grid=GRID, reuse_shapley_coalitions=True, **FROZEN)
    x, y = torch.randn(2, 3, 32, 32), torch.tensor([0, 1])
    joint_loss(model, x[:1], y[:1], torch.tensor([0]), epoch=0)
    rows = count_encoder_rows(model)
    joint_loss(model, x, y, torch.tensor([0, 1]), epoch=1)  # example 1 is new
    assert sum(rows) > 2 * len(x) and len(model.coalition_value_cache) == 2
    model.coalition_value_cache.clear()
    model.train()(x, labels=y)  # no example_index: nothing to key values by
    assert len(model.coalition_value_cache) == 0


def test_game_that_trains_refuses_reuse(make_backbone_config):
    backbone = make_backbone_config("vit")
    with pytest.raises(ValueError, match="train_backbone=False"):
        ShapleyConfig(
            backbone_config=backbone,
            num_labels=NUM_LABELS,
            prediction_mode="backbone_head",
            reuse_shapley_coalitions=True,
        )
    with pytest.raises(ValueError, match="backbone_head"):
        ShapleyConfig(
            backbone_config=backbone,
            num_labels=NUM_LABELS,
            train_backbone=False,
            reuse_shapley_coalitions=True,
        )


def test_trainer_fills_the_store_in_the_first_epoch_and_reuses_it(tmp_path, make_model):
    model = make_model("vit", players_grid=GRID, reuse_shapley_coalitions=True, **FROZEN)
    train = make_dataset(12)
    rows = count_encoder_rows(model)
    args = make_args(tmp_path, num_train_epochs=1, per_device_train_batch_size=4)
    ShapleyTrainer(model, args, train_dataset=train).train()
    assert len(model.coalition_value_cache) == 12
    first_epoch = sum(rows)
    rows.clear()
    args = make_args(tmp_path, "again", num_train_epochs=1, per_device_train_batch_size=4)
    ShapleyTrainer(model, args, train_dataset=train).train()
    assert sum(rows) * 2 < first_epoch  # full images only, no masked passes
    assert len(model.coalition_value_cache) == 12


# ----------------------------------------------------------------------------- full passes
@pytest.mark.parametrize("reads_depths", [False, True])
def test_kept_full_pass_serves_a_later_epoch_without_the_backbone(make_model, reads_depths):
    torch.manual_seed(0)
    kw = dict(FROZEN, head_reads_hidden_states=reads_depths)
    model = make_model("vit", players_grid=GRID, reuse_shapley_coalitions=True, **kw)
    model.full_pass_cache.max_bytes = 2**30
    x, y, index = torch.randn(3, 3, 32, 32), torch.tensor([0, 1, 2]), torch.tensor([5, 9, 11])
    rows = count_encoder_rows(model)
    first = model.train()(x, labels=y, example_index=index, epoch=0, global_step=100)
    assert len(model.full_pass_cache) == 3 and model.full_pass_cache.nbytes > 0
    rows.clear()
    # The examples in another order and another batch, as a shuffled later epoch has them.
    order = torch.tensor([2, 0, 1])
    later = model(x[order], labels=y[order], example_index=index[order], epoch=3, global_step=100)
    assert rows == []  # neither the full images nor any coalition went through the encoder
    torch.testing.assert_close(later.logits, first.logits[order])
    torch.testing.assert_close(later.shapley_values, first.shapley_values[order])
    torch.testing.assert_close(later.shapley_loss, first.shapley_loss)
    # The head's gradients flow from kept features as from fresh ones.
    later.loss.backward()
    assert model.shapley_head.out_proj.weight.grad.abs().sum() > 0
    # A model without the store computes the same explanation.
    fresh = make_model("vit", players_grid=GRID, **kw)
    fresh.load_state_dict(model.state_dict())
    torch.testing.assert_close(fresh.eval()(x).shapley_values, first.shapley_values)


def test_full_pass_store_over_its_budget_keeps_nothing(make_model, caplog):
    model = make_model("vit", players_grid=GRID, reuse_shapley_coalitions=True, **FROZEN)
    x, y, index = torch.randn(3, 3, 32, 32), torch.tensor([0, 1, 2]), torch.tensor([0, 1, 2])
    joint_loss(model, x, y, index, epoch=0)
    assert len(model.full_pass_cache) == 0  # max_bytes 0 outside the Trainer: off
    model.full_pass_cache.max_bytes = 1_000  # less than one image's features
    with caplog.at_level("WARNING", logger="hf_shapley.models.games_shapley"):
        joint_loss(model, x, y, index, epoch=1)
    assert len(model.full_pass_cache) == 0 and model.full_pass_cache.overflowed
    assert "frozen_pass_cache_gb" in caplog.text  # says what to raise
    rows = count_encoder_rows(model)
    joint_loss(model, x, y, index, epoch=2)
    assert 0 < sum(rows) <= 2 * len(x)  # the full images again (and the special tokens alone)
    model.clear_baseline_cache()
    assert not model.full_pass_cache.overflowed


def test_trainer_with_kept_full_passes_trains_the_head_as_without(tmp_path, make_model):
    """Two epochs with the store (the default budget) and without it (0 GB) from the same
    initialization: the same head, and the second epoch runs no encoder pass with it."""
    torch.manual_seed(0)
    kw = dict(FROZEN, head_reads_hidden_states=True)
    kept = make_model("vit", players_grid=GRID, reuse_shapley_coalitions=True, **kw)
    recomputed = make_model("vit", players_grid=GRID, reuse_shapley_coalitions=True, **kw)
    recomputed.load_state_dict(kept.state_dict())
    train = make_dataset(12)
    runs = {}
    for name, model, gb in (("kept", kept, 2.0), ("recomputed", recomputed, 0.0)):
        rows = count_encoder_rows(model)
        epoch_rows = []
        args = make_args(
            tmp_path,
            name,
            num_train_epochs=2,
            per_device_train_batch_size=4,
            seed=3,
            frozen_pass_cache_gb=gb,
        )
        trainer = ShapleyTrainer(model, args, train_dataset=train)
        trainer.add_callback(_RowsPerEpoch(rows, epoch_rows))
        trainer.train()
        runs[name] = epoch_rows
    assert len(kept.full_pass_cache) == 12 and len(recomputed.full_pass_cache) == 0
    assert runs["kept"][1] == 0 < runs["recomputed"][1] < runs["kept"][0]
    for (name, a), b in zip(
        kept.state_dict().items(), recomputed.state_dict().values(), strict=True
    ):
        torch.testing.assert_close(a, b, msg=name)


class _RowsPerEpoch(TrainerCallback):
    """Encoder rows of each epoch (from a :func:`count_encoder_rows` list)."""

    def __init__(self, rows: list[int], per_epoch: list[int]):
        self.rows, self.per_epoch = rows, per_epoch

    def on_epoch_end(self, args, state, control, **kwargs):
        self.per_epoch.append(sum(self.rows))
        self.rows.clear()
