"""The demo app's callbacks, without a browser: what the page shows is what the pipeline returns.

Every check compares the page's values with an independent ``pipeline(...)`` instance loaded
from the same directory, so a demo that drew its numbers from anywhere else would fail.
"""

from __future__ import annotations

import json
import os
import runpy
import shutil
import subprocess
import sys

import gradio as gr  # the demo extra, in .[dev]: missing, these tests fail (no skip)
import numpy as np
import pytest
from PIL import Image
from transformers import ViTImageProcessorPil, pipeline

from hf_shapley.data import shapes_label_names
from hf_shapley.demo import (
    MAX_IMAGE_PIXELS,
    MAX_POOLED_RELATIVE_ERROR,
    MIN_PEARSON_R,
    DemoExplainer,
    ModelMetrics,
    ShapleyDemo,
    build_demo,
    format_values,
    load_model_metrics,
    write_space,
)
from hf_shapley.demo.app import ELEMENT_IDS, NO_MODEL_PASS_NOTE
from hf_shapley.demo.space import MODEL_ENV_VARIABLE

pytestmark = pytest.mark.usefixtures("single_thread")

TASK = "image-shapley-explanation"
GRID = (2, 4)
# The measured figures of a model whose explanations miss the targets, and one within them.
UNFAITHFUL = {
    "accuracy": 0.766,
    "accuracy_ci95": [0.739, 0.791],
    "faithfulness": {"pearson_r": 0.887, "pooled_relative_error": 0.52},
    "faithfulness_truth": "KernelSHAP, 2048 paired evaluations per image",
    "faithfulness_num_images": 32,
}
FAITHFUL = {"accuracy": 0.9, "faithfulness": {"pearson_r": 0.97, "pooled_relative_error": 0.1}}


def save_image(image: Image.Image, path, **kwargs) -> str:
    image.save(path, **kwargs)
    return str(path)


def random_rgb(seed: int, size=(45, 30)) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, make_model):
    """A tiny model with the built-in data set's 3 labels, saved with its image processor."""
    model = make_model("vit", players_grid=GRID)
    names = shapes_label_names(model.config.num_labels)
    model.config.id2label = dict(enumerate(names))
    model.config.label2id = {name: i for i, name in enumerate(names)}
    model.image_processor = ViTImageProcessorPil(size={"height": 32, "width": 32})
    path = tmp_path_factory.mktemp("demo") / "model"
    model.save_pretrained(path)
    (path / "metrics.json").write_text(json.dumps(UNFAITHFUL))
    return path


@pytest.fixture(scope="module")
def demo(model_dir):
    return ShapleyDemo(str(model_dir))


@pytest.fixture(scope="module")
def reference(model_dir):
    """An independent pipeline on the same directory."""
    return pipeline(TASK, model=str(model_dir))


@pytest.fixture(scope="module")
def image_path(tmp_path_factory):
    """A non-square image, so a transposed size would show."""
    return save_image(random_rgb(0), tmp_path_factory.mktemp("images") / "photo.png")


class ForwardCounter:
    def __init__(self, module):
        self.calls = 0
        self.handle = module.register_forward_hook(self.hook)

    def hook(self, *args):
        self.calls += 1

    def remove(self):
        self.handle.remove()


def test_label_shown_is_the_pipelines_top_label(demo, reference, image_path):
    out = demo.on_upload(image_path)
    expected = reference(image_path, top_k=len(demo.explainer.labels))
    assert out.chosen_class == expected[0]["label"]
    assert out.explanation.top_label == expected[0]["label"]
    assert f"**{expected[0]['label']}**" in out.status
    # gr.Label gets every class's probability (3 classes < TOP_CLASSES), in the pipeline's order.
    assert list(out.probabilities) == [e["label"] for e in expected]
    for entry in expected:
        assert out.probabilities[entry["label"]] == pytest.approx(entry["score"], abs=1e-6)


def test_examples_are_built_in_test_images_that_the_page_explains(demo, reference):
    assert len(demo.examples) >= len(demo.explainer.labels)
    for path in demo.examples[:2]:
        out = demo.on_upload(path)
        assert out.chosen_class == reference(path, top_k=1)[0]["label"]
        assert out.heatmap.size == Image.open(path).size


