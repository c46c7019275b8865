"""The user's road: their own fine-tuned classifier (saved by plain transformers code) and their
own image folder, through ``examples/train.py`` as the README says.

The classifier is kept as it is unless asked (its logits bit-identical), its labels are matched
to the folder's classes by name (an image folder numbers its classes alphabetically), and bad
input fails before any training with a message that names the problem.
"""

from __future__ import annotations

import json
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
from PIL import Image
from transformers import (
    AutoModelForImageClassification,
    ViTForImageClassification,
    ViTImageProcessor,
    ViTModel,
)

import hf_shapley  # noqa: F401  (registers the auto classes)
from conftest import load_example_script, tiny_backbone_config
from hf_shapley import ShapleyForImageClassification
from hf_shapley.data import align_labels
from hf_shapley.models.configuration_shapley import FROZEN_EXPLAINER_DEFAULTS
from hf_shapley.training import recipe_settings

# The checkpoint's own order, which is not the folder's alphabetical one.
LABELS = ["red circle", "green square", "blue triangle", "yellow cross"]
# Each class has its own mean colour, so that a classifier can tell them apart.
CLASS_COLOURS = {name: (60 * i + 20, 200 - 40 * i, 30 * i) for i, name in enumerate(LABELS)}


@pytest.fixture(scope="module")
def train_script():
    return load_example_script("train")


def save_classifier(path: Path, labels=LABELS, seed: int = 0) -> Path:
    """A ViTForImageClassification saved by plain transformers code, with its processor."""
    torch.manual_seed(seed)
    id2label = dict(enumerate(labels))
    config = tiny_backbone_config(
        "vit", id2label=id2label, label2id={v: k for k, v in id2label.items()}
    )
    ViTForImageClassification(config).save_pretrained(path)
    processor().save_pretrained(path)
    return path


def processor() -> ViTImageProcessor:
    return ViTImageProcessor(
        size={"height": 32, "width": 32}, image_mean=[0.5] * 3, image_std=[0.5] * 3
    )


def image_folder(root: Path, classes=LABELS, per_class: int = 6, seed: int = 0) -> Path:
    """One sub-folder per class; images of mixed sizes and modes, as users' folders have."""
    rng = np.random.default_rng(seed)
    modes = ["RGB", "L", "RGBA", "P"]
    for c, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        colour = np.array(CLASS_COLOURS.get(name, (128, 128, 128)))
        for i in range(per_class):
            size = (32 + 8 * (i % 3), 32 + 4 * (i % 2))
            pixels = np.clip(colour + rng.normal(0, 30, (size[1], size[0], 3)), 0, 255)
            image = Image.fromarray(pixels.astype(np.uint8)).convert(modes[(i + c) % 4])
            image.save(root / name / f"{i}.png")
    return root


def run(train_script, backbone: Path, folder: Path, out: Path, *extra: str) -> dict:
    return train_script.main(
        [
            "--backbone", str(backbone), "--train_dir", str(folder), "--players_grid", "2", "2",
            "--validation_fraction", "0.25", "--max_steps", "4", "--eval_steps", "2",
            "--save_steps", "2", "--per_device_train_batch_size", "4",
            "--per_device_eval_batch_size", "8", "--num_truth_images", "4",
            "--num_exact_images", "2", "--num_explained_images", "0",
            "--output_dir", str(out), *extra,
        ]
    )  # fmt: skip


