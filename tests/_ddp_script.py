"""Helper for tests/test_distributed.py: train a tiny ShapleyForImageClassification with
ShapleyTrainer, in one process or under ``accelerate launch`` / ``torchrun``, and write what
each rank saw.

    python tests/_ddp_script.py OUT_DIR PER_DEVICE_BATCH

Every rank writes ``OUT_DIR/rank{r}.json`` (world size, rank, the example indices of every
training micro-batch it ran, the ``global_step`` and ``epoch`` its model's forward received,
the log history, the eval metrics) and
``OUT_DIR/rank{r}.safetensors`` (its final weights); rank 0 also writes
``OUT_DIR/initial.safetensors``. ``DDP_SCRIPT_END=1`` calls ``trainer.end()`` at the end.

Data order: ``train_sampling_strategy="sequential"``. Under Accelerate the Trainer's
DataLoader is sharded by batches (``BatchSamplerShard``, ``split_batches=False``): with a
sequential sampler and per-device batch 4, rank r gets rows ``8 s + 4 r .. 8 s + 4 r + 3`` at
step s, so the global batch of each step is the same 8 rows a single process sees with batch
8. (A random sampler also gives the same global batches, since Accelerate seeds it identically
on every rank, but sequential makes the test independent of that.)
"""

from __future__ import annotations

import json
import os
import sys

import torch

torch.set_num_threads(1)

import datasets  # noqa: E402
import numpy as np  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

import hf_shapley  # noqa: E402
from conftest import tiny_backbone_config  # noqa: E402  (this script runs from tests/)
from hf_shapley.training.trainer import ShapleyTrainer, ShapleyTrainingArguments, add_example_index  # noqa: E402

NUM_TRAIN, NUM_EVAL, GLOBAL_BATCH, STEPS = 32, 10, 8, 3


def make_dataset(num: int, seed: int) -> datasets.Dataset:
    rng = np.random.default_rng(seed)
    ds = datasets.Dataset.from_dict(
        {
            "pixel_values": rng.standard_normal((num, 3, 32, 32)).astype(np.float32),
            "label": rng.integers(0, 3, num),
        }
    )
    return add_example_index(ds).with_format("numpy")


class RecordingTrainer(ShapleyTrainer):
    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if model.training:
            self.seen.append([self.state.global_step, inputs["example_index"].tolist()])
        return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)


def main() -> None:
    out_dir, per_device_batch = sys.argv[1], int(sys.argv[2])
    torch.manual_seed(0)
    config = hf_shapley.ShapleyConfig(
        backbone_config=tiny_backbone_config("vit"),
        num_labels=3,
        players_grid=(2, 2),
        initializer_range=0.2,
        num_distill_coalitions=2,
    )
    model = hf_shapley.ShapleyForImageClassification(config)
    forwards = []  # (global_step, epoch) of every training forward, as the model received them

    def spy(module, args, kwargs):
        if module.training and kwargs.get("labels") is not None:
            forwards.append([kwargs.get("global_step"), kwargs.get("epoch")])

    model.register_forward_pre_hook(spy, with_kwargs=True)
    initial = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    args = ShapleyTrainingArguments(
        os.path.join(out_dir, "trainer"),
        per_device_train_batch_size=per_device_batch,
        per_device_eval_batch_size=4,
        max_steps=STEPS,
        optim="sgd",
        learning_rate=0.01,
        lr_scheduler_type="constant",
        max_grad_norm=0.0,
        train_sampling_strategy="sequential",
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        dataloader_pin_memory=False,
        use_cpu=True,
        num_shapley_coalitions=4,
        seed=0,
    )
    trainer = RecordingTrainer(
        model,
        args,
        train_dataset=make_dataset(NUM_TRAIN, 0),
        eval_dataset=make_dataset(NUM_EVAL, 1),
    )
    trainer.seen = []
    trainer.train()
    metrics = trainer.evaluate()

    rank = args.process_index
    record = {
        "world_size": args.world_size,
        "rank": rank,
        "torch_distributed": torch.distributed.is_initialized(),
        "dist_world_size": torch.distributed.get_world_size()
        if torch.distributed.is_initialized()
        else 1,
        "seen": trainer.seen,
        "forwards": forwards,
        "log_history": trainer.state.log_history,
        "eval": metrics,
    }
    os.makedirs(out_dir, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, os.path.join(out_dir, f"rank{rank}.safetensors"))
    if rank == 0:
        save_file(initial, os.path.join(out_dir, "initial.safetensors"))
    with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as f:
        json.dump(record, f)
    if os.environ.get("DDP_SCRIPT_END"):
        trainer.end()


if __name__ == "__main__":
    main()
