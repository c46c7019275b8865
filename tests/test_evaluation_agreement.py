"""Agreement with the truth: Pearson, Spearman (against scipy), relative L2, other classes,
bootstrap intervals, and the KernelSHAP truth for large P against the exact one."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats

from hf_shapley.evaluation import (
    bootstrap_mean_interval,
    exact_model_shapley_values,
    map_agreement,
    model_shapley_truth,
    other_classes_agreement,
    rank_with_ties,
    shapley_agreement,
)


def test_correlations_and_relative_l2_match_independent_computations():
    g = torch.Generator().manual_seed(0)
    truth = torch.randn(5, 12, generator=g, dtype=torch.float64)
    estimate = truth + 0.5 * torch.randn(5, 12, generator=g, dtype=torch.float64)
    estimate[0, :4] = estimate[0, 4]  # ties
    agreement = map_agreement(estimate, truth)
    for b in range(5):
        a, t = estimate[b].numpy(), truth[b].numpy()
        assert agreement.pearson[b].item() == pytest.approx(np.corrcoef(a, t)[0, 1])
        assert agreement.spearman[b].item() == pytest.approx(stats.spearmanr(a, t).statistic)
        assert agreement.relative_l2[b].item() == pytest.approx(
            np.linalg.norm(a - t) / np.linalg.norm(t)
        )


def test_rank_with_ties_averages():
    assert rank_with_ties(torch.tensor([3.0, 1.0, 3.0, 2.0])).tolist() == [3.5, 1.0, 3.5, 2.0]


def test_class_selection_and_other_classes():
    g = torch.Generator().manual_seed(1)
    truth = torch.randn(4, 8, 3, generator=g, dtype=torch.float64)
    predicted = torch.tensor([0, 1, 2, 0])
    estimate = truth.clone()
    noise = torch.randn(4, 8, generator=g, dtype=torch.float64)
    estimate[torch.arange(4), :, predicted] = noise  # only the predicted class is wrong
    on_predicted = shapley_agreement(estimate, truth, predicted)
    others = other_classes_agreement(estimate, truth, predicted)
    assert torch.allclose(others.pearson, torch.ones(4, dtype=torch.float64))
    assert torch.allclose(others.relative_l2, torch.zeros(4, dtype=torch.float64))
    expected = [np.corrcoef(noise[b], truth[b, :, predicted[b]])[0, 1] for b in range(4)]
    assert on_predicted.pearson.tolist() == pytest.approx(expected)


def test_bootstrap_interval():
    values = torch.tensor([0.2, 0.4, 0.6, 0.8, float("nan")])
    lo, hi = bootstrap_mean_interval(values, num_resamples=500)
    assert 0.2 <= lo <= 0.5 <= hi <= 0.8
    assert bootstrap_mean_interval(torch.full((6,), 0.7)) == pytest.approx((0.7, 0.7))
    summary = map_agreement(torch.randn(6, 5), torch.randn(6, 5)).summary()
    assert summary["pearson_ci95"][0] <= summary["pearson"] <= summary["pearson_ci95"][1]


def test_shape_errors():
    with pytest.raises(ValueError, match=r"\(B, P, K\)"):
        shapley_agreement(torch.zeros(2, 4, 3), torch.zeros(2, 4, 2), torch.tensor([0, 0]))
    with pytest.raises(ValueError, match="classes must have shape"):
        shapley_agreement(torch.zeros(2, 4, 3), torch.zeros(2, 4, 3), torch.tensor([0]))
    with pytest.raises(ValueError, match="empty"):
        map_agreement(torch.zeros(0, 4), torch.zeros(0, 4))


def test_kernel_shap_truth_agrees_with_exact_truth(make_model, single_thread):
    """Above the exact limit the truth is converged KernelSHAP; force it at P = 4 and compare."""
    model = make_model("vit", players_grid=(2, 2))
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    exact = model_shapley_truth(model, x)
    assert exact.method == "exact" and exact.evaluations == 16
    assert torch.allclose(exact.values, exact_model_shapley_values(model, x))
    sampled = model_shapley_truth(model, x, max_exact_players=2, tolerance=0.005, batch_size=64)
    assert sampled.method == "kernel_shap" and sampled.converged
    scale = exact.values.abs().amax()
    assert torch.allclose(sampled.values, exact.values, atol=0.02 * float(scale))


def test_pooled_relative_error_against_a_hand_computation():
    from hf_shapley.evaluation import centered_class_values, pooled_relative_error

    truth = torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 4.0]], dtype=torch.float64)
    estimate = torch.tensor([[1.0, 2.0, 4.0], [1.0, 0.0, 3.0]], dtype=torch.float64)
    # sum |e - t|^2 = 1 + 2 = 3; spread: (1 + 0 + 1) + (16/9 + 16/9 + 64/9) = 2 + 96/9
    expected = (3 / (2 + 96 / 9)) ** 0.5
    assert pooled_relative_error(estimate, truth) == pytest.approx(expected)
    assert pooled_relative_error(truth, truth) == 0
    # A flat map at each image's mean scores exactly 1: the mean is free under efficiency.
    flat = truth.mean(1, keepdim=True).expand_as(truth)
    assert pooled_relative_error(flat, truth) == pytest.approx(1.0)
    with pytest.raises(ValueError, match=r"\(B, P\) maps"):
        pooled_relative_error(estimate[0], truth[0])

    values = torch.tensor([[[1.0, 3.0], [2.0, 2.0]]])  # (B=1, P=2, K=2)
    centered = centered_class_values(values, torch.tensor([1]))
    assert centered.tolist() == [[1.0, 0.0]]  # class 1 minus the mean over classes


def test_measure_agreement_refuses_what_cannot_be_measured(make_model, pixel_values):
    from hf_shapley.evaluation import measure_agreement

    model = make_model("vit", players_grid=(2, 2))
    with pytest.raises(ValueError, match="at least 2 images"):
        measure_agreement(model, pixel_values[:1])
    with pytest.raises(ValueError, match="4 KernelSHAP evaluations are too few for P=4"):
        measure_agreement(model, pixel_values, kernel_evaluations=4)
    for tolerance in (0, -0.1, "0.1", True):
        with pytest.raises(ValueError, match="tolerance must be a positive number"):
            measure_agreement(model, pixel_values, truth_tolerance=tolerance)
    with pytest.raises(ValueError, match="largest budget .* below its first"):
        measure_agreement(model, pixel_values, kernel_evaluations=512, max_kernel_evaluations=256)


def test_truth_estimated_error_tracks_its_actual_error_against_exact(make_model, single_thread):
    """The KernelSHAP truth's own estimated pooled error (from its standard errors) against its
    actual pooled error with the exact values (all 2^16 coalitions), on the explained quantity,
    at two budgets: the estimate is within a factor 1.6 of the actual error and falls with the
    budget as the actual error does."""
    from hf_shapley.evaluation import centered_class_values, converged_kernel_truth
    from hf_shapley.evaluation import pooled_relative_error as pooled

    model = make_model("vit", players_grid=(4, 4))
    torch.manual_seed(1)
    x = torch.randn(6, 3, 32, 32)
    with torch.no_grad():
        classes = model(x).logits.argmax(-1)
    exact = centered_class_values(exact_model_shapley_values(model, x), classes)
    errors = []
    for budget in (512, 4096):
        truth = converged_kernel_truth(
            model, x, classes, tolerance=1e-9, evaluations=budget, max_evaluations=budget
        )
        assert not truth.converged and truth.evaluations == budget
        actual = pooled(centered_class_values(truth.values, classes), exact)
        assert actual / 1.6 < truth.estimated_error < actual * 1.6, (budget, actual, truth)
        errors.append((truth.estimated_error, actual))
    assert errors[1][0] < errors[0][0] / 2 and errors[1][1] < errors[0][1] / 2


def test_agreement_is_withheld_against_a_truth_that_did_not_converge(make_model, pixel_values):
    """A tolerance the budget cannot reach: no agreement figure, the reason and the budget that
    would do; a reachable one: the figures, with the truth's error beside them."""
    from hf_shapley.evaluation import measure_agreement

    model = make_model("vit", players_grid=(4, 4))
    strict = measure_agreement(
        model, pixel_values, num_exact=0, kernel_evaluations=512, truth_tolerance=1e-4
    )
    assert strict["truth_converged"] is False and strict["truth_estimated_error"] > 1e-4
    assert "pooled_relative_error" not in strict and "pearson_r" not in strict
    assert "did not converge" in strict["agreement_withheld"]
    assert strict["truth"] == "KernelSHAP, 4096 paired evaluations per image"  # 512 doubled 3x
    loose = measure_agreement(model, pixel_values, num_exact=0, kernel_evaluations=512,
                              truth_tolerance=strict["truth_estimated_error"] * 1.01)  # fmt: skip
    assert loose["truth_converged"] is True and "agreement_withheld" not in loose
    assert loose["pooled_relative_error"] >= 0 and -1 <= loose["pearson_r"] <= 1


