"""Interactive demo of a self-explaining model: a Gradio app, ready for a Hugging Face Space.

Run it on a trained model (a local directory or a Hub id)::

    pip install "hf-shapley[demo]"
    python -m hf_shapley.demo --model outputs/shapley-vit-shapes

or from Python: ``hf_shapley.demo.build_demo(model).launch()``. Drop an image: the page shows
its top classes and, for any class chosen, the heatmap at the image's size, the grid of
per-patch values, the base value and the efficiency check, exactly as the
``image-shapley-explanation`` pipeline returns them (one model pass per image, every class).

A ``ShapleyCLIPModel`` directory gets its own page: type labels, see each one's map; the image
is read once, and other labels cost no image pass.

Files (one concept each): ``explainer.py`` (the pipeline call and its cache, no Gradio),
``app.py`` (the page), ``clip_explainer.py`` and ``clip_app.py`` (the same for CLIP), ``faithfulness.py`` (the model's agreement figures and warning),
``examples.py`` (built-in example images), ``space.py`` (the Space folder),
``dependencies.py`` (the optional Gradio import), ``__main__.py`` (the command line).

Neither ``import hf_shapley`` nor ``import hf_shapley.demo`` imports Gradio: building the app
does, and without it raises an ``ImportError`` naming ``pip install "hf-shapley[demo]"``.
"""

from .app import ClassOutputs, ShapleyDemo, UploadOutputs, build_demo, launch_demo, launch_options
from .dependencies import DEMO_EXTRA_INSTALL, require_gradio
from .explainer import (
    MAX_IMAGE_PIXELS,
    ClassView,
    DemoExplainer,
    DemoInputError,
    ImageExplanation,
    format_values,
)
from .faithfulness import (
    MAX_POOLED_RELATIVE_ERROR,
    MIN_PEARSON_R,
    ModelMetrics,
    load_model_metrics,
)
from .space import write_space

__all__ = [
    "DEMO_EXTRA_INSTALL",
    "MAX_IMAGE_PIXELS",
    "MAX_POOLED_RELATIVE_ERROR",
    "MIN_PEARSON_R",
    "ClassOutputs",
    "ClassView",
    "DemoExplainer",
    "DemoInputError",
    "ImageExplanation",
    "ModelMetrics",
    "ShapleyDemo",
    "UploadOutputs",
    "build_demo",
    "format_values",
    "launch_demo",
    "launch_options",
    "load_model_metrics",
    "require_gradio",
    "write_space",
]
