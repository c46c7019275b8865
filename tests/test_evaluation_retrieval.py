"""Tests for hf_shapley.evaluation.retrieval: R@1, deletion R@1, CLIP scores as a classifier.

* R@1 hits against hand-computed matrices (ties as the expected R@1 of a random tie break) and
  against an argmax written out here;
* deletion R@1 against a hand-computed additive game, and on a tiny real ShapleyCLIPModel
  against per-image calls of ``model(x, input_ids, coalition=S)`` with the top-k players
  removed by hand (and: k = 0 is the plain forward's scores, k = P the empty coalition's);
* :class:`CLIPTextScores`: its scores and values are the model's; the classifier explainers
  run on it and explain the chosen text (leave-one-out and exact values checked against direct
  computations, Integrated Gradients' completeness against two plain forwards).
"""

from __future__ import annotations

import pytest
import torch

from conftest import close, random_texts, tiny_shapley_clip
from hf_shapley.evaluation import (
    AttentionRolloutExplainer,
    CLIPTextScores,
    GradCamExplainer,
    IntegratedGradientsExplainer,
    KernelShapExplainer,
    LeaveOneOutExplainer,
    RandomExplainer,
    ShapleyValuesExplainer,
    deletion_recall_at_1,
    model_coalition_values,
    retrieval_hits,
)
from hf_shapley.evaluation.estimators import exact_shapley_values, model_game
from hf_shapley.evaluation.truth import exact_model_shapley_values

pytestmark = pytest.mark.usefixtures("single_thread")


# ---------------------------------------------------------------------------- R@1
def test_retrieval_hits_hand_computed():
    scores = torch.tensor([[3.0, 1.0, 2.0], [0.0, 1.0, 5.0], [2.0, 0.0, 2.0]])
    hits = retrieval_hits(scores)
    # Rows: image 0 tops text 0; image 1 tops text 2 (miss); image 2 ties texts 0 and 2 (1/2).
    assert hits.image_to_text.tolist() == [1.0, 0.0, 0.5]
    # Columns: text 0 tops image 0; text 1 ties images 0 and 1 (1/2); text 2 tops image 1.
    assert hits.text_to_image.tolist() == [1.0, 0.5, 0.0]
    assert hits.recall_image_to_text == pytest.approx(0.5)
    assert hits.recall_text_to_image == pytest.approx(0.5)


def test_retrieval_hits_constant_matrix_is_chance():
    hits = retrieval_hits(torch.full((4, 4), 2.5))
    assert hits.image_to_text.tolist() == [0.25] * 4
    assert hits.text_to_image.tolist() == [0.25] * 4


def test_retrieval_hits_match_argmax_without_ties():
    scores = torch.randn(9, 9, generator=torch.Generator().manual_seed(3))
    hits = retrieval_hits(scores)
    expected_i2t = [float(int(scores[i].argmax()) == i) for i in range(9)]
    expected_t2i = [float(int(scores[:, j].argmax()) == j) for j in range(9)]
    assert hits.image_to_text.tolist() == expected_i2t
    assert hits.text_to_image.tolist() == expected_t2i


@pytest.mark.parametrize(
    "scores, message",
    [
        (torch.zeros(2, 3), "square"),
        (torch.zeros(0, 0), "square"),
        (torch.tensor([[1.0, float("nan")], [0.0, 1.0]]), "NaN"),
    ],
)
def test_retrieval_hits_errors(scores, message):
    with pytest.raises(ValueError, match=message):
        retrieval_hits(scores)


# ---------------------------------------------------------------------------- deletion R@1
# An additive game: the score of image i's coalition S against text t is sum_{p in S} W[i, p, t].
W = torch.tensor(
    [
        [[5.0, 0.0], [1.0, 0.0], [0.0, 2.0]],  # image 0: player 0 carries text 0
        [[1.0, 0.0], [0.0, 3.0], [0.0, 1.0]],  # image 1: player 1 carries text 1
    ]
)


def additive_scores(masks: torch.Tensor) -> torch.Tensor:
    return torch.einsum("nmp,npt->nmt", masks.double(), W.double())