def test_no_examples_for_a_model_not_trained_on_the_built_in_data(tmp_path, make_model):
    model = make_model("vit", players_grid=GRID)
    model.config.id2label = {0: "cat", 1: "dog", 2: "bird"}
    model.config.label2id = {v: k for k, v in model.config.id2label.items()}
    model.image_processor = ViTImageProcessorPil(size={"height": 32, "width": 32})
    other = ShapleyDemo(model)
    assert other.examples == []
    assert isinstance(other.build(), gr.Blocks)


def test_switching_class_makes_no_model_pass_and_shows_the_pipelines_values(
    demo, reference, image_path
):
    counter = ForwardCounter(demo.explainer.pipeline.model)
    try:
        upload = demo.on_upload(image_path)
        assert counter.calls == 1  # every class explained by the one pass
        for label in demo.explainer.labels:
            shown = demo.on_class(label, upload.explanation)
            expected = reference(image_path, targets=label)[0]
            view = demo.explainer.view(upload.explanation, label)
            np.testing.assert_allclose(view.attributions, expected["attributions"], atol=1e-6)
            assert view.logit == pytest.approx(expected["logit"], abs=1e-6)
            assert view.base_value == pytest.approx(expected["base_value"], abs=1e-6)
            assert view.efficiency_residual == pytest.approx(
                expected["efficiency_residual"], abs=1e-6
            )
            assert np.array_equal(np.asarray(shown.heatmap), np.asarray(expected["heatmap"]))
            assert f"*{label}*" in shown.efficiency
        assert counter.calls == 1
    finally:
        counter.remove()
    assert NO_MODEL_PASS_NOTE in demo.intro_markdown()


def test_heatmap_has_the_input_size(demo, tmp_path):
    for size in ((45, 30), (17, 60), (300, 200)):
        path = save_image(random_rgb(1, size), tmp_path / f"image_{size[0]}x{size[1]}.png")
        assert demo.on_upload(path).heatmap.size == size


def test_grid_is_the_pipelines_attributions(demo, reference, image_path):
    out = demo.on_upload(image_path)
    expected = reference(image_path, top_k=1)[0]
    table = out.values
    h, w = GRID
    assert table.shape == (h, w + 1)  # a "row" column, then one column per patch column
    assert list(table["row"]) == [f"row {i + 1}" for i in range(h)]
    shown = np.array([[float(v) for v in row[1:]] for row in table.itertuples(index=False)])
    expected_grid = np.asarray(expected["attributions"])
    decimals = len(table.iloc[0, 1].split(".")[1])
    assert np.abs(shown - expected_grid).max() <= 0.5 * 10.0**-decimals + 1e-12
    # Enough decimals for three significant digits of the largest value.
    assert np.abs(expected_grid).max() * 10.0**decimals >= 100


def test_format_values_keeps_small_grids_readable():
    assert format_values([[0.00012, -0.00003]]) == [["+0.000120", "-0.000030"]]
    assert format_values([[12.5, -3.25]]) == [["+12.50", "-3.25"]]
    assert format_values([[0.0, 0.0]]) == [["+0.00", "+0.00"]]


def test_efficiency_check_is_shown(demo, reference, image_path):
    out = demo.on_upload(image_path)
    expected = reference(image_path, top_k=1)[0]
    assert f"**{expected['logit']:.4f}**" in out.efficiency
    assert f"**{expected['base_value']:.4f}**" in out.efficiency
    assert f"**{np.sum(expected['attributions']):.4f}**" in out.efficiency
    assert f"**{expected['efficiency_residual']:.2e}**" in out.efficiency
    assert "✅" in out.efficiency and "class-centered logit" in out.efficiency


def test_metrics_json_is_shown_with_a_warning_below_the_targets(demo):
    text = demo.metrics_markdown()
    assert "76.6%" in text and "[95%: 73.9, 79.1]" in text
    assert "0.887" in text and "0.520" in text and "KernelSHAP" in text
    assert "Not faithful enough" in text
    assert f"below the target {MIN_PEARSON_R}" in text
    assert f"above the target {MAX_POOLED_RELATIVE_ERROR}" in text


