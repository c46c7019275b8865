"""The Gradio page: upload an image, see its top classes and the explanation of any class.

>>> from hf_shapley.demo import build_demo
>>> build_demo("outputs/shapley-vit-shapes").launch()

or ``python -m hf_shapley.demo --model outputs/shapley-vit-shapes``. The page's callbacks are
the methods of :class:`ShapleyDemo` (plain values in, plain values out), so they are tested
without a browser; :meth:`ShapleyDemo.build` lays them out with Gradio, imported only there.
"""

from __future__ import annotations

import os
import tempfile
import time
from typing import Any, NamedTuple

from .dependencies import require_gradio
from .examples import write_examples
from .explainer import ClassView, DemoExplainer, DemoInputError, ImageExplanation
from .faithfulness import ModelMetrics, load_model_metrics

__all__ = ["ClassOutputs", "ShapleyDemo", "UploadOutputs", "build_demo", "launch_demo"]

#: Classes listed with their probabilities (all of them for small label sets).
TOP_CLASSES = 5
#: Gradio refuses larger uploads before they reach the demo.
MAX_UPLOAD_SIZE = "100mb"

# Element ids the browser test and users' CSS can rely on.
ELEMENT_IDS = {
    "upload": "hf-shapley-upload",
    "status": "hf-shapley-status",
    "label": "hf-shapley-label",
    "chooser": "hf-shapley-class",
    "heatmap": "hf-shapley-heatmap",
    "table": "hf-shapley-values",
    "efficiency": "hf-shapley-efficiency",
    "metrics": "hf-shapley-metrics",
}
# Heatmaps of small images (the built-in data set's are 64 px) are scaled up for display,
# pixels kept sharp; the served file keeps the image's own size.
PAGE_CSS = f"""
#{ELEMENT_IDS["heatmap"]} img {{
    width: 100%; height: 100%; max-height: 480px; object-fit: contain;
    image-rendering: pixelated;
}}
"""
NO_MODEL_PASS_NOTE = (
    "Switching class costs no extra model pass: the one pass that classified the image "
    "explained every class, and the page keeps all of them."
)


class UploadOutputs(NamedTuple):
    """What an upload sets on the page (``None`` clears a component)."""

    status: str
    probabilities: dict[str, float] | None
    chosen_class: str | None
    heatmap: Any
    values: Any
    efficiency: str
    explanation: ImageExplanation | None


class ClassOutputs(NamedTuple):
    """What choosing a class sets on the page."""

    heatmap: Any
    values: Any
    efficiency: str


def _values_frame(table: list[list[str]], width: int) -> Any:
    """The values table: a "row" column, then one column per column of patches."""
    import pandas as pd

    columns = ["row"] + [f"col {j + 1}" for j in range(width)]
    return pd.DataFrame(
        [[f"row {i + 1}", *row] for i, row in enumerate(table)], columns=columns, dtype=object
    )


def _error_box(message: str) -> str:
    return f"⚠️ **This file could not be explained.** {message}"


def render_view(view: ClassView, width: int) -> ClassOutputs:
    """One class's (or label's) heatmap, values table and efficiency check, for the page."""
    return ClassOutputs(
        view.heatmap, _values_frame(view.table(), width), view.efficiency_markdown()
    )


def upload_input(gr: Any, examples: list[str], examples_label: str | None = None) -> Any:
    """The upload box, with the example images below it (both pages)."""
    upload = gr.File(
        label="Image file (drop it here or click)",
        type="filepath",
        file_count="single",
        elem_id=ELEMENT_IDS["upload"],
    )
    if examples:
        label = {} if examples_label is None else {"label": examples_label}
        gr.Examples(
            examples=[[path] for path in examples], inputs=[upload], cache_examples=False, **label
        )
    return upload


def explanation_outputs(gr: Any, players_grid: tuple[int, int]) -> tuple[Any, Any, Any]:
    """The heatmap, the efficiency check and the values table (both pages), empty."""
    h, w = players_grid
    heatmap = gr.Image(
        type="pil",
        format="png",
        height=400,
        label="Heatmap over the image (original size)",
        interactive=False,
        elem_id=ELEMENT_IDS["heatmap"],
    )
    efficiency = gr.Markdown(elem_id=ELEMENT_IDS["efficiency"])
    values = gr.Dataframe(
        value=_values_frame([], w),
        label=f"Per-patch values ({h} x {w}, laid out as the patches)",
        interactive=False,
        elem_id=ELEMENT_IDS["table"],
    )
    return heatmap, efficiency, values


