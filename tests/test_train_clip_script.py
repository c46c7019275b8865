"""examples/train_clip.py: a short real run writes a directory that loads with the auto classes
and serves the zero-shot pipeline; ShapleyCLIPTrainer logs the pair objective's components."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image
from transformers import AutoModelForZeroShotImageClassification, pipeline

import hf_shapley
from conftest import load_example_script
from hf_shapley.data import generate_shapes, shapes_class_prompts

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("train_clip") / "out"
    script = load_example_script("train_clip")
    metrics = script.main(
        [
            "--num_train", "96", "--num_test", "32", "--image_size", "32", "--patch_size", "8",
            "--hidden_size", "32", "--num_layers", "2", "--projection_dim", "16",
            "--head_hidden_size", "32", "--head_num_layers", "1",
            "--num_train_epochs", "1", "--explainer_epochs", "1",
            "--per_device_train_batch_size", "16", "--per_device_eval_batch_size", "16",
            "--warmup_steps", "0", "--logging_steps", "2", "--disable_tqdm", "True",
            "--output_dir", str(out),
        ]
    )  # fmt: skip
    return out, metrics


def test_script_writes_a_loadable_directory(run):
    out, metrics = run
    for name in ("model.safetensors", "config.json", "preprocessor_config.json",
                 "tokenizer.json", "metrics.json", "modeling_shapley_clip.py"):  # fmt: skip
        assert (out / name).is_file(), name
    saved = json.loads((out / "metrics.json").read_text())
    faithfulness = saved.pop("faithfulness")
    assert saved.pop("deletion_recall_at_1") == metrics["deletion_recall_at_1"]
    nested = ("faithfulness", "deletion_recall_at_1")
    assert saved == pytest.approx({k: v for k, v in metrics.items() if k not in nested})
    # The explanation's faithfulness is reported: exact truth on the first 4 test pairs, for
    # each image's caption and for the other images' captions.
    assert faithfulness["num_images"] == 4 and faithfulness["truth"].startswith("exact")
    for key in ("pearson_r", "other_texts_pearson_r"):
        assert -1 <= faithfulness[key] <= 1
        low, high = faithfulness[f"{key}_ci95"]
        assert low <= faithfulness[key] <= high
    assert faithfulness["pooled_relative_error"] >= 0
    for phase in ("joint", "explainer"):
        assert 0 <= metrics[f"{phase}_eval_recall_at_1"] <= 1
        assert 0 < metrics[f"{phase}_eval_shapley_regression_proxy"] < 10
    assert 0 <= metrics["zero_shot_accuracy"] <= 1
    config = json.loads((out / "config.json").read_text())
    assert config["train_clip"] is False  # the explainer phase froze CLIP
    model = AutoModelForZeroShotImageClassification.from_pretrained(out)
    assert type(model) is hf_shapley.ShapleyCLIPModel


def test_saved_directory_serves_the_zero_shot_pipeline(run):
    out, _ = run
    explainer = pipeline("zero-shot-image-shapley-explanation", model=str(out))
    image = Image.fromarray(generate_shapes(1, image_size=32).images[0])
    labels = [p.removeprefix("a photo of a ") for p in shapes_class_prompts(4)]
    result = explainer(image, candidate_labels=labels, hypothesis_template="a photo of a {}")
    assert sorted(e["label"] for e in result) == sorted(labels)
    assert all(abs(e["efficiency_residual"]) < 1e-4 for e in result)
    assert len(result[0]["attributions"]) == 4 and len(result[0]["attributions"][0]) == 4


def test_trainer_logs_the_pair_objective(tmp_path):
    from transformers import CLIPImageProcessor, CLIPModel

    from conftest import caption_clip_config
    from hf_shapley.data import load_shapes_caption_dataset
    from hf_shapley.training.trainer import add_example_index
    from hf_shapley.training.trainer_clip import ShapleyCLIPCollator, ShapleyCLIPTrainer

    config, tokenizer = caption_clip_config(context=40)
    torch.manual_seed(0)
    model = hf_shapley.ShapleyCLIPModel.from_clip(
        CLIPModel(config), players_grid=(2, 2), head_hidden_size=16, head_num_layers=0
    )
    data = load_shapes_caption_dataset(16, 8, image_size=32)
    processor = CLIPImageProcessor(
        size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}
    )
    args = hf_shapley.ShapleyTrainingArguments(
        str(tmp_path), max_steps=2, per_device_train_batch_size=8, logging_steps=1,
        report_to=[], shapley_loss_weight=3.0, disable_tqdm=True,
    )  # fmt: skip
    trainer = ShapleyCLIPTrainer(
        model,
        args,
        train_dataset=add_example_index(data["train"]),
        eval_dataset=data["test"],
        data_collator=ShapleyCLIPCollator(processor, tokenizer),
    )
    assert model.config.shapley_loss_weight == 3.0  # the override reached the config
    trainer.train()
    logged = [log for log in trainer.state.log_history if "loss" in log]
    assert logged and all(log["contrastive_loss"] == 0 for log in logged)  # CLIP frozen
    assert all(log["shapley_loss"] > 0 for log in logged)
    metrics = trainer.evaluate()
    assert 0 <= metrics["eval_recall_at_1"] <= 1 and metrics["eval_shapley_regression_proxy"] > 0
    with pytest.raises(ValueError, match="not settings of the dual encoder"):
        ShapleyCLIPTrainer(
            model,
            hf_shapley.ShapleyTrainingArguments(
                str(tmp_path), report_to=[], vote_consistency_weight=1.0
            ),
            data_collator=ShapleyCLIPCollator(processor, tokenizer),
        )
    with pytest.raises(ValueError, match="example_index"):
        ShapleyCLIPTrainer(
            model, args, train_dataset=data["train"],
            data_collator=ShapleyCLIPCollator(processor, tokenizer),
        ).train()  # fmt: skip
