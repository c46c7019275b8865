"""examples/explain.py: a folder in, pictures and one JSON file of attributions out."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import ViTImageProcessorPil

from conftest import load_example_script

LABELS = {0: "circle", 1: "square", 2: "triangle"}

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def explain_script():
    return load_example_script("explain")


@pytest.fixture(scope="module")
def model_and_dir(make_model, tmp_path_factory):
    model = make_model("vit", players_grid=(2, 2))
    model.config.id2label = dict(LABELS)
    model.config.label2id = {v: k for k, v in LABELS.items()}
    model.image_processor = ViTImageProcessorPil(size={"height": 32, "width": 32})
    path = tmp_path_factory.mktemp("explain") / "model"
    model.save_pretrained(path)
    return model, path


def test_folder_is_explained_and_bad_files_are_skipped(explain_script, model_and_dir, tmp_path):
    model, model_dir = model_and_dir
    images_dir = tmp_path / "images"
    (images_dir / "sub").mkdir(parents=True)
    rng = np.random.default_rng(0)
    sizes = {"a.png": (40, 30), "sub/b.jpg": (25, 50), "c.png": (64, 64)}
    for name, (w, h) in sizes.items():
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(images_dir / name)
    (images_dir / "broken.png").write_text("this is not a PNG")
    (images_dir / "readme.txt").write_text("ignored: not an image suffix")

    out_dir = tmp_path / "out"
    summary = explain_script.main(
        [
            "--model",
            str(model_dir),
            "--images",
            str(images_dir),
            "--output_dir",
            str(out_dir),
            "--top_k",
            "2",
            "--batch_size",
            "2",
        ]
    )
    written = json.loads((out_dir / "attributions.json").read_text())
    assert written == json.loads(json.dumps(summary))
    assert [s["file"] for s in written["skipped"]] == [str(images_dir / "broken.png")]
    assert "not an image or is corrupt" in written["skipped"][0]["reason"]
    assert sorted(r["file"] for r in written["images"]) == sorted(sizes)

    for record in written["images"]:
        image = Image.open(images_dir / record["file"]).convert("RGB")
        assert tuple(record["size"]) == image.size
        pixel_values = model.image_processor(images=image, return_tensors="pt")["pixel_values"]
        with torch.no_grad():
            out = model(pixel_values)
        top = torch.argsort(out.logits[0], descending=True)[:2].tolist()
        assert [e["label_id"] for e in record["labels"]] == top
        phi = out.shapley_values[0]
        centered = phi - phi.mean(-1, keepdim=True)  # the pipeline's default explained quantity
        for entry in record["labels"]:
            k = entry["label_id"]
            assert entry["explained"] == "centered_logit"
            np.testing.assert_allclose(
                np.asarray(entry["attributions"]).reshape(-1), centered[:, k].numpy(), atol=1e-5
            )
        picture = Image.open((out_dir / record["file"]).with_suffix(".png"))
        w, h = image.size
        assert picture.size == (w * 3, h + 16)  # the input and two heatmaps, titles above


def test_missing_folder_is_a_clear_error(explain_script, model_and_dir, tmp_path):
    _, model_dir = model_and_dir
    with pytest.raises(FileNotFoundError, match="neither a folder nor a file"):
        explain_script.main(["--model", str(model_dir), "--images", str(tmp_path / "nope")])
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="No image files"):
        explain_script.main(["--model", str(model_dir), "--images", str(tmp_path / "empty")])
