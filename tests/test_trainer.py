"""Tests for ShapleyTrainer / ShapleyTrainingArguments with the real Trainer.

Everything runs the stock ``transformers.Trainer`` loop on tiny ViTs (32 px images, 8 px
patches, a 2 x 2 player grid) and small in-memory ``datasets.Dataset`` objects, writing real
checkpoint directories under ``tmp_path``.

Equivalence checks (gradient accumulation, resume) compare final weights: they hold because
the coalitions are a pure function of (seed, epoch, example_index, coalition index) and every
loss term is a mean of per-image terms. Tolerances: 1e-5 absolute for reorderings of fp32 sums
(accumulation), 1e-6 for resume (the same computations in the same order).
"""

from __future__ import annotations

import dataclasses
import json
import math
import typing

import datasets
import numpy as np
import pytest
import torch
from PIL import Image
from transformers import HfArgumentParser, Trainer, TrainingArguments, ViTImageProcessor

import hf_shapley
from hf_shapley.models.coalitions import sample_shapley_kernel_coalitions
from hf_shapley.models.configuration_shapley import OBJECTIVE_SETTINGS, ShapleyConfig
from hf_shapley.models.image_loading import load_rgb_image
from hf_shapley.models.objective import shapley_regression_loss
from hf_shapley.training.checkpoint_loading import ConvertedCheckpointLoading
from hf_shapley.training.trainer import (
    OBJECTIVE_FIELDS,
    ShapleyImageCollator,
    ShapleyProgressCallback,
    ShapleyTrainer,
    ShapleyTrainingArguments,
    add_example_index,
    shapley_training_args_from_json,
)

pytestmark = pytest.mark.usefixtures("single_thread")

NUM_LABELS = 3
GRID = (2, 2)


def make_dataset(num: int, seed: int = 0) -> datasets.Dataset:
    """``num`` random 32 x 32 images as ``pixel_values`` arrays, labels, and ``example_index``."""
    rng = np.random.default_rng(seed)
    ds = datasets.Dataset.from_dict(
        {
            "pixel_values": rng.standard_normal((num, 3, 32, 32)).astype(np.float32),
            "label": rng.integers(0, NUM_LABELS, num),
        }
    )
    return add_example_index(ds).with_format("numpy")


def make_image_dataset(num: int, seed: int = 0) -> datasets.Dataset:
    """``num`` random PIL images (40 x 40, for the image processor to resize) and labels."""
    rng = np.random.default_rng(seed)
    images = [
        Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)) for _ in range(num)
    ]
    ds = datasets.Dataset.from_dict(
        {"image": images, "label": rng.integers(0, NUM_LABELS, num).tolist()},
        features=datasets.Features(
            {"image": datasets.Image(), "label": datasets.ClassLabel(num_classes=NUM_LABELS)}
        ),
    )
    return add_example_index(ds)


def make_args(tmp_path, name="out", **kwargs) -> ShapleyTrainingArguments:
    defaults = dict(
        report_to="none",
        disable_tqdm=True,
        save_strategy="no",
        logging_strategy="no",
        dataloader_pin_memory=False,
        use_cpu=True,
    )
    return ShapleyTrainingArguments(str(tmp_path / name), **{**defaults, **kwargs})


def ints(column) -> list[int]:
    """A data set column (a `datasets` Column in datasets 5) as a list of Python ints."""
    return [int(v) for v in column]


