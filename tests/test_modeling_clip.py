"""Tests for ShapleyCLIPModel on a tiny real CLIPModel (32 px images, 4 x 4 patch grid).

The model's claims, each checked against a computation that does not go through the model's
game code:

* with a frozen CLIP, ``logits_per_image`` is the wrapped CLIPModel's, bit for bit;
* ``model(x, input_ids, coalition=S)`` is CLIP's score of the image cut down to the players in S
  (compared with an unmasked forward of the vision tower over the physically shortened token
  sequence: CLS plus the present players' patch tokens);
* efficiency ``score = base + sum_i phi_i`` for random texts of random lengths the model never
  saw, and explaining more texts runs no image pass;
* linearity: the exact Shapley values of each text's scalar game (enumerated in this file from
  the ``coalition=`` game) equal the projections of the library's exact Shapley values of the
  vector game (``hf_shapley.evaluation.exact_model_shapley_values``) on the text embeddings;
* save/load round trips, auto classes, clear errors.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForZeroShotImageClassification,
    SiglipConfig,
)

import hf_shapley
from conftest import (
    CLIP_CONTEXT,
    close,
    random_texts,
    tiny_clip_config,
    tiny_shapley_clip,
)
from hf_shapley import ShapleyCLIPConfig, ShapleyCLIPModel
from hf_shapley.evaluation.truth import exact_model_shapley_values

pytestmark = pytest.mark.usefixtures("single_thread")

TOKEN_GRID = (4, 4)


@pytest.fixture(scope="module")
def models():
    """(model, the CLIPModel it wraps) at 2 x 2 and 4 x 4 players."""
    return {grid: tiny_shapley_clip(players_grid=grid) for grid in ((2, 2), (4, 4))}


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(7))


def player_of_token(players_grid) -> torch.Tensor:
    """(N,) player of each patch token, row-major, written out from the definition."""
    (gh, gw), (ph, pw) = TOKEN_GRID, players_grid
    return torch.tensor(
        [(r // (gh // ph)) * pw + c // (gw // pw) for r in range(gh) for c in range(gw)]
    )


@torch.no_grad()
def unit_text_embeds(clip, ids, mask) -> torch.Tensor:
    features = clip.get_text_features(input_ids=ids, attention_mask=mask).pooler_output
    return features / features.norm(dim=-1, keepdim=True)


@torch.no_grad()
def shortened_image_vector(clip, image, present, players_grid) -> torch.Tensor:
    """``u(x_S)`` from an unmasked pass of CLIP's vision tower over [CLS, present patch tokens].

    ``image``: (C, H, W); ``present``: (P,) bool. Returns (D,) = scale * unit embedding.
    """
    vision = clip.vision_model
    hidden = vision.pre_layrnorm(vision.embeddings(image[None]))
    tokens = present[player_of_token(players_grid)].nonzero().flatten()
    hidden = hidden[:, torch.cat([torch.tensor([0]), 1 + tokens])]
    hidden = vision.encoder(inputs_embeds=hidden).last_hidden_state
    embeds = clip.visual_projection(vision.post_layernorm(hidden[:, 0]))[0]
    return clip.logit_scale.exp() * embeds / embeds.norm()


def random_coalitions(num_images, num_players, sizes, seed=0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    masks = torch.zeros(num_images, len(sizes), num_players, dtype=torch.bool)
    for b in range(num_images):
        for j, k in enumerate(sizes):
            masks[b, j, torch.randperm(num_players, generator=gen)[:k]] = True
    return masks


def direct_shapley_values(table: np.ndarray, num_players: int) -> np.ndarray:
    """Exact Shapley values from the definition: table (2**P, ...) with row c = v(S_c), player
    i in S_c iff bit i of c is set -> (P, ...). Independent of hf_shapley.evaluation.estimators."""
    codes = np.arange(2**num_players)
    sizes = np.array([bin(c).count("1") for c in codes])
    weight = np.array(
        [
            math.factorial(s) * math.factorial(num_players - s - 1) / math.factorial(num_players)
            for s in range(num_players)
        ]
    )
    phi = np.zeros((num_players, *table.shape[1:]))
    for i in range(num_players):
        without = codes[(codes >> i) & 1 == 0]
        w = weight[sizes[without]].reshape(-1, *([1] * (table.ndim - 1)))
        phi[i] = (w * (table[without | (1 << i)] - table[without])).sum(0)
    return phi


# --------------------------------------------------------------------------------------
# The score is CLIP's; efficiency for any text
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("grid", [(2, 2), (4, 4)])
def test_scores_are_the_wrapped_clip_bit_for_bit(models, images, grid):
    model, clip = models[grid]
    ids, mask = random_texts(4, seed=1)
    with torch.no_grad():
        out = model(images, input_ids=ids, attention_mask=mask)
        ref = clip(input_ids=ids, pixel_values=images, attention_mask=mask)
    assert out.logits_per_image.shape == (3, 4)
    assert torch.equal(out.logits_per_image, ref.logits_per_image)
    assert torch.equal(out.logits_per_text, ref.logits_per_text)
    assert out.shapley_values.shape == (3, model.num_players, 4)
    assert out.image_shapley_vectors.shape == (3, model.num_players, 16)
    # The scores vary across images and texts (not a degenerate tiny model).
    assert out.logits_per_image.std() > 0.1


@pytest.mark.parametrize("grid", [(2, 2), (4, 4)])
def test_efficiency_for_unseen_texts(models, images, grid):
    model, clip = models[grid]
    for seed in range(3):
        ids, mask = random_texts(5, seed=100 + seed, max_length=CLIP_CONTEXT)
        with torch.no_grad():
            out = model(images, input_ids=ids, attention_mask=mask)
        total = out.base_values + out.shapley_values.sum(1)
        scale = out.logits_per_image.abs().max().item()
        assert (total - out.logits_per_image).abs().max().item() <= 1e-4 * max(1.0, scale)
        # phi(x, t) = <Phi_i(x), e_t> and base(t) = <u(empty), e_t>, e_t computed by CLIP itself.
        e = unit_text_embeds(clip, ids, mask)
        close(out.shapley_values, torch.einsum("bpd,td->bpt", out.image_shapley_vectors, e))
        close(out.base_values, out.image_base_vector @ e.t())


def test_base_vector_is_the_cls_token_alone(models, images):
    model, clip = models[(2, 2)]
    with torch.no_grad():
        image = model.explain_image(images)
    u_empty = shortened_image_vector(clip, images[0], torch.zeros(4, dtype=torch.bool), (2, 2))
    for b in range(3):
        close(image.image_base_vector[b], u_empty)
    # The vectors' efficiency: sum_i Phi_i = u(x) - u(empty), dimension by dimension.
    close(image.image_shapley_vectors.sum(1), image.image_vectors - image.image_base_vector)
    close(image.image_vectors, clip.logit_scale.exp() * image.image_embeds)


def test_more_texts_cost_no_image_pass(models, images):
    model, clip = models[(4, 4)]
    calls = []
    hook = model.clip.vision_model.embeddings.register_forward_hook(lambda *a: calls.append(1))
    try:
        with torch.no_grad():
            image = model.explain_image(images)
            assert len(calls) == 1
            ids, mask = random_texts(6, seed=5)
            text = model.get_text_embeds(ids, mask)
            out = model.explain_texts(image, text)
            more_ids, more_mask = random_texts(2, seed=6)
            more = model.explain_texts(image, model.get_text_embeds(more_ids, more_mask))
        assert len(calls) == 1
    finally:
        hook.remove()
    with torch.no_grad():
        ref = clip(input_ids=more_ids, pixel_values=images, attention_mask=more_mask)
    assert torch.equal(more.logits_per_image, ref.logits_per_image)
    close(more.base_values + more.shapley_values.sum(1), more.logits_per_image)
    assert out.logits_per_image.shape == (3, 6)


# --------------------------------------------------------------------------------------
# The game: coalition= is CLIP on the cut-down image
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("grid", [(2, 2), (4, 4)])
def test_coalition_scores_match_shortened_sequences(models, images, grid):
    model, clip = models[grid]
    P = model.num_players
    ids, mask = random_texts(3, seed=2)
    e = unit_text_embeds(clip, ids, mask)
    sizes = sorted({0, 1, P // 2, P - 1, P})
    masks = random_coalitions(3, P, sizes, seed=3)
    with torch.no_grad():
        values = model(images, input_ids=ids, attention_mask=mask, coalition=masks).logits_per_image
        single = model(
            images, input_ids=ids, attention_mask=mask, coalition=masks[:, 2]
        ).logits_per_image
    assert values.shape == (3, len(sizes), 3)
    assert single.shape == (3, 3)
    for b in range(3):
        for j in range(len(sizes)):
            expected = shortened_image_vector(clip, images[b], masks[b, j], grid) @ e.t()
            close(values[b, j], expected)
    close(single, values[:, 2])
    # The full coalition is the plain score; the empty one the base value.
    with torch.no_grad():
        out = model(images, input_ids=ids, attention_mask=mask)
    full = masks.sum(-1) == P
    empty = masks.sum(-1) == 0
    close(values[full], out.logits_per_image)
    close(values[empty], out.base_values)


def test_coalition_chunking_and_packing_do_not_change_values(images):
    model, _ = tiny_shapley_clip(players_grid=(2, 2), coalition_batch_size=2)
    big, _ = tiny_shapley_clip(players_grid=(2, 2), coalition_batch_size=64)
    ids, mask = random_texts(2, seed=4)
    half = random_coalitions(3, 4, [1, 2, 3], seed=4)
    paired = torch.stack([half, ~half], dim=2).reshape(3, 6, 4)  # packed pairs
    with torch.no_grad():
        a = model(images, input_ids=ids, attention_mask=mask, coalition=paired).logits_per_image
        b = big(images, input_ids=ids, attention_mask=mask, coalition=paired).logits_per_image
        c = big(
            images, input_ids=ids, attention_mask=mask, coalition=paired[:, 1::2]
        ).logits_per_image
    close(a, b)
    close(b[:, 1::2], c)


# --------------------------------------------------------------------------------------
# Linearity and the exact truth
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def exact_tables(models, images):
    """P = 16, one image, three texts: every coalition's score through coalition= (2**16 rows),
    and the library's exact Shapley values of the vector game."""
    model, clip = models[(4, 4)]
    P = model.num_players
    ids, mask = random_texts(3, seed=11)
    codes = torch.arange(2**P)
    masks = ((codes[:, None] >> torch.arange(P)) & 1).bool()  # row c = coalition code c
    model.config.coalition_batch_size = 4096
    try:
        with torch.no_grad():
            scores = model(
                images[:1], input_ids=ids, attention_mask=mask, coalition=masks[None]
            ).logits_per_image[0]  # (2**P, T)
        vector_truth = exact_model_shapley_values(model, images[:1])[0]  # (P, D)
    finally:
        model.config.coalition_batch_size = 64
    return scores.double().numpy(), vector_truth, unit_text_embeds(clip, ids, mask)


