"""benchmarks/joint_recipe.py at a tiny scale (P = 4): the joint arm's classifier is exported as
the plain classifier it was wrapped from, the polish explains it unchanged, each game's exact
values are the Shapley values of its own table, arm b starts from fresh weights, the accuracy
curves end at the measured accuracy, a finished run is not redone; and the digits data keeps the
user's label order."""

from __future__ import annotations

import json
import math
import statistics

import pytest
import torch
from transformers import ViTForImageClassification

from conftest import load_benchmark_script
from hf_shapley import ShapleyForImageClassification
from hf_shapley.evaluation import (
    centered_class_values,
    exact_model_shapley_values,
    pooled_relative_error,
)

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("single_thread")]


def test_joint_against_frozen(tmp_path):
    bench = load_benchmark_script("joint_recipe")
    work, out = tmp_path / "work", tmp_path / "joint_recipe"
    train_args = (
        "--num_train 96 --num_test 16 --num_validation 32 --classifier_max_steps 3 "
        "--explainer_max_steps 2 --num_truth_images 2 --num_exact_images 0 "
        "--per_device_train_batch_size 16 --eval_steps 1 --classifier_eval_steps 1 "
        "--num_explained_images 1"
    )
    argv = [
        "--seeds", "0", "1", "--steps", "2", "--batch-size", "16", "--players-grid", "2", "2",
        "--num-train", "96", "--num-test", "64", "--truth-images", "4", "--exact-images", "2",
        "--main-job", str(tmp_path / "main-seed{seed}"), "--train-args", train_args,
        "--work", str(work), "--output", str(out),
        "--scratch", "--scratch-steps", "3", "--curve-every", "1",
    ]  # fmt: skip
    bench.main(argv)
    rows = json.loads(out.with_suffix(".json").read_text())
    assert [r["seed"] for r in rows] == [0, 1]

    seed0 = work / "seed0"
    joint = ShapleyForImageClassification.from_pretrained(seed0 / "joint-2steps").eval()
    exported = ViTForImageClassification.from_pretrained(seed0 / "joint-2steps" / "classifier")
    polished = ShapleyForImageClassification.from_pretrained(seed0 / "joint-2steps-polished").eval()
    x = bench.tensors(8, "test")[0]
    with torch.no_grad():
        reference = exported.eval()(x).logits
        torch.testing.assert_close(joint(x).logits, reference)
        # The polish keeps the joint classifier as it is: its predictions are bit-identical.
        assert torch.equal(polished(x).logits, reference)
    metrics = json.loads((tmp_path / "main-seed0" / "metrics.json").read_text())
    start = ViTForImageClassification.from_pretrained(
        tmp_path / "main-seed0" / metrics["pretrained_classifier"]
    )
    assert not torch.equal(start.classifier.weight, exported.classifier.weight)  # it trained

    # The report's exact values are the joint game's own Shapley values.
    xt = bench.tensors(64 + 4, "test")[0][64:66]
    tables = bench.game_tables(joint, xt, work)
    torch.testing.assert_close(tables["values"], exact_model_shapley_values(joint, xt))
    assert ((tables["interaction_share"] >= 0) & (tables["interaction_share"] <= 1.5)).all()

    table = out.with_suffix(".md").read_text()
    label = "joint, +2 steps"
    accuracy = " / ".join(f"{r['classifiers'][label]['accuracy']:.2%}" for r in rows)
    assert f"| {label} | {accuracy} |" in table
    # The polished head's agreement in the report is its own against those exact values.
    with torch.no_grad():
        out_polished = polished(xt)
    classes = out_polished.logits.argmax(-1)
    error = pooled_relative_error(
        centered_class_values(out_polished.shapley_values, classes),
        centered_class_values(tables["values"], classes),
    )
    reported = rows[0]["heads"]["d: joint + frozen polish"]["exact"]["pooled_relative_error"]
    assert reported == pytest.approx(error, rel=1e-6)
    # Ranking shares on the exact images: the exact values' own order goes all the way (1).
    shares = rows[0]["heads"]["d: joint + frozen polish"]["ranking_shares"]
    assert {k: len(v) for k, v in shares.items()} == {"insertion": 2, "deletion": 2}
    maps = tables["values"][torch.arange(2), :, classes]
    own = bench.ranking_shares(polished, xt, maps, maps, classes)
    assert all(v == pytest.approx(1.0) or v != v for v in own["insertion"] + own["deletion"])
    mean_share = statistics.fmean(
        statistics.fmean(r["classifiers"][label]["interaction_share_per_image"]) for r in rows
    )
    assert f"| {mean_share:.3f} [" in table

    # Arm b: fresh weights (not the plain classifier's), trained for --scratch-steps steps.
    scratch = ViTForImageClassification.from_pretrained(
        seed0 / "joint-scratch-3steps" / "classifier"
    )
    fresh = ViTForImageClassification.from_pretrained(seed0 / "scratch-init")
    assert not torch.equal(fresh.classifier.weight, start.classifier.weight)
    assert not torch.equal(fresh.classifier.weight, scratch.classifier.weight)
    assert rows[0]["training"]["joint from scratch"]["steps"] == 3
    assert "| joint from scratch, 3 steps |" in table
    # Each curve has a point per step, and its last is the accuracy measured on the saved model.
    for arm, label in (("plain", "plain, +2 steps"), ("joint", "joint, +2 steps")):
        curve = rows[0]["training"][arm]["curve"]
        assert [p["step"] for p in curve] == [0, 1, 2]
        assert curve[-1]["accuracy"] == pytest.approx(rows[0]["classifiers"][label]["accuracy"])
    assert curve[0]["accuracy"] == pytest.approx(
        rows[0]["classifiers"]["plain classifier (start)"]["accuracy"]
    )

    # The curves' figure, linked from the report; --report-only rewrites both from the JSON.
    assert (tmp_path / "joint_recipe_curves.png").stat().st_size > 0
    assert "(joint_recipe_curves.png)" in table
    (tmp_path / "joint_recipe_curves.png").unlink()
    bench.main([*argv, "--report-only"])
    assert out.with_suffix(".md").read_text() == table
    assert (tmp_path / "joint_recipe_curves.png").is_file()

    finished = (seed0 / "joint-2steps-polished" / "metrics.json").stat().st_mtime_ns
    bench.main(argv)
    assert (seed0 / "joint-2steps-polished" / "metrics.json").stat().st_mtime_ns == finished
    with pytest.raises(SystemExit):
        bench.main([*argv, "--exact-images", "8"])  # more exact images than truth images