def weights(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_weights_close(a, b, atol):
    assert a.keys() == b.keys()
    worst = max((a[k] - b[k]).abs().max().item() for k in a)
    assert worst <= atol, f"max weight difference {worst:.3g} > {atol:.1g}"


def assert_weights_differ(a, b):
    assert max((a[k] - b[k]).abs().max().item() for k in a) > 1e-4


def spy_forward(model) -> list[dict]:
    """Record the keyword arguments of every call of ``model``'s forward (a forward pre-hook):
    mode, and the ``global_step``, ``epoch`` and ``example_index`` it got (``"absent"`` if not
    passed), for calls with ``labels`` (the ones that compute a loss)."""
    calls = []

    def hook(module, args, kwargs):
        if kwargs.get("labels") is None:
            return
        index = kwargs.get("example_index")
        calls.append(
            {
                "training": module.training,
                "global_step": kwargs.get("global_step", "absent"),
                "epoch": kwargs.get("epoch", "absent"),
                "example_index": None if index is None else index.tolist(),
            }
        )

    model.register_forward_pre_hook(hook, with_kwargs=True)
    return calls


# --------------------------------------------------------------------------------------
# Arguments and config overrides
# --------------------------------------------------------------------------------------


def test_overrides_written_to_config_and_json(tmp_path, make_model):
    model = make_model("vit", players_grid=GRID, num_distill_coalitions=2)
    args = make_args(
        tmp_path,
        max_steps=1,
        per_device_train_batch_size=4,
        save_strategy="steps",
        save_steps=1,
        num_shapley_coalitions=4,
        shapley_loss_weight=0.5,
        loss_warmup_steps=3,
        center_logits=True,
        coalition_seed=7,
    )
    assert args.remove_unused_columns is False
    ShapleyTrainer(model, args, train_dataset=make_dataset(8)).train()

    expected = {
        "num_shapley_coalitions": 4,
        "shapley_loss_weight": 0.5,
        "loss_warmup_steps": 3,
        "center_logits": True,
        "coalition_seed": 7,
    }
    for name, value in expected.items():
        assert getattr(model.config, name) == value
    assert model.config.num_distill_coalitions == 2  # not set: the model's value stays

    checkpoint = tmp_path / "out" / "checkpoint-1"
    with open(checkpoint / "config.json") as f:
        saved = json.load(f)
    for name, value in expected.items():
        assert saved[name] == value
    assert saved["num_distill_coalitions"] == 2

    shapley_args = shapley_training_args_from_json(checkpoint)
    assert shapley_args["overrides"] == expected
    assert set(shapley_args["objective"]) == set(OBJECTIVE_FIELDS)
    assert shapley_args["objective"]["num_distill_coalitions"] == 2
    with open(checkpoint / "training_args.json") as f:
        training_args = json.load(f)
    assert training_args["per_device_train_batch_size"] == 4
    assert training_args["num_shapley_coalitions"] == 4
    assert training_args["shapley_loss_normalization"] is None

    reloaded = hf_shapley.ShapleyForImageClassification.from_pretrained(checkpoint)
    assert reloaded.config.center_logits is True and reloaded.config.coalition_seed == 7


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"num_shapley_coalitions": 3}, "num_shapley_coalitions.*even"),
        ({"num_shapley_coalitions": -2}, "num_shapley_coalitions"),
        ({"shapley_loss_normalization": "batch"}, "shapley_loss_normalization"),
        ({"explained_classes": "random"}, "explained_classes"),
        ({"shapley_loss_weight": float("nan")}, "shapley_loss_weight"),
        ({"coalition_batch_size": 0}, "coalition_batch_size"),
        ({"eval_num_shapley_coalitions": 5}, "eval_num_shapley_coalitions"),
        ({"frozen_pass_cache_gb": -1.0}, "frozen_pass_cache_gb"),
        ({"label_smoothing_factor": 0.1}, "label_smoothing_factor"),
    ],
)
def test_invalid_arguments_error(tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_args(tmp_path, **kwargs)


KEEP_CONFIG = " None (default) keeps the model config's value."


def test_training_arguments_are_generated_from_the_config_table():
    """One objective field per setting ShapleyConfig declares: same name, order, type (or None),
    default None, the config's help text; nothing else beyond TrainingArguments."""
    config_fields = {f.name: f for f in dataclasses.fields(ShapleyConfig)}
    declared = [n for n, f in config_fields.items() if "hf_shapley_objective" in f.metadata]
    assert OBJECTIVE_FIELDS == tuple(s.name for s in OBJECTIVE_SETTINGS) == tuple(declared)

    base = {f.name for f in dataclasses.fields(TrainingArguments)}
    fields = [f for f in dataclasses.fields(ShapleyTrainingArguments) if f.name not in base]
    assert [f.name for f in fields] == [
        *OBJECTIVE_FIELDS,
        "eval_num_shapley_coalitions",
        "eval_coalition_seed",
        "frozen_pass_cache_gb",
    ]
    # The annotations: HfArgumentParser rewrites Field.type in place (it strips the None).
    hints = typing.get_type_hints(ShapleyTrainingArguments)
    for f, setting in zip(fields, OBJECTIVE_SETTINGS, strict=False):
        assert hints[f.name] == (setting.type | None), f.name
        assert f.default is None, f.name
        assert f.metadata["help"] == setting.help + KEEP_CONFIG, f.name
        assert setting.help == config_fields[f.name].metadata["hf_shapley_objective"]["help"]
    assert ShapleyTrainingArguments("out").shapley_overrides() == {}


def test_argument_parser_sees_the_generated_fields(tmp_path):
    parser = HfArgumentParser(ShapleyTrainingArguments)
    actions = {a.dest: a for a in parser._actions}
    for setting in OBJECTIVE_SETTINGS:
        assert actions[setting.name].help.startswith(setting.help), setting.name
        assert actions[setting.name].default is None
    cli = {
        "num_shapley_coalitions": ("4", 4),
        "num_distill_coalitions": ("0", 0),
        "shapley_loss_weight": ("0.5", 0.5),
        "distill_loss_weight": ("2", 2.0),
        "vote_consistency_weight": ("0.5", 0.5),
        "loss_warmup_steps": ("10", 10),
        "shapley_stop_gradient": ("false", False),
        "shapley_loss_normalization": ("none", "none"),
        "center_logits": ("true", True),
        "explained_classes": ("label", "label"),
        "num_explained_classes": ("2", 2),
        "reuse_shapley_coalitions": ("true", True),
        "frozen_game_dtype": ("bfloat16", "bfloat16"),
        "coalition_batch_size": ("8", 8),
        "coalition_seed": ("7", 7),
    }
    assert set(cli) == set(OBJECTIVE_FIELDS)
    argv = ["--output_dir", str(tmp_path), "--report_to", "none"]
    for name, (text, _) in cli.items():
        argv += [f"--{name}", text]
    (args,) = parser.parse_args_into_dataclasses(argv)
    assert args.shapley_overrides() == {name: value for name, (_, value) in cli.items()}
    for name, (_, value) in cli.items():
        assert type(getattr(args, name)) is type(value), name


def _bad_values(setting):
    """Values that break a setting's rule (its type, its minimum, evenness, its choices)."""
    if setting.type is bool:
        return [1, "yes"]
    if setting.type is str:
        return ["nope", 3]
    bad = ["3", True]
    if setting.minimum is not None:
        bad.append(setting.minimum - 2)
    if setting.type is int:
        bad.append(2.0)
        if setting.even:
            bad.append(3)
    else:
        bad += [float("nan"), float("inf")]
    return bad


@pytest.mark.parametrize(
    ("name", "value"),
    [(s.name, v) for s in OBJECTIVE_SETTINGS for v in _bad_values(s)],
    ids=lambda v: repr(v),
)
def test_invalid_override_names_the_field_with_the_config_rule(tmp_path, name, value):
    """The arguments check each set field with the config's own rule, before any training: the
    same message as ShapleyConfig's, with the owner named."""
    with pytest.raises(ValueError) as config_error:
        ShapleyConfig(**{name: value})
    assert str(config_error.value).startswith(f"{name} must be ")
    with pytest.raises(ValueError) as args_error:
        make_args(tmp_path, **{name: value})
    assert str(args_error.value) == f"ShapleyTrainingArguments.{config_error.value}"


def test_valid_overrides_pass_the_config_rule(tmp_path):
    for setting in OBJECTIVE_SETTINGS:
        value = 1 if setting.name == "num_explained_classes" else setting.default
        assert getattr(make_args(tmp_path, **{setting.name: value}), setting.name) == value
    # ints are numbers for the float settings, as in the config
    assert make_args(tmp_path, shapley_loss_weight=2).shapley_loss_weight == 2


def test_invalid_combination_with_model_config_errors(tmp_path, make_model):
    model = make_model("vit", players_grid=GRID)
    args = make_args(tmp_path, explained_classes="label")  # needs num_explained_classes
    with pytest.raises(ValueError, match="num_explained_classes"):
        ShapleyTrainer(model, args, train_dataset=make_dataset(8))
    assert model.config.explained_classes == "all"  # left unchanged
    # The same setting is valid once the model (or the arguments) give the count.
    ShapleyTrainer(model, make_args(tmp_path, explained_classes="label", num_explained_classes=2))
    assert model.config.explained_classes == "label" and model.config.num_explained_classes == 2


def test_wrong_model_and_missing_example_index_error(tmp_path, make_model):
    from transformers import ViTConfig, ViTForImageClassification

    plain = ViTForImageClassification(
        ViTConfig(
            image_size=32,
            patch_size=8,
            hidden_size=32,
            num_hidden_layers=1,
            num_attention_heads=4,
            intermediate_size=64,
        )
    )
    with pytest.raises(TypeError, match="ShapleyConfig"):
        ShapleyTrainer(plain, make_args(tmp_path))

    ds = make_dataset(8).remove_columns("example_index")
    trainer = ShapleyTrainer(
        make_model("vit", players_grid=GRID),
        make_args(tmp_path, max_steps=1, per_device_train_batch_size=4),
        train_dataset=ds,
    )
    with pytest.raises(ValueError, match="example_index"):
        trainer.train()


# --------------------------------------------------------------------------------------
# Data helpers
# --------------------------------------------------------------------------------------


def test_example_index_survives_shuffle_and_collates():
    ds = make_dataset(12)
    shuffled = ds.shuffle(seed=3)
    assert sorted(ints(shuffled["example_index"])) == list(range(12))
    for row in shuffled.select(range(4)):
        original = ds[int(row["example_index"])]
        np.testing.assert_array_equal(row["pixel_values"], original["pixel_values"])

    with pytest.raises(ValueError, match="already has"):
        add_example_index(ds)
    renumbered = add_example_index(shuffled, overwrite=True)
    assert ints(renumbered["example_index"]) == list(range(12))

    batch = ShapleyImageCollator()([shuffled[i] for i in range(3)])
    assert set(batch) == {"pixel_values", "labels", "example_index"}
    assert (
        batch["pixel_values"].shape == (3, 3, 32, 32)
        and batch["pixel_values"].dtype == torch.float32
    )
    assert batch["labels"].dtype == torch.long
    assert batch["example_index"].tolist() == ints(shuffled["example_index"])[:3]

    # DatasetDict: every split numbered from 0; torch data sets of dicts are wrapped.
    both = add_example_index(
        datasets.DatasetDict(
            {
                "a": ds.remove_columns("example_index"),
                "b": ds.select(range(5)).remove_columns("example_index"),
            }
        )
    )
    assert ints(both["b"]["example_index"]) == list(range(5))
    wrapped = add_example_index([{"pixel_values": np.zeros((3, 32, 32)), "label": 1}] * 3)
    assert wrapped[2]["example_index"] == 2 and len(wrapped) == 3


def test_collator_with_image_processor():
    processor = ViTImageProcessor(size={"height": 32, "width": 32})
    ds = make_image_dataset(4)
    features = [ds[i] for i in range(4)]
    features[0]["image"] = features[0]["image"].convert("L")  # greyscale -> RGB
    batch = ShapleyImageCollator(image_processor=processor)(features)
    assert batch["pixel_values"].shape == (4, 3, 32, 32)
    assert batch["labels"].tolist() == ints(ds["label"])[:4]
    assert batch["example_index"].tolist() == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="image_processor"):
        ShapleyImageCollator()(features)