def test_exact_truth_is_linear_in_the_text(exact_tables):
    scores, vector_truth, e = exact_tables
    scalar_truth = torch.from_numpy(direct_shapley_values(scores, 16))  # (P, T)
    projected = vector_truth @ e.double().t()  # (P, T)
    scale = scalar_truth.abs().max().item()
    assert scale > 1e-2  # a game worth explaining
    torch.testing.assert_close(projected, scalar_truth, rtol=0, atol=1e-4 * scale)
    # Efficiency of the direct enumeration against its own table: v(all) - v(empty).
    np.testing.assert_allclose(
        scalar_truth.sum(0).numpy(), scores[-1] - scores[0], rtol=0, atol=1e-4 * scale
    )


def test_exact_vector_truth_obeys_efficiency(models, images, exact_tables):
    model, _ = models[(4, 4)]
    _, vector_truth, _ = exact_tables
    with torch.no_grad():
        image = model.explain_image(images[:1])
    gap = (image.image_vectors - image.image_base_vector)[0].double()
    torch.testing.assert_close(vector_truth.sum(0), gap, rtol=0, atol=1e-4)


# --------------------------------------------------------------------------------------
# Saving, loading, auto classes
# --------------------------------------------------------------------------------------


def test_save_load_round_trip_and_auto_classes(models, images, tmp_path):
    model, _ = models[(2, 2)]
    model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["model_type"] == "shapley_clip"
    assert config["auto_map"] == {
        "AutoConfig": "configuration_shapley_clip.ShapleyCLIPConfig",
        "AutoModel": "modeling_shapley_clip.ShapleyCLIPModel",
        "AutoModelForZeroShotImageClassification": "modeling_shapley_clip.ShapleyCLIPModel",
    }
    for file in ("modeling_shapley_clip.py", "configuration_shapley_clip.py", "backbones.py"):
        assert (tmp_path / file).is_file(), file
    assert isinstance(AutoConfig.from_pretrained(tmp_path), ShapleyCLIPConfig)
    ids, mask = random_texts(3, seed=8)
    with torch.no_grad():
        expected = model(images, input_ids=ids, attention_mask=mask)
    for loader in (ShapleyCLIPModel, AutoModel, AutoModelForZeroShotImageClassification):
        loaded = loader.from_pretrained(tmp_path).eval()
        assert type(loaded) is ShapleyCLIPModel
        assert loaded.players_grid == (2, 2)
        with torch.no_grad():
            out = loaded(images, input_ids=ids, attention_mask=mask)
        for key in ("logits_per_image", "shapley_values", "base_values", "image_shapley_vectors"):
            assert torch.equal(getattr(out, key), getattr(expected, key)), (loader, key)
        # A frozen CLIP stays frozen after loading; the head trains.
        trainable = {n.split(".")[0] for n, p in loaded.named_parameters() if p.requires_grad}
        assert trainable == {"shapley_head"}


