"""Shapley faithfulness: an ``evaluate`` metric over per-image attribution maps and curves.

Load it by path, offline (``evaluate.load("accuracy")`` needs the Hub; a local module does not):

    import evaluate
    from hf_shapley.evaluation import METRIC_PATH
    agreement = evaluate.load(METRIC_PATH, "agreement")
    agreement.compute(predictions=phi_maps, references=truth_maps)     # (B, P) each
    curves = evaluate.load(METRIC_PATH, "curves")
    curves.compute(insertion_curves=ins, deletion_curves=dele)         # (B, P + 1) each
    localization = evaluate.load(METRIC_PATH, "localization")
    localization.compute(predictions=maps, references=object_fractions)  # (B, P) each

Each row is one image. The model-facing work (value functions, curves, the truth) is done by
the plain functions of ``hf_shapley.evaluation``; this module aggregates their per-image results
with 95% bootstrap intervals over images.
"""

import datasets
import evaluate
import torch

from hf_shapley.evaluation.faithfulness import aopc, area_under_curve
from hf_shapley.evaluation.localization import mask_auroc, pointing_game
from hf_shapley.evaluation.truth import bootstrap_mean_interval, map_agreement

_DESCRIPTION = """Faithfulness of player-level attribution maps (docs/evaluation.md of hf-shapley):
agreement with the true Shapley values (mean per-image Pearson and Spearman r with bootstrap
intervals, median relative L2), insertion/deletion AUC and AOPC from per-image curves, and
localization against object masks (pointing game, AUROC)."""

_KWARGS_DESCRIPTION = """
Configs and inputs (one row per image):
    "agreement" (default): predictions (P floats, the estimated map), references (P floats, the
        true Shapley values of the same class). Returns pearson, pearson_ci95, spearman,
        spearman_ci95, relative_l2 (median).
    "curves": insertion_curves, deletion_curves (P + 1 floats each, the score of the target class
        from 0 to P players inserted / removed). Returns insertion_auc, deletion_auc, aopc (means)
        with *_ci95 intervals.
    "localization": predictions (P floats, the map), references (P floats, the object fraction
        of each player, see hf_shapley.evaluation.mask_to_players). Returns pointing_game and
        auroc (means over images with an object) with *_ci95 intervals.
"""

_CITATION = """@inproceedings{fan2026shapley,
  title={Enhancing Interpretability for Vision Models via Shapley Value Optimization},
  author={Fan, Kanglong and Yang, Yunqiao and Ma, Chen},
  booktitle={AAAI},
  year={2026}
}"""

_FLOATS = datasets.Sequence(datasets.Value("float64"))


def _stack(rows, name: str) -> torch.Tensor:
    lengths = {len(row) for row in rows}
    if len(rows) == 0:
        raise ValueError(f"{name} is empty: pass at least one image.")
    if len(lengths) != 1:
        raise ValueError(
            f"every row of {name} must have the same length; got lengths {sorted(lengths)}."
        )
    return torch.tensor(rows, dtype=torch.float64)


def _mean_ci(values: torch.Tensor, name: str) -> dict:
    return {name: float(values.nanmean()), f"{name}_ci95": list(bootstrap_mean_interval(values))}


class ShapleyFaithfulness(evaluate.Metric):
    def _info(self):
        if self.config_name == "curves":
            features = datasets.Features({"insertion_curves": _FLOATS, "deletion_curves": _FLOATS})
        elif self.config_name in ("agreement", "localization", "default"):
            features = datasets.Features({"predictions": _FLOATS, "references": _FLOATS})
        else:
            raise KeyError(
                f"unknown config {self.config_name!r}: use 'agreement', 'curves' or 'localization'."
            )
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=features,
        )

    def _compute(
        self, predictions=None, references=None, insertion_curves=None, deletion_curves=None
    ):
        if self.config_name == "curves":
            insertion = _stack(insertion_curves, "insertion_curves")
            deletion = _stack(deletion_curves, "deletion_curves")
            return {
                **_mean_ci(area_under_curve(insertion), "insertion_auc"),
                **_mean_ci(area_under_curve(deletion), "deletion_auc"),
                **_mean_ci(aopc(deletion), "aopc"),
            }
        maps = _stack(predictions, "predictions")
        other = _stack(references, "references")
        if maps.shape != other.shape:
            raise ValueError(
                f"predictions and references must have the same shape; got {tuple(maps.shape)} "
                f"and {tuple(other.shape)}."
            )
        if self.config_name == "localization":
            return {
                **_mean_ci(pointing_game(maps, other), "pointing_game"),
                **_mean_ci(mask_auroc(maps, other), "auroc"),
            }
        return map_agreement(maps, other).summary()
