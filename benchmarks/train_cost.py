"""Step time and peak memory of joint Shapley training against plain training of the same config.

Plain training is the same ``ShapleyForImageClassification`` with the objective switched off
(``lambda = alpha = 0``: cross-entropy of the soft-voting prediction), so the ratio isolates the
objective's masked passes. Steps are interleaved across configurations, median of ``--steps``
after warm-up. Next to each measured ratio: the FLOP model of docs/evaluation.md ("Cost")
(``1 + m/6 + g/3``) and the packing-aware model of this implementation, in which the ``g``
distillation coalitions are drawn as complementary pairs sharing one packed sequence with
gradients (``1 + m/6 + ceil(g/2)``: a packed sequence costs one full forward, and with
gradients one full training pass).

    python benchmarks/train_cost.py                      # CPU, ViT-S/16 224 px, batch 8
    python benchmarks/train_cost.py --device cuda --dtype bfloat16
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import subprocess
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (
    VIT_SMALL_224,
    device_name,
    interleaved_medians,
    markdown_table,
    pick_device,
    report,
)  # noqa: E402


def build(m: int, g: int, device: torch.device, players_grid, num_labels: int = 10):
    from transformers import ViTConfig

    import hf_shapley  # noqa: F401
    from hf_shapley import ShapleyConfig, ShapleyForImageClassification

    weights = dict(shapley_loss_weight=1.0 if m else 0.0, distill_loss_weight=1.0 if g else 0.0)
    config = ShapleyConfig(
        backbone_config=ViTConfig(**VIT_SMALL_224),
        num_labels=num_labels,
        players_grid=players_grid,
        num_shapley_coalitions=m,
        num_distill_coalitions=g,
        coalition_batch_size=512,
        **weights,
    )
    torch.manual_seed(0)
    model = ShapleyForImageClassification(config).to(device).train()
    return model, torch.optim.AdamW(model.parameters(), lr=1e-4)


def make_step(model, optimizer, x, y, autocast):
    counter = itertools.count()

    def step():
        i = next(counter)
        with autocast:
            out = model(x, labels=y, example_index=torch.arange(len(y)) + i * len(y))
        optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        optimizer.step()

    return step


def memory_child(m: int, g: int, args) -> None:
    """Run a few steps of one configuration and print its peak memory (MiB)."""
    device = pick_device(args.device)
    model, opt = build(m, g, device, args.players_grid)
    x = torch.randn(args.batch_size, 3, 224, 224, device=device)
    y = torch.randint(0, 10, (args.batch_size,), device=device)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.dtype == "bfloat16")
    step = make_step(model, opt, x, y, autocast)
    for _ in range(2):
        step()
    # VmHWM (peak RSS of this process image): ru_maxrss would be wrong here, since Linux keeps
    # it across exec and the parent that started this child already holds every model.
    with open("/proc/self/status") as status:
        peak_kib = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
    print(json.dumps({"peak_mib": peak_kib / 1024}))


def cpu_peak_memory(configs, args) -> dict:
    """Peak RSS (MiB) of each configuration, each in a fresh child process."""
    base = [sys.executable, __file__, "--device", "cpu", "--dtype", args.dtype]
    base += ["--batch-size", str(args.batch_size), "--players-grid", *map(str, args.players_grid)]
    memory = {}
    for m, g in configs:
        out = subprocess.run(
            base + ["--memory-child", str(m), str(g)], capture_output=True, text=True, check=True
        )
        memory[(m, g)] = json.loads(out.stdout.strip().splitlines()[-1])["peak_mib"]
    return memory


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--players-grid", nargs=2, type=int, default=[14, 14])
    parser.add_argument("--m", nargs="+", type=int, default=[2, 8, 32])
    parser.add_argument("--g", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory measurement")
    parser.add_argument(
        "--memory-only", action="store_true", help="skip the timing (CPU memory only)"
    )
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--memory-child", nargs=2, type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.memory_child:
        return memory_child(*args.memory_child, args)

    device = pick_device(args.device)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.dtype == "bfloat16")
    x = torch.randn(args.batch_size, 3, 224, 224, device=device)
    y = torch.randint(0, 10, (args.batch_size,), device=device)
    configs = [(0, 0)] + [(m, g) for m in args.m for g in args.g]
    if args.memory_only:
        memory = cpu_peak_memory(configs, args)
        rows = [
            ["plain" if (m, g) == (0, 0) else m, g, f"{memory[(m, g)]:.0f}"] for m, g in configs
        ]
        text = f"Peak RSS per configuration (child processes), batch {args.batch_size}:\n\n"
        return report(text + markdown_table(["m", "g", "peak MiB"], rows) + "\n", args.out)
    steps, memory = {}, {}
    for m, g in configs:
        model, opt = build(m, g, device, args.players_grid)
        steps[(m, g)] = make_step(model, opt, x, y, autocast)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
            steps[(m, g)]()
            memory[(m, g)] = torch.cuda.max_memory_allocated(device) / 2**20
    times = interleaved_medians(
        {f"{m},{g}": fn for (m, g), fn in steps.items()}, device=device, rounds=args.steps
    )

    if device.type == "cpu" and not args.no_memory:
        memory = cpu_peak_memory(configs, args)

    plain = times["0,0"]
    rows = []
    for m, g in configs:
        ratio = times[f"{m},{g}"] / plain
        design = 1 + m / 6 + g / 3
        packed = 1 + m / 6 + math.ceil(g / 2)
        rows.append(
            [
                "plain" if (m, g) == (0, 0) else m,
                "-" if (m, g) == (0, 0) else g,
                f"{1000 * times[f'{m},{g}']:.0f}",
                f"{ratio:.2f}",
                f"{design:.2f}",
                f"{packed:.2f}",
                f"{ratio / packed:.2f}",
                f"{memory.get((m, g), float('nan')):.0f}",
            ]
        )
    within_2x = [m for m in args.m if all(times[f"{m},{g}"] / plain <= 2 for g in args.g if g <= 1)]
    name = device_name(device)
    table = markdown_table(
        [
            "m",
            "g",
            "step ms",
            "x plain",
            "FLOP model (DESIGN)",
            "FLOP model (packed)",
            "measured / packed",
            "peak MiB",
        ],
        rows,
    )
    text = (
        f"Device {device} ({name}), {args.dtype}, ViT-S/16 224 px, batch {args.batch_size}, players "
        f"{tuple(args.players_grid)}, median of {args.steps} interleaved steps after warm-up. Peak memory: "
        f"{'max_memory_allocated' if device.type == 'cuda' else 'max RSS of a child process'}.\n\n{table}\n\n"
        f"Largest m within 2x of plain training (g <= 1): {max(within_2x) if within_2x else 'none'}\n"
    )
    return report(text, args.out)


if __name__ == "__main__":
    main()
