"""Model cards and publishing for self-explaining models.

Publishing a complete repository has one route::

    from hf_shapley.hub import push_to_hub

    push_to_hub(model, "my-org/vit-shapley", example_image="cat.jpg", metrics=metrics)

:func:`push_to_hub` ``(model, repo_id, ...)`` uploads, in one commit, everything a user of the
model needs: weights, config with ``auto_map`` and ``custom_pipelines``, the model and pipeline
code (for ``trust_remote_code=True``), image processor, model card and example heatmap.
Publishing depends on the model, never the other way: ``model.push_to_hub(repo_id, ...)`` is
transformers' generic ``PreTrainedModel.push_to_hub`` (weights, config, model and pipeline
code, transformers' generic card, no example). ``Trainer.push_to_hub`` (``--push_to_hub``)
uploads the Trainer's output folder with the Trainer's own generic model card. To publish a training run, train and save it, then call
:func:`push_to_hub` (``examples/train.py`` does so).

:func:`save_for_hub` writes the same complete folder locally (for ``hf upload`` later), and
with ``space_directory=`` the folder of a Gradio Space that runs the demo (``hf_shapley.demo``)
against the model; ``push_to_hub(..., space_repo_id=...)`` publishes that Space too;
:func:`write_model_card` completes a directory ``model.save_pretrained`` or
``Trainer.save_model`` already wrote. :func:`render_model_card` fills the package's model card
template (``hf_shapley/templates/shapley_model_card.md``) from a model's config and, optionally,
its evaluation metrics, and returns a ``huggingface_hub.ModelCard`` whose YAML front matter
carries the Hub metadata (pipeline tag, library, tags, base model, data sets and a
``model-index`` with the metrics). Its table of training settings lists the objective settings
``ShapleyConfig`` declares (``configuration_shapley.OBJECTIVE_SETTINGS``, with their card labels).
Rendering is offline: nothing here talks to the Hub except :func:`push_to_hub`.
"""

from __future__ import annotations

import importlib.util
import math
import os
from collections.abc import Mapping, Sequence
from importlib import resources
from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from .configuration_shapley import OBJECTIVE_SETTINGS

__all__ = [
    "EXAMPLE_FIGURE",
    "MODEL_CARD_TEMPLATE",
    "HubOfflineError",
    "check_online",
    "push_to_hub",
    "render_model_card",
    "save_for_hub",
    "write_model_card",
]

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
    return resources.files("hf_shapley").joinpath(MODEL_CARD_TEMPLATE).read_text(encoding="utf-8")


