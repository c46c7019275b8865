"""The model card of a self-explaining classifier.

:func:`render_model_card` fills the package's model card template
(``templates/shapley_model_card.md``) from a model's config and, optionally, its evaluation
metrics, and returns a ``huggingface_hub.ModelCard`` whose YAML front matter carries the Hub
metadata (pipeline tag, library, tags, base model, data sets and a ``model-index`` with the
metrics). Its table of training settings lists the objective settings ``ShapleyConfig`` declares
(``configuration_shapley.OBJECTIVE_SETTINGS``, with their card labels). Rendering is offline.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from importlib import resources
from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from ..models.configuration_shapley import OBJECTIVE_SETTINGS

__all__ = ["EXAMPLE_FIGURE", "MODEL_CARD_TEMPLATE", "render_model_card"]

#: File name of the example explanation written beside the model card.
EXAMPLE_FIGURE = "explanation_example.png"

#: Package resource path of the default template (inside the installed package).
MODEL_CARD_TEMPLATE = "templates/shapley_model_card.md"

BASE_TAGS = (
    "hf-shapley",
    "shapley-values",
    "explainability",
    "self-explaining",
    "image-shapley-explanation",
)
TASK = "image-classification"

# Prefixes the Trainer and evaluation scripts put on metric names; stripped before matching.
_METRIC_PREFIXES = ("eval_", "test_")
_NUM_IMAGES_KEYS = ("num_eval_images", "num_test_images", "num_images", "eval_samples", "samples")
_SPLIT_KEYS = ("eval_split", "split", "dataset_split")
_CI_SUFFIX = "_ci95"

# Display names of the faithfulness metrics of the evaluation protocol (docs/evaluation.md).
_PRETTY_METRICS = {
    # hf_shapley.evaluation.measure_agreement (the main job): predicted class, centered logit.
    "pearson_r": "Pearson r with the Shapley values of the model's game (predicted class)",
    "spearman_r": "Spearman r with the Shapley values of the model's game (predicted class)",
    "pooled_relative_error": "Pooled relative error vs the Shapley values (0 = exact)",
    "raw_pearson_r": "Pearson r on raw logits (includes the class-common direction)",
    "exact_pearson_r": "Pearson r with exact Shapley values (first images)",
    "exact_spearman_r": "Spearman r with exact Shapley values (first images)",
    "exact_pooled_relative_error": "Pooled relative error vs exact Shapley values",
    "truth_error_vs_exact": "Pooled error of the KernelSHAP truth vs exact",
    "truth_estimated_error": "Estimated pooled error of the KernelSHAP truth itself",
    "pearson_r_other": "Pearson r with ground-truth Shapley values (other classes)",
    "relative_l2": "Median relative L2 error vs ground-truth Shapley values",
    "insertion_auc": "Insertion AUC (player level)",
    "deletion_auc": "Deletion AUC (player level)",
    "pixel_insertion_auc": "Insertion AUC (pixel level)",
    "pixel_deletion_auc": "Deletion AUC (pixel level)",
    "aopc": "AOPC (most relevant first)",
    "sensitivity_n": "Sensitivity-n",
    "pointing_game": "Pointing game",
    "mask_auroc": "Mask AUROC",
}


def _template_text(template_path: str | os.PathLike | None) -> str:
    if template_path is not None:
        with open(template_path, encoding="utf-8") as f:
            return f.read()
    return resources.files(__package__).joinpath(MODEL_CARD_TEMPLATE).read_text(encoding="utf-8")


def _config_of(model_or_config: Any) -> Any:
    """The ``ShapleyConfig`` of a classifier (or the config itself); ``TypeError`` for anything
    else, the self-explaining CLIP included: the card and its template describe a classifier."""
    config = getattr(model_or_config, "config", model_or_config)
    model_type = getattr(config, "model_type", None)
    if model_type == "shapley_clip":
        raise TypeError(
            "The model cards of hf_shapley.publishing describe ShapleyForImageClassification models; "
            "a ShapleyCLIPModel (a dual encoder) has none yet. Save it with "
            "model.save_pretrained(directory) (weights, config, model and zero-shot pipeline "
            "code) and write its README yourself."
        )
    if model_type != "shapley" or getattr(config, "backbone_config", None) is None:
        raise TypeError(
            "render_model_card needs a ShapleyForImageClassification or a ShapleyConfig with a "
            f"backbone_config; got {type(model_or_config).__name__}."
        )
    return config


def _strip_prefix(key: str) -> str:
    for prefix in _METRIC_PREFIXES:
        if key.startswith(prefix):
            return key[len(prefix) :]
    return key


def _as_float(name: str, value: Any) -> float:
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"metric {name!r} must be a number; got {value!r}.") from None
    if not math.isfinite(out):
        raise ValueError(f"metric {name!r} must be finite; got {value!r}.")
    return out


def _as_interval(name: str, value: Any) -> tuple[float, float] | None:
    if value is None:
        return None
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or len(value) != 2:
        raise ValueError(f"{name!r} must be a (low, high) pair; got {value!r}.")
    low, high = (_as_float(name, v) for v in value)
    if low > high:
        raise ValueError(f"{name!r} must have low <= high; got {value!r}.")
    return low, high


def _fraction(name: str, value: Any) -> float:
    out = _as_float(name, value)
    if not 0.0 <= out <= 1.0:
        raise ValueError(f"{name!r} must be a fraction in [0, 1]; got {value!r}.")
    return out


def _percent(value: float) -> str:
    return f"{100.0 * value:.2f}%"


def _percent_interval(interval: tuple[float, float] | None) -> str | None:
    if interval is None:
        return None
    return f"[{100.0 * interval[0]:.2f}%, {100.0 * interval[1]:.2f}%]"


def _number(value: float) -> str:
    return f"{value:.4g}"


def _faithfulness_note(metrics: Mapping[str, Any] | None) -> str | None:
    """What the faithfulness rows were measured on (the main job's metrics.json keys)."""
    if not metrics or not metrics.get("faithfulness_truth"):
        return None
    text = (
        "the predicted class's logit centered over classes (the part softmax sees), on "
        f"{metrics.get('faithfulness_num_images', '?')} test images; truth: "
        f"{metrics['faithfulness_truth']}"
    )
    exact = metrics.get("faithfulness_num_exact_images")
    if exact:
        text += f", and exact enumeration of every coalition on the first {exact} (`exact_` rows)"
    if metrics.get("faithfulness_withheld"):
        text += f". No agreement against the KernelSHAP truth: {metrics['faithfulness_withheld']}"
    return text


def _parse_metrics(metrics: Mapping[str, Any] | None) -> dict[str, Any]:
    """Normalize the ``metrics`` argument (see :func:`render_model_card`)."""
    parsed: dict[str, Any] = {
        "accuracy": None,
        "accuracy_ci95": None,
        "plain_accuracy": None,
        "plain_accuracy_ci95": None,
        "num_images": None,
        "split": None,
        "faithfulness": [],  # (key, value, interval)
    }
    if not metrics:
        return parsed
    flat = {_strip_prefix(str(k)): v for k, v in metrics.items()}
    for key in ("accuracy", "plain_accuracy"):
        if flat.get(key) is not None:
            parsed[key] = _fraction(key, flat[key])
            parsed[key + _CI_SUFFIX] = _as_interval(key + _CI_SUFFIX, flat.get(key + _CI_SUFFIX))
    for key in _NUM_IMAGES_KEYS:
        if flat.get(key) is not None:
            parsed["num_images"] = int(flat[key])
            break
    for key in _SPLIT_KEYS:
        if flat.get(key) is not None:
            parsed["split"] = str(flat[key])
            break
    faithfulness = flat.get("faithfulness") or {}
    if not isinstance(faithfulness, Mapping):
        raise ValueError(
            f"metrics['faithfulness'] must be a dict; got {type(faithfulness).__name__}."
        )
    for key, value in faithfulness.items():
        key = str(key)
        if key.endswith(_CI_SUFFIX) or value is None:
            continue
        interval = _as_interval(key + _CI_SUFFIX, faithfulness.get(key + _CI_SUFFIX))
        parsed["faithfulness"].append((key, _as_float(key, value), interval))
    return parsed


def _removal(backbone_config: Any) -> str | None:
    """The family's removal ("token_removal" or "pixel_baseline"); None for an unknown one."""
    try:
        from ..models.backbones import get_adapter

        return get_adapter(backbone_config).removal
    except Exception:
        return None


def _removal_text(backbone_config: Any) -> str:
    removal = _removal(backbone_config)
    if removal is None:  # an unknown family: describe removal generically
        return "the backbone family's removal operation"
    if removal == "token_removal":
        return "dropping the patch's tokens after the position embedding"
    return "replacing the patch's pixels with a baseline value"


def _objective_rows(config: Any) -> list[tuple[str, str]]:
    """The card's settings table: the model's setup, then every objective setting that has a
    card label and matters for this config, in the order ``ShapleyConfig`` declares them
    (``OBJECTIVE_SETTINGS``: labels and formats come from there, not from here)."""

    def get(name: str, default: Any = None) -> Any:
        return getattr(config, name, default)

    rows: list[tuple[str, Any]] = [
        ("Prediction mode", f"`{get('prediction_mode')}`"),
        (
            "Players grid (h, w)",
            str(tuple(get("players_grid"))) if get("players_grid") else "token grid",
        ),
        ("Shapley head hidden size (0 = linear)", get("head_hidden_size")),
    ]
    for setting in OBJECTIVE_SETTINGS:
        value = get(setting.name)
        if setting.label is None or value is None or not setting.is_used(config):
            continue
        rows.append((setting.label, setting.card_value(value)))
    if get("prediction_mode") == "backbone_head":
        rows.append(("Shapley head attention layers", get("head_num_layers")))
        rows.append(("Shapley head width (0 = the backbone's)", get("head_width", 0)))
        rows.append(
            (
                "Shapley head reads",
                "the backbone's final features"
                if not get("head_reads_hidden_states")
                else "every depth of the backbone and the attention each token received"
                + (" from the class token" if get("head_attention_from") == "class" else "")
                if get("head_reads_attention")
                else "every depth of the backbone"
                if _removal(get("backbone_config")) != "pixel_baseline"
                else "every stage of the backbone, averaged over each final cell",
            )
        )
        rows.append(("Backbone trained", get("train_backbone")))
    if get("hf_shapley_version"):
        rows.append(("hf-shapley version", get("hf_shapley_version")))
    return [(name, str(value)) for name, value in rows if value is not None]


def _labels_text(config: Any, limit: int = 20) -> str:
    id2label = getattr(config, "id2label", None) or {}
    labels = [str(id2label[k]) for k in sorted(id2label, key=int)]
    if not labels:
        return "not named"
    shown = ", ".join(labels[:limit])
    return shown + (f", ... ({len(labels) - limit} more)" if len(labels) > limit else "")


def _guess_base_model(backbone_config: Any) -> str | None:
    """The backbone's Hub id when the config records one (not a local path)."""
    name = getattr(backbone_config, "_name_or_path", "") or ""
    if name.count("/") == 1 and not os.path.exists(name) and not name.startswith((".", "/")):
        return name
    return None


def _format_num_parameters(model_or_config: Any) -> str | None:
    if not hasattr(model_or_config, "parameters"):
        return None
    n = sum(p.numel() for p in model_or_config.parameters())
    for unit, scale in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f}{unit}"
    return str(n)


