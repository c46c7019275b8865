"""Publishing a self-explaining model to the Hub.

Publishing a complete repository has one route::

    from hf_shapley.publishing import push_to_hub

    push_to_hub(model, "my-org/vit-shapley", example_image="cat.jpg", metrics=metrics)

:func:`push_to_hub` ``(model, repo_id, ...)`` uploads, in one commit, everything a user of the
model needs: weights, config with ``auto_map`` and ``custom_pipelines``, the model and pipeline
code (for ``trust_remote_code=True``), image processor, model card and example heatmap.
Publishing depends on the model, never the other way: ``model.push_to_hub(repo_id, ...)`` is
transformers' generic ``PreTrainedModel.push_to_hub`` (weights, config, model and pipeline
code, transformers' generic card, no example). ``Trainer.push_to_hub`` (``--push_to_hub``)
uploads the Trainer's output folder with the Trainer's own generic model card. To publish a
training run, train and save it, then call :func:`push_to_hub` (``examples/train.py`` does so).

:func:`save_for_hub` writes the same complete folder locally (for ``hf upload`` later), and
with ``space_directory=`` the folder of a Gradio Space that runs the demo (``hf_shapley.demo``)
against the model; ``push_to_hub(..., space_repo_id=...)`` publishes that Space too;
:func:`write_model_card` completes a directory ``model.save_pretrained`` or
``Trainer.save_model`` already wrote. Nothing here talks to the Hub except :func:`push_to_hub`.
"""

from __future__ import annotations

import importlib.util
import os
from typing import Any

from .model_card import EXAMPLE_FIGURE, _config_of, render_model_card

__all__ = ["HubOfflineError", "check_online", "push_to_hub", "save_for_hub", "write_model_card"]


class HubOfflineError(RuntimeError):
    """Raised before any network call when the Hub is switched off (``HF_HUB_OFFLINE=1``)."""


def check_online(repo_id: str) -> None:
    """Raise :class:`HubOfflineError` at once if a push to ``repo_id`` cannot reach the Hub."""
    from huggingface_hub import constants

    if constants.is_offline_mode():
        raise HubOfflineError(
            f"Cannot push to {repo_id!r}: HF_HUB_OFFLINE=1 is set, so the Hub is switched off. "
            "Unset HF_HUB_OFFLINE (and log in with `hf auth login`) to publish, or write the "
            "repository folder only with hf_shapley.publishing.save_for_hub(model, directory) and upload "
            "it later with `hf upload`."
        )


def _write_example_figure(model: Any, image: Any, directory: str, top_k: int) -> str:
    """Explain ``image`` and save the picture beside the card; return its file name."""
    from ..models.image_loading import load_rgb_image

    rgb = load_rgb_image(image)
    path = os.path.join(directory, EXAMPLE_FIGURE)
    if importlib.util.find_spec("matplotlib") is None:
        # Without matplotlib: the heatmap of the top label alone, through the model's pipeline
        # (numpy + Pillow).
        from ..models.pipeline_shapley import ImageShapleyExplanationPipeline

        pipe = ImageShapleyExplanationPipeline(model=model, image_processor=model.image_processor)
        pipe(rgb, top_k=1)[0]["heatmap"].save(path)
        return EXAMPLE_FIGURE
    from ..visualization import plot_explanation, save_figure

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
    from ..demo.space import DEFAULT_REQUIREMENT, write_space

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
