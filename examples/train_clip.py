"""Train a self-explaining image-text dual encoder (CLIP) on the built-in image-caption pairs.

With no arguments it builds a small CLIP from a config (no download), trains it on the built-in
shapes images paired with their generated captions (``hf_shapley.data.captions``) with the pair
objective (contrastive + masked self-distillation + Shapley regression of the image's vector
game), then freezes CLIP and trains the Shapley head further on the now fixed game (the
explainer recipe: the head learns a game that no longer moves). It reports in-batch retrieval
(R@1), zero-shot accuracy with the class prompts, and writes a loadable model directory
(weights, config, code, tokenizer, image processor, metrics):

    accelerate launch examples/train_clip.py
    python examples/train_clip.py --num_train 512 --num_train_epochs 1 --output_dir /tmp/clip

Every ``ShapleyTrainingArguments`` / ``TrainingArguments`` option works (``--learning_rate``,
``--per_device_train_batch_size``, ``--shapley_loss_weight``...). The saved directory serves the
zero-shot pipeline::

    pipeline("zero-shot-image-shapley-explanation", model=output_dir)(image, candidate_labels=[...])
"""

from __future__ import annotations

import json
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, HfArgumentParser, set_seed

from hf_shapley import ShapleyCLIPModel, ShapleyTrainingArguments
from hf_shapley.data import (
    load_shapes_caption_dataset,
    shapes_caption_tokenizer,
    shapes_class_prompts,
)
from hf_shapley.models.image_loading import to_rgb
from hf_shapley.training.trainer import add_example_index
from hf_shapley.training.trainer_clip import ShapleyCLIPCollator, ShapleyCLIPTrainer

logger = logging.getLogger("hf_shapley.train_clip")


@dataclass
class PairArguments:
    """The built-in data and the small CLIP trained on it."""

    num_train: int = field(default=4000, metadata={"help": "Training image-caption pairs."})
    num_test: int = field(default=500, metadata={"help": "Test pairs."})
    image_size: int = field(default=64, metadata={"help": "Image size in pixels."})
    patch_size: int = field(default=16, metadata={"help": "Vision tower patch size."})
    players_grid: list[int] = field(
        default_factory=lambda: [4, 4], metadata={"help": "Players grid (rows cols)."}
    )
    hidden_size: int = field(default=64, metadata={"help": "Width of both towers."})
    num_layers: int = field(default=4, metadata={"help": "Layers of each tower."})
    projection_dim: int = field(default=32, metadata={"help": "Embedding dimension D."})
    explainer_epochs: float = field(
        default=10.0,
        metadata={"help": "Epochs of head-only training on the frozen CLIP afterwards (0: none)."},
    )
    explainer_learning_rate: float = field(
        default=3e-3,
        metadata={"help": "Learning rate of the head-only phase (the explainer study's 3e-3)."},
    )
    num_truth_images: int = field(
        default=4,
        metadata={
            "help": "Test pairs on which phi is compared with the exact Shapley values of the "
            "model's own game (all 2**P coalitions; P <= 16) for each image's caption and the "
            "other images' captions; written to metrics.json under 'faithfulness'. 0 skips it."
        },
    )
    head_hidden_size: int = field(default=128, metadata={"help": "Shapley head width."})
    head_num_layers: int = field(default=2, metadata={"help": "Shapley head attention layers."})


def default_training_args() -> dict:
    return {
        "output_dir": "outputs/clip-shapes",
        "num_train_epochs": 4,
        "per_device_train_batch_size": 64,
        "per_device_eval_batch_size": 64,
        "learning_rate": 1e-3,
        "warmup_steps": 50,
        "logging_steps": 20,
        "eval_strategy": "no",
        "save_strategy": "no",
        "report_to": [],
        "seed": 0,
        "dataloader_num_workers": 0,
        "dataloader_pin_memory": torch.cuda.is_available(),
    }


def build_model(pairs: PairArguments, tokenizer) -> ShapleyCLIPModel:
    """A small CLIP from a config, wrapped with a fresh Shapley head (CLIP trains)."""
    tower = dict(
        hidden_size=pairs.hidden_size,
        num_hidden_layers=pairs.num_layers,
        num_attention_heads=4,
        intermediate_size=2 * pairs.hidden_size,
    )
    config = CLIPConfig(
        text_config=dict(
            tower,
            vocab_size=len(tokenizer),
            max_position_embeddings=64,
            eos_token_id=tokenizer.eos_token_id,
            bos_token_id=tokenizer.bos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        ),
        vision_config=dict(tower, image_size=pairs.image_size, patch_size=pairs.patch_size),
        projection_dim=pairs.projection_dim,
    )
    return ShapleyCLIPModel.from_clip(
        CLIPModel(config),
        players_grid=tuple(pairs.players_grid),
        train_clip=True,
        head_hidden_size=pairs.head_hidden_size,
        head_num_layers=pairs.head_num_layers,
    )


