"""Faithfulness of a self-explaining CLIP's one-pass Shapley values against baselines (issue 15, item 6).

On N built-in test images (the shapes with generated captions) and a trained ShapleyCLIPModel
(``examples/train_clip.py``), every method explains the score of each image against its own
caption (the matching text), another image's caption (a non-matching text) and the prompt of
its class. Methods: the model's ``phi`` (one pass), random maps, attention rollout of the vision
tower, Grad-CAM and Integrated Gradients on the similarity, leave-one-out, KernelSHAP at several
budgets, and the exact Shapley values (2**P coalitions; an oracle, not a competitor). All of
them are the classifier explainers of ``hf_shapley.evaluation`` applied to
``hf_shapley.evaluation.CLIPTextScores`` (the texts take the place of the classes).

Reported, per method:

* exact-truth agreement (per-image Pearson r, median relative L2) for matching and
  non-matching texts;
* insertion / deletion AUC of the matching caption's score (player level: players removed
  through the model's ``coalition=`` game, as it was trained to see them removed);
* deletion R@1 (``hf_shapley.evaluation.deletion_recall_at_1``): R@1 among the N captions,
  image to text and text to image, after removing each image's top-k players;
* localization of the class object (pointing game, mask AUROC) for the caption and the prompt;
* the cost per explained text in full-forward equivalents (a backward = 2 forwards; a
  KernelSHAP coalition = half a pass, complementary pairs sharing one packed sequence);
* paired bootstrap intervals of phi minus each baseline, and the target check: phi's deletion
  AUC and deletion R@1 better than every baseline costing at most 10 forward passes.

With ``--plain_model_dir`` (a dual encoder trained by ``examples/train_clip.py
--distill_loss_weight 0 --shapley_loss_weight 0 --explainer_epochs 0``: contrastive loss only,
the same seed, data order and number of steps as the first phase of the self-explaining one),
retrieval R@1 and zero-shot accuracy of both on ``--num_retrieval`` test images, in galleries
of N.

    python benchmarks/clip_faithfulness.py /tmp/clipexp/default2 \
        --plain_model_dir /tmp/clip-eval/plain --out benchmarks/results/clip_faithfulness
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch
from PIL import Image
from transformers import AutoImageProcessor, AutoTokenizer

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import markdown_table  # noqa: E402

from hf_shapley import ShapleyCLIPModel  # noqa: E402
from hf_shapley.data import generate_shapes, shapes_captions, shapes_class_prompts  # noqa: E402
from hf_shapley.evaluation import (  # noqa: E402
    AttentionRolloutExplainer,
    CLIPTextScores,
    GradCamExplainer,
    IntegratedGradientsExplainer,
    KernelShapExplainer,
    LeaveOneOutExplainer,
    RandomExplainer,
    ShapleyValuesExplainer,
    area_under_curve,
    bootstrap_mean_interval,
    deletion_recall_at_1,
    map_agreement,
    mask_auroc,
    mask_to_players,
    model_coalition_values,
    player_curve,
    pointing_game,
    retrieval_hits,
    wilson_interval,
)
from hf_shapley.evaluation.truth import shapley_values_from_table, tabulate_game  # noqa: E402
from hf_shapley.models.image_loading import to_rgb  # noqa: E402

PHI = "phi (one pass)"
EXACT = "exact Shapley values"
#: Baselines at or under this cost (full-forward equivalents) must be beaten by phi.
TARGET_COST = 10.0
_T0 = time.perf_counter()


def log(message: str) -> None:
    print(f"[{time.perf_counter() - _T0:7.1f}s] {message}", flush=True)


def load(model_dir: str):
    model = ShapleyCLIPModel.from_pretrained(model_dir).eval()
    processor = AutoImageProcessor.from_pretrained(model_dir)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    return model, processor, tokenizer


def shapes_batch(num_images: int, size: int, seed: int, processor, tokenizer):
    """Pixels, object masks (N, S, S), labels (N,) and tokenized captions of the built-in test
    split."""
    arrays = generate_shapes(
        num_images, image_size=size, split="test", seed=seed, distractors="independent"
    )
    images = [to_rgb(Image.fromarray(a)) for a in arrays.images]
    pixels = processor(images, return_tensors="pt").pixel_values
    tokens = tokenizer(shapes_captions(arrays, size), padding=True, return_tensors="pt")
    return pixels, torch.from_numpy(arrays.masks), torch.from_numpy(arrays.labels), tokens


def explainers(wrapped: CLIPTextScores, budgets: list[int], ig_steps: int) -> list:
    return [
        ShapleyValuesExplainer(wrapped),
        RandomExplainer(wrapped, seed=0),
        AttentionRolloutExplainer(wrapped),
        GradCamExplainer(wrapped),
        IntegratedGradientsExplainer(wrapped, n_steps=ig_steps),
        LeaveOneOutExplainer(wrapped),
        *(KernelShapExplainer(wrapped, budget, seed=0) for budget in budgets),
    ]


def maps_for(explainer, pixels: torch.Tensor, targets: dict[str, torch.Tensor]) -> dict:
    """(N, P) maps of each target set; one run for explainers of every text at once."""
    if explainer.all_classes:
        values = explainer.attribute_all(pixels).detach().double()  # (N, P, T)
        rows = torch.arange(pixels.shape[0])
        return {name: values[rows, :, t] for name, t in targets.items()}
    return {name: explainer.attribute(pixels, t).detach().double() for name, t in targets.items()}


def interval(values: torch.Tensor) -> list[float]:
    return list(bootstrap_mean_interval(values))


def fmt(mean: float, ci: list[float] | None = None, digits: int = 3) -> str:
    if ci is None or any(math.isnan(c) for c in ci):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} [{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]"


@torch.no_grad()
def retrieval(model, processor, tokenizer, num_images: int, gallery: int, seed: int) -> dict:
    """R@1 among galleries of ``gallery`` captions and zero-shot accuracy on ``num_images``."""
    size = model.image_size[0]
    prompts = tokenizer(shapes_class_prompts(4), padding=True, return_tensors="pt")
    pixels, _, labels, tokens = shapes_batch(num_images, size, seed + 1000, processor, tokenizer)
    i2t, t2i, zero_shot = [], [], []
    for start in range(0, num_images - gallery + 1, gallery):
        pick = slice(start, start + gallery)
        out = model(
            pixels[pick],
            input_ids=tokens.input_ids[pick],
            attention_mask=tokens.attention_mask[pick],
        )
        hits = retrieval_hits(out.logits_per_image)
        i2t.append(hits.image_to_text)
        t2i.append(hits.text_to_image)
        zs = model(pixels[pick], input_ids=prompts.input_ids, attention_mask=prompts.attention_mask)
        zero_shot.append((zs.logits_per_image.argmax(1) == labels[pick]).double())
    result = {}
    for name, hits in (("image_to_text", i2t), ("text_to_image", t2i), ("zero_shot", zero_shot)):
        hits = torch.cat(hits)
        result[name] = float(hits.mean())
        result[f"{name}_wilson95"] = list(wilson_interval(round(float(hits.sum())), len(hits)))
        result["num_images"] = len(hits)
    return result


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("model_dir", help="A ShapleyCLIPModel directory (examples/train_clip.py).")
    parser.add_argument("--plain_model_dir", default=None, help="The plain dual encoder.")
    parser.add_argument("--num_images", type=int, default=32)
    parser.add_argument("--ks", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--budgets", type=int, nargs="+", default=[20, 64, 256])
    parser.add_argument("--ig_steps", type=int, default=16)
    parser.add_argument("--num_retrieval", type=int, default=512)
    parser.add_argument("--seed", type=int, default=1, help="Seed of the test images.")
    parser.add_argument("--no_truth", action="store_true", help="Skip exact enumeration.")
    parser.add_argument("--out", type=Path, default=None, help="Writes OUT.md and OUT.json.")
    args = parser.parse_args(argv)
    if args.num_images < 2:
        parser.error(f"--num_images must be >= 2 (R@1 needs a gallery); got {args.num_images}.")
    torch.set_num_threads(1)

    model, processor, tokenizer = load(args.model_dir)
    P, N = model.num_players, args.num_images
    bad = [k for k in args.ks if not 1 <= k < P]
    if bad:
        parser.error(f"--ks must lie in [1, P - 1] = [1, {P - 1}]; got {bad}.")
    if not args.no_truth and P > 16:
        parser.error(f"exact truth needs P <= 16 players; the model has {P} (use --no_truth).")
    size = model.image_size[0]
    pixels, masks, labels, captions = shapes_batch(N, size, args.seed, processor, tokenizer)
    prompts = tokenizer(shapes_class_prompts(4), padding=True, return_tensors="pt")
    on_captions = CLIPTextScores(model, captions.input_ids, captions.attention_mask).eval()
    on_prompts = CLIPTextScores(model, prompts.input_ids, prompts.attention_mask).eval()
    own = torch.arange(N)
    other = (own + 1) % N  # another image's caption: a non-matching text
    caption_targets = {"caption": own, "other caption": other}
    log(f"{N} images, P = {P} players, {len(args.budgets)} KernelSHAP budgets")

    # ---------------------------------------------------------------- maps of every method
    maps: dict[str, dict[str, torch.Tensor]] = {}
    costs: dict[str, float] = {}
    for on_c, on_p in zip(
        explainers(on_captions, args.budgets, args.ig_steps),
        explainers(on_prompts, args.budgets, args.ig_steps),
        strict=True,
    ):
        start = time.perf_counter()
        maps[on_c.name] = {
            **maps_for(on_c, pixels, caption_targets),
            **maps_for(on_p, pixels, {"prompt": labels}),
        }
        costs[on_c.name] = on_c.cost
        log(f"maps of {on_c.name} (cost {on_c.cost:g}) in {time.perf_counter() - start:.1f}s")

    truth = None
    if not args.no_truth:
        start = time.perf_counter()
        vectors = shapley_values_from_table(tabulate_game(model, pixels))  # (N, P, D)
        with torch.no_grad():
            caption_embeds = model.get_text_embeds(captions.input_ids, captions.attention_mask)
            prompt_embeds = model.get_text_embeds(prompts.input_ids, prompts.attention_mask)
        on_c = vectors @ caption_embeds.double().t()  # (N, P, N)
        on_p = vectors @ prompt_embeds.double().t()  # (N, P, 4)
        truth = {
            "caption": on_c[own, :, own],
            "other caption": on_c[own, :, other],
            "prompt": on_p[own, :, labels],
        }
        maps[EXACT] = truth
        costs[EXACT] = 2 ** (P - 1)
        log(f"exact truth (2**{P} coalitions per image) in {time.perf_counter() - start:.1f}s")

    # ---------------------------------------------------------------- curves and deletion R@1
    values = model_coalition_values(on_captions, pixels)
    ks = [0, *args.ks]
    per_image: dict[str, dict[str, torch.Tensor]] = {}
    deletion_recall: dict[str, dict[str, list[float]]] = {}
    objects = mask_to_players(masks, model.players_grid)
    for name, method_maps in maps.items():
        caption_map = method_maps["caption"]
        insertion = area_under_curve(
            player_curve(values, caption_map, own, mode="insertion", output="logit")
        )
        deletion = area_under_curve(
            player_curve(values, caption_map, own, mode="deletion", output="logit")
        )
        recall = deletion_recall_at_1(values, caption_map, ks)
        per_image[name] = {
            "insertion_auc": insertion,
            "deletion_auc": deletion,
            # Mean over k >= 1 of each image's (each text's) hit: the deletion R@1 "area".
            "deletion_r1_image_to_text": recall.image_to_text[1:].mean(0),
            "deletion_r1_text_to_image": recall.text_to_image[1:].mean(0),
            "pointing_caption": pointing_game(caption_map, objects),
            "auroc_caption": mask_auroc(caption_map, objects),
            "pointing_prompt": pointing_game(method_maps["prompt"], objects),
            "auroc_prompt": mask_auroc(method_maps["prompt"], objects),
        }
        for k_index, k in enumerate(ks):
            per_image[name][f"r1_i2t_k{k}"] = recall.image_to_text[k_index]
            per_image[name][f"r1_t2i_k{k}"] = recall.text_to_image[k_index]
        deletion_recall[name] = recall.recall()
        if truth is not None:
            for text in ("caption", "other caption", "prompt"):
                agreement = map_agreement(method_maps[text], truth[text])
                per_image[name][f"r_{text}"] = agreement.pearson
                per_image[name][f"l2_{text}"] = agreement.relative_l2
        log(f"curves, deletion R@1 and localization of {name}")

    with torch.no_grad():
        full = on_captions(pixels).logits
    full_hits = retrieval_hits(full)

    # ---------------------------------------------------------------- summaries
    summary: dict[str, dict] = {}
    for name, metrics in per_image.items():
        row = {"cost": costs[name]}
        for key, value in metrics.items():
            if key.startswith("l2_"):
                row[key] = float(value.median())
            else:
                row[key] = float(value.nanmean())
                row[f"{key}_ci95"] = interval(value)
        summary[name] = row

    lower_is_better = {
        "deletion_auc",
        "deletion_r1_image_to_text",
        "deletion_r1_text_to_image",
    }
    compared = [
        "deletion_auc",
        "deletion_r1_image_to_text",
        "deletion_r1_text_to_image",
        "insertion_auc",
        "auroc_caption",
        "auroc_prompt",
    ]
    paired: dict[str, dict[str, dict]] = {}
    for name in per_image:
        if name in (PHI, EXACT):
            continue
        paired[name] = {}
        for key in compared:
            difference = per_image[PHI][key] - per_image[name][key]
            mean, ci = float(difference.nanmean()), interval(difference)
            better = mean < 0 if key in lower_is_better else mean > 0
            significant = (ci[1] < 0) if key in lower_is_better else (ci[0] > 0)
            paired[name][key] = {
                "phi_minus_baseline": mean,
                "ci95": ci,
                "phi_better": bool(better),
                "significant": bool(significant),
            }
    target_keys = ["deletion_auc", "deletion_r1_image_to_text", "deletion_r1_text_to_image"]
    cheap = [name for name in paired if costs[name] <= TARGET_COST]
    target = {name: {key: paired[name][key]["phi_better"] for key in target_keys} for name in cheap}
    target_met = all(all(v.values()) for v in target.values())
    target_significant = all(
        paired[name][key]["significant"] for name in cheap for key in target_keys
    )
    log(f"target (phi better than every baseline of cost <= {TARGET_COST:g}): {target_met}")

    plain = None
    retrieval_results = {}
    if args.plain_model_dir:
        log("retrieval R@1 of the self-explaining and the plain dual encoder")
        retrieval_results["self-explaining (ShapleyCLIPModel)"] = retrieval(
            model, processor, tokenizer, args.num_retrieval, N, args.seed
        )
        plain = load(args.plain_model_dir)
        retrieval_results["plain dual encoder (contrastive only)"] = retrieval(
            *plain, args.num_retrieval, N, args.seed
        )

    result = {
        "command": "python benchmarks/clip_faithfulness.py "
        + " ".join(sys.argv[1:] if argv is None else argv),
        "model_dir": args.model_dir,
        "plain_model_dir": args.plain_model_dir,
        "num_images": N,
        "num_players": P,
        "ks": ks,
        "seed": args.seed,
        "full_retrieval": {
            "image_to_text": full_hits.recall_image_to_text,
            "text_to_image": full_hits.recall_text_to_image,
        },
        "mean_full_score": float(full[own, own].mean()),
        "methods": summary,
        "deletion_recall_at_1": deletion_recall,
        "paired_phi_minus_baseline": paired,
        "target_cost": TARGET_COST,
        "target": target,
        "target_met": target_met,
        "target_significant": target_significant,
        "retrieval": retrieval_results,
        "seconds": time.perf_counter() - _T0,
    }
    text = render(result)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.with_suffix(".md").write_text(text)
        args.out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def render(result: dict) -> str:
    """The markdown report of a result (the JSON written next to it renders the same)."""
    methods, N, P = result["methods"], result["num_images"], result["num_players"]
    ks = result["ks"]
    order = sorted(methods, key=lambda name: (name == EXACT, methods[name]["cost"]))
    lines = [
        "# Faithfulness of a self-explaining CLIP (issue 15, item 6)",
        "",
        f"`{result['command']}`, CPU, 1 thread, {result['seconds']:.0f} s.",
        "",
        f"{N} built-in test images (seed {result['seed']}), P = {P} players. Every method "
        "explains each image's score against its own caption (the matching text), another "
        "image's caption (non-matching) and its class prompt; the baselines are the classifier "
        "explainers of `hf_shapley.evaluation` on `CLIPTextScores`. Cost per explained text in "
        "full-forward equivalents (backward = 2; a KernelSHAP coalition = 0.5, complementary "
        "pairs share one packed pass; exact = 2**(P-1) packed passes). Means over images with "
        "95% bootstrap intervals.",
        "",
        f"R@1 of the full images among their {N} captions: image to text "
        f"{result['full_retrieval']['image_to_text']:.3f}, text to image "
        f"{result['full_retrieval']['text_to_image']:.3f}; mean matching score (logit) "
        f"{result['mean_full_score']:.2f}.",
        "",
        "## Insertion / deletion of the matching caption's score, deletion R@1",
        "",
        "Player level: players removed through the model's `coalition=` game; AUC of the "
        "score (logit) over the P + 1 steps. Deletion R@1: mean over k in "
        f"{ks[1:]} of R@1 among the {N} captions after removing each image's top-k players "
        "(lower = the map found what the match rests on).",
        "",
    ]
    rows = []
    for name in order:
        m = methods[name]
        rows.append(
            [
                name,
                f"{m['cost']:g}",
                fmt(m["insertion_auc"], m["insertion_auc_ci95"], 2),
                fmt(m["deletion_auc"], m["deletion_auc_ci95"], 2),
                fmt(m["deletion_r1_image_to_text"], m["deletion_r1_image_to_text_ci95"]),
                fmt(m["deletion_r1_text_to_image"], m["deletion_r1_text_to_image_ci95"]),
            ]
        )
    lines += [
        markdown_table(
            [
                "method",
                "cost",
                "insertion AUC (higher better)",
                "deletion AUC (lower better)",
                "deletion R@1 image->text",
                "deletion R@1 text->image",
            ],
            rows,
        ),
        "",
        "R@1 after removing the top-k players (image->text / text->image):",
        "",
    ]
    rows = []
    for name in order:
        curve = result["deletion_recall_at_1"][name]
        rows.append(
            [name]
            + [
                f"{a:.3f} / {b:.3f}"
                for a, b in zip(curve["image_to_text"], curve["text_to_image"], strict=True)
            ]
        )
    lines += [markdown_table(["method", *(f"k = {k}" for k in ks)], rows), ""]

    if "r_caption" in methods[PHI]:
        lines += [
            "## Agreement with the exact Shapley values",
            "",
            f"Per-image Pearson r [95% CI] and median relative L2 error against the exact values "
            f"(2**{P} coalitions, the vector game projected on each text). Relative L2 is only "
            "meaningful for estimates of the Shapley values themselves (phi, KernelSHAP, "
            "leave-one-out); the other maps are on other scales.",
            "",
        ]
        rows = []
        for name in order:
            if name == EXACT:
                continue
            m = methods[name]
            rows.append(
                [name]
                + [
                    f"{fmt(m[f'r_{t}'], m[f'r_{t}_ci95'])}; {m[f'l2_{t}']:.3f}"
                    for t in ("caption", "other caption", "prompt")
                ]
            )
        lines += [
            markdown_table(
                [
                    "method",
                    "matching caption: r; L2",
                    "non-matching caption: r; L2",
                    "class prompt: r; L2",
                ],
                rows,
            ),
            "",
        ]

    lines += [
        "## Localization of the class object",
        "",
        "Pointing game (top player on the class object) and mask AUROC (object players above "
        "background players), for the map of the caption (which also names the distractors) "
        "and of the class prompt (which names the class object alone).",
        "",
    ]
    rows = []
    for name in order:
        m = methods[name]
        rows.append(
            [
                name,
                fmt(m["pointing_caption"], m["pointing_caption_ci95"]),
                fmt(m["auroc_caption"], m["auroc_caption_ci95"]),
                fmt(m["pointing_prompt"], m["pointing_prompt_ci95"]),
                fmt(m["auroc_prompt"], m["auroc_prompt_ci95"]),
            ]
        )
    lines += [
        markdown_table(
            [
                "method",
                "pointing (caption)",
                "AUROC (caption)",
                "pointing (prompt)",
                "AUROC (prompt)",
            ],
            rows,
        ),
        "",
        "## phi minus each baseline (paired, per image)",
        "",
        "Mean difference [95% paired bootstrap CI]; deletion: negative = phi better; insertion "
        "and AUROC: positive = phi better.",
        "",
    ]
    paired = result["paired_phi_minus_baseline"]
    keys = [
        "deletion_auc",
        "deletion_r1_image_to_text",
        "deletion_r1_text_to_image",
        "insertion_auc",
        "auroc_prompt",
    ]
    rows = []
    for name in order:
        if name not in paired:
            continue
        rows.append(
            [name, f"{methods[name]['cost']:g}"]
            + [fmt(paired[name][k]["phi_minus_baseline"], paired[name][k]["ci95"]) for k in keys]
        )
    lines += [
        markdown_table(
            [
                "baseline",
                "cost",
                "deletion AUC",
                "deletion R@1 i->t",
                "deletion R@1 t->i",
                "insertion AUC",
                "AUROC (prompt)",
            ],
            rows,
        ),
        "",
        f"**Target** (phi's deletion AUC and deletion R@1, both directions, better than every "
        f"baseline costing at most {result['target_cost']:g} forward passes: "
        f"{', '.join(result['target'])}): "
        f"**{'met' if result['target_met'] else 'not met'}** on the means; "
        f"{'every' if result['target_significant'] else 'not every'} difference has a 95% "
        "interval excluding 0.",
        "",
    ]
    for name, checks in result["target"].items():
        failed = [k for k, ok in checks.items() if not ok]
        if failed:
            lines.append(f"- not better than {name} on: {', '.join(failed)}")
        unsure = [k for k in checks if not paired[name][k]["significant"] and k not in failed]
        if unsure:
            lines.append(f"- better than {name}, but the interval includes 0: {', '.join(unsure)}")
    if result["retrieval"]:
        lines += [
            "",
            "## Retrieval: self-explaining vs plain dual encoder",
            "",
            f"R@1 among galleries of {N} captions and zero-shot accuracy of the 4 class prompts, "
            "on test images other than the ones above (Wilson 95% intervals). The plain dual "
            "encoder is `examples/train_clip.py --distill_loss_weight 0 --shapley_loss_weight 0 "
            "--explainer_epochs 0`: the contrastive loss alone, with the same seed, data order "
            "and number of steps (4 epochs) as the first phase of the self-explaining model, "
            "whose CLIP trains with the contrastive loss plus the masked self-distillation "
            "(weight 1); its second phase freezes CLIP, so the self-explaining model scores as "
            "its first-phase CLIP did.",
            "",
        ]
        rows = []
        for name, r in result["retrieval"].items():
            rows.append(
                [name, r["num_images"]]
                + [
                    fmt(r[k], r[f"{k}_wilson95"])
                    for k in ("image_to_text", "text_to_image", "zero_shot")
                ]
            )
        lines += [
            markdown_table(
                ["model", "images", "R@1 image->text", "R@1 text->image", "zero-shot accuracy"],
                rows,
            ),
            "",
        ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
