"""Training cost: the joint training step against a plain one, and each of the main job's
training shortcuts against the step without it. One measurement per mode, each a ratio against
its baseline run side by side in the same process:

    python benchmarks/train_cost.py [joint] ...             # joint step against a plain one
    python benchmarks/train_cost.py frozen-game-dtype ...   # head step, frozen game bf16 / fp32
    python benchmarks/train_cost.py frozen-pass-cache ...   # later head step, full pass kept or not
    python benchmarks/train_cost.py head-mixer ...          # head mixer, own forward / torch's layer
    python benchmarks/train_cost.py leading-tokens-block ...  # last block for the specials only
    python benchmarks/train_cost.py data ...                # batches processed once in memory or not

``python benchmarks/train_cost.py MODE --help`` describes each mode. Without a mode the script
measures the joint step (``joint``):

Step time and peak memory of joint Shapley training against plain training of the same config.

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
import contextlib
import inspect
import itertools
import json
import math
import platform
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    VIT_SMALL_224,
    device_name,
    host_description,
    interleaved_medians,
    markdown_table,
    pick_device,
    report,
)
from recipe import tensors  # noqa: E402

#: The main job's training images (``frozen-pass-cache``: the memory the kept passes need).
MAIN_JOB_IMAGES = 8000


def mode_parser(mode: str, description: str) -> argparse.ArgumentParser:
    """The parser of one mode, its help the mode function's docstring."""
    return argparse.ArgumentParser(
        prog=f"train_cost.py {mode}",
        description=inspect.cleandoc(description),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def head_step_parser(mode: str, description: str, rounds: int) -> argparse.ArgumentParser:
    """A mode that times the main job's head step on a saved model: its parser."""
    parser = mode_parser(mode, description)
    parser.add_argument("--model", default="outputs/shapley-vit-shapes")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=64, help="the main job's")
    parser.add_argument("--rounds", type=int, default=rounds)
    parser.add_argument("--out", type=Path, default=None)
    return parser


# ------------------------------------------------------------ joint
# The joint training step against a plain one.
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