def test_collator_converts_images_like_the_package_loader():
    """16-bit images are scaled (PIL's convert clips them at 255) and transparency goes over
    white: the collator converts PIL images as hf_shapley.models.image_loading does."""
    processor = ViTImageProcessor(size={"height": 32, "width": 32})
    rng = np.random.default_rng(0)
    deep = Image.fromarray(np.linspace(0, 65535, 40 * 40).reshape(40, 40).astype(np.uint16))
    assert deep.mode == "I;16"
    rgba = rng.integers(0, 256, (40, 40, 4), dtype=np.uint8)
    rgba[:20, :, 3] = 0  # the top half transparent
    transparent = Image.fromarray(rgba)
    features = [
        {"image": deep, "label": 0, "example_index": 0},
        {"image": transparent, "label": 1, "example_index": 1},
    ]
    batch = ShapleyImageCollator(image_processor=processor)(features)
    expected = processor([load_rgb_image(deep), load_rgb_image(transparent)], return_tensors="pt")[
        "pixel_values"
    ]
    torch.testing.assert_close(batch["pixel_values"], expected, rtol=0, atol=0)
    clipped = processor([deep.convert("RGB")], return_tensors="pt")["pixel_values"]
    assert (batch["pixel_values"][0] - clipped[0]).abs().max() > 0.5
    # The transparent half is white (1.0 after ViT's normalization to [-1, 1]).
    assert torch.allclose(batch["pixel_values"][1, :, :15], torch.ones(3, 15, 32))