# --------------------------------------------------------------------------------------
# Training steps
# --------------------------------------------------------------------------------------


def test_frozen_clip_training_step_trains_the_head_alone(images):
    model, clip = tiny_shapley_clip(players_grid=(2, 2))
    ids, mask = random_texts(3, seed=9)
    before = {k: v.clone() for k, v in model.clip.state_dict().items()}
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    model.train()
    out = model(images, input_ids=ids, attention_mask=mask, return_loss=True)
    assert out.shapley_loss > 0 and out.contrastive_loss == 0 and out.distill_loss == 0
    out.loss.backward()
    assert all(p.grad is None for p in model.clip.parameters())
    assert any(
        p.grad is not None and p.grad.abs().sum() > 0 for p in model.shapley_head.parameters()
    )
    optimizer.step()
    assert all(torch.equal(before[k], v) for k, v in model.clip.state_dict().items())
    assert not model.clip.training  # a frozen CLIP stays in eval mode
    model.eval()
    with torch.no_grad():
        out = model(images, input_ids=ids, attention_mask=mask)
        ref = clip(input_ids=ids, pixel_values=images, attention_mask=mask)
    assert torch.equal(out.logits_per_image, ref.logits_per_image)


def test_a_head_that_reads_every_depth(images):
    """``head_reads_hidden_states``: the head's input is each patch token at every depth of
    the vision tower, as CLIP's own ``output_hidden_states`` gives them; the scores stay CLIP's,
    efficiency holds for any text, and a training step still reaches the head alone."""
    model, clip = tiny_shapley_clip(players_grid=(2, 2), head_reads_hidden_states=True)
    seen = []
    model.shapley_head.register_forward_hook(lambda module, args, out: seen.append(args[0]))
    ids, mask = random_texts(4, seed=3)
    with torch.no_grad():
        out = model(images, input_ids=ids, attention_mask=mask)
        ref = clip(input_ids=ids, pixel_values=images, attention_mask=mask)
        depths = clip.vision_model(pixel_values=images, output_hidden_states=True).hidden_states
    assert torch.equal(out.logits_per_image, ref.logits_per_image)
    expected = torch.stack(depths, dim=2)[:, 1:]  # (B, N, L + 1, H): patch tokens, every depth
    assert seen[0].shape == expected.shape == (3, 16, 3, 32)
    close(seen[0], expected)
    total = out.base_values + out.shapley_values.sum(1)
    assert (total - out.logits_per_image).abs().max() <= 1e-4 * out.logits_per_image.abs().max()
    model.train()
    loss = model(images, input_ids=ids[:3], attention_mask=mask[:3], return_loss=True).loss
    loss.backward()
    assert all(p.grad is None for p in model.clip.parameters())
    assert model.shapley_head.hidden_states_mix[-1].weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="head_reads_hidden_states must be True or False"):
        hf_shapley.ShapleyCLIPConfig(clip_config=clip.config, head_reads_hidden_states="yes")


