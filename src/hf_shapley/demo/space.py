"""A Hugging Face Space folder that runs the demo against a model on the Hub.

:func:`write_space` writes three files:

* ``app.py``: the same app as ``python -m hf_shapley.demo``, for the model's Hub id (the
  ``HF_SHAPLEY_MODEL`` environment variable overrides it, e.g. to try the folder locally);
* ``requirements.txt``: ``hf-shapley[demo]``. The package is not on PyPI yet, so until it
  is, pass ``requirement="hf-shapley[demo] @ git+https://github.com/<owner>/hf-shapley@<ref>"``
  (any pip requirement line: a git URL, a wheel URL);
* ``README.md``: the Space card, whose YAML metadata says ``sdk: gradio``, the Gradio version
  (``sdk_version``, the installed one), ``app_file: app.py`` and ``models: [model id]``.

Writing needs neither Gradio nor the network. ``hf_shapley.publishing.save_for_hub(...,
space_directory=...)`` writes the folder beside a model and ``hf_shapley.publishing.push_to_hub(...,
space_repo_id=...)`` publishes it as a Space.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from importlib import metadata

__all__ = [
    "DEFAULT_REQUIREMENT",
    "MODEL_ENV_VARIABLE",
    "SPACE_FILES",
    "gradio_sdk_version",
    "write_space",
]

#: The requirement line for the package (see the module docstring for a git URL).
DEFAULT_REQUIREMENT = "hf-shapley[demo]"
#: Environment variable that points a written ``app.py`` at another model (a Hub id or path).
MODEL_ENV_VARIABLE = "HF_SHAPLEY_MODEL"
SPACE_FILES = ("app.py", "requirements.txt", "README.md")
# The Gradio version the demo was tested with: the Space's sdk_version where Gradio is not
# installed in the process writing the folder.
TESTED_GRADIO_VERSION = "6.31.0"

_APP_TEMPLATE = '''"""Gradio Space: explain images with the self-explaining model {model_id}.

Written by hf_shapley.demo.space.write_space: the same app as
`python -m hf_shapley.demo --model {model_id}`.
Set {env}=<Hub id or directory> to run it against another model.
"""

import os

from hf_shapley.demo import ShapleyDemo, launch_options

MODEL_ID = os.environ.get({env_literal}, {model_literal})

app = ShapleyDemo(MODEL_ID)
demo = app.build()

if __name__ == "__main__":
    demo.launch(**launch_options(app))
'''

_REQUIREMENTS_TEMPLATE = """\
# hf-shapley with its demo extra (Gradio). The package is not on PyPI yet: until it is, this
# line must name a source pip can install it from, e.g.
#   hf-shapley[demo] @ git+https://github.com/<owner>/hf-shapley@<commit>
# (hf_shapley.demo.space.write_space(..., requirement=...) writes it).
{requirement}
"""

_README_BODY = """
# {title}

Interactive demo of [{model_id}](https://huggingface.co/{model_id}), a self-explaining image
classifier made with hf-shapley: its logit for each class is a base value
plus one value per image patch, trained to be the patch's Shapley value, so the explanation
comes from the same forward pass as the prediction.

Upload an image to see its top classes; choose any class to see its heatmap, the per-patch
values and the efficiency check (logit = base value + sum of the values). Switching class
costs no extra model pass.

Run it locally: `pip install -r requirements.txt && python app.py`
(or `python -m hf_shapley.demo --model {model_id}`).
"""


def gradio_sdk_version() -> str:
    """The installed Gradio's version (read without importing it), else the tested one."""
    try:
        return metadata.version("gradio")
    except metadata.PackageNotFoundError:
        return TESTED_GRADIO_VERSION


def _space_title(model_id: str) -> str:
    return f"hf-shapley {model_id.rstrip('/').split('/')[-1]}"


def write_space(
    directory: str | os.PathLike,
    model_id: str,
    *,
    title: str | None = None,
    requirement: str = DEFAULT_REQUIREMENT,
    extra_requirements: Sequence[str] = (),
    sdk_version: str | None = None,
    license: str | None = None,
) -> str:
    """Write a Gradio Space folder (``app.py``, ``requirements.txt``, ``README.md``).

    Args:
        directory: Where to write (created if missing; the three files are overwritten).
        model_id: The model's Hub id (``org/name``), which the Space loads and its card links.
        title: The Space's title (default ``"hf-shapley <name>"``).
        requirement: The pip requirement line of the package (default ``hf-shapley[demo]``;
            a git URL until the package is on PyPI, see the module docstring).
        extra_requirements: Further requirement lines (e.g. a pinned ``torch``).
        sdk_version: The Space's Gradio version (default: the installed one).
        license: A license identifier for the card's metadata.

    Returns:
        The directory, as a string.
    """
    from huggingface_hub import SpaceCard, SpaceCardData

    if not model_id or not str(model_id).strip():
        raise ValueError("write_space needs the model's Hub id (org/name).")
    if "\n" in requirement or not requirement.strip():
        raise ValueError(f"requirement must be one pip requirement line; got {requirement!r}.")
    directory = os.fspath(directory)
    os.makedirs(directory, exist_ok=True)
    title = title or _space_title(model_id)
    with open(os.path.join(directory, "app.py"), "w", encoding="utf-8") as f:
        f.write(
            _APP_TEMPLATE.format(
                model_id=model_id,
                env=MODEL_ENV_VARIABLE,
                env_literal=json.dumps(MODEL_ENV_VARIABLE),
                model_literal=json.dumps(model_id),
            )
        )
    lines = [requirement.strip(), *(r.strip() for r in extra_requirements if r.strip())]
    with open(os.path.join(directory, "requirements.txt"), "w", encoding="utf-8") as f:
        f.write(_REQUIREMENTS_TEMPLATE.format(requirement="\n".join(lines)))
    card_data = SpaceCardData(
        title=title,
        sdk="gradio",
        sdk_version=sdk_version or gradio_sdk_version(),
        python_version=f"{sys.version_info.major}.{sys.version_info.minor}",
        app_file="app.py",
        models=[model_id],
        license=license,
        tags=["hf-shapley", "shapley-values", "explainability", "image-classification"],
    )
    content = f"---\n{card_data.to_yaml()}\n---\n" + _README_BODY.format(
        title=title, model_id=model_id
    )
    SpaceCard(content).save(os.path.join(directory, "README.md"))
    return directory
