"""Cost of the image-shapley-explanation pipeline, against the stock image-classification one.

(a) ``pipeline("image-shapley-explanation")`` with ``heatmap=False`` against
    ``pipeline("image-classification")`` on the stock ``ViTForImageClassification`` of the
    same backbone config (ViT-S/16, 224 px by default), on the same PIL images, at the same
    ``top_k`` and batch size, interleaved round by round in one process (target <= 1.1x).
(b) Heatmap rendering: the extra time of ``heatmap=True`` per image and explained label,
    through the pipeline, and ``overlay_heatmap`` alone at several original image sizes.

    python benchmarks/pipeline_cost.py                       # CPU
    python benchmarks/pipeline_cost.py --device cuda --out benchmarks/results/pipeline_cost_h100.md
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    VIT_SMALL_224,
    device_name,
    interleaved_medians,
    markdown_table,
    pick_device,
    report,
)

# Original sizes (width, height) for the rendering table: a thumbnail, a web photo, full HD, 12 MP.
RENDER_SIZES = ((224, 224), (640, 480), (1920, 1080), (4000, 3000))


def photos(count: int, seed: int = 0) -> list:
    """Random RGB images of typical web-photo sizes (the processor resizes them all)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    sizes = [(640, 480), (500, 375), (800, 600), (480, 640)]
    return [
        Image.fromarray(rng.integers(0, 256, (sizes[i % 4][1], sizes[i % 4][0], 3), dtype=np.uint8))
        for i in range(count)
    ]


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--num-images", type=int, default=16)
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=[1, 8])
    parser.add_argument("--top-k", type=int, default=5)
    parser.add_argument("--players-grid", nargs=2, type=int, default=[14, 14])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", type=Path, default=None, help="write the markdown report here")
    args = parser.parse_args(argv)

    from transformers import (
        ViTConfig,
        ViTForImageClassification,
        ViTImageProcessorPil,
        pipeline,
    )

    import hf_shapley
    from hf_shapley.visualization import overlay_heatmap

    device = pick_device(args.device)
    torch.manual_seed(0)
    labels = {i: f"class {i}" for i in range(10)}
    processor = ViTImageProcessorPil(size={"height": 224, "width": 224})
    stock = ViTForImageClassification(ViTConfig(**VIT_SMALL_224, id2label=labels)).eval()
    shapley = hf_shapley.ShapleyForImageClassification(
        hf_shapley.ShapleyConfig(
            backbone_config=ViTConfig(**VIT_SMALL_224),
            id2label=labels,
            players_grid=args.players_grid,
        )
    ).eval()
    shapley.image_processor = processor
    with tempfile.TemporaryDirectory() as tmp:
        # Load both from disk, as a user would.
        stock.save_pretrained(f"{tmp}/stock")
        processor.save_pretrained(f"{tmp}/stock")
        shapley.save_pretrained(f"{tmp}/shapley")
        classify = pipeline("image-classification", model=f"{tmp}/stock", device=device)
        explain = pipeline("image-shapley-explanation", model=f"{tmp}/shapley", device=device)
    images = photos(args.num_images)
    k = args.top_k

    rows = []
    for batch in args.batch_sizes:
        times = interleaved_medians(
            {
                "classify": lambda b=batch: classify(images, top_k=k, batch_size=b),
                "explain": lambda b=batch: explain(images, top_k=k, heatmap=False, batch_size=b),
                "heatmaps": lambda b=batch: explain(images, top_k=k, heatmap=True, batch_size=b),
            },
            device=device,
            rounds=args.rounds,
            warmup=1,
        )
        per_image = {name: 1000 * t / len(images) for name, t in times.items()}
        rows.append(
            [
                batch,
                f"{per_image['classify']:.1f}",
                f"{per_image['explain']:.1f}",
                f"{times['explain'] / times['classify']:.3f}",
                f"{(per_image['heatmaps'] - per_image['explain']) / k:.1f}",
            ]
        )

    render_rows = []
    rng = np.random.default_rng(1)
    grid = rng.standard_normal(tuple(args.players_grid))
    from PIL import Image

    for width, height in RENDER_SIZES:
        image = Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
        overlay_heatmap(image, grid, processor)  # warm-up
        start = time.perf_counter()
        repeats = 3
        for _ in range(repeats):
            overlay_heatmap(image, grid, processor)
        render_rows.append(
            [f"{width} x {height}", f"{1000 * (time.perf_counter() - start) / repeats:.1f}"]
        )

    text = (
        f"Device {device} ({device_name(device)}), {torch.get_num_threads()} CPU threads; "
        f"ViT-S/16 224 px (random weights), players {tuple(args.players_grid)}, "
        f"{len(images)} web-photo-sized images (480-800 px) per call, top_k = {k}; "
        f"median of {args.rounds} interleaved rounds.\n\n"
        "(a) Pipeline per image, explanation without heatmaps vs stock image-classification:\n\n"
        + markdown_table(
            [
                "batch",
                "image-classification ms/image",
                "explanation (heatmap=False) ms/image",
                "explanation / classification",
                "heatmap ms per image and label",
            ],
            rows,
        )
        + "\n\n(b) overlay_heatmap alone, per image and label, by original image size:\n\n"
        + markdown_table(["original size", "ms"], render_rows)
        + "\n"
    )
    return report(text, args.out)


if __name__ == "__main__":
    main()
