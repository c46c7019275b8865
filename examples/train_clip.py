"""Train a self-explaining image-text dual encoder (CLIP): the built-in pairs, or your CLIP and captions.

With no arguments it builds a small CLIP from a config (no download), trains it on the built-in
shapes images paired with their generated captions (``hf_shapley.data.captions``) with the pair
objective (contrastive + masked self-distillation + Shapley regression of the image's vector
game), then freezes CLIP and trains the Shapley head further on the now fixed game (the
explainer recipe: the head learns a game that no longer moves).

With ``--clip_model`` it explains a pretrained CLIP (a Hub id or a local directory with its
tokenizer and image processor): CLIP stays frozen, its scores bit-identical, and only the head
learns CLIP's own game; ``--train_clip true`` trains CLIP too, and the metrics say so. Your
captions come as a folder (``--train_dir``, optionally ``--test_dir``): images and a
``metadata.jsonl`` with one ``{"file_name": ..., "caption": ...}`` line per image; images in
class sub-folders also give zero-shot accuracy with ``--label_template`` prompts. A data set
with image and caption columns works too: ``--dataset_name`` (a Hub id or a local directory
that ``datasets.load_dataset`` reads) with ``--image_column`` and ``--caption_column``.

It reports in-batch retrieval (R@1), zero-shot accuracy, the agreement of the explanation with
the exact Shapley values of the model's own games (on each image's caption, on other captions
and on label prompts never trained on), and writes a loadable model directory (weights,
config, code, tokenizer, image processor, metrics):

    accelerate launch examples/train_clip.py
    python examples/train_clip.py --num_train 512 --num_train_epochs 1 --output_dir /tmp/clip
    python examples/train_clip.py --clip_model openai/clip-vit-base-patch32 --players_grid 7 7 \
        --train_dir ./my_captioned_images --output_dir outputs/my-clip-shapley

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
    load_caption_folder,
    load_shapes_caption_dataset,
    shapes_caption_tokenizer,
)
from hf_shapley.data.captions import PROMPT_TEMPLATE
from hf_shapley.data.splits import HOLDOUT_FRACTION, HOLDOUT_SEED, load_image_splits
from hf_shapley.models.image_loading import to_rgb
from hf_shapley.training.trainer import add_example_index
from hf_shapley.training.trainer_clip import ShapleyCLIPCollator, ShapleyCLIPTrainer

logger = logging.getLogger("hf_shapley.train_clip")


@dataclass
class PairArguments:
    """The data and the CLIP: built-in, or the user's."""

    clip_model: str | None = field(
        default=None,
        metadata={
            "help": "A pretrained CLIP to explain (Hub id or local directory with its tokenizer "
            "and image processor). Kept frozen unless --train_clip true. None: a small CLIP "
            "built from a config and trained here."
        },
    )
    train_clip: bool | None = field(
        default=None,
        metadata={
            "help": "Train CLIP with the pair objective before the explainer phase. None: "
            "False with --clip_model (CLIP's scores stay bit-identical), True otherwise."
        },
    )
    train_dir: str | None = field(
        default=None,
        metadata={
            "help": "Your image-caption folder: images and a metadata.jsonl with one "
            '{"file_name": ..., "caption": ...} line per image. None: the built-in pairs.'
        },
    )
    test_dir: str | None = field(
        default=None,
        metadata={"help": "A held-out caption folder. None: 10%% of --train_dir is held out."},
    )
    dataset_name: str | None = field(
        default=None,
        metadata={
            "help": "Your image-caption data set instead of a folder: a Hub id or a local "
            "directory that datasets.load_dataset reads (e.g. parquet files), with an image and "
            "a caption column; its 'test' split is the held-out one (else 10%% of 'train')."
        },
    )
    dataset_config_name: str | None = field(
        default=None, metadata={"help": "The data set's configuration, if it has several."}
    )
    image_column: str = field(
        default="image", metadata={"help": "The image column of --dataset_name."}
    )
    caption_column: str = field(
        default="caption",
        metadata={"help": "The caption's field in metadata.jsonl or column of --dataset_name."},
    )
    label_template: str = field(
        default=PROMPT_TEMPLATE,
        metadata={"help": "Zero-shot prompt for a class sub-folder's name ('{}' is the name)."},
    )

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
        default=30.0,
        metadata={"help": "Epochs of head-only training on the frozen CLIP afterwards (0: none)."},
    )
    explainer_learning_rate: float = field(
        default=3e-3,
        metadata={"help": "Learning rate of the head-only phase (the explainer study's 3e-3)."},
    )
    num_retrieval_images: int = field(
        default=32,
        metadata={
            "help": "Test pairs of the deletion R@1 gallery: R@1 among their captions as each "
            "image's most important players (by phi, at random, and by the exact values when "
            "P <= 16 and --num_truth_images covers the gallery) are removed. 0 skips it."
        },
    )
    num_truth_images: int = field(
        default=4,
        metadata={
            "help": "Test pairs on which phi is compared with the exact Shapley values of the "
            "model's own game for each image's caption, the other images' captions and label "
            "prompts: exact (all 2**P coalitions) for P <= 16, KernelSHAP run until its own "
            "estimated error is at most 0.1 above; written to metrics.json under "
            "'faithfulness'. 0 skips it."
        },
    )
    truth_max_evaluations: int = field(
        default=32768,
        metadata={
            "help": "The KernelSHAP truth's largest budget per image (P > 16); a truth that does "
            "not converge within it withholds the agreement and says what budget would do."
        },
    )
    head_hidden_size: int = field(default=256, metadata={"help": "Shapley head width."})
    head_num_layers: int = field(default=3, metadata={"help": "Shapley head attention layers."})
    head_reads_hidden_states: bool = field(
        default=True,
        metadata={"help": "The Shapley head reads every depth of the vision tower."},
    )
    text_shapley_loss_weight: float = field(
        default=0.0,
        metadata={
            "help": "Weight of the extra regression of the batch's caption games "
            "(ShapleyCLIPConfig.text_shapley_loss_weight): it weights the head's fit towards "
            "the directions real texts take."
        },
    )


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
        head_reads_hidden_states=pairs.head_reads_hidden_states,
        text_shapley_loss_weight=pairs.text_shapley_loss_weight,
    )


