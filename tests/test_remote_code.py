"""A saved model loads with ``trust_remote_code=True`` in a process where hf_shapley is absent.

The parent saves five models (soft voting on ViT; backbone_head on DINOv2 with registers, the
family with the most special tokens; the pixel-baseline families ResNet (soft voting, with a
non-default baseline), ConvNeXt (backbone_head) and Swin (soft voting)), then a fresh interpreter (``sys.executable``) in which
importing ``hf_shapley`` is blocked (a meta-path finder ahead of the editable install's
finder, and the ``src`` directory removed from ``sys.path``) loads them from the saved code
files alone, offline, with its own module cache, and writes its outputs to a file.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoConfig, AutoModel, AutoModelForImageClassification

import hf_shapley
import hf_shapley.publishing
from _without_package import absolute_package_imports, run_without_package

pytestmark = pytest.mark.usefixtures("single_thread")

CODE_FILES = (
    "configuration_shapley.py",
    "modeling_shapley.py",
    "backbones.py",
    "coalitions.py",
    "objective.py",
    "loss_shapley.py",
    # The explanation pipeline and what it imports.
    "pipeline_shapley.py",
    "image_loading.py",
    "heatmap.py",
)
MODELS = {
    "vit_sum": ("vit", "shapley_sum", {}),
    "dinov2reg_head": ("dinov2_with_registers", "backbone_head", {}),
    "resnet_sum": ("resnet", "shapley_sum", {"pixel_baseline": [0.5, -0.5, 0.0]}),
    "convnext_head": ("convnext", "backbone_head", {"head_reads_hidden_states": True}),
    "swin_sum": ("swin", "shapley_sum", {}),
}

CHILD = r"""
import json

import torch
from transformers import AutoModelForImageClassification

torch.set_num_threads(1)
io_dir = sys.argv[2]
inputs = torch.load(os.path.join(io_dir, "inputs.pt"))
results, info = {}, {"blocked": BLOCKED}
for name, model_dir in json.loads(sys.argv[1]).items():
    model = AutoModelForImageClassification.from_pretrained(model_dir, trust_remote_code=True)
    model.eval()
    with torch.no_grad():
        out = model(inputs["pixel_values"])
        values = model(inputs["pixel_values"], coalition=inputs["coalition"]).logits
    model.train()
    step = model(
        inputs["pixel_values"], labels=inputs["labels"], example_index=inputs["example_index"]
    )
    step.loss.backward()
    results[name] = {
        "logits": out.logits,
        "shapley_values": out.shapley_values,
        "base_values": out.base_values,
        "coalition_values": values,
        "loss": step.loss.detach(),
    }
    info[name] = {
        "model_module": type(model).__module__,
        "config_module": type(model.config).__module__,
        "trainable": sorted(n for n, p in model.named_parameters() if p.requires_grad),
    }
info["hf_shapley_modules"] = loaded_hf_shapley_modules()
info["src_on_path"] = src_on_path()
torch.save(results, os.path.join(io_dir, "child_outputs.pt"))
with open(os.path.join(io_dir, "child_info.json"), "w") as f:
    json.dump(info, f)
