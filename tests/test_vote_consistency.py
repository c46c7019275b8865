"""The vote-consistency term (objective.vote_consistency_loss, config vote_consistency_weight).

* the loss against a hand computation, with and without class centring; only the full-image
  votes receive gradients; a player absent from every coalition is an error;
* in the model, the masked votes come from the distillation passes: their per-player sum is the
  model's own ``v(S) - b`` (checked through the public ``coalition=`` API), the distillation
  loss is unchanged by switching the term on, and the full-image votes are the reported values
  (token removal) or the values plus the baseline's share (pixel baseline);
* options that cannot work fail at config time, naming the option.
"""

from __future__ import annotations

import pytest
import torch

import hf_shapley
import hf_shapley.models.loss_shapley
from conftest import close
from hf_shapley.models.objective import NORMALIZATION_EPS, joint_objective, vote_consistency_loss


def _hand_loss(full, masked, coalitions, center):
    B, G, P, K = masked.shape
    expected = []
    for b in range(B):
        rows = []
        for i in range(P):
            hits = [masked[b, g, i] for g in range(G) if coalitions[b, g, i]]
            rows.append(torch.stack(hits).mean(0))
        target = torch.stack(rows)  # (P, K)
        votes = full[b]
        if center:
            target = target - target.mean(-1, keepdim=True)
            votes = votes - votes.mean(-1, keepdim=True)
        expected.append((votes - target).pow(2).mean() / (target.pow(2).mean() + NORMALIZATION_EPS))
    return torch.stack(expected).mean()


@pytest.mark.parametrize("center", [False, True])
def test_vote_consistency_loss_against_a_hand_computation(center):
    g = torch.Generator().manual_seed(0)
    B, G, P, K = 3, 4, 5, 3
    half = torch.rand(B, G // 2, P, generator=g) > 0.5
    coalitions = torch.stack([half, ~half], dim=2).reshape(B, G, P)
    full = torch.randn(B, P, K, generator=g, requires_grad=True)
    masked = torch.randn(B, G, P, K, generator=g, requires_grad=True)
    loss = vote_consistency_loss(full, masked, coalitions, center=center)
    close(loss, _hand_loss(full.detach(), masked.detach(), coalitions, center))
    loss.backward()
    assert masked.grad is None  # the masked votes are the target: no gradient
    assert torch.count_nonzero(full.grad) > 0


def test_vote_consistency_loss_needs_every_player_present_somewhere():
    coalitions = torch.zeros(1, 2, 3, dtype=torch.bool)
    coalitions[0, :, :2] = True  # player 2 never present
    with pytest.raises(ValueError, match="complementary pairs"):
        vote_consistency_loss(torch.zeros(1, 3, 2), torch.zeros(1, 2, 3, 2), coalitions)


def test_joint_objective_adds_beta_times_the_consistency_term():
    g = torch.Generator().manual_seed(1)
    B, G, P, K = 2, 2, 4, 3
    logits = torch.randn(B, K, generator=g)
    labels = torch.tensor([0, 2])
    half = torch.rand(B, 1, P, generator=g) > 0.5
    coalitions = torch.cat([half, ~half], dim=1)
    full, masked = torch.randn(B, P, K, generator=g), torch.randn(B, G, P, K, generator=g)
    base = joint_objective(logits, labels, alpha=0.0, lam=0.0)
    out = joint_objective(
        logits,
        labels,
        alpha=0.0,
        lam=0.0,
        beta=0.7,
        full_votes=full,
        masked_votes=masked,
        distill_coalitions=coalitions,
    )
    close(out.consistency_loss, vote_consistency_loss(full, masked, coalitions))
    close(out.loss, base.loss + 0.7 * out.consistency_loss)


@pytest.mark.parametrize("family", ["vit", "resnet"])
def test_model_takes_masked_votes_from_the_distillation_passes(make_model, family, pixel_values):
    P = 4
    model = make_model(
        family, players_grid=(2, 2), vote_consistency_weight=1.0, num_distill_coalitions=4
    )
    captured = {}
    original = hf_shapley.models.loss_shapley.joint_objective

    def spy(*args, **kwargs):
        captured.update(kwargs)
        return original(*args, **kwargs)

    labels = torch.tensor([0, 1, 2])
    index = torch.arange(3)
    model.train()
    initial = {k: v.clone() for k, v in model.state_dict().items()}  # BatchNorm statistics move
    hf_shapley.models.loss_shapley.joint_objective = spy
    try:
        out = model(pixel_values, labels=labels, example_index=index, global_step=0)
    finally:
        hf_shapley.models.loss_shapley.joint_objective = original
    masks, votes = captured["distill_coalitions"], captured["masked_votes"]
    assert votes.shape == (3, 4, P, model.num_labels)
    assert out.consistency_loss > 0
    with torch.no_grad():
        # Sum of the players' votes in S is the model's own v(S) - b (tiny configs: no dropout;
        # masked passes run normalization in eval mode, on the statistics as training left them).
        values = model(pixel_values, coalition=masks).logits
        close(votes.sum(2) + model.shapley_bias, values)
        # The full-image pass as training ran it (BatchNorm on batch statistics).
        explained = model(pixel_values)
    full = captured["full_votes"]
    offset = (explained.base_values - model.shapley_bias)[:, None] / P
    close(full, explained.shapley_values + offset)
    if family == "vit":  # token removal: v(empty) = b, the values are the votes
        close(full, explained.shapley_values)
    # Switching the term on leaves the distillation loss as it was.
    plain = make_model(family, players_grid=(2, 2), num_distill_coalitions=4).train()
    plain.load_state_dict(initial)
    reference = plain(pixel_values, labels=labels, example_index=index, global_step=0)
    close(out.distill_loss, reference.distill_loss)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(prediction_mode="backbone_head"), "needs prediction_mode='shapley_sum'"),
        (dict(num_distill_coalitions=3), "num_distill_coalitions must be an even number >= 2"),
        (dict(num_distill_coalitions=0), "num_distill_coalitions must be an even number >= 2"),
    ],
)
def test_consistency_options_that_cannot_work_fail_at_config_time(
    make_backbone_config, kwargs, message
):
    with pytest.raises(ValueError, match=message):
        hf_shapley.ShapleyConfig(
            backbone_config=make_backbone_config("vit"), vote_consistency_weight=0.5, **kwargs
        )
