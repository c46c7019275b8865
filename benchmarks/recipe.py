"""Recipe study v2: which objective settings give a model that is accurate AND faithful?

Regime: the main job's. Its plain ViT classifier (64 px, 8 x 8 tokens of 8 px, pretrained with
cross-entropy on the built-in data v2 with the main job's settings; the screen used a 12-epoch
classifier, the confirmation the main job's 6-epoch ones) is wrapped with
``ShapleyForImageClassification.from_backbone`` (P = 16 players of 2 x 2 tokens; soft voting,
or the classifier's own head for the ``decoupled_*`` and ``explainer_recipe`` arms) and
fine-tuned by each variant; the plain arm continues the classifier with cross-entropy at equal
steps, same batches. Every arm uses the main job's optimizer settings (AdamW, lr 1e-3,
weight decay 0.05 except biases and norms, 30 warm-up steps then cosine, gradients clipped at
1.0, batch 64, loss warm-up 60 steps) in one plain loop, so that the arms differ only in
the objective.

Measured at every ``--eval-every`` steps (a curve), on data the run never trains on:
* accuracy on ``--num-test`` generated test images;
* agreement of phi with the truth of the model's own game on ``--truth-images`` other test
  images, for the explained quantity of the faithfulness targets (the predicted class's logit,
  centred over classes): mean per-image Pearson r and Spearman r, and the pooled relative error
  ``sqrt(sum |phi - t|^2 / sum |t - mean_P t|^2)``. The truth is KernelSHAP with 1,024 paired
  evaluations (pooled error 0.029 against exact enumeration on the main job's model:
  ``results/truth_check_v2_main_job.json``).

    python benchmarks/recipe.py --variants plain default centred --seeds 0 --steps 250
    python benchmarks/recipe.py --reuse            # rebuild the table from the JSONL

Every run appends one line per evaluation to ``results/recipe_v2.jsonl``; the table
``results/recipe_v2.md`` keeps every row, failures included. The v1 study (tiny ViT, one
token per player, the earlier data) is in git history, with ``results/recipe_v1.md``.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
OUT = REPO / "outputs" / "recipe-v2"
PLAYERS_GRID = (4, 4)
IMAGE_SIZE = 64
# The main job's ViT and optimizer settings (examples/train.py; benchmarks do not import it,
# tests/test_plain_classifier.py checks that these agree with it).
MAIN_JOB_BACKBONE = dict(
    image_size=IMAGE_SIZE,
    patch_size=8,
    hidden_size=128,
    num_hidden_layers=4,
    num_attention_heads=4,
    intermediate_size=256,
)
MAIN_JOB_OPTIMIZER = dict(
    per_device_train_batch_size=64,
    learning_rate=1e-3,
    weight_decay=0.05,
    warmup_steps=30,
    lr_scheduler_type="cosine",
)
TRUTH_EVALUATIONS = 1024

# Each variant: ShapleyConfig overrides on top of the library defaults ("plain": the stock
# classifier with cross-entropy). Names say what differs from "default"; the dicts are built
# from shared parts, so that a name's settings are the sum of its parts.
CENTRED = dict(center_logits=True)
CENTRED_LAMBDA10 = dict(CENTRED, shapley_loss_weight=10.0)
# The wrapped classifier predicts (cross-entropy on its own head) and a separate Shapley head
# explains: cross-entropy no longer pushes every player's value equally towards the label, and
# no player casts votes another caused.
DECOUPLED = dict(prediction_mode="backbone_head")
FROZEN = dict(DECOUPLED, train_backbone=False, **CENTRED_LAMBDA10)
# The classifier fine-tunes with cross-entropy alone, as the plain arm does; the head learns to
# explain it from detached features (an amortized explainer of a moving game).
DETACHED = dict(DECOUPLED, detach_head_features=True, distill_loss_weight=0.0, **CENTRED_LAMBDA10)
MLP = dict(head_hidden_size=256)
ATTENTION = dict(MLP, head_num_layers=1)
# Three attention layers: the explainer study's choice (explainer_study.py).
ATTENTION3 = dict(MLP, head_num_layers=3)

VARIANTS: dict[str, dict] = {
    "plain": {},
    "default": {},
    "centred": CENTRED,
    "centred_lambda10": CENTRED_LAMBDA10,
    "centred_lambda10_m16": dict(CENTRED_LAMBDA10, num_shapley_coalitions=16),
    "centred_consistency": dict(CENTRED, vote_consistency_weight=1.0),
    "centred_lambda10_consistency": dict(CENTRED_LAMBDA10, vote_consistency_weight=1.0),
    "centred_lambda10_consistency10": dict(CENTRED_LAMBDA10, vote_consistency_weight=10.0),
    "centred_consistency10": dict(CENTRED, vote_consistency_weight=10.0),
    "centred_lambda3_consistency": dict(
        CENTRED, shapley_loss_weight=3.0, vote_consistency_weight=1.0
    ),
    "decoupled_centred": dict(DECOUPLED, **CENTRED),
    "decoupled_centred_lambda10": dict(DECOUPLED, **CENTRED_LAMBDA10),
    "decoupled_alpha0_centred_lambda10": dict(
        DECOUPLED, distill_loss_weight=0.0, **CENTRED_LAMBDA10
    ),
    "decoupled_frozen_centred_lambda10": FROZEN,
    "decoupled_frozen_centred_lambda10_mlp": dict(FROZEN, **MLP),
    "decoupled_frozen_centred_lambda10_attn": dict(FROZEN, **ATTENTION),
    "decoupled_detached_centred_lambda10": DETACHED,
    "decoupled_detached_centred_lambda10_mlp": dict(DETACHED, **MLP),
    "decoupled_detached_centred_lambda10_attn": dict(DETACHED, **ATTENTION),
    "decoupled_detached_centred_lambda10_attn3": dict(DETACHED, **ATTENTION3),
}
# The recipe from_backbone now gives a wrapped classifier (configuration_shapley.EXPLAINER_DEFAULTS,
# which tests/test_plain_classifier.py checks against it).
VARIANTS["explainer_recipe"] = VARIANTS["decoupled_detached_centred_lambda10_attn3"]
# backbone_head arms state what they change from these, the settings every screen row ran with
# before from_backbone took the recipe for that mode.
BACKBONE_HEAD_BASE = dict(
    detach_head_features=False,
    distill_loss_weight=1.0,
    center_logits=False,
    shapley_loss_weight=1.0,
    head_hidden_size=0,
    head_num_layers=0,
)
# Every Shapley arm: the main job's objective settings that differ from the config defaults.
COMMON = dict(loss_warmup_steps=60)


def pretrained_dir(seed: int, epochs: int, num_train: int) -> Path:
    """The main job's plain classifier for ``seed`` (its cache name), trained here if absent with
    the main job's settings (``hf_shapley.training.plain_classifier``, the Trainer)."""
    name = f"pretrained-classifier-{IMAGE_SIZE}px-independent-{num_train}-{epochs}ep-seed{seed}"
    path = OUT / name
    if (path / "model.safetensors").is_file():
        return path
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessorPil

    from hf_shapley.data import load_image_splits, shapes_label_names
    from hf_shapley.training.plain_classifier import train_plain_classifier

    print(f"pretraining the plain classifier of seed {seed} ({epochs} epochs)", flush=True)
    train, _ = load_image_splits(
        num_train=num_train, num_test=16, image_size=IMAGE_SIZE, distractors="independent"
    )
    labels = dict(enumerate(shapes_label_names()))
    config = ViTConfig(
        **MAIN_JOB_BACKBONE, id2label=labels, label2id={v: k for k, v in labels.items()}
    )
    torch.manual_seed(seed)
    processor = ViTImageProcessorPil(
        size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}, image_mean=[0.5] * 3, image_std=[0.5] * 3
    )
    train_plain_classifier(
        ViTForImageClassification(config),
        train,
        image_processor=processor,
        output_dir=path,
        num_train_epochs=epochs,
        seed=seed,
        **MAIN_JOB_OPTIMIZER,
    )
    return path