def _permutation_shapley(value, players: int) -> list[float]:
    """Shapley values of a set function by averaging marginal contributions over all orders."""
    import itertools
    import math

    phi = [0.0] * players
    for order in itertools.permutations(range(players)):
        present: set[int] = set()
        for i in order:
            before = value(frozenset(present))
            present.add(i)
            phi[i] += value(frozenset(present)) - before
    return [p / math.factorial(players) for p in phi]


def test_interaction_share_against_a_direct_computation():
    import math

    from hf_shapley.evaluation import interaction_share, shapley_values_from_table
    from hf_shapley.models.coalitions import all_coalitions

    P, K = 4, 3
    masks = all_coalitions(P).double()  # row c = code c
    g = torch.Generator().manual_seed(0)
    weights = torch.randn(2, P, K, generator=g, dtype=torch.float64)
    weights[1, :, 0] = 0.5 * weights[1, :, 0].abs()  # image 1: same-signed, beside the pair
    additive = masks @ weights  # (B, 2**P, K)
    # A class-common term that is far from additive: softmax cannot see it, the centered
    # explained quantity removes it.
    common = (masks.sum(1) % 2 * 5.0)[None, :, None]
    pair = (masks[:, 0] * masks[:, 1])[None, :, None] * torch.tensor([0.0, 3.0])[:, None, None]
    table = (additive + common + pair * torch.tensor([1.0, 0.0, 0.0])).transpose(0, 1)
    phi = shapley_values_from_table(table)
    classes = torch.tensor([0, 0])
    share = interaction_share(table, phi, classes)
    assert share[0].item() == pytest.approx(0.0, abs=1e-12)  # additive once centered
    # Image 1: the pair term on class 0. Direct computation on the centered class-0 value.
    centered = table[:, 1] - table[:, 1].mean(-1, keepdim=True)

    def value(S: frozenset) -> float:
        return float(centered[sum(2**i for i in S), 0])

    shapley = _permutation_shapley(value, P)
    assert phi[1, :, 0] - phi[1].mean(-1) == pytest.approx(
        torch.tensor(shapley, dtype=torch.float64)
    )
    residual = total = 0.0
    for code in range(1, 2**P - 1):
        S = frozenset(i for i in range(P) if code >> i & 1)
        w = (P - 1) / (math.comb(P, len(S)) * len(S) * (P - len(S)))
        y = value(S) - value(frozenset())
        residual += w * (y - sum(shapley[i] for i in S)) ** 2
        total += w * y**2
    assert 0.05 < share[1].item() < 1
    assert share[1].item() == pytest.approx(residual / total)