def joint(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(
        prog="train_cost.py [joint]",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
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


# ------------------------------------------------------------ frozen-game-dtype
# The head step with the frozen game in bf16 against fp32.
def load_frozen(path: str, dtype: str, device: torch.device):
    from hf_shapley import ShapleyForImageClassification

    model = ShapleyForImageClassification.from_pretrained(path, frozen_game_dtype=dtype)
    if not model.config.reuse_shapley_coalitions:
        raise SystemExit(f"{path} is not a frozen-classifier model (reuse_shapley_coalitions).")
    return model.to(device).train()


def make_head_step(model, x, y, *, first_epoch: bool):
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-6)
    index = torch.arange(len(x))

    def step():
        if first_epoch:
            model.coalition_value_cache.clear()  # every visit a first one: masked passes
        out = model(x, labels=y, example_index=index, epoch=0, global_step=10_000)
        out.loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def frozen_game_dtype(argv: list[str] | None = None) -> str:
    """Step time of the main job's head training: fp32 against a bf16 frozen game, side by side.

    With a frozen classifier the head's training step has two kinds: a first-epoch step makes the
    masked passes of each image's kept coalitions (``reuse_shapley_coalitions``), a later step
    reads the kept values and passes only the full images. ``frozen_game_dtype="bfloat16"`` runs
    both kinds of frozen pass under bf16 autocast. This mode times one optimizer step of each
    kind for each precision on the same model, batch and coalitions, interleaved round-robin
    (median of ``--rounds``), and reports the ratios: the measurement behind the main job's default
    (``examples/train.py``: bf16 where the device computes it natively).

        python benchmarks/train_cost.py frozen-game-dtype --model outputs/shapley-vit-shapes
        python benchmarks/train_cost.py frozen-game-dtype --device cuda
    """
    parser = head_step_parser("frozen-game-dtype", frozen_game_dtype.__doc__, rounds=8)
    args = parser.parse_args(argv)
    device = pick_device(args.device)
    models = {dtype: load_frozen(args.model, dtype, device) for dtype in ("float32", "bfloat16")}
    size = models["float32"].config.backbone_config.image_size
    x, y = tensors(args.batch_size, "train", image_size=size)
    x, y = x.to(device), y.to(device)
    fns = {
        (kind, dtype): make_head_step(model, x, y, first_epoch=kind == "first epoch")
        for kind in ("first epoch", "later epoch")
        for dtype, model in models.items()
    }
    times = interleaved_medians(fns, device=device, rounds=args.rounds)
    rows = []
    for kind in ("first epoch", "later epoch"):
        fp32, bf16 = times[(kind, "float32")], times[(kind, "bfloat16")]
        rows.append([kind, f"{fp32:.3f}", f"{bf16:.3f}", f"{fp32 / bf16:.2f}"])
    text = "\n".join(
        [
            "# Head training step: fp32 against a bf16 frozen game",
            "",
            f"Written by `benchmarks/train_cost.py frozen-game-dtype`: {args.model}, batch {args.batch_size}, "
            f"median of {args.rounds} interleaved rounds; {host_description(device)}.",
            "",
            markdown_table(
                ["step", "fp32 s", "bf16 game s", "speed-up"],
                rows,
            ),
            "",
        ]
    )
    return report(text, args.out)


# ------------------------------------------------------------ frozen-pass-cache
# A later head step with the frozen full pass kept or recomputed.
def frozen_pass_cache(argv: list[str] | None = None) -> str:
    """A later epoch's head step with the frozen classifier's full pass recomputed or kept.

    With a frozen classifier (``reuse_shapley_coalitions``) the first epoch keeps each image's
    coalition values; a later step then still runs the backbone once on the full images, for the
    logits, ``v(empty)`` and the features the head reads. ``FullPassCache`` keeps those too
    (``ShapleyTrainingArguments.frozen_pass_cache_gb``), so that a later step trains the head
    alone. This mode times a later epoch's optimizer step both ways on the same model, batch and
    kept values, interleaved round-robin (median of ``--rounds``), and reports the ratio and the
    memory the store needs per image and for the main job's 8,000 images.

        python benchmarks/train_cost.py frozen-pass-cache --model outputs/shapley-vit-shapes
    """
    parser = head_step_parser("frozen-pass-cache", frozen_pass_cache.__doc__, rounds=10)
    args = parser.parse_args(argv)
    from hf_shapley import ShapleyForImageClassification

    device = pick_device(args.device)
    models = {}
    for name, budget in (("recomputed", 0), ("kept", 2**34)):
        model = ShapleyForImageClassification.from_pretrained(args.model).to(device).train()
        if not model.config.reuse_shapley_coalitions:
            raise SystemExit(f"{args.model} is not a frozen-classifier model.")
        model.full_pass_cache.max_bytes = budget
        models[name] = model
    size = models["kept"].config.backbone_config.image_size
    x, y = tensors(args.batch_size, "train", image_size=size)
    x, y = x.to(device), y.to(device)
    # A later epoch's step: the warm-up calls fill the stores (coalition values, and for
    # "kept" the full pass), every timed call then reads them.
    fns = {name: make_head_step(model, x, y, first_epoch=False) for name, model in models.items()}
    times = interleaved_medians(fns, device=device, rounds=args.rounds)
    per_image = models["kept"].full_pass_cache.nbytes / args.batch_size
    recomputed, kept = times["recomputed"], times["kept"]
    text = "\n".join(
        [
            "# A later epoch's head step: the frozen full pass recomputed or kept",
            "",
            f"Written by `benchmarks/train_cost.py frozen-pass-cache`: {args.model} (frozen game in "
            f"{models['kept'].config.frozen_game_dtype}), batch {args.batch_size}, median of "
            f"{args.rounds} interleaved rounds; {host_description(device)}.",
            "",
            markdown_table(
                ["full pass", "step s", "speed-up"],
                [
                    ["recomputed", f"{recomputed:.3f}", "1.00"],
                    ["kept", f"{kept:.3f}", f"{recomputed / kept:.2f}"],
                ],
            ),
            "",
            f"Kept per image: {per_image / 1024:.0f} KiB; for the main job's "
            f"{MAIN_JOB_IMAGES:,} images {per_image * MAIN_JOB_IMAGES / 2**30:.2f} GiB. Over its "
            f"875 later steps: {875 * (recomputed - kept):.0f} s saved.",
            "",
        ]
    )
    return report(text, args.out)


# ------------------------------------------------------------ head-mixer
# The head's mixer through its own forward or torch's layer.
def head_mixer(argv: list[str] | None = None) -> str:
    """A later epoch's head step with the head's attention mixer run by torch or by its own forward.

    The Shapley head's mixer is an ``nn.TransformerEncoder``; ``ShapleyHead`` runs its layers'
    parameters through ``modeling_shapley.pre_norm_encoder_layer`` (q, k and v as views of one
    projection) instead of ``nn.TransformerEncoderLayer.forward``, whose training path copies them
    into a packed tensor and zero-fills gradient buffers. This mode times the main job's later
    epoch step (frozen classifier, kept coalition values and full passes: the head alone) both
    ways on two copies of the same model and batch, interleaved round-robin (median of
    ``--rounds``), and reports the ratio (``tests/test_shapley_head.py`` checks that both give the
    same values and gradients).

        python benchmarks/train_cost.py head-mixer --model outputs/shapley-vit-shapes
    """
    parser = head_step_parser("head-mixer", head_mixer.__doc__, rounds=10)
    args = parser.parse_args(argv)
    import hf_shapley.models.modeling_shapley as modeling
    from hf_shapley import ShapleyForImageClassification

    device = pick_device(args.device)
    own_forward = modeling.pre_norm_encoder_layer

    def torch_forward(layer, x):
        return layer(x)

    models = {}
    for name in ("torch layer", "own forward"):
        model = ShapleyForImageClassification.from_pretrained(args.model).to(device).train()
        if model.shapley_head.mixer is None:
            raise SystemExit(f"{args.model}'s head has no attention mixer.")
        model.full_pass_cache.max_bytes = 2**34
        models[name] = model
    size = models["own forward"].config.backbone_config.image_size
    x, y = tensors(args.batch_size, "train", image_size=size)
    x, y = x.to(device), y.to(device)
    steps = {name: make_head_step(m, x, y, first_epoch=False) for name, m in models.items()}

    def with_forward(name):
        def run():
            modeling.pre_norm_encoder_layer = (
                own_forward if name == "own forward" else torch_forward
            )
            try:
                steps[name]()
            finally:
                modeling.pre_norm_encoder_layer = own_forward

        return run

    times = interleaved_medians(
        {name: with_forward(name) for name in steps}, device=device, rounds=args.rounds
    )
    torch_s, own_s = times["torch layer"], times["own forward"]
    text = "\n".join(
        [
            "# Head training step: the mixer through torch's layer or its own forward",
            "",
            f"Written by `benchmarks/train_cost.py head-mixer`: {args.model}, a later epoch's step "
            f"(the head alone), batch {args.batch_size}, median of {args.rounds} interleaved "
            f"rounds; {host_description(device)}.",
            "",
            markdown_table(
                ["torch layer s", "own forward s", "speed-up"],
                [[f"{torch_s:.3f}", f"{own_s:.3f}", f"{torch_s / own_s:.2f}"]],
            ),
            "",
        ]
    )
    return report(text, args.out)


# ------------------------------------------------------------ leading-tokens-block
# Packed passes with the last block for the special tokens only.
@dataclass(frozen=True)
class WholeBlockReadout:
    """The model's readout, declared as reading the patch tokens: the packed passes then run
    the last block whole (the behaviour before ``num_outputs``)."""

    readout: object
    reads_tokens: ClassVar[bool] = True

    def modules(self):
        return self.readout.modules()

    def value(self, view):
        return self.readout.value(view)


def leading_tokens_block(argv: list[str] | None = None) -> str:
    """Packed coalition passes with the last block computed for the special tokens only.

    A wrapped classifier reads the CLS token alone, so after the last encoder block no patch
    token's state is needed: ``TokenRemovalAdapter.encode_tokens(num_outputs=...)`` computes that
    block's queries, attention output and MLP for the special tokens only. This mode times the
    unit of work of the exact truth, the KernelSHAP truth and the head's first epoch - the game
    values of ``--pairs`` packed complementary pairs of one image - both ways on the same model,
    interleaved round-robin (median of ``--rounds``): the whole block is forced by declaring the
    same readout as one that reads tokens. fp32 (the truth) and, where the model sets it, the bf16
    autocast of a frozen game's training passes. It also reports the largest difference between
    the two ways' values.

        python benchmarks/train_cost.py leading-tokens-block --model outputs/shapley-vit-shapes
    """
    from hf_shapley import ShapleyForImageClassification
    from hf_shapley.models.coalitions import all_coalitions

    parser = mode_parser("leading-tokens-block", leading_tokens_block.__doc__)
    parser.add_argument("--model", default="outputs/shapley-vit-shapes")
    parser.add_argument("--pairs", type=int, default=2048)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    device = torch.device("cpu")
    model = ShapleyForImageClassification.from_pretrained(args.model).eval()
    if model.readout.reads_tokens:
        raise SystemExit(f"{args.model}'s readout reads every token: nothing to skip.")
    P = model.num_players
    x, _ = tensors(1, "test", image_size=model.config.backbone_config.image_size)
    codes = torch.randperm(2 ** (P - 1), generator=torch.Generator().manual_seed(0))
    first = all_coalitions(P)[codes[: args.pairs]]
    pairs = torch.stack([first, ~first], dim=1).reshape(1, -1, P)
    game, readout = model.game, model.readout
    context = game.prepare(x)
    readouts = {"whole last block": WholeBlockReadout(readout), "special tokens only": readout}
    dtypes = ["float32"]
    if model.config.frozen_game_dtype != "float32":
        dtypes.append(model.config.frozen_game_dtype)

    rows = []
    for dtype in dtypes:

        def values(r, dtype=dtype):
            autocast = (
                torch.autocast("cpu", dtype=getattr(torch, dtype))
                if dtype != "float32"
                else contextlib.nullcontext()
            )
            with torch.no_grad(), autocast:
                return game.values(context, pairs, r)

        fns = {name: (lambda r=r: values(r)) for name, r in readouts.items()}
        times = interleaved_medians(fns, device=device, rounds=args.rounds)
        whole, specials = times["whole last block"], times["special tokens only"]
        diff = (values(readouts["whole last block"]) - values(readout)).abs().max().item()
        rows.append(
            [dtype, f"{whole:.3f}", f"{specials:.3f}", f"{whole / specials:.2f}", f"{diff:.1e}"]
        )
    text = "\n".join(
        [
            "# Packed passes: the last block whole or for the special tokens only",
            "",
            f"Written by `benchmarks/train_cost.py leading-tokens-block`: {args.model}, {args.pairs} packed "
            f"complementary pairs of one image (P = {P}), median of {args.rounds} interleaved "
            f"rounds; {host_description(device)}.",
            "",
            markdown_table(
                ["dtype", "whole s", "specials only s", "speed-up", "max abs difference"], rows
            ),
            "",
        ]
    )
    return report(text, args.out)


# ------------------------------------------------------------ data
# Batches processed in every batch against once, in memory.
def epoch_seconds(dataset, collator, batch_size: int) -> float:
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, shuffle=True, collate_fn=collator, num_workers=0
    )
    start = time.perf_counter()
    for _ in loader:
        pass
    return time.perf_counter() - start