# --------------------------------------------------------------------------------------
# Logging and evaluation
# --------------------------------------------------------------------------------------


def test_logs_loss_components_and_eval_metrics(tmp_path, make_model):
    """Image data through the image processor (the default collator); logs and eval metrics."""
    model = make_model("vit", players_grid=GRID, num_distill_coalitions=2)
    processor = ViTImageProcessor(size={"height": 32, "width": 32})
    args = make_args(
        tmp_path,
        max_steps=4,
        per_device_train_batch_size=4,
        gradient_accumulation_steps=2,
        logging_strategy="steps",
        logging_steps=2,
        eval_strategy="steps",
        eval_steps=4,
        per_device_eval_batch_size=5,
        num_shapley_coalitions=4,
        shapley_loss_weight=0.5,
        distill_loss_weight=2.0,
        eval_num_shapley_coalitions=6,
    )
    trainer = ShapleyTrainer(
        model,
        args,
        train_dataset=make_image_dataset(16),
        eval_dataset=make_image_dataset(12, seed=1),
        processing_class=processor,
    )
    assert isinstance(trainer.data_collator, ShapleyImageCollator)
    trainer.train()

    train_logs = [log for log in trainer.state.log_history if "loss" in log]
    assert [log["step"] for log in train_logs] == [2, 4]
    for log in train_logs:
        for name in ("cls_loss", "distill_loss", "shapley_loss"):
            assert math.isfinite(log[name]) and log[name] >= 0
        assert log["shapley_loss"] > 0 and log["distill_loss"] > 0
        # Averaged over the same window as `loss`, and the loss is linear in its components.
        combined = log["cls_loss"] + 2.0 * log["distill_loss"] + 0.5 * log["shapley_loss"]
        assert log["loss"] == pytest.approx(combined, rel=1e-5)

    eval_logs = [log for log in trainer.state.log_history if "eval_loss" in log]
    assert len(eval_logs) == 1
    metrics = trainer.evaluate()
    assert 0.0 <= metrics["eval_accuracy"] <= 1.0
    assert math.isfinite(metrics["eval_shapley_regression_proxy"])
    assert metrics["eval_shapley_regression_proxy"] > 0
    assert metrics["eval_shapley_regression_proxy"] == pytest.approx(
        eval_logs[0]["eval_shapley_regression_proxy"], rel=1e-6
    )  # same weights, same fixed coalitions

    # Recompute both metrics by hand: eval mode, the documented eval seed and per-image normalization.
    model.eval()
    eval_ds = make_image_dataset(12, seed=1)
    pixel_values = processor([r["image"] for r in eval_ds], return_tensors="pt")["pixel_values"]
    labels = torch.tensor(ints(eval_ds["label"]))
    with torch.no_grad():
        out = model(pixel_values)
        masks = sample_shapley_kernel_coalitions(
            4, 6, seed=args.eval_coalition_seed, epoch=0, example_indices=torch.arange(12)
        )
        targets = model(pixel_values, coalition=masks).logits - out.base_values[:, None]
        proxy = np.mean(
            [
                shapley_regression_loss(
                    out.shapley_values[i : i + 1], masks[i : i + 1], targets[i : i + 1]
                ).item()
                for i in range(12)
            ]
        )
    assert metrics["eval_shapley_regression_proxy"] == pytest.approx(proxy, rel=1e-5)
    accuracy = (out.logits.argmax(-1) == labels).float().mean().item()
    assert metrics["eval_accuracy"] == pytest.approx(accuracy)


