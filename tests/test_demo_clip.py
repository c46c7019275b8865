"""The demo page of a self-explaining CLIP: one image pass per upload, then any labels typed,
scored and explained as the zero-shot pipeline does, without another image pass."""

from __future__ import annotations

import gradio as gr  # the demo extra, in .[dev]
import pytest
import torch
from PIL import Image
from transformers import CLIPImageProcessor, CLIPModel, pipeline

import hf_shapley
from conftest import caption_clip_config
from hf_shapley.data import generate_shapes
from hf_shapley.demo import build_demo
from hf_shapley.demo.app import demo_for
from hf_shapley.demo.clip_app import ShapleyCLIPDemo
from hf_shapley.demo.clip_explainer import CLIPDemoExplainer
from hf_shapley.demo.explainer import DemoInputError

pytestmark = pytest.mark.usefixtures("single_thread")
TEMPLATE = "a photo of a {}"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A ShapleyCLIPModel saved as examples/train_clip.py saves one."""
    path = tmp_path_factory.mktemp("clip_demo") / "model"
    config, tokenizer = caption_clip_config(context=12)
    torch.manual_seed(0)
    model = hf_shapley.ShapleyCLIPModel.from_clip(
        CLIPModel(config), players_grid=(2, 2), head_hidden_size=16, head_num_layers=1
    )
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    CLIPImageProcessor(
        size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}
    ).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def image_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("clip_demo_images") / "shapes.png"
    Image.fromarray(generate_shapes(1, image_size=48).images[0]).save(path)
    return path


def count_image_passes(explainer: CLIPDemoExplainer) -> list[int]:
    """Counts the vision tower's passes (a hook on its first encoder block)."""
    calls = [0]
    first_block = explainer.pipeline.model.clip.vision_model.encoder.layers[0]
    first_block.register_forward_pre_hook(lambda module, args: calls.__setitem__(0, calls[0] + 1))
    return calls


def test_labels_are_scored_as_the_pipeline_scores_them_without_another_image_pass(
    model_dir, image_file
):
    explainer = CLIPDemoExplainer(model_dir, hypothesis_template=TEMPLATE)
    passes = count_image_passes(explainer)
    image = explainer.read(image_file)
    after_read = passes[0]
    assert after_read >= 1
    first = explainer.explain(image, "red circle, blue square, green triangle")
    second = explainer.explain(image, ["yellow star", "red circle"])
    assert passes[0] == after_read  # typed labels cost no image pass
    reference = pipeline("zero-shot-image-shapley-explanation", model=str(model_dir))
    for explanation, labels in (
        (first, ["red circle", "blue square", "green triangle"]),
        (second, ["yellow star", "red circle"]),
    ):
        expected = {
            e["label"]: e
            for e in reference(
                Image.open(image_file), candidate_labels=labels, hypothesis_template=TEMPLATE
            )
        }
        assert sorted(explanation.probabilities()) == sorted(labels)
        for label in labels:
            view = explainer.view(explanation, label)
            assert view.score == pytest.approx(expected[label]["score"], rel=1e-5)
            assert view.logit == pytest.approx(expected[label]["logit"], rel=1e-5, abs=1e-6)
            torch.testing.assert_close(
                torch.tensor(view.attributions), torch.tensor(expected[label]["attributions"])
            )
            assert view.efficiency_ok and view.heatmap.size == Image.open(image_file).size
    with pytest.raises(ValueError, match="Unknown label 'dog'"):
        explainer.view(first, "dog")


def test_bad_labels_and_files_give_clear_errors(model_dir, image_file, tmp_path):
    explainer = CLIPDemoExplainer(model_dir, hypothesis_template=TEMPLATE)
    image = explainer.read(image_file)
    with pytest.raises(DemoInputError, match="at least one label"):
        explainer.explain(image, " , ,")
    with pytest.raises(DemoInputError, match="longer than the text encoder's context of 12"):
        explainer.explain(image, ["red " * 20])
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    with pytest.raises(DemoInputError, match="broken.png"):
        explainer.read(broken)
    with pytest.raises(ValueError, match="hypothesis_template must hold"):
        CLIPDemoExplainer(model_dir, hypothesis_template="a photo")


def test_page_callbacks_and_layout(model_dir, image_file):
    demo = demo_for(str(model_dir), labels="red circle, blue square")
    assert isinstance(demo, ShapleyCLIPDemo)
    passes = count_image_passes(demo.explainer)
    shown = demo.on_upload(str(image_file), "red circle, blue square")
    assert "one image pass" in shown.status and shown.labels == ["red circle", "blue square"]
    assert shown.chosen_label in shown.labels and sum(
        shown.probabilities.values()
    ) == pytest.approx(1)
    read = passes[0]
    relabelled = demo.on_labels("green triangle, red circle, yellow star", shown.image)
    assert "no image pass" in relabelled.status and passes[0] == read
    assert relabelled.labels == ["green triangle", "red circle", "yellow star"]
    other = demo.on_label("yellow star", relabelled.explanation)
    assert other.heatmap is not None and "yellow star" in other.efficiency
    assert "at least one label" in demo.on_labels("", shown.image).status
    assert "could not be explained" in demo.on_upload(__file__, "a, b").status
    assert isinstance(build_demo(str(model_dir)), gr.Blocks)
