"""hf_shapley.training.plain_classifier: the one plain (cross-entropy) classifier training function, and
the callers that must go through it."""

from __future__ import annotations

import json
import math
import re
import sys
from pathlib import Path

import pytest
import torch
from transformers import (
    AutoImageProcessor,
    AutoModelForImageClassification,
    ResNetConfig,
    ResNetForImageClassification,
    ViTConfig,
    ViTForImageClassification,
    ViTImageProcessorPil,
)

import hf_shapley.training.plain_classifier as plain_classifier
from conftest import load_benchmark_script
from hf_shapley.data import load_shapes_dataset
from hf_shapley.training.plain_classifier import train_plain_classifier

REPO = Path(__file__).resolve().parents[1]
SETTINGS = dict(
    per_device_train_batch_size=32,
    learning_rate=3e-3,
    weight_decay=0.0,
    warmup_steps=5,
    lr_scheduler_type="linear",
    seed=0,
)

pytestmark = pytest.mark.usefixtures("single_thread")


def _processor(size: int) -> ViTImageProcessorPil:
    return ViTImageProcessorPil(
        size={"height": size, "width": size}, image_mean=[0.5] * 3, image_std=[0.5] * 3
    )


@torch.no_grad()
def _accuracy(model, processor, split) -> float:
    model.eval()
    x = processor([image.convert("RGB") for image in split["image"]], return_tensors="pt")
    predicted = model(x["pixel_values"]).logits.argmax(-1)
    return float((predicted == torch.tensor(split["label"])).double().mean())


def test_plain_classifier_learns_above_chance_and_saves(tmp_path):
    """A tiny ResNet trained by the function on the built-in data beats chance (25%) by far in
    a small budget (126 steps; 0.69 test accuracy when written); the saved directory reloads to
    the same model with its processor."""
    data = load_shapes_dataset(2000, 400, image_size=64)
    torch.manual_seed(0)
    labels = dict(enumerate(data["train"].features["label"].names))
    config = ResNetConfig(
        embedding_size=16, hidden_sizes=[16, 32, 64], depths=[1, 1, 1], layer_type="basic",
        id2label=labels, label2id={v: k for k, v in labels.items()},
    )  # fmt: skip
    model = ResNetForImageClassification(config)
    processor = _processor(64)
    untrained = _accuracy(model, processor, data["test"])

    trained, metrics = train_plain_classifier(
        model, data["train"], image_processor=processor, output_dir=tmp_path / "plain",
        num_train_epochs=2, use_cpu=True, **SETTINGS,
    )  # fmt: skip
    assert trained is model
    assert metrics["train_steps"] == 2 * math.ceil(2000 / 32)
    assert metrics["train_loss"] < 1.35  # ln 4 = 1.386 at chance
    accuracy = _accuracy(trained, processor, data["test"])
    # 400 test images: chance is 0.25 +- 0.022 (one standard deviation).
    assert accuracy > 0.5, (untrained, accuracy)

    reloaded = AutoModelForImageClassification.from_pretrained(tmp_path / "plain")
    assert type(reloaded) is ResNetForImageClassification
    reloaded_processor = AutoImageProcessor.from_pretrained(tmp_path / "plain")
    assert _accuracy(reloaded, reloaded_processor, data["test"]) == accuracy


def test_max_steps_counts_optimizer_steps(tmp_path):
    data = load_shapes_dataset(64, 8, image_size=32)
    config = ViTConfig(
        image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=64, num_labels=4,
    )  # fmt: skip
    _, metrics = train_plain_classifier(
        ViTForImageClassification(config), data["train"], image_processor=_processor(32),
        output_dir=tmp_path / "vit", max_steps=3, use_cpu=True, **SETTINGS,
    )  # fmt: skip
    assert metrics["train_steps"] == 3
    assert (tmp_path / "vit" / "model.safetensors").is_file()
    assert (tmp_path / "vit" / "preprocessor_config.json").is_file()


def test_held_out_loss_chooses_the_step_kept_and_stops_early(tmp_path):
    """With held-out images the saved classifier is the evaluation with the lowest loss (a ViT:
    transformers' own best-model load would silently keep the last weights), and training
    stops after ``early_stopping_patience`` evaluations without improvement. A learning rate
    of 0.3 makes the held-out loss rise after the first steps."""
    data = load_shapes_dataset(256, 8, image_size=32, num_validation=64)
    config = ViTConfig(
        image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=64, num_labels=4,
    )  # fmt: skip
    torch.manual_seed(0)
    processor = _processor(32)
    model, metrics = train_plain_classifier(
        ViTForImageClassification(config), data["train"], image_processor=processor,
        output_dir=tmp_path / "vit", max_steps=60, use_cpu=True, eval_dataset=data["validation"],
        eval_steps=2, early_stopping_patience=2,
        **{**SETTINGS, "learning_rate": 0.3, "warmup_steps": 0},
    )  # fmt: skip
    state = json.loads((tmp_path / "vit" / "trainer_state.json").read_text())
    losses = {log["step"]: log["eval_loss"] for log in state["log_history"] if "eval_loss" in log}
    best = min(losses, key=losses.get)
    assert metrics["best_step"] == best and metrics["best_eval_loss"] == losses[best]
    # Stopped early: two evaluations after the best, short of the 60 steps.
    assert metrics["train_steps"] == max(losses) == best + 2 * 2 < 60
    # The saved (and returned) weights are the best step's: their held-out loss is its loss.
    reloaded = ViTForImageClassification.from_pretrained(tmp_path / "vit").eval()
    x = processor([im.convert("RGB") for im in data["validation"]["image"]], return_tensors="pt")
    labels = torch.tensor(data["validation"]["label"])
    with torch.no_grad():
        loss = torch.nn.functional.cross_entropy(reloaded(x["pixel_values"]).logits, labels)
        returned = torch.nn.functional.cross_entropy(model.eval()(x["pixel_values"]).logits, labels)
    assert float(loss) == pytest.approx(losses[best], rel=1e-4)
    assert float(returned) == pytest.approx(losses[best], rel=1e-4)
    assert not list((tmp_path / "vit").glob("checkpoint-*"))