def test_no_warning_within_the_targets_and_unknown_without_figures(model_dir, tmp_path):
    good = ModelMetrics.from_dict(FAITHFUL)
    assert good.warnings() == []
    assert "Not faithful enough" not in good.to_markdown() and "✅" in good.to_markdown()
    # Each target alone triggers the warning.
    assert len(ModelMetrics.from_dict({"faithfulness": {"pearson_r": 0.94}}).warnings()) == 1
    assert len(ModelMetrics.from_dict({"faithfulness": {"relative_l2": 0.3}}).warnings()) == 1
    bare = tmp_path / "bare"
    shutil.copytree(model_dir, bare)
    (bare / "metrics.json").unlink()
    assert load_model_metrics(bare) is None
    assert "unknown" in ShapleyDemo(str(bare), examples=[]).metrics_markdown()


def test_metrics_from_the_model_card_when_there_is_no_metrics_json(model_dir, tmp_path):
    from transformers import AutoModelForImageClassification

    from hf_shapley.publishing import write_model_card

    carded = tmp_path / "carded"
    shutil.copytree(model_dir, carded)
    (carded / "metrics.json").unlink()
    model = AutoModelForImageClassification.from_pretrained(carded)
    write_model_card(model, carded, metrics=FAITHFUL)
    found = load_model_metrics(carded)
    assert found is not None and found.source.endswith("README.md")
    assert found.accuracy == pytest.approx(0.9)
    assert found.value("pearson_r") == pytest.approx(0.97)
    assert found.warnings() == []


