"""Forward cost of ShapleyForImageClassification against the stock classifier of the same config,
and of zero-shot classification with explanations against plain CLIP (``--family clip``).

Both models share one backbone config (ViT-S/16 at 224 px by default; ResNet-50 at 224 px with
``--family resnet``), run side by side in one process, interleaved, at batch 1 and 32. Also
reports the cost of one pair of complementary coalitions ``model(x, coalition=[S, ~S])`` in
full-forward equivalents: measured, and by token count for ViT (a packed pair), 2 for ResNet
(pixel masking: one pass per coalition).

For ResNet (a pixel-baseline family) the Shapley forward includes ``v(empty)``, the model on the
all-baseline image, which eval mode caches: the timed calls reuse it, as inference does.

With ``--family clip`` both models share one CLIP (the ShapleyCLIPModel wraps the CLIPModel's
weights; CLIP ViT-B/32 config, random weights: cost does not depend on them), run side by side
in one process, interleaved, at batch 1 and 8. Each call scores B images against T candidate
texts (``--num-labels``): the plain model with ``CLIPModel(input_ids, pixel_values)``, the
self-explaining one with its forward, which also returns the (B, P, T) Shapley values and
(B, T) base values (one extra pass of the CLS token alone, one pass of the Shapley head, a
(P x D) @ (D x T) product per image). fp32 only.

    python benchmarks/forward_cost.py                 # CPU
    python benchmarks/forward_cost.py --device cuda --dtype bfloat16
    python benchmarks/forward_cost.py --family resnet
    python benchmarks/forward_cost.py --family resnet --recipe   # from_backbone's model
    python benchmarks/forward_cost.py --recipe --variant recipe: --variant narrow:head_width=192
    python benchmarks/forward_cost.py --family clip   # CPU, ViT-B/32, 100 labels
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from transformers.hf_argparser import string_to_bool

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (
    VIT_SMALL_224,
    device_name,
    interleaved_medians,
    markdown_table,
    pick_device,
    report,
)  # noqa: E402


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument(
        "--batch-sizes",
        nargs="+",
        type=int,
        default=None,
        help="default 1 32 (1 8 for CLIP)",
    )
    parser.add_argument("--family", default="vit", choices=["vit", "resnet", "clip"])
    parser.add_argument(
        "--players-grid",
        nargs=2,
        type=int,
        default=None,
        help="default 14 14 (ViT), 7 7 (ResNet, CLIP)",
    )
    parser.add_argument("--rounds", type=int, default=None, help="default 10 (7 for CLIP)")
    parser.add_argument(
        "--recipe",
        action="store_true",
        help="ViT, ResNet: time the stock classifier wrapped by from_backbone (the frozen "
        "explainer recipe: a classifier's own head, explained by the Shapley head) instead of "
        "a soft-voting model of the same config",
    )
    parser.add_argument(
        "--head_reads_hidden_states",
        type=string_to_bool,
        default=None,
        help="with --recipe: override what the head reads (default: the recipe's)",
    )
    parser.add_argument(
        "--head_width",
        type=int,
        default=None,
        help="with --recipe: the Shapley head's width (default: the recipe's)",
    )
    parser.add_argument(
        "--variant",
        action="append",
        default=None,
        metavar="NAME:KEY=VALUE,...",
        help="with --recipe: time several heads side by side, each the recipe with these "
        "ShapleyConfig overrides (repeatable; e.g. 'half-width:head_width=192'; 'recipe:' for "
        "none)",
    )
    parser.add_argument("--num-labels", type=int, default=100, help="CLIP: label texts scored")
    parser.add_argument("--text-length", type=int, default=9, help="CLIP: tokens per label text")
    parser.add_argument("--out", type=Path, default=None, help="write the markdown table here")
    args = parser.parse_args(argv)
    if args.family == "clip":
        if args.dtype != "float32":
            parser.error("--family clip measures float32 only")
        return clip_zero_shot(args)
    if args.variant and not args.recipe:
        parser.error("--variant needs --recipe")
    if args.batch_sizes is None:
        args.batch_sizes = [1, 32]
    if args.rounds is None:
        args.rounds = 10

    from transformers import (
        ResNetConfig,
        ResNetForImageClassification,
        ViTConfig,
        ViTForImageClassification,
    )

    import hf_shapley  # noqa: F401
    from hf_shapley import ShapleyConfig, ShapleyForImageClassification

    device = pick_device(args.device)
    torch.manual_seed(0)
    if args.family == "vit":
        players_grid = args.players_grid or [14, 14]
        stock = ViTForImageClassification(ViTConfig(**VIT_SMALL_224, num_labels=10))
        backbone_config, extra, label = ViTConfig(**VIT_SMALL_224), {}, "ViT-S/16 224 px"
    else:
        players_grid = args.players_grid or [7, 7]
        stock = ResNetForImageClassification(ResNetConfig(num_labels=10))  # ResNet-50 layout
        backbone_config, extra, label = ResNetConfig(), {"image_size": 224}, "ResNet-50 224 px"
    if args.variant:
        return recipe_variants(args, stock, players_grid, extra, label, device)
    if args.recipe:
        # What a user gets: the stock classifier wrapped with the frozen explainer recipe.
        overrides = {}
        if args.head_reads_hidden_states is not None:
            overrides["head_reads_hidden_states"] = args.head_reads_hidden_states
            overrides["head_reads_attention"] = False
        if args.head_width is not None:
            overrides["head_width"] = args.head_width
        shapley = ShapleyForImageClassification.from_backbone(
            stock, players_grid=tuple(players_grid), **extra, **overrides
        )
        label += (
            f", frozen recipe (head reads every depth: {shapley.config.head_reads_hidden_states}"
            f", head width {shapley.config.head_width or 'of the backbone'})"
        )
    else:
        shapley = ShapleyForImageClassification(
            ShapleyConfig(
                backbone_config=backbone_config,
                num_labels=10,
                players_grid=players_grid,
                **extra,
            )
        )
    stock = stock.to(device).eval()
    shapley = shapley.to(device).eval()
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.dtype == "bfloat16")
    P = shapley.num_players

    rows = []
    for batch in args.batch_sizes:
        x = torch.randn(batch, 3, 224, 224, device=device)
        half = torch.rand(batch, P, device=device) > 0.5
        pair = torch.stack([half, ~half], dim=1)

        @torch.no_grad()
        def run_stock(x=x):
            with autocast:
                return stock(x).logits

        @torch.no_grad()
        def run_shapley(x=x):
            with autocast:
                return shapley(x).logits

        @torch.no_grad()
        def run_pair(x=x, pair=pair):
            with autocast:
                return shapley(x, coalition=pair).logits

        t = interleaved_medians(
            {"stock": run_stock, "shapley": run_shapley, "pair": run_pair},
            device=device,
            rounds=args.rounds,
        )
        rows.append(
            [
                batch,
                f"{1000 * t['stock']:.1f}",
                f"{1000 * t['shapley']:.1f}",
                f"{t['shapley'] / t['stock']:.3f}",
                f"{t['pair'] / t['shapley']:.3f}",
            ]
        )
    tokens = shapley.adapter.num_special_tokens(shapley.config.backbone_config)
    n = shapley.token_grid[0] * shapley.token_grid[1]
    table = markdown_table(
        [
            "batch",
            f"stock {args.family} ms",
            "Shapley ms",
            "Shapley / stock",
            "packed pair / full forward"
            if args.family == "vit"
            else "coalition pair / full forward",
        ],
        rows,
    )
    if args.family == "vit":
        pair_text = (
            f"Packed pair by token count: ({n} + 2*{tokens}) / ({n} + {tokens}) = "
            f"{(n + 2 * tokens) / (n + tokens):.3f} full-forward equivalents.\n"
        )
    else:
        pair_text = (
            "Pixel masking: a coalition costs one full pass (2 for a pair); Shapley ms includes "
            "v(empty) from the eval-mode cache.\n"
        )
    text = (
        f"Device {device} ({device_name(device)}), "
        f"{args.dtype}, {label}, players {tuple(players_grid)}, median of {args.rounds} interleaved rounds.\n\n"
        f"{table}\n\n{pair_text}"
    )
    return report(text, args.out)


def parse_variant(text: str) -> tuple[str, dict]:
    """``"NAME:key=value,key=value"`` -> (NAME, overrides); ints and booleans are parsed."""
    name, _, settings = text.partition(":")
    overrides = {}
    for item in filter(None, settings.split(",")):
        key, _, value = item.partition("=")
        if value.lstrip("-").isdigit():
            overrides[key] = int(value)
        elif value.lower() in ("true", "false"):
            overrides[key] = string_to_bool(value)
        else:
            overrides[key] = value
    return name, overrides


def recipe_variants(args, stock, players_grid, extra, label, device) -> str:
    """Several recipe heads on one stock classifier, timed side by side with it."""
    from hf_shapley import ShapleyForImageClassification

    stock = stock.to(device).eval()
    models = {}
    for text in args.variant:
        name, overrides = parse_variant(text)
        models[name] = (
            ShapleyForImageClassification.from_backbone(
                stock, players_grid=tuple(players_grid), **extra, **overrides
            )
            .to(device)
            .eval()
        )
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.dtype == "bfloat16")
    rows = []
    for batch in args.batch_sizes:
        x = torch.randn(batch, 3, 224, 224, device=device)
        calls = {"stock": stock, **models}

        def timed(model, x=x):
            with torch.no_grad(), autocast:
                return model(x).logits

        t = interleaved_medians(
            {name: (lambda m=m: timed(m)) for name, m in calls.items()},
            device=device,
            rounds=args.rounds,
        )
        rows.append(
            [batch, f"{1000 * t['stock']:.1f}"] + [f"{t[name] / t['stock']:.3f}" for name in models]
        )
    table = markdown_table(
        ["batch", f"stock {args.family} ms"] + [f"{name} / stock" for name in models], rows
    )
    settings = "\n".join(f"- `{text}`" for text in args.variant)
    text = (
        f"Device {device} ({device_name(device)}), {args.dtype}, {label}, frozen recipe heads, "
        f"players {tuple(players_grid)}, median of {args.rounds} interleaved rounds.\n\n"
        f"{table}\n\nHeads (ShapleyConfig overrides of the recipe):\n{settings}\n"
    )
    return report(text, args.out)


def clip_zero_shot(args: argparse.Namespace) -> str:
    """``--family clip``: zero-shot classification with explanations against plain CLIP."""
    from transformers import CLIPConfig, CLIPModel

    from hf_shapley import ShapleyCLIPModel

    batch_sizes = [1, 8] if args.batch_sizes is None else args.batch_sizes
    rounds = 7 if args.rounds is None else args.rounds
    players_grid = [7, 7] if args.players_grid is None else args.players_grid
    device = pick_device(args.device)
    torch.manual_seed(0)
    clip = CLIPModel(CLIPConfig()).eval().to(device)
    # The head of examples/train_clip.py's recipe: it reads every depth of the vision tower.
    model = ShapleyCLIPModel.from_clip(
        clip, players_grid=tuple(players_grid), head_reads_hidden_states=True
    ).eval()
    model.to(device)
    vocab = clip.config.text_config.vocab_size
    eos = clip.config.text_config.eos_token_id
    ids = torch.randint(1, vocab - 2, (args.num_labels, args.text_length), device=device)
    ids[:, -1] = eos
    size = clip.config.vision_config.image_size
    rows = []
    for batch in batch_sizes:
        pixels = torch.randn(batch, 3, size, size, device=device)
        with torch.inference_mode():
            assert torch.equal(
                model(pixels, input_ids=ids).logits_per_image,
                clip(input_ids=ids, pixel_values=pixels).logits_per_image,
            )
            times = interleaved_medians(
                {
                    "plain": lambda p=pixels: clip(input_ids=ids, pixel_values=p),
                    "shapley": lambda p=pixels: model(p, input_ids=ids),
                },
                device=device,
                rounds=rounds,
            )
        rows.append(
            [
                batch,
                args.num_labels,
                f"{times['plain'] * 1e3:.1f}",
                f"{times['shapley'] * 1e3:.1f}",
                f"{times['shapley'] / times['plain']:.3f}",
            ]
        )
    threads = torch.get_num_threads()
    text = (
        f"# Zero-shot classification with explanations vs plain CLIP ({device_name(device)}, "
        f"{threads} thread(s))\n\n"
        f"CLIP ViT-B/32 config (224 px, 7 x 7 patches), players {tuple(players_grid)}, "
        f"Shapley head {model.config.head_num_layers} layers / width "
        f"{model.config.head_hidden_size}, reading every depth, {args.num_labels} label texts "
        f"of {args.text_length} "
        f"tokens; median of {rounds} interleaved rounds. Scores are bit-identical.\n\n"
        + markdown_table(["images", "labels", "plain ms", "with explanations ms", "ratio"], rows)
        + "\n"
    )
    return report(text, args.out)


if __name__ == "__main__":
    main()
