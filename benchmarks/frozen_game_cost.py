"""Step time of the main job's head training: fp32 against a bf16 frozen game, side by side.

With a frozen classifier the head's training step has two kinds: a first-epoch step makes the
masked passes of each image's kept coalitions (``reuse_shapley_coalitions``), a later step
reads the kept values and passes only the full images. ``frozen_game_dtype="bfloat16"`` runs
both kinds of frozen pass under bf16 autocast. This script times one optimizer step of each
kind for each precision on the same model, batch and coalitions, interleaved round-robin
(median of ``--rounds``), and reports the ratios: the measurement behind the main job's default
(``examples/train.py``: bf16 where the device computes it natively).

    python benchmarks/frozen_game_cost.py --model outputs/shapley-vit-shapes
    python benchmarks/frozen_game_cost.py --device cuda
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    host_description,
    interleaved_medians,
    markdown_table,
    pick_device,
    report,
)
from recipe import tensors  # noqa: E402


def load(path: str, dtype: str, device: torch.device):
    from hf_shapley import ShapleyForImageClassification

    model = ShapleyForImageClassification.from_pretrained(path, frozen_game_dtype=dtype)
    if not model.config.reuse_shapley_coalitions:
        raise SystemExit(f"{path} is not a frozen-classifier model (reuse_shapley_coalitions).")
    return model.to(device).train()


def make_step(model, x, y, *, first_epoch: bool):
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-6)
    index = torch.arange(len(x))

    def step():
        if first_epoch:
            model.coalition_value_cache.clear()  # every visit a first one: masked passes
        out = model(x, labels=y, example_index=index, epoch=0, global_step=10_000)
        out.loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="outputs/shapley-vit-shapes")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=64, help="the main job's")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    device = pick_device(args.device)
    models = {dtype: load(args.model, dtype, device) for dtype in ("float32", "bfloat16")}
    size = models["float32"].config.backbone_config.image_size
    x, y = tensors(args.batch_size, "train", image_size=size)
    x, y = x.to(device), y.to(device)
    fns = {
        (kind, dtype): make_step(model, x, y, first_epoch=kind == "first epoch")
        for kind in ("first epoch", "later epoch")
        for dtype, model in models.items()
    }
    times = interleaved_medians(fns, device=device, rounds=args.rounds)
    rows = []
    for kind in ("first epoch", "later epoch"):
        fp32, bf16 = times[(kind, "float32")], times[(kind, "bfloat16")]
        rows.append([kind, f"{fp32:.3f}", f"{bf16:.3f}", f"{fp32 / bf16:.2f}"])
    text = "\n".join(
        [
            "# Head training step: fp32 against a bf16 frozen game",
            "",
            f"Written by `benchmarks/frozen_game_cost.py`: {args.model}, batch {args.batch_size}, "
            f"median of {args.rounds} interleaved rounds; {host_description(device)}.",
            "",
            markdown_table(
                ["step", "fp32 s", "bf16 game s", "speed-up"],
                rows,
            ),
            "",
        ]
    )
    report(text, args.out)


if __name__ == "__main__":
    main()
