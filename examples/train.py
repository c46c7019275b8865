"""Train a self-explaining image classifier: the main job of hf-shapley.

With no arguments it trains a small plain ViT classifier on the built-in shapes data set to
the end (8 epochs of cross-entropy), wraps it with ``ShapleyForImageClassification.from_backbone``
(the explainer recipe of ``configuration_shapley.EXPLAINER_DEFAULTS``), freezes it, and trains
the Shapley head for 6 epochs (750 steps) to explain the classifier's fixed game (each image's 32 coalition
values computed in the first epoch and kept: ``reuse_shapley_coalitions``). The logits are the
plain classifier's, bit for bit. It then measures how faithful the explanation is and writes a
complete, loadable model directory (safetensors weights, config, image processor, model card,
metrics, explanation pictures):

    accelerate launch examples/train.py
    python examples/train.py                                   # the same, one process

Other data and backbones:

    accelerate launch examples/train.py --dataset_name beans --image_column image --label_column labels \
        --backbone google/vit-base-patch16-224-in21k --players_grid 7 7 --output_dir outputs/vit-beans
    accelerate launch examples/train.py --train_dir ./my_images   # an imagefolder: one folder per class

Every ``ShapleyTrainingArguments`` / ``TrainingArguments`` option works (``--num_train_epochs``,
``--shapley_loss_weight``, ``--push_to_hub``, ``--resume_from_checkpoint``...). ``--compare_plain``
also trains the same model with lambda = alpha = beta = 0 (its classifier fine-tuned with
cross-entropy alone) for the same steps and reports both accuracies; with a frozen classifier
the plain accuracy is the model's own (the logits are the plain classifier's).
"""

from __future__ import annotations

