"""Tests for the zero-shot-image-shapley-explanation pipeline on a tiny ShapleyCLIPModel."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import CLIPImageProcessor, CLIPModel, pipeline

import hf_shapley
from conftest import tiny_clip_config
from hf_shapley.data import generate_shapes, shapes_caption_tokenizer

pytestmark = pytest.mark.usefixtures("single_thread")

LABELS = ["red circle", "green square", "blue triangle", "yellow cross"]
TEMPLATE = "a photo of a {}"
CONTEXT = 16
# The entry keys of the image-shapley-explanation pipeline (pipeline_shapley.py).
ENTRY_KEYS = {
    "label",
    "label_id",
    "score",
    "explained",
    "logit",
    "base_value",
    "attributions",
    "efficiency_residual",
    "heatmap",
}


@pytest.fixture(scope="module")
def explainer():
    tokenizer = shapes_caption_tokenizer()
    torch.manual_seed(0)
    config = tiny_clip_config()
    config.text_config.vocab_size = len(tokenizer)
    config.text_config.eos_token_id = tokenizer.eos_token_id
    config.text_config.bos_token_id = tokenizer.bos_token_id
    config.text_config.max_position_embeddings = CONTEXT
    model = hf_shapley.ShapleyCLIPModel.from_clip(
        CLIPModel(config), players_grid=(2, 2), head_hidden_size=16, head_num_layers=0
    ).eval()
    processor = CLIPImageProcessor(
        size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}
    )
    return pipeline(
        "zero-shot-image-shapley-explanation",
        model=model,
        tokenizer=tokenizer,
        image_processor=processor,
    )


@pytest.fixture(scope="module")
def images():
    return [Image.fromarray(a) for a in generate_shapes(3, image_size=48).images]


def test_entries_have_the_classifier_pipelines_format_and_the_models_values(explainer, images):
    out = explainer(images[0], candidate_labels=LABELS, hypothesis_template=TEMPLATE)
    assert [set(e) for e in out] == [ENTRY_KEYS] * len(LABELS)
    assert sorted(e["label_id"] for e in out) == list(range(len(LABELS)))
    assert [e["label"] for e in out] == [LABELS[e["label_id"]] for e in out]
    scores = [e["score"] for e in out]
    assert scores == sorted(scores, reverse=True) and abs(sum(scores) - 1) < 1e-6
    # The model's own numbers, from an independent call.
    model = explainer.model
    pixel_values = explainer.image_processor(images=images[0], return_tensors="pt").pixel_values
    text = explainer.tokenizer(
        [TEMPLATE.format(x) for x in LABELS], padding=True, return_tensors="pt"
    )
    with torch.no_grad():
        ref = model(pixel_values, input_ids=text.input_ids, attention_mask=text.attention_mask)
    logits = ref.logits_per_image[0].double()
    phi = ref.shapley_values[0].double()
    base = ref.base_values[0].double()
    probabilities = torch.softmax(logits, 0)
    for e in out:
        k = e["label_id"]
        assert e["explained"] == "centered_logit"
        assert abs(e["score"] - probabilities[k].item()) < 1e-6
        assert abs(e["logit"] - (logits[k] - logits.mean()).item()) < 1e-5
        assert abs(e["base_value"] - (base[k] - base.mean()).item()) < 1e-5
        expected = (phi[:, k] - phi.mean(1)).reshape(2, 2)
        np.testing.assert_allclose(e["attributions"], expected.numpy(), atol=1e-5)
        assert abs(e["efficiency_residual"]) < 1e-5
        assert e["heatmap"].size == images[0].size
    raw = explainer(
        images[0], candidate_labels=LABELS, hypothesis_template=TEMPLATE, centered=False
    )
    for e in raw:
        assert abs(e["logit"] - logits[e["label_id"]].item()) < 1e-5
        assert abs(e["efficiency_residual"]) < 1e-4


def test_batches_and_top_k(explainer, images):
    single = [explainer(image, candidate_labels=LABELS, heatmap=False, top_k=2) for image in images]
    batched = explainer(images, candidate_labels=LABELS, heatmap=False, top_k=2, batch_size=2)
    assert len(batched) == 3 and all(len(entries) == 2 for entries in batched)
    for a, b in zip(single, batched, strict=True):
        for x, y in zip(a, b, strict=True):
            assert x["label"] == y["label"]
            np.testing.assert_allclose(x["attributions"], y["attributions"], atol=1e-5)


def test_one_image_pass_for_any_number_of_labels(explainer, images):
    calls = []
    embeddings = explainer.model.clip.vision_model.embeddings
    hook = embeddings.register_forward_hook(lambda *args: calls.append(1))
    try:
        many = [f"{c} {s}" for c in ("red", "green", "blue") for s in ("circle", "square", "ring")]
        explainer(images[0], candidate_labels=many, heatmap=False)
    finally:
        hook.remove()
    assert len(calls) == 1


def test_other_image_modes_are_converted(explainer, images):
    rgb = explainer(images[0], candidate_labels=LABELS, heatmap=False)
    rgba = explainer(images[0].convert("RGBA"), candidate_labels=LABELS, heatmap=False)
    assert [e["label"] for e in rgb] == [e["label"] for e in rgba]
    gray = explainer(images[0].convert("L"), candidate_labels=LABELS, heatmap=False)
    assert len(gray) == len(LABELS)


def test_bad_input_errors(explainer, images):
    with pytest.raises(ValueError, match="candidate_labels is empty"):
        explainer(images[0], candidate_labels=[])
    with pytest.raises(ValueError, match="candidate_labels is required"):
        explainer(images[0])
    too_long = " ".join(["red"] * CONTEXT)
    with pytest.raises(ValueError, match="'red red.*longer than the text encoder's context"):
        explainer(images[0], candidate_labels=["blue", too_long])
    with pytest.raises(ValueError, match="hypothesis_template"):
        explainer(images[0], candidate_labels=LABELS, hypothesis_template="a photo")
    with pytest.raises(TypeError, match="Cannot explain"):
        explainer(np.zeros((8, 8, 3)), candidate_labels=LABELS)
    with pytest.raises(ValueError, match="needs a ShapleyCLIPModel"):
        pipeline(
            "zero-shot-image-shapley-explanation",
            model=CLIPModel(tiny_clip_config()),
            tokenizer=explainer.tokenizer,
            image_processor=explainer.image_processor,
        )