def test_evaluation_does_not_gather_shapley_values(tmp_path, make_model):
    model = make_model("vit", players_grid=GRID)
    assert {"shapley_values", "base_values"} <= set(model.config.keys_to_ignore_at_inference)
    seen = {}

    def compute_metrics(eval_pred):
        seen["predictions"] = eval_pred.predictions
        seen["labels"] = eval_pred.label_ids
        return {"mine": 1.0}

    eval_ds = make_dataset(10, seed=2)
    trainer = ShapleyTrainer(
        model,
        make_args(tmp_path, per_device_eval_batch_size=4),
        eval_dataset=eval_ds,
        compute_metrics=compute_metrics,
    )
    metrics = trainer.evaluate()
    # Only the logits: no (N, P, K) shapley_values, no (N, K) base_values, no scalar losses.
    assert isinstance(seen["predictions"], np.ndarray)
    assert seen["predictions"].shape == (10, NUM_LABELS)
    assert seen["labels"].shape == (10,)
    assert metrics["eval_mine"] == 1.0 and "eval_accuracy" in metrics

    prediction = trainer.predict(eval_ds)
    assert isinstance(prediction.predictions, np.ndarray)
    assert prediction.predictions.shape == (10, NUM_LABELS)
    with torch.no_grad():
        expected = model.eval()(
            torch.as_tensor(np.stack(list(eval_ds["pixel_values"])))
        ).logits.numpy()
    np.testing.assert_allclose(prediction.predictions, expected, rtol=1e-5, atol=1e-6)
    assert "test_shapley_regression_proxy" in prediction.metrics

    # The config alone keeps the stock Trainer's predictions to the (N, K) logits too.
    stock = Trainer(
        model,
        TrainingArguments(
            str(tmp_path / "stock"),
            report_to="none",
            use_cpu=True,
            remove_unused_columns=False,
            per_device_eval_batch_size=4,
        ),
        data_collator=ShapleyImageCollator(),
    )
    stock_prediction = stock.predict(eval_ds)
    assert isinstance(stock_prediction.predictions, np.ndarray)
    assert stock_prediction.predictions.shape == (10, NUM_LABELS)