def checkpoint_predictions(backbone: Path, images: list[Image.Image]) -> torch.Tensor:
    model = ViTForImageClassification.from_pretrained(backbone).eval()
    x = processor()([im.convert("RGB") for im in images], return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        return model(x).logits


def test_checkpoint_is_kept_and_its_labels_matched_by_name(train_script, tmp_path, single_thread):
    backbone = save_classifier(tmp_path / "clf")
    folder = image_folder(tmp_path / "train")
    test = image_folder(tmp_path / "test", per_class=3, seed=1)
    out = tmp_path / "out"
    report = run(train_script, backbone, folder, out, "--validation_dir", str(test))

    # The labels stay the checkpoint's, in its order.
    config = json.loads((out / "config.json").read_text())
    assert [config["id2label"][str(i)] for i in range(4)] == LABELS
    # The classifier is frozen, with the frozen explainer recipe.
    assert config["train_backbone"] is False
    recipe = {**FROZEN_EXPLAINER_DEFAULTS, "num_shapley_coalitions": 256}  # a small folder
    assert {k: config[k] for k in FROZEN_EXPLAINER_DEFAULTS} == recipe
    # Its logits are the checkpoint's, bit for bit, on the user's own images (mixed modes and
    # sizes), loaded back from disk.
    paths = sorted(test.glob("*/*.png"))
    images = [Image.open(p) for p in paths]
    model = AutoModelForImageClassification.from_pretrained(out).eval()
    x = processor()([im.convert("RGB") for im in images], return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        ours = model(x).logits
    reference = checkpoint_predictions(backbone, images)
    assert torch.equal(ours, reference)
    assert report["classifier"]["trained"] is False
    assert report["classifier"]["logits_identical"] is True
    assert report["classifier"]["predictions_changed"] == 0.0

    # The accuracy in metrics.json is the checkpoint's accuracy on the folder with its labels
    # matched by name (computed here independently: class folder name -> checkpoint id). With
    # the alphabetical numbering it would differ.
    truth = torch.tensor([LABELS.index(p.parent.name) for p in paths])
    accuracy = float((reference.argmax(-1) == truth).float().mean())
    assert report["accuracy"] == pytest.approx(accuracy)
    assert report["classifier"]["accuracy_before"] == pytest.approx(accuracy)
    alphabetical = torch.tensor([sorted(LABELS).index(p.parent.name) for p in paths])
    assert float((reference.argmax(-1) == alphabetical).float().mean()) != pytest.approx(accuracy)
    # The model card describes this model: a frozen classifier, no soft voting.
    card = (out / "README.md").read_text()
    assert "classifier it explains was kept\nfrozen" in card and "soft voting" not in card
    assert "the classifier does not\ntrain" in card
    # And every road ends in a faithfulness report against a stated truth.
    assert report["faithfulness_truth"].startswith("KernelSHAP")
    assert report["faithfulness"]["truth_estimated_error"] >= 0
    converged = report["faithfulness_truth_converged"]
    assert (
        converged == ("pearson_r" in report["faithfulness"]) != ("faithfulness_withheld" in report)
    )
    assert 0 <= report["faithfulness"]["exact_pooled_relative_error"] < 10


def test_fine_tuning_is_an_explicit_choice_and_is_reported(train_script, tmp_path, single_thread):
    backbone = save_classifier(tmp_path / "clf")
    folder = image_folder(tmp_path / "train")
    test = image_folder(tmp_path / "test", per_class=3, seed=1)
    report = run(
        train_script, backbone, folder, tmp_path / "out", "--validation_dir", str(test),
        "--recipe", "joint", "--loss_warmup_steps", "2", "--learning_rate", "1e-2",
        "--load_best_model_at_end", "False",
    )  # fmt: skip
    classifier = report["classifier"]
    assert classifier["trained"] is True and classifier["logits_identical"] is False
    # The joint recipe is the seed paper's: the Shapley regression's gradient reaches the backbone.
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["train_backbone"] is True and config["detach_head_features"] is False
    paths = sorted(test.glob("*/*.png"))
    reference = checkpoint_predictions(backbone, [Image.open(p) for p in paths])
    truth = torch.tensor([LABELS.index(p.parent.name) for p in paths])
    assert classifier["accuracy_before"] == pytest.approx(
        float((reference.argmax(-1) == truth).float().mean())
    )
    assert classifier["accuracy_after"] == pytest.approx(report["accuracy"])
    assert 0.0 <= classifier["predictions_changed"] <= 1.0


@pytest.mark.parametrize(
    ("classes", "message"),
    [
        (["red circle", "green square", "blue triangle", "purple cross"], r"\['yellow cross'\]"),
        (["red circle"], r"has 1 class folder"),
    ],
)
def test_folder_whose_classes_differ_fails_before_training(
    train_script, tmp_path, classes, message
):
    backbone = save_classifier(tmp_path / "clf")
    folder = image_folder(tmp_path / "train", classes=classes)
    with pytest.raises((SystemExit, ValueError), match=message):
        run(train_script, backbone, folder, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_empty_class_folder_fails_before_training(train_script, tmp_path):
    backbone = save_classifier(tmp_path / "clf")
    folder = image_folder(tmp_path / "train")
    (folder / "purple cross").mkdir()
    with pytest.raises((SystemExit, ValueError), match=r"\['purple cross'\] .* hold no image"):
        run(train_script, backbone, folder, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_bare_backbone_cannot_be_kept(train_script, tmp_path):
    """Without a classifier trained on it first (--classifier_max_steps 0) a bare backbone has
    no classifier to keep."""
    backbone = tmp_path / "bare"
    torch.manual_seed(0)
    ViTModel(tiny_backbone_config("vit"), add_pooling_layer=False).save_pretrained(backbone)
    processor().save_pretrained(backbone)
    folder = image_folder(tmp_path / "train")
    with pytest.raises(SystemExit, match="--recipe frozen keeps a classifier .* soft voting"):
        run(
            train_script, backbone, folder, tmp_path / "out", "--recipe", "frozen",
            "--classifier_max_steps", "0",
        )  # fmt: skip
    assert not (tmp_path / "out").exists()


def test_an_unknown_recipe_is_named(train_script, tmp_path, capsys):
    with pytest.raises(SystemExit):
        train_script.main(["--recipe", "polish", "--output_dir", str(tmp_path / "out")])
    assert "invalid choice: 'polish' (choose from 'frozen', 'joint')" in capsys.readouterr().err
    with pytest.raises(ValueError, match="No recipe 'polish': choose one of 'frozen', 'joint'"):
        recipe_settings("polish")
    assert not (tmp_path / "out").exists()


def test_players_grid_that_does_not_divide_fails_before_training(train_script, tmp_path):
    backbone = save_classifier(tmp_path / "clf")
    folder = image_folder(tmp_path / "train")
    with pytest.raises(SystemExit, match=r"Cannot wrap .*players_grid"):
        train_script.main(
            ["--backbone", str(backbone), "--train_dir", str(folder), "--players_grid", "3", "3",
             "--output_dir", str(tmp_path / "out")]
        )  # fmt: skip
    assert not (tmp_path / "out").exists()


# ----------------------------------------------------------------------------- Python API
def test_from_backbone_keeps_a_classifier_frozen_by_default(tmp_path):
    backbone = save_classifier(tmp_path / "clf")
    model = ShapleyForImageClassification.from_backbone(str(backbone), players_grid=(2, 2))
    assert model.config.train_backbone is False
    assert {k: getattr(model.config, k) for k in FROZEN_EXPLAINER_DEFAULTS} == (
        FROZEN_EXPLAINER_DEFAULTS
    )
    assert not any(p.requires_grad for p in model.backbone.parameters())
    assert not any(p.requires_grad for p in model.classifier.parameters())
    # Asking to fine-tune it gives the joint settings, not the frozen game's.
    tuned = ShapleyForImageClassification.from_backbone(
        str(backbone), players_grid=(2, 2), train_backbone=True
    )
    assert tuned.config.train_backbone is True
    assert tuned.config.reuse_shapley_coalitions is False


def test_from_backbone_refuses_to_permute_a_classifiers_labels(tmp_path):
    backbone = save_classifier(tmp_path / "clf")
    alphabetical = dict(enumerate(sorted(LABELS)))
    with pytest.raises(ValueError, match="same labels in another order.*align_labels"):
        ShapleyForImageClassification.from_backbone(
            str(backbone), players_grid=(2, 2), id2label=alphabetical
        )
    # Its own mapping, given explicitly, is fine.
    model = ShapleyForImageClassification.from_backbone(
        str(backbone), players_grid=(2, 2), id2label=dict(enumerate(LABELS))
    )
    assert model.config.id2label == dict(enumerate(LABELS))


def test_align_labels_renumbers_the_data_onto_the_classifier():
    names = sorted(LABELS)  # an image folder's alphabetical numbering
    rows = [0, 1, 2, 3, 2]
    data = datasets.Dataset.from_dict(
        {"label": rows}, features=datasets.Features({"label": datasets.ClassLabel(names=names)})
    )
    aligned = align_labels(data, dict(enumerate(LABELS)))
    assert aligned.features["label"].names == LABELS
    assert aligned["label"] == [LABELS.index(names[r]) for r in rows]
    # A folder with some of the classes (a small test folder) is accepted where asked.
    some = names[1:]
    part = datasets.Dataset.from_dict(
        {"label": [0, 2, 1]}, features=datasets.Features({"label": datasets.ClassLabel(names=some)})
    )
    with pytest.raises(ValueError, match=r"lacks the classifier's labels \['blue triangle'\]"):
        align_labels(part, dict(enumerate(LABELS)))
    assert align_labels(part, dict(enumerate(LABELS)), allow_missing=True)["label"] == [
        LABELS.index(some[r]) for r in [0, 2, 1]
    ]


def test_align_labels_with_unnamed_classifier_labels():
    ints = datasets.Dataset.from_dict({"label": [0, 2, 1]})
    generic = {i: f"LABEL_{i}" for i in range(3)}
    assert align_labels(ints, generic)["label"] == [0, 2, 1]
    named = datasets.Dataset.from_dict(
        {"label": [0, 1]},
        features=datasets.Features({"label": datasets.ClassLabel(names=["a", "b"])}),
    )
    with pytest.raises(ValueError, match="never named .* config.json"):
        align_labels(named, {0: "LABEL_0", 1: "LABEL_1"})


@pytest.mark.parametrize(
    ("option", "message"),
    [
        (["--truth_tolerance", "0"], "--truth_tolerance must be a positive number"),
        (["--truth_evaluations", "4096", "--truth_max_evaluations", "1024"], "is below"),
        (["--truth_evaluations", "6"], "too few for P = 4 players"),
        (["--recipe", "joint", "--explainer_batch_size", "8"], r"--explainer_batch_size set the"),
        # run() gives 4 steps: the loss's default warm-up of 60 would never end.
        (["--recipe", "joint"], r"ramps up over --loss_warmup_steps 60 steps, but the run has 4"),
    ],
)
def test_settings_that_cannot_work_fail_before_training(train_script, tmp_path, option, message):
    backbone = save_classifier(tmp_path / "clf")
    folder = image_folder(tmp_path / "train")
    with pytest.raises(SystemExit, match=message):
        run(train_script, backbone, folder, tmp_path / "out", *option)
    assert not (tmp_path / "out").exists()


def test_kept_coalitions_per_image_follow_the_data_size(train_script, tmp_path, single_thread):
    """512,000 kept values over the training images, even, between 32 and 256; the main job's
    8,000 images keep 64 each; --num_shapley_coalitions overrides the rule."""
    per_image = train_script.kept_coalitions_per_image
    assert [per_image(n) for n in (100_000, 8000, 2600, 1000, 64)] == [32, 64, 198, 256, 256]
    assert all(per_image(n) % 2 == 0 for n in range(1, 20_000, 97))
    backbone = save_classifier(tmp_path / "clf")
    folder = image_folder(tmp_path / "train")
    run(train_script, backbone, folder, tmp_path / "out", "--num_shapley_coalitions", "16")
    assert (
        json.loads((tmp_path / "out" / "config.json").read_text())["num_shapley_coalitions"] == 16
    )


def test_a_resnet_checkpoint_is_wrapped_at_its_processors_size(
    train_script, tmp_path, single_thread
):
    """A ResNet config carries no image size: the checkpoint's own processor says it (here
    48 px, whose 12 x 12 feature grid the players divide, where 224 px would give 56 x 56)."""
    from transformers import ConvNextImageProcessor, ResNetForImageClassification

    torch.manual_seed(0)
    id2label = dict(enumerate(LABELS))
    config = tiny_backbone_config(
        "resnet", id2label=id2label, label2id={v: k for k, v in id2label.items()}
    )
    backbone = tmp_path / "resnet"
    ResNetForImageClassification(config).eval().save_pretrained(backbone)
    # The processor of Hub ResNets: shortest edge to 48 / crop_pct, then a 48 px centre crop.
    resnet_processor = ConvNextImageProcessor(size={"shortest_edge": 48}, crop_pct=0.875)
    resnet_processor.save_pretrained(backbone)
    folder = image_folder(tmp_path / "train")
    out = tmp_path / "out"
    report = run(train_script, backbone, folder, out, "--players_grid", "3", "3")

    paths = sorted(folder.glob("*/*.png"))
    x = resnet_processor([Image.open(p).convert("RGB") for p in paths], return_tensors="pt")
    x = x["pixel_values"]
    assert json.loads((out / "config.json").read_text())["image_size"] == list(x.shape[-2:])
    model = AutoModelForImageClassification.from_pretrained(out).eval()
    reference = ResNetForImageClassification.from_pretrained(backbone).eval()
    with torch.no_grad():
        assert torch.equal(model(x).logits, reference(x).logits)
    assert report["classifier"]["logits_identical"] is True
    # A size that does not fit the players is still a clear error before training.
    with pytest.raises(SystemExit, match=r"players_grid=\(5, 5\) does not divide"):
        run(train_script, backbone, folder, tmp_path / "out5", "--players_grid", "5", "5")
