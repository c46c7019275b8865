"""Train a self-explaining image classifier: the main job of hf-shapley.

Your classifier, your images (the classifier is kept as it is, its labels matched by name):

    accelerate launch examples/train.py --backbone ./my-vit-classifier --train_dir ./my_images \
        --players_grid 7 7 --output_dir outputs/my-shapley

With no arguments it trains a small plain ViT classifier on the built-in shapes data set (at
most 1,000 steps of cross-entropy, stopping early when the held-out validation loss stops
improving), wraps it with ``ShapleyForImageClassification.from_backbone``, which keeps it frozen
(the frozen explainer recipe of ``configuration_shapley``), and trains the Shapley head for at
most 1,500 steps to explain the classifier's fixed game (each image's 64 coalition values
computed in the first epoch and kept), keeping the head whose held-out regression loss is
lowest. The logits are the classifier's, bit for bit. It then measures how faithful the
explanation is and writes a complete, loadable model directory (safetensors weights, config,
image processor, model card, metrics, explanation pictures):

    accelerate launch examples/train.py
    python examples/train.py                                   # the same, one process

Other data and backbones:

    accelerate launch examples/train.py --dataset_name beans --image_column image --label_column labels \
        --backbone google/vit-base-patch16-224-in21k --players_grid 7 7 --output_dir outputs/vit-beans
    accelerate launch examples/train.py --train_dir ./my_images   # an imagefolder: one folder per class

A bare backbone (``ViTModel``) trains a new classifier first; a fine-tuned classifier
(``ViTForImageClassification``) is explained as it is (``--recipe frozen``) unless ``--recipe
joint`` asks to fine-tune it with the Shapley loss too (then ``metrics.json`` reports how its
predictions changed). Batch sizes are
images per optimizer step over all processes: two processes make the same steps as one.

Every ``ShapleyTrainingArguments`` / ``TrainingArguments`` option works (``--num_train_epochs``,
``--shapley_loss_weight``, ``--push_to_hub``, ``--resume_from_checkpoint``...). ``--compare_plain``
also trains the same model with lambda = alpha = beta = 0 (its classifier fine-tuned with
cross-entropy alone) for the same steps and reports both accuracies; with a frozen classifier
the plain accuracy is the model's own (the logits are the plain classifier's).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import datasets
import numpy as np
import torch
from transformers import (
    AutoConfig,
    AutoImageProcessor,
    EarlyStoppingCallback,
    HfArgumentParser,
    Trainer,
    ViTConfig,
    ViTImageProcessorPil,
    set_seed,
)

from hf_shapley import (
    ShapleyConfig,
    ShapleyForImageClassification,
    ShapleyTrainer,
    ShapleyTrainingArguments,
)
from hf_shapley.data import align_labels, data_label_names, load_image_splits, process_in_memory
from hf_shapley.evaluation import wilson_interval
from hf_shapley.models.configuration_shapley import (
    FROZEN_EXPLAINER_DEFAULTS,
    FROZEN_EXPLAINER_LEARNING_RATE,
    HEAD_ATTENTION_FROM,
)
from hf_shapley.models.image_loading import to_rgb
from hf_shapley.training import RECIPES, recipe_settings
from hf_shapley.training.trainer import ShapleyImageCollator, add_example_index

logger = logging.getLogger("hf_shapley.train")

# The built-in setting: 64 px shapes, a 4-layer ViT with 8 px patches (8 x 8 tokens) and a
# 4 x 4 players grid (P = 16, 2 x 2 tokens per player, so exact Shapley values can be checked
# on test images). 16 px patches (4 x 4 tokens, the recipe study's backbone) left the plain
# pretraining on the chance plateau for all 2,000 steps in 2 of 3 runs; with 8 px patches 12
# epochs reached 70.0% and 87.3% test accuracy (seeds 0 and 1).
BUILTIN_IMAGE_SIZE = 64
BUILTIN_BACKBONE = dict(
    image_size=BUILTIN_IMAGE_SIZE,
    patch_size=8,
    hidden_size=128,
    num_hidden_layers=4,
    num_attention_heads=4,
    intermediate_size=256,
)


@dataclass
class ModelArguments:
    backbone: str | None = field(
        default=None,
        metadata={
            "help": "Hub id or local directory of a fine-tuned classifier "
            "(ViTForImageClassification...: kept as it is, its labels matched to the data's by "
            "name) or of a bare backbone (ViTModel...: a classifier is trained on it first, "
            "then explained). Default: a small ViT trained here for the built-in data."
        },
    )
    players_grid: list[int] = field(
        default_factory=lambda: [4, 4], metadata={"help": "Players grid: rows cols."}
    )
    prediction_mode: str | None = field(
        default=None,
        metadata={"help": "shapley_sum or backbone_head (default: chosen by from_backbone)."},
    )
    recipe: str | None = field(
        default=None,
        metadata={
            "help": "frozen: the classifier (--backbone, or the one trained here) is kept as it "
            "is, its predictions bit-identical, and only the Shapley head learns its game. "
            "joint: the classifier fine-tunes with the Shapley loss too (its predictions change; "
            "metrics.json reports its accuracy before and after), for --explainer_max_steps at "
            "--learning_rate; it measured less accurate and less explainable than plain "
            "fine-tuning (benchmarks/README.md, 'Joint against frozen'). Default: frozen; joint "
            "for soft voting, whose prediction is the head's.",
            "choices": list(RECIPES),
        },
    )
    head_reads_hidden_states: bool | None = field(
        default=None,
        metadata={
            "help": "backbone_head mode, ViT-like backbones: the Shapley head reads every depth of "
            "the backbone, not only its final features (ShapleyConfig.head_reads_hidden_states). "
            "None: the explainer recipe's default for the family."
        },
    )
    head_width: int | None = field(
        default=None,
        metadata={
            "help": "Width of the Shapley head's attention layers and MLP (ShapleyConfig."
            "head_width). None: the recipe's default (the backbone's hidden size)."
        },
    )
    head_reads_attention: bool | None = field(
        default=None,
        metadata={
            "help": "With the head reading every depth: it also reads the attention each patch "
            "token received in every block and head (ShapleyConfig.head_reads_attention). "
            "None: the explainer recipe's default for the family (on for ViT and DeiT)."
        },
    )
    head_num_layers: int | None = field(
        default=None,
        metadata={
            "help": "Self-attention layers of the Shapley head (ShapleyConfig.head_num_layers). "
            "None: the recipe's default (3)."
        },
    )
    head_attention_from: str | None = field(
        default=None,
        metadata={
            "help": "With the head reading the attention: 'class_and_mean' (the class token's "
            "and the mean over all queries) or 'class' (the class token's alone, cheaper) "
            "(ShapleyConfig.head_attention_from). None: the recipe's default.",
            "choices": list(HEAD_ATTENTION_FROM),
        },
    )
    explainer_learning_rate: float | None = field(
        default=FROZEN_EXPLAINER_LEARNING_RATE,
        metadata={
            "help": "Learning rate when the classifier is frozen and only the Shapley head trains "
            "(--learning_rate then sets the plain classifier's pretraining). Explainer study: 3e-3 "
            "beat 1e-3 and 3e-4 at 1,000 steps (benchmarks/results/explainer_study.md). None: "
            "--learning_rate for both."
        },
    )
    explainer_train_samples: int | None = field(
        default=None,
        metadata={
            "help": "When the classifier is frozen: the head trains on the first n training "
            "images only (None: all). Fewer images with more kept coalitions each "
            "(--num_shapley_coalitions) cost less per step but explained less faithfully over "
            "3 seeds (benchmarks/results/main_job_seeds_v6*.md)."
        },
    )
    explainer_batch_size: int | None = field(
        default=None,
        metadata={
            "help": "When the classifier is frozen: images per device and step of the head "
            "(--per_device_train_batch_size then sets the plain classifier's pretraining). "
            "None: --per_device_train_batch_size for both."
        },
    )
    image_size: int | None = field(
        default=None,
        metadata={
            "help": "Without --backbone: image size of the built-in data and ViT (a multiple of "
            f"8; default {BUILTIN_IMAGE_SIZE}). With --backbone: the input size of a ResNet, "
            "ConvNeXt or Swin (default: its image processor's output size)."
        },
    )
    classifier_max_steps: int | None = field(
        default=None,
        metadata={
            "help": "Without a fine-tuned classifier: first train one with cross-entropy for at "
            "most this many steps, evaluated on the held-out validation images every "
            "--classifier_eval_steps and stopped when their loss has not improved for "
            "--early_stopping_patience evaluations (the best one is kept); then wrap it and "
            "train its explainer. Default: 1,000 on the built-in data (the main job's 10 "
            "minutes), 2,000 on your data (on 1,293 digits images 1,000 with patience 3 kept "
            "mid-schedule checkpoints 1.9 and 4.7 points short of a plain classifier; 2,000 "
            "with patience 10 came within 0.9 and 0.3). 0 trains the self-explaining model "
            "from scratch (a soft-voting ViT trained from scratch stayed at chance here)."
        },
    )
    explainer_max_steps: int = field(
        default=1500,
        metadata={
            "help": "The Shapley head trains for at most this many steps (evaluated on the "
            "held-out validation images every --eval_steps, the best kept, stopped early after "
            "--early_stopping_patience evaluations without improvement). Chosen with the kept "
            "coalitions by the main job's 3-seed study against exact values (benchmarks/"
            "README.md, 'More kept coalitions and more steps'). Counted in steps, so a small "
            "data set gets as many as a large one. 0: --num_train_epochs instead. --max_steps, "
            "when given, bounds every phase."
        },
    )
    classifier_eval_steps: int = field(
        default=100, metadata={"help": "Steps between the classifier's validation evaluations."}
    )
    early_stopping_patience: int = field(
        default=10,
        metadata={
            "help": "Evaluations without improvement of the held-out criterion (the classifier's "
            "validation loss; the head's held-out regression loss) before a phase stops."
        },
    )


@dataclass
class DataArguments:
    dataset_name: str | None = field(
        default=None, metadata={"help": "A Hub data set (default: built-in shapes)."}
    )
    dataset_config_name: str | None = field(
        default=None, metadata={"help": "The Hub data set's config."}
    )
    train_dir: str | None = field(
        default=None, metadata={"help": "A local imagefolder for training."}
    )
    validation_dir: str | None = field(
        default=None, metadata={"help": "A local imagefolder for evaluation."}
    )
    image_column: str = field(default="image", metadata={"help": "Column with the images."})
    label_column: str = field(default="label", metadata={"help": "Column with the class labels."})
    eval_split: str = field(
        default="test", metadata={"help": "Split to evaluate on (test or validation)."}
    )
    num_train: int = field(default=8000, metadata={"help": "Built-in data: training images."})
    num_validation: int = field(
        default=500,
        metadata={
            "help": "Built-in data: held-out validation images (their own random stream) for "
            "early stopping and choosing the best step."
        },
    )
    validation_fraction: float = field(
        default=0.1,
        metadata={
            "help": "Your data: share of the training images held out (stratified, at most "
            "--max_validation_samples) for early stopping and choosing the best step. The "
            "evaluation split (--validation_dir) is used for the final report only."
        },
    )
    max_validation_samples: int = field(
        default=1000, metadata={"help": "At most this many held-out validation images."}
    )
    num_test: int = field(default=1000, metadata={"help": "Built-in data: test images."})
    builtin_distractors: str = field(
        default="independent",
        metadata={
            "help": "Built-in data: 'independent' (distractors drawn without the label, so the "
            "class evidence lies in the class object only) or 'complement' (the earlier data: "
            "the distractors name the missing class)."
        },
    )
    max_train_samples: int | None = field(
        default=None, metadata={"help": "Truncate the training split."}
    )
    preprocess_in_memory_gb: float = field(
        default=2.0,
        metadata={
            "help": "Process each split's images once and keep the pixel values in memory when "
            "they take at most this many GB (0: process every batch). Without augmentation "
            "every epoch sees the same pixels; on the built-in data this saves the ~45 ms a "
            "batch of 64 spends decoding and processing (about 90 s of the main job)."
        },
    )
    max_eval_samples: int | None = field(
        default=None, metadata={"help": "Truncate the evaluation split."}
    )


@dataclass
class ReportArguments:
    compare_plain: bool = field(
        default=False,
        metadata={"help": "Also train a plain classifier (lambda = alpha = 0) at equal steps."},
    )
    num_explained_images: int = field(
        default=4, metadata={"help": "Explanation pictures to write."}
    )
    num_truth_images: int = field(
        default=32,
        metadata={
            "help": "Test images on which phi is compared with the Shapley values of the "
            "model's own game (KernelSHAP, --truth_evaluations paired evaluations each); 0 "
            "skips the check."
        },
    )
    truth_evaluations: int = field(
        default=2048,
        metadata={
            "help": "KernelSHAP evaluations per image for that truth to start from; doubled "
            "until its own estimated pooled error is at most --truth_tolerance. On the main "
            "job's model 2,048 give a pooled error of about 0.08 against exact enumeration."
        },
    )
    truth_tolerance: float = field(
        default=0.1,
        metadata={
            "help": "The largest estimated pooled error of the KernelSHAP truth (from its "
            "standard errors) that agreement is reported against; above it metrics.json says "
            "so, with the budget that would do, instead of reporting figures."
        },
    )
    truth_max_evaluations: int | None = field(
        default=None,
        metadata={
            "help": "The largest KernelSHAP budget per image (default: 8 x --truth_evaluations). "
            "Fine grids need more: at P = 49 about 75,000 on a small ViT."
        },
    )
    space_dir: str | None = field(
        default=None,
        metadata={
            "help": "Also write a Gradio Space folder of the demo (app.py, requirements.txt, "
            "README.md) for the model's Hub id here (hf_shapley.demo.space.write_space)."
        },
    )
    num_exact_images: int = field(
        default=2,
        metadata={
            "help": "Of those, images also checked against exact enumeration of all 2**P "
            "coalitions (P <= 16; about 40 s an image at P = 16 on a 2-core CPU)."
        },
    )


def default_training_args() -> dict:
    """Defaults of the main job, overridable from the command line."""
    return dict(
        output_dir="outputs/shapley-vit-shapes",
        # The phases' lengths are --classifier_max_steps and --explainer_max_steps.
        num_train_epochs=6,
        per_device_train_batch_size=64,
        per_device_eval_batch_size=128,
        learning_rate=1e-3,
        weight_decay=0.05,
        warmup_steps=30,
        lr_scheduler_type="cosine",
        logging_steps=10,
        eval_strategy="steps",
        eval_steps=125,
        save_strategy="steps",
        save_steps=125,
        save_total_limit=1,
        load_best_model_at_end=True,
        metric_for_best_model="shapley_regression_proxy",
        greater_is_better=False,
        report_to="none",
        dataloader_num_workers=0,
        dataloader_pin_memory=torch.cuda.is_available(),
        # Several processes without a GPU (accelerate launch --multi_gpu, torchrun): Accelerate
        # runs them as one data-parallel group on the CPU (gloo) only when told to use the CPU;
        # otherwise each process trains alone, on all the data.
        use_cpu=int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.cuda.is_available(),
        loss_warmup_steps=60,
        seed=0,
    )


# ----------------------------------------------------------------------------- data
def load_data(
    args: DataArguments, image_size: int = BUILTIN_IMAGE_SIZE, seed: int = 0
) -> tuple[datasets.Dataset, datasets.Dataset, datasets.Dataset, str, str]:
    """Train, validation and eval splits, checked before training starts.

    The validation images choose when each phase stops and which step is kept; the eval split
    is used for the final report only. Returns (train, validation, eval, image_col, label_col).
    """
    try:
        train, evaluation = load_image_splits(
            dataset_name=args.dataset_name,
            dataset_config_name=args.dataset_config_name,
            train_dir=args.train_dir,
            validation_dir=args.validation_dir,
            eval_split=args.eval_split,
            num_train=args.num_train,
            num_test=args.num_test,
            image_size=image_size,
            distractors=args.builtin_distractors,
        )
    except ValueError as error:
        raise SystemExit(str(error)) from error
    for name, split in (("train", train), ("eval", evaluation)):
        check_columns(split, name, args.image_column, args.label_column)
    if args.max_train_samples:
        train = train.select(range(min(args.max_train_samples, len(train))))
    if args.max_eval_samples:
        evaluation = evaluation.select(range(min(args.max_eval_samples, len(evaluation))))
    train, validation = validation_split(args, train, image_size, seed)
    check_images_decode(train, args.image_column, "train")
    check_images_decode(evaluation, args.image_column, "eval")
    return train, validation, evaluation, args.image_column, args.label_column


def validation_split(
    args: DataArguments, train: datasets.Dataset, image_size: int, seed: int
) -> tuple[datasets.Dataset, datasets.Dataset]:
    """(train, validation): the built-in data's own validation stream, or for other data a
    stratified share of the training images."""
    if args.dataset_name is None and args.train_dir is None:
        from hf_shapley.data import load_shapes_dataset

        if args.num_validation < 1:
            raise SystemExit(f"--num_validation must be at least 1; got {args.num_validation}.")
        validation = load_shapes_dataset(
            0,
            0,
            num_validation=args.num_validation,
            image_size=image_size,
            distractors=args.builtin_distractors,
        )["validation"]
        return train, validation
    if not 0 < args.validation_fraction < 1:
        raise SystemExit(
            f"--validation_fraction must be between 0 and 1; got {args.validation_fraction}."
        )
    size = min(max(1, round(args.validation_fraction * len(train))), args.max_validation_samples)
    if size >= len(train):
        raise SystemExit(
            f"The training split has {len(train)} images: too few to hold out {size} for "
            "validation and train on the rest. Add images."
        )
    stratify = (
        args.label_column
        if isinstance(train.features[args.label_column], datasets.ClassLabel)
        else None
    )
    try:
        parts = train.train_test_split(test_size=size, seed=seed, stratify_by_column=stratify)
    except ValueError:  # a class too small to stratify: hold out at random instead
        parts = train.train_test_split(test_size=size, seed=seed)
    return parts["train"], parts["test"]


def check_columns(split: datasets.Dataset, name: str, image_column: str, label_column: str) -> None:
    missing = [c for c in (image_column, label_column) if c not in split.column_names]
    if missing:
        raise SystemExit(
            f"The {name} split has no column {missing}; its columns are {split.column_names}. "
            "Name them with --image_column and --label_column."
        )
    if len(split) == 0:
        raise SystemExit(f"The {name} split is empty.")


def check_images_decode(
    split: datasets.Dataset, image_column: str, name: str, limit: int = 256
) -> None:
    """Decode the first images now, so a corrupt file fails before training, naming the row."""
    for i in range(min(limit, len(split))):
        try:
            image = split[i][image_column]
            image.load()
        except Exception as error:  # PIL raises many types for corrupt files
            raise SystemExit(
                f"Image {i} of the {name} split ({image_column!r}) cannot be read: {error}. "
                "Remove or fix the file and run again."
            ) from error


def label_names(split: datasets.Dataset, label_column: str) -> dict[int, str]:
    try:
        return data_label_names(split, label_column)
    except ValueError as error:
        raise SystemExit(str(error)) from error


def match_labels(
    splits: list[datasets.Dataset], id2label: dict[int, str], label_column: str
) -> list[datasets.Dataset]:
    """The splits with their labels renumbered onto a fine-tuned classifier's own order, by
    name (never the reverse); the training split (first) must have every class."""
    try:
        return [
            align_labels(split, id2label, label_column, allow_missing=i > 0)
            for i, split in enumerate(splits)
        ]
    except ValueError as error:
        raise SystemExit(str(error)) from error


# ----------------------------------------------------------------------------- model
def builtin_image_processor(image_size: int) -> ViTImageProcessorPil:
    """The processor of the built-in ViT: resize to the model size, scale to [-1, 1]."""
    return ViTImageProcessorPil(
        size={"height": image_size, "width": image_size}, image_mean=[0.5] * 3, image_std=[0.5] * 3
    )


def native_bfloat16() -> bool:
    """Whether the training device computes bf16 natively: a bf16 GPU, or a CPU with AMX tiles
    (measured here: masked passes 1.7x faster than fp32). Elsewhere a CPU emulates bf16, slower."""
    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    has_amx = getattr(torch.cpu, "_is_amx_tile_supported", None)
    return bool(has_amx is not None and has_amx())


def is_classifier_checkpoint(backbone: str) -> bool:
    """Whether a Hub id or directory holds a fine-tuned classifier (``*ForImageClassification``),
    whose head and labels are kept, rather than a bare backbone."""
    architectures = AutoConfig.from_pretrained(backbone).architectures or []
    return any(name.endswith("ForImageClassification") for name in architectures)


def build_model(
    args: ModelArguments, id2label: dict[int, str] | None
) -> tuple[ShapleyForImageClassification, object]:
    """The model to train and its image processor. ``id2label`` names a new head's labels; a
    fine-tuned classifier keeps its own (pass None)."""
    if args.backbone is None:
        config = ShapleyConfig(
            backbone_config=ViTConfig(**{**BUILTIN_BACKBONE, "image_size": args.image_size}),
            id2label=id2label,
            label2id={v: k for k, v in id2label.items()},
            players_grid=args.players_grid,
        )
        return ShapleyForImageClassification(config), builtin_image_processor(args.image_size)
    kwargs: dict = dict(players_grid=tuple(args.players_grid))
    if args.image_size is not None:
        kwargs["image_size"] = (args.image_size, args.image_size)
    if id2label is not None:
        kwargs.update(id2label=id2label, label2id={v: k for k, v in id2label.items()})
    kwargs.update(recipe_settings(args.recipe))
    if id2label is None and args.recipe == "frozen":
        # The frozen classifier's passes train nothing: bf16 where the device computes it
        # natively (the head stays fp32; --frozen_game_dtype float32 overrides).
        kwargs["frozen_game_dtype"] = "bfloat16" if native_bfloat16() else "float32"
    if args.prediction_mode:
        kwargs["prediction_mode"] = args.prediction_mode
    # The head's settings: each given one overrides the recipe's default.
    for name in (
        "head_reads_hidden_states",
        "head_reads_attention",
        "head_width",
        "head_attention_from",
        "head_num_layers",
    ):
        if getattr(args, name) is not None:
            kwargs[name] = getattr(args, name)
    try:
        model = ShapleyForImageClassification.from_backbone(args.backbone, **kwargs)
    except ValueError as error:
        raise SystemExit(f"Cannot wrap {args.backbone}: {error}") from error
    processor = model.image_processor or AutoImageProcessor.from_pretrained(args.backbone)
    return model, processor


def new_classifier(model_args: ModelArguments, id2label: dict[int, str]):
    """The classifier to train here, and its image processor: the built-in ViT, or a bare
    backbone (a Hub id or directory of e.g. ``ViTModel``) with a new linear head."""
    label2id = {v: k for k, v in id2label.items()}
    if model_args.backbone is None:
        from transformers import ViTForImageClassification

        config = ViTConfig(**{**BUILTIN_BACKBONE, "image_size": model_args.image_size})
        config.id2label, config.label2id = id2label, label2id
        return ViTForImageClassification(config), builtin_image_processor(model_args.image_size)
    from transformers import AutoModelForImageClassification

    model = AutoModelForImageClassification.from_pretrained(
        model_args.backbone, id2label=id2label, label2id=label2id, ignore_mismatched_sizes=True
    )
    return model, AutoImageProcessor.from_pretrained(model_args.backbone)


def train_classifier(
    model_args: ModelArguments,
    training_args,
    data_args: DataArguments,
    id2label,
    train,
    validation,
    image_column,
    label_column,
) -> str:
    """Train a classifier with plain cross-entropy (:func:`new_classifier`); return its
    directory (cached).

    At most ``--classifier_max_steps`` steps (and ``--max_steps``), stopped early on the
    validation loss, the best evaluation kept. The cache is keyed by what changes the
    classifier (backbone, image size, the training data's fingerprint, steps, batch, learning
    rate, seed), so a run with another seed or data set never reuses a classifier trained for
    another. Under several processes it is trained once, in data parallel, and written by the
    main process before any process reads it.
    """
    from hf_shapley.training.plain_classifier import train_plain_classifier

    steps = model_args.classifier_max_steps
    identity = hashlib.sha256(
        json.dumps(
            [
                model_args.backbone,
                train._fingerprint,
                validation._fingerprint,
                training_args.per_device_train_batch_size * training_args.world_size,
                training_args.learning_rate,
                model_args.classifier_eval_steps,
                model_args.early_stopping_patience,
            ]
        ).encode()
    ).hexdigest()[:8]
    key = f"{model_args.image_size or 'native'}px-{len(train)}-{steps}steps-{identity}-seed{training_args.seed}"
    path = Path(training_args.output_dir) / f"pretrained-classifier-{key}"
    if (path / "model.safetensors").is_file():
        logger.info("Reusing the pretrained classifier in %s.", path)
        return str(path)
    model, processor = new_classifier(model_args, id2label)
    in_memory = {
        "image_column": image_column,
        "label_column": label_column,
        "max_gb": data_args.preprocess_in_memory_gb,
    }
    train_plain_classifier(
        model,
        process_in_memory(train, processor, **in_memory),
        eval_dataset=process_in_memory(validation, processor, **in_memory),
        eval_steps=model_args.classifier_eval_steps,
        early_stopping_patience=model_args.early_stopping_patience,
        image_processor=processor,
        output_dir=path,
        max_steps=steps,
        per_device_train_batch_size=training_args.per_device_train_batch_size,
        per_device_eval_batch_size=training_args.per_device_eval_batch_size,
        learning_rate=training_args.learning_rate,
        weight_decay=training_args.weight_decay,
        warmup_steps=training_args.warmup_steps,
        lr_scheduler_type=training_args.lr_scheduler_type,
        seed=training_args.seed,
        logging_steps=training_args.logging_steps,
        image_column=image_column,
        label_column=label_column,
        dataloader_pin_memory=training_args.dataloader_pin_memory,
        use_cpu=training_args.use_cpu,
    )
    return str(path)


@torch.no_grad()
def measure_faithfulness(
    model,
    processor,
    split,
    image_column: str,
    num_images: int,
    num_exact: int,
    kernel_evaluations: int,
    max_kernel_evaluations: int | None = None,
    truth_tolerance: float = 0.1,
) -> dict | None:
    """Agreement of phi with the truth of the model's own game on the first test images
    (``hf_shapley.evaluation.measure_agreement``: centered predicted-class logit, KernelSHAP
    truth on all, exact enumeration on the first ``num_exact``)."""
    if num_images < 2:
        return None
    from hf_shapley.evaluation import measure_agreement

    images = [to_rgb(split[i][image_column]) for i in range(min(num_images, len(split)))]
    device = next(model.parameters()).device
    x = processor(images, return_tensors="pt")["pixel_values"].to(device)
    logger.info(
        "Measuring faithfulness on %d test images (exact enumeration on %d).",
        len(images),
        min(num_exact, len(images)),
    )
    return measure_agreement(
        model,
        x,
        num_exact=num_exact,
        kernel_evaluations=kernel_evaluations,
        max_kernel_evaluations=max_kernel_evaluations,
        truth_tolerance=truth_tolerance,
        progress=True,
    )


def write_pictures(
    model, processor, split, image_column: str, out_dir: Path, count: int
) -> list[str]:
    from hf_shapley.visualization import plot_explanation, save_figure

    paths = []
    for i in range(min(count, len(split))):
        figure = plot_explanation(model, split[i][image_column], processor, top_k=3)
        paths.append(str(save_figure(figure, out_dir / "explanations" / f"test_{i:03d}.png")))
    return paths


# ----------------------------------------------------------------------------- main
def train_and_evaluate(
    model,
    processor,
    training_args,
    train,
    validation,
    evaluation,
    image_column,
    label_column,
    early_stopping_patience: int | None = None,
):
    """Train on ``train``, choosing the step kept on ``validation``; evaluate on ``evaluation``.

    Returns (trainer, train result, eval metrics, train seconds, classifier report): the last
    compares the classifier's predictions on ``evaluation`` before and after training.
    """
    collator = ShapleyImageCollator(
        image_processor=processor, image_column=image_column, label_column=label_column
    )
    callbacks = []
    if early_stopping_patience and training_args.load_best_model_at_end:
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=early_stopping_patience))
    trainer = ShapleyTrainer(
        model=model,
        args=training_args,
        train_dataset=add_example_index(train),
        eval_dataset=validation,
        data_collator=collator,
        processing_class=processor,
        callbacks=callbacks,
    )
    # transformers' own predict: the logits alone, without the Shapley evaluation's masked passes.
    logits_before = Trainer.predict(trainer, evaluation).predictions
    start = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    train_seconds = time.perf_counter() - start
    output = trainer.predict(evaluation, metric_key_prefix="eval")
    metrics = output.metrics
    logits_after = output.predictions
    labels = np.asarray(output.label_ids)
    before, after = logits_before.argmax(-1), logits_after.argmax(-1)
    classifier = {
        "trained": bool(model.config.train_backbone),
        "logits_identical": bool(np.array_equal(logits_before, logits_after)),
        "accuracy_before": float((before == labels).mean()),
        "accuracy_after": float((after == labels).mean()),
        "predictions_changed": float((before != after).mean()),
    }
    if trainer.state.best_global_step:
        metrics["best_step"] = trainer.state.best_global_step
    return trainer, result, metrics, train_seconds, classifier


# Coalition values a frozen game keeps over all training images: the main job's 8,000 images
# with 64 each (benchmarks/README.md, "More kept coalitions and more steps"). A smaller data set
# keeps more per image (at most 256), so the head learns the game rather than the few coalitions
# of each image; the first epoch costs as many masked passes.
KEPT_COALITIONS = 512_000


def kept_coalitions_per_image(num_images: int) -> int:
    """Kept coalitions per training image of a frozen game: KEPT_COALITIONS over the images,
    even (complementary pairs), between 32 and 256."""
    per_image = math.ceil(KEPT_COALITIONS / max(num_images, 1) / 2) * 2
    return min(max(per_image, FROZEN_EXPLAINER_DEFAULTS["num_shapley_coalitions"]), 256)


def check_recipe(model_args: ModelArguments, training_args, soft_voting: bool) -> str:
    """The recipe to run (``--recipe``, or the default for the model), checked before any
    training: soft voting cannot be frozen, options of the frozen head phase do nothing in a
    joint run, and a joint run must outlast the Shapley loss's warm-up."""
    recipe = model_args.recipe or ("joint" if soft_voting else "frozen")
    if recipe == "frozen" and soft_voting:
        raise SystemExit(
            "--recipe frozen keeps a classifier as it is, but this model predicts by soft voting "
            "(a bare backbone with --classifier_max_steps 0, or --prediction_mode shapley_sum): "
            "its prediction is the Shapley head's and trains with it. Use --recipe joint, or "
            "let a classifier be trained first (--classifier_max_steps > 0)."
        )
    if recipe == "joint":
        frozen_only = [
            f"--{name}"
            for name in ("explainer_train_samples", "explainer_batch_size")
            if getattr(model_args, name) is not None
        ]
        if frozen_only:
            raise SystemExit(
                f"{' and '.join(frozen_only)} set the frozen recipe's head phase; with --recipe "
                "joint the classifier and head train together on every image at "
                "--per_device_train_batch_size. Drop them, or use --recipe frozen."
            )
        steps, warmup = training_args.max_steps, training_args.loss_warmup_steps
        if 0 < steps <= warmup:
            raise SystemExit(
                f"--recipe joint: the Shapley loss ramps up over --loss_warmup_steps {warmup} "
                f"steps, but the run has {steps}: it would end before the classifier learns "
                "with it. Give more steps (--explainer_max_steps) or a shorter warm-up."
            )
    return recipe