def render_model_card(
    model_or_config: Any,
    *,
    repo_id: str | None = None,
    dataset_name: str | None = None,
    base_model: str | None = None,
    metrics: Mapping[str, Any] | None = None,
    example_image: str | None = None,
    training_hyperparameters: Mapping[str, Any] | None = None,
    license: str | None = None,
    template_path: str | os.PathLike | None = None,
    **template_kwargs: Any,
) -> ModelCard:
    """Render the model card of a self-explaining model (offline).

    Args:
        model_or_config: A ``ShapleyForImageClassification`` (its parameter count is shown) or
            its ``ShapleyConfig``.
        repo_id: Hub id or local directory shown in the usage snippet and used as the model's
            name. Default: the config's ``_name_or_path``, else ``"path/to/model"``.
        dataset_name: The training/evaluation data set (a Hub data set id where there is one);
            goes to the ``datasets`` metadata and the model-index.
        base_model: Hub id of the pretrained backbone. Default: the backbone config's
            ``_name_or_path`` when it looks like a Hub id.
        metrics: Evaluation results; every entry is optional and a section is rendered only
            when it has something to show. Keys (a leading ``eval_``/``test_`` is ignored, so a
            Trainer metrics dict can be passed; unknown keys are ignored):

            * ``accuracy``: top-1 accuracy as a fraction; ``accuracy_ci95``: its 95% interval
              ``(low, high)``.
            * ``plain_accuracy`` / ``plain_accuracy_ci95``: a plain classifier of the same
              backbone and data, from the same evaluation script.
            * ``num_eval_images`` (or ``num_test_images``, ``eval_samples``) and ``eval_split``
              (or ``split``; default ``"test"``).
            * ``faithfulness``: a dict ``name -> value`` with optional ``name + "_ci95"``
              intervals, e.g. ``pearson_r``, ``relative_l2``, ``insertion_auc``,
              ``deletion_auc``, ``aopc``, ``pointing_game``, ``mask_auroc`` (known names get
              readable titles; others are shown as given).

            Accuracy and each faithfulness value also go to the card's ``model-index``.
        example_image: Path of an example heatmap, relative to the model directory (as it
            will be in the repository), shown in an "Example explanation" section.
        training_hyperparameters: Optional ``name -> value`` table (learning rate, epochs, ...).
        license: License identifier for the metadata (e.g. ``"apache-2.0"``).
        template_path: A custom Jinja template; default: the packaged
            ``hf_shapley/publishing/templates/shapley_model_card.md``.
        **template_kwargs: Extra or overriding template variables. The template receives
            ``card_data``, ``model_id``, ``model_name``, ``backbone_type``, ``base_model``,
            ``image_size``, ``players_grid_text``, ``num_players_text``, ``prediction_mode``,
            ``num_labels``, ``labels_text``, ``num_parameters``, ``dataset_name``,
            ``removal_text``, ``objective_rows``, ``training_rows``, ``has_evaluation``,
            ``accuracy_text``, ``accuracy_ci_text``, ``eval_set_text``,
            ``plain_accuracy_text``, ``plain_accuracy_ci_text``, ``faithfulness_rows`` and
            ``example_image``.

    Returns:
        A ``huggingface_hub.ModelCard``; ``card.save(path)`` writes it, ``ModelCard.load``
        reads it back with the metadata in ``card.data``.
    """
    config = _config_of(model_or_config)
    backbone_config = config.backbone_config
    backbone_type = str(getattr(backbone_config, "model_type", "unknown"))
    model_id = repo_id or getattr(config, "_name_or_path", "") or "path/to/model"
    model_name = os.path.basename(os.path.normpath(model_id)) or model_id
    base_model = base_model or _guess_base_model(backbone_config)
    parsed = _parse_metrics(metrics)
    split = parsed["split"] or "test"

    eval_results = []
    dataset_id = dataset_name or "custom"
    dataset_title = dataset_name or "custom evaluation set"
    common = dict(
        task_type=TASK,
        task_name="Image Classification",
        dataset_type=dataset_id,
        dataset_name=dataset_title,
        dataset_split=split,
    )
    if parsed["accuracy"] is not None:
        eval_results.append(
            EvalResult(
                **common,
                metric_type="accuracy",
                metric_value=parsed["accuracy"],
                metric_name="Accuracy",
            )
        )
    for key, value, _ in parsed["faithfulness"]:
        eval_results.append(
            EvalResult(
                **common,
                metric_type=key,
                metric_value=value,
                metric_name=_PRETTY_METRICS.get(key, key),
            )
        )

    tags = [*BASE_TAGS, TASK]
    if backbone_type not in tags:
        tags.append(backbone_type)
    card_data = ModelCardData(
        model_name=model_name,
        pipeline_tag=TASK,
        library_name="transformers",
        tags=tags,
        base_model=base_model,
        datasets=[dataset_name] if dataset_name else None,
        license=license,
        metrics=["accuracy"] if parsed["accuracy"] is not None else None,
        eval_results=eval_results or None,
    )

    players_grid = getattr(config, "players_grid", None)
    if players_grid:
        grid_h, grid_w = (int(s) for s in players_grid)
        players_grid_text = f"{grid_h} x {grid_w}"
        num_players_text = str(grid_h * grid_w)
    else:
        players_grid_text, num_players_text = "token grid", "one per token"
    # ResNet-style configs have no image size: the ShapleyConfig carries it for those families.
    image_size = getattr(config, "image_size", None) or getattr(backbone_config, "image_size", None)
    if isinstance(image_size, (list, tuple)):
        image_size_text = " x ".join(str(s) for s in image_size) + " px"
    else:
        image_size_text = (
            f"{image_size} x {image_size} px" if image_size else "see the image processor"
        )

    eval_set_text = f"the {split} split of {dataset_name}" if dataset_name else f"the {split} set"
    if parsed["num_images"]:
        eval_set_text += f" ({parsed['num_images']:,} images)"
    faithfulness_rows = [
        (
            _PRETTY_METRICS.get(key, key),
            _number(value),
            "" if ci is None else f"[{_number(ci[0])}, {_number(ci[1])}]",
        )
        for key, value, ci in parsed["faithfulness"]
    ]
    accuracy_text = None if parsed["accuracy"] is None else _percent(parsed["accuracy"])
    plain_text = None if parsed["plain_accuracy"] is None else _percent(parsed["plain_accuracy"])
    variables = dict(
        model_id=model_id,
        model_name=model_name,
        backbone_type=backbone_type,
        base_model=base_model,
        image_size=image_size_text,
        players_grid_text=players_grid_text,
        num_players_text=num_players_text,
        prediction_mode=getattr(config, "prediction_mode", "shapley_sum"),
        frozen_classifier=getattr(config, "prediction_mode", None) == "backbone_head"
        and not getattr(config, "train_backbone", True),
        num_labels=getattr(config, "num_labels", None),
        labels_text=_labels_text(config),
        num_parameters=_format_num_parameters(model_or_config),
        dataset_name=dataset_name,
        removal_text=_removal_text(backbone_config),
        objective_rows=_objective_rows(config),
        training_rows=[(str(k), str(v)) for k, v in (training_hyperparameters or {}).items()],
        has_evaluation=bool(accuracy_text or plain_text or faithfulness_rows),
        accuracy_text=accuracy_text,
        accuracy_ci_text=_percent_interval(parsed["accuracy_ci95"]),
        eval_set_text=eval_set_text,
        plain_accuracy_text=plain_text,
        plain_accuracy_ci_text=_percent_interval(parsed["plain_accuracy_ci95"]),
        faithfulness_rows=faithfulness_rows,
        faithfulness_note=_faithfulness_note(metrics),
        example_image=example_image,
    )
    variables.update(template_kwargs)
    return ModelCard.from_template(
        card_data, template_str=_template_text(template_path), **variables
    )
