"""The Gradio page of a self-explaining CLIP: upload an image, type labels, see each label's map.

>>> from hf_shapley.demo import build_demo
>>> build_demo("outputs/my-clip-shapley").launch()   # a ShapleyCLIPModel directory

The image is read once (one pass of the vision side); typing other labels and choosing among
them costs no image pass (:class:`~hf_shapley.demo.clip_explainer.CLIPDemoExplainer`). As on
the classifier page, the callbacks are plain methods, tested without a browser, and
:meth:`ShapleyCLIPDemo.build` lays them out with Gradio, imported only there.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, NamedTuple

from .app import (
    ELEMENT_IDS,
    ClassOutputs,
    _error_box,
    _values_frame,
    explanation_outputs,
    render_view,
    upload_input,
)
from .clip_explainer import CLIPDemoExplainer, CLIPImage
from .dependencies import require_gradio
from .explainer import DemoInputError, ImageExplanation

__all__ = ["LabelOutputs", "ShapleyCLIPDemo"]

DEFAULT_LABELS = "a cat, a dog, a car"
NO_IMAGE_PASS_NOTE = (
    "Changing the labels or the label shown costs no image pass: the image was read once, and "
    "each label is a dot product with its per-patch vectors."
)


class LabelOutputs(NamedTuple):
    """What an upload or new labels set on the page (``None`` clears a component)."""

    status: str
    probabilities: dict[str, float] | None
    labels: list[str]
    chosen_label: str | None
    heatmap: Any
    values: Any
    efficiency: str
    image: CLIPImage | None
    explanation: ImageExplanation | None


class ShapleyCLIPDemo:
    """The CLIP demo: its callbacks and its Gradio layout.

    Args:
        model: A ``ShapleyCLIPModel`` directory or Hub id, or a
            ``zero-shot-image-shapley-explanation`` pipeline.
        labels: The labels shown before the user types any (comma-separated).
        examples: Example image paths.
        title: Page title (default: the model's name).
        device: Passed to ``pipeline()`` for a path or Hub id.
        **explainer_kwargs: Passed to :class:`CLIPDemoExplainer` (``hypothesis_template``...).
    """

    def __init__(
        self,
        model: Any,
        *,
        labels: str = DEFAULT_LABELS,
        examples: list[str] | None = None,
        title: str | None = None,
        device: Any = None,
        **explainer_kwargs: Any,
    ):
        self.explainer = CLIPDemoExplainer(model, device=device, **explainer_kwargs)
        source = os.fspath(model) if isinstance(model, (str, os.PathLike)) else None
        self.model_name = source or getattr(self.explainer.config, "_name_or_path", "") or "model"
        self.title = title or f"hf-shapley: {os.path.basename(os.path.normpath(self.model_name))}"
        self.default_labels = labels
        self.examples = list(examples or [])
        metrics = Path(source, "metrics.json") if source else None
        self.metrics = json.loads(metrics.read_text()) if metrics and metrics.is_file() else None

    # ------------------------------------------------------------------ text
    def intro_markdown(self) -> str:
        h, w = self.explainer.players_grid
        return (
            f"# {self.title}\n\n"
            f"Model `{self.model_name}`: a CLIP whose score for any text *is* a base value plus "
            f"one value per patch of a {h} x {w} grid (trained to be the patch's Shapley value).\n\n"
            "Drop an image, type labels separated by commas: the page shows each label's "
            "probability among them and, for the label you choose, the heatmap (red = evidence "
            f"for the label, blue = against), the values and the efficiency check. "
            f"{NO_IMAGE_PASS_NOTE}"
        )

    def metrics_markdown(self) -> str:
        """Zero-shot accuracy and agreement from the model's ``metrics.json``, if any."""
        faithfulness = (self.metrics or {}).get("faithfulness")
        if not faithfulness:
            return (
                "**How faithful are these explanations?** No agreement figures were found for "
                "this model (`metrics.json` of `examples/train_clip.py`)."
            )
        lines = ["**How faithful are these explanations?** Against exact Shapley values:"]
        parts = [
            ("its own captions", faithfulness),
            ("label prompts", faithfulness.get("label_prompts")),
        ]
        for name, part in parts:
            if part:
                lines.append(
                    f"- {name}: r {part['pearson_r']:.3f}, pooled error "
                    f"{part['pooled_relative_error']:.3f} ({part['num_images']} images)"
                )
        return "\n".join(lines)

    # ------------------------------------------------------------------ callbacks
    def render_label(self, explanation: ImageExplanation, label: str | None) -> ClassOutputs:
        """The chosen label's heatmap, values table and efficiency check (no model pass)."""
        return render_view(self.explainer.view(explanation, label), self.explainer.players_grid[1])

    def empty_values(self) -> Any:
        """The values table with its headers and no rows (no image or labels yet, or bad ones)."""
        return _values_frame([], self.explainer.players_grid[1])

    def _cleared(self, status: str, image: CLIPImage | None = None) -> LabelOutputs:
        return LabelOutputs(status, None, [], None, None, self.empty_values(), "", image, None)

    def _labelled(self, image: CLIPImage, labels: str, status: str) -> LabelOutputs:
        try:
            explanation = self.explainer.explain(image, labels)
        except DemoInputError as error:
            return self._cleared(f"⚠️ {error}", image)
        top = explanation.top_label
        shown = self.render_label(explanation, top)
        names = [str(explanation.entries[k]["label"]) for k in sorted(explanation.entries)]
        return LabelOutputs(
            status + f" Top label: **{top}**.",
            explanation.probabilities(),
            names,
            top,
            shown.heatmap,
            shown.values,
            shown.efficiency,
            image,
            explanation,
        )

    def on_upload(self, path: str | None, labels: str) -> LabelOutputs:
        """Read an uploaded file (the one image pass) and explain the typed labels."""
        if not path:
            return self._cleared("Drop an image file or pick an example.")
        start = time.perf_counter()
        try:
            image = self.explainer.read(path)
        except DemoInputError as error:
            return self._cleared(_error_box(str(error)))
        except Exception as error:  # keep serving whatever the model or a file does
            return self._cleared(_error_box(f"Unexpected error ({type(error).__name__}: {error})."))
        width, height = image.image.size
        status = (
            f"Read **{image.file_name}** ({width} x {height} px) in one image pass "
            f"({time.perf_counter() - start:.2f} s)."
        )
        if image.notes:
            status += "\n\nℹ️ " + " ".join(image.notes)
        return self._labelled(image, labels, status)

    def on_labels(self, labels: str, image: CLIPImage | None) -> LabelOutputs:
        """Explain other labels for the image already read: no image pass."""
        if image is None:
            return self._cleared("Drop an image file or pick an example.")
        return self._labelled(
            image, labels, f"New labels for **{image.file_name}** (no image pass)."
        )

    def on_label(self, label: str | None, explanation: ImageExplanation | None) -> ClassOutputs:
        """Show another of the typed labels (no model pass)."""
        if explanation is None or not label:
            return ClassOutputs(None, self.empty_values(), "")
        return self.render_label(explanation, label)

    # ------------------------------------------------------------------ layout
    def build(self) -> Any:
        """Lay the page out with Gradio; returns the ``gradio.Blocks`` (call ``.launch()``)."""
        gr = require_gradio()

        def to_page(outputs: LabelOutputs) -> tuple:
            chooser = gr.Dropdown(choices=outputs.labels, value=outputs.chosen_label)
            return (
                outputs.status, outputs.probabilities, chooser, outputs.heatmap, outputs.values,
                outputs.efficiency, outputs.image, outputs.explanation,
            )  # fmt: skip

        with gr.Blocks(title=self.title, analytics_enabled=False) as blocks:
            gr.Markdown(self.intro_markdown())
            with gr.Row():
                with gr.Column(scale=1):
                    upload = upload_input(gr, self.examples)
                    labels = gr.Textbox(
                        value=self.default_labels,
                        label="Labels (comma-separated; press Enter)",
                        elem_id="hf-shapley-labels",
                    )
                    status = gr.Markdown(
                        "Drop an image file or pick an example.", elem_id=ELEMENT_IDS["status"]
                    )
                    probabilities = gr.Label(label="Labels", elem_id=ELEMENT_IDS["label"])
                    gr.Markdown(self.metrics_markdown(), elem_id=ELEMENT_IDS["metrics"])
                with gr.Column(scale=2):
                    chooser = gr.Dropdown(
                        choices=[], value=None, label="Explain label",
                        info=NO_IMAGE_PASS_NOTE, elem_id=ELEMENT_IDS["chooser"],
                    )  # fmt: skip
                    heatmap, efficiency, values = explanation_outputs(
                        gr, self.explainer.players_grid
                    )
            image_state, explanation_state = gr.State(None), gr.State(None)
            outputs = [
                status, probabilities, chooser, heatmap, values, efficiency, image_state,
                explanation_state,
            ]  # fmt: skip
            upload.change(
                lambda path, text: to_page(self.on_upload(path, text)),
                inputs=[upload, labels],
                outputs=outputs,
            )
            labels.submit(
                lambda text, image: to_page(self.on_labels(text, image)),
                inputs=[labels, image_state],
                outputs=outputs,
            )
            chooser.input(
                self.on_label,
                inputs=[chooser, explanation_state],
                outputs=[heatmap, values, efficiency],
            )
        return blocks
