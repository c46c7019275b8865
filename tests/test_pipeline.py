"""The image-shapley-explanation pipeline, in process and as remote code.

Every number the pipeline reports is checked against the model run directly on the image
processor's output (an independent path through the same model), and every input conversion
against an independent numpy computation of what the converted image must be.
"""

from __future__ import annotations

import functools
import http.server
import json
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import ViTForImageClassification, ViTImageProcessorPil, pipeline

import hf_shapley
from _without_package import run_without_package
from hf_shapley.models.image_loading import ImageLoadingError, load_rgb_image
from hf_shapley.visualization import overlay_heatmap

pytestmark = pytest.mark.usefixtures("single_thread")

TASK = "image-shapley-explanation"
LABELS = {0: "circle", 1: "square", 2: "triangle"}


def random_image(seed: int, size=(45, 30), mode="RGB") -> Image.Image:
    """A random image of ``size`` = (width, height)."""
    rng = np.random.default_rng(seed)
    channels = {"RGB": 3, "RGBA": 4, "CMYK": 4}.get(mode, 1)
    shape = (size[1], size[0]) + ((channels,) if channels > 1 else ())
    return Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode=mode)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, make_model):
    model = make_model("vit", players_grid=(2, 4))
    model.config.id2label = dict(LABELS)
    model.config.label2id = {v: k for k, v in LABELS.items()}
    # A center crop, so heatmaps must invert resize and crop (and grey the borders).
    model.image_processor = ViTImageProcessorPil(
        size={"height": 40, "width": 40}, do_center_crop=True, crop_size={"height": 32, "width": 32}
    )
    path = tmp_path_factory.mktemp("pipeline") / "model"
    model.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def explainer(model_dir):
    return pipeline(TASK, model=str(model_dir))