class ShapleyDemo:
    """The demo app: its callbacks and its Gradio layout.

    Args:
        model: A local model directory or Hub id, a ``ShapleyForImageClassification`` with an
            image processor, or an ``image-shapley-explanation`` pipeline.
        metrics: The model's accuracy and agreement figures: a :class:`ModelMetrics`, a
            ``metrics.json`` dict, or ``None`` to read ``metrics.json`` (else the model card)
            beside a model given by path or Hub id.
        examples: Example image paths; ``None`` writes a few test images of the built-in data
            set when the model was trained on it (none otherwise).
        title: Page title (default: the model's name).
        device: Passed to ``pipeline()`` for a path or Hub id.
        **explainer_kwargs: Passed to :class:`DemoExplainer` (``max_image_pixels``, ...).
    """

    def __init__(
        self,
        model: Any,
        *,
        metrics: ModelMetrics | dict[str, Any] | None = None,
        examples: list[str] | None = None,
        title: str | None = None,
        device: Any = None,
        **explainer_kwargs: Any,
    ):
        self.explainer = DemoExplainer(model, device=device, **explainer_kwargs)
        source = os.fspath(model) if isinstance(model, (str, os.PathLike)) else None
        if metrics is None and source is not None:
            metrics = load_model_metrics(source)
        elif isinstance(metrics, dict):
            metrics = ModelMetrics.from_dict(metrics)
        self.metrics: ModelMetrics | None = metrics
        self.model_name = source or getattr(self.explainer.config, "_name_or_path", "") or "model"
        self.title = title or f"hf-shapley: {os.path.basename(os.path.normpath(self.model_name))}"
        if examples is None:
            directory = tempfile.mkdtemp(prefix="hf-shapley-demo-examples-")
            examples = write_examples(
                directory, self.explainer.config, self.explainer.image_processor
            )
        self.examples = list(examples)

    # ------------------------------------------------------------------ text
    def intro_markdown(self) -> str:
        """The page's header: the model, what is explained and how to use the page."""
        h, w = self.explainer.players_grid
        return (
            f"# {self.title}\n\n"
            f"Model `{self.model_name}`: {len(self.explainer.labels)} classes, the image split "
            f"into {h} x {w} = {h * w} patches. Its logit for each class *is* a base value plus "
            "one value per patch (trained to be the patch's Shapley value), computed in the "
            "same forward pass as the prediction.\n\n"
            "Drop an image file (or pick an example): the page shows the top classes, then, for "
            f"the class you choose, the heatmap (red = evidence for the class, blue = against), "
            f"the {h} x {w} values and the efficiency check. {NO_MODEL_PASS_NOTE}"
        )

    def metrics_markdown(self) -> str:
        """The model's accuracy and agreement figures, with a warning below the targets."""
        if self.metrics is None:
            return (
                "**How faithful are these explanations?** No `metrics.json` or model card figures "
                "were found for this model: their agreement with the Shapley values of the "
                "model's game is unknown."
            )
        return self.metrics.to_markdown()

    # ------------------------------------------------------------------ callbacks
    def render_class(self, explanation: ImageExplanation, label: str | int | None) -> ClassOutputs:
        """The chosen class's heatmap, values table and efficiency check (no model pass)."""
        return render_view(self.explainer.view(explanation, label), self.explainer.players_grid[1])

    def empty_values(self) -> Any:
        """The values table with its headers and no rows (no image yet, or a bad file)."""
        return _values_frame([], self.explainer.players_grid[1])

    def _cleared(self, status: str) -> UploadOutputs:
        """A page with only a status: no classes, heatmap, values or cached explanation."""
        return UploadOutputs(status, None, None, None, self.empty_values(), "", None)

    def on_upload(self, path: str | None) -> UploadOutputs:
        """Explain an uploaded file (one model pass, every class) and show its top class.

        Never raises for a bad file: the message goes to the status box and the app goes on.
        """
        if not path:
            return self._cleared("Drop an image file or pick an example.")
        start = time.perf_counter()
        try:
            explanation = self.explainer.explain(path)
        except DemoInputError as error:
            return self._cleared(_error_box(str(error)))
        except Exception as error:  # keep serving whatever the model or a file does
            return self._cleared(_error_box(f"Unexpected error ({type(error).__name__}: {error})."))
        seconds = time.perf_counter() - start
        width, height = explanation.image.size
        top = explanation.top_label
        status = (
            f"Explained **{explanation.file_name}** ({width} x {height} px) for all "
            f"{len(explanation.entries)} classes in one model pass ({seconds:.2f} s). "
            f"Top class: **{top}**."
        )
        if explanation.notes:
            status += "\n\nℹ️ " + " ".join(explanation.notes)
        shown = self.render_class(explanation, top)
        return UploadOutputs(
            status,
            explanation.probabilities(TOP_CLASSES),
            top,
            shown.heatmap,
            shown.values,
            shown.efficiency,
            explanation,
        )

    def on_class(self, label: str | None, explanation: ImageExplanation | None) -> ClassOutputs:
        """Show another class of the current image from the cache (no model pass)."""
        if explanation is None or not label:
            return ClassOutputs(None, self.empty_values(), "")
        return self.render_class(explanation, label)

    # ------------------------------------------------------------------ layout
    def build(self) -> Any:
        """Lay the page out with Gradio; returns the ``gradio.Blocks`` (call ``.launch()``)."""
        gr = require_gradio()
        labels = self.explainer.labels
        with gr.Blocks(title=self.title, analytics_enabled=False) as blocks:
            gr.Markdown(self.intro_markdown())
            with gr.Row():
                with gr.Column(scale=1):
                    upload = upload_input(
                        gr,
                        self.examples,
                        "Test images of the built-in data set (never seen in training)",
                    )
                    status = gr.Markdown(
                        "Drop an image file or pick an example.", elem_id=ELEMENT_IDS["status"]
                    )
                    probabilities = gr.Label(
                        num_top_classes=min(TOP_CLASSES, len(labels)),
                        label="Top classes",
                        elem_id=ELEMENT_IDS["label"],
                    )
                    gr.Markdown(self.metrics_markdown(), elem_id=ELEMENT_IDS["metrics"])
                with gr.Column(scale=2):
                    chooser = gr.Dropdown(
                        choices=labels,
                        value=None,
                        label="Explain class (any class, not only the top ones)",
                        info=NO_MODEL_PASS_NOTE,
                        elem_id=ELEMENT_IDS["chooser"],
                    )
                    heatmap, efficiency, values = explanation_outputs(
                        gr, self.explainer.players_grid
                    )
            explanation = gr.State(None)
            upload.change(
                self.on_upload,
                inputs=[upload],
                outputs=[status, probabilities, chooser, heatmap, values, efficiency, explanation],
            )
            chooser.input(
                self.on_class, inputs=[chooser, explanation], outputs=[heatmap, values, efficiency]
            )
        return blocks


