"""Is the Shapley head's error a generalization gap?

For each main-job output directory, the same agreement figures as ``main_job_seeds.py`` (the
predicted class's logit centred over classes, one-pass phi against KernelSHAP with 4,096 paired
evaluations of the model's own game) on the first ``n`` TRAINING images, the ones the head fitted.
Compare them with the held-out figures of ``results/main_job_seeds_v6.md``: if the head missed
held-out images much more than its own training images, more images would help; if not, what
limits it is the per-image signal (the kept coalitions) or the head's capacity.

    python benchmarks/head_generalization_check.py outputs/main-seed0 outputs/main-seed1
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from main_job_seeds import RESULTS, cached_truth
from recipe import tensors


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("directories", nargs="+", type=Path)
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--output", type=Path, default=RESULTS / "head_generalization_check.json")
    args = parser.parse_args(argv)
    if args.images < 2:
        parser.error("--images must be >= 2 (r needs images).")
    import hf_shapley  # noqa: F401  (registers the auto classes)
    from hf_shapley import ShapleyForImageClassification
    from hf_shapley.evaluation import centred_class_values, pearson_rows, pooled_relative_error

    torch.set_num_threads(args.threads)
    rows = []
    for directory in args.directories:
        model = ShapleyForImageClassification.from_pretrained(directory).eval()
        x = tensors(args.images, "train", image_size=model.image_size[0])[0]
        truth = cached_truth(model, x, "train")
        with torch.no_grad():
            out = model(x)
        classes = out.logits.argmax(-1)
        phi = centred_class_values(out.shapley_values, classes)
        t = centred_class_values(truth, classes)
        row = dict(
            directory=str(directory),
            split=f"train (first {args.images}, seen by the head)",
            pearson=float(pearson_rows(phi, t).nanmean()),
            pooled_relative_error=pooled_relative_error(phi, t),
        )
        print(json.dumps(row), flush=True)
        rows.append(row)
    args.output.write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
