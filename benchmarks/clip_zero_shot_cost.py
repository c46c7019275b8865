"""Cost of zero-shot classification WITH explanations against plain CLIP zero-shot classification.

Both models share one CLIP (the ShapleyCLIPModel wraps the CLIPModel's weights; CLIP ViT-B/32
config by default, random weights: cost does not depend on them), run side by side in one
process, interleaved. Each call scores B images against T candidate texts: the plain model with
``CLIPModel(input_ids, pixel_values)``, the self-explaining one with its forward, which also
returns the (B, P, T) Shapley values and (B, T) base values (one extra pass of the CLS token
alone, one pass of the Shapley head, a (P x D) @ (D x T) product per image).

    python benchmarks/clip_zero_shot_cost.py                      # CPU, ViT-B/32, 100 labels
    python benchmarks/clip_zero_shot_cost.py --device cuda --out results/clip_zero_shot_cost_h100.md
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from transformers import CLIPConfig, CLIPModel

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import device_name, interleaved_medians, markdown_table, pick_device, report  # noqa: E402

from hf_shapley import ShapleyCLIPModel  # noqa: E402


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--num_labels", type=int, default=100)
    parser.add_argument("--text_length", type=int, default=9, help="Tokens per label text.")
    parser.add_argument("--batch_sizes", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--players_grid", type=int, nargs=2, default=[7, 7])
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    device = pick_device(args.device)
    torch.manual_seed(0)
    clip = CLIPModel(CLIPConfig()).eval().to(device)
    model = ShapleyCLIPModel.from_clip(clip, players_grid=tuple(args.players_grid)).eval()
    model.to(device)
    vocab = clip.config.text_config.vocab_size
    eos = clip.config.text_config.eos_token_id
    ids = torch.randint(1, vocab - 2, (args.num_labels, args.text_length), device=device)
    ids[:, -1] = eos
    size = clip.config.vision_config.image_size
    rows = []
    for batch in args.batch_sizes:
        pixels = torch.randn(batch, 3, size, size, device=device)
        with torch.inference_mode():
            assert torch.equal(
                model(pixels, input_ids=ids).logits_per_image,
                clip(input_ids=ids, pixel_values=pixels).logits_per_image,
            )
            times = interleaved_medians(
                {
                    "plain": lambda p=pixels: clip(input_ids=ids, pixel_values=p),
                    "shapley": lambda p=pixels: model(p, input_ids=ids),
                },
                device=device,
                rounds=args.rounds,
            )
        rows.append(
            [
                batch,
                args.num_labels,
                f"{times['plain'] * 1e3:.1f}",
                f"{times['shapley'] * 1e3:.1f}",
                f"{times['shapley'] / times['plain']:.3f}",
            ]
        )
    threads = torch.get_num_threads()
    text = (
        f"# Zero-shot classification with explanations vs plain CLIP ({device_name(device)}, "
        f"{threads} thread(s))\n\n"
        f"CLIP ViT-B/32 config (224 px, 7 x 7 patches), players {tuple(args.players_grid)}, "
        f"Shapley head {model.config.head_num_layers} layers / width "
        f"{model.config.head_hidden_size}, {args.num_labels} label texts of {args.text_length} "
        f"tokens; median of {args.rounds} interleaved rounds. Scores are bit-identical.\n\n"
        + markdown_table(["images", "labels", "plain ms", "with explanations ms", "ratio"], rows)
        + "\n"
    )
    return report(text, args.out)


if __name__ == "__main__":
    main()