def test_trainable_clip_gets_all_three_losses(images):
    model, _ = tiny_shapley_clip(players_grid=(2, 2), train_clip=True, text_shapley_loss_weight=1.0)
    ids, mask = random_texts(3, seed=10)
    model.train()
    out = model(images, input_ids=ids, attention_mask=mask, return_loss=True)
    assert out.contrastive_loss > 0 and out.distill_loss > 0 and out.shapley_loss > 0
    out.loss.backward()
    vision_grad = model.clip.vision_model.embeddings.patch_embedding.weight.grad
    text_grad = model.clip.text_model.embeddings.token_embedding.weight.grad
    assert vision_grad is not None and vision_grad.abs().sum() > 0
    assert text_grad is not None and text_grad.abs().sum() > 0
    assert model.clip.logit_scale.grad is not None


# --------------------------------------------------------------------------------------
# Bad input
# --------------------------------------------------------------------------------------


def test_clear_errors(models, images):
    model, _ = models[(2, 2)]
    ids, mask = random_texts(2, seed=12)
    with pytest.raises(ValueError, match="siglip.*cannot drop tokens"):
        ShapleyCLIPConfig(clip_config=SiglipConfig())
    with pytest.raises(ValueError, match=r"players_grid=\(3, 3\) does not divide"):
        ShapleyCLIPModel(ShapleyCLIPConfig(clip_config=tiny_clip_config(), players_grid=(3, 3)))
    with pytest.raises(ValueError, match="empty batch"):
        model(images[:0], input_ids=ids, attention_mask=mask)
    with pytest.raises(ValueError, match="no text"):
        model(images, input_ids=ids[:0], attention_mask=mask[:0])
    long_ids = torch.full((1, CLIP_CONTEXT + 1), 5)
    with pytest.raises(
        ValueError, match=f"input_ids has {CLIP_CONTEXT + 1} tokens.*holds {CLIP_CONTEXT}"
    ):
        model(images, input_ids=long_ids)
    with pytest.raises(ValueError, match="4 channels.*RGB"):
        model(torch.randn(1, 4, 32, 32), input_ids=ids, attention_mask=mask)
    with pytest.raises(ValueError, match="coalition has 2 rows"):
        model(images, input_ids=ids, coalition=torch.ones(2, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="input_ids are both required"):
        model(images)
    model.train()
    try:
        with pytest.raises(ValueError, match="one matching text per image"):
            model(images, input_ids=ids, attention_mask=mask, return_loss=True)
    finally:
        model.eval()
    with pytest.raises(TypeError, match="from_clip takes"):
        ShapleyCLIPModel.from_clip(42)


def test_auto_registration_after_import():
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_ZERO_SHOT_IMAGE_CLASSIFICATION_MAPPING,
    )

    assert MODEL_FOR_ZERO_SHOT_IMAGE_CLASSIFICATION_MAPPING[ShapleyCLIPConfig] is ShapleyCLIPModel
    assert hf_shapley.ShapleyCLIPModel is ShapleyCLIPModel