def tensors(
    num: int, split: str, seed: int = 0, image_size: int = IMAGE_SIZE
) -> tuple[torch.Tensor, torch.Tensor]:
    """Built-in data v2 as the main job's image processor gives it: [-1, 1], (N, 3, S, S).
    Also used by ``explainer_study.py`` and ``main_job_seeds.py``."""
    from hf_shapley.data import generate_shapes

    arrays = generate_shapes(
        num, image_size=image_size, split=split, seed=seed, distractors="independent"
    )
    x = torch.from_numpy(arrays.images).permute(0, 3, 1, 2).float() / 255
    return (x - 0.5) / 0.5, torch.from_numpy(arrays.labels).long()


def optimizer(model: torch.nn.Module, steps: int):
    """The Trainer's AdamW (no decay on biases and norms) and cosine schedule, 30 warm-up steps."""
    from transformers import get_cosine_schedule_with_warmup

    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (no_decay if p.ndim < 2 or "norm" in name.lower() else decay).append(p)
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.05}, {"params": no_decay, "weight_decay": 0.0}],
        lr=1e-3,
    )
    return opt, get_cosine_schedule_with_warmup(opt, 30, steps)


@torch.no_grad()
def measure(model, xte, yte, xtruth, shapley: bool) -> dict:
    from hf_shapley.evaluation import (
        centered_class_values,
        model_shapley_truth,
        pearson_rows,
        pooled_relative_error,
        rank_with_ties,
    )

    model.eval()
    logits = torch.cat([model(xte[i : i + 500]).logits for i in range(0, len(xte), 500)])
    result = {
        "accuracy": float((logits.argmax(-1) == yte).float().mean()),
        "nll": float(F.cross_entropy(logits, yte)),
    }
    if shapley:
        out = model(xtruth)
        classes = out.logits.argmax(-1)
        truth = model_shapley_truth(
            model, xtruth, max_exact_players=0, tolerance=0.0, max_evaluations=TRUTH_EVALUATIONS
        ).values
        phi = centered_class_values(out.shapley_values, classes)
        t = centered_class_values(truth, classes)
        r = pearson_rows(phi, t)
        result.update(
            pearson=float(r.nanmean()),
            pearson_per_image=[round(float(v), 4) for v in r],
            spearman=float(pearson_rows(rank_with_ties(phi), rank_with_ties(t)).nanmean()),
            pooled_relative_error=pooled_relative_error(phi, t),
            raw_pearson=float(
                pearson_rows(
                    out.shapley_values.double()[torch.arange(len(classes)), :, classes],
                    truth.double()[torch.arange(len(classes)), :, classes],
                ).nanmean()
            ),
        )
    model.train()
    return result


