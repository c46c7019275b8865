"""Forward cost of ShapleyForImageClassification against the stock ViTForImageClassification.

Both models share one ViT config (ViT-S/16 at 224 px by default), run side by side in one
process, interleaved, at batch 1 and 32. Also reports the cost of one packed pair of
complementary coalitions ``model(x, coalition=[S, ~S])`` in full-forward equivalents, measured
and by token count.

    python benchmarks/forward_cost.py                 # CPU
    python benchmarks/forward_cost.py --device cuda --dtype bfloat16
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

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
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=[1, 32])
    parser.add_argument("--players-grid", nargs=2, type=int, default=[14, 14])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--out", type=Path, default=None, help="write the markdown table here")
    args = parser.parse_args(argv)

    from transformers import ViTConfig, ViTForImageClassification

    import hf_shapley  # noqa: F401
    from hf_shapley import ShapleyConfig, ShapleyForImageClassification

    device = pick_device(args.device)
    torch.manual_seed(0)
    vit_config = ViTConfig(**VIT_SMALL_224, num_labels=10)
    stock = ViTForImageClassification(vit_config).to(device).eval()
    shapley = (
        ShapleyForImageClassification(
            ShapleyConfig(
                backbone_config=ViTConfig(**VIT_SMALL_224),
                num_labels=10,
                players_grid=args.players_grid,
            )
        )
        .to(device)
        .eval()
    )
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
    tokens = shapley.num_special_tokens
    n = shapley.token_grid[0] * shapley.token_grid[1]
    table = markdown_table(
        ["batch", "stock ViT ms", "Shapley ms", "Shapley / stock", "packed pair / full forward"],
        rows,
    )
    text = (
        f"Device {device} ({device_name(device)}), "
        f"{args.dtype}, ViT-S/16 224 px, players {tuple(args.players_grid)}, median of {args.rounds} interleaved rounds.\n\n"
        f"{table}\n\nPacked pair by token count: ({n} + 2*{tokens}) / ({n} + {tokens}) = {(n + 2 * tokens) / (n + tokens):.3f} "
        "full-forward equivalents.\n"
    )
    return report(text, args.out)


if __name__ == "__main__":
    main()