def load_user_clip(pairs: PairArguments, train_clip: bool):
    """The user's CLIP wrapped with a fresh head, its tokenizer and its image processor."""
    from transformers import AutoImageProcessor, AutoTokenizer

    try:
        model = ShapleyCLIPModel.from_clip(
            pairs.clip_model,
            players_grid=tuple(pairs.players_grid),
            train_clip=train_clip,
            head_hidden_size=pairs.head_hidden_size,
            head_num_layers=pairs.head_num_layers,
            head_reads_hidden_states=pairs.head_reads_hidden_states,
            text_shapley_loss_weight=pairs.text_shapley_loss_weight,
            load_processor=False,
        )
        tokenizer = AutoTokenizer.from_pretrained(pairs.clip_model)
        processor = AutoImageProcessor.from_pretrained(pairs.clip_model)
    except (OSError, ValueError) as error:
        raise SystemExit(f"Cannot explain {pairs.clip_model}: {error}") from error
    return model, tokenizer, processor


def load_pairs(pairs: PairArguments, seed: int):
    """(train, test) image-caption data sets: the user's folders or data set, or the built-in
    pairs; columns ``image`` and ``caption`` (and ``label`` where the data has classes)."""
    if pairs.train_dir is None and pairs.dataset_name is None:
        data = load_shapes_caption_dataset(
            pairs.num_train, pairs.num_test, image_size=pairs.image_size, seed=seed
        )
        return data["train"], data["test"]
    if pairs.train_dir is not None and pairs.dataset_name is not None:
        raise SystemExit("Give --train_dir or --dataset_name, not both.")
    try:
        if pairs.dataset_name is not None:
            train, test = load_image_splits(
                dataset_name=pairs.dataset_name, dataset_config_name=pairs.dataset_config_name
            )
            return [
                caption_columns(d, pairs.image_column, pairs.caption_column) for d in (train, test)
            ]
        train = load_caption_folder(pairs.train_dir, pairs.caption_column)
        if pairs.test_dir is not None:
            test = load_caption_folder(pairs.test_dir, pairs.caption_column)
        else:
            parts = train.train_test_split(test_size=HOLDOUT_FRACTION, seed=HOLDOUT_SEED)
            train, test = parts["train"], parts["test"]
    except ValueError as error:
        raise SystemExit(str(error)) from error
    if pairs.caption_column != "caption":
        train = train.rename_column(pairs.caption_column, "caption")
        test = test.rename_column(pairs.caption_column, "caption")
    return train, test


