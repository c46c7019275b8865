"""Agreement of a self-explaining CLIP with the Shapley values of its own image-text games.

The explained quantity is the score itself, ``v_{x,t}(S)`` (a shift shared by every player
does not move per-image r, and the pooled error measures spread around each image's mean). It
is reported on each image's own caption, on the other images' captions (texts that do not
match it) and, optionally, on one more text per image (e.g. its class prompt, a text the head
never trained on).

The truth: for ``P <= 16`` the exact values, all ``2**P`` coalitions of each image's vector game
``u(x_S)`` enumerated once and projected on every text (Shapley values are linear in the game);
above, paired KernelSHAP on the score game of every text at once, its budget raised until its
own estimated pooled error (from KernelSHAP's standard errors, on the same pairs) is at most
``truth_tolerance`` in every reported group. Against a truth that has not converged within the
budget no agreement is reported: the report says so, with the budget that would do.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .agreement import TRUTH_EVALUATIONS, TRUTH_TOLERANCE, check_truth_budget, map_summary
from .truth import MAX_EXACT_PLAYERS, exact_model_shapley_values

#: Images per KernelSHAP run: its per-pair residuals are kept, (pairs, images * texts) floats.
IMAGES_PER_KERNEL_RUN = 8


@dataclass
class CLIPKernelTruth:
    """A KernelSHAP truth of a CLIP's score games, with its own estimated error.

    Attributes:
        values: (B, P, T) estimated Shapley values of every image-text score.
        standard_error: (B, P, T) KernelSHAP's standard error of each value.
        evaluations: paired evaluations per image spent (the largest over the image runs).
        tolerance: the largest estimated pooled error it was run to, in every group.
    """

    values: torch.Tensor
    standard_error: torch.Tensor
    evaluations: int
    tolerance: float

    def estimated_error(self, selector: torch.Tensor) -> float:
        """Estimated pooled error ``sqrt(sum se^2 / sum |t - mean_P t|^2)`` over the (B, T)
        image-text pairs that ``selector`` marks."""
        return _estimated_error(self.values, self.standard_error, selector)

    def evaluations_needed(self, error: float) -> int:
        """The budget at which ``error`` would reach the tolerance (it falls as 1/sqrt(n))."""
        ratio = (error / self.tolerance) ** 2
        return int(math.ceil(self.evaluations * ratio / 1024) * 1024)


def _estimated_error(values: torch.Tensor, se: torch.Tensor, selector: torch.Tensor) -> float:
    spread = (values - values.mean(1, keepdim=True)).pow(2).sum(1)  # (B, T)
    return float(
        (se.pow(2).sum(1)[selector].sum() / spread[selector].sum().clamp_min(1e-24)).sqrt()
    )


def clip_score_game(model, pixel_values: torch.Tensor, text_embeds: torch.Tensor):
    """The game ``masks (M, P) -> (M, B, T)``: each image's score for each text with only the
    present players, ``<u(x_S), e_t>`` (what ``model(..., coalition=S)`` returns)."""
    text = text_embeds.to(pixel_values.device).float()

    @torch.no_grad()
    def game(masks: torch.Tensor) -> torch.Tensor:
        coalitions = masks.to(pixel_values.device)[None].expand(pixel_values.shape[0], -1, -1)
        return (model.coalition_vectors(pixel_values, coalitions) @ text.t()).transpose(0, 1)

    return game


@torch.no_grad()
def converged_clip_truth(
    model,
    pixel_values: torch.Tensor,
    text_embeds: torch.Tensor,
    groups: list[torch.Tensor],
    *,
    tolerance: float = TRUTH_TOLERANCE,
    evaluations: int = TRUTH_EVALUATIONS,
    max_evaluations: int | None = None,
    seed: int = 12345,
    progress: bool = False,
) -> CLIPKernelTruth:
    """Paired KernelSHAP on the score games of ``B`` images and ``T`` texts, run on a few images
    at a time: each run's budget grows from ``evaluations`` (to what its estimated error asks
    for, at least doubling) until its estimated pooled error is at most ``tolerance`` in every
    group of ``groups`` ((B, T) bool selectors of image-text pairs) or the next budget would
    pass ``max_evaluations`` (default ``8 * evaluations``). A pooled error over all images is
    at most the largest over the runs, so every run converging makes the whole truth converge.

    Raises:
        ValueError: as :func:`~hf_shapley.evaluation.agreement.check_truth_budget`.
    """
    from tqdm.auto import tqdm

    from .estimators import kernel_shap

    num_players = model.num_players
    max_evaluations = check_truth_budget(num_players, tolerance, evaluations, max_evaluations)
    text_embeds = text_embeds.detach().double()
    values, errors, spent = [], [], 0
    starts = range(0, pixel_values.shape[0], IMAGES_PER_KERNEL_RUN)
    for start in tqdm(starts, disable=not progress, desc="KernelSHAP truth"):
        images = pixel_values[start : start + IMAGES_PER_KERNEL_RUN]
        run_groups = [g[start : start + IMAGES_PER_KERNEL_RUN] for g in groups]
        budget = evaluations
        while True:
            result = kernel_shap(
                clip_score_game(model, images, text_embeds),
                num_players,
                tolerance=0.0,
                max_evaluations=budget,
                batch_size=512,
                seed=seed,
            )
            run_values = result.values.permute(1, 0, 2).double().cpu()  # (b, P, T)
            run_se = result.standard_error.permute(1, 0, 2).double().cpu()
            worst = max(_estimated_error(run_values, run_se, g) for g in run_groups)
            if worst <= tolerance or budget >= max_evaluations:
                break
            needed = result.num_evaluations * (worst / tolerance) ** 2 * 1.1
            budget = min(max_evaluations, max(2 * budget, int(math.ceil(needed / 1024) * 1024)))
        values.append(run_values)
        errors.append(run_se)
        spent = max(spent, result.num_evaluations)
    return CLIPKernelTruth(torch.cat(values), torch.cat(errors), spent, tolerance)


@torch.no_grad()
def measure_clip_agreement(
    model,
    pixel_values: torch.Tensor,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    *,
    prompt_input_ids: torch.Tensor | None = None,
    prompt_attention_mask: torch.Tensor | None = None,
    exact_vectors: torch.Tensor | None = None,
    kernel_evaluations: int = TRUTH_EVALUATIONS,
    max_kernel_evaluations: int | None = None,
    truth_tolerance: float = TRUTH_TOLERANCE,
    seed: int = 12345,
    progress: bool = False,
) -> dict:
    """Agreement of a ``ShapleyCLIPModel``'s one-pass values with the Shapley values of its own
    image-text games, on pairs: image ``b`` with text ``b`` (its caption), and with every other
    text of the batch (texts it does not match); with ``prompt_input_ids``, the same for one
    more text per image (e.g. its class prompt), under ``label_prompts``.

    Args:
        model: a ``ShapleyCLIPModel``.
        pixel_values: (B, C, H, W) held-out images, B >= 2.
        input_ids, attention_mask: (B, L) one text per image, text ``b`` matching image ``b``.
        prompt_input_ids, prompt_attention_mask: (B, L') another text per image.
        exact_vectors: (B, P, D) the exact Shapley values of the vector game on
            ``pixel_values`` (:func:`exact_model_shapley_values`), for a caller that enumerated
            them already; P <= 16 only.
        kernel_evaluations, max_kernel_evaluations, truth_tolerance, seed: the KernelSHAP
            truth for ``P > 16`` (:func:`converged_clip_truth`).

    Returns:
        ``pearson_r``, ``spearman_r`` (with ``_ci95``) and ``pooled_relative_error`` on the
        matching pairs; the same with the ``other_texts_`` prefix on the B * (B - 1)
        non-matching pairs; ``truth``, ``truth_estimated_error`` and ``truth_converged``
        (KernelSHAP) and ``num_images``; against a truth that did not converge,
        ``agreement_withheld`` (why, and the budget that would do) instead of the figures.
    """
    B = pixel_values.shape[0]
    texts = [(input_ids, attention_mask)]
    if prompt_input_ids is not None:
        texts.append((prompt_input_ids, prompt_attention_mask))
    if exact_vectors is not None and (
        model.num_players > MAX_EXACT_PLAYERS
        or tuple(exact_vectors.shape[:2]) != (B, model.num_players)
    ):
        raise ValueError(
            f"exact_vectors must be the (B, P, D) = ({B}, {model.num_players}, D) exact values "
            f"of the images' vector game, for P <= {MAX_EXACT_PLAYERS}; got shape "
            f"{tuple(exact_vectors.shape)} at P = {model.num_players}."
        )
    if B < 2 or any(ids.shape[0] != B for ids, _ in texts):
        raise ValueError(
            "measure_clip_agreement needs B >= 2 images and one text per image (text b matches "
            f"image b); got {B} images and {[ids.shape[0] for ids, _ in texts]} texts."
        )
    was_training = model.training
    model.eval()
    try:
        # One image pass explains every text set.
        image = model.explain_image(pixel_values)
        embeds = [model.get_text_embeds(ids, mask) for ids, mask in texts]
        phi = [
            model.explain_texts(image, e).shapley_values.detach().double().cpu() for e in embeds
        ]  # each (B, P, B)
        text_embeds = torch.cat(embeds).detach().cpu()  # (len(texts) * B, D)
        # Group (part, matching?) marks its (B, len(texts) * B) image-text pairs.
        eye = torch.eye(B, dtype=torch.bool)
        blank = torch.zeros(B, B, dtype=torch.bool)
        groups = {
            (part, match): torch.cat([(eye if match else ~eye) if p == part else blank
                                      for p in range(len(texts))], dim=1)
            for part in range(len(texts)) for match in (True, False)
        }  # fmt: skip
        if model.num_players <= MAX_EXACT_PLAYERS:
            vectors = exact_vectors
            if vectors is None:
                vectors = exact_model_shapley_values(model, pixel_values, progress=progress)
            truth = torch.einsum("bpd,td->bpt", vectors, text_embeds.double())
            header = {"truth": f"exact (all 2^{model.num_players} coalitions of the vector game)"}
            errors = None
        else:
            kernel = converged_clip_truth(
                model,
                pixel_values,
                text_embeds,
                list(groups.values()),
                tolerance=truth_tolerance,
                evaluations=kernel_evaluations,
                max_evaluations=max_kernel_evaluations,
                seed=seed,
                progress=progress,
            )
            truth = kernel.values
            errors = {key: kernel.estimated_error(g) for key, g in groups.items()}
            header = {
                "truth": f"KernelSHAP, {kernel.evaluations} paired evaluations per image",
                "truth_tolerance": truth_tolerance,
            }
    finally:
        model.train(was_training)
    reports = []
    for part in range(len(texts)):
        report = {**header, "num_images": B}
        part_truth = truth[:, :, part * B : (part + 1) * B]
        if errors is not None:
            error = max(errors[(part, True)], errors[(part, False)])
            report["truth_estimated_error"] = error
            report["truth_converged"] = error <= truth_tolerance
            if error > truth_tolerance:
                report["agreement_withheld"] = (
                    f"The KernelSHAP truth did not converge: its estimated pooled error is "
                    f"{error:.3f} after {kernel.evaluations} evaluations per image, above the "
                    f"tolerance {truth_tolerance}. About {kernel.evaluations_needed(error):,} "
                    "evaluations per image would reach it."
                )
                reports.append(report)
                continue
        match = torch.arange(B)
        other = ~torch.eye(B, dtype=torch.bool)
        # (B * (B - 1), P) maps of the non-matching pairs, image-major.
        report.update(map_summary(phi[part][match, :, match], part_truth[match, :, match]))
        report.update(
            map_summary(
                phi[part].permute(0, 2, 1)[other],
                part_truth.permute(0, 2, 1)[other],
                prefix="other_texts_",
            )
        )
        reports.append(report)
    if len(reports) > 1:
        reports[0]["label_prompts"] = reports[1]
    return reports[0]


__all__ = [
    "CLIPKernelTruth",
    "clip_score_game",
    "converged_clip_truth",
    "measure_clip_agreement",
]