def run_one(variant: str, seed: int, args: argparse.Namespace) -> list[dict]:
    torch.set_num_threads(args.threads)
    from transformers import ViTForImageClassification

    import hf_shapley  # noqa: F401  (registers the auto classes)
    from hf_shapley import ShapleyForImageClassification

    source = pretrained_dir(seed, args.pretrain_epochs, args.num_train)
    xtr, ytr = tensors(args.num_train, "train")
    xall, yall = tensors(args.num_test + args.truth_images, "test")
    xte, yte = xall[: args.num_test], yall[: args.num_test]
    xtruth = xall[args.num_test :]
    shapley = variant != "plain"
    torch.manual_seed(seed)
    if shapley:
        variant_settings = VARIANTS[variant]
        base = (
            BACKBONE_HEAD_BASE if variant_settings.get("prediction_mode") == "backbone_head" else {}
        )
        overrides = {**COMMON, **base, **variant_settings}
        model = ShapleyForImageClassification.from_backbone(
            source,
            players_grid=PLAYERS_GRID,
            load_image_processor=False,
            coalition_seed=seed,
            **{"prediction_mode": "shapley_sum", **overrides},
        )
    else:
        overrides = {}
        model = ViTForImageClassification.from_pretrained(source)
    rows, times = [], []

    def record(step: int) -> None:
        row = dict(
            variant=variant,
            seed=seed,
            step=step,
            steps=args.steps,
            config=overrides,
            pretrained=source.name,
            step_s=statistics.median(times) if times else None,
            **measure(model, xte, yte, xtruth, shapley),
        )
        rows.append(row)
        with open(args.jsonl, "a") as f:
            f.write(json.dumps(row) + "\n")
        shown = {k: v for k, v in row.items() if k not in ("config", "pearson_per_image")}
        print(json.dumps(shown), flush=True)

    model.train()
    record(0)

    def after_step(step: int, loss: torch.Tensor) -> None:
        if step % args.eval_every == 0 or step == args.steps:
            record(step)

    diverged = train_steps(
        model, xtr, ytr, args.steps, args.batch_size, seed, shapley, times, after_step
    )
    if diverged is not None:
        rows.append(dict(variant=variant, seed=seed, step=diverged, diverged=True))
        with open(args.jsonl, "a") as f:
            f.write(json.dumps(rows[-1]) + "\n")
    return rows