def _config_of(model_or_config: Any) -> Any:
    """The ``ShapleyConfig`` of a classifier (or the config itself); ``TypeError`` for anything
    else, the self-explaining CLIP included: the card and its template describe a classifier."""
    config = getattr(model_or_config, "config", model_or_config)
    model_type = getattr(config, "model_type", None)
    if model_type == "shapley_clip":
        raise TypeError(
            "The model cards of hf_shapley.hub describe ShapleyForImageClassification models; "
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


def _removal_text(backbone_config: Any) -> str:
    try:
        from .backbones import TokenRemovalAdapter, get_adapter

        token_removal = isinstance(get_adapter(backbone_config), TokenRemovalAdapter)
    except Exception:  # an unknown family: describe removal generically
        return "the backbone family's removal operation"
    if token_removal:
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
        rows.append(
            (
                "Shapley head reads",
                "the backbone's final features"
                if not get("head_reads_hidden_states")
                else "every depth of the backbone and the attention each token received"
                if get("head_reads_attention")
                else "every depth of the backbone",
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
            ``hf_shapley/templates/shapley_model_card.md``.
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


# ------------------------------------------------------------------------------ publishing
class HubOfflineError(RuntimeError):
    """Raised before any network call when the Hub is switched off (``HF_HUB_OFFLINE=1``)."""


def check_online(repo_id: str) -> None:
    """Raise :class:`HubOfflineError` at once if a push to ``repo_id`` cannot reach the Hub."""
    from huggingface_hub import constants

    if constants.is_offline_mode():
        raise HubOfflineError(
            f"Cannot push to {repo_id!r}: HF_HUB_OFFLINE=1 is set, so the Hub is switched off. "
            "Unset HF_HUB_OFFLINE (and log in with `hf auth login`) to publish, or write the "
            "repository folder only with hf_shapley.hub.save_for_hub(model, directory) and upload "
            "it later with `hf upload`."
        )


def _write_example_figure(model: Any, image: Any, directory: str, top_k: int) -> str:
    """Explain ``image`` and save the picture beside the card; return its file name."""
    from .image_loading import load_rgb_image

    rgb = load_rgb_image(image)
    path = os.path.join(directory, EXAMPLE_FIGURE)
    if importlib.util.find_spec("matplotlib") is None:
        # Without matplotlib: the heatmap of the top label alone, through the model's pipeline
        # (numpy + Pillow).
        from .pipeline_shapley import ImageShapleyExplanationPipeline

        pipe = ImageShapleyExplanationPipeline(model=model, image_processor=model.image_processor)
        pipe(rgb, top_k=1)[0]["heatmap"].save(path)
        return EXAMPLE_FIGURE
    from .visualization import plot_explanation, save_figure

    save_figure(plot_explanation(model, rgb, top_k=top_k), path)
    return EXAMPLE_FIGURE


def save_for_hub(
    model: Any,
    save_directory: str | os.PathLike,
    *,
    example_image: Any = None,
    example_top_k: int = 3,
    repo_id: str | None = None,
    space_directory: str | os.PathLike | None = None,
    space_requirement: str | None = None,
    **card_kwargs: Any,
) -> str:
    """Write a complete, loadable Hub repository folder for a self-explaining model.

    The folder holds: ``model.safetensors``; ``config.json`` with ``auto_map`` (AutoConfig,
    AutoModel, AutoModelForImageClassification) and ``custom_pipelines``
    (``image-shapley-explanation``); the model and pipeline code files (for
    ``trust_remote_code=True``); the image processor; ``README.md``, the model card (Hub
    metadata, usage snippet, evaluation, limitations); and, given ``example_image``, the
    picture ``explanation_example.png`` shown in the card.

    Args:
        model: A ``ShapleyForImageClassification`` with an image processor attached
            (``model.image_processor``, set by ``from_backbone`` and ``from_pretrained``).
        save_directory: Where to write (created if missing; existing files are overwritten).
        example_image: An input image (path, URL or ``PIL.Image``) to explain in the card.
        example_top_k: Labels shown in the example picture.
        repo_id: The Hub id the folder is meant for (shown in the card's usage snippet).
        space_directory: Also write a Gradio Space folder there (``app.py``,
            ``requirements.txt``, ``README.md``: :func:`hf_shapley.demo.space.write_space`),
            running the demo against ``repo_id`` (default: the folder's name).
        space_requirement: The Space's requirement line for the package (see
            ``write_space``; default ``hf-shapley[demo]``).
        **card_kwargs: Passed to :func:`render_model_card` (``metrics``, ``dataset_name``,
            ``base_model``, ``license``, ``training_hyperparameters``, ...).

    Returns:
        The directory, as a string.
    """
    if getattr(model.config, "model_type", None) != "shapley":
        raise TypeError(
            f"save_for_hub publishes ShapleyForImageClassification models; got {type(model).__name__}."
        )
    if getattr(model, "image_processor", None) is None:
        raise ValueError(
            "The model has no image processor, so the published pipeline could not preprocess "
            "images: attach one first (model.image_processor = AutoImageProcessor.from_pretrained(...))."
        )
    directory = os.fspath(save_directory)
    os.makedirs(directory, exist_ok=True)
    model.save_pretrained(directory)
    return write_model_card(
        model,
        directory,
        example_image=example_image,
        example_top_k=example_top_k,
        repo_id=repo_id,
        space_directory=space_directory,
        space_requirement=space_requirement,
        **card_kwargs,
    )


def write_model_card(
    model: Any,
    directory: str | os.PathLike,
    *,
    example_image: Any = None,
    example_top_k: int = 3,
    repo_id: str | None = None,
    space_directory: str | os.PathLike | None = None,
    space_requirement: str | None = None,
    **card_kwargs: Any,
) -> str:
    """Write ``README.md`` (and, given ``example_image``, its picture) into a model directory.

    The part of :func:`save_for_hub` after the model itself is saved: for a directory that
    ``model.save_pretrained`` (or ``Trainer.save_model``) already wrote. Arguments as there
    (``space_directory`` also writes the Space folder of the demo).
    """
    _config_of(model)  # a clear error before anything is written
    directory = os.fspath(directory)
    figure = None
    if example_image is not None:
        figure = _write_example_figure(model, example_image, directory, example_top_k)
    model_id = repo_id or os.path.basename(os.path.normpath(directory))
    card = render_model_card(model, repo_id=model_id, example_image=figure, **card_kwargs)
    card.save(os.path.join(directory, "README.md"))
    if space_directory is not None:
        _write_space(space_directory, model_id, space_requirement, card_kwargs.get("license"))
    return directory


def _write_space(
    directory: str | os.PathLike, model_id: str, requirement: str | None, license: str | None
) -> str:
    """The demo's Space folder for ``model_id`` (needs no Gradio)."""
    from .demo.space import DEFAULT_REQUIREMENT, write_space

    return write_space(
        directory, model_id, requirement=requirement or DEFAULT_REQUIREMENT, license=license
    )


def push_to_hub(
    model: Any,
    repo_id: str,
    *,
    private: bool | None = None,
    token: str | bool | None = None,
    revision: str | None = None,
    commit_message: str | None = None,
    create_pr: bool = False,
    space_repo_id: str | None = None,
    space_requirement: str | None = None,
    **save_kwargs: Any,
) -> Any:
    """Publish model, image processor, pipeline and model card to the Hub in one commit.

    The route for publishing a complete repository (see the module docstring);
    ``model.push_to_hub`` delegates here. Writes the folder of :func:`save_for_hub` (``save_kwargs`` go there: ``example_image``,
    ``metrics``, ``dataset_name``, ...) to a temporary directory, creates the repository if
    needed and uploads the folder.

    Given ``space_repo_id``, it then also publishes the demo as a Gradio Space there (the
    folder of :func:`hf_shapley.demo.space.write_space`, running against ``repo_id``;
    ``space_requirement`` is its requirement line for the package).

    Raises:
        HubOfflineError: At once, before writing anything, when ``HF_HUB_OFFLINE=1``.

    Returns:
        The ``huggingface_hub.CommitInfo`` of the model's upload.
    """
    import tempfile

    from huggingface_hub import HfApi

    check_online(repo_id)
    if space_repo_id is not None:
        check_online(space_repo_id)
    api = HfApi(token=token)
    repo_id = api.create_repo(repo_id, private=private, exist_ok=True).repo_id
    with tempfile.TemporaryDirectory() as tmp:
        save_for_hub(model, tmp, repo_id=repo_id, **save_kwargs)
        info = api.upload_folder(
            folder_path=tmp,
            repo_id=repo_id,
            revision=revision,
            commit_message=commit_message or "Upload self-explaining model (hf-shapley)",
            create_pr=create_pr,
        )
    if space_repo_id is not None:
        space_repo_id = api.create_repo(
            space_repo_id, repo_type="space", space_sdk="gradio", private=private, exist_ok=True
        ).repo_id
        with tempfile.TemporaryDirectory() as tmp:
            _write_space(tmp, repo_id, space_requirement, save_kwargs.get("license"))
            api.upload_folder(
                folder_path=tmp,
                repo_id=space_repo_id,
                repo_type="space",
                commit_message=f"Demo of {repo_id} (hf-shapley)",
            )
    return info