def data(argv: list[str] | None = None) -> str:
    """What the main job's batches cost: images processed in every batch against once, in memory.

    The Trainer's data loader hands ``ShapleyImageCollator`` 64 examples a step; by default the
    collator decodes and processes their images every time, in the training process (the main job
    uses no loader workers: 2 cores). ``examples/train.py --preprocess_in_memory_gb`` processes each
    split once instead (``hf_shapley.data.process_in_memory``). This mode times both on the
    built-in training split with a main-job model's image processor, side by side in one process:
    the one-time processing, and one epoch of batches each way, through the same ``DataLoader`` and
    collator the Trainer builds.

        python benchmarks/train_cost.py data --model outputs/shapley-vit-shapes
    """
    parser = mode_parser("data", data.__doc__)
    parser.add_argument("--model", default="outputs/shapley-vit-shapes", help="its processor")
    parser.add_argument("--num-train", type=int, default=8000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=16, help="the main job's, both phases")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    from transformers import AutoImageProcessor

    from hf_shapley.data import load_image_splits, process_in_memory
    from hf_shapley.training.trainer import ShapleyImageCollator

    processor = AutoImageProcessor.from_pretrained(args.model)
    size = processor.size["height"]
    train, _ = load_image_splits(num_train=args.num_train, num_test=1, image_size=size)
    collator = ShapleyImageCollator(image_processor=processor, image_column="image")
    start = time.perf_counter()
    kept = process_in_memory(train, processor, max_gb=2.0)
    once = time.perf_counter() - start
    every, memory = [], []
    for _ in range(2):  # interleaved
        every.append(epoch_seconds(train, collator, args.batch_size))
        memory.append(epoch_seconds(kept, collator, args.batch_size))
    every_s, memory_s = min(every), min(memory)
    total_every, total_memory = args.epochs * every_s, once + args.epochs * memory_s
    text = "\n".join(
        [
            "# The main job's batches: processed every batch against once, in memory",
            "",
            f"Written by `benchmarks/train_cost.py data`: {args.num_train} built-in images, batches of "
            f"{args.batch_size}, best of 2 interleaved epochs each; {platform.machine()}, "
            f"{torch.get_num_threads()} torch threads.",
            "",
            markdown_table(
                ["", "every batch", "in memory"],
                [
                    ["one-time processing s", "-", f"{once:.1f}"],
                    ["one epoch of batches s", f"{every_s:.1f}", f"{memory_s:.2f}"],
                    [
                        f"{args.epochs} epochs (the main job) s",
                        f"{total_every:.0f}",
                        f"{total_memory:.0f}",
                    ],
                ],
            ),
            "",
        ]
    )
    return report(text, args.out)


#: Each mode and the function that measures it; ``joint`` is the default.
MODES = {
    "joint": joint,
    "frozen-game-dtype": frozen_game_dtype,
    "frozen-pass-cache": frozen_pass_cache,
    "head-mixer": head_mixer,
    "leading-tokens-block": leading_tokens_block,
    "data": data,
}


def main(argv: list[str] | None = None) -> str | None:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in MODES:
        return MODES[argv[0]](argv[1:])
    return joint(argv)


if __name__ == "__main__":
    main()
