"""Evaluation of self-explaining models: ground-truth Shapley values and agreement metrics."""

from .truth import exact_model_shapley_values, shapley_agreement, tabulate_game

__all__ = ["exact_model_shapley_values", "shapley_agreement", "tabulate_game"]
