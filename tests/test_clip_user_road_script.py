"""benchmarks/clip_user_road.py at a tiny scale: the user's CLIP is a plain CLIPModel checkpoint,
the README's command explains it on caption folders, the report carries every group of texts
against the exact truth, and a finished run is not redone."""

from __future__ import annotations

import json

import pytest
from transformers import CLIPModel

from conftest import load_benchmark_script

pytestmark = pytest.mark.usefixtures("single_thread")


def test_the_users_clip_road(tmp_path):
    bench = load_benchmark_script("clip_user_road")
    work, out = tmp_path / "work", tmp_path / "out"
    argv = [
        "--seeds", "0", "--players_grid", "4", "4", "--clip_epochs", "1",
        "--num_train", "64", "--num_test", "16", "--num_truth_images", "4",
        "--explainer_args",
        "--explainer_epochs 1 --head_hidden_size 32 --head_num_layers 1 --num_retrieval_images 4",
        "--work", str(work), "--out", str(out),
    ]  # fmt: skip
    bench.main(argv)
    checkpoint = work / "p16-seed0" / "user-clip"
    assert json.loads((checkpoint / "config.json").read_text())["model_type"] == "clip"
    CLIPModel.from_pretrained(checkpoint)  # a plain CLIP checkpoint, as a Hub download is
    test = work / "p16-seed0" / "captions" / "test"
    assert len((test / "metadata.jsonl").read_text().splitlines()) == 16
    assert len([p for p in test.iterdir() if p.is_dir()]) >= 2  # class folders: label prompts
    runs = json.loads((out / "clip_user_road_p16.json").read_text())
    metrics = runs["0"]
    assert metrics["scores_identical_to_clip"] is True and metrics["clip_trained"] is False
    report = metrics["faithfulness"]
    assert report["truth"].startswith("exact") and report["num_images"] == 4
    table = (out / "clip_user_road_p16.md").read_text()
    for name, (prefix, key) in bench.PARTS.items():
        part = report[key] if key else report
        # Each group's row shows the run's own figure.
        assert f"| {name} | {part[f'{prefix}pooled_relative_error']:.3f} |" in table
    # Deletion R@1 at k = P / 4 by phi, at random and in the exact order (the gallery's pairs
    # are the truth's, so their exact values are known).
    recall = metrics["deletion_recall_at_1"]
    quarter = recall["ks"].index(4)
    orders = " / ".join(f"{recall[name][quarter]:.3f}" for name in ("phi", "random", "truth"))
    assert f"| {orders} |" in table
    finished = (work / "p16-seed0" / "explained" / "metrics.json").stat().st_mtime_ns
    bench.main(argv)
    assert (work / "p16-seed0" / "explained" / "metrics.json").stat().st_mtime_ns == finished
    with pytest.raises(SystemExit):
        bench.main([*argv[:2], "--players_grid", "5", "5"])
