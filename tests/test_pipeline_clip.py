"""Tests for the zero-shot-image-shapley-explanation pipeline on a tiny ShapleyCLIPModel."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import CLIPImageProcessor, CLIPModel, pipeline

import hf_shapley
from _without_package import absolute_package_imports, run_without_package
from conftest import caption_clip_config, tiny_clip_config
from hf_shapley.data import generate_shapes

pytestmark = pytest.mark.usefixtures("single_thread")

LABELS = ["red circle", "green square", "blue triangle", "yellow cross"]
TEMPLATE = "a photo of a {}"
CONTEXT = 16
# The entry keys of the image-shapley-explanation pipeline (pipeline_shapley.py).
ENTRY_KEYS = {
    "label",
    "label_id",
    "score",
    "explained",
    "logit",
    "base_value",
    "attributions",
    "efficiency_residual",
    "heatmap",
}


@pytest.fixture(scope="module")
def explainer():
    config, tokenizer = caption_clip_config(context=CONTEXT)
    torch.manual_seed(0)
    model = hf_shapley.ShapleyCLIPModel.from_clip(
        CLIPModel(config), players_grid=(2, 2), head_hidden_size=16, head_num_layers=0
    ).eval()
    processor = CLIPImageProcessor(
        size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}
    )
    return pipeline(
        "zero-shot-image-shapley-explanation",
        model=model,
        tokenizer=tokenizer,
        image_processor=processor,
    )


@pytest.fixture(scope="module")
def images():
    return [Image.fromarray(a) for a in generate_shapes(3, image_size=48).images]


def test_entries_have_the_classifier_pipelines_format_and_the_models_values(explainer, images):
    out = explainer(images[0], candidate_labels=LABELS, hypothesis_template=TEMPLATE)
    assert [set(e) for e in out] == [ENTRY_KEYS] * len(LABELS)
    assert sorted(e["label_id"] for e in out) == list(range(len(LABELS)))
    assert [e["label"] for e in out] == [LABELS[e["label_id"]] for e in out]
    scores = [e["score"] for e in out]
    assert scores == sorted(scores, reverse=True) and abs(sum(scores) - 1) < 1e-6
    # The model's own numbers, from an independent call.
    model = explainer.model
    pixel_values = explainer.image_processor(images=images[0], return_tensors="pt").pixel_values
    text = explainer.tokenizer(
        [TEMPLATE.format(x) for x in LABELS], padding=True, return_tensors="pt"
    )
    with torch.no_grad():
        ref = model(pixel_values, input_ids=text.input_ids, attention_mask=text.attention_mask)
    logits = ref.logits_per_image[0].double()
    phi = ref.shapley_values[0].double()
    base = ref.base_values[0].double()
    probabilities = torch.softmax(logits, 0)
    for e in out:
        k = e["label_id"]
        assert e["explained"] == "centered_logit"
        assert abs(e["score"] - probabilities[k].item()) < 1e-6
        assert abs(e["logit"] - (logits[k] - logits.mean()).item()) < 1e-5
        assert abs(e["base_value"] - (base[k] - base.mean()).item()) < 1e-5
        expected = (phi[:, k] - phi.mean(1)).reshape(2, 2)
        np.testing.assert_allclose(e["attributions"], expected.numpy(), atol=1e-5)
        assert abs(e["efficiency_residual"]) < 1e-5
        assert e["heatmap"].size == images[0].size
    raw = explainer(
        images[0], candidate_labels=LABELS, hypothesis_template=TEMPLATE, centered=False
    )
    for e in raw:
        assert abs(e["logit"] - logits[e["label_id"]].item()) < 1e-5
        assert abs(e["efficiency_residual"]) < 1e-4


def test_batches_and_top_k(explainer, images):
    single = [explainer(image, candidate_labels=LABELS, heatmap=False, top_k=2) for image in images]
    batched = explainer(images, candidate_labels=LABELS, heatmap=False, top_k=2, batch_size=2)
    assert len(batched) == 3 and all(len(entries) == 2 for entries in batched)
    for a, b in zip(single, batched, strict=True):
        for x, y in zip(a, b, strict=True):
            assert x["label"] == y["label"]
            np.testing.assert_allclose(x["attributions"], y["attributions"], atol=1e-5)


def test_one_image_pass_for_any_number_of_labels(explainer, images):
    calls = []
    embeddings = explainer.model.clip.vision_model.embeddings
    hook = embeddings.register_forward_hook(lambda *args: calls.append(1))
    try:
        many = [f"{c} {s}" for c in ("red", "green", "blue") for s in ("circle", "square", "ring")]
        explainer(images[0], candidate_labels=many, heatmap=False)
    finally:
        hook.remove()
    assert len(calls) == 1


def test_other_image_modes_are_converted(explainer, images):
    rgb = explainer(images[0], candidate_labels=LABELS, heatmap=False)
    rgba = explainer(images[0].convert("RGBA"), candidate_labels=LABELS, heatmap=False)
    assert [e["label"] for e in rgb] == [e["label"] for e in rgba]
    gray = explainer(images[0].convert("L"), candidate_labels=LABELS, heatmap=False)
    assert len(gray) == len(LABELS)


def test_bad_input_errors(explainer, images):
    with pytest.raises(ValueError, match="candidate_labels is empty"):
        explainer(images[0], candidate_labels=[])
    with pytest.raises(ValueError, match="candidate_labels is required"):
        explainer(images[0])
    too_long = " ".join(["red"] * CONTEXT)
    with pytest.raises(ValueError, match="'red red.*longer than the text encoder's context"):
        explainer(images[0], candidate_labels=["blue", too_long])
    with pytest.raises(ValueError, match="hypothesis_template"):
        explainer(images[0], candidate_labels=LABELS, hypothesis_template="a photo")
    with pytest.raises(TypeError, match="Cannot explain"):
        explainer(np.zeros((8, 8, 3)), candidate_labels=LABELS)
    with pytest.raises(ValueError, match="needs a ShapleyCLIPModel"):
        pipeline(
            "zero-shot-image-shapley-explanation",
            model=CLIPModel(tiny_clip_config()),
            tokenizer=explainer.tokenizer,
            image_processor=explainer.image_processor,
        )


# --------------------------------------------------------------------------------------
# The saved directory carries the pipeline as remote code
# --------------------------------------------------------------------------------------

# The pipeline's file and what it imports, beside the model's own code files.
PIPELINE_CODE_FILES = (
    "pipeline_shapley_clip.py",
    "configuration_shapley_clip.py",
    "pipeline_shapley.py",
    "configuration_shapley.py",
    "image_loading.py",
    "heatmap.py",
)
CUSTOM_PIPELINE_ENTRY = {
    "impl": "pipeline_shapley_clip.ZeroShotImageShapleyExplanationPipeline",
    "pt": ["AutoModelForZeroShotImageClassification"],
    "type": "multimodal",
}

REMOTE_CHILD = r"""
import json