def train_steps(
    model: torch.nn.Module,
    xtr: torch.Tensor,
    ytr: torch.Tensor,
    steps: int,
    batch_size: int,
    seed: int,
    shapley: bool,
    times: list[float],
    after_step=None,
) -> int | None:
    """The benchmarks' training loop: ``steps`` steps of the main job's optimizer
    (:func:`optimizer`) on batches drawn without replacement, a new seeded permutation every
    epoch; the Shapley model's own loss or cross-entropy; gradients clipped at 1.0. Appends each
    step's seconds to ``times`` and calls ``after_step(step, loss)`` after each (steps counted
    from 1). Returns the step at which the loss stopped being finite, or None."""
    opt, schedule = optimizer(model, steps)
    order = torch.Generator().manual_seed(seed)
    epoch, permutation, position = 0, torch.randperm(len(xtr), generator=order), 0
    for step in range(steps):
        if position + batch_size > len(xtr):
            epoch, permutation, position = epoch + 1, torch.randperm(len(xtr), generator=order), 0
        index = permutation[position : position + batch_size]
        position += batch_size
        start = time.perf_counter()
        if shapley:
            out = model(
                xtr[index], labels=ytr[index], example_index=index, epoch=epoch, global_step=step
            )
            loss = out.loss
        else:
            loss = F.cross_entropy(model(xtr[index]).logits, ytr[index])
        if not math.isfinite(float(loss.detach())):
            return step + 1
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        schedule.step()
        times.append(time.perf_counter() - start)
        if after_step is not None:
            after_step(step + 1, loss)
    return None


def fmt(values: list[float], digits: int = 3) -> str:
    return " / ".join(f"{v:.{digits}f}" for v in values) if values else "-"


def hierarchical_interval(
    per_seed: list[list[float]], *, resamples: int = 4000
) -> tuple[float, float]:
    """95% bootstrap interval of the mean per-image r: resample seeds, then images within each.

    Vectorized over resamples: for every seed slot of a resample, each seed's images are
    resampled independently and the slot takes the mean of the seed it drew.
    """
    g = torch.Generator().manual_seed(0)
    values = [torch.tensor(v, dtype=torch.float64) for v in per_seed]
    num_seeds = len(values)
    drawn = torch.randint(num_seeds, (resamples, num_seeds), generator=g)
    slots = []
    for slot in range(num_seeds):
        means = torch.stack(
            [v[torch.randint(len(v), (resamples, len(v)), generator=g)].mean(1) for v in values]
        )  # (seeds, resamples): one image resample of every seed
        slots.append(means.gather(0, drawn[:, slot][None])[0])
    means = torch.stack(slots).mean(0)
    low, high = torch.quantile(means, torch.tensor([0.025, 0.975], dtype=torch.float64))
    return float(low), float(high)


