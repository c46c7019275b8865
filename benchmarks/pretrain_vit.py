"""Pretrain the recipe study's stock ViT classifier on the built-in data, for ``--backbone``.

The main job (``examples/train.py``) pretrains its plain ViT with the Trainer
(``hf_shapley.plain_classifier.train_plain_classifier``: gradient clipping at 1.0, cosine
schedule, 8,000 images); in the faithfulness session both seeds tried sat on the
chance plateau for all 2,000 steps. This script runs the pretraining loop of
``benchmarks/recipe.py`` instead (in-memory tensors, AdamW lr 1e-3, weight decay 0.05, linear
warm-up over 50 steps then linear decay, no clipping, 6,000 images, 2,000 steps), which left the
plateau on CPU in the recipe study, at any image size, and saves the classifier with its image
processor so that the main job can wrap and fine-tune it:

    python benchmarks/pretrain_vit.py --seed 0 --out outputs/pretrained-vit-64px
    python examples/train.py --backbone outputs/pretrained-vit-64px --prediction_mode shapley_sum

At 64 px it follows ``recipe.pretrained_dir(seed)`` (the same data, seeds and loop).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import recipe  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--image-size", type=int, default=64, help="a multiple of 16")
    parser.add_argument("--steps", type=int, default=recipe.Setup.pretrain_steps)
    parser.add_argument("--num-train", type=int, default=recipe.Setup.num_train)
    parser.add_argument("--num-test", type=int, default=recipe.Setup.num_test)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessorPil

    from hf_shapley.data import SHAPES_LABELS, generate_shapes

    setup = recipe.Setup(
        pretrain_steps=args.steps,
        num_train=args.num_train,
        num_test=args.num_test,
        device=args.device,
    )

    def prep(arrays):
        x = torch.from_numpy(arrays.images).permute(0, 3, 1, 2).float() / 255
        return ((x - 0.5) / 0.5).to(args.device), torch.from_numpy(arrays.labels).to(args.device)

    xtr, ytr = prep(generate_shapes(args.num_train, image_size=args.image_size, split="train"))
    xte, yte = prep(generate_shapes(args.num_test, image_size=args.image_size, split="test"))
    torch.manual_seed(args.seed)
    labels = dict(enumerate(SHAPES_LABELS[:4]))
    config = ViTConfig(
        **{**recipe.BACKBONE, "image_size": args.image_size},
        id2label=labels,
        label2id={v: k for k, v in labels.items()},
    )
    model = ViTForImageClassification(config).to(args.device)
    start = time.perf_counter()
    recipe._train(
        model, xtr, ytr, args.steps, setup, args.seed + 10_000, shapley=False, lr=setup.pretrain_lr
    )
    accuracy = recipe._accuracy(model, xte, yte)
    args.out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(args.out)
    ViTImageProcessorPil(
        size={"height": args.image_size, "width": args.image_size},
        image_mean=[0.5] * 3,
        image_std=[0.5] * 3,
    ).save_pretrained(args.out)
    report = {
        "test_accuracy": accuracy,
        "seed": args.seed,
        "steps": args.steps,
        "image_size": args.image_size,
        "seconds": time.perf_counter() - start,
    }
    (args.out / "pretrain.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report))


if __name__ == "__main__":
    main()