CHILD = r"""
import json

import torch
from transformers import AutoModel, AutoModelForZeroShotImageClassification

torch.set_num_threads(1)
io_dir = sys.argv[2]
inputs = torch.load(os.path.join(io_dir, "inputs.pt"))
model_dir = sys.argv[1]
model = AutoModelForZeroShotImageClassification.from_pretrained(model_dir, trust_remote_code=True)
plain = AutoModel.from_pretrained(model_dir, trust_remote_code=True)
model.eval()
with torch.no_grad():
    out = model(inputs["pixel_values"], input_ids=inputs["input_ids"],
                attention_mask=inputs["attention_mask"])
    values = model(inputs["pixel_values"], input_ids=inputs["input_ids"],
                   attention_mask=inputs["attention_mask"], coalition=inputs["coalition"])
model.train()
step = model(inputs["pixel_values"], input_ids=inputs["input_ids"],
             attention_mask=inputs["attention_mask"], return_loss=True,
             example_index=torch.tensor([0, 1, 2]))
step.loss.backward()
results = {
    "logits_per_image": out.logits_per_image,
    "shapley_values": out.shapley_values,
    "base_values": out.base_values,
    "coalition_values": values.logits_per_image,
    "loss": step.loss.detach(),
}
info = {
    "blocked": BLOCKED,
    "model_module": type(model).__module__,
    "same_class": type(plain) is type(model),
    "hf_shapley_modules": loaded_hf_shapley_modules(),
    "src_on_path": src_on_path(),
}
torch.save(results, os.path.join(io_dir, "child_outputs.pt"))
with open(os.path.join(io_dir, "child_info.json"), "w") as f:
    json.dump(info, f)
"""


