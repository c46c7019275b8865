"""A real two-process DDP run of ShapleyTrainer on CPU (gloo), against a one-process run.

``tests/_ddp_script.py`` trains 3 SGD steps with a global batch of 8: once as one process
with batch 8 (``python``), once as two processes with batch 4 each, started by
``accelerate launch --multi_gpu --num_processes 2`` (docs/design.md, "Library facts this code relies on": ``--cpu
--num_processes 2`` silently runs ONE process). A sequential sampler fixes the data order;
Accelerate shards the batches, so each step's global batch is the same 8 rows in both runs.

What it proves: two ranks ran (world size 2, ranks 0 and 1, disjoint halves of each global
batch); DDP kept their weights identical; the result equals the one-process run (DDP averages
gradients and every loss term is a mean of per-image terms, with coalitions keyed by example
index, not by rank); the logged loss components are averaged across processes; and the
evaluation metrics drop the duplicates that pad the last eval batch across processes.

``tests/_ddp_clip_script.py`` does the same for the self-explaining CLIP and
``ShapleyCLIPTrainer``, in the two phases of ``examples/train_clip.py`` (joint, then explainer
with CLIP frozen, a second trainer on the same model), with ``ddp_find_unused_parameters=False``
(test_two_process_ddp_matches_one_process_clip).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

SCRIPT = Path(__file__).with_name("_ddp_script.py")
CLIP_SCRIPT = Path(__file__).with_name("_ddp_clip_script.py")
TIMEOUT_S = 120
# A gloo run has been seen to hang at exit (after writing all its outputs) about once in ten
# launches; a hung launch is killed and started again once, from scratch.
ATTEMPTS = 2

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not torch.distributed.is_available(), reason="torch.distributed unavailable"
    ),
]


def _accelerate() -> str:
    candidate = Path(sys.executable).with_name("accelerate")
    if not candidate.exists():
        pytest.skip("the accelerate launcher is not installed next to this Python")
    return str(candidate)


def _run(command: list[str], log: Path) -> float:
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "CUDA_VISIBLE_DEVICES": "",  # CPU + gloo even on a GPU machine
        "TOKENIZERS_PARALLELISM": "false",
        "HF_HUB_OFFLINE": "1",
        "DDP_SCRIPT_END": "1",
    }
    for attempt in range(1, ATTEMPTS + 1):
        start = time.monotonic()
        with open(log, "w") as out:
            # A new session, so that a hung launcher and its workers can be killed together.
            proc = subprocess.Popen(
                command, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )
            try:
                rc = proc.wait(timeout=TIMEOUT_S)
                break
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                if attempt == ATTEMPTS:
                    pytest.fail(
                        f"{command[:3]} ran over {TIMEOUT_S} s {ATTEMPTS} times:\n"
                        f"{log.read_text()[-3000:]}"
                    )
    assert rc == 0, f"{' '.join(command)} failed ({rc}):\n{log.read_text()[-5000:]}"
    return time.monotonic() - start


def _record(directory: Path, rank: int) -> dict:
    with open(directory / f"rank{rank}.json") as f:
        return json.load(f)


def _train_logs(record: dict) -> list[dict]:
    return [log for log in record["log_history"] if "loss" in log]


def _launch_two_processes(script: Path, *args: str) -> list[str]:
    """``accelerate launch`` of ``script`` as two CPU processes (gloo)."""
    return [
        _accelerate(),
        "launch",
        "--multi_gpu",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "--main_process_port",
        "0",
        str(script),
        *args,
    ]


def test_two_process_ddp_matches_one_process(tmp_path):
    single, double = tmp_path / "single", tmp_path / "ddp"
    _run([sys.executable, str(SCRIPT), str(single), "8"], tmp_path / "single.log")
    _run(_launch_two_processes(SCRIPT, str(double), "4"), tmp_path / "ddp.log")

    # Two processes really ran, in one process group.
    ranks = [_record(double, r) for r in (0, 1)]
    assert [r["rank"] for r in ranks] == [0, 1]
    assert all(r["world_size"] == 2 and r["dist_world_size"] == 2 for r in ranks)
    one = _record(single, 0)
    assert one["world_size"] == 1 and not one["torch_distributed"]

    # Each global batch of the one-process run is split in two disjoint halves, one per rank.
    assert len(one["seen"]) == len(ranks[0]["seen"]) == len(ranks[1]["seen"]) == 3
    for (step, batch), (step0, half0), (step1, half1) in zip(
        one["seen"], ranks[0]["seen"], ranks[1]["seen"], strict=True
    ):
        assert step == step0 == step1
        assert len(half0) == len(half1) == 4 and not set(half0) & set(half1)
        assert sorted(half0 + half1) == sorted(batch)
    # Every rank's model got the optimizer step and the epoch as forward arguments.
    for record in (one, *ranks):
        assert record["forwards"] == [[step, 0] for step in range(3)]

    # DDP kept the replicas identical, and they equal the one-process result.
    w0, w1 = load_file(double / "rank0.safetensors"), load_file(double / "rank1.safetensors")
    reference, initial = (
        load_file(single / "rank0.safetensors"),
        load_file(single / "initial.safetensors"),
    )
    assert w0.keys() == w1.keys() == reference.keys()
    assert all(torch.equal(w0[k], w1[k]) for k in w0)
    assert max((w0[k] - reference[k]).abs().max().item() for k in w0) <= 1e-5
    assert max((initial[k] - reference[k]).abs().max().item() for k in w0) > 1e-3  # it trained

    # Loss components are averaged across processes: the same numbers as one process.
    logs_one, logs_ddp = _train_logs(one), _train_logs(ranks[0])
    assert [log["step"] for log in logs_one] == [log["step"] for log in logs_ddp] == [1, 2, 3]
    for a, b in zip(logs_one, logs_ddp, strict=True):
        for name in ("loss", "cls_loss", "distill_loss", "shapley_loss"):
            assert b[name] == pytest.approx(a[name], rel=1e-5, abs=1e-7), name

    # Eval on 10 images in batches of 4 over 2 ranks pads the last round with duplicates;
    # accuracy and the proxy drop them, so they equal the one-process values.
    for name in ("eval_accuracy", "eval_shapley_regression_proxy"):
        assert ranks[0]["eval"][name] == pytest.approx(one["eval"][name], rel=1e-5), name
        assert ranks[1]["eval"][name] == ranks[0]["eval"][name]


def _max_difference(a: dict, b: dict, keys=None) -> float:
    return max((a[k] - b[k]).abs().max().item() for k in (a if keys is None else keys))


def test_two_process_ddp_matches_one_process_clip(tmp_path):
    """ShapleyCLIPTrainer under DDP: two processes with batch 4 against one process with the
    same global batch of 8 per optimizer step.

    The joint phase's contrastive and distillation terms are in-batch (over the texts of the
    batch the model sees), so under DDP each process computes them over its own micro-batch of
    4, exactly as a process accumulating two micro-batches of 4 does: the joint reference is one
    process with ``gradient_accumulation_steps=2``. The explainer phase's Shapley regression is
    a mean of per-image terms, so there two processes also equal one process with one batch of
    8 (started from the same weights).
    """
    accumulated, double, single = tmp_path / "accumulated", tmp_path / "ddp", tmp_path / "single"
    script = str(CLIP_SCRIPT)
    _run([sys.executable, script, str(accumulated), "4", "2"], tmp_path / "accumulated.log")
    _run(_launch_two_processes(CLIP_SCRIPT, str(double), "4", "1"), tmp_path / "ddp.log")
    joint_weights = str(accumulated / "rank0_joint.safetensors")
    _run(
        [sys.executable, script, str(single), "8", "1", "explainer", joint_weights],
        tmp_path / "single.log",
    )

    ranks = [_record(double, r) for r in (0, 1)]
    assert [r["rank"] for r in ranks] == [0, 1]
    assert all(r["world_size"] == 2 and r["dist_world_size"] == 2 for r in ranks)
    one = _record(accumulated, 0)
    assert one["world_size"] == 1 and not one["torch_distributed"]
    assert _record(single, 0)["seen"].keys() == {"explainer"}

    for phase in ("joint", "explainer"):
        # Rank r's micro-batch of each step is the one-process run's micro-batch r of that step.
        micro = one["seen"][phase]
        assert [step for step, _ in micro] == [0, 0, 1, 1, 2, 2]
        for rank, record in enumerate(ranks):
            assert record["seen"][phase] == micro[rank::2]
        for record in (one, *ranks):  # the model got the optimizer step and epoch
            steps = [[s, 0] for s in range(3) for _ in range(2 if record is one else 1)]
            assert record["forwards"][phase] == steps

    initial = load_file(accumulated / "initial.safetensors")
    reference = {
        p: load_file(accumulated / f"rank0_{p}.safetensors") for p in ("joint", "explainer")
    }
    for phase in ("joint", "explainer"):
        w0 = load_file(double / f"rank0_{phase}.safetensors")
        w1 = load_file(double / f"rank1_{phase}.safetensors")
        assert w0.keys() == w1.keys() == reference[phase].keys()
        assert all(torch.equal(w0[k], w1[k]) for k in w0), phase  # DDP kept replicas equal
        assert _max_difference(w0, reference[phase]) <= 1e-5, phase
    # Both phases trained: CLIP and the head in the joint phase, the head alone afterwards.
    clip_keys = [k for k in initial if k.startswith("clip.")]
    head_keys = [k for k in initial if k.startswith("shapley_head.")]
    assert clip_keys and head_keys
    assert _max_difference(reference["joint"], initial, clip_keys) > 1e-3
    assert _max_difference(reference["joint"], initial, head_keys) > 1e-3
    assert _max_difference(reference["explainer"], reference["joint"], head_keys) > 1e-3
    assert _max_difference(reference["explainer"], reference["joint"], clip_keys) == 0
    # The explainer phase with one batch of 8 from the same weights: the same result.
    batch8 = load_file(single / "rank0_explainer.safetensors")
    assert _max_difference(batch8, reference["explainer"]) <= 1e-5

    # Loss components averaged across processes: the numbers of the one-process run.
    for phase in ("joint", "explainer"):
        logs_one, logs_ddp = _train_logs_of(one, phase), _train_logs_of(ranks[0], phase)
        assert [log["step"] for log in logs_one] == [log["step"] for log in logs_ddp] == [1, 2, 3]
        for a, b in zip(logs_one, logs_ddp, strict=True):
            for name in ("loss", "contrastive_loss", "distill_loss", "shapley_loss"):
                assert b[name] == pytest.approx(a[name], rel=1e-5, abs=1e-7), (phase, name)
        if phase == "joint":
            assert all(log["contrastive_loss"] > 0 for log in logs_ddp)
        else:
            assert all(log["contrastive_loss"] == 0 for log in logs_ddp)
        # The per-image proxy drops the duplicates that pad the last eval batch (10 images,
        # batches of 4 on 2 ranks). (eval_loss and recall@1 are in-batch: a padded batch holds
        # other images than the one-process run's last batch.)
        name = "eval_shapley_regression_proxy"
        assert ranks[0]["eval"][phase][name] == pytest.approx(one["eval"][phase][name], rel=1e-5)
        for key in (name, "eval_recall_at_1", "eval_loss"):
            assert ranks[1]["eval"][phase][key] == ranks[0]["eval"][phase][key], (phase, key)


def _train_logs_of(record: dict, phase: str) -> list[dict]:
    return [log for log in record["log_history"][phase] if "loss" in log]


def test_main_job_under_two_processes_makes_the_same_steps(tmp_path):
    """examples/train.py as ``accelerate launch`` of two processes: the classifier is trained once
    (in data parallel) and written before either process reads it, every phase is bounded by
    its steps, and the model is the one-process run's up to the rounding of DDP's averaging."""
    script = Path(__file__).parents[1] / "examples" / "train.py"
    args = [
        "--image_size", "32", "--players_grid", "2", "2", "--num_train", "64",
        "--num_test", "16", "--num_validation", "16", "--classifier_max_steps", "6",
        "--classifier_eval_steps", "3", "--explainer_max_steps", "4", "--eval_steps", "2",
        "--save_steps", "2", "--per_device_train_batch_size", "16",
        "--per_device_eval_batch_size", "16", "--num_truth_images", "2",
        "--num_exact_images", "0", "--num_explained_images", "0", "--logging_steps", "1",
        # fp32 game: bf16 rounds the two runs' differently batched passes differently.
        "--frozen_game_dtype", "float32",
    ]  # fmt: skip
    single, double = tmp_path / "single", tmp_path / "ddp"
    _run([sys.executable, str(script), *args, "--output_dir", str(single)], tmp_path / "one.log")
    _run(_launch_two_processes(script, *args, "--output_dir", str(double)), tmp_path / "two.log")

    one = json.loads((single / "metrics.json").read_text())
    two = json.loads((double / "metrics.json").read_text())
    assert one["train_steps"] == two["train_steps"] == 4
    [classifier_one] = single.glob("pretrained-classifier-*")
    [classifier_two] = double.glob("pretrained-classifier-*")
    # The same classifier key: the batch is images per step over all processes.
    assert classifier_one.name == classifier_two.name
    state_one = json.loads((classifier_one / "trainer_state.json").read_text())
    state_two = json.loads((classifier_two / "trainer_state.json").read_text())
    assert state_one["global_step"] == state_two["global_step"] == 6
    # The classifier phase ran every step on the same 16 images: the same weights up to the
    # rounding of DDP's averaging.
    weights_one = load_file(classifier_one / "model.safetensors")
    weights_two = load_file(classifier_two / "model.safetensors")
    assert weights_one.keys() == weights_two.keys()
    for key, value in weights_one.items():
        torch.testing.assert_close(weights_two[key], value, rtol=1e-4, atol=1e-5, msg=key)
    # The head phase: the same images and losses at every step (the frozen classifier's loss to
    # the digit), and the classifier in the final model is that one, bit for bit.
    logs = [
        [log for log in json.loads((d / "checkpoint-4" / "trainer_state.json").read_text())[
            "log_history"] if "loss" in log]
        for d in (single, double)
    ]  # fmt: skip
    assert [log["cls_loss"] for log in logs[0]] == pytest.approx(
        [log["cls_loss"] for log in logs[1]], rel=1e-6
    )
    assert [log["shapley_loss"] for log in logs[0]] == pytest.approx(
        [log["shapley_loss"] for log in logs[1]], rel=0.02
    )
    final = load_file(double / "model.safetensors")
    assert torch.equal(final["classifier.weight"], weights_two["classifier.weight"])
    assert two["classifier"]["logits_identical"] is True
