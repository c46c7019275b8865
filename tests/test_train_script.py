"""examples/train.py, the main job: a real run writes a complete, loadable model directory, and
bad data is refused before training starts with a message that says what to fix."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import (
    AutoImageProcessor,
    AutoModelForImageClassification,
    ViTForImageClassification,
    ViTImageProcessor,
    ViTModel,
    pipeline,
)

import hf_shapley  # noqa: F401  (registers the auto classes)
from conftest import load_example_script, tiny_backbone_config


@pytest.fixture(scope="module")
def train_script():
    return load_example_script("train")


def _save_backbone(path: Path, classifier_labels: int | None = None) -> Path:
    torch.manual_seed(0)
    if classifier_labels:
        labels = {i: f"class {i}" for i in range(classifier_labels)}
        model = ViTForImageClassification(
            tiny_backbone_config("vit", id2label=labels, label2id={v: k for k, v in labels.items()})
        )
    else:
        model = ViTModel(tiny_backbone_config("vit"), add_pooling_layer=False)
    model.save_pretrained(path)
    ViTImageProcessor(
        size={"height": 32, "width": 32}, image_mean=[0.5] * 3, image_std=[0.5] * 3
    ).save_pretrained(path)
    return path


def _imagefolder(root: Path, classes=("cat", "dog"), per_class: int = 4) -> Path:
    rng = np.random.default_rng(0)
    for name in classes:
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(
                root / name / f"{i}.png"
            )
    return root


def test_main_job_writes_a_complete_loadable_directory(train_script, tmp_path, single_thread):
    backbone = _save_backbone(tmp_path / "backbone")
    out = tmp_path / "out"
    report = train_script.main(
        [
            "--backbone", str(backbone), "--players_grid", "2", "2",
            "--num_train", "64", "--num_test", "24", "--num_train_epochs", "1", "--explainer_max_steps", "0",
            "--classifier_max_steps", "4", "--classifier_eval_steps", "2",
            "--num_validation", "16",
            "--per_device_train_batch_size", "16", "--per_device_eval_batch_size", "16",
            "--output_dir", str(out), "--num_truth_images", "4", "--num_exact_images", "2",
            "--num_explained_images", "2",
            "--logging_steps", "1",
        ]
    )  # fmt: skip
    for name in ("model.safetensors", "config.json", "preprocessor_config.json", "README.md", "metrics.json",
                 "modeling_shapley.py", "pipeline_shapley.py", "explanation_example.png",
                 "shapley_training_args.json"):  # fmt: skip
        assert (out / name).is_file(), name
    assert sorted(p.name for p in (out / "explanations").iterdir()) == [
        "test_000.png",
        "test_001.png",
    ]
    Image.open(out / "explanations" / "test_000.png").verify()

    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics == json.loads(json.dumps(report))
    # A bare backbone: a classifier (the backbone with a new head) is trained here first, for
    # its 4 steps, and then explained as it is.
    [pretrained] = out.glob("pretrained-classifier-*")
    state = json.loads((pretrained / "trainer_state.json").read_text())
    assert state["global_step"] == 4
    assert metrics["classifier"]["trained"] is False and metrics["classifier"]["logits_identical"]
    assert json.loads((out / "config.json").read_text())["prediction_mode"] == "backbone_head"
    low, high = metrics["accuracy_ci95"]
    assert 0 <= low <= metrics["accuracy"] <= high <= 1
    assert metrics["num_eval_images"] == 24 and metrics["train_steps"] == 4
    assert metrics["faithfulness_num_images"] == 4 and metrics["faithfulness_num_exact_images"] == 2
    faithfulness = metrics["faithfulness"]
    # At P = 4 the 1,024-evaluation KernelSHAP truth is as good as exact.
    assert faithfulness["truth_error_vs_exact"] < 0.05

    card = (out / "README.md").read_text()
    assert f"{metrics['accuracy']:.3f}"[:4] in card or f"{100 * metrics['accuracy']:.1f}" in card
    assert "(explanation_example.png)" in card
    assert "centered over classes" in card and "exact enumeration" in card

    # The directory loads through the auto classes and explains itself.
    model = AutoModelForImageClassification.from_pretrained(out).eval()
    assert model.config.id2label == {
        0: "red circle",
        1: "green square",
        2: "blue triangle",
        3: "yellow cross",
    }
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        result = model(x)
    torch.testing.assert_close(result.logits, result.base_values + result.shapley_values.sum(1))

    # The exact figures in metrics.json, recomputed independently: every coalition through the
    # public coalition= API, the exact estimator, centered predicted-class values, scipy's r.
    from scipy.stats import pearsonr

    from hf_shapley.data import load_image_splits
    from hf_shapley.evaluation.estimators import exact_shapley_values, model_game

    _, test = load_image_splits(num_train=64, num_test=24)  # the job's data, as it made them
    processor = AutoImageProcessor.from_pretrained(out)
    x = processor([test[i]["image"].convert("RGB") for i in range(2)], return_tensors="pt")[
        "pixel_values"
    ]
    with torch.no_grad():
        explained = model(x)
        truth = exact_shapley_values(model_game(model, x), 4).permute(1, 0, 2)  # (B, P, K)
    predicted = explained.logits.argmax(-1)
    r = []
    for b in range(2):
        phi = explained.shapley_values[b].double()
        t = truth[b].double()
        k = int(predicted[b])
        r.append(
            pearsonr(
                (phi - phi.mean(-1, keepdim=True))[:, k], (t - t.mean(-1, keepdim=True))[:, k]
            )[0]
        )
    assert faithfulness["exact_pearson_r"] == pytest.approx(float(np.mean(r)), abs=1e-6)

    # ... and serves the explanation pipeline.
    explained = pipeline("image-shapley-explanation", model=str(out))(
        Image.open(out / "explanations" / "test_000.png"), top_k=1
    )[0]
    assert explained["label"] in model.config.id2label.values()
    assert abs(explained["efficiency_residual"]) < 1e-4


def test_push_to_hub_offline_fails_before_training(train_script, tmp_path, monkeypatch):
    import huggingface_hub.constants

    from hf_shapley.publishing import HubOfflineError

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(HubOfflineError, match="HF_HUB_OFFLINE=1"):
        train_script.main(["--output_dir", str(tmp_path / "o"), "--push_to_hub"])
    assert not (tmp_path / "o").exists()


def test_missing_column_is_refused_before_training(train_script, tmp_path):
    folder = _imagefolder(tmp_path / "data")
    with pytest.raises(
        SystemExit, match=r"no column \['labels'\].*--image_column and --label_column"
    ):
        train_script.main(
            [
                "--train_dir",
                str(folder),
                "--label_column",
                "labels",
                "--output_dir",
                str(tmp_path / "o"),
            ]
        )


def test_corrupt_image_is_refused_naming_the_row(train_script, tmp_path):
    folder = _imagefolder(tmp_path / "data")
    (folder / "dog" / "9.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not an image")
    with pytest.raises(SystemExit, match=r"Image \d+ of the (train|eval) split .* cannot be read"):
        train_script.main(["--train_dir", str(folder), "--output_dir", str(tmp_path / "o")])


def test_label_count_mismatch_is_refused_before_training(train_script, tmp_path):
    backbone = _save_backbone(tmp_path / "clf", classifier_labels=3)
    with pytest.raises(SystemExit, match=r"do not match the classifier's labels: lacks"):
        train_script.main(
            [
                "--backbone",
                str(backbone),
                "--players_grid",
                "2",
                "2",
                "--num_train",
                "16",
                "--num_test",
                "8",
                "--output_dir",
                str(tmp_path / "o"),
            ]  # fmt: skip
        )
    assert not (tmp_path / "o").exists()


def test_builtin_job_pretrains_a_classifier_then_wraps_it(
    train_script, tmp_path, single_thread, monkeypatch
):
    import hf_shapley.training.plain_classifier as plain_classifier

    calls = []
    real = plain_classifier.train_plain_classifier

    def spy(model, train_dataset, **kwargs):
        calls.append({**kwargs, "train_dataset": train_dataset})
        return real(model, train_dataset, **kwargs)

    monkeypatch.setattr(plain_classifier, "train_plain_classifier", spy)
    out = tmp_path / "builtin"
    train_script.main(
        [
            "--image_size",
            "32",
            "--players_grid",
            "2",
            "2",
            "--num_train",
            "64",
            "--num_test",
            "16",
            "--classifier_max_steps",
            "4",
            "--num_train_epochs",
            "1",
            "--explainer_max_steps",
            "0",
            "--num_validation",
            "16",
            "--per_device_train_batch_size",
            "16",
            "--num_exact_images",
            "0",
            "--num_explained_images",
            "1",
            "--output_dir",
            str(out),
        ]  # fmt: skip
    )
    # The cache is keyed by what changes the classifier; metrics.json names the one used.
    [pretrained] = out.glob("pretrained-classifier-*")
    assert pretrained.name.startswith("pretrained-classifier-32px-64-4steps-")
    assert pretrained.name.endswith("-seed0")
    assert json.loads((out / "metrics.json").read_text())["pretrained_classifier"] == (
        pretrained.name
    )
    # The pretraining is the package's one plain-classifier training function, with the job's
    # optimizer settings.
    assert len(calls) == 1
    assert calls[0]["max_steps"] == 4 and calls[0]["output_dir"] == pretrained
    # Held-out validation images (the built-in data's own stream) choose the step kept.
    assert len(calls[0]["eval_dataset"]) == 16
    assert calls[0]["per_device_train_batch_size"] == 16 and calls[0]["learning_rate"] == 1e-3
    # The built-in images fit in memory: processed once, not in every batch.
    from hf_shapley.data import InMemoryPixels

    assert isinstance(calls[0]["train_dataset"], InMemoryPixels)
    assert len(calls[0]["train_dataset"]) == 64
    assert (pretrained / "model.safetensors").is_file()
    assert json.loads((pretrained / "config.json").read_text())["architectures"] == [
        "ViTForImageClassification"
    ]
    config = json.loads((out / "config.json").read_text())
    # The explainer recipe: the classifier keeps its head, a Shapley head explains it.
    assert config["prediction_mode"] == "backbone_head" and config["players_grid"] == [2, 2]
    from hf_shapley.models.configuration_shapley import EXPLAINER_DEFAULTS

    assert {k: config[k] for k in EXPLAINER_DEFAULTS} == EXPLAINER_DEFAULTS
    assert config["head_reads_hidden_states"] is True  # the ViT-like families' recipe
    assert config["backbone_config"]["image_size"] == 32
    # The classifier pretrained here is trained to the end: the explainer learns its fixed game
    # (frozen, its coalition values kept across epochs): the saved classifier IS the pretrained
    # one.
    assert config["train_backbone"] is False and config["reuse_shapley_coalitions"] is True
    # 64 training images: the most coalitions kept per image (512,000 / 64, capped at 256).
    assert config["num_shapley_coalitions"] == train_script.kept_coalitions_per_image(64) == 256
    assert config["shapley_loss_normalization"] == "none"  # fixed targets: no collapse
    # The frozen game's passes run in bf16 exactly where the device computes it natively.
    native = train_script.native_bfloat16()
    assert config["frozen_game_dtype"] == ("bfloat16" if native else "float32")
    from safetensors.torch import load_file

    before = load_file(pretrained / "model.safetensors")
    after = load_file(out / "model.safetensors")
    for name in ("embeddings.patch_embeddings.projection.weight", "classifier.weight"):
        key = next(k for k in after if k.endswith(name) and "shapley" not in k)
        assert torch.equal(before[f"vit.{name}" if "embeddings" in name else name], after[key])
    assert any(k.startswith("shapley_head.") for k in after)
    # Only the head trains, at its own learning rate; the pretraining kept --learning_rate.
    defaults = train_script.ModelArguments()
    head_lr = defaults.explainer_learning_rate
    assert head_lr != calls[0]["learning_rate"]
    saved_args = json.loads((out / "training_args.json").read_text())
    assert saved_args["learning_rate"] == head_lr
    # By default the head trains on every image with the job's batch size: 64 images, 16 a
    # step, one epoch.
    assert defaults.explainer_batch_size is None and defaults.explainer_train_samples is None
    assert saved_args["per_device_train_batch_size"] == 16
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["train_steps"] == 64 // 16

    # Fewer images for the head: the classifier is reused (not pretrained again) and the head
    # takes ceil(24 / 8) steps an epoch.
    train_script.main(
        ["--image_size", "32", "--players_grid", "2", "2", "--num_train", "64", "--num_test",
         "16", "--classifier_max_steps", "4", "--num_train_epochs", "1", "--explainer_max_steps", "0",
         "--num_validation", "16", "--per_device_train_batch_size", "16", "--num_exact_images", "0",
         "--num_explained_images", "0", "--explainer_train_samples", "24",
         "--explainer_batch_size", "8", "--output_dir", str(out)]
    )  # fmt: skip
    assert len(calls) == 1
    assert json.loads((out / "metrics.json").read_text())["train_steps"] == 3
    assert json.loads((out / "training_args.json").read_text())["per_device_train_batch_size"] == 8


@pytest.mark.parametrize("option", ["--explainer_train_samples", "--explainer_batch_size"])
def test_explainer_sizes_below_one_are_refused_before_training(train_script, tmp_path, option):
    with pytest.raises(SystemExit, match=f"{option} must be at least 1"):
        train_script.main([option, "0", "--output_dir", str(tmp_path / "o")])
    assert not (tmp_path / "o").exists()


def test_negative_in_memory_limit_is_refused_before_training(train_script, tmp_path):
    with pytest.raises(SystemExit, match="--preprocess_in_memory_gb must be >= 0"):
        train_script.main(["--preprocess_in_memory_gb", "-1", "--output_dir", str(tmp_path / "o")])
    assert not (tmp_path / "o").exists()
