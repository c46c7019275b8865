"""The ``evaluate`` module: loads offline by path and agrees with the plain functions."""

from __future__ import annotations

import os

import pytest
import torch

from hf_shapley.evaluation import (
    METRIC_PATH,
    aopc,
    area_under_curve,
    map_agreement,
    mask_auroc,
    pointing_game,
)

evaluate = pytest.importorskip("evaluate")


def test_module_file_is_packaged():
    assert os.path.isfile(os.path.join(METRIC_PATH, "shapley_faithfulness.py"))


def test_agreement_config(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    g = torch.Generator().manual_seed(0)
    truth = torch.randn(6, 9, generator=g)
    estimate = truth + 0.3 * torch.randn(6, 9, generator=g)
    metric = evaluate.load(METRIC_PATH, "agreement")
    result = metric.compute(predictions=estimate.tolist(), references=truth.tolist())
    direct = map_agreement(estimate.double(), truth.double())
    assert result["pearson"] == pytest.approx(direct.mean_pearson)
    assert result["spearman"] == pytest.approx(direct.mean_spearman)
    assert result["relative_l2"] == pytest.approx(direct.median_relative_l2)
    assert result["pearson_ci95"][0] <= result["pearson"] <= result["pearson_ci95"][1]


def test_curves_and_localization_configs(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    g = torch.Generator().manual_seed(1)
    insertion, deletion = torch.rand(5, 10, generator=g), torch.rand(5, 10, generator=g)
    curves = evaluate.load(METRIC_PATH, "curves").compute(
        insertion_curves=insertion.tolist(), deletion_curves=deletion.tolist()
    )
    assert curves["insertion_auc"] == pytest.approx(area_under_curve(insertion).mean().item())
    assert curves["deletion_auc"] == pytest.approx(area_under_curve(deletion).mean().item())
    assert curves["aopc"] == pytest.approx(aopc(deletion).mean().item())
    maps = torch.rand(5, 4, generator=g)
    objects = torch.tensor([[1.0, 0.0, 0.0, 0.5]] * 5)
    localization = evaluate.load(METRIC_PATH, "localization").compute(
        predictions=maps.tolist(), references=objects.tolist()
    )
    assert localization["auroc"] == pytest.approx(mask_auroc(maps, objects).mean().item())
    assert localization["pointing_game"] == pytest.approx(
        pointing_game(maps, objects).mean().item()
    )
