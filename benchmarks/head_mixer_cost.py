"""A later epoch's head step with the head's attention mixer run by torch or by its own forward.

The Shapley head's mixer is an ``nn.TransformerEncoder``; ``ShapleyHead`` runs its layers'
parameters through ``modeling_shapley.pre_norm_encoder_layer`` (q, k and v as views of one
projection) instead of ``nn.TransformerEncoderLayer.forward``, whose training path copies them
into a packed tensor and zero-fills gradient buffers. This script times the main job's later
epoch step (frozen classifier, kept coalition values and full passes: the head alone) both
ways on two copies of the same model and batch, interleaved round-robin (median of
``--rounds``), and reports the ratio (``tests/test_shapley_head.py`` checks that both give the
same values and gradients).

    python benchmarks/head_mixer_cost.py --model outputs/shapley-vit-shapes
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    host_description,
    interleaved_medians,
    markdown_table,
    pick_device,
    report,
)
from frozen_game_cost import make_step  # noqa: E402
from recipe import tensors  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    import hf_shapley.modeling_shapley as modeling
    from hf_shapley import ShapleyForImageClassification

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="outputs/shapley-vit-shapes")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=64, help="the main job's")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    device = pick_device(args.device)
    own_forward = modeling.pre_norm_encoder_layer

    def torch_forward(layer, x):
        return layer(x)

    models = {}
    for name in ("torch layer", "own forward"):
        model = ShapleyForImageClassification.from_pretrained(args.model).to(device).train()
        if model.shapley_head.mixer is None:
            raise SystemExit(f"{args.model}'s head has no attention mixer.")
        model.full_pass_cache.max_bytes = 2**34
        models[name] = model
    size = models["own forward"].config.backbone_config.image_size
    x, y = tensors(args.batch_size, "train", image_size=size)
    x, y = x.to(device), y.to(device)
    steps = {name: make_step(m, x, y, first_epoch=False) for name, m in models.items()}

    def with_forward(name):
        def run():
            modeling.pre_norm_encoder_layer = (
                own_forward if name == "own forward" else torch_forward
            )
            try:
                steps[name]()
            finally:
                modeling.pre_norm_encoder_layer = own_forward

        return run

    times = interleaved_medians(
        {name: with_forward(name) for name in steps}, device=device, rounds=args.rounds
    )
    torch_s, own_s = times["torch layer"], times["own forward"]
    text = "\n".join(
        [
            "# Head training step: the mixer through torch's layer or its own forward",
            "",
            f"Written by `benchmarks/head_mixer_cost.py`: {args.model}, a later epoch's step "
            f"(the head alone), batch {args.batch_size}, median of {args.rounds} interleaved "
            f"rounds; {host_description(device)}.",
            "",
            markdown_table(
                ["torch layer s", "own forward s", "speed-up"],
                [[f"{torch_s:.3f}", f"{own_s:.3f}", f"{torch_s / own_s:.2f}"]],
            ),
            "",
        ]
    )
    report(text, args.out)


if __name__ == "__main__":
    main()
