"""Model cards: rendering offline, metadata round trip, optional sections."""

from __future__ import annotations

import dataclasses
import socket

import pytest
from huggingface_hub import ModelCard

import hf_shapley.publishing
from hf_shapley.models.configuration_shapley import OBJECTIVE_SETTINGS
from hf_shapley.publishing import render_model_card

REPO = "my-org/tiny-vit-shapley"
METRICS = {
    "eval_accuracy": 0.875,  # Trainer-style prefix is accepted
    "accuracy_ci95": [0.85, 0.9],
    "plain_accuracy": 0.9,
    "plain_accuracy_ci95": [0.88, 0.92],
    "num_test_images": 2000,
    "eval_runtime": 1.5,  # ignored
    "faithfulness": {"pearson_r": 0.96, "pearson_r_ci95": [0.95, 0.97], "deletion_auc": 0.21},
}


@pytest.fixture(scope="module")
def tiny_model(make_model):
    model = make_model("vit", players_grid=(4, 4))
    model.config.id2label = {0: "red circle", 1: "green square", 2: "blue triangle"}
    model.config.label2id = {v: k for k, v in model.config.id2label.items()}
    return model


@pytest.fixture
def no_network(monkeypatch):
    """HF_HUB_OFFLINE=1 and any socket connection fails."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    def refuse(*args, **kwargs):
        raise AssertionError("model card rendering tried to open a network connection")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def test_full_card_round_trip(tiny_model, tmp_path, no_network):
    card = render_model_card(
        tiny_model,
        repo_id=REPO,
        dataset_name="shapes",
        base_model="google/vit-base-patch16-224-in21k",
        metrics=METRICS,
        example_image="explanations.png",
        training_hyperparameters={"learning_rate": 0.001, "num_train_epochs": 3},
        license="apache-2.0",
    )
    text = card.text
    # What the model is, with the paper.
    assert "self-explaining" in text and "2512.14354" in text and "AAAI 2026" in text
    # Usage snippet with the repo name: the pipeline, with and without the package, and the model.
    assert "import hf_shapley" in text
    assert f'pipeline("image-shapley-explanation", model="{REPO}")' in text
    assert f'pipeline("image-shapley-explanation", model="{REPO}", trust_remote_code=True)' in text
    assert f'AutoModelForImageClassification.from_pretrained("{REPO}")' in text
    assert "out.shapley_values" in text
    # With the package installed, images are read as the pipeline reads them.
    assert "from hf_shapley.models.image_loading import load_rgb_image" in text
    assert 'load_rgb_image("image.jpg")' in text and '.convert("RGB")' not in text
    # Training settings from the config, data, hyperparameters.
    assert "Trained on **shapes**" in text
    assert "| Shapley coalitions per image (m, in complementary pairs) | 8 |" in text
    assert "| Players grid (h, w) | (4, 4) |" in text
    assert "| num_train_epochs | 3 |" in text
    # Evaluation: accuracy with interval, plain classifier, faithfulness.
    assert "87.50%" in text and "[85.00%, 90.00%]" in text and "(2,000 images)" in text
    assert "plain classifier" in text and "90.00%" in text
    assert (
        "| Pearson r with the Shapley values of the model's game (predicted class) | 0.96 | [0.95, 0.97] |"
        in text
    )
    assert "Deletion AUC" in text and "eval_runtime" not in text
    assert "![" in text and "(explanations.png)" in text
    # Limitations.
    assert "## Limitations" in text
    assert "not causes in the world" in text and "log E[p | x_S]" in text

    path = tmp_path / "README.md"
    card.save(path)
    loaded = ModelCard.load(path)
    data = loaded.data
    assert data.pipeline_tag == "image-classification"
    assert data.library_name == "transformers"
    assert data.base_model == "google/vit-base-patch16-224-in21k"
    assert data.datasets == ["shapes"]
    assert data.license == "apache-2.0"
    for tag in (
        "hf-shapley",
        "shapley-values",
        "explainability",
        "self-explaining",
        "image-classification",
        "vit",
    ):
        assert tag in data.tags
    assert data.model_name == "tiny-vit-shapley"
    results = {r.metric_type: r for r in data.eval_results}
    assert results["accuracy"].metric_value == pytest.approx(0.875)
    assert results["accuracy"].dataset_type == "shapes"
    assert results["accuracy"].dataset_split == "test"
    assert results["accuracy"].task_type == "image-classification"
    assert results["pearson_r"].metric_value == pytest.approx(0.96)
    assert results["deletion_auc"].metric_value == pytest.approx(0.21)
    assert "plain_accuracy" not in results  # another model's number stays out of the index
    assert loaded.text == card.text


def test_minimal_card_has_no_optional_sections(tiny_model, tmp_path, no_network):
    card = render_model_card(tiny_model.config, repo_id="./outputs/run1")
    text = card.text
    assert 'model="./outputs/run1"' in text
    assert "## Evaluation results" not in text
    assert "plain classifier" not in text
    assert "## Example explanation" not in text and "![" not in text
    assert "Training hyperparameters" not in text
    assert "Training data: not specified." in text
    assert "## Limitations" in text and "(4 x 4)" in text
    assert "**Parameters:**" not in text  # a config has no weights to count
    card.save(tmp_path / "README.md")
    data = ModelCard.load(tmp_path / "README.md").data
    assert data.eval_results is None and data.datasets is None and data.base_model is None
    assert data.model_name == "run1"
    assert "vit" in data.tags


def test_partial_metrics_render_only_what_is_given(tiny_model, no_network):
    text = render_model_card(tiny_model, metrics={"faithfulness": {"insertion_auc": 0.7}}).text
    assert "## Evaluation results" in text and "Insertion AUC (player level)" in text
    assert "Top-1 accuracy" not in text and "plain classifier" not in text


def test_bad_metrics_and_inputs_are_clear_errors(tiny_model):
    with pytest.raises(ValueError, match="fraction"):
        render_model_card(tiny_model, metrics={"accuracy": 87.5})
    with pytest.raises(ValueError, match="pair"):
        render_model_card(tiny_model, metrics={"accuracy": 0.8, "accuracy_ci95": 0.1})
    with pytest.raises(TypeError, match="ShapleyConfig"):
        render_model_card(object())


def test_clip_models_get_a_clear_error_and_nothing_written(tmp_path):
    from conftest import tiny_shapley_clip

    model, _ = tiny_shapley_clip(players_grid=(2, 2))
    for publish in (
        lambda: render_model_card(model),
        lambda: render_model_card(model.config),
        lambda: hf_shapley.publishing.write_model_card(model, tmp_path / "card"),
        lambda: hf_shapley.publishing.save_for_hub(model, tmp_path / "hub"),
    ):
        with pytest.raises(TypeError, match="ShapleyCLIPModel|ShapleyForImageClassification"):
            publish()
    assert not (tmp_path / "card").exists() and not (tmp_path / "hub").exists()


def test_custom_template(tiny_model, tmp_path, no_network):
    template = tmp_path / "t.md"
    template.write_text(
        "---\n{{ card_data }}\n---\n\n# {{ model_name }} ({{ players_grid_text }}) {{ extra }}\n"
    )
    card = render_model_card(tiny_model, repo_id=REPO, template_path=template, extra="hello")
    assert card.text.strip() == "# tiny-vit-shapley (4 x 4) hello"
    assert card.data.pipeline_tag == "image-classification"


def test_pixel_baseline_card_states_input_size_and_removal(make_model, no_network):
    model = make_model("resnet", players_grid=(2, 2))
    text = render_model_card(model, repo_id=REPO).text
    height, width = model.image_size
    assert f"**Input size:** {height} x {width} px" in text  # ResNet configs carry no image size
    assert "replacing the patch's pixels with a baseline value" in text
    assert "dropping the patch's tokens" not in text


def test_card_rows_follow_the_objective_table(make_model, monkeypatch, no_network):
    """One row per objective setting with a card label, in the config's order and format; a
    setting used only under a condition (num_explained_classes) only where it applies."""
    model = make_model(
        "vit",
        players_grid=(2, 2),
        explained_classes="label",
        num_explained_classes=2,
        shapley_loss_weight=0.25,
        loss_warmup_steps=5,
        shapley_loss_normalization="none",
    )
    text = render_model_card(model, repo_id=REPO).text
    positions = []
    for setting in OBJECTIVE_SETTINGS:
        if setting.label is None:
            assert setting.name == "coalition_batch_size"  # speed and memory only
            continue
        row = f"| {setting.label} | {setting.card_value(getattr(model.config, setting.name))} |"
        assert row in text, row
        positions.append(text.index(row))
    assert positions == sorted(positions)
    assert "| Shapley loss normalization | `none` |" in text
    assert "| Number of explained classes | 2 |" in text
    assert "| Loss warm-up steps | 5 |" in text

    model.config.explained_classes = "all"
    assert "Number of explained classes" not in render_model_card(model, repo_id=REPO).text

    # The labels are read from the table, not written in hub.py.
    renamed = tuple(
        dataclasses.replace(s, label="Pairs of kernel coalitions")
        if s.name == "num_shapley_coalitions"
        else s
        for s in OBJECTIVE_SETTINGS
    )
    monkeypatch.setattr(hf_shapley.publishing.model_card, "OBJECTIVE_SETTINGS", renamed)
    text = render_model_card(model, repo_id=REPO).text
    assert f"| Pairs of kernel coalitions | {model.config.num_shapley_coalitions} |" in text
    assert "Shapley coalitions per image" not in text


def test_module_docstring_names_the_publishing_route():
    doc = hf_shapley.publishing.hub.__doc__
    assert "from hf_shapley.publishing import push_to_hub" in doc
    assert "push_to_hub(model, " in doc and "one route" in doc
