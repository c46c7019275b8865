"""Explainer study: what limits the agreement of the one-pass explanation with its own game?

In the explainer recipe (``configuration_shapley.EXPLAINER_DEFAULTS``) the classifier trains as
a plain fine-tune and the Shapley head reads detached features: the head is an amortized
explainer of a (slowly moving) game. Recipe study v2 (``recipe.py``) found that head capacity
is what moves agreement (linear 0.72 -> MLP 0.82 -> attention 0.86, centred r) and that the
curve still rises at the main job's 250 steps; freezing the classifier changed little.

This study freezes the game (a trained model: the main job's by default) and caches, once,
what any head needs:

* every training image's hidden states at every depth of the backbone (with the special
  tokens), the full logits and ``v(empty)``;
* the game's values on ``M`` kernel-sampled complementary pairs of coalitions per image (the
  same sampler and packed passes as training);
* on held-out test images, a KernelSHAP truth with 4,096 paired evaluations (pooled error about
  0.05 against exact enumeration on this kind of model: ``results/truth_check_recipe_main_job.json``).

Head variants then train on the cache (minutes, not hours) side by side, with the recipe's loss
(centred, per-image normalized Shapley regression, efficiency imposed as in the model):

* ``attention-L``: the library's ``ShapleyHead`` (L self-attention layers + a 256 MLP) on the
  final features, as the model uses it (``attention-1`` is the recipe's head);
* ``players-attention-L``: the same head on player features (each player's tokens averaged
  first): attention over P players instead of N tokens, so a step costs about P / N as much;
* ``players-mix-attention-L`` (``-w256``): ``mix-attention-L`` per player, each player's
  tokens at every depth concatenated before the linear map (nothing averaged away), then
  attention over P players (at width 256 for ``-w256``); lost to the token-level head
  (pooled error 0.266 / 0.281 against 0.220 at 1,000 steps; 0.305 at 2,000);
* ``mix-attention-L``: ``attention-L`` on every depth's states at once, the library's
  ``ShapleyHead(num_hidden_states=L + 1)`` (``head_reads_hidden_states``: each depth
  layer-normed, one linear map back to the width): the early layers keep what each patch
  shows, the late ones what the classifier made of it; nearly free;
* ``wide-attention-L``: ``attention-L`` with a 4x (not 2x) feed-forward width;
* ``mix-attention-L-wW``: ``mix-attention-L`` with the head's layers ``W`` wide instead of the
  backbone's width (the depth mix maps to ``W``): about (W / D)^2 of a layer's cost;
* ``branch-k``: a copy of the classifier's own top ``k`` encoder blocks and final norm,
  initialized from its weights, reading the hidden states that enter them, then the 256 MLP
  (``branch-4`` on this 4-layer ViT is a full explainer network, as in ViT-Shapley);
* steps, learning rate and coalitions per step.

Results: ``results/explainer_study.{md,jsonl}`` (one row per variant and checkpoint, kept).

    python benchmarks/explainer_study.py --model outputs/shapley-vit-shapes
    python benchmarks/explainer_study.py --variants attention-1 branch-2 --steps 250 1000
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import math
import time
from pathlib import Path

import torch
import torch.nn as nn
from recipe import tensors

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
CACHE = REPO / "outputs" / "explainer-study"
TRUTH_EVALUATIONS = 4096
HEAD_HIDDEN = 256

# name -> (kind, depth): "attention" = ShapleyHead with `depth` attention layers on the final
# features; "branch" = copies of the top `depth` encoder blocks (0: the final features + MLP).
VARIANTS: dict[str, tuple[str, int]] = {
    "mlp": ("attention", 0),
    "attention-1": ("attention", 1),
    "attention-2": ("attention", 2),
    "attention-3": ("attention", 3),
    "attention-4": ("attention", 4),
    "mix-attention-3": ("mix-attention", 3),
    "wide-attention-3": ("wide-attention", 3),
    "mix-attention-3-w96": ("mix-attention", 3),
    "mix-attention-3-w64": ("mix-attention", 3),
    "players-mix-attention-3": ("players-mix-attention", 3),
    "players-mix-attention-3-w256": ("players-mix-attention", 3),
    "players-attention-2": ("players-attention", 2),
    "players-attention-3": ("players-attention", 3),
    "players-attention-4": ("players-attention", 4),
    "branch-1": ("branch", 1),
    "branch-2": ("branch", 2),
    "branch-4": ("branch", 4),
}

# Variants whose head runs narrower than the backbone (the depth mix maps (L + 1) D -> width):
# a layer's cost goes with width^2, and the 4x FF width arm showed no gain from capacity.
HEAD_WIDTHS: dict[str, int] = {
    "mix-attention-3-w96": 96,
    "mix-attention-3-w64": 64,
    "players-mix-attention-3-w256": 256,
}


def load_model(path: str):
    import hf_shapley  # noqa: F401  (registers the auto classes)
    from hf_shapley import ShapleyForImageClassification

    model = ShapleyForImageClassification.from_pretrained(path).eval()
    if model.config.prediction_mode != "backbone_head" or model.adapter.removal != "token_removal":
        raise SystemExit(
            f"--model {path}: this study needs a wrapped token-removal classifier "
            f"(prediction_mode='backbone_head', ViT/DeiT/DINOv2); got "
            f"{model.config.prediction_mode!r} with {model.adapter.removal}."
        )
    return model


@torch.no_grad()
def hidden_states(model, x: torch.Tensor) -> torch.Tensor:
    """(B, L + 1, s + N, D): the embeddings, then the output of every encoder block."""
    game = model.game
    states = [game.prepare(x)]
    for layer in model.adapter.layers(model.backbone):
        states.append(layer(states[-1], attention_mask=None))
    return torch.stack(states, dim=1)


@torch.no_grad()
def build_cache(model, args: argparse.Namespace) -> dict:
    """Hidden states, full logits, v(empty) and M coalition values per training image; the truth
    on the test images. Written once per (model, sizes) and reused."""
    from tqdm.auto import tqdm

    from hf_shapley.evaluation import model_shapley_truth
    from hf_shapley.models.coalitions import sample_shapley_kernel_coalitions

    # Keyed by the weights, not the directory's name: a retrained model in the same directory
    # must not reuse another model's hidden states and values.
    weights = hashlib.sha1((Path(args.model) / "model.safetensors").read_bytes()).hexdigest()[:12]
    name = f"{weights}-n{args.num_train}-m{args.cached_coalitions}-t{args.truth_images}.pt"
    path = CACHE / name
    if path.is_file():
        return torch.load(path)
    image_size = model.image_size[0]
    xtr, _ = tensors(args.num_train, "train", image_size=image_size)
    xte, yte = tensors(args.truth_images, "test", image_size=image_size)
    P = model.num_players
    states, logits, empty, coalitions, values = [], [], [], [], []
    for start in tqdm(range(0, len(xtr), 64), desc="caching the game"):
        x = xtr[start : start + 64]
        index = torch.arange(start, start + len(x))
        out = model(x)
        masks = sample_shapley_kernel_coalitions(
            P, args.cached_coalitions, seed=0, epoch=0, example_indices=index
        )
        states.append(hidden_states(model, x).half())
        logits.append(out.logits)
        empty.append(out.base_values)
        coalitions.append(masks)
        values.append(model(x, coalition=masks).logits)
    start = time.perf_counter()
    truth = model_shapley_truth(
        model, xte, max_exact_players=0, tolerance=0.0, max_evaluations=TRUTH_EVALUATIONS
    ).values
    out = model(xte)
    cache = dict(
        states=torch.cat(states),
        logits=torch.cat(logits),
        empty=torch.cat(empty),
        coalitions=torch.cat(coalitions),
        values=torch.cat(values),
        test_states=hidden_states(model, xte).half(),
        test_logits=out.logits,
        test_empty=out.base_values,
        test_labels=yte,
        recipe_phi=out.shapley_values,  # the model's own head, for reference
        truth=truth,
        truth_seconds=time.perf_counter() - start,
    )
    CACHE.mkdir(parents=True, exist_ok=True)
    torch.save(cache, path)
    return cache


class Explainer(nn.Module):
    """A head on cached hidden states: (B, L + 1, s + N, D) -> per-token (B, N, K), or
    per-player (B, P, K) for ``players-attention``."""

    def __init__(self, model, kind: str, depth: int, width: int | None = None):
        super().__init__()
        from hf_shapley.models.modeling_shapley import ShapleyHead

        backbone, adapter = model.backbone, model.adapter
        layers = adapter.layers(backbone)
        self.num_special = model.game.num_special_tokens
        self.num_layers = len(layers)
        self.norm = copy.deepcopy(backbone.layernorm).requires_grad_(kind == "branch")
        hidden = adapter.hidden_size(model.config.backbone_config)
        K = model.num_labels
        self.player_mean = None
        self.reads_depths = kind in ("mix-attention", "players-mix-attention")
        self.player_tokens = None
        depths = self.num_layers + 1
        if kind == "players-mix-attention":
            # Each player's tokens at every depth, concatenated (nothing averaged away), one
            # linear map to the width, then attention over P players instead of N tokens.
            order = torch.argsort(model.game.token_to_player, stable=True)
            self.player_tokens = order.reshape(model.num_players, -1)
            depths *= self.player_tokens.shape[1]
            kind = "mix-attention"
        if kind == "players-attention":
            game = model.game
            self.player_mean = lambda h: game.player_sum(h) / game.tokens_per_player
            kind = "attention"
        if kind in ("attention", "mix-attention", "wide-attention"):
            self.start = self.num_layers
            self.blocks = nn.ModuleList()
            depths = depths if self.reads_depths else 1
            self.head = ShapleyHead(hidden, K, HEAD_HIDDEN, 0.0, depth, depths)
            if width is not None:  # the same head at `width`, its depth mix mapping to it
                self.head = ShapleyHead(width, K, HEAD_HIDDEN, 0.0, depth)
                self.head.hidden_states_mix = nn.Sequential(
                    nn.LayerNorm(hidden, elementwise_affine=False),
                    nn.Flatten(-2),
                    nn.Linear(depths * hidden, width),
                )
            if kind == "wide-attention":
                for layer in self.head.mixer.layers:
                    layer.linear1 = nn.Linear(hidden, 4 * hidden)
                    layer.linear2 = nn.Linear(4 * hidden, hidden)
        else:
            if not 0 <= depth <= self.num_layers:
                raise SystemExit(f"branch-{depth}: the backbone has {self.num_layers} blocks.")
            self.start = self.num_layers - depth
            self.blocks = nn.ModuleList(copy.deepcopy(layer) for layer in layers[self.start :])
            self.blocks.requires_grad_(True)
            self.head = ShapleyHead(hidden, K, HEAD_HIDDEN, 0.0, 0)

    def forward(self, states: torch.Tensor) -> torch.Tensor:
        if self.reads_depths:  # (B, L + 1, T, D) -> (B, N, L + 1, D), as the model's view
            h = states.float().transpose(1, 2)[:, self.num_special :]
            if self.player_tokens is not None:  # -> (B, P, tokens per player * (L + 1), D)
                B, _, depths, D = h.shape
                P, T = self.player_tokens.shape
                h = h[:, self.player_tokens.reshape(-1)].reshape(B, P, T * depths, D)
            return self.head(h)
        h = states[:, self.start].float()
        for block in self.blocks:
            h = block(h, attention_mask=None)
        h = self.norm(h)[:, self.num_special :]
        if self.player_mean is not None:
            h = self.player_mean(h)
        return self.head(h)


def explain(explainer: Explainer, game, states, logits, empty) -> torch.Tensor:
    """phi (B, P, K): the head's per-player sums, efficiency imposed as the model does."""
    from hf_shapley.models.modeling_shapley import additive_efficiency

    r = explainer(states)
    if explainer.player_mean is None and explainer.player_tokens is None:  # per-token votes
        r = game.player_sum(r)
    return additive_efficiency(r, (logits - empty) - r.sum(1))