def test_exact_truth_keeps_its_table(make_model, single_thread):
    from hf_shapley.models.coalitions import all_coalitions

    model = make_model("vit", players_grid=(2, 2))
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    truth = model_shapley_truth(model, x)
    with torch.no_grad():
        direct = model(x, coalition=all_coalitions(4)[None].expand(2, -1, -1)).logits
    assert truth.table.shape == (16, 2, model.num_labels)
    assert torch.allclose(truth.table, direct.transpose(0, 1).double(), atol=1e-5)


def test_measure_clip_agreement_against_a_direct_computation(single_thread):
    """Each pair's exact values come from enumerating the public coalition= scores of that
    image-text game and averaging marginal contributions over all player orders."""
    from conftest import random_texts, tiny_shapley_clip
    from hf_shapley.evaluation import measure_clip_agreement
    from hf_shapley.models.coalitions import all_coalitions

    model, _ = tiny_shapley_clip(players_grid=(2, 2), seed=3)
    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    ids, mask = random_texts(3, seed=6)
    report = measure_clip_agreement(model, x, ids, mask)
    with torch.no_grad():
        out = model(x, input_ids=ids, attention_mask=mask)
        masks = all_coalitions(4)[None].expand(3, -1, -1)
        scores = model(x, input_ids=ids, attention_mask=mask, coalition=masks).logits_per_image

    def truth(b: int, t: int) -> list[float]:
        def value(S: frozenset) -> float:
            return float(scores[b, sum(2**i for i in S), t])

        return _permutation_shapley(value, 4)

    phi = out.shapley_values.double()
    match = [(phi[b, :, b].numpy(), np.array(truth(b, b))) for b in range(3)]
    other = [
        (phi[b, :, t].numpy(), np.array(truth(b, t))) for b in range(3) for t in range(3) if t != b
    ]
    for pairs, prefix in ((match, ""), (other, "other_texts_")):
        r = np.mean([np.corrcoef(p, t)[0, 1] for p, t in pairs])
        assert report[f"{prefix}pearson_r"] == pytest.approx(r, abs=1e-6)
        residual = sum(((p - t) ** 2).sum() for p, t in pairs)
        spread = sum(((t - t.mean()) ** 2).sum() for _, t in pairs)
        assert report[f"{prefix}pooled_relative_error"] == pytest.approx(
            np.sqrt(residual / spread), rel=1e-5
        )
    with pytest.raises(ValueError, match="one text per image"):
        measure_clip_agreement(model, x, ids[:2], mask[:2])
    # A caller's enumeration stands in for the report's own: the same figures; a table of
    # other images or players is refused.
    from hf_shapley.evaluation import exact_model_shapley_values

    vectors = exact_model_shapley_values(model, x)
    assert measure_clip_agreement(model, x, ids, mask, exact_vectors=vectors) == report
    with pytest.raises(ValueError, match=r"exact_vectors must be the \(B, P, D\) = \(3, 4, D\)"):
        measure_clip_agreement(model, x, ids, mask, exact_vectors=vectors[:2])