def caption_columns(dataset, image_column: str, caption_column: str):
    """A data set's image and caption columns as ``image`` and ``caption``, checked: an image
    feature, and a non-empty text in every row."""
    import datasets

    for column, what in ((image_column, "--image_column"), (caption_column, "--caption_column")):
        if column not in dataset.features:
            raise ValueError(
                f"The data set has no column {column!r} ({what}); its columns are "
                f"{list(dataset.features)}."
            )
    if not isinstance(dataset.features[image_column], datasets.Image):
        raise ValueError(
            f"Column {image_column!r} holds {dataset.features[image_column]}, not images; name "
            "the image column with --image_column."
        )
    captions = dataset[caption_column]
    missing = [i for i, c in enumerate(captions) if not isinstance(c, str) or not c.strip()]
    if missing:
        raise ValueError(
            f"{len(missing)} of {len(captions)} rows have no {caption_column!r} text (e.g. row "
            f"{missing[0]}); every image needs a caption: drop those rows or fill them in."
        )
    renames = {image_column: "image", caption_column: "caption"}
    return dataset.rename_columns({k: v for k, v in renames.items() if k != v})


def check_caption_lengths(model, tokenizer, datasets_: list) -> None:
    """A caption longer than the text encoder's context stops the run before training."""
    context = model.config.clip_config.text_config.max_position_embeddings
    for dataset in datasets_:
        captions = list(dataset["caption"])
        lengths = [len(ids) for ids in tokenizer(captions)["input_ids"]]
        longest = max(range(len(lengths)), key=lengths.__getitem__)
        if lengths[longest] > context:
            raise SystemExit(
                f"A caption has {lengths[longest]} tokens, beyond the text encoder's context of "
                f"{context}: {captions[longest]!r}. Shorten it (CLIP reads at most "
                f"{context} tokens)."
            )


def label_prompts(dataset, template: str) -> list[str] | None:
    """One zero-shot prompt per class in label order, or None without a label column."""
    if "label" not in dataset.features or "{}" not in template:
        return None
    return [template.format(name) for name in dataset.features["label"].names]


@torch.no_grad()
def scores_identical_to_clip(model, clip_model: str, dataset, processor, tokenizer) -> bool:
    """Whether the model scores the first test pairs exactly as the checkpoint's CLIPModel."""
    device = next(model.parameters()).device
    plain = CLIPModel.from_pretrained(clip_model).to(device).eval()
    rows = dataset[:8]
    pixels = processor([to_rgb(i) for i in rows["image"]], return_tensors="pt").pixel_values
    text = tokenizer(rows["caption"], padding=True, return_tensors="pt")
    model.eval()
    ours = model(
        pixels.to(device), input_ids=text.input_ids.to(device),
        attention_mask=text.attention_mask.to(device),
    ).logits_per_image.cpu()  # fmt: skip
    theirs = plain(
        pixel_values=pixels.to(device), input_ids=text.input_ids.to(device),
        attention_mask=text.attention_mask.to(device),
    ).logits_per_image.cpu()  # fmt: skip
    return bool(torch.equal(ours, theirs))