def test_plain_training_arguments_work(tmp_path, make_model):
    model = make_model("vit", players_grid=GRID, num_shapley_coalitions=2)
    args = TrainingArguments(
        str(tmp_path / "plain"),
        max_steps=1,
        per_device_train_batch_size=4,
        report_to="none",
        remove_unused_columns=False,
        disable_tqdm=True,
        use_cpu=True,
        save_strategy="no",
    )
    trainer = ShapleyTrainer(
        model, args, train_dataset=make_dataset(8), eval_dataset=make_dataset(4)
    )
    trainer.train()
    metrics = trainer.evaluate()
    assert "eval_shapley_regression_proxy" in metrics
    assert model.config.num_shapley_coalitions == 2


def test_eval_metrics_follow_the_metric_prefix(tmp_path, make_model):
    """evaluate() under another prefix, on a dict of data sets, and predict(): the metrics
    are named after the call's prefix; a compute_metrics accuracy comes first."""
    model = make_model("vit", players_grid=GRID, num_shapley_coalitions=2)
    eval_ds = make_dataset(6, seed=3)
    trainer = ShapleyTrainer(model, make_args(tmp_path, per_device_eval_batch_size=4))
    plain = trainer.evaluate(eval_ds)
    held_out = trainer.evaluate(eval_ds, metric_key_prefix="heldout")
    assert held_out["heldout_accuracy"] == plain["eval_accuracy"]
    assert held_out["heldout_shapley_regression_proxy"] == pytest.approx(
        plain["eval_shapley_regression_proxy"], rel=1e-6
    )
    assert not any(key.startswith("eval_") for key in held_out)
    logged = [log for log in trainer.state.log_history if "heldout_loss" in log]
    assert (
        logged[0]["heldout_shapley_regression_proxy"]
        == (held_out["heldout_shapley_regression_proxy"])
    )

    both = trainer.evaluate({"a": eval_ds, "b": make_dataset(4, seed=4)})
    assert both["eval_a_accuracy"] == plain["eval_accuracy"]
    assert "eval_b_shapley_regression_proxy" in both and "eval_accuracy" not in both
    prediction = trainer.predict(eval_ds)
    assert prediction.metrics["test_accuracy"] == plain["eval_accuracy"]

    with_metric = ShapleyTrainer(
        model,
        make_args(tmp_path, per_device_eval_batch_size=4),
        compute_metrics=lambda _: {"accuracy": -1.0},
    )
    metrics = with_metric.evaluate(eval_ds)
    assert metrics["eval_accuracy"] == -1.0 and "eval_shapley_regression_proxy" in metrics


def test_trainer_uses_public_hooks(tmp_path, make_model):
    """No override of the Trainer's private training and evaluation loops; the remaining
    private overrides are the loading fixes (a transformers bug) and _save."""
    assert "_run_epoch" not in vars(ShapleyTrainer)
    assert "evaluation_loop" not in vars(ShapleyTrainer)

    def private_overrides(cls):
        return {
            name
            for name in vars(cls)
            if name.startswith("_") and not name.startswith("__") and hasattr(Trainer, name)
        }

    assert private_overrides(ShapleyTrainer) == {"_save"}
    assert issubclass(ShapleyTrainer, ConvertedCheckpointLoading)
    assert private_overrides(ConvertedCheckpointLoading) == {
        "_load_from_checkpoint",
        "_load_best_model",
    }
    trainer = ShapleyTrainer(make_model("vit", players_grid=GRID), make_args(tmp_path))
    callbacks = [
        c for c in trainer.callback_handler.callbacks if isinstance(c, ShapleyProgressCallback)
    ]
    assert callbacks == [trainer.progress]


