"""Evaluation of explanations (docs/evaluation.md): truth, faithfulness, localization, baselines.

* :mod:`.truth`: the true Shapley values of a model's own game (exact for ``P <= 16``, converged
  KernelSHAP above) and agreement with them (per-image Pearson and Spearman r with bootstrap
  intervals, relative L2; the predicted class and the others), and how far the game is from
  additive (:func:`interaction_share`).
* :mod:`.estimators`: the Shapley value estimators the truth is computed with (exact
  enumeration and paired KernelSHAP) of a model's game (:func:`model_game`).
* :mod:`.agreement`: the report of the faithfulness targets: agreement on the predicted
  class's centered logit (per-image Pearson and Spearman r, pooled relative error) against a
  KernelSHAP truth on many images and exact enumeration on a few.
* :mod:`.clip_agreement`: the same for a self-explaining CLIP's image-text scores, on each
  image's caption, other captions and label prompts (exact, or converged KernelSHAP).
* :mod:`.faithfulness`: insertion and deletion curves and AUCs at player level (through the
  value function) and at pixel level (baseline replacement, RISE), AOPC, sensitivity-n, and
  how much of the way from a random order to the truth's order a map goes (:func:`ranking_share`).
* :mod:`.localization`: pointing game and AUROC against object masks.
* :mod:`.retrieval`: image-text R@1 and the deletion R@1 protocol of a dual encoder, and
  :class:`CLIPTextScores`, which lets every tool above explain CLIP scores (a text per "class").
* :mod:`.explainers`: baseline explainers with one interface, returning player-level maps.
* :mod:`.stats`: the statistics: one row-wise Pearson r (:func:`pearson_rows`), tie ranks, the
  bootstrap interval of a mean and the Wilson interval of an accuracy (:func:`wilson_interval`);
  through scipy (the ``eval`` extra), imported only when one of them runs.
* ``METRIC_PATH``: an ``evaluate`` module wrapping the aggregations, loadable offline by path:
  ``evaluate.load(METRIC_PATH, "agreement" | "curves" | "localization")``.
"""

import os

from .agreement import (
    TRUTH_EVALUATIONS,
    TRUTH_TOLERANCE,
    KernelTruth,
    centered_class_values,
    centred_class_values,
    check_truth_budget,
    converged_kernel_truth,
    map_summary,
    measure_agreement,
    pooled_relative_error,
)
from .clip_agreement import (
    CLIPKernelTruth,
    clip_score_game,
    converged_clip_truth,
    measure_clip_agreement,
)
from .explainers import (
    AttentionRolloutExplainer,
    Explainer,
    GradCamExplainer,
    IntegratedGradientsExplainer,
    KernelShapExplainer,
    LeaveOneOutExplainer,
    RandomExplainer,
    ShapleyValuesExplainer,
    coalition_cost,
    pool_to_players,
)
from .faithfulness import (
    aopc,
    area_under_curve,
    curve_masks,
    model_coalition_values,
    pixel_curve,
    player_curve,
    player_pixel_index,
    random_order_auc,
    ranking_share,
    removal_drops,
    sample_removal_subsets,
    sensitivity_n,
    sensitivity_n_from_drops,
)
from .influence import VoteInfluence, vote_influence
from .localization import mask_auroc, mask_to_players, pointing_game
from .retrieval import (
    CLIPTextScoreOutput,
    CLIPTextScores,
    DeletionRecall,
    RetrievalHits,
    deletion_recall_at_1,
    retrieval_hits,
)
from .stats import bootstrap_mean_interval, pearson_rows, rank_with_ties, wilson_interval
from .truth import (
    ModelTruth,
    ShapleyAgreement,
    exact_model_shapley_values,
    interaction_share,
    map_agreement,
    model_shapley_truth,
    other_classes_agreement,
    shapley_agreement,
    shapley_values_from_table,
    tabulate_game,
)

METRIC_PATH = os.path.join(os.path.dirname(__file__), "metrics", "shapley_faithfulness")

__all__ = [
    "METRIC_PATH",
    "TRUTH_EVALUATIONS",
    "TRUTH_TOLERANCE",
    "KernelTruth",
    "check_truth_budget",
    "converged_kernel_truth",
    "centered_class_values",
    "centred_class_values",
    "map_summary",
    "measure_agreement",
    "measure_clip_agreement",
    "CLIPKernelTruth",
    "clip_score_game",
    "converged_clip_truth",
    "pooled_relative_error",
    "AttentionRolloutExplainer",
    "CLIPTextScoreOutput",
    "CLIPTextScores",
    "DeletionRecall",
    "Explainer",
    "GradCamExplainer",
    "IntegratedGradientsExplainer",
    "KernelShapExplainer",
    "LeaveOneOutExplainer",
    "ModelTruth",
    "RandomExplainer",
    "RetrievalHits",
    "ShapleyAgreement",
    "ShapleyValuesExplainer",
    "VoteInfluence",
    "aopc",
    "area_under_curve",
    "bootstrap_mean_interval",
    "coalition_cost",
    "curve_masks",
    "deletion_recall_at_1",
    "exact_model_shapley_values",
    "interaction_share",
    "map_agreement",
    "mask_auroc",
    "mask_to_players",
    "model_coalition_values",
    "model_shapley_truth",
    "other_classes_agreement",
    "pearson_rows",
    "pixel_curve",
    "player_curve",
    "player_pixel_index",
    "random_order_auc",
    "ranking_share",
    "pointing_game",
    "pool_to_players",
    "rank_with_ties",
    "removal_drops",
    "retrieval_hits",
    "sample_removal_subsets",
    "sensitivity_n",
    "sensitivity_n_from_drops",
    "shapley_agreement",
    "shapley_values_from_table",
    "tabulate_game",
    "vote_influence",
    "wilson_interval",
]