def confirmation_lines(groups: dict[tuple, list[dict]], final: dict[tuple, dict]) -> list[str]:
    """The targets of the faithfulness issue for every arm run on >= 2 seeds."""
    from scipy.stats import t as student_t

    lines = [
        "",
        "## Against the targets (arms with >= 2 seeds)",
        "",
        "Targets: pooled relative error <= 0.25; mean per-image r >= 0.95 with lower 95% bound "
        "(bootstrap over seeds, then images) >= 0.90; non-inferiority mean(d) + t(0.95, n-1) "
        "sd(d) / sqrt(n) <= 2 points, d = accuracy(plain) - accuracy(arm) per seed; NLL no worse "
        "than plain + 0.05.",
        "",
        "| variant | steps | seeds | pooled rel. error (mean) | r [95%] | Spearman | d upper bound "
        "(points) | NLL - plain | targets met |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for (variant, steps), rs in sorted(groups.items()):
        if variant == "plain" or len(rs) < 2 or any(r.get("diverged") for r in rs):
            continue
        plains = [final.get(("plain", r["seed"], steps)) for r in rs]
        per_seed = [r["pearson_per_image"] for r in rs]
        low, high = hierarchical_interval(per_seed)
        r_mean = statistics.mean(statistics.mean(p) for p in per_seed)
        error = statistics.mean(r["pooled_relative_error"] for r in rs)
        spearman = statistics.mean(r["spearman"] for r in rs)
        bound = nll_gap = float("nan")
        if all(plains):
            d = [100 * (p["accuracy"] - r["accuracy"]) for p, r in zip(plains, rs, strict=True)]
            n = len(d)
            bound = statistics.mean(d) + student_t.ppf(0.95, n - 1) * statistics.stdev(d) / n**0.5
            nll_gap = statistics.mean(r["nll"] - p["nll"] for p, r in zip(plains, rs, strict=True))
        met = error <= 0.25 and r_mean >= 0.95 and low >= 0.90 and bound <= 2 and nll_gap <= 0.05
        lines.append(
            f"| {variant} | {steps} | {len(rs)} | {error:.3f} | {r_mean:.3f} [{low:.3f}, "
            f"{high:.3f}] | {spearman:.3f} | {bound:+.1f} | {nll_gap:+.3f} | "
            f"{'yes' if met else 'no'} |"
        )
    return lines


def regime(row: dict) -> str:
    """Steps and the plain classifier's pretraining epochs: rows compare only within one."""
    epochs = row.get("pretrained", "").rsplit("-", 2)[-2] if row.get("pretrained") else "?"
    return f"{row.get('steps')} ({epochs} classifier)"


def write_table(path: Path, jsonl: Path) -> str:
    rows = [json.loads(line) for line in jsonl.read_text().splitlines() if line.strip()]
    final: dict[tuple, dict] = {}
    curves: dict[tuple, list[dict]] = {}
    for r in rows:
        key = (r["variant"], r["seed"], regime(r))
        curves.setdefault(key, []).append(r)
        if r.get("step") == r.get("steps") or r.get("diverged"):
            final[key] = r
    lines = [
        "# Recipe study v2",
        "",
        __doc__.split("\n\n")[1].replace("\n", " ").strip(),
        "",
        "## Final rows (per seed, in seed order)",
        "",
        "| variant | steps | seeds | accuracy | acc - plain (same seed) | NLL | r (centred) | "
        "Spearman | pooled rel. error | raw r | step s |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    groups: dict[tuple, list[dict]] = {}
    for (variant, _seed, steps), r in sorted(final.items(), key=lambda kv: (kv[0][2], kv[0][1])):
        groups.setdefault((variant, steps), []).append(r)
    for (variant, steps), rs in sorted(
        groups.items(), key=lambda kv: (kv[0][1], kv[0][0] != "plain", kv[0][0])
    ):
        if any(r.get("diverged") for r in rs):
            lines.append(f"| {variant} | {steps} | {len(rs)} | diverged | | | | | | | |")
            continue
        diffs = []
        for r in rs:
            plain = final.get(("plain", r["seed"], steps))
            if plain and variant != "plain":
                diffs.append(r["accuracy"] - plain["accuracy"])

        def get(key: str, rs: list[dict] = rs) -> list[float]:
            return [r[key] for r in rs if key in r]

        lines.append(
            f"| {variant} | {steps} | {len(rs)} | {fmt(get('accuracy'))} | {fmt(diffs)} | "
            f"{fmt(get('nll'))} | {fmt(get('pearson'))} | {fmt(get('spearman'))} | "
            f"{fmt(get('pooled_relative_error'))} | {fmt(get('raw_pearson'))} | "
            f"{fmt([r['step_s'] for r in rs if r.get('step_s')], 2)} |"
        )
    lines += confirmation_lines(groups, final)
    lines += [
        "",
        "## Curves: accuracy / centred r / pooled relative error against steps",
        "",
    ]
    for (variant, seed, steps), rs in sorted(curves.items()):
        if variant == "plain":
            points = [f"{r['step']}: {r['accuracy']:.3f}" for r in rs if "accuracy" in r]
        else:
            points = [
                f"{r['step']}: {r['accuracy']:.3f} / {r['pearson']:.2f} / {r['pooled_relative_error']:.2f}"
                for r in rs
                if "pearson" in r
            ]
        lines.append(f"- {variant}, seed {seed}, {steps}: " + "; ".join(points))
    text = "\n".join(lines) + "\n"
    path.write_text(text)
    return text


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--variants", nargs="+", default=["plain", "default", "centred"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--steps", type=int, default=250)
    parser.add_argument("--eval-every", type=int, default=125)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--num-train", type=int, default=8000)
    parser.add_argument("--num-test", type=int, default=2000)
    parser.add_argument("--truth-images", type=int, default=32)
    parser.add_argument("--pretrain-epochs", type=int, default=12)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run")
    parser.add_argument("--jsonl", type=Path, default=RESULTS / "recipe_v2.jsonl")
    parser.add_argument("--table", type=Path, default=RESULTS / "recipe_v2.md")
    parser.add_argument("--reuse", action="store_true", help="only rebuild the table")
    args = parser.parse_args(argv)
    unknown = [v for v in args.variants if v not in VARIANTS]
    if unknown:
        parser.error(f"unknown variants {unknown}; known: {sorted(VARIANTS)}")
    if args.steps < COMMON["loss_warmup_steps"]:
        parser.error(
            f"--steps {args.steps} is below the loss warm-up ({COMMON['loss_warmup_steps']} "
            "steps): the objective would never reach its weights."
        )
    if args.eval_every < 1 or args.truth_images < 2:
        parser.error("--eval-every must be >= 1 and --truth-images >= 2 (r needs images).")
    if not args.reuse:
        for seed in args.seeds:  # once per seed, before the runs that share it
            pretrained_dir(seed, args.pretrain_epochs, args.num_train)
        jobs = [(v, s) for s in args.seeds for v in args.variants]
        with ProcessPoolExecutor(args.jobs, mp_context=get_context("spawn")) as pool:
            for future in [pool.submit(run_one, v, s, args) for v, s in jobs]:
                future.result()
    print(write_table(args.table, args.jsonl))


if __name__ == "__main__":
    main()