def option_value(argv: list[str], name: str) -> str | None:
    """The value given to a command-line option (``--name value`` or ``--name=value``)."""
    for i, arg in enumerate(argv):
        if arg == name and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return None


def check_truth_arguments(args: ReportArguments) -> None:
    """The faithfulness truth's settings, checked before any training."""
    if not args.truth_tolerance > 0:
        raise SystemExit(
            f"--truth_tolerance must be a positive number (the truth's largest estimated "
            f"pooled error, e.g. 0.1); got {args.truth_tolerance}."
        )
    if args.truth_max_evaluations is not None and args.truth_max_evaluations < (
        args.truth_evaluations
    ):
        raise SystemExit(
            f"--truth_max_evaluations {args.truth_max_evaluations} is below "
            f"--truth_evaluations {args.truth_evaluations}."
        )


def bound_steps(training_args, model_args: ModelArguments) -> None:
    """Each phase's length: its own step count, bounded by ``--max_steps`` when given."""
    limit = training_args.max_steps if training_args.max_steps > 0 else None
    if limit is not None:
        model_args.classifier_max_steps = min(model_args.classifier_max_steps, limit)
    if model_args.explainer_max_steps > 0:
        training_args.max_steps = min(model_args.explainer_max_steps, limit or math.inf)


def share_batches_between_processes(training_args, model_args: ModelArguments) -> None:
    """Make the batch sizes images per step over all processes: each of N processes takes
    1/N of them, so one process or several make the same optimizer steps."""
    world = training_args.world_size
    if world == 1:
        return
    sizes = {
        "per_device_train_batch_size": training_args.per_device_train_batch_size,
        "per_device_eval_batch_size": training_args.per_device_eval_batch_size,
    }
    if model_args.explainer_batch_size is not None:
        sizes["explainer_batch_size"] = model_args.explainer_batch_size
    for name, size in sizes.items():
        if size % world:
            raise SystemExit(
                f"--{name} {size} is the batch over all {world} processes and must divide "
                f"among them; pass a multiple of {world}."
            )
        target = model_args if name == "explainer_batch_size" else training_args
        setattr(target, name, size // world)


def main(argv: list[str] | None = None) -> dict:
    parser = HfArgumentParser(
        (ModelArguments, DataArguments, ReportArguments, ShapleyTrainingArguments)
    )
    defaults = default_training_args()
    given = argv if argv is not None else sys.argv[1:]
    if "no" in (option_value(given, "--save_strategy"), option_value(given, "--eval_strategy")):
        # Without checkpoints or evaluations there is no best step to keep: the last one is.
        defaults["load_best_model_at_end"] = False
    parser.set_defaults(**defaults)
    model_args, data_args, report_args, training_args = parser.parse_args_into_dataclasses(
        args=argv
    )
    if data_args.preprocess_in_memory_gb < 0:
        raise SystemExit(
            f"--preprocess_in_memory_gb must be >= 0 (0: process every batch); got "
            f"{data_args.preprocess_in_memory_gb}."
        )
    for name in ("explainer_train_samples", "explainer_batch_size"):
        value = getattr(model_args, name)
        if value is not None and value < 1:
            raise SystemExit(f"--{name} must be at least 1 (or None for the default); got {value}.")
    check_truth_arguments(report_args)
    if model_args.classifier_max_steps is None:
        builtin = data_args.dataset_name is None and data_args.train_dir is None
        model_args.classifier_max_steps = 1000 if builtin else 2000
    if model_args.classifier_max_steps < 0:
        raise SystemExit(
            f"--classifier_max_steps must be >= 0; got {model_args.classifier_max_steps}."
        )
    share_batches_between_processes(training_args, model_args)
    bound_steps(training_args, model_args)
    logging.basicConfig(
        format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO
    )
    datasets.utils.logging.set_verbosity_warning()
    set_seed(training_args.seed)
    push_to_hub = training_args.push_to_hub
    if push_to_hub:
        from hf_shapley.publishing import check_online

        # Fail before hours of training, not after; the finished folder is published once, at
        # the end, by hf_shapley.publishing.push_to_hub (the Trainer's own push would replace the
        # model card and skip the pipeline's code).
        check_online(training_args.hub_model_id or Path(training_args.output_dir).name)
        training_args.push_to_hub = False

    if model_args.backbone is None and model_args.image_size is None:
        model_args.image_size = BUILTIN_IMAGE_SIZE
    train, validation, evaluation, image_column, label_column = load_data(
        data_args, model_args.image_size or BUILTIN_IMAGE_SIZE, training_args.seed
    )
    base_model = model_args.backbone
    keeps_labels = base_model is not None and is_classifier_checkpoint(base_model)
    # A fine-tuned classifier keeps its labels: the data are renumbered onto them, by name.
    id2label = None if keeps_labels else label_names(train, label_column)
    # No classifier given (the built-in ViT, or a bare backbone such as ViTModel): train one
    # here first, then explain it. Soft voting asked for explicitly trains jointly instead.
    pretrained_here = (
        not keeps_labels
        and model_args.classifier_max_steps > 0
        and model_args.prediction_mode in (None, "backbone_head")
    )
    soft_voting = model_args.prediction_mode == "shapley_sum" or not (
        keeps_labels or pretrained_here
    )
    model_args.recipe = check_recipe(model_args, training_args, soft_voting)
    if pretrained_here:
        model_args.backbone = train_classifier(
            model_args,
            training_args,
            data_args,
            id2label,
            train,
            validation,
            image_column,
            label_column,
        )
        keeps_labels, id2label = True, None
    model, processor = build_model(model_args, id2label)
    if keeps_labels:
        train, validation, evaluation = match_labels(
            [train, validation, evaluation], model.config.id2label, label_column
        )
    if report_args.num_truth_images >= 2 and report_args.truth_evaluations < 2 * model.num_players:
        raise SystemExit(
            f"--truth_evaluations {report_args.truth_evaluations} is too few for P = "
            f"{model.num_players} players: use at least {2 * model.num_players}."
        )
    frozen = model.classifier is not None and not model.config.train_backbone
    if frozen:
        # Only the head trains, on a fixed game: it has its own learning rate, batch size and
        # images.
        if model_args.explainer_learning_rate is not None:
            training_args.learning_rate = model_args.explainer_learning_rate
        if model_args.explainer_batch_size is not None:
            training_args.per_device_train_batch_size = model_args.explainer_batch_size
        if model_args.explainer_train_samples is not None:
            train = train.select(range(min(model_args.explainer_train_samples, len(train))))
        if training_args.num_shapley_coalitions is None:
            model.config.num_shapley_coalitions = kept_coalitions_per_image(len(train))
    elif model.classifier is not None:
        logger.warning(
            "--recipe joint: the classifier %s is fine-tuned too, so its predictions change "
            "(metrics.json reports its accuracy before and after).",
            base_model,
        )
    logger.info(
        "Training %s (%s, players %s) on %d images, validating on %d, evaluating on %d.",
        type(model).__name__,
        model.config.backbone_config.model_type,
        model.players_grid,
        len(train),
        len(validation),
        len(evaluation),
    )
    # The splits processed once for every training below (the plain arm's too); `evaluation`
    # stays the image split, for the pictures and the faithfulness check.
    train_data, validation_data, eval_data = (
        process_in_memory(
            split,
            processor,
            image_column=image_column,
            label_column=label_column,
            max_gb=data_args.preprocess_in_memory_gb,
        )
        for split in (train, validation, evaluation)
    )
    trainer, result, metrics, train_seconds, classifier = train_and_evaluate(
        model,
        processor,
        training_args,
        train_data,
        validation_data,
        eval_data,
        image_column,
        label_column,
        model_args.early_stopping_patience,
    )
    out_dir = Path(training_args.output_dir)
    n_eval = len(evaluation)
    accuracy = metrics["eval_accuracy"]
    report: dict = {
        "accuracy": accuracy,
        "accuracy_ci95": list(wilson_interval(round(accuracy * n_eval), n_eval)),
        "num_eval_images": n_eval,
        "eval_split": data_args.eval_split,
        "num_validation_images": len(validation),
        "shapley_regression_proxy": metrics.get("eval_shapley_regression_proxy"),
        "train_seconds": train_seconds,
        "train_steps": result.global_step,
        "best_step": metrics.get("best_step", result.global_step),
        "classifier": {
            "source": Path(model_args.backbone).name if pretrained_here else base_model,
            **classifier,
        },
    }
    if pretrained_here:
        # The plain classifier this model explains (benchmarks/faithfulness.py).
        report["pretrained_classifier"] = Path(model_args.backbone).name

    if report_args.compare_plain and not model.config.train_backbone:
        # The classifier is frozen: its logits are the plain classifier's, bit for bit.
        report["plain_accuracy"] = accuracy
        report["plain_accuracy_ci95"] = report["accuracy_ci95"]
        report["plain_note"] = "frozen classifier: the model's logits are the plain classifier's"
    elif report_args.compare_plain:
        plain_args = ShapleyTrainingArguments(
            **{
                **training_args.to_dict(),
                "output_dir": str(out_dir / "plain"),
                "shapley_loss_weight": 0.0,
                "distill_loss_weight": 0.0,
                "vote_consistency_weight": 0.0,
                "push_to_hub": False,
                "resume_from_checkpoint": None,
            }
        )
        set_seed(training_args.seed)
        plain_model, _ = build_model(model_args, id2label)
        _, _, plain_metrics, _, _ = train_and_evaluate(
            plain_model,
            processor,
            plain_args,
            train_data,
            validation_data,
            eval_data,
            image_column,
            label_column,
            model_args.early_stopping_patience,
        )
        plain_accuracy = plain_metrics["eval_accuracy"]
        report["plain_accuracy"] = plain_accuracy
        report["plain_accuracy_ci95"] = list(
            wilson_interval(round(plain_accuracy * n_eval), n_eval)
        )

    if trainer.is_world_process_zero():
        faithfulness = measure_faithfulness(
            model,
            processor,
            evaluation,
            image_column,
            report_args.num_truth_images,
            report_args.num_exact_images,
            report_args.truth_evaluations,
            report_args.truth_max_evaluations,
            report_args.truth_tolerance,
        )
        if faithfulness:
            # Numbers only under "faithfulness" (the model card lists each); what they were
            # measured on beside it.
            report["faithfulness_truth"] = faithfulness.pop("truth")
            report["faithfulness_truth_converged"] = faithfulness.pop("truth_converged")
            report["faithfulness_truth_tolerance"] = faithfulness.pop("truth_tolerance")
            if "agreement_withheld" in faithfulness:
                report["faithfulness_withheld"] = faithfulness.pop("agreement_withheld")
                logger.warning("Faithfulness: %s", report["faithfulness_withheld"])
            report["faithfulness_num_images"] = faithfulness.pop("num_images")
            if "num_exact_images" in faithfulness:
                report["faithfulness_num_exact_images"] = faithfulness.pop("num_exact_images")
            report["faithfulness"] = faithfulness
        if model.image_processor is None:
            model.image_processor = processor
        trainer.save_model(str(out_dir))  # also the training arguments, as JSON
        pictures = write_pictures(
            model, processor, evaluation, image_column, out_dir, report_args.num_explained_images
        )
        (out_dir / "metrics.json").write_text(json.dumps(report, indent=2))
        from hf_shapley import publishing as hub

        publication = dict(
            example_image=evaluation[0][image_column],
            metrics=report,
            dataset_name=data_args.dataset_name or "hf-shapley built-in shapes",
            base_model=base_model,
        )
        # The model card and its example picture complete the directory trainer.save_model
        # wrote (weights, config with auto_map and custom_pipelines, code, processor): a
        # complete Hub repository, what hub.save_for_hub writes.
        hub.write_model_card(
            model,
            out_dir,
            repo_id=training_args.hub_model_id or out_dir.name,
            space_directory=report_args.space_dir,
            **publication,
        )
        logger.info(
            "Wrote %s (%d explanation pictures): accuracy %.3f %s",
            out_dir,
            len(pictures),
            accuracy,
            json.dumps(report.get("faithfulness", {})),
        )
        print(json.dumps(report, indent=2))
        if push_to_hub:
            hub.push_to_hub(
                model,
                training_args.hub_model_id or out_dir.name,
                token=training_args.hub_token,
                private=training_args.hub_private_repo,
                **publication,
            )
    return report


if __name__ == "__main__":
    main(sys.argv[1:] or None)
    sys.exit(0)