"""


@pytest.fixture(scope="module")
def saved_models(tmp_path_factory, make_model):
    root = tmp_path_factory.mktemp("remote_code")
    models, dirs = {}, {}
    for name, (family, mode, extra) in MODELS.items():
        model = make_model(family, players_grid=(2, 2), prediction_mode=mode, **extra)
        dirs[name] = root / name
        model.save_pretrained(dirs[name])
        models[name] = model
    return models, dirs


def test_saved_directory_holds_code_and_auto_map(saved_models):
    _, dirs = saved_models
    for path in dirs.values():
        for file in CODE_FILES:
            assert (path / file).is_file(), file
        auto_map = json.loads((path / "config.json").read_text())["auto_map"]
        assert auto_map["AutoConfig"] == "configuration_shapley.ShapleyConfig"
        assert auto_map["AutoModel"] == "modeling_shapley.ShapleyForImageClassification"
        assert (
            auto_map["AutoModelForImageClassification"]
            == "modeling_shapley.ShapleyForImageClassification"
        )
        # The shipped files use relative imports only (no `hf_shapley` import).
        for file in CODE_FILES:
            assert absolute_package_imports(path / file) == [], file


def test_auto_classes_resolve_in_process(saved_models):
    models, dirs = saved_models
    path = dirs["vit_sum"]
    assert isinstance(AutoConfig.from_pretrained(path), hf_shapley.ShapleyConfig)
    for auto_class in (AutoModel, AutoModelForImageClassification):
        assert type(auto_class.from_pretrained(path)) is hf_shapley.ShapleyForImageClassification


def test_loads_with_trust_remote_code_without_the_package(saved_models, tmp_path):
    models, dirs = saved_models
    gen = torch.Generator().manual_seed(99)
    inputs = {
        "pixel_values": torch.randn(3, 3, 32, 32, generator=gen),
        "coalition": torch.rand(3, 5, 4, generator=gen) > 0.5,
        "labels": torch.tensor([0, 2, 1]),
        "example_index": torch.tensor([5, 6, 7]),
    }
    io_dir = tmp_path / "io"
    io_dir.mkdir()
    torch.save(inputs, io_dir / "inputs.pt")

    model_dirs = json.dumps({name: str(path) for name, path in dirs.items()})
    proc = run_without_package(CHILD, [model_dirs, str(io_dir)], tmp_path)
    assert proc.returncode == 0, proc.stderr[-4000:]

    info = json.loads((io_dir / "child_info.json").read_text())
    assert info["blocked"], "the child could import hf_shapley: the block is not effective"
    assert info["hf_shapley_modules"] == []
    assert not info["src_on_path"]
    assert (tmp_path / "hf_modules" / "transformers_modules").is_dir()

    child = torch.load(io_dir / "child_outputs.pt")
    for name, model in models.items():
        assert info[name]["model_module"].startswith("transformers_modules"), info[name]
        assert info[name]["config_module"].startswith("transformers_modules"), info[name]
        assert info[name]["trainable"] == sorted(
            n for n, p in model.named_parameters() if p.requires_grad
        )
        model.eval()
        with torch.no_grad():
            out = model(inputs["pixel_values"])
            values = model(inputs["pixel_values"], coalition=inputs["coalition"]).logits
        for key in ("logits", "shapley_values", "base_values"):
            assert torch.equal(child[name][key], getattr(out, key)), (name, key)
        assert torch.equal(child[name]["coalition_values"], values), name
        model.train()
        try:
            loss = model(
                inputs["pixel_values"],
                labels=inputs["labels"],
                example_index=inputs["example_index"],
            ).loss
        finally:
            model.eval()
        assert torch.isfinite(child[name]["loss"])
        assert torch.equal(child[name]["loss"], loss.detach()), name


def test_the_models_folder_is_the_code_a_saved_model_carries(saved_models):
    """Every file a saved model carries comes from ``hf_shapley/models``, and every file there
    imports its neighbours relatively (the folder is flat, and shippable as it is)."""
    _, dirs = saved_models
    folder = Path(hf_shapley.models.__file__).parent
    shipped = {p.name for path in dirs.values() for p in path.glob("*.py")}
    here = {p.name for p in folder.glob("*.py")} - {"__init__.py"}
    assert shipped <= here, shipped - here
    assert not [p for p in folder.iterdir() if p.is_dir() and p.name != "__pycache__"]
    for file in here:
        assert absolute_package_imports(folder / file) == [], file


def test_former_module_paths_still_import_with_a_warning():
    import importlib
    import importlib.resources
    import sys

    from hf_shapley.models import modeling_shapley

    for old in ("modeling_shapley", "hub"):  # as in a fresh process
        sys.modules.pop(f"hf_shapley.{old}", None)
        hf_shapley.__dict__.pop(old, None)
    with pytest.warns(
        FutureWarning, match=r"hf_shapley.modeling_shapley is now hf_shapley\.models"
    ):
        old = importlib.import_module("hf_shapley.modeling_shapley")
    assert old is modeling_shapley
    with pytest.warns(FutureWarning, match=r"hf_shapley.hub is now hf_shapley.publishing"):
        from hf_shapley import hub
    assert hub.push_to_hub is hf_shapley.publishing.push_to_hub
    # The module keeps its own spec: a package, whose resources (the card template) still load.
    assert hf_shapley.publishing.__spec__.name == "hf_shapley.publishing"
    assert importlib.resources.files("hf_shapley.publishing").joinpath("templates").is_dir()
