"""``python -m hf_shapley.demo --model <directory or Hub id>``: open the demo in a browser.

Examples::

    python -m hf_shapley.demo --model outputs/shapley-vit-shapes
    python -m hf_shapley.demo --model my-org/vit-shapley --host 0.0.0.0 --port 7860
"""

from __future__ import annotations

import argparse
import sys

from .dependencies import DEMO_EXTRA_INSTALL


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(
        prog="python -m hf_shapley.demo",
        description="Interactive demo of a self-explaining hf-shapley model (Gradio). Needs "
        f"the demo extra: {DEMO_EXTRA_INSTALL}.",
    )
    parser.add_argument(
        "--model",
        required=True,
        help="A model directory (e.g. outputs/shapley-vit-shapes) or a Hub id.",
    )
    parser.add_argument("--host", default=None, help="Address to serve on (default 127.0.0.1).")
    parser.add_argument("--port", type=int, default=None, help="Port (default 7860 or free).")
    parser.add_argument("--device", default=None, help="Device for the model, e.g. cuda.")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="CPU threads for torch (default: torch's). One is fastest for small models on a "
        "busy CPU (benchmarks/results/demo_latency_cpu_*.md).",
    )
    parser.add_argument(
        "--examples",
        nargs="*",
        default=None,
        help="Example image files (default: built-in test images for built-in models).",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Launch the demo (blocks until interrupted); 1 with a message without Gradio."""
    args = parse_args(argv)
    from .app import launch_demo

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)

    try:
        launch_demo(
            args.model, host=args.host, port=args.port, device=args.device, examples=args.examples
        )
    except ImportError as error:
        if "hf-shapley[demo]" not in str(error):
            raise
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
