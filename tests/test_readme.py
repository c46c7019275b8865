"""Every Python block of README.md runs, in order, as a reader would run them.

The blocks name a user's checkpoint (``./my-vit-classifier``), their image folder
(``./my_images``), the main job's output (``outputs/shapley-vit-shapes``) and a photo. This test
makes each of them for real in a temporary directory: a tiny ``ViTForImageClassification``
saved by plain transformers code, an image folder whose alphabetical order is not the
classifier's, the main job run by ``examples/train.py`` with tiny settings, and a PNG. Then it
executes the blocks in one namespace and checks what they promise.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from PIL import Image

from conftest import load_example_script
from test_user_road import LABELS, image_folder, save_classifier

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_has_python_blocks_and_stays_short():
    assert len(python_blocks()) >= 3
    assert len(README.read_text().splitlines()) <= 250


@pytest.fixture
def reader_directory(tmp_path, monkeypatch, single_thread):
    monkeypatch.chdir(tmp_path)
    save_classifier(tmp_path / "my-vit-classifier")
    image_folder(tmp_path / "my_images" / "train", per_class=6)
    image_folder(tmp_path / "my_images" / "test", per_class=2, seed=1)
    load_example_script("train").main(
        ["--image_size", "32", "--players_grid", "2", "2", "--num_train", "64",
         "--num_test", "16", "--num_validation", "16", "--classifier_max_steps", "4",
         "--explainer_max_steps", "4", "--per_device_train_batch_size", "16",
         "--num_truth_images", "2", "--num_exact_images", "1", "--num_explained_images", "0",
         "--output_dir", "outputs/shapley-vit-shapes"]
    )  # fmt: skip
    Image.new("RGB", (50, 40), (200, 30, 30)).save(tmp_path / "photo.png")
    return tmp_path


def test_every_python_block_runs(reader_directory):
    namespace: dict = {}
    for i, block in enumerate(python_blocks()):
        try:
            exec(compile(block, f"README.md python block {i}", "exec"), namespace)
        except Exception as error:  # name the block that failed
            raise AssertionError(f"README python block {i} failed:\n{block}") from error

    # The user-road block: the checkpoint's labels in its order, its logits untouched.
    model = namespace["trainer"].model
    assert [model.config.id2label[i] for i in range(4)] == LABELS
    assert model.config.train_backbone is False
    saved = reader_directory / "outputs" / "my-vit-shapley"
    assert (saved / "model.safetensors").is_file()
    from transformers import AutoModelForImageClassification, ViTForImageClassification

    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        ours = AutoModelForImageClassification.from_pretrained(saved).eval()(x).logits
        theirs = ViTForImageClassification.from_pretrained("my-vit-classifier").eval()(x).logits
    assert torch.equal(ours, theirs)
    # The pipeline block's result honours efficiency; the Hub block wrote a complete folder.
    assert abs(namespace["result"][0]["efficiency_residual"]) < 1e-4
    assert (reader_directory / "my-repo" / "README.md").is_file()
    assert (reader_directory / "my-repo" / "model.safetensors").is_file()
