"""The training-recipe study: which objective settings give a model that is accurate AND faithful?

Regime (the realistic one): a tiny ViT classifier is pretrained with plain cross-entropy on the
built-in shapes data set and saved locally; each variant then wraps it with
``ShapleyForImageClassification.from_backbone`` and fine-tunes for the same number of steps as
the plain baseline, which continues the stock classifier with cross-entropy alone (equal steps).

For each run: test accuracy, per-image Pearson r and relative L2 error of phi against the exact
Shapley values of the model's own game (P = 16, all 2**16 coalitions), and the median step time.

    python benchmarks/recipe_v1.py                    # the full table (about 12 runs, 2 in parallel)
    python benchmarks/recipe_v1.py --variants default plain --seeds 0 --steps 200   # a quick look
    python benchmarks/recipe_v1.py --family resnet      # the pixel-baseline family (tiny ResNet)

``--family resnet``: a tiny ResNet (3 stages, 48 px images, a 3 x 3 final feature grid, one
cell per player, P = 9) instead of the tiny ViT; same regime, same variants. Its table goes to
``benchmarks/results/recipe_resnet.md``.

Writes ``benchmarks/results/recipe_v1.md`` and ``recipe.jsonl`` (one line per run).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path

import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "outputs" / "recipe"

# The tiny backbone: 64 px images, 16 px patches -> a 4 x 4 token grid, one token per player.
BACKBONE = dict(
    image_size=64,
    patch_size=16,
    hidden_size=128,
    num_hidden_layers=4,
    num_attention_heads=4,
    intermediate_size=256,
)
PLAYERS_GRID = (4, 4)

# Per family: backbone config kwargs, image size, players grid, and whether the model is a
# pixel-baseline family (which needs ShapleyConfig.image_size: ResNet configs have none).
FAMILIES = {
    "vit": dict(backbone=BACKBONE, image_size=64, players_grid=PLAYERS_GRID),
    "resnet": dict(
        backbone=dict(
            embedding_size=16, hidden_sizes=[16, 32, 64], depths=[1, 1, 1], layer_type="basic"
        ),
        image_size=48,
        players_grid=(3, 3),
    ),
}

# Each variant: ShapleyConfig overrides passed to from_backbone ("plain" = stock classifier).
VARIANTS: dict[str, dict] = {
    "plain": {},
    "default": dict(
        prediction_mode="shapley_sum", shapley_loss_weight=1.0, distill_loss_weight=1.0
    ),
    "lambda0": dict(
        prediction_mode="shapley_sum", shapley_loss_weight=0.0, distill_loss_weight=1.0
    ),
    "alpha0": dict(prediction_mode="shapley_sum", shapley_loss_weight=1.0, distill_loss_weight=0.0),
    "no_norm": dict(prediction_mode="shapley_sum", shapley_loss_normalization="none"),
    "centered": dict(prediction_mode="shapley_sum", center_logits=True),
    "no_stopgrad": dict(prediction_mode="shapley_sum", shapley_stop_gradient=False),
    "no_warmup": dict(prediction_mode="shapley_sum", loss_warmup_steps=0),
    "m16_g4": dict(
        prediction_mode="shapley_sum", num_shapley_coalitions=16, num_distill_coalitions=4
    ),
    "m4_g2": dict(
        prediction_mode="shapley_sum", num_shapley_coalitions=4, num_distill_coalitions=2
    ),
    "backbone_head": dict(prediction_mode="backbone_head", train_backbone=True),
}
# The same variants with soft voting on raw (not class-centered) votes: the only kind before
# center_votes existed, and what the tiny ResNet's first rows ran with (center_votes defaults
# to True for the pixel-baseline families, False for ViT).
for _name in ("default", "lambda0", "alpha0", "no_norm", "centered"):
    VARIANTS[f"{_name}_uncentered_votes"] = {**VARIANTS[_name], "center_votes": False}

# Shared by every Shapley variant unless overridden.
COMMON = dict(
    num_shapley_coalitions=8,
    num_distill_coalitions=2,
    loss_warmup_steps=100,
    coalition_batch_size=256,
)


@dataclass
class Setup:
    pretrain_steps: int = 2000
    steps: int = 400
    batch_size: int = 64
    pretrain_lr: float = 1e-3
    lr: float = 3e-4
    num_train: int = 6000
    num_test: int = 2000
    truth_images: int = 8
    device: str = "cpu"
    max_grad_norm: float | None = None
    out_dir: str = str(OUT)
    family: str = "vit"
    extra: dict = field(default_factory=dict)

    @property
    def spec(self) -> dict:
        return FAMILIES[self.family]


def _classifier_class(family: str):
    from transformers import ResNetForImageClassification, ViTForImageClassification

    return {"vit": ViTForImageClassification, "resnet": ResNetForImageClassification}[family]


def _backbone_config(family: str, **kwargs):
    from transformers import ResNetConfig, ViTConfig

    config_class = {"vit": ViTConfig, "resnet": ResNetConfig}[family]
    return config_class(**FAMILIES[family]["backbone"], **kwargs)


def _data(setup: Setup):
    from hf_shapley.data import generate_shapes

    def prep(arrays):
        x = torch.from_numpy(arrays.images).permute(0, 3, 1, 2).float() / 255
        return (x - 0.5) / 0.5, torch.from_numpy(arrays.labels)

    size = setup.spec["image_size"]
    xtr, ytr = prep(generate_shapes(setup.num_train, image_size=size, split="train"))
    xte, yte = prep(generate_shapes(setup.num_test, image_size=size, split="test"))
    return tuple(t.to(setup.device) for t in (xtr, ytr, xte, yte))


def _batches(num: int, batch_size: int, seed: int):
    """Endless (epoch, indices) stream, reshuffled each epoch from (seed, epoch)."""
    epoch = 0
    while True:
        perm = torch.randperm(num, generator=torch.Generator().manual_seed(seed * 1000 + epoch))
        for i in range(0, num - batch_size + 1, batch_size):
            yield epoch, perm[i : i + batch_size]
        epoch += 1


def _train(
    model, xtr, ytr, steps: int, setup: Setup, seed: int, shapley: bool, lr: float | None = None
) -> list[float]:
    """The study's one training loop: the pretraining, the plain baseline and every Shapley
    variant (AdamW with weight decay on every parameter, 50-step linear warm-up then linear
    decay, the same batches, clipping only with ``--max-grad-norm``).

    Deliberately not ``hf_shapley.plain_classifier.train_plain_classifier`` (the Trainer: no
    weight decay on biases and norms, clipping at 1.0, its own schedule and batch order): the
    plain baseline must train exactly like the variants it is compared with at equal steps,
    and the recorded tables and cached pretrained models come from this loop.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr or setup.lr, weight_decay=0.05)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / 50) * max(0.0, 1 - s / steps)
    )
    model.train()
    times = []
    stream = _batches(len(xtr), setup.batch_size, seed)
    for step in range(steps):
        epoch, idx = next(stream)
        t0 = time.perf_counter()
        if shapley:
            loss = model(
                xtr[idx], labels=ytr[idx], example_index=idx, epoch=epoch, global_step=step
            ).loss
        else:
            loss = F.cross_entropy(model(xtr[idx]).logits, ytr[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if setup.max_grad_norm:
            torch.nn.utils.clip_grad_norm_(params, setup.max_grad_norm)
        opt.step()
        sched.step()
        if xtr.is_cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return times


@torch.no_grad()
def _accuracy(model, x, y) -> float:
    model.eval()
    correct = 0
    for i in range(0, len(x), 500):
        correct += (model(x[i : i + 500]).logits.argmax(-1) == y[i : i + 500]).sum().item()
    return correct / len(x)


@torch.no_grad()
def _predictions(model, x) -> torch.Tensor:
    model.eval()
    return torch.cat([model(x[i : i + 500]).logits.argmax(-1).cpu() for i in range(0, len(x), 500)])


def pretrained_dir(seed: int, setup: Setup) -> Path:
    """Pretrain (once per seed, cached) the stock classifier with plain cross-entropy."""
    from hf_shapley.data import SHAPES_LABELS

    clip = f"-clip{setup.max_grad_norm:g}" if setup.max_grad_norm else ""
    family = "" if setup.family == "vit" else f"{setup.family}-"
    path = Path(setup.out_dir) / f"{family}pretrained-seed{seed}-steps{setup.pretrain_steps}{clip}"
    if (path / "model.safetensors").exists():
        return path
    print(f"pretraining seed {seed} for {setup.pretrain_steps} steps", flush=True)
    torch.manual_seed(seed)
    labels = dict(enumerate(SHAPES_LABELS[:4]))
    model = _classifier_class(setup.family)(
        _backbone_config(setup.family, id2label=labels, label2id={v: k for k, v in labels.items()})
    ).to(setup.device)
    xtr, ytr, xte, yte = _data(setup)
    _train(
        model,
        xtr,
        ytr,
        setup.pretrain_steps,
        setup,
        seed + 10_000,
        shapley=False,
        lr=setup.pretrain_lr,
    )
    model.save_pretrained(path)
    (path / "pretrain.json").write_text(json.dumps({"test_accuracy": _accuracy(model, xte, yte)}))
    return path


def run_one(variant: str, seed: int, setup: Setup) -> dict:
    torch.set_num_threads(1)
    import hf_shapley  # noqa: F401  (registers the auto classes)
    from hf_shapley import ShapleyForImageClassification
    from hf_shapley.evaluation import exact_model_shapley_values, shapley_agreement

    xtr, ytr, xte, yte = _data(setup)
    source = pretrained_dir(seed, setup)
    torch.manual_seed(seed)
    classifier_class = _classifier_class(setup.family)
    original = _predictions(classifier_class.from_pretrained(source).to(setup.device), xte)
    if variant == "plain":
        model = classifier_class.from_pretrained(source).to(setup.device)
        times = _train(model, xtr, ytr, setup.steps, setup, seed, shapley=False)
        result = dict(variant=variant, seed=seed, accuracy=_accuracy(model, xte, yte))
    else:
        overrides = {**COMMON, **VARIANTS[variant], **setup.extra}
        if setup.family != "vit":
            overrides.setdefault("image_size", setup.spec["image_size"])
        model = ShapleyForImageClassification.from_backbone(
            source,
            players_grid=setup.spec["players_grid"],
            load_image_processor=False,
            coalition_seed=seed,
            **overrides,
        ).to(setup.device)
        times = _train(model, xtr, ytr, setup.steps, setup, seed, shapley=True)
        accuracy = _accuracy(model, xte, yte)
        x = xte[: setup.truth_images]
        with torch.no_grad():
            out = model(x)
        out = type(out)(**{k: v.cpu() for k, v in out.items()})
        truth = exact_model_shapley_values(model, x)
        predicted = out.logits.argmax(-1)
        agree = shapley_agreement(out.shapley_values, truth, predicted)
        # Other classes: the class ranked second, a separate number.
        second = out.logits.topk(2, dim=-1).indices[:, 1]
        other = shapley_agreement(out.shapley_values, truth, second)
        phi_pred = out.shapley_values.gather(
            2, predicted.view(-1, 1, 1).expand(-1, model.num_players, 1)
        )
        result = dict(
            variant=variant,
            seed=seed,
            accuracy=accuracy,
            pearson=agree.mean_pearson,
            pearson_ci=agree.pearson_interval(),
            relative_l2=agree.median_relative_l2,
            pearson_other=other.mean_pearson,
            phi_scale=float(phi_pred.abs().mean()),
            config={k: v for k, v in overrides.items()},
        )
    # Agreement of the fine-tuned model's predictions with the pretrained classifier's (what
    # backbone_head with train_backbone=True reports; the plain row is the reference).
    result["agreement"] = float((_predictions(model, xte) == original).float().mean())
    result["family"] = setup.family
    result["step_ms"] = 1000 * statistics.median(times[10:])
    result["steps"] = setup.steps
    result["lr"] = setup.lr
    result["device"] = setup.device
    result["max_grad_norm"] = setup.max_grad_norm
    with open(Path(setup.out_dir) / "recipe.jsonl", "a") as f:
        f.write(json.dumps(result) + "\n")
    print(json.dumps(result), flush=True)
    return result


def write_table(results: list[dict], setup: Setup, path: Path) -> None:
    """One row per (variant, fine-tuning lr, steps); accuracy compared with plain of the same group."""
    groups: dict[tuple, list[dict]] = {}
    for r in results:
        device = r.get("device", "cpu") + (
            f", clip {r['max_grad_norm']:g}" if r.get("max_grad_norm") else ""
        )
        key = (device, r.get("lr", 3e-4), r["steps"], r["variant"])
        groups.setdefault(key, []).append(r)

    def fmt(rows, key, digits=3):
        vals = [r[key] for r in rows if key in r]
        return " / ".join(f"{v:.{digits}f}" for v in vals) if vals else "-"

    lines = [
        "| fine-tuning | variant | seeds | accuracy (per seed) | mean acc - plain | r pred. class | rel. L2 | r 2nd class | mean abs phi | step ms |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    with_agreement = any("agreement" in r for r in results)
    if with_agreement:  # newer runs also record agreement with the pretrained classifier
        lines[0] = lines[0].replace("| step ms |", "| agreement w/ pretrained | step ms |")
        lines[1] += "---|"
    for (device, lr, steps, name), rows in sorted(
        groups.items(), key=lambda kv: (kv[0][:3], kv[0][3] != "plain")
    ):
        rows = sorted(rows, key=lambda r: r["seed"])
        plain = groups.get((device, lr, steps, "plain"), [])
        plain_acc = statistics.mean(r["accuracy"] for r in plain) if plain else float("nan")
        acc = statistics.mean(r["accuracy"] for r in rows)
        ms = statistics.median(r["step_ms"] for r in rows)
        lines.append(
            f"| {device}, lr {lr:g}, {steps} steps | {name} | {len(rows)} | {fmt(rows, 'accuracy')} | {acc - plain_acc:+.3f} | "
            f"{fmt(rows, 'pearson')} | {fmt(rows, 'relative_l2')} | {fmt(rows, 'pearson_other')} | "
            f"{fmt(rows, 'phi_scale', 2)} |"
            + (f" {fmt(rows, 'agreement')} |" if with_agreement else "")
            + f" {ms:.0f} |"
        )
    spec = setup.spec
    P = spec["players_grid"][0] * spec["players_grid"][1]
    model_text = (
        f"Tiny ViT ({BACKBONE}), players {PLAYERS_GRID} (one token per player); a stock ViT classifier is "
        if setup.family == "vit"
        else f"Tiny ResNet ({spec['backbone']}), {spec['image_size']} px images, players "
        f"{spec['players_grid']} (one final feature cell per player, absent blocks at the baseline 0); "
        "a stock ResNet classifier is "
    )
    header = (
        model_text
        + f"pretrained {setup.pretrain_steps} steps with plain CE (lr {setup.pretrain_lr}) per seed, then each variant "
        f"fine-tunes it for the given steps (batch {setup.batch_size}, AdamW, linear warm-up 50 steps and linear "
        f"decay); plain = the stock classifier continued with CE at equal steps. Accuracy on {setup.num_test} "
        f"test images; r (mean per-image Pearson) and rel. L2 (median) against exact Shapley values of the "
        f"model's own game (all 2^{P} coalitions) on {setup.truth_images} test images; common settings {COMMON}. "
        "Agreement: the fraction of test images on which the model predicts what the pretrained classifier did. "
        "Step times come from runs two at a time on a shared 2-core CPU: use benchmarks/train_cost.py for cost.\n\n"
    )
    path.write_text("# Recipe study\n\n" + header + "\n".join(lines) + "\n")
    print(path.read_text())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--variants",
        nargs="+",
        default=["plain", "default", "lambda0", "alpha0", "no_norm", "backbone_head"],
    )
    parser.add_argument("--family", default="vit", choices=sorted(FAMILIES))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--steps", type=int, default=Setup.steps)
    parser.add_argument("--lr", type=float, default=Setup.lr, help="fine-tuning learning rate")
    parser.add_argument("--pretrain-steps", type=int, default=Setup.pretrain_steps)
    parser.add_argument("--truth-images", type=int, default=Setup.truth_images)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--max-grad-norm", type=float, default=None, help="gradient clipping")
    parser.add_argument(
        "--out-dir", type=Path, default=OUT, help="pretrained models and recipe.jsonl"
    )
    parser.add_argument(
        "--table",
        type=Path,
        default=None,
        help="default: results/recipe_v1.md (vit), recipe_<family>.md",
    )
    parser.add_argument(
        "--reuse", action="store_true", help="only rebuild the table from recipe.jsonl"
    )
    args = parser.parse_args(argv)
    setup = Setup(
        steps=args.steps,
        pretrain_steps=args.pretrain_steps,
        truth_images=args.truth_images,
        lr=args.lr,
        device=args.device,
        max_grad_norm=args.max_grad_norm,
        out_dir=str(args.out_dir),
        family=args.family,
    )
    if args.table is None:
        name = "recipe_v1.md" if args.family == "vit" else f"recipe_{args.family}.md"
        args.table = REPO / "benchmarks" / "results" / name
    args.out_dir.mkdir(parents=True, exist_ok=True)
    args.table.parent.mkdir(parents=True, exist_ok=True)
    if not args.reuse:
        torch.set_num_threads(1)
        # One CPU thread per worker: two 2-thread processes on 2 cores slow small matmuls ~100x.
        # Each worker process holds its own CUDA context with --device cuda.
        with ProcessPoolExecutor(
            args.jobs,
            mp_context=get_context("spawn"),
            initializer=torch.set_num_threads,
            initargs=(1,),
        ) as pool:
            list(pool.map(pretrained_dir, args.seeds, [setup] * len(args.seeds)))
            jobs = [(v, s) for v in args.variants for s in args.seeds]
            list(pool.map(run_one, [v for v, _ in jobs], [s for _, s in jobs], [setup] * len(jobs)))
    lines = (args.out_dir / "recipe.jsonl").read_text().splitlines()
    results = [json.loads(line) for line in lines]
    results = [
        r
        for r in results
        if r["variant"] in args.variants
        and r["seed"] in args.seeds
        and r.get("family", "vit") == args.family
    ]
    write_table(results, setup, args.table)


if __name__ == "__main__":
    sys.path.insert(0, str(REPO / "src"))
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