def test_loads_with_trust_remote_code_without_the_package(tmp_path):
    from _without_package import run_without_package

    model, _ = tiny_shapley_clip(players_grid=(2, 2))
    model_dir = tmp_path / "model"
    model.save_pretrained(model_dir)
    ids, mask = random_texts(3, seed=13)
    gen = torch.Generator().manual_seed(14)
    inputs = {
        "pixel_values": torch.randn(3, 3, 32, 32, generator=gen),
        "input_ids": ids,
        "attention_mask": mask,
        "coalition": torch.rand(3, 5, 4, generator=gen) > 0.5,
    }
    io_dir = tmp_path / "io"
    io_dir.mkdir()
    torch.save(inputs, io_dir / "inputs.pt")
    proc = run_without_package(CHILD, [str(model_dir), str(io_dir)], tmp_path)
    assert proc.returncode == 0, proc.stderr[-4000:]
    info = json.loads((io_dir / "child_info.json").read_text())
    assert info["blocked"] and info["hf_shapley_modules"] == [] and not info["src_on_path"]
    assert info["model_module"].startswith("transformers_modules"), info
    assert info["same_class"]
    child = torch.load(io_dir / "child_outputs.pt")
    with torch.no_grad():
        out = model(inputs["pixel_values"], input_ids=ids, attention_mask=mask)
        values = model(
            inputs["pixel_values"],
            input_ids=ids,
            attention_mask=mask,
            coalition=inputs["coalition"],
        ).logits_per_image
    for key in ("logits_per_image", "shapley_values", "base_values"):
        assert torch.equal(child[key], getattr(out, key)), key
    assert torch.equal(child["coalition_values"], values)
    model.train()
    loss = model(
        inputs["pixel_values"],
        input_ids=ids,
        attention_mask=mask,
        return_loss=True,
        example_index=torch.tensor([0, 1, 2]),
    ).loss
    model.eval()
    assert torch.isfinite(child["loss"]) and torch.equal(child["loss"], loss.detach())


def test_from_clip_directory_and_config(models, images, tmp_path):
    from transformers import ViTConfig, ViTModel

    model, clip = models[(2, 2)]
    clip.save_pretrained(tmp_path / "clip")
    loaded = ShapleyCLIPModel.from_clip(tmp_path / "clip", players_grid=(2, 2)).eval()
    ids, mask = random_texts(2, seed=15)
    with torch.no_grad():
        a = loaded(images, input_ids=ids, attention_mask=mask).logits_per_image
        b = clip(input_ids=ids, pixel_values=images, attention_mask=mask).logits_per_image
    assert torch.equal(a, b)
    fresh = ShapleyCLIPModel.from_clip(tiny_clip_config(), players_grid=(4, 4))
    assert fresh.num_players == 16 and fresh.token_grid == (4, 4)
    ViTModel(ViTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
                       intermediate_size=64, image_size=32, patch_size=8)).save_pretrained(
        tmp_path / "vit"
    )  # fmt: skip
    with pytest.raises(ValueError, match="'vit'.*cannot drop tokens"):
        ShapleyCLIPModel.from_clip(tmp_path / "vit")