def agreement(phi: torch.Tensor, truth: torch.Tensor, logits: torch.Tensor) -> dict:
    from hf_shapley.evaluation import (
        centered_class_values,
        pearson_rows,
        pooled_relative_error,
        rank_with_ties,
    )

    classes = logits.argmax(-1)
    p, t = centered_class_values(phi, classes), centered_class_values(truth, classes)
    return dict(
        pearson=float(pearson_rows(p, t).nanmean()),
        spearman=float(pearson_rows(rank_with_ties(p), rank_with_ties(t)).nanmean()),
        pooled_relative_error=pooled_relative_error(p, t),
    )


def run(variant: str, steps: int, cache: dict, model, args: argparse.Namespace) -> list[dict]:
    from transformers import get_cosine_schedule_with_warmup

    from hf_shapley.models.objective import shapley_regression_loss

    kind, depth = VARIANTS[variant]
    torch.manual_seed(args.seed)
    explainer = Explainer(model, kind, depth, HEAD_WIDTHS.get(variant))
    params = [p for p in explainer.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.05)
    schedule = get_cosine_schedule_with_warmup(optimizer, 30, steps)
    N, M = cache["coalitions"].shape[:2]
    N = min(N, args.images or N)  # the first `images` training images (fewer, more coalitions)
    M = min(M, args.pool)  # the first `pool` cached coalitions of each image (pairs stay whole)
    pairs = args.coalitions // 2
    generator = torch.Generator().manual_seed(args.seed)
    rows, start, checkpoints = [], time.perf_counter(), set(args.checkpoints) | {steps}

    # Polyak averaging of the head's weights (--ema > 0): the targets are noisy (32 coalitions
    # an image), and an average of the iterates is the cheapest denoiser there is.
    averaged = (
        torch.optim.swa_utils.AveragedModel(
            explainer, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(args.ema)
        )
        if args.ema > 0
        else None
    )

    def record(step: int) -> None:
        explainer.eval()
        with torch.no_grad():
            phi = explain(
                averaged.module if averaged is not None else explainer,
                model.game,
                cache["test_states"],
                cache["test_logits"],
                cache["test_empty"],
            )
        explainer.train()
        row = dict(
            variant=variant,
            steps=steps,
            step=step,
            lr=args.lr,
            normalization=args.normalization,
            ema=args.ema,
            seed=args.seed,  # the head's initialization and data order
            images=N,
            batch_size=args.batch_size,
            coalitions=args.coalitions,
            pool=min(args.pool, cache["coalitions"].shape[1]),
            model=Path(args.model).name,
            seconds=round(time.perf_counter() - start, 1),
            **agreement(phi, cache["truth"], cache["test_logits"]),
        )
        rows.append(row)
        with open(args.jsonl, "a") as f:
            f.write(json.dumps(row) + "\n")
        print(json.dumps(row), flush=True)

    for step in range(steps):
        index = torch.randint(N, (args.batch_size,), generator=generator)
        # Random pairs of the cached coalitions (pairs stay together: antithetic sampling).
        pair = torch.rand(args.batch_size, M // 2, generator=generator).argsort(1)[:, :pairs]
        chosen = torch.stack([2 * pair, 2 * pair + 1], dim=2).reshape(args.batch_size, -1)
        masks = cache["coalitions"][index[:, None], chosen]
        targets = cache["values"][index[:, None], chosen] - cache["empty"][index][:, None]
        phi = explain(
            explainer,
            model.game,
            cache["states"][index],
            cache["logits"][index],
            cache["empty"][index],
        )
        loss = shapley_regression_loss(
            phi, masks, targets, center=True, normalization=args.normalization
        )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        schedule.step()
        if averaged is not None:
            averaged.update_parameters(explainer)
        if not math.isfinite(float(loss.detach())):
            raise RuntimeError(f"{variant}: loss diverged at step {step}")
        if step + 1 in checkpoints:
            record(step + 1)
    return rows


def write_table(jsonl: Path, path: Path) -> str:
    """Every row of ``jsonl`` as a markdown table (curves: one line per checkpoint)."""
    rows = [json.loads(line) for line in jsonl.read_text().splitlines() if line.strip()]
    lines = [
        "# Explainer study: head variants on a frozen game",
        "",
        "Written by `benchmarks/explainer_study.py` (see its docstring). Agreement on the "
        "predicted class's logit centred over classes, 32 held-out test images, against "
        f"KernelSHAP with {TRUTH_EVALUATIONS} paired evaluations of the frozen model's game.",
        "",
        "| model | variant | head seed | steps | step | images / batch | "
        "coalitions per step / pool | lr | loss | EMA | head seconds | r | Spearman | "
        "pooled rel. error |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['variant']} | {r.get('seed', 0)} | {r['steps']} | {r['step']} | "
            f"{r.get('images', 8000)} / {r.get('batch_size', 64)} | "
            f"{r['coalitions']} / {r.get('pool', 64)} | {r['lr']:g} | "
            f"{r.get('normalization', 'per_image')} | {r.get('ema') or '-'} | {r['seconds']} | "
            f"{r['pearson']:.3f} | {r['spearman']:.3f} | {r['pooled_relative_error']:.3f} |"
        )
    text = "\n".join(lines) + "\n"
    path.write_text(text)
    return text


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="outputs/shapley-vit-shapes")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS))
    parser.add_argument("--steps", nargs="+", type=int, default=[250, 1000])
    parser.add_argument("--checkpoints", nargs="*", type=int, default=[125, 250, 500])
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--coalitions", type=int, default=32, help="per image and step")
    parser.add_argument("--cached-coalitions", type=int, default=64)
    parser.add_argument(
        "--pool", type=int, default=64, help="cached coalitions per image the head may train on"
    )
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument(
        "--normalization",
        choices=["per_image", "none"],
        default="per_image",
        help="the regression's normalization (shapley_loss_normalization)",
    )
    parser.add_argument(
        "--ema", type=float, default=0.0, help="decay of an average of the head's weights (0: off)"
    )
    parser.add_argument("--num-train", type=int, default=8000)
    parser.add_argument(
        "--images", type=int, default=None, help="train on the first n cached images (default all)"
    )
    parser.add_argument("--truth-images", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--jsonl", type=Path, default=RESULTS / "explainer_study.jsonl")
    parser.add_argument("--table", type=Path, default=RESULTS / "explainer_study.md")
    parser.add_argument("--reuse", action="store_true", help="only rebuild the table")
    args = parser.parse_args(argv)
    unknown = [v for v in args.variants if v not in VARIANTS]
    if unknown:
        parser.error(f"unknown variants {unknown}; known: {sorted(VARIANTS)}")
    if args.coalitions % 2 or not 2 <= args.coalitions <= min(args.pool, args.cached_coalitions):
        parser.error("--coalitions must be even and at most --pool and --cached-coalitions.")
    if args.pool % 2:
        parser.error("--pool must be even (coalitions come in complementary pairs).")
    if args.truth_images < 2:
        parser.error("--truth-images must be >= 2 (r needs images).")
    if args.reuse:
        print(write_table(args.jsonl, args.table))
        return
    torch.set_num_threads(args.threads)
    model = load_model(args.model)
    cache = build_cache(model, args)
    reference = agreement(cache["recipe_phi"], cache["truth"], cache["test_logits"])
    print(json.dumps({"model's own head": reference}), flush=True)
    for steps in args.steps:
        for variant in args.variants:
            run(variant, steps, cache, model, args)
    write_table(args.jsonl, args.table)


if __name__ == "__main__":
    main()