def _corrupt_png(path) -> str:
    """A valid PNG, cut in the middle of its image data."""
    full = save_image(random_rgb(2, (64, 64)), str(path) + ".full.png")
    with open(full, "rb") as f:
        data = f.read()
    path.write_bytes(data[: len(data) // 2])
    return str(path)


def _written(path, data: bytes) -> str:
    path.write_bytes(data)
    return str(path)


BAD_INPUTS = {
    "text file": (lambda p: _written(p, b"not an image at all"), "not an image"),
    "empty file": (lambda p: _written(p, b""), "not an image"),
    "corrupt PNG": (_corrupt_png, "corrupt"),
    # Header only: 5,000 x 4,100 is 20.5 megapixels; a bilevel image keeps the test light.
    "huge image": (
        lambda p: save_image(Image.new("1", (5000, 4100)), p),
        "above the demo's limit",
    ),
}


@pytest.mark.parametrize("kind", list(BAD_INPUTS))
def test_bad_input_gives_a_message_and_the_app_goes_on(demo, reference, image_path, tmp_path, kind):
    make, phrase = BAD_INPUTS[kind]
    path = make(tmp_path / f"upload_{kind.replace(' ', '_')}.png")
    out = demo.on_upload(path)  # must not raise
    assert out.status.startswith("⚠️ **This file could not be explained.**")
    assert phrase in out.status
    assert os.path.basename(path) in out.status and str(tmp_path) not in out.status
    assert out.explanation is None and out.heatmap is None and out.probabilities is None
    assert out.values.empty and list(out.values.columns) == [
        "row",
        "col 1",
        "col 2",
        "col 3",
        "col 4",
    ]
    # ... and a valid upload right after is explained.
    assert demo.on_upload(image_path).chosen_class == reference(image_path, top_k=1)[0]["label"]


def test_the_pixel_limit_is_the_documented_one(demo):
    assert demo.explainer.max_image_pixels == MAX_IMAGE_PIXELS
    assert 5000 * 4100 > MAX_IMAGE_PIXELS >= 4000 * 3000  # a 12 MP photo is taken


@pytest.mark.parametrize("kind", ["16-bit", "CMYK"])
def test_converted_images_are_explained_with_a_note(demo, reference, tmp_path, kind):
    if kind == "16-bit":
        ramp = np.linspace(0, 65535, 40 * 24).reshape(24, 40).astype(np.uint16)
        image = Image.fromarray(ramp)
        path = save_image(image, tmp_path / "depth16.png")
    else:
        image = random_rgb(3, (40, 24)).convert("CMYK")
        path = save_image(image, tmp_path / "print.jpg", quality=95)
    out = demo.on_upload(path)
    assert out.explanation is not None, out.status
    assert kind in out.status  # the note says what was converted
    assert out.chosen_class == reference(path, top_k=1)[0]["label"]
    assert out.heatmap.size == (40, 24)


def test_no_file_clears_the_page(demo):
    out = demo.on_upload(None)
    assert out.explanation is None and "Drop an image" in out.status
    assert demo.on_class("red circle", None).heatmap is None


def test_many_classes_draw_heatmaps_when_shown_still_without_a_model_pass(
    model_dir, reference, image_path
):
    lazy = DemoExplainer(str(model_dir), eager_heatmap_max_classes=1)
    explanation = lazy.explain(image_path)
    assert all("heatmap" not in entry for entry in explanation.entries.values())
    counter = ForwardCounter(lazy.pipeline.model)
    try:
        for label in lazy.labels:
            heatmap = lazy.view(explanation, label).heatmap
            expected = reference(image_path, targets=label)[0]["heatmap"]
            assert np.array_equal(np.asarray(heatmap), np.asarray(expected))
    finally:
        counter.remove()
    assert counter.calls == 0


def test_the_page_builds_with_its_components(demo):
    blocks = demo.build()
    assert isinstance(blocks, gr.Blocks)
    ids = {getattr(block, "elem_id", None) for block in blocks.blocks.values()}
    assert set(ELEMENT_IDS.values()) <= ids
    chooser = next(b for b in blocks.blocks.values() if b.elem_id == ELEMENT_IDS["chooser"])
    assert [c[0] for c in chooser.choices] == demo.explainer.labels  # any class, not only top


# ---------------------------------------------------------------------- Space folder
def test_space_folder_contents_and_metadata(tmp_path):
    from huggingface_hub import SpaceCard

    requirement = "hf-shapley[demo] @ git+https://github.com/example/hf-shapley@abc123"
    write_space(tmp_path, "my-org/vit-shapley", requirement=requirement)
    assert sorted(os.listdir(tmp_path)) == ["README.md", "app.py", "requirements.txt"]
    card = SpaceCard.load(tmp_path / "README.md")
    assert card.data.sdk == "gradio"
    assert card.data.sdk_version == gr.__version__
    assert card.data.app_file == "app.py"
    assert card.data.models == ["my-org/vit-shapley"]
    assert card.data.title
    lines = [
        line
        for line in (tmp_path / "requirements.txt").read_text().splitlines()
        if line and not line.startswith("#")
    ]
    assert lines == [requirement]
    assert '"my-org/vit-shapley"' in (tmp_path / "app.py").read_text()


def test_written_app_builds_the_demo_against_a_local_model(model_dir, tmp_path, monkeypatch):
    write_space(tmp_path, "my-org/vit-shapley")
    monkeypatch.setenv(MODEL_ENV_VARIABLE, str(model_dir))  # the Hub id, substituted
    namespace = runpy.run_path(str(tmp_path / "app.py"), run_name="space_app")
    assert isinstance(namespace["demo"], gr.Blocks)
    assert namespace["app"].explainer.labels == shapes_label_names(3)
    assert "0.887" in namespace["app"].metrics_markdown()  # metrics.json beside the model


def test_save_for_hub_writes_the_space_folder(make_model, tmp_path):
    from huggingface_hub import SpaceCard

    from hf_shapley.publishing import save_for_hub

    model = make_model("vit", players_grid=GRID)
    model.image_processor = ViTImageProcessorPil(size={"height": 32, "width": 32})
    save_for_hub(
        model, tmp_path / "repo", repo_id="my-org/tiny", space_directory=tmp_path / "space"
    )
    assert (tmp_path / "repo" / "model.safetensors").exists()
    assert SpaceCard.load(tmp_path / "space" / "README.md").data.models == ["my-org/tiny"]


class RecordingHfApi:
    """Stands in for the Hub (unreachable here): records what push_to_hub sends."""

    calls: list = []

    def __init__(self, token=None):
        pass

    def create_repo(self, repo_id, **kwargs):
        self.calls.append(("create_repo", repo_id, kwargs))
        return type("RepoUrl", (), {"repo_id": repo_id})()

    def upload_folder(self, *, folder_path, repo_id, **kwargs):
        self.calls.append(("upload_folder", repo_id, kwargs, sorted(os.listdir(folder_path))))
        if kwargs.get("repo_type") == "space":
            with open(os.path.join(folder_path, "app.py"), encoding="utf-8") as f:
                self.calls.append(("space_app", f.read()))
        return f"commit of {repo_id}"


def test_push_to_hub_publishes_the_space(make_model, monkeypatch):
    import huggingface_hub

    from hf_shapley import publishing as hub

    model = make_model("vit", players_grid=GRID)
    model.image_processor = ViTImageProcessorPil(size={"height": 32, "width": 32})
    RecordingHfApi.calls = []
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub, "HfApi", RecordingHfApi)
    info = hub.push_to_hub(model, "my-org/tiny", space_repo_id="my-org/tiny-demo")
    assert info == "commit of my-org/tiny"
    kinds = [(c[0], c[1]) for c in RecordingHfApi.calls[:4]]
    assert kinds == [
        ("create_repo", "my-org/tiny"),
        ("upload_folder", "my-org/tiny"),
        ("create_repo", "my-org/tiny-demo"),
        ("upload_folder", "my-org/tiny-demo"),
    ]
    assert RecordingHfApi.calls[2][2]["repo_type"] == "space"
    assert RecordingHfApi.calls[2][2]["space_sdk"] == "gradio"
    assert RecordingHfApi.calls[3][3] == ["README.md", "app.py", "requirements.txt"]
    assert '"my-org/tiny"' in RecordingHfApi.calls[4][1]


def test_push_with_a_space_fails_at_once_when_offline(make_model, monkeypatch):
    import huggingface_hub

    from hf_shapley import publishing as hub

    def refuse(*args, **kwargs):
        raise AssertionError("push_to_hub reached the Hub client while offline")

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub, "HfApi", refuse)
    model = make_model("vit", players_grid=GRID)
    with pytest.raises(hub.HubOfflineError, match="HF_HUB_OFFLINE=1"):
        hub.push_to_hub(model, "my-org/tiny", space_repo_id="my-org/tiny-demo")