def evaluation_pairs(dataset, count: int) -> dict:
    """``count`` test pairs in a fixed shuffled order: a folder read class by class would
    otherwise give pairs, and other captions, of its first class only."""
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(0))
    return dataset.select(order[: min(count, len(dataset))].tolist())[:]


def evaluation_pixels(model, rows: dict, processor) -> torch.Tensor:
    """The images of ``rows`` (from :func:`evaluation_pairs`), processed, on the model's
    device."""
    pixels = processor([to_rgb(i) for i in rows["image"]], return_tensors="pt").pixel_values
    return pixels.to(next(model.parameters()).device)


@torch.no_grad()
def exact_vectors(model, dataset, processor, count: int) -> torch.Tensor | None:
    """Exact Shapley values of the vector game, (B, P, D) float64, on the first ``count``
    evaluation pairs when P allows enumeration (None otherwise): the truth of both the
    agreement and the deletion R@1's truth order, enumerated once."""
    from hf_shapley.evaluation import exact_model_shapley_values
    from hf_shapley.evaluation.truth import MAX_EXACT_PLAYERS

    if model.num_players > MAX_EXACT_PLAYERS or count < 2:
        return None
    model.eval()
    logger.info("Enumerating all 2^%d coalitions on %d test pairs.", model.num_players, count)
    pixels = evaluation_pixels(model, evaluation_pairs(dataset, count), processor)
    return exact_model_shapley_values(model, pixels, progress=True)


