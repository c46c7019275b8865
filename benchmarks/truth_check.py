"""How cheap can the truth be? KernelSHAP at fixed budgets against exact enumeration.

Studies measure agreement on many images, where exact enumeration (2**P coalitions) is too
slow; the faithfulness issue asks for KernelSHAP with >= 1,024 paired evaluations, validated
against exact enumeration (pooled relative error <= 0.05). This script measures, on a trained
model's own game, the error of KernelSHAP at several budgets on the explained quantity of the
agreement targets (the predicted class's logit, centred over classes), with the exact values
as the reference:

    pooled relative error = sqrt(sum |phi_ks - t|^2 / sum |t - mean_P t|^2)

Usage:
    python benchmarks/truth_check.py outputs/shapley-vit-shapes --images 4 --budgets 256 1024 4096
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from common import builtin_test_images

from hf_shapley.evaluation import (
    centred_class_values,
    exact_model_shapley_values,
    model_shapley_truth,
    pearson_rows,
    pooled_relative_error,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model_dir")
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--budgets", type=int, nargs="+", default=[256, 1024, 4096])
    parser.add_argument("--seed", type=int, default=0, help="seed of the built-in test split")
    parser.add_argument(
        "--distractors", default="complement", choices=["complement", "independent"]
    )
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    args = parser.parse_args()

    model, x, arrays = builtin_test_images(
        args.model_dir, args.images, seed=args.seed, distractors=args.distractors
    )
    with torch.no_grad():
        out = model(x)
    classes = out.logits.argmax(-1)

    start = time.perf_counter()
    exact = exact_model_shapley_values(model, x, progress=True)
    exact_seconds = time.perf_counter() - start
    truth = centred_class_values(exact, classes)
    phi = centred_class_values(out.shapley_values, classes)
    rows = [
        {
            "estimate": "exact",
            "evaluations": 2**model.num_players,
            "seconds": round(exact_seconds, 1),
            "pooled_relative_error": 0.0,
        },
        {
            "estimate": "model phi (one pass)",
            "evaluations": 1,
            "pooled_relative_error": round(pooled_relative_error(phi, truth), 4),
            "pearson_r": pearson_rows(phi, truth).tolist(),
        },
    ]
    for budget in args.budgets:
        start = time.perf_counter()
        result = model_shapley_truth(
            model, x, max_exact_players=0, tolerance=0.0, max_evaluations=budget
        )
        estimate = centred_class_values(result.values, classes)
        rows.append(
            {
                "estimate": f"KernelSHAP {budget}",
                "evaluations": result.evaluations,
                "seconds": round(time.perf_counter() - start, 1),
                "pooled_relative_error": round(pooled_relative_error(estimate, truth), 4),
                "pearson_r": pearson_rows(estimate, truth).tolist(),
            }
        )
    text = json.dumps({"model_dir": args.model_dir, "images": args.images, "rows": rows}, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
