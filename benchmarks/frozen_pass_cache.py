"""A later epoch's head step with the frozen classifier's full pass recomputed or kept.

With a frozen classifier (``reuse_shapley_coalitions``) the first epoch keeps each image's
coalition values; a later step then still runs the backbone once on the full images, for the
logits, ``v(empty)`` and the features the head reads. ``FullPassCache`` keeps those too
(``ShapleyTrainingArguments.frozen_pass_cache_gb``), so that a later step trains the head
alone. This script times a later epoch's optimizer step both ways on the same model, batch and
kept values, interleaved round-robin (median of ``--rounds``), and reports the ratio and the
memory the store needs per image and for the main job's 8,000 images.

    python benchmarks/frozen_pass_cache.py --model outputs/shapley-vit-shapes
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

MAIN_JOB_IMAGES = 8000


def main(argv: list[str] | None = None) -> None:
    from hf_shapley import ShapleyForImageClassification

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="outputs/shapley-vit-shapes")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=64, help="the main job's")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    device = pick_device(args.device)
    models = {}
    for name, budget in (("recomputed", 0), ("kept", 2**34)):
        model = ShapleyForImageClassification.from_pretrained(args.model).to(device).train()
        if not model.config.reuse_shapley_coalitions:
            raise SystemExit(f"{args.model} is not a frozen-classifier model.")
        model.full_pass_cache.max_bytes = budget
        models[name] = model
    size = models["kept"].config.backbone_config.image_size
    x, y = tensors(args.batch_size, "train", image_size=size)
    x, y = x.to(device), y.to(device)
    # A later epoch's step: the warm-up calls fill the stores (coalition values, and for
    # "kept" the full pass), every timed call then reads them.
    fns = {name: make_step(model, x, y, first_epoch=False) for name, model in models.items()}
    times = interleaved_medians(fns, device=device, rounds=args.rounds)
    per_image = models["kept"].full_pass_cache.nbytes / args.batch_size
    recomputed, kept = times["recomputed"], times["kept"]
    text = "\n".join(
        [
            "# A later epoch's head step: the frozen full pass recomputed or kept",
            "",
            f"Written by `benchmarks/frozen_pass_cache.py`: {args.model} (frozen game in "
            f"{models['kept'].config.frozen_game_dtype}), batch {args.batch_size}, median of "
            f"{args.rounds} interleaved rounds; {host_description(device)}.",
            "",
            markdown_table(
                ["full pass", "step s", "speed-up"],
                [
                    ["recomputed", f"{recomputed:.3f}", "1.00"],
                    ["kept", f"{kept:.3f}", f"{recomputed / kept:.2f}"],
                ],
            ),
            "",
            f"Kept per image: {per_image / 1024:.0f} KiB; for the main job's "
            f"{MAIN_JOB_IMAGES:,} images {per_image * MAIN_JOB_IMAGES / 2**30:.2f} GiB. Over its "
            f"875 later steps: {875 * (recomputed - kept):.0f} s saved.",
            "",
        ]
    )
    report(text, args.out)


if __name__ == "__main__":
    main()