@torch.no_grad()
def zero_shot_accuracy(model, dataset, processor, tokenizer, batch_size: int = 64) -> float:
    """Accuracy of the class prompts as zero-shot labels on ``dataset``."""
    model.eval()
    num_classes = dataset.features["label"].num_classes
    prompts = tokenizer(shapes_class_prompts(num_classes), padding=True, return_tensors="pt")
    device = next(model.parameters()).device
    text = model.get_text_embeds(prompts.input_ids.to(device), prompts.attention_mask.to(device))
    correct = 0
    for start in range(0, len(dataset), batch_size):
        rows = dataset[start : start + batch_size]
        pixels = processor([to_rgb(i) for i in rows["image"]], return_tensors="pt").pixel_values
        image = model.explain_image(pixels.to(device))
        predicted = model.explain_texts(image, text).logits_per_image.argmax(-1).cpu()
        correct += int((predicted == torch.tensor(rows["label"])).sum())
    return correct / len(dataset)


def faithfulness(model, dataset, processor, tokenizer, pairs: PairArguments) -> dict | None:
    """Agreement of phi with the exact Shapley values of the model's own games on the first test
    pairs (``hf_shapley.evaluation.measure_clip_agreement``), or None above 16 players."""
    from hf_shapley.evaluation import measure_clip_agreement

    if model.num_players > 16:
        logger.warning("P = %d > 16: no exact faithfulness check.", model.num_players)
        return None
    rows = dataset[: pairs.num_truth_images]
    device = next(model.parameters()).device
    pixels = processor([to_rgb(i) for i in rows["image"]], return_tensors="pt").pixel_values
    texts = tokenizer(rows["caption"], padding=True, return_tensors="pt")
    logger.info("Measuring faithfulness on %d test pairs (exact enumeration).", len(pixels))
    return measure_clip_agreement(
        model,
        pixels.to(device),
        texts.input_ids.to(device),
        texts.attention_mask.to(device),
        progress=True,
    )


def main(argv: list[str] | None = None) -> dict:
    parser = HfArgumentParser((PairArguments, ShapleyTrainingArguments))
    argv = sys.argv[1:] if argv is None else argv
    defaults = default_training_args()
    given = {a.split("=")[0].lstrip("-") for a in argv if a.startswith("--")}
    argv = [
        *argv,
        *(f"--{k}={v}" for k, v in defaults.items() if k not in given and k != "report_to"),
    ]
    if "report_to" not in given:
        argv += ["--report_to", "none"]
    pairs, args = parser.parse_args_into_dataclasses(argv)
    logging.basicConfig(level=logging.INFO if args.should_log else logging.WARNING)
    set_seed(args.seed)

    tokenizer = shapes_caption_tokenizer()
    processor = CLIPImageProcessor(
        size={"shortest_edge": pairs.image_size},
        crop_size={"height": pairs.image_size, "width": pairs.image_size},
    )
    data = load_shapes_caption_dataset(
        pairs.num_train, pairs.num_test, image_size=pairs.image_size, seed=args.seed
    )
    train, test = add_example_index(data["train"]), add_example_index(data["test"])
    model = build_model(pairs, tokenizer)
    collator = ShapleyCLIPCollator(processor, tokenizer)

    # Phase 1: CLIP and the head together (the head reads detached features).
    trainer = ShapleyCLIPTrainer(
        model, args, train_dataset=train, eval_dataset=test, data_collator=collator
    )
    trainer.train()
    metrics = {f"joint_{k}": v for k, v in trainer.evaluate().items()}

    # Phase 2: freeze CLIP; the head learns the game that no longer moves.
    if pairs.explainer_epochs > 0:
        model.config.train_clip = False
        model._apply_train_clip()
        args.num_train_epochs = pairs.explainer_epochs
        args.learning_rate = pairs.explainer_learning_rate
        trainer = ShapleyCLIPTrainer(
            model, args, train_dataset=train, eval_dataset=test, data_collator=collator
        )
        trainer.train()
        metrics.update({f"explainer_{k}": v for k, v in trainer.evaluate().items()})

    metrics["zero_shot_accuracy"] = zero_shot_accuracy(model, test, processor, tokenizer)
    if pairs.num_truth_images >= 2 and trainer.is_world_process_zero():
        metrics["faithfulness"] = faithfulness(model, test, processor, tokenizer, pairs)
    output = Path(args.output_dir)
    if trainer.is_world_process_zero():
        model.save_pretrained(output)
        tokenizer.save_pretrained(output)
        processor.save_pretrained(output)
        (output / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")
        logger.info("metrics: %s", metrics)
    return metrics


if __name__ == "__main__":
    main()