def test_deletion_recall_hand_computed():
    maps = torch.stack([W[0, :, 0], W[1, :, 1]])  # each image's values for its own text
    result = deletion_recall_at_1(additive_scores, maps, [0, 1, 2, 3])
    assert result.ks == [0, 1, 2, 3]
    # k = 0: [[6, 2], [1, 4]]; k = 1: image 0 loses player 0 -> [1, 2], image 1 loses player 1
    # -> [1, 1]; k = 2: [0, 2], [1, 0]; k = 3: all zero.
    expected = torch.tensor(
        [
            [[6.0, 2.0], [1.0, 4.0]],
            [[1.0, 2.0], [1.0, 1.0]],
            [[0.0, 2.0], [1.0, 0.0]],
            [[0.0, 0.0], [0.0, 0.0]],
        ]
    ).double()
    torch.testing.assert_close(result.scores, expected)
    assert result.image_to_text.tolist() == [[1, 1], [0, 0.5], [0, 0], [0.5, 0.5]]
    assert result.text_to_image.tolist() == [[1, 1], [0.5, 0], [0, 0], [0.5, 0.5]]
    assert result.recall() == {
        "image_to_text": [1.0, 0.25, 0.0, 0.5],
        "text_to_image": [1.0, 0.25, 0.0, 0.5],
    }


def test_deletion_recall_depends_on_the_map():
    # The reversed ranking removes the least relevant player first: R@1 holds at k = 1.
    maps = -torch.stack([W[0, :, 0], W[1, :, 1]])
    result = deletion_recall_at_1(additive_scores, maps, [1])
    assert result.image_to_text.tolist() == [[1.0, 1.0]]


def test_deletion_recall_errors():
    maps = torch.rand(2, 3)
    with pytest.raises(ValueError, match=r"ks must lie in \[0, P\] = \[0, 3\]"):
        deletion_recall_at_1(additive_scores, maps, [1, 4])
    with pytest.raises(ValueError, match="ks must hold"):
        deletion_recall_at_1(additive_scores, maps, [])
    with pytest.raises(ValueError, match="coalition_scores must return"):
        deletion_recall_at_1(lambda m: additive_scores(m)[..., :1], maps, [1])
    with pytest.raises(ValueError, match="attributions must have shape"):
        deletion_recall_at_1(additive_scores, torch.rand(2, 3, 2), [1])


# ---------------------------------------------------------------------------- a real model
@pytest.fixture(scope="module")
def clip_setup():
    """A tiny real ShapleyCLIPModel (4 x 4 players), 5 images and 5 texts, one per image."""
    model, _ = tiny_shapley_clip(players_grid=(4, 4))
    pixels = torch.randn(5, 3, 32, 32, generator=torch.Generator().manual_seed(11))
    ids, mask = random_texts(5, seed=4)
    return model, pixels, ids, mask


@torch.no_grad()
def test_deletion_recall_through_the_model(clip_setup):
    model, pixels, ids, mask = clip_setup
    P = model.num_players
    maps = torch.randn(5, P, generator=torch.Generator().manual_seed(2))
    scores = model_coalition_values(CLIPTextScores(model, ids, mask), pixels)
    ks = [0, 1, 3, P]
    result = deletion_recall_at_1(scores, maps, ks)
    for j, k in enumerate(ks):
        for i in range(5):
            present = torch.ones(P, dtype=torch.bool)
            present[maps[i].topk(k).indices] = False  # the k highest, written out here
            direct = model(
                pixels[i : i + 1], input_ids=ids, attention_mask=mask, coalition=present[None]
            ).logits_per_image[0]
            close(result.scores[j, i], direct)
    full = model(pixels, input_ids=ids, attention_mask=mask)
    close(result.scores[0], full.logits_per_image)  # k = 0: the plain forward
    close(result.scores[-1], full.base_values)  # k = P: the empty coalition, v(empty)
    # Every image is the CLS token alone at k = P: equal rows, text to image at chance.
    assert result.text_to_image[-1].tolist() == pytest.approx([0.2] * 5)
    # R@1 at k = 0 from an argmax written out here.
    logits = full.logits_per_image
    assert result.image_to_text[0].tolist() == [
        float(int(logits[i].argmax()) == i) for i in range(5)
    ]


# ---------------------------------------------------------------------------- CLIPTextScores
@torch.no_grad()
def test_clip_text_scores_are_the_models(clip_setup):
    model, pixels, ids, mask = clip_setup
    wrapped = CLIPTextScores(model, ids, mask)
    out = wrapped(pixels)
    ref = model(pixels, input_ids=ids, attention_mask=mask)
    torch.testing.assert_close(out.logits, ref.logits_per_image, rtol=0, atol=0)
    torch.testing.assert_close(out.shapley_values, ref.shapley_values, rtol=0, atol=0)
    assert wrapped.num_texts == 5 and wrapped.num_players == 16
    assert wrapped.backbone is model.clip.vision_model
    phi = ShapleyValuesExplainer(wrapped).attribute(pixels, torch.tensor([3, 1, 0, 4, 2]))
    for i, t in enumerate([3, 1, 0, 4, 2]):
        torch.testing.assert_close(phi[i], ref.shapley_values[i, :, t])


