"""Publishing: a complete repository folder that loads back identically; offline pushes fail fast."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from huggingface_hub import ModelCard
from PIL import Image
from transformers import AutoImageProcessor, AutoModelForImageClassification, ViTImageProcessorPil
from transformers import pipeline as hf_pipeline

import hf_shapley
from hf_shapley.publishing import EXAMPLE_FIGURE, save_for_hub

pytestmark = pytest.mark.usefixtures("single_thread")

REPO = "my-org/tiny-vit-shapley"
LABELS = {0: "circle", 1: "square", 2: "triangle"}
METRICS = {
    "accuracy": 0.8,
    "accuracy_ci95": [0.75, 0.85],
    "num_test_images": 1000,
    "faithfulness": {"pearson_r": 0.9, "pearson_r_ci95": [0.85, 0.95]},
}


@pytest.fixture(scope="module")
def model(make_model):
    model = make_model("vit", players_grid=(4, 4))
    model.config.id2label = dict(LABELS)
    model.config.label2id = {v: k for k, v in LABELS.items()}
    model.image_processor = ViTImageProcessorPil(size={"height": 32, "width": 32})
    return model


@pytest.fixture(scope="module")
def example_image():
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8))


@pytest.fixture(scope="module")
def published(model, example_image, tmp_path_factory):
    path = tmp_path_factory.mktemp("publish") / "repo"
    save_for_hub(
        model,
        path,
        repo_id=REPO,
        example_image=example_image,
        metrics=METRICS,
        dataset_name="shapes",
        base_model="google/vit-base-patch16-224-in21k",
        license="apache-2.0",
    )
    return path


def test_folder_is_a_complete_repository(published):
    files = set(os.listdir(published))
    expected = {
        "model.safetensors",
        "config.json",
        "preprocessor_config.json",
        "README.md",
        EXAMPLE_FIGURE,
        "configuration_shapley.py",
        "modeling_shapley.py",
        "pipeline_shapley.py",
        "image_loading.py",
        "heatmap.py",
    }
    assert expected <= files, expected - files
    # The figure code (matplotlib) is not part of what the pipeline needs.
    assert "visualization.py" not in files
    config = json.loads((published / "config.json").read_text())
    assert set(config["auto_map"]) == {"AutoConfig", "AutoModel", "AutoModelForImageClassification"}
    assert config["custom_pipelines"]["image-shapley-explanation"]["impl"] == (
        "pipeline_shapley.ImageShapleyExplanationPipeline"
    )
    figure = Image.open(published / EXAMPLE_FIGURE)
    assert figure.size[0] > 100 and np.asarray(figure.convert("L")).std() > 1.0  # a picture


def test_model_card_metadata_and_sections(published):
    card = ModelCard.load(published / "README.md")
    data = card.data
    assert data.pipeline_tag == "image-classification"  # the Hub's widget task
    assert data.library_name == "transformers"
    assert {"hf-shapley", "image-shapley-explanation", "vit"} <= set(data.tags)
    assert data.base_model == "google/vit-base-patch16-224-in21k"
    assert data.datasets == ["shapes"]
    results = {r.metric_type: r.metric_value for r in data.eval_results}
    assert results["accuracy"] == pytest.approx(0.8)
    assert results["pearson_r"] == pytest.approx(0.9)
    text = card.text
    assert f'pipeline("image-shapley-explanation", model="{REPO}")' in text
    assert f"]({EXAMPLE_FIGURE})" in text
    assert "## Limitations" in text and "not causes in the world" in text


def test_published_folder_loads_back_identically(model, published, example_image):
    loaded = AutoModelForImageClassification.from_pretrained(published).eval()
    assert type(loaded) is hf_shapley.ShapleyForImageClassification
    processor = AutoImageProcessor.from_pretrained(published)
    pixel_values = processor(images=example_image, return_tensors="pt")["pixel_values"]
    expected = model.image_processor(images=example_image, return_tensors="pt")["pixel_values"]
    assert torch.equal(pixel_values, expected)
    with torch.no_grad():
        a, b = model(pixel_values), loaded(pixel_values)
    for key in ("logits", "shapley_values", "base_values"):
        assert torch.equal(getattr(a, key), getattr(b, key)), key

    pipe = hf_pipeline("image-shapley-explanation", model=str(published))
    in_memory = hf_shapley.ImageShapleyExplanationPipeline(
        model=model, image_processor=model.image_processor
    )
    assert pipe(example_image, heatmap=False) == in_memory(example_image, heatmap=False)


def test_save_for_hub_refuses_a_model_without_processor(make_model, tmp_path):
    bare = make_model("vit")
    with pytest.raises(ValueError, match="no image processor"):
        save_for_hub(bare, tmp_path / "repo")


OFFLINE_PUSH = r"""
import json
import socket
import sys

def refuse(*args, **kwargs):
    raise AssertionError("a network connection was attempted")

socket.socket.connect = refuse
socket.create_connection = refuse

import torch
from transformers import ViTConfig, ViTImageProcessorPil

import hf_shapley
from hf_shapley.publishing import HubOfflineError, push_to_hub

config = hf_shapley.ShapleyConfig(
    backbone_config=ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=1,
                              num_attention_heads=4, intermediate_size=64),
    num_labels=2,
)
model = hf_shapley.ShapleyForImageClassification(config)
model.image_processor = ViTImageProcessorPil(size={"height": 32, "width": 32})
messages = []
for push in (lambda: push_to_hub(model, "my-org/model"), lambda: model.push_to_hub("my-org/model")):
    try:
        push()
        messages.append("no error")
    except HubOfflineError as error:
        messages.append("hf_shapley: " + str(error))
    except Exception as error:  # transformers' generic upload: huggingface_hub's offline error
        messages.append(f"{type(error).__name__}: {error}")
print(json.dumps(messages))
"""


def test_push_fails_at_once_when_offline(tmp_path):
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path), OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, "-c", OFFLINE_PUSH],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    messages = json.loads(proc.stdout.strip().splitlines()[-1])
    assert len(messages) == 2
    ours, generic = messages
    # hf_shapley.publishing.push_to_hub is the publishing route: it fails before any network call and
    # says how to save the complete folder instead.
    assert ours.startswith("hf_shapley: ")
    assert "HF_HUB_OFFLINE=1" in ours and "save_for_hub" in ours
    # model.push_to_hub is transformers' own upload (the model does not reach hub.py); offline it
    # fails too, with huggingface_hub's error.
    assert "offline" in generic.lower() and not generic.startswith("hf_shapley")