@pytest.mark.parametrize("length", [{}, {"num_train_epochs": 1, "max_steps": 2}])
def test_exactly_one_training_length(tmp_path, length):
    with pytest.raises(ValueError, match="exactly one of num_train_epochs and max_steps"):
        train_plain_classifier(
            None, [], image_processor=None, output_dir=tmp_path, **length, **SETTINGS
        )


def test_package_import_does_not_load_the_trainer_module():
    """``import hf_shapley`` stays light: the plain-classifier module is imported on demand."""
    import subprocess

    code = (
        "import sys, hf_shapley; "
        "assert 'hf_shapley.training.plain_classifier' not in sys.modules; "
        "assert 'hf_shapley.training.trainer' not in sys.modules; "
        "assert 'transformers.trainer' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# ----------------------------------------------------------------------------- callers
def test_no_benchmark_imports_the_example_script():
    for path in sorted((REPO / "benchmarks").glob("*.py")):
        text = path.read_text()
        assert "spec_from_file_location" not in text, path.name
        assert not re.search(r"^\s*(import|from)\s+train\b", text, re.MULTILINE), path.name


def test_faithfulness_plain_baseline_goes_through_the_function(tmp_path, monkeypatch):
    """The faithfulness benchmark's equal-steps plain classifier is trained by
    train_plain_classifier, for the Shapley model's steps and with its optimizer settings."""
    faithfulness = load_benchmark_script("faithfulness")
    model_dir = tmp_path / "shapley"
    pretrained = model_dir / "pretrained-classifier-32px"
    torch.manual_seed(0)
    config = ViTConfig(
        image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=64, num_labels=4,
    )  # fmt: skip
    ViTForImageClassification(config).save_pretrained(pretrained)
    _processor(32).save_pretrained(pretrained)
    (model_dir / "metrics.json").write_text(json.dumps({"train_steps": 2}))
    shapley_args = {**SETTINGS, "learning_rate": 5e-4, "seed": 3, "num_train_epochs": 3.0}
    (model_dir / "training_args.json").write_text(json.dumps(shapley_args))

    calls = []

    def spy(model, train_dataset, **kwargs):
        calls.append(kwargs)
        return train_plain_classifier(model, train_dataset, **kwargs)

    monkeypatch.setattr(plain_classifier, "train_plain_classifier", spy)
    args = faithfulness.parse_args(["--device", "cpu"])
    train = load_shapes_dataset(64, 8, image_size=32)["train"]
    faithfulness.ensure_plain_classifier(model_dir, tmp_path / "plain", train, args)

    assert len(calls) == 1
    call = calls[0]
    assert call["max_steps"] == 2 and "num_train_epochs" not in call
    assert call["learning_rate"] == 5e-4 and call["seed"] == 3
    assert call["per_device_train_batch_size"] == SETTINGS["per_device_train_batch_size"]
    assert (tmp_path / "plain" / "model.safetensors").is_file()
    assert json.loads((tmp_path / "plain" / "train_steps.json").read_text()) == {"train_steps": 2}
    # Done once: a second call reuses the directory.
    faithfulness.ensure_plain_classifier(model_dir, tmp_path / "plain", train, args)
    assert len(calls) == 1


def test_recipe_study_uses_the_main_jobs_settings():
    from conftest import load_example_script

    train_script = load_example_script("train")
    recipe = load_benchmark_script("recipe")
    assert recipe.MAIN_JOB_BACKBONE == train_script.BUILTIN_BACKBONE
    defaults = train_script.default_training_args()
    assert {k: defaults[k] for k in recipe.MAIN_JOB_OPTIMIZER} == recipe.MAIN_JOB_OPTIMIZER
    assert recipe.COMMON["loss_warmup_steps"] == defaults["loss_warmup_steps"]
    # The study's recipe arm is what from_backbone gives a classifier.
    from hf_shapley.models.configuration_shapley import EXPLAINER_DEFAULTS

    arm = dict(recipe.VARIANTS["explainer_recipe"])
    assert arm.pop("prediction_mode") == "backbone_head" and arm == EXPLAINER_DEFAULTS