@torch.no_grad()
def test_clip_text_scores_game_is_the_vector_game_projected():
    # 2 x 2 players: exact values of each text's scalar game (through CLIPTextScores and the
    # library's exact estimator) equal the vector game's exact values projected on the texts.
    model, _ = tiny_shapley_clip(players_grid=(2, 2))
    pixels = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    ids, mask = random_texts(3, seed=8)
    wrapped = CLIPTextScores(model, ids, mask)
    scalar = exact_shapley_values(model_game(wrapped, pixels), 4).permute(1, 0, 2)  # (B, P, T)
    vector = exact_model_shapley_values(model, pixels)  # (B, P, D)
    text = model.get_text_embeds(ids, mask).double()
    close(scalar, vector @ text.t())
    # KernelSHAP through the classifier explainer comes close with a large budget (sampling
    # noise of 2048 evaluations: about 1% of the largest value).
    kernel = KernelShapExplainer(wrapped, budget=2048).attribute_all(pixels)
    close(kernel, scalar, rtol=0.03)


@torch.no_grad()
def test_leave_one_out_on_clip_scores(clip_setup):
    model, pixels, ids, mask = clip_setup
    wrapped = CLIPTextScores(model, ids, mask)
    loo = LeaveOneOutExplainer(wrapped).attribute(pixels[:2], torch.tensor([2, 0]))
    full = model(pixels[:2], input_ids=ids, attention_mask=mask).logits_per_image
    for i, t in enumerate([2, 0]):
        for p in (0, 7, 15):
            present = torch.ones(16, dtype=torch.bool)
            present[p] = False
            cut = model(
                pixels[i : i + 1], input_ids=ids, attention_mask=mask, coalition=present[None]
            )
            close(loo[i, p], full[i, t] - cut.logits_per_image[0, t])


def test_gradient_explainers_on_clip_scores(clip_setup):
    model, pixels, ids, mask = clip_setup
    wrapped = CLIPTextScores(model, ids, mask)
    ig = IntegratedGradientsExplainer(wrapped, n_steps=64)
    targets = torch.tensor([0, 1])
    pixels_ig = ig.attribute_pixels(pixels[:2], targets)
    players = ig.attribute(pixels[:2], targets)
    with torch.no_grad():
        f_x = wrapped(pixels[:2]).logits[torch.arange(2), targets]
        f_0 = wrapped(torch.zeros_like(pixels[:2])).logits[torch.arange(2), targets]
    # Completeness, against two plain forwards (Riemann error of 64 steps).
    torch.testing.assert_close(players.sum(1), (f_x - f_0).float(), rtol=0.05, atol=0.05)
    torch.testing.assert_close(players.sum(1), pixels_ig.sum((1, 2, 3)).float())
    # Grad-CAM explains the chosen text: another text gives another map.
    cam = GradCamExplainer(wrapped)
    a = cam.attribute(pixels[:2], torch.tensor([0, 0]))
    b = cam.attribute(pixels[:2], torch.tensor([3, 3]))
    assert a.shape == (2, 16) and (a >= 0).all()
    assert not torch.allclose(a, b)
    assert cam.cost == 3.0 and ig.cost == 3.0 * 64


@torch.no_grad()
def test_rollout_and_random_on_clip_scores(clip_setup):
    model, pixels, ids, mask = clip_setup
    wrapped = CLIPTextScores(model, ids, mask)
    rollout = AttentionRolloutExplainer(wrapped)
    attention = model.clip.vision_model.config._attn_implementation
    maps = rollout.attribute(pixels, 0)
    matrix = rollout.rollout(pixels)  # (B, 17, 17) over CLS and 16 patch tokens
    # The CLS row's patch columns are the 16 players (token grid = players grid here).
    close(maps, matrix[:, 0, 1:].float())
    assert model.clip.vision_model.config._attn_implementation == attention  # restored
    assert RandomExplainer(wrapped).attribute(pixels, 0).shape == (5, 16)
    assert KernelShapExplainer(wrapped, budget=20).cost == 10.0  # packed complementary pairs


def test_clip_text_scores_errors(clip_setup):
    model, _, ids, mask = clip_setup
    with pytest.raises(TypeError, match="ShapleyCLIPModel"):
        CLIPTextScores(torch.nn.Linear(2, 2), ids, mask)
    with pytest.raises(ValueError, match="input_ids must be a"):
        CLIPTextScores(model, ids[0], mask)
    with pytest.raises(ValueError, match="attention_mask has shape"):
        CLIPTextScores(model, ids, mask[:, :1])
