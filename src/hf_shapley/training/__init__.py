"""Training: the Trainer of a self-explaining classifier or dual encoder, and the plain
classifier phase of the two-phase recipe."""

from .plain_classifier import train_plain_classifier
from .recipes import RECIPES, recipe_settings
from .trainer import (
    ShapleyImageCollator,
    ShapleyTrainer,
    ShapleyTrainingArguments,
    add_example_index,
)
from .trainer_clip import ShapleyCLIPTrainer

__all__ = [
    "RECIPES",
    "ShapleyCLIPTrainer",
    "ShapleyImageCollator",
    "ShapleyTrainer",
    "ShapleyTrainingArguments",
    "add_example_index",
    "recipe_settings",
    "train_plain_classifier",
]
