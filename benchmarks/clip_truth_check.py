"""Agreement of a trained ShapleyCLIPModel's explanations with the exact Shapley values of its game.

For N built-in test images (P <= 16 players) the exact Shapley values of the image's vector game
are computed by enumerating all 2**P coalitions (``hf_shapley.evaluation.exact_model_shapley_values``),
and projected on each text embedding: the exact values of that text's game (linearity; checked
against a direct enumeration of the scalar game in tests/test_modeling_clip.py). Reported: the
mean per-image Pearson r (bootstrap 95% interval) and median relative L2 error of the model's
one-pass ``phi_i(x, t)`` against them, for the image's own caption (matching text), for the
prompt of its class, and for the prompts of the other classes (non-matching texts), with the
zero-shot accuracy of the prompts on the same images.

    python benchmarks/clip_truth_check.py outputs/clip-shapes --num_images 32
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from PIL import Image
from transformers import AutoImageProcessor, AutoTokenizer

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import markdown_table, report  # noqa: E402

from hf_shapley import ShapleyCLIPModel  # noqa: E402
from hf_shapley.data import generate_shapes, shapes_captions, shapes_class_prompts  # noqa: E402
from hf_shapley.evaluation import bootstrap_mean_interval, pearson_rows  # noqa: E402
from hf_shapley.evaluation.truth import exact_model_shapley_values  # noqa: E402
from hf_shapley.image_loading import to_rgb  # noqa: E402


def pearson(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(pearson_rows(a, b))


def relative_error(estimate: torch.Tensor, truth: torch.Tensor) -> float:
    return float((estimate.double() - truth).norm() / truth.norm())


def summary(name: str, rs: list[float], errors: list[float]) -> list[object]:
    low, high = bootstrap_mean_interval(torch.tensor(rs))
    return [
        name,
        len(rs),
        f"{sum(rs) / len(rs):.3f} [{low:.3f}, {high:.3f}]",
        f"{torch.tensor(errors).median():.3f}",
    ]


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("model_dir")
    parser.add_argument("--num_images", type=int, default=32)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    model = ShapleyCLIPModel.from_pretrained(args.model_dir).eval()
    processor = AutoImageProcessor.from_pretrained(args.model_dir)
    tokenizer = AutoTokenizer.from_pretrained(args.model_dir)
    size = model.image_size[0]
    arrays = generate_shapes(args.num_images, image_size=size, split="test", seed=1,
                             distractors="independent")  # fmt: skip
    images = [to_rgb(Image.fromarray(a)) for a in arrays.images]
    pixels = processor(images, return_tensors="pt").pixel_values
    captions = tokenizer(shapes_captions(arrays, size), padding=True, return_tensors="pt")
    prompts = tokenizer(shapes_class_prompts(4), padding=True, return_tensors="pt")
    truth = exact_model_shapley_values(model, pixels, progress=True)  # (N, P, D)
    with torch.no_grad():
        own = model(pixels, input_ids=captions.input_ids, attention_mask=captions.attention_mask)
        zero_shot = model(
            pixels, input_ids=prompts.input_ids, attention_mask=prompts.attention_mask
        )
    labels = torch.from_numpy(arrays.labels)
    groups: dict[str, tuple[list[float], list[float]]] = {
        "own caption": ([], []),
        "prompt of the true class": ([], []),
        "prompts of the other classes": ([], []),
    }
    for b in range(args.num_images):
        e = own.text_embeds[b].double()
        groups["own caption"][0].append(pearson(own.shapley_values[b, :, b], truth[b] @ e))
        groups["own caption"][1].append(relative_error(own.shapley_values[b, :, b], truth[b] @ e))
        for k in range(4):
            e = zero_shot.text_embeds[k].double()
            name = "prompt of the true class" if k == labels[b] else "prompts of the other classes"
            groups[name][0].append(pearson(zero_shot.shapley_values[b, :, k], truth[b] @ e))
            groups[name][1].append(relative_error(zero_shot.shapley_values[b, :, k], truth[b] @ e))
    accuracy = float((zero_shot.logits_per_image.argmax(1) == labels).float().mean())
    retrieval = float(
        (own.logits_per_image.argmax(1) == torch.arange(args.num_images)).float().mean()
    )
    text = (
        f"# Exact-truth agreement of a ShapleyCLIPModel ({args.model_dir})\n\n"
        f"{args.num_images} built-in test images, P = {model.num_players} players, exact Shapley "
        f"values by enumerating 2**{model.num_players} coalitions. Zero-shot accuracy of the class "
        f"prompts on these images {accuracy:.3f} (chance 0.25); R@1 among their "
        f"{args.num_images} captions {retrieval:.3f}.\n\n"
        + markdown_table(
            ["texts", "pairs", "mean per-image r [95% CI]", "median relative L2 error"],
            [summary(name, rs, errors) for name, (rs, errors) in groups.items()],
        )
        + "\n"
    )
    return report(text, args.out)


if __name__ == "__main__":
    main()
