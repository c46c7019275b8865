"""The modules' former paths, from before the package had its folders: deprecated aliases,
kept for one release, that import the module from its new place with a ``FutureWarning``."""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
import warnings

_MODELS = [
    "backbones",
    "coalitions",
    "configuration_shapley",
    "configuration_shapley_clip",
    "games_shapley",
    "heatmap",
    "image_loading",
    "loss_shapley",
    "modeling_shapley",
    "modeling_shapley_clip",
    "objective",
    "objective_clip",
    "pipeline_shapley",
    "pipeline_shapley_clip",
]
MOVED_MODULES = {
    **{f"hf_shapley.{name}": f"hf_shapley.models.{name}" for name in _MODELS},
    "hf_shapley.estimators": "hf_shapley.evaluation.estimators",
    "hf_shapley.trainer": "hf_shapley.training.trainer",
    "hf_shapley.trainer_clip": "hf_shapley.training.trainer_clip",
    "hf_shapley.plain_classifier": "hf_shapley.training.plain_classifier",
    "hf_shapley.hub": "hf_shapley.publishing",
}


class _MovedModuleFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds ``hf_shapley.<old name>`` and hands back the module at its new path."""

    def __init__(self) -> None:
        self.own_specs: dict[str, importlib.machinery.ModuleSpec] = {}

    def find_spec(self, fullname, path=None, target=None):
        if fullname not in MOVED_MODULES:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec):
        new = MOVED_MODULES[spec.name]
        warnings.warn(
            f"{spec.name} is now {new}; the old path will be removed in the next release.",
            FutureWarning,
            stacklevel=2,
        )
        module = importlib.import_module(new)
        self.own_specs[spec.name] = module.__spec__
        return module

    def exec_module(self, module) -> None:
        # The module was executed at its new path. The import system has just given it the
        # alias's spec: give back its own (importlib.resources reads packages from it).
        module.__spec__ = self.own_specs.pop(module.__spec__.name)


def install() -> None:
    if not any(isinstance(finder, _MovedModuleFinder) for finder in sys.meta_path):
        sys.meta_path.append(_MovedModuleFinder())
