"""Who casts the votes and who causes them, on a trained soft-voting model.

Tests hypothesis 1 of the faithfulness issue: with token removal and soft voting the model
reports each player's full-context vote r_i(x), while the game credits player i with
sum_j C_ij, where C_ij is i's Shapley value in the game of player j's vote. Background players
that read the object through attention cast the object's votes; the game credits the object.

For each test image (predicted class, class-centred votes, exact enumeration: P <= 16) it
reports the off-diagonal share of C, and Pearson r of the model's values with the truth and
with the diagonal C_ii; and, split by object and background players (built-in data: the class
object mask), the mean own worth C_ii, the mean received credit sum_{j != i} C_ij, the mean
truth and the mean model value.

Usage:
    python benchmarks/vote_influence.py outputs/shapley-vit-shapes --images 8
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from common import builtin_test_images

from hf_shapley.evaluation import mask_to_players, pearson_rows, vote_influence


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model_dir")
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0, help="seed of the built-in test split")
    parser.add_argument(
        "--distractors", default="complement", choices=["complement", "independent"]
    )
    parser.add_argument("--out", default=None, help="write the summary as JSON here")
    args = parser.parse_args()

    model, x, arrays = builtin_test_images(
        args.model_dir, args.images, seed=args.seed, distractors=args.distractors
    )
    start = time.perf_counter()
    result = vote_influence(model, x, progress=True)
    seconds = time.perf_counter() - start

    on_object = mask_to_players(arrays.masks, model.players_grid) > 0  # (B, P)
    truth, model_values = result.shapley_values, result.model_values
    summary = {
        "model_dir": args.model_dir,
        "images": args.images,
        "players": model.num_players,
        "seconds": round(seconds, 1),
        "correct": float((result.classes == torch.as_tensor(arrays.labels)).float().mean()),
        "off_diagonal_share": result.off_diagonal_share().tolist(),
        "r_model_truth": pearson_rows(model_values, truth).tolist(),
        "r_model_own": pearson_rows(model_values, result.own).tolist(),
        "r_own_truth": pearson_rows(result.own, truth).tolist(),
    }
    for name, where in (("object", on_object), ("background", ~on_object)):
        summary[name] = {
            "own": float(result.own[where].mean()),
            "received": float(result.received[where].mean()),
            "truth": float(truth[where].mean()),
            "model": float(model_values[where].mean()),
        }
    text = json.dumps(summary, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
