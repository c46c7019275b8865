"""Helper for tests/test_distributed.py: train a tiny ShapleyCLIPModel with ShapleyCLIPTrainer as
examples/train_clip.py does (a joint phase with CLIP training, then an explainer phase with CLIP
frozen, a second trainer on the same model), in one process or under ``accelerate launch``, and
write what each rank saw.

    python tests/_ddp_clip_script.py OUT_DIR PER_DEVICE_BATCH GRADIENT_ACCUMULATION_STEPS \
        [PHASES [START]]

``PHASES``: ``joint,explainer`` (default) or one of them. ``START``: a safetensors file of
weights to start from (e.g. another run's weights after its joint phase, for an explainer
phase alone).

Every rank writes ``OUT_DIR/rank{r}.json`` (world size, rank, the example indices of every
training micro-batch of each phase, the ``global_step`` and ``epoch`` its model's training
forwards received, each phase's log history and eval metrics) and
``OUT_DIR/rank{r}_{phase}.safetensors`` (its weights after the phase); rank 0 also writes
``OUT_DIR/initial.safetensors``. ``DDP_SCRIPT_END=1`` calls ``trainer.end()`` at the end.

Data order: ``train_sampling_strategy="sequential"``; Accelerate shards the batches (see
tests/_ddp_script.py), so with per-device batch 4 rank r gets rows ``8 s + 4 r .. 8 s + 4 r + 3``
at step s, the same rows a single process sees in its two accumulated micro-batches of 4.

DDP is strict here: ``ddp_find_unused_parameters=False``, so a parameter that requires grad but
takes no part in the loss (in either phase) fails the run.
"""

from __future__ import annotations

import json
import os
import sys

import torch

torch.set_num_threads(1)

from safetensors.torch import load_file, save_file  # noqa: E402
from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel  # noqa: E402

import hf_shapley  # noqa: E402
from hf_shapley.data import load_shapes_caption_dataset, shapes_caption_tokenizer  # noqa: E402
from hf_shapley.training.trainer import ShapleyTrainingArguments, add_example_index  # noqa: E402
from hf_shapley.training.trainer_clip import ShapleyCLIPCollator, ShapleyCLIPTrainer  # noqa: E402

NUM_TRAIN, NUM_EVAL, IMAGE_SIZE, STEPS = 32, 10, 32, 3
PHASES = ("joint", "explainer")


class RecordingTrainer(ShapleyCLIPTrainer):
    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if model.training:
            self.seen.append([self.state.global_step, inputs["example_index"].tolist()])
        return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)


def build_model(tokenizer) -> hf_shapley.ShapleyCLIPModel:
    """A tiny CLIP (32 px images in 8 px patches, width 32, 1 layer per tower) wrapped with a
    head of one attention layer; CLIP trains (the joint phase)."""
    torch.manual_seed(0)
    tower = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=4, intermediate_size=64)
    config = CLIPConfig(
        text_config=dict(
            tower,
            vocab_size=len(tokenizer),
            max_position_embeddings=32,
            eos_token_id=tokenizer.eos_token_id,
            bos_token_id=tokenizer.bos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        ),
        vision_config=dict(tower, image_size=IMAGE_SIZE, patch_size=8),
        projection_dim=16,
    )
    return hf_shapley.ShapleyCLIPModel.from_clip(
        CLIPModel(config),
        players_grid=(2, 2),
        train_clip=True,
        head_hidden_size=16,
        head_num_layers=1,
        num_shapley_coalitions=4,
        num_distill_coalitions=2,
        initializer_range=0.2,
    )


def main() -> None:
    out_dir, per_device_batch, accumulation = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    phases = sys.argv[4].split(",") if len(sys.argv) > 4 else list(PHASES)
    if not phases or any(phase not in PHASES for phase in phases):
        raise SystemExit(
            f"PHASES must be a comma-separated subset of {PHASES}; got {sys.argv[4]!r}."
        )
    tokenizer = shapes_caption_tokenizer()
    processor = CLIPImageProcessor(
        size={"shortest_edge": IMAGE_SIZE}, crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}
    )
    data = load_shapes_caption_dataset(NUM_TRAIN, NUM_EVAL, image_size=IMAGE_SIZE, seed=0)
    train, test = add_example_index(data["train"]), add_example_index(data["test"])
    collator = ShapleyCLIPCollator(processor, tokenizer)
    model = build_model(tokenizer)
    if len(sys.argv) > 5:
        model.load_state_dict(load_file(sys.argv[5]))
    forwards = []  # (global_step, epoch) of every training forward, as the model received them

    def spy(module, args, kwargs):
        if module.training and kwargs.get("return_loss"):
            forwards.append([kwargs.get("global_step"), kwargs.get("epoch")])

    model.register_forward_pre_hook(spy, with_kwargs=True)
    initial = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    os.makedirs(out_dir, exist_ok=True)
    record: dict = {"seen": {}, "forwards": {}, "log_history": {}, "eval": {}}
    for phase in phases:
        if phase == "explainer":  # as examples/train_clip.py: freeze CLIP, train the head on
            model.config.train_clip = False
            model._apply_train_clip()
        args = ShapleyTrainingArguments(
            os.path.join(out_dir, f"trainer_{phase}"),
            per_device_train_batch_size=per_device_batch,
            gradient_accumulation_steps=accumulation,
            per_device_eval_batch_size=4,
            max_steps=STEPS,
            optim="sgd",
            learning_rate=0.05,
            lr_scheduler_type="constant",
            max_grad_norm=0.0,
            train_sampling_strategy="sequential",
            logging_steps=1,
            save_strategy="no",
            report_to="none",
            disable_tqdm=True,
            dataloader_pin_memory=False,
            use_cpu=True,
            ddp_find_unused_parameters=False,
            eval_num_shapley_coalitions=4,
            seed=0,
        )
        trainer = RecordingTrainer(
            model, args, train_dataset=train, eval_dataset=test, data_collator=collator
        )
        trainer.seen = []
        forwards.clear()
        trainer.train()
        record["eval"][phase] = trainer.evaluate()
        record["seen"][phase] = trainer.seen
        record["forwards"][phase] = list(forwards)
        record["log_history"][phase] = trainer.state.log_history
        rank = args.process_index
        state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        save_file(state, os.path.join(out_dir, f"rank{rank}_{phase}.safetensors"))

    record.update(
        world_size=args.world_size,
        rank=rank,
        torch_distributed=torch.distributed.is_initialized(),
        dist_world_size=torch.distributed.get_world_size()
        if torch.distributed.is_initialized()
        else 1,
    )
    if rank == 0:
        save_file(initial, os.path.join(out_dir, "initial.safetensors"))
    with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as f:
        json.dump(record, f)
    if os.environ.get("DDP_SCRIPT_END"):
        trainer.end()


if __name__ == "__main__":
    main()