def test_epoch_and_global_step_reach_forward(tmp_path, make_model):
    """Training forwards get epoch and global_step (the optimizer step, the same for the
    micro-batches of one accumulated step) as arguments; evaluation forwards get neither."""
    model = make_model("vit", players_grid=GRID, num_shapley_coalitions=2)
    calls = spy_forward(model)
    args = make_args(
        tmp_path,
        num_train_epochs=2,
        per_device_train_batch_size=2,
        gradient_accumulation_steps=2,
        per_device_eval_batch_size=4,
        eval_strategy="epoch",
    )
    trainer = ShapleyTrainer(
        model, args, train_dataset=make_dataset(12), eval_dataset=make_dataset(4, seed=1)
    )
    trainer.train()
    training = [c for c in calls if c["training"]]
    # 12 images in micro-batches of 2, 2 per optimizer step: 3 steps an epoch, 2 epochs.
    assert [c["global_step"] for c in training] == [s for s in range(6) for _ in range(2)]
    assert [c["epoch"] for c in training] == [0] * 6 + [1] * 6
    assert all(type(c["global_step"]) is int and type(c["epoch"]) is int for c in training)
    seen = [i for c in training for i in c["example_index"]]
    assert sorted(seen[:12]) == sorted(seen[12:]) == list(range(12))
    evaluation = [c for c in calls if not c["training"]]
    assert len(evaluation) == 2  # one eval batch after each epoch
    assert all(c["global_step"] == c["epoch"] == "absent" for c in evaluation)


def test_loss_warmup_follows_the_optimizer_step(tmp_path, make_model):
    """The warm-up of alpha and lambda is keyed by the optimizer step the trainer passes as
    global_step: with 2 accumulated micro-batches per step, both micro-batches of step t use
    the weight (t + 1) / warmup, so each step's logged loss is cls + w_t * (alpha * distill +
    lambda * shapley) of its logged components (a per-call counter would mix two weights)."""
    model = make_model("vit", players_grid=GRID, num_distill_coalitions=2)
    args = make_args(
        tmp_path,
        max_steps=3,
        per_device_train_batch_size=2,
        gradient_accumulation_steps=2,
        logging_strategy="steps",
        logging_steps=1,
        num_shapley_coalitions=4,
        shapley_loss_weight=0.5,
        distill_loss_weight=2.0,
        loss_warmup_steps=4,
    )
    trainer = ShapleyTrainer(model, args, train_dataset=make_dataset(12))
    trainer.train()
    logs = [log for log in trainer.state.log_history if "loss" in log]
    assert [log["step"] for log in logs] == [1, 2, 3]
    for step, log in enumerate(logs):
        weight = (step + 1) / 4
        assert log["distill_loss"] > 0 and log["shapley_loss"] > 0
        expected = log["cls_loss"] + weight * (
            2.0 * log["distill_loss"] + 0.5 * log["shapley_loss"]
        )
        assert log["loss"] == pytest.approx(expected, rel=1e-5), f"step {step}"


# --------------------------------------------------------------------------------------
# Equivalences: gradient accumulation, resume
# --------------------------------------------------------------------------------------


def _train_one_step(tmp_path, make_model, name, batch_size, accumulation):
    model = make_model("vit", players_grid=GRID, num_distill_coalitions=2, num_shapley_coalitions=4)
    before = weights(model)
    args = make_args(
        tmp_path,
        name,
        max_steps=1,
        per_device_train_batch_size=batch_size,
        gradient_accumulation_steps=accumulation,
        optim="sgd",
        learning_rate=0.05,
        lr_scheduler_type="constant",
        weight_decay=0.0,
        max_grad_norm=0.0,
        train_sampling_strategy="sequential",
    )
    ShapleyTrainer(model, args, train_dataset=make_dataset(16)).train()
    return before, weights(model)


def test_gradient_accumulation_matches_large_batch(tmp_path, make_model):
    before, big = _train_one_step(tmp_path, make_model, "b8", batch_size=8, accumulation=1)
    _, accumulated = _train_one_step(tmp_path, make_model, "b4x2", batch_size=4, accumulation=2)
    assert_weights_differ(before, big)
    assert_weights_close(big, accumulated, atol=1e-5)