@torch.no_grad()
def deletion_recall(
    model, dataset, processor, tokenizer, count: int, exact: torch.Tensor | None = None
) -> dict | None:
    """Deletion R@1 on the first ``count`` test pairs (their captions are the gallery): R@1,
    image to text, as each image's top ``k`` players go, ranked by phi for its own caption, at
    random (seed 0) and, given ``exact`` vector values of at least those pairs
    (:func:`exact_vectors`), by the exact values (``truth``); ``k`` = 0, 1, 2, 4, P / 4 and
    P / 2."""
    from hf_shapley.evaluation import CLIPTextScores, deletion_recall_at_1, model_coalition_values

    rows = evaluation_pairs(dataset, count)
    if len(rows["caption"]) < 2:
        return None
    device = next(model.parameters()).device
    pixels = evaluation_pixels(model, rows, processor)
    texts = tokenizer(rows["caption"], padding=True, return_tensors="pt")
    model.eval()
    scores = CLIPTextScores(model, texts.input_ids.to(device), texts.attention_mask.to(device))
    n, P = pixels.shape[0], model.num_players
    own = torch.arange(n)
    phi = scores(pixels).shapley_values.float().cpu()[own, :, own]  # (n, P)
    ks = sorted({0, 1, 2, 4, P // 4, P // 2} & set(range(P + 1)))
    values = model_coalition_values(scores, pixels)
    random = torch.rand(n, P, generator=torch.Generator().manual_seed(0))
    recall = {
        "ks": ks,
        "num_images": n,
        "phi": deletion_recall_at_1(values, phi, ks).recall()["image_to_text"],
        "random": deletion_recall_at_1(values, random, ks).recall()["image_to_text"],
    }
    if exact is not None and len(exact) >= n:
        own_texts = model.get_text_embeds(
            texts.input_ids.to(device), texts.attention_mask.to(device)
        )
        own_texts = own_texts.double().cpu()  # (n, D): caption b matches image b
        truth = torch.einsum("bpd,bd->bp", exact[:n].cpu(), own_texts)
        recall["truth"] = deletion_recall_at_1(values, truth, ks).recall()["image_to_text"]
    return recall


@torch.no_grad()
def zero_shot_accuracy(
    model, dataset, processor, tokenizer, prompts: list[str], batch_size: int = 64
) -> float:
    """Accuracy of the class prompts as zero-shot labels on ``dataset``."""
    model.eval()
    prompts = tokenizer(prompts, padding=True, return_tensors="pt")
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


def faithfulness(
    model,
    dataset,
    processor,
    tokenizer,
    pairs: PairArguments,
    prompts: list[str] | None,
    exact: torch.Tensor | None = None,
) -> dict:
    """Agreement of phi with the Shapley values of the model's own games on the first test pairs
    (``hf_shapley.evaluation.measure_clip_agreement``; exact for P <= 16, given as ``exact``
    when enumerated already, converged KernelSHAP above): on each image's caption and the other
    images' captions, and with ``prompts`` (texts never trained on) on each image's class prompt
    under ``label_prompts``."""
    from hf_shapley.evaluation import measure_clip_agreement

    rows = evaluation_pairs(dataset, pairs.num_truth_images)
    device = next(model.parameters()).device
    pixels = evaluation_pixels(model, rows, processor)
    truth = "exact enumeration" if model.num_players <= 16 else "KernelSHAP to convergence"
    logger.info("Measuring faithfulness on %d test pairs (%s).", len(pixels), truth)
    captions = tokenizer(rows["caption"], padding=True, return_tensors="pt").to(device)
    labels = {}
    if prompts is not None:
        ids = tokenizer(
            [prompts[label] for label in rows["label"]], padding=True, return_tensors="pt"
        )
        labels = {"prompt_input_ids": ids.input_ids.to(device),
                  "prompt_attention_mask": ids.attention_mask.to(device)}  # fmt: skip
    return measure_clip_agreement(
        model,
        pixels.to(device),
        captions.input_ids,
        captions.attention_mask,
        **labels,
        exact_vectors=exact,
        max_kernel_evaluations=pairs.truth_max_evaluations,
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

    train_clip = pairs.train_clip if pairs.train_clip is not None else pairs.clip_model is None
    if pairs.clip_model is not None:
        model, tokenizer, processor = load_user_clip(pairs, train_clip)
    else:
        tokenizer = shapes_caption_tokenizer()
        processor = CLIPImageProcessor(
            size={"shortest_edge": pairs.image_size},
            crop_size={"height": pairs.image_size, "width": pairs.image_size},
        )
        model = build_model(pairs, tokenizer)
    train, test = load_pairs(pairs, args.seed)
    check_caption_lengths(model, tokenizer, [train, test])
    train, test = add_example_index(train), add_example_index(test)
    collator = ShapleyCLIPCollator(processor, tokenizer)
    metrics: dict = {"clip_trained": train_clip}

    # Phase 1 (when CLIP trains): CLIP and the head together (the head reads detached features).
    if train_clip:
        trainer = ShapleyCLIPTrainer(
            model, args, train_dataset=train, eval_dataset=test, data_collator=collator
        )
        trainer.train()
        metrics.update({f"joint_{k}": v for k, v in trainer.evaluate().items()})

    # Phase 2: freeze CLIP; the head learns the game that no longer moves.
    model.config.train_clip = False
    model._apply_train_clip()
    args.num_train_epochs = pairs.explainer_epochs
    args.learning_rate = pairs.explainer_learning_rate
    trainer = ShapleyCLIPTrainer(
        model, args, train_dataset=train, eval_dataset=test, data_collator=collator
    )
    if pairs.explainer_epochs > 0:
        trainer.train()
    metrics.update({f"explainer_{k}": v for k, v in trainer.evaluate().items()})

    prompts = label_prompts(test, pairs.label_template)
    if prompts is not None:
        metrics["zero_shot_accuracy"] = zero_shot_accuracy(
            model, test, processor, tokenizer, prompts
        )
    if pairs.clip_model is not None and not train_clip:
        metrics["scores_identical_to_clip"] = scores_identical_to_clip(
            model, pairs.clip_model, test, processor, tokenizer
        )
    if trainer.is_world_process_zero():
        exact = exact_vectors(model, test, processor, pairs.num_truth_images)
        if pairs.num_retrieval_images >= 2:
            metrics["deletion_recall_at_1"] = deletion_recall(
                model, test, processor, tokenizer, pairs.num_retrieval_images, exact
            )
        if pairs.num_truth_images >= 2:
            metrics["faithfulness"] = faithfulness(
                model, test, processor, tokenizer, pairs, prompts, exact
            )
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