# ---------------------------------------------------------------------- optional Gradio
def test_importing_the_package_does_not_import_gradio(tmp_path):
    code = (
        "import sys, hf_shapley, hf_shapley.publishing, hf_shapley.demo, hf_shapley.demo.space; "
        "print('gradio' in sys.modules)"
    )
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1] == "False"


def test_without_gradio_the_demo_says_what_to_install(model_dir, monkeypatch, capsys):
    from hf_shapley.demo.__main__ import main

    monkeypatch.setitem(sys.modules, "gradio", None)  # `import gradio` now raises ImportError
    with pytest.raises(ImportError, match=r'pip install "hf-shapley\[demo\]"'):
        build_demo(str(model_dir))
    assert main(["--model", str(model_dir)]) == 1
    assert 'pip install "hf-shapley[demo]"' in capsys.readouterr().err


def test_train_script_writes_the_space_folder(tmp_path, single_thread):
    """examples/train.py --space_dir: the main job's route (a tiny backbone, a few steps)."""
    from huggingface_hub import SpaceCard
    from transformers import ViTModel

    from conftest import load_example_script, tiny_backbone_config

    backbone = tmp_path / "backbone"
    ViTModel(tiny_backbone_config("vit"), add_pooling_layer=False).save_pretrained(backbone)
    ViTImageProcessorPil(size={"height": 32, "width": 32}).save_pretrained(backbone)
    out, space = tmp_path / "out", tmp_path / "space"
    load_example_script("train").main(
        [
            "--backbone", str(backbone), "--players_grid", "2", "2",
            "--num_train", "32", "--num_test", "8", "--max_steps", "1",
            "--per_device_train_batch_size", "16", "--per_device_eval_batch_size", "16",
            "--output_dir", str(out), "--num_truth_images", "0", "--num_explained_images", "1",
            "--save_strategy", "no", "--space_dir", str(space),
        ]
    )  # fmt: skip
    assert SpaceCard.load(space / "README.md").data.models == ["out"]
    assert '"out"' in (space / "app.py").read_text()
    assert (out / "model.safetensors").exists()
