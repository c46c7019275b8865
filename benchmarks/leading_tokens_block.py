"""Packed coalition passes with the last block computed for the special tokens only.

A wrapped classifier reads the CLS token alone, so after the last encoder block no patch
token's state is needed: ``TokenRemovalAdapter.encode_tokens(num_outputs=...)`` computes that
block's queries, attention output and MLP for the special tokens only. This script times the
unit of work of the exact truth, the KernelSHAP truth and the head's first epoch - the game
values of ``--pairs`` packed complementary pairs of one image - both ways on the same model,
interleaved round-robin (median of ``--rounds``): the whole block is forced by declaring the
same readout as one that reads tokens. fp32 (the truth) and, where the model sets it, the bf16
autocast of a frozen game's training passes. It also reports the largest difference between
the two ways' values.

    python benchmarks/leading_tokens_block.py --model outputs/shapley-vit-shapes
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import host_description, interleaved_medians, markdown_table, report  # noqa: E402
from recipe import tensors  # noqa: E402


@dataclass(frozen=True)
class WholeBlockReadout:
    """The model's readout, declared as reading the patch tokens: the packed passes then run
    the last block whole (the behaviour before ``num_outputs``)."""

    readout: object
    reads_tokens: ClassVar[bool] = True

    def modules(self):
        return self.readout.modules()

    def value(self, view):
        return self.readout.value(view)


def main(argv: list[str] | None = None) -> None:
    from hf_shapley import ShapleyForImageClassification
    from hf_shapley.coalitions import all_coalitions

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="outputs/shapley-vit-shapes")
    parser.add_argument("--pairs", type=int, default=2048)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    device = torch.device("cpu")
    model = ShapleyForImageClassification.from_pretrained(args.model).eval()
    if model.readout.reads_tokens:
        raise SystemExit(f"{args.model}'s readout reads every token: nothing to skip.")
    P = model.num_players
    x, _ = tensors(1, "test", image_size=model.config.backbone_config.image_size)
    codes = torch.randperm(2 ** (P - 1), generator=torch.Generator().manual_seed(0))
    first = all_coalitions(P)[codes[: args.pairs]]
    pairs = torch.stack([first, ~first], dim=1).reshape(1, -1, P)
    game, readout = model.game, model.readout
    context = game.prepare(x)
    readouts = {"whole last block": WholeBlockReadout(readout), "special tokens only": readout}
    dtypes = ["float32"]
    if model.config.frozen_game_dtype != "float32":
        dtypes.append(model.config.frozen_game_dtype)

    rows = []
    for dtype in dtypes:

        def values(r, dtype=dtype):
            autocast = (
                torch.autocast("cpu", dtype=getattr(torch, dtype))
                if dtype != "float32"
                else contextlib.nullcontext()
            )
            with torch.no_grad(), autocast:
                return game.values(context, pairs, r)

        fns = {name: (lambda r=r: values(r)) for name, r in readouts.items()}
        times = interleaved_medians(fns, device=device, rounds=args.rounds)
        whole, specials = times["whole last block"], times["special tokens only"]
        diff = (values(readouts["whole last block"]) - values(readout)).abs().max().item()
        rows.append(
            [dtype, f"{whole:.3f}", f"{specials:.3f}", f"{whole / specials:.2f}", f"{diff:.1e}"]
        )
    text = "\n".join(
        [
            "# Packed passes: the last block whole or for the special tokens only",
            "",
            f"Written by `benchmarks/leading_tokens_block.py`: {args.model}, {args.pairs} packed "
            f"complementary pairs of one image (P = {P}), median of {args.rounds} interleaved "
            f"rounds; {host_description(device)}.",
            "",
            markdown_table(
                ["dtype", "whole s", "specials only s", "speed-up", "max abs difference"], rows
            ),
            "",
        ]
    )
    report(text, args.out)


if __name__ == "__main__":
    main()