def build_demo(model: Any, **kwargs: Any) -> Any:
    """Build the demo page for a self-explaining model; returns a ``gradio.Blocks``.

    Args:
        model: A local model directory or Hub id, a ``ShapleyForImageClassification`` with an
            image processor, or an ``image-shapley-explanation`` pipeline; or a
            ``ShapleyCLIPModel`` directory or zero-shot pipeline (the page where labels are
            typed, :class:`~hf_shapley.demo.clip_app.ShapleyCLIPDemo`).
        **kwargs: See :class:`ShapleyDemo` (``metrics``, ``examples``, ``title``, ``device``,
            ``max_image_pixels``).

    Raises:
        ImportError: Without Gradio, saying ``pip install "hf-shapley[demo]"``.
    """
    require_gradio()  # fail before loading the model
    return demo_for(model, **kwargs).build()


def _is_clip(model: Any) -> bool:
    """Whether ``model`` (a directory, a Hub id, a model or a pipeline) is a ShapleyCLIPModel."""
    if isinstance(model, (str, os.PathLike)):
        from transformers import AutoConfig

        try:
            return AutoConfig.from_pretrained(os.fspath(model)).model_type == "shapley_clip"
        except (OSError, ValueError):
            return False  # the classifier page says what is wrong with it
    config = getattr(getattr(model, "model", model), "config", None)
    return getattr(config, "model_type", None) == "shapley_clip"


def demo_for(model: Any, **kwargs: Any) -> Any:
    """The page for ``model``: :class:`ShapleyDemo` for a classifier,
    :class:`~hf_shapley.demo.clip_app.ShapleyCLIPDemo` for a self-explaining CLIP."""
    if _is_clip(model):
        from .clip_app import ShapleyCLIPDemo

        kwargs.pop("metrics", None)
        return ShapleyCLIPDemo(model, **kwargs)
    return ShapleyDemo(model, **kwargs)


def launch_options(demo: Any = None) -> dict[str, Any]:
    """The ``Blocks.launch`` options of the demo: example files served, no server-side
    rendering (no Node.js needed), the upload size cap and the page's CSS."""
    options: dict[str, Any] = {
        "ssr_mode": False,
        "max_file_size": MAX_UPLOAD_SIZE,
        "css": PAGE_CSS,
    }
    if demo is not None and demo.examples:
        options["allowed_paths"] = sorted({os.path.dirname(p) for p in demo.examples})
    return options


def launch_demo(
    model: Any,
    *,
    host: str | None = None,
    port: int | None = None,
    prevent_thread_lock: bool = False,
    **kwargs: Any,
) -> Any:
    """Build and launch the demo; returns the ``gradio.Blocks`` (see :func:`build_demo`).

    ``host`` and ``port`` default to Gradio's (``127.0.0.1``, ``7860``, or the
    ``GRADIO_SERVER_NAME``/``GRADIO_SERVER_PORT`` variables that Spaces set).
    """
    require_gradio()
    demo = demo_for(model, **kwargs)
    blocks = demo.build()
    blocks.launch(
        server_name=host,
        server_port=port,
        prevent_thread_lock=prevent_thread_lock,
        **launch_options(demo),
    )
    return blocks