def test_digits_data_keeps_the_users_label_order(tmp_path, monkeypatch):
    """The digits road: the user's checkpoint (zero..nine) is the plain classifier, every test
    image is measured, and each tensor's label is its folder's name in the checkpoint's order
    (not the folders' alphabetical order)."""
    from PIL import Image
    from transformers import AutoConfig, AutoImageProcessor

    bench = load_benchmark_script("joint_recipe")
    monkeypatch.setattr(bench, "DIGITS_EPOCHS", 1)
    args = bench.argparse.Namespace(
        work=tmp_path, truth_images=5, players_grid=[4, 4], train_args="--max_steps 2"
    )
    data = bench.digits_data(0, args)
    test_paths = sorted((tmp_path / "data" / "test").glob("*/*.png"))
    assert len(data.test[0]) == len(data.test[1]) == len(test_paths)
    assert data.classifier_steps == math.ceil(len(data.train[0]) / 64)
    label2id = AutoConfig.from_pretrained(data.classifier).label2id
    assert label2id["zero"] == 0 and label2id["eight"] == 8
    # Tensors in the images' order (file number, then folder), each labelled by its folder.
    ordered = sorted(test_paths, key=lambda p: (int(p.stem), p.parent.name))
    assert data.test[1].tolist() == [label2id[p.parent.name] for p in ordered]
    first = ordered[0]
    processor = AutoImageProcessor.from_pretrained(data.classifier)
    pixels = processor(Image.open(first).convert("RGB"), return_tensors="pt")["pixel_values"]
    torch.testing.assert_close(data.test[0][0], pixels[0])
    assert int(data.test[1][0]) == label2id[first.parent.name]
    assert torch.equal(data.truth, data.test[0][:5])
    assert data.head_args[:4] == [
        "--train_dir",
        str(tmp_path / "data" / "train"),
        "--validation_dir",
        str(tmp_path / "data" / "test"),
    ]
