"""The recipes that make a classifier self-explaining, by name: each one's settings in one place.

* ``frozen`` (the default): the classifier is kept as it is, its predictions bit-identical; only
  the Shapley head trains, on the classifier's fixed game
  (``configuration_shapley.FROZEN_EXPLAINER_DEFAULTS``).
* ``joint`` (the seed paper's): the classifier fine-tunes with cross-entropy and the Shapley
  regression together, the regression's gradient reaching the backbone; its predictions change.

On the main job's classifiers, joint fine-tuning lost accuracy and calibration against plain
fine-tuning at equal steps and made the game less additive and harder to explain
(``benchmarks/README.md``, "Joint against frozen"): ``frozen`` is the default.
"""

from __future__ import annotations

from typing import Any

RECIPES: dict[str, dict[str, Any]] = {
    "frozen": {"train_backbone": False},
    "joint": {"train_backbone": True, "detach_head_features": False},
}


def recipe_settings(name: str) -> dict[str, Any]:
    """The ``from_backbone`` settings of the recipe ``name`` (a copy).

    Raises:
        ValueError: no recipe of that name.
    """
    if name not in RECIPES:
        raise ValueError(f"No recipe {name!r}: choose one of {', '.join(map(repr, RECIPES))}.")
    return dict(RECIPES[name])


__all__ = ["RECIPES", "recipe_settings"]
