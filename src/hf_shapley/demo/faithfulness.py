"""How far a model's explanations can be trusted: its measured agreement figures, for the page.

A self-explaining model's per-patch values are *trained* to be the Shapley values of its own
game; how close they came is measured after training (``examples/train.py`` writes it to
``metrics.json``; the model card carries the same numbers in its ``model-index``). The demo
shows those figures beside every explanation and warns when they miss the targets of the
evaluation protocol (docs/evaluation.md): Pearson r >= :data:`MIN_PEARSON_R` and pooled
relative error <= :data:`MAX_POOLED_RELATIVE_ERROR` against the Shapley values of the model's
own game.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "MAX_POOLED_RELATIVE_ERROR",
    "MIN_PEARSON_R",
    "ModelMetrics",
    "load_model_metrics",
]

#: Agreement targets (docs/evaluation.md): below this Pearson r, or above this pooled relative
#: error, the page warns that the values are not faithful Shapley values of the model's game.
MIN_PEARSON_R = 0.95
MAX_POOLED_RELATIVE_ERROR = 0.25

METRICS_FILE = "metrics.json"
MODEL_CARD_FILE = "README.md"

# (key in the faithfulness dict, label on the page); the first present error key is judged.
_SHOWN = (
    ("pearson_r", "Pearson r (centered logit of the predicted class)"),
    ("spearman_r", "Spearman r"),
    ("pooled_relative_error", "Pooled relative error"),
    ("relative_l2", "Median relative L2 error"),
    ("exact_pearson_r", "Pearson r against exact enumeration"),
    ("exact_pooled_relative_error", "Pooled relative error against exact enumeration"),
)
_R_KEYS = ("pearson_r", "exact_pearson_r")
_ERROR_KEYS = ("pooled_relative_error", "exact_pooled_relative_error", "relative_l2")


def _finite(value: Any) -> float | None:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


@dataclass
class ModelMetrics:
    """The accuracy and agreement figures of a model, as measured after its training.

    Attributes:
        accuracy: Top-1 accuracy as a fraction, or ``None``.
        accuracy_ci95: Its 95% interval, or ``None``.
        faithfulness: Agreement figures by name (``pearson_r``, ``pooled_relative_error``,
            ``relative_l2``, ...) and their ``*_ci95`` intervals.
        truth: What the figures were measured against (e.g. "KernelSHAP, 2048 ...").
        num_images: Images the agreement was measured on.
        source: The file the figures were read from.
    """

    accuracy: float | None = None
    accuracy_ci95: tuple[float, float] | None = None
    faithfulness: dict[str, Any] = field(default_factory=dict)
    truth: str | None = None
    num_images: int | None = None
    source: str | None = None

    @classmethod
    def from_dict(cls, metrics: Mapping[str, Any], source: str | None = None) -> ModelMetrics:
        """From a ``metrics.json`` dict (the keys ``examples/train.py`` writes)."""
        ci = metrics.get("accuracy_ci95")
        faithfulness = metrics.get("faithfulness") or {}
        if not isinstance(faithfulness, Mapping):
            faithfulness = {}
        return cls(
            accuracy=_finite(metrics.get("accuracy")),
            accuracy_ci95=tuple(ci) if isinstance(ci, (list, tuple)) and len(ci) == 2 else None,
            faithfulness=dict(faithfulness),
            truth=metrics.get("faithfulness_truth"),
            num_images=metrics.get("faithfulness_num_images"),
            source=source,
        )

    def value(self, key: str) -> float | None:
        """An agreement figure, or ``None`` when it was not measured."""
        return _finite(self.faithfulness.get(key))

    def warnings(self) -> list[str]:
        """Why the explanations should not be read as exact Shapley values (empty if none)."""
        out = []
        for key in _R_KEYS:
            r = self.value(key)
            if r is not None:
                if r < MIN_PEARSON_R:
                    out.append(f"Pearson r {r:.3f} is below the target {MIN_PEARSON_R}")
                break
        for key in _ERROR_KEYS:
            error = self.value(key)
            if error is not None:
                if error > MAX_POOLED_RELATIVE_ERROR:
                    out.append(
                        f"the relative error {error:.3f} is above the target "
                        f"{MAX_POOLED_RELATIVE_ERROR}"
                    )
                break
        return out

    @property
    def has_agreement(self) -> bool:
        """Whether any agreement figure was measured."""
        return any(self.value(key) is not None for key in _R_KEYS + _ERROR_KEYS)

    def to_markdown(self) -> str:
        """The figures and, when they miss the targets, a warning, as Markdown for the page."""
        lines = []
        if self.accuracy is not None:
            text = f"- Accuracy: **{100 * self.accuracy:.1f}%**"
            if self.accuracy_ci95 is not None:
                low, high = self.accuracy_ci95
                text += f" [95%: {100 * low:.1f}, {100 * high:.1f}]"
            lines.append(text)
        for key, label in _SHOWN:
            value = self.value(key)
            if value is None:
                continue
            text = f"- {label}: **{value:.3f}**"
            ci = self.faithfulness.get(key + "_ci95")
            if isinstance(ci, (list, tuple)) and len(ci) == 2:
                text += f" [95%: {float(ci[0]):.3f}, {float(ci[1]):.3f}]"
            lines.append(text)
        if not lines:
            return "No accuracy or agreement figures were found for this model."
        measured = []
        if self.num_images:
            measured.append(f"{self.num_images} test images")
        if self.truth:
            measured.append(f"truth: {self.truth}")
        header = "**How faithful are these explanations?** Agreement with the Shapley values of "
        header += "the model's own game"
        if measured:
            header += f" ({'; '.join(measured)})"
        header += ":"
        parts = [header, "\n".join(lines)]
        warnings = self.warnings()
        if warnings:
            parts.append(
                "⚠️ **Not faithful enough to read as exact Shapley values:** "
                + "; ".join(warnings)
                + " (targets: r >= "
                + f"{MIN_PEARSON_R}, relative error <= {MAX_POOLED_RELATIVE_ERROR}). Read the "
                "heatmap as the model's own additive account of its logit (that identity is "
                "exact, see the efficiency check), not as exact Shapley values of its game."
            )
        elif self.has_agreement:
            parts.append(
                f"✅ Within the targets (r >= {MIN_PEARSON_R}, relative error <= "
                f"{MAX_POOLED_RELATIVE_ERROR})."
            )
        else:
            parts.append("No agreement figures were measured: faithfulness is unknown.")
        return "\n\n".join(parts)


def _from_model_card(path: str) -> ModelMetrics | None:
    """The model-index figures of a model card (``README.md``), when it has any."""
    from huggingface_hub import ModelCard

    try:
        card = ModelCard.load(path)
    except Exception:  # not a model card: nothing to show
        return None
    results = getattr(card.data, "eval_results", None) or []
    metrics: dict[str, Any] = {"faithfulness": {}}
    for result in results:
        if result.metric_type == "accuracy":
            metrics["accuracy"] = result.metric_value
        else:
            metrics["faithfulness"][result.metric_type] = result.metric_value
    found = ModelMetrics.from_dict(metrics, source=path)
    return found if found.accuracy is not None or found.has_agreement else None


def _hub_file(repo_id: str, filename: str) -> str | None:
    from huggingface_hub import hf_hub_download

    try:
        return hf_hub_download(repo_id, filename)
    except Exception:  # offline, missing file or repository: the page shows no figures
        return None


def load_model_metrics(model: str | os.PathLike) -> ModelMetrics | None:
    """Read a model's figures from ``metrics.json``, else from its model card's ``model-index``.

    Args:
        model: A local model directory or a Hub id (the files are downloaded if reachable).

    Returns:
        The figures, or ``None`` when neither file exists or holds any.
    """
    text = os.fspath(model)
    local = os.path.isdir(text)
    for filename in (METRICS_FILE, MODEL_CARD_FILE):
        path = os.path.join(text, filename) if local else _hub_file(text, filename)
        if path is None or not os.path.isfile(path):
            continue
        if filename == METRICS_FILE:
            try:
                with open(path, encoding="utf-8") as f:
                    data = json.load(f)
            except (OSError, ValueError):
                continue
            if isinstance(data, Mapping):
                return ModelMetrics.from_dict(data, source=path)
        else:
            found = _from_model_card(path)
            if found is not None:
                return found
    return None