class RecordingTrainer(ShapleyTrainer):
    """Records the coalition keys of every training micro-batch: (step, epoch, example indices)."""

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if model.training:
            self.calls.append(
                (self.state.global_step, self.current_epoch(), inputs["example_index"].tolist())
            )
        return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)


def test_resume_reproduces_straight_run(tmp_path, make_model):
    """8 steps straight vs 6 steps, then a new Trainer (fresh model) resuming from checkpoint-6.

    16 images in batches of 4: 4 steps an epoch, so the checkpoint is in the middle of epoch 1
    and the resumed steps must use epoch 1 (not 0, not 2), the shuffled example order of epoch
    1 and the objective warm-up at steps 6 and 7 (warm-up spans all 8 steps; the step reaches
    the model as the forward argument global_step).
    """

    def run(name, seed, resume=None):
        model = make_model(
            "vit", players_grid=GRID, seed=seed, num_shapley_coalitions=4, num_distill_coalitions=2
        )
        args = make_args(
            tmp_path,
            name,
            max_steps=8,
            per_device_train_batch_size=4,
            save_strategy="steps",
            save_steps=6,
            learning_rate=1e-3,
            loss_warmup_steps=8,
            seed=11,
        )
        forwards = spy_forward(model)
        trainer = RecordingTrainer(model, args, train_dataset=make_dataset(16))
        trainer.calls = []
        trainer.train(resume_from_checkpoint=resume)
        return model, trainer.calls, forwards

    straight, straight_calls, straight_forwards = run("straight", seed=0)
    checkpoint = tmp_path / "straight" / "checkpoint-6"
    assert checkpoint.is_dir()
    resumed, resumed_calls, resumed_forwards = run("resumed", seed=1, resume=str(checkpoint))

    assert [c[:2] for c in straight_calls] == [(s, s // 4) for s in range(8)]
    assert resumed_calls == straight_calls[6:]
    # The data really is shuffled: epoch 1's order differs from epoch 0's and from row order.
    order = [i for c in straight_calls for i in c[2]]
    assert order[:16] != list(range(16)) and order[16:] != order[:16]
    # What reached the model: the same (global_step, epoch, examples) keys, steps 6 and 7 of
    # epoch 1 in the resumed run.
    keys = [(f["global_step"], f["epoch"], f["example_index"]) for f in straight_forwards]
    assert keys == [(s, s // 4, c[2]) for s, c in enumerate(straight_calls)]
    resumed_keys = [(f["global_step"], f["epoch"], f["example_index"]) for f in resumed_forwards]
    assert resumed_keys == keys[6:]
    assert_weights_close(weights(straight), weights(resumed), atol=1e-6)


def test_load_best_model_at_end_restores_the_best_checkpoint(tmp_path, make_model):
    """Checkpoints hold transformers' original key names (ViT: encoder.layer.N...); the stock
    Trainer reloads them with a raw non-strict load_state_dict that silently skips the
    backbone. ShapleyTrainer loads through from_pretrained: the best (here, first) checkpoint
    really comes back."""
    model = make_model("vit", players_grid=GRID, num_shapley_coalitions=2)
    holder = {}
    args = make_args(
        tmp_path,
        max_steps=3,
        per_device_train_batch_size=4,
        learning_rate=1e-2,
        eval_strategy="steps",
        eval_steps=1,
        save_strategy="steps",
        save_steps=1,
        load_best_model_at_end=True,
        metric_for_best_model="step_seen",
        greater_is_better=False,
    )
    trainer = ShapleyTrainer(
        model,
        args,
        train_dataset=make_dataset(12),
        eval_dataset=make_dataset(4, seed=5),
        compute_metrics=lambda _: {"step_seen": holder["trainer"].state.global_step},
    )
    holder["trainer"] = trainer
    trainer.train()
    best = tmp_path / "out" / "checkpoint-1"
    assert trainer.state.best_model_checkpoint == str(best)
    expected = weights(hf_shapley.ShapleyForImageClassification.from_pretrained(best))
    last = weights(
        hf_shapley.ShapleyForImageClassification.from_pretrained(tmp_path / "out" / "checkpoint-3")
    )
    assert_weights_differ(expected, last)
    assert_weights_close(weights(model), expected, atol=0.0)
