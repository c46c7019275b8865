"""Explain a folder of images with a trained self-explaining model.

    python examples/explain.py --model outputs/shapley-vit-shapes --images ./my_images \
        --output_dir outputs/explained --top_k 3

For every readable image (searched recursively) it writes ``<output_dir>/<relative path>.png``,
the image beside one heatmap per explained label, and one JSON file ``attributions.json`` with,
per image, the labels, scores, logits, base values and ``h x w`` attributions. Unreadable files
(not images, corrupt, unsupported) are skipped with a warning and listed under ``"skipped"`` in
the JSON file, so one bad file does not stop a folder. The model loads from a local directory
or the Hub (``--trust_remote_code`` uses the code saved with the model instead of the installed
package).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm
from transformers import pipeline

import hf_shapley
from hf_shapley.models.image_loading import ImageLoadingError, load_rgb_image

logger = logging.getLogger("hf_shapley.explain")

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm"}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="Model directory or Hub id.")
    parser.add_argument("--images", required=True, help="A folder of images (or one image).")
    parser.add_argument("--output_dir", default="outputs/explained")
    parser.add_argument("--top_k", type=int, default=3, help="Labels explained per image.")
    parser.add_argument(
        "--targets", nargs="+", default=None, help="Explain these labels (names or ids) instead."
    )
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--colormap", default="RdBu_r")
    parser.add_argument("--opacity", type=float, default=0.5)
    parser.add_argument(
        "--raw_logits",
        action="store_true",
        help="Explain the raw logits instead of the class-centered ones (the pipeline default).",
    )
    parser.add_argument(
        "--no_pictures", action="store_true", help="Write the JSON file only (no heatmaps)."
    )
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: auto).")
    parser.add_argument("--trust_remote_code", action="store_true")
    return parser.parse_args(argv)


def find_images(root: Path) -> list[Path]:
    if root.is_file():
        return [root]
    if not root.is_dir():
        raise FileNotFoundError(f"--images {str(root)!r} is neither a folder nor a file.")
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise FileNotFoundError(
            f"No image files ({', '.join(sorted(IMAGE_SUFFIXES))}) under {str(root)!r}."
        )
    return files


def readable_images(files: list[Path]) -> tuple[list[tuple[Path, object]], list[dict]]:
    """Load the files; keep the readable ones and record why the others were skipped."""
    loaded, skipped = [], []
    for path in files:
        try:
            loaded.append((path, load_rgb_image(str(path))))
        except ImageLoadingError as error:
            logger.warning("Skipping %s: %s", path, error)
            skipped.append({"file": str(path), "reason": str(error)})
    return loaded, skipped


def write_picture(image, entries: list[dict], path: Path) -> None:
    """The image beside its heatmaps, one panel per label with its title, in one PNG."""
    from PIL import Image, ImageDraw

    panels = [image] + [entry["heatmap"] for entry in entries]
    titles = ["input"] + [
        f"{entry['label']} p={entry['score']:.2f} logit={entry['logit']:.2f}" for entry in entries
    ]
    width, height = image.size
    title_height = 16
    sheet = Image.new("RGB", (width * len(panels), height + title_height), "white")
    draw = ImageDraw.Draw(sheet)
    for i, (panel, title) in enumerate(zip(panels, titles, strict=True)):
        sheet.paste(panel, (i * width, title_height))
        draw.text((i * width + 2, 2), title[: max(8, width // 6)], fill="black")
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    logging.basicConfig(format="%(levelname)s %(name)s: %(message)s", level=logging.INFO)
    root = Path(args.images)
    out_dir = Path(args.output_dir)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    explainer = pipeline(
        hf_shapley.PIPELINE_TASK,
        model=args.model,
        device=device,
        trust_remote_code=args.trust_remote_code,
    )
    files = find_images(root)
    options = {"heatmap": not args.no_pictures, "colormap": args.colormap, "opacity": args.opacity}
    if args.raw_logits:
        options["centered"] = False
    if args.targets:
        options["targets"] = [int(t) if t.isdigit() else t for t in args.targets]
    else:
        options["top_k"] = args.top_k

    records, skipped = [], []
    start = time.perf_counter()
    progress = tqdm(total=len(files), desc="Explaining", unit="image")
    # One batch of images in memory at a time: a folder may hold more than fits.
    for offset in range(0, len(files), args.batch_size):
        batch_files = files[offset : offset + args.batch_size]
        chunk, unreadable = readable_images(batch_files)
        skipped += unreadable
        results = (
            explainer([image for _, image in chunk], batch_size=len(chunk), **options)
            if chunk
            else []
        )
        for (path, image), entries in zip(chunk, results, strict=True):
            relative = path.relative_to(root) if root.is_dir() else Path(path.name)
            if not args.no_pictures:
                write_picture(image, entries, (out_dir / relative).with_suffix(".png"))
            for entry in entries:
                entry.pop("heatmap", None)
            records.append({"file": str(relative), "size": list(image.size), "labels": entries})
        progress.update(len(batch_files))
    progress.close()
    seconds = time.perf_counter() - start

    summary = {
        "model": args.model,
        "players_grid": list(explainer.players_grid),
        "images": records,
        "skipped": skipped,
        "seconds": seconds,
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "attributions.json").write_text(json.dumps(summary, indent=1))
    logger.info(
        "Explained %d images (%d skipped) in %.1f s; wrote %s",
        len(records),
        len(skipped),
        seconds,
        os.path.join(out_dir, "attributions.json"),
    )
    return summary


if __name__ == "__main__":
    main(sys.argv[1:] or None)