import numpy as np
import torch
from transformers import pipeline

torch.set_num_threads(1)
model_dir, io_dir = sys.argv[1], sys.argv[2]
request = json.loads(open(os.path.join(io_dir, "request.json")).read())
info = {"blocked": BLOCKED}
try:
    pipeline("zero-shot-image-shapley-explanation", model=model_dir)
    info["without_trust"] = "loaded"
except ValueError as error:
    info["without_trust"] = str(error)
explainer = pipeline(
    "zero-shot-image-shapley-explanation", model=model_dir, trust_remote_code=True
)
results = []
for path in request["images"]:
    entries = explainer(
        path, candidate_labels=request["labels"], hypothesis_template=request["template"]
    )
    for entry in entries:
        heatmap = entry.pop("heatmap")
        np.save(os.path.join(io_dir, f"heatmap_{len(results)}_{entry['label_id']}.npy"),
                np.asarray(heatmap))
    results.append(entries)
info["pipeline_module"] = type(explainer).__module__
info["model_module"] = type(explainer.model).__module__
info["hf_shapley_modules"] = loaded_hf_shapley_modules()
info["src_on_path"] = src_on_path()
with open(os.path.join(io_dir, "child.json"), "w") as f:
    json.dump({"info": info, "results": results}, f)
"""


@pytest.fixture(scope="module")
def saved_dir(explainer, tmp_path_factory):
    """The explainer's model saved as examples/train_clip.py saves one: model, tokenizer and
    image processor in one directory."""
    path = tmp_path_factory.mktemp("zero_shot_remote") / "model"
    explainer.model.save_pretrained(path)
    explainer.tokenizer.save_pretrained(path)
    explainer.image_processor.save_pretrained(path)
    return path


def test_saved_directory_carries_the_zero_shot_pipeline(saved_dir):
    config = json.loads((saved_dir / "config.json").read_text())
    assert config["custom_pipelines"] == {
        "zero-shot-image-shapley-explanation": CUSTOM_PIPELINE_ENTRY
    }
    for file in PIPELINE_CODE_FILES:
        assert (saved_dir / file).is_file(), file
        assert absolute_package_imports(saved_dir / file) == [], file
    # In this process the installed pipeline serves the task (no trust_remote_code needed),
    # and the loaded config forgets the entry, which saving writes again.
    loaded = pipeline("zero-shot-image-shapley-explanation", model=str(saved_dir))
    assert type(loaded) is hf_shapley.ZeroShotImageShapleyExplanationPipeline
    assert getattr(loaded.model.config, "custom_pipelines", None) is None
    loaded.model.save_pretrained(saved_dir.parent / "again")
    again = json.loads((saved_dir.parent / "again" / "config.json").read_text())
    assert again["custom_pipelines"] == config["custom_pipelines"]
    assert (saved_dir.parent / "again" / "pipeline_shapley_clip.py").is_file()


def test_pipeline_runs_as_remote_code_without_the_package(saved_dir, images, tmp_path):
    io_dir = tmp_path / "io"
    io_dir.mkdir()
    paths = []
    for i, image in enumerate(images[:2]):
        paths.append(str(io_dir / f"image{i}.png"))
        image.save(paths[-1])
    request = {"images": paths, "labels": LABELS, "template": TEMPLATE}
    (io_dir / "request.json").write_text(json.dumps(request))
    proc = run_without_package(REMOTE_CHILD, [str(saved_dir), str(io_dir)], tmp_path)
    assert proc.returncode == 0, proc.stderr[-4000:]
    child = json.loads((io_dir / "child.json").read_text())
    info = child["info"]
    assert info["blocked"], "the child could import hf_shapley: the block is not effective"
    assert info["hf_shapley_modules"] == [] and not info["src_on_path"]
    assert "trust_remote_code=True" in info["without_trust"]
    assert info["pipeline_module"].startswith("transformers_modules"), info
    assert info["model_module"].startswith("transformers_modules"), info

    # The expected values: the installed pipeline on the same saved directory and image files.
    expected = pipeline("zero-shot-image-shapley-explanation", model=str(saved_dir))
    assert len(child["results"]) == len(paths)
    for i, (path, entries) in enumerate(zip(paths, child["results"], strict=True)):
        reference = expected(path, candidate_labels=LABELS, hypothesis_template=TEMPLATE)
        assert [e["label_id"] for e in entries] == [e["label_id"] for e in reference]
        for entry, ref in zip(entries, reference, strict=True):
            heatmap = np.asarray(ref.pop("heatmap"))
            assert entry == ref, (i, entry["label"])  # scores, logits, attributions: exact
            child_heatmap = np.load(io_dir / f"heatmap_{i}_{entry['label_id']}.npy")
            np.testing.assert_array_equal(child_heatmap, heatmap)
    # The explanations are not trivial: the labels' attributions differ.
    grids = [np.array(e["attributions"]) for e in child["results"][0]]
    assert max(np.abs(g - grids[0]).max() for g in grids) > 1e-4