def direct(pipe, image: Image.Image):
    """The model on the processor's output, bypassing the pipeline."""
    pixel_values = pipe.image_processor(images=image, return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        out = pipe.model(pixel_values)
    return out.logits[0].double(), out.shapley_values[0].double(), out.base_values[0].double()


def check_against_model(
    pipe, image: Image.Image, result: list[dict], atol: float = 1e-5, centered: bool = True
):
    logits, phi, base = direct(pipe, image)
    probs = torch.softmax(logits, -1)
    if centered:  # the default explains the class-centered logit
        logits, phi, base = (t - t.mean(-1, keepdim=True) for t in (logits, phi, base))
    h, w = pipe.model.config.players_grid
    for entry in result:
        k = entry["label_id"]
        assert entry["label"] == LABELS[k]
        assert entry["explained"] == ("centered_logit" if centered else "logit")
        assert entry["logit"] == pytest.approx(logits[k].item(), abs=atol)
        assert entry["base_value"] == pytest.approx(base[k].item(), abs=atol)
        assert entry["score"] == pytest.approx(probs[k].item(), abs=atol)
        grid = np.asarray(entry["attributions"])
        assert grid.shape == (h, w)
        np.testing.assert_allclose(grid.reshape(-1), phi[:, k].numpy(), atol=atol)
        residual = entry["logit"] - entry["base_value"] - grid.sum()
        assert entry["efficiency_residual"] == pytest.approx(residual, abs=1e-9)
        assert abs(entry["efficiency_residual"]) < 1e-4


# ------------------------------------------------------------------------------ outputs
def test_raw_logits_on_request_and_centring_changes_the_maps(explainer):
    image = random_image(0)
    raw = explainer(image, top_k=3, centered=False, heatmap=False)
    check_against_model(explainer, image, raw, centered=False)
    centered = explainer(image, top_k=3, heatmap=False)
    check_against_model(explainer, image, centered)
    # Same labels and scores; the maps differ by each player's mean over classes.
    assert [e["label_id"] for e in raw] == [e["label_id"] for e in centered]
    assert not np.allclose(raw[0]["attributions"], centered[0]["attributions"])
    with pytest.raises(ValueError, match="centered"):
        explainer(image, centered="yes")


def test_registered_on_import_and_outputs_match_the_model(explainer):
    assert isinstance(explainer, hf_shapley.ImageShapleyExplanationPipeline)
    image = random_image(0)
    result = explainer(image, top_k=2)
    assert len(result) == 2
    assert result[0]["score"] >= result[1]["score"]
    check_against_model(explainer, image, result)
    for entry in result:
        assert entry["heatmap"].size == image.size and entry["heatmap"].mode == "RGB"
    # Default: the top 5 labels, capped at the 3 labels this model has, most probable first.
    full = explainer(image)
    logits, _, _ = direct(explainer, image)
    assert [e["label_id"] for e in full] == torch.argsort(logits, descending=True).tolist()


def test_everything_but_heatmaps_is_json_serializable(explainer):
    result = explainer(random_image(1), top_k=3, heatmap=False)
    assert all("heatmap" not in entry for entry in result)
    assert json.loads(json.dumps(result)) == result


def test_targets_by_name_and_id_in_the_given_order(explainer):
    image = random_image(2)
    result = explainer(image, targets=["triangle", 0], heatmap=False)
    assert [e["label_id"] for e in result] == [2, 0]
    check_against_model(explainer, image, result)
    assert [e["label"] for e in explainer(image, targets=1, heatmap=False)] == ["square"]


def test_heatmap_options_reach_the_overlay(explainer):
    image = random_image(3)
    result = explainer(image, top_k=1, colormap="viridis", opacity=0.8)[0]
    expected = overlay_heatmap(
        image,
        np.asarray(result["attributions"]),
        explainer.image_processor,
        cmap="viridis",
        alpha=0.8,
    )
    assert np.array_equal(np.asarray(result["heatmap"]), np.asarray(expected))
    # Opacity 0 leaves the explained pixels untouched; the center crop's borders stay grey.
    clear = np.asarray(explainer(image, top_k=1, opacity=0.0)[0]["heatmap"]).astype(int)
    original = np.asarray(image).astype(int)
    centre = (slice(8, 22), slice(10, 35))  # well inside the crop of a 45 x 30 image
    assert np.array_equal(clear[centre], original[centre])
    assert not np.array_equal(clear[:1], original[:1])


def test_batches_give_the_same_results_as_one_at_a_time(explainer):
    images = [random_image(10 + i, size=(20 + 13 * i, 60 - 7 * i)) for i in range(5)]
    single = [explainer(image, top_k=2) for image in images]
    for batch_size in (2, 5):
        batched = explainer(images, top_k=2, batch_size=batch_size)
        assert len(batched) == len(images)
        for one, many, image in zip(single, batched, images, strict=True):
            assert [e["label_id"] for e in one] == [e["label_id"] for e in many]
            for a, b in zip(one, many, strict=True):
                for key in ("score", "logit", "base_value", "efficiency_residual"):
                    assert a[key] == pytest.approx(b[key], abs=1e-5)
                np.testing.assert_allclose(a["attributions"], b["attributions"], atol=1e-5)
                assert b["heatmap"].size == image.size
                diff = np.abs(np.asarray(a["heatmap"], int) - np.asarray(b["heatmap"], int))
                assert diff.max() <= 1  # float rounding of the colours at most


# ------------------------------------------------------------------------------ inputs
def test_paths_urls_and_lists(explainer, tmp_path, monkeypatch):
    image = random_image(20)
    image.save(tmp_path / "a.png")
    expected = explainer(image, top_k=1, heatmap=False)
    assert explainer(str(tmp_path / "a.png"), top_k=1, heatmap=False) == expected
    assert explainer(tmp_path / "a.png", top_k=1, heatmap=False) == expected  # a pathlib.Path

    # A real HTTP server on localhost serves the file.
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/a.png"
        outputs = explainer([url, str(tmp_path / "a.png")], top_k=1, heatmap=False)
        assert outputs == [expected, expected]
        with pytest.raises(ImageLoadingError, match="missing.png"):
            explainer(url.replace("a.png", "missing.png"))
    finally:
        server.shutdown()


def test_modes_are_converted_by_what_their_values_mean(tmp_path):
    # 16-bit grayscale: scaled from 0..65535, not clipped at 255 as PIL's convert does.
    values = np.array([[0, 257, 32896], [65535, 1000, 60000]], dtype=np.uint16)
    Image.fromarray(values).save(tmp_path / "gray16.png")
    loaded = np.asarray(load_rgb_image(str(tmp_path / "gray16.png")))
    expected = np.round(values / 65535.0 * 255.0).astype(np.uint8)
    assert loaded.shape == (2, 3, 3)
    assert np.array_equal(loaded, np.repeat(expected[..., None], 3, axis=-1))

    # RGBA: composited over white.
    rgba = random_image(30, size=(6, 4), mode="RGBA")
    arr = np.asarray(rgba).astype(np.float64)
    alpha = arr[..., 3:] / 255.0
    over_white = arr[..., :3] * alpha + 255.0 * (1.0 - alpha)
    got = np.asarray(load_rgb_image(rgba)).astype(np.float64)
    assert np.abs(got - over_white).max() <= 1.0

    # Palette with a transparent index: that index becomes white.
    palette = Image.new("P", (4, 4), 0)
    palette.putpalette([10, 20, 30] + [200, 0, 0] * 255)
    palette.putpixel((1, 1), 1)
    palette.info["transparency"] = 0
    got = np.asarray(load_rgb_image(palette))
    assert tuple(got[0, 0]) == (255, 255, 255) and tuple(got[1, 1]) == (200, 0, 0)

    # Grayscale and CMYK: PIL's standard conversions.
    gray = random_image(31, mode="L")
    assert np.array_equal(np.asarray(load_rgb_image(gray)), np.asarray(gray.convert("RGB")))
    cmyk = random_image(32, mode="CMYK")
    cmyk.save(tmp_path / "cmyk.jpg")
    reopened = Image.open(tmp_path / "cmyk.jpg")
    assert reopened.mode == "CMYK"
    assert np.array_equal(
        np.asarray(load_rgb_image(str(tmp_path / "cmyk.jpg"))), np.asarray(reopened.convert("RGB"))
    )


def test_every_mode_explains_like_its_rgb_conversion(explainer, tmp_path):
    inputs = {
        "L": random_image(40, mode="L"),
        "RGBA": random_image(41, mode="RGBA"),
        "CMYK": random_image(42, mode="CMYK"),
        "I;16": Image.fromarray(
            np.random.default_rng(43).integers(0, 65536, (30, 45), dtype=np.uint16)
        ),
        "tiny": random_image(44, size=(1, 2)),
        "huge": random_image(45, size=(2400, 1600)),
    }
    for name, image in inputs.items():
        result = explainer(image, top_k=1)
        check_against_model(explainer, load_rgb_image(image), result)
        assert result[0]["heatmap"].size == image.size, name


def test_bad_inputs_are_clear_errors(explainer, tmp_path):
    (tmp_path / "notes.txt").write_text("not an image")
    good = random_image(50)
    good.save(tmp_path / "good.jpg")
    truncated = (tmp_path / "good.jpg").read_bytes()
    (tmp_path / "truncated.jpg").write_bytes(truncated[: len(truncated) // 2])

    with pytest.raises(ImageLoadingError, match=r"No image file at .*missing\.png"):
        explainer(str(tmp_path / "missing.png"))
    with pytest.raises(ImageLoadingError, match="is a directory"):
        explainer(str(tmp_path))
    with pytest.raises(ImageLoadingError, match=r"notes\.txt.*not an image or is corrupt"):
        explainer(str(tmp_path / "notes.txt"))
    with pytest.raises(ImageLoadingError, match=r"truncated\.jpg"):
        explainer(str(tmp_path / "truncated.jpg"))
    # One bad file in a batch: the call fails naming it.
    with pytest.raises(ImageLoadingError, match=r"notes\.txt"):
        explainer([str(tmp_path / "good.jpg"), str(tmp_path / "notes.txt")], batch_size=2)
    with pytest.raises(TypeError, match="PIL.Image.fromarray"):
        explainer(np.zeros((4, 4, 3), dtype=np.uint8))
    with pytest.raises(ValueError, match="empty"):
        explainer([])
    with pytest.raises(ValueError, match=r"Unknown target label 'hexagon'.*'circle'"):
        explainer(good, targets="hexagon")
    with pytest.raises(ValueError, match=r"Unknown target label id 7.*0\.\.2"):
        explainer(good, targets=[0, 7])
    with pytest.raises(ValueError, match="not both"):
        explainer(good, top_k=1, targets=0)
    with pytest.raises(ValueError, match="top_k must be a positive integer"):
        explainer(good, top_k=0)
    with pytest.raises(ValueError, match="opacity"):
        explainer(good, opacity=1.5)


def test_a_model_without_a_shapley_head_is_refused(make_backbone_config):
    stock = ViTForImageClassification(make_backbone_config("vit", num_labels=3)).eval()
    processor = ViTImageProcessorPil(size={"height": 32, "width": 32})
    with pytest.raises(ValueError, match="needs a ShapleyForImageClassification.*from_backbone"):
        pipeline(TASK, model=stock, image_processor=processor)


# ------------------------------------------------------------------------------ remote code
REMOTE_CHILD = r"""
import json

from PIL import Image
from transformers import pipeline

model_dir, image_dir, out_dir = sys.argv[1:4]
images = [Image.open(os.path.join(image_dir, f"{i}.png")) for i in range(3)]
info = {"blocked": BLOCKED}
named = pipeline("image-shapley-explanation", model=model_dir, trust_remote_code=True)
inferred = pipeline(model=model_dir, trust_remote_code=True)  # task from custom_pipelines
results = named(images, top_k=2, batch_size=2)
for i, result in enumerate(results):
    for j, entry in enumerate(result):
        entry.pop("heatmap").save(os.path.join(out_dir, f"heatmap_{i}_{j}.png"))
info["results"] = results
info["inferred"] = inferred(images[0], top_k=2, heatmap=False)
info["pipeline_module"] = type(named).__module__
info["model_module"] = type(named.model).__module__
info["hf_shapley_modules"] = loaded_hf_shapley_modules()
with open(os.path.join(out_dir, "child.json"), "w") as f:
    json.dump(info, f)
"""


def test_saved_pipeline_runs_as_remote_code_without_the_package(explainer, tmp_path):
    saved = tmp_path / "saved_pipeline"
    explainer.save_pretrained(str(saved))
    config = json.loads((saved / "config.json").read_text())
    assert config["custom_pipelines"][TASK] == {
        "impl": "pipeline_shapley.ImageShapleyExplanationPipeline",
        "pt": ["AutoModelForImageClassification"],
        "type": "image",
    }
    for file in ("pipeline_shapley.py", "image_loading.py", "heatmap.py"):
        assert (saved / file).is_file(), file
    assert (saved / "preprocessor_config.json").is_file()

    images = [random_image(60 + i, size=(30 + 9 * i, 40)) for i in range(3)]
    for i, image in enumerate(images):
        image.save(tmp_path / f"{i}.png")
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    proc = run_without_package(REMOTE_CHILD, [str(saved), str(tmp_path), str(out_dir)], tmp_path)
    assert proc.returncode == 0, proc.stderr[-4000:]
    child = json.loads((out_dir / "child.json").read_text())
    assert child["blocked"] and child["hf_shapley_modules"] == []
    assert child["pipeline_module"].startswith("transformers_modules")
    assert child["model_module"].startswith("transformers_modules")

    here = explainer([Image.open(tmp_path / f"{i}.png") for i in range(3)], top_k=2)
    for i, (mine, theirs) in enumerate(zip(here, child["results"], strict=True)):
        for j, (a, b) in enumerate(zip(mine, theirs, strict=True)):
            heatmap = a.pop("heatmap")
            assert a["label"] == b["label"] and a["label_id"] == b["label_id"]
            for key in ("score", "logit", "base_value"):
                assert a[key] == pytest.approx(b[key], abs=1e-5)
            np.testing.assert_allclose(a["attributions"], b["attributions"], atol=1e-5)
            remote_heatmap = np.asarray(Image.open(out_dir / f"heatmap_{i}_{j}.png"), int)
            assert np.abs(np.asarray(heatmap, int) - remote_heatmap).max() <= 1
    inferred = child["inferred"]
    assert [e["label_id"] for e in inferred] == [e["label_id"] for e in here[0]]


def test_installed_package_serves_a_saved_pipeline_without_trust_remote_code(model_dir):
    # The saved config lists the task in custom_pipelines; after `import hf_shapley` the
    # registered class serves it, with no remote code involved.
    assert TASK in json.loads((Path(model_dir) / "config.json").read_text())["custom_pipelines"]
    pipe = pipeline(TASK, model=str(model_dir))
    assert type(pipe) is hf_shapley.ImageShapleyExplanationPipeline
    assert type(pipe.model) is hf_shapley.ShapleyForImageClassification
    assert "custom_pipelines" not in pipe.model.config.to_dict()


def test_a_datasets_column_streams_through_the_pipeline(explainer):
    from datasets import Dataset
    from datasets import Image as ImageFeature
    from transformers.pipelines.pt_utils import KeyDataset

    images = [random_image(70 + i, size=(30 + i, 30)) for i in range(4)]
    ds = Dataset.from_dict({"image": images}).cast_column("image", ImageFeature())
    streamed = list(explainer(KeyDataset(ds, "image"), top_k=1, heatmap=False, batch_size=2))
    assert len(streamed) == 4
    for image, result in zip(images, streamed, strict=True):
        check_against_model(explainer, image, result)