import json
import logging
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import datasets
import torch
from transformers import (
    AutoImageProcessor,
    HfArgumentParser,
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
from hf_shapley.data import load_image_splits, process_in_memory
from hf_shapley.evaluation import wilson_interval
from hf_shapley.image_loading import to_rgb
from hf_shapley.trainer import ShapleyImageCollator, add_example_index

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


# Coalitions per image kept for a frozen classifier's game (explainer study: 32 kept per image
# reach the agreement of 32 drawn afresh from 64). Trading images for coalitions (4,000 images
# with 64 each, 32 a step: --explainer_train_samples 4000 --explainer_batch_size 32 and 64 here)
# halves the head's cost per step but lost on each of 3 seeds (pooled error 0.267 against 0.258:
# benchmarks/results/main_job_seeds_v6*.md), so it is not the default.
FROZEN_GAME_COALITIONS = 32


@dataclass
class ModelArguments:
    backbone: str | None = field(
        default=None,
        metadata={
            "help": "Hub id or local directory of a backbone (ViTModel...) or a fine-tuned classifier "
            "(ViTForImageClassification...). Default: a small ViT from scratch for the built-in data."
        },
    )
    players_grid: list[int] = field(
        default_factory=lambda: [4, 4], metadata={"help": "Players grid: rows cols."}
    )
    prediction_mode: str | None = field(
        default=None,
        metadata={"help": "shapley_sum or backbone_head (default: chosen by from_backbone)."},
    )
    train_backbone: bool | None = field(
        default=None,
        metadata={
            "help": "backbone_head mode: also train the classifier. Default: frozen when the "
            "classifier was pretrained here (the explainer then learns a fixed game, whose "
            "coalition values it keeps across epochs), trained otherwise."
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
    head_reads_attention: bool | None = field(
        default=None,
        metadata={
            "help": "With the head reading every depth: it also reads the attention each patch "
            "token received in every block and head (ShapleyConfig.head_reads_attention). "
            "None: the explainer recipe's default for the family (on for ViT and DeiT)."
        },
    )
    explainer_learning_rate: float | None = field(
        default=3e-3,
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
    image_size: int = field(
        default=BUILTIN_IMAGE_SIZE,
        metadata={
            "help": "Without --backbone: image size of the built-in data and ViT (a multiple of 8)."
        },
    )
    pretrain_epochs: float = field(
        default=8,
        metadata={
            "help": "Without --backbone: first train a plain ViT classifier with cross-entropy for this many "
            "epochs, then wrap it and train its explainer (a soft-voting ViT trained from scratch "
            "stayed at chance here). 0 trains the self-explaining model from scratch."
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
            "help": "KernelSHAP evaluations per image for that truth. On the main job's model "
            "2,048 give a pooled error of 0.077 against exact enumeration and 4,096 give 0.046 "
            "(benchmarks/results/truth_check_recipe_main_job.json) at twice the time; 2,048 "
            "keep the main job within 10 minutes on a 2-core CPU."
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
        # The head's epochs (the classifier's are --pretrain_epochs). 750 steps fit the
        # 10-minute budget on a 2-core CPU; 1,000 take about a minute more for pooled error
        # 0.250 against 0.254 over 3 seeds (exact enumeration, 32 images a seed: 0.259 against
        # 0.267; benchmarks/results/main_job_head_variants.md).
        num_train_epochs=6,
        per_device_train_batch_size=64,
        per_device_eval_batch_size=128,
        learning_rate=1e-3,
        weight_decay=0.05,
        warmup_steps=30,
        lr_scheduler_type="cosine",
        logging_steps=10,
        eval_strategy="no",
        save_strategy="epoch",
        save_total_limit=1,
        report_to="none",
        dataloader_num_workers=0,
        dataloader_pin_memory=torch.cuda.is_available(),
        loss_warmup_steps=60,
        seed=0,
    )


# ----------------------------------------------------------------------------- data
def load_data(
    args: DataArguments, image_size: int = BUILTIN_IMAGE_SIZE
) -> tuple[datasets.Dataset, datasets.Dataset, str, str]:
    """Train and eval splits, checked before training starts. Returns (train, eval, image_col, label_col)."""
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
    check_images_decode(train, args.image_column, "train")
    check_images_decode(evaluation, args.image_column, "eval")
    return train, evaluation, args.image_column, args.label_column


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
    feature = split.features[label_column]
    if isinstance(feature, datasets.ClassLabel):
        return dict(enumerate(feature.names))
    values = sorted(set(split[label_column]))
    if not all(isinstance(v, int) for v in values) or values[0] < 0:
        raise SystemExit(
            f"Labels in {label_column!r} must be a ClassLabel or non-negative integers; got {values[:5]}..."
        )
    return {i: str(i) for i in range(values[-1] + 1)}


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


def build_model(
    args: ModelArguments, id2label: dict[int, str]
) -> tuple[ShapleyForImageClassification, object]:
    if args.backbone is None:
        config = ShapleyConfig(
            backbone_config=ViTConfig(**{**BUILTIN_BACKBONE, "image_size": args.image_size}),
            id2label=id2label,
            label2id={v: k for k, v in id2label.items()},
            players_grid=args.players_grid,
        )
        return ShapleyForImageClassification(config), builtin_image_processor(args.image_size)
    kwargs: dict = dict(players_grid=tuple(args.players_grid))
    if args.train_backbone is not None:
        kwargs["train_backbone"] = args.train_backbone
    if args.train_backbone is False:
        # A frozen classifier's game never changes: its coalition values are computed in the
        # first epoch and kept, 32 per image (with 8 kept the head learns those few coalitions
        # and not the game: benchmarks/results/explainer_study.md).
        kwargs["reuse_shapley_coalitions"] = True
        kwargs["num_shapley_coalitions"] = FROZEN_GAME_COALITIONS
        # Fixed targets cannot collapse in scale, so the regression need not be normalized per
        # image; unnormalized, it weighs images as the pooled error does (explainer study: lower
        # pooled error AND higher r than per-image normalization at equal steps).
        kwargs["shapley_loss_normalization"] = "none"
        # The frozen classifier's passes train nothing: bf16 where the device computes it
        # natively (the head stays fp32; --frozen_game_dtype float32 overrides).
        kwargs["frozen_game_dtype"] = "bfloat16" if native_bfloat16() else "float32"
    if args.prediction_mode:
        kwargs["prediction_mode"] = args.prediction_mode
    if args.head_reads_hidden_states is not None:
        kwargs["head_reads_hidden_states"] = args.head_reads_hidden_states
    if args.head_reads_attention is not None:
        kwargs["head_reads_attention"] = args.head_reads_attention
    model = ShapleyForImageClassification.from_backbone(
        args.backbone, id2label=id2label, label2id={v: k for k, v in id2label.items()}, **kwargs
    )
    processor = model.image_processor or AutoImageProcessor.from_pretrained(args.backbone)
    return model, processor


def pretrain_builtin_classifier(
    model_args: ModelArguments,
    training_args,
    data_args: DataArguments,
    id2label,
    train,
    image_column,
    label_column,
) -> str:
    """Train a stock ViT classifier with plain cross-entropy; return its directory (cached).

    The cache is keyed by what changes the classifier (image size, data, epochs, seed), so a
    run with another seed or data set never reuses a classifier trained for another.
    """
    from transformers import ViTForImageClassification

    from hf_shapley.plain_classifier import train_plain_classifier

    key = (
        f"{model_args.image_size}px-{data_args.builtin_distractors}-{len(train)}-"
        f"{model_args.pretrain_epochs:g}ep-seed{training_args.seed}"
    )
    path = Path(training_args.output_dir) / f"pretrained-classifier-{key}"
    if (path / "model.safetensors").is_file():
        logger.info("Reusing the pretrained classifier in %s.", path)
        return str(path)
    config = ViTConfig(**{**BUILTIN_BACKBONE, "image_size": model_args.image_size})
    config.id2label, config.label2id = id2label, {v: k for k, v in id2label.items()}
    model = ViTForImageClassification(config)
    logger.info(
        "Pretraining a plain ViT classifier for %s epochs (cross-entropy only).",
        model_args.pretrain_epochs,
    )
    processor = builtin_image_processor(model_args.image_size)
    train_plain_classifier(
        model,
        process_in_memory(
            train,
            processor,
            image_column=image_column,
            label_column=label_column,
            max_gb=data_args.preprocess_in_memory_gb,
        ),
        image_processor=processor,
        output_dir=path,
        num_train_epochs=model_args.pretrain_epochs,
        per_device_train_batch_size=training_args.per_device_train_batch_size,
        learning_rate=training_args.learning_rate,
        weight_decay=training_args.weight_decay,
        warmup_steps=training_args.warmup_steps,
        lr_scheduler_type=training_args.lr_scheduler_type,
        seed=training_args.seed,
        logging_steps=training_args.logging_steps,
        image_column=image_column,
        label_column=label_column,
        dataloader_pin_memory=training_args.dataloader_pin_memory,
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
) -> dict | None:
    """Agreement of phi with the truth of the model's own game on the first test images
    (``hf_shapley.evaluation.measure_agreement``: centred predicted-class logit, KernelSHAP
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
        model, x, num_exact=num_exact, kernel_evaluations=kernel_evaluations, progress=True
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
    model, processor, training_args, train, evaluation, image_column, label_column
):
    collator = ShapleyImageCollator(
        image_processor=processor, image_column=image_column, label_column=label_column
    )
    trainer = ShapleyTrainer(
        model=model,
        args=training_args,
        train_dataset=add_example_index(train),
        eval_dataset=evaluation,
        data_collator=collator,
        processing_class=processor,
    )
    start = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    train_seconds = time.perf_counter() - start
    metrics = trainer.evaluate()
    return trainer, result, metrics, train_seconds


def main(argv: list[str] | None = None) -> dict:
    parser = HfArgumentParser(
        (ModelArguments, DataArguments, ReportArguments, ShapleyTrainingArguments)
    )
    parser.set_defaults(**default_training_args())
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
    logging.basicConfig(
        format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO
    )
    datasets.utils.logging.set_verbosity_warning()
    set_seed(training_args.seed)
    push_to_hub = training_args.push_to_hub
    if push_to_hub:
        from hf_shapley.hub import check_online

        # Fail before hours of training, not after; the finished folder is published once, at
        # the end, by hf_shapley.hub.push_to_hub (the Trainer's own push would replace the
        # model card and skip the pipeline's code).
        check_online(training_args.hub_model_id or Path(training_args.output_dir).name)
        training_args.push_to_hub = False

    train, evaluation, image_column, label_column = load_data(data_args, model_args.image_size)
    id2label = label_names(train, label_column)
    base_model = model_args.backbone
    if model_args.backbone is None and model_args.pretrain_epochs > 0:
        if model_args.train_backbone is None:
            # The classifier is trained here to the end; what follows trains its explainer.
            model_args.train_backbone = False
        model_args.backbone = pretrain_builtin_classifier(
            model_args, training_args, data_args, id2label, train, image_column, label_column
        )
    model, processor = build_model(model_args, id2label)
    frozen = model.classifier is not None and not model.config.train_backbone
    if frozen:
        # Only the head trains, on a fixed game: it has its own learning rate, batch size and
        # images (fewer images, more kept coalitions each: see FROZEN_GAME_COALITIONS).
        if model_args.explainer_learning_rate is not None:
            training_args.learning_rate = model_args.explainer_learning_rate
        if model_args.explainer_batch_size is not None:
            training_args.per_device_train_batch_size = model_args.explainer_batch_size
        if model_args.explainer_train_samples is not None:
            train = train.select(range(min(model_args.explainer_train_samples, len(train))))
    logger.info(
        "Training %s (%s, players %s) on %d images, evaluating on %d.",
        type(model).__name__,
        model.config.backbone_config.model_type,
        model.players_grid,
        len(train),
        len(evaluation),
    )
    # Both splits processed once for every training below (the plain arm's too); `evaluation`
    # stays the image split, for the pictures and the faithfulness check.
    train_data, eval_data = (
        process_in_memory(
            split,
            processor,
            image_column=image_column,
            label_column=label_column,
            max_gb=data_args.preprocess_in_memory_gb,
        )
        for split in (train, evaluation)
    )
    trainer, result, metrics, train_seconds = train_and_evaluate(
        model, processor, training_args, train_data, eval_data, image_column, label_column
    )
    out_dir = Path(training_args.output_dir)
    n_eval = len(evaluation)
    accuracy = metrics["eval_accuracy"]
    report: dict = {
        "accuracy": accuracy,
        "accuracy_ci95": list(wilson_interval(round(accuracy * n_eval), n_eval)),
        "num_eval_images": n_eval,
        "eval_split": data_args.eval_split,
        "shapley_regression_proxy": metrics.get("eval_shapley_regression_proxy"),
        "train_seconds": train_seconds,
        "train_steps": result.global_step,
    }
    if model_args.backbone is not None and Path(model_args.backbone).parent == out_dir:
        # The plain classifier this model was fine-tuned from (benchmarks/faithfulness.py).
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
        _, _, plain_metrics, _ = train_and_evaluate(
            plain_model, processor, plain_args, train_data, eval_data, image_column, label_column
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
        )
        if faithfulness:
            # Numbers only under "faithfulness" (the model card lists each); what they were
            # measured on beside it.
            report["faithfulness_truth"] = faithfulness.pop("truth")
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
        from hf_shapley import hub

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