def test_clip_kernel_truth_agrees_with_exact_values_within_its_own_error(single_thread):
    """At P = 4 the KernelSHAP truth of the score games can be checked against exact
    enumeration: its actual pooled error is of the size it estimates, and far below the spread."""
    from conftest import random_texts, tiny_shapley_clip
    from hf_shapley.evaluation import converged_clip_truth, pooled_relative_error
    from hf_shapley.evaluation.truth import exact_model_shapley_values

    model, _ = tiny_shapley_clip(players_grid=(2, 2), seed=3)
    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    ids, mask = random_texts(4, seed=6)
    with torch.no_grad():
        text = model.get_text_embeds(ids, mask)
    everything = torch.ones(3, 4, dtype=torch.bool)
    kernel = converged_clip_truth(model, x, text, [everything], evaluations=64, tolerance=0.05)
    exact = torch.einsum("bpd,td->bpt", exact_model_shapley_values(model, x), text.double())
    estimated = kernel.estimated_error(everything)
    actual = pooled_relative_error(
        kernel.values.permute(0, 2, 1).reshape(-1, 4), exact.permute(0, 2, 1).reshape(-1, 4)
    )
    assert estimated <= 0.05 or kernel.evaluations == 8 * 64
    assert actual < 3 * estimated + 1e-6 and actual < 0.1
    with pytest.raises(ValueError, match="4 KernelSHAP evaluations are too few for P=4"):
        converged_clip_truth(model, x, text, [everything], evaluations=4)
    with pytest.raises(ValueError, match="tolerance must be a positive number"):
        converged_clip_truth(model, x, text, [everything], tolerance=0)


def test_measure_clip_agreement_withholds_against_an_unconverged_truth(single_thread):
    """P = 25 (above exact enumeration): a KernelSHAP truth held to an unreachable tolerance."""
    from transformers import CLIPModel

    import hf_shapley
    from conftest import random_texts, tiny_clip_config
    from hf_shapley.evaluation import measure_clip_agreement

    config = tiny_clip_config()
    config.vision_config.image_size = 40  # 5 x 5 tokens of 8 px
    torch.manual_seed(0)
    model = hf_shapley.ShapleyCLIPModel.from_clip(
        CLIPModel(config), players_grid=(5, 5), head_hidden_size=32, head_num_layers=1
    ).eval()
    x = torch.randn(2, 3, 40, 40, generator=torch.Generator().manual_seed(5))
    ids, mask = random_texts(2, seed=6)
    report = measure_clip_agreement(
        model, x, ids, mask, kernel_evaluations=64, max_kernel_evaluations=64, truth_tolerance=1e-6
    )
    assert report["truth"].startswith("KernelSHAP") and not report["truth_converged"]
    assert "pearson_r" not in report and "evaluations per image" in report["agreement_withheld"]
