"""hf-shapley: self-explaining Hugging Face vision models.

Importing the package registers ``ShapleyConfig`` and ``ShapleyForImageClassification`` with
the transformers auto classes, so ``AutoModelForImageClassification.from_pretrained`` loads a
saved model without ``trust_remote_code``, and ``ShapleyCLIPConfig`` / ``ShapleyCLIPModel`` (the
self-explaining dual encoder) with ``AutoModel`` and ``AutoModelForZeroShotImageClassification``;
saved directories also carry the model code, so a process without the package loads them with
``trust_remote_code=True``. It also registers the ``image-shapley-explanation`` and
``zero-shot-image-shapley-explanation`` pipeline tasks.
"""

from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForImageClassification,
    AutoModelForZeroShotImageClassification,
)

from . import _moved_modules
from .models.configuration_shapley import HF_SHAPLEY_VERSION, ShapleyConfig
from .models.configuration_shapley_clip import ShapleyCLIPConfig
from .models.modeling_shapley import (
    ShapleyForImageClassification,
    ShapleyImageClassifierOutput,
    ShapleyPreTrainedModel,
)
from .models.modeling_shapley_clip import (
    ShapleyCLIPImageExplanation,
    ShapleyCLIPModel,
    ShapleyCLIPOutput,
)
from .models.pipeline_shapley import (
    PIPELINE_TASK,
    ImageShapleyExplanationPipeline,
    register_pipeline,
)
from .models.pipeline_shapley_clip import (
    ZERO_SHOT_PIPELINE_TASK,
    ZeroShotImageShapleyExplanationPipeline,
    register_zero_shot_pipeline,
)

__version__ = HF_SHAPLEY_VERSION
# hf_shapley.modeling_shapley and the other former module paths, for one release.
_moved_modules.install()

AutoConfig.register(ShapleyConfig.model_type, ShapleyConfig, exist_ok=True)
AutoModel.register(ShapleyConfig, ShapleyForImageClassification, exist_ok=True)
AutoModelForImageClassification.register(
    ShapleyConfig, ShapleyForImageClassification, exist_ok=True
)
# Saved directories carry the code files and an auto_map, for trust_remote_code loading.
ShapleyConfig.register_for_auto_class()
ShapleyForImageClassification.register_for_auto_class("AutoModelForImageClassification")
# The self-explaining dual encoder (image-text matching, zero-shot classification).
AutoConfig.register(ShapleyCLIPConfig.model_type, ShapleyCLIPConfig, exist_ok=True)
AutoModel.register(ShapleyCLIPConfig, ShapleyCLIPModel, exist_ok=True)
AutoModelForZeroShotImageClassification.register(ShapleyCLIPConfig, ShapleyCLIPModel, exist_ok=True)
ShapleyCLIPConfig.register_for_auto_class()
ShapleyCLIPModel.register_for_auto_class("AutoModelForZeroShotImageClassification")
# pipeline("image-shapley-explanation", model=...)
register_pipeline()
# pipeline("zero-shot-image-shapley-explanation", model=..., candidate_labels=[...])
register_zero_shot_pipeline()

# The trainer imports transformers.Trainer (and accelerate): load it on first use only.
_LAZY = {
    "ShapleyTrainer": ".training.trainer",
    "ShapleyTrainingArguments": ".training.trainer",
    "ShapleyCLIPTrainer": ".training.trainer_clip",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "PIPELINE_TASK",
    "ImageShapleyExplanationPipeline",
    "ShapleyCLIPConfig",
    "ShapleyCLIPImageExplanation",
    "ShapleyCLIPModel",
    "ShapleyCLIPOutput",
    "ShapleyCLIPTrainer",
    "ShapleyConfig",
    "ShapleyForImageClassification",
    "ShapleyImageClassifierOutput",
    "ShapleyPreTrainedModel",
    "ShapleyTrainer",
    "ShapleyTrainingArguments",
    "ZERO_SHOT_PIPELINE_TASK",
    "ZeroShotImageShapleyExplanationPipeline",
    "__version__",
]
