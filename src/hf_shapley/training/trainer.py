"""Training integration: ``ShapleyTrainer`` and ``ShapleyTrainingArguments``.

The joint objective (cross-entropy + masked self-distillation + Shapley regression) lives in
the model: ``model(pixel_values, labels=y, example_index=i, epoch=e, global_step=t)`` in training
mode returns it. The trainer only supplies what the model cannot know on its own:

* ``example_index`` (from a data set column) and ``epoch`` (the epoch being trained), the keys
  of the training coalitions, which are a pure function of
  ``(config.coalition_seed, epoch, example_index, coalition index)``. This is what makes a
  resumed run and a multi-process run draw exactly the coalitions of a straight one-process run
  (the Trainer's ``rng_state.pth`` only saves the global generators);
* ``global_step`` = the optimizer step (``state.global_step``), for the warm-up of the loss
  weights; both are passed as forward arguments (the epoch is counted by
  :class:`ShapleyProgressCallback`, a ``TrainerCallback``);
* logging of ``cls_loss``, ``distill_loss``, ``shapley_loss`` and ``consistency_loss`` next to ``loss``, averaged
  over the logging window and across processes;
* evaluation metrics ``accuracy`` and ``shapley_regression_proxy``: the per-image normalized
  Shapley regression residual on held-out images, with coalitions drawn from the Shapley kernel
  with a fixed evaluation seed. It is a *proxy* for faithfulness (the network that gives phi
  also gives the game), not the ground-truth comparison of the evaluation protocol.

Metrics are kept as TRL's trainers keep theirs: ``compute_loss`` adds each batch's values to a
store (``train``: the loss components; ``eval``: sums of correct predictions and of the
per-image proxy, gathered per batch with ``gather_for_metrics``), and ``log`` turns the store
into averages and empties it. The epoch passed to the model is the epoch the Trainer's loop is
running (on resume, the one recomputed from the checkpoint's global step).

Data: every training example needs a stable ``example_index`` column (its row in the data
set). :func:`add_example_index` adds it; since it is a column it travels with its row through
``shuffle``, ``select`` and the Trainer's samplers. :class:`ShapleyImageCollator` builds the
batches (``pixel_values``, ``labels``, ``example_index``), from a ``pixel_values`` column or
from images through an image processor.

Example::

    from hf_shapley import ShapleyTrainer, ShapleyTrainingArguments
    from hf_shapley.training.trainer import ShapleyImageCollator, add_example_index

    train = add_example_index(dataset["train"])           # before any set_transform
    args = ShapleyTrainingArguments("out", num_shapley_coalitions=16, loss_warmup_steps=500)
    trainer = ShapleyTrainer(model, args, train_dataset=train, eval_dataset=dataset["test"],
                             data_collator=ShapleyImageCollator(image_processor=processor))
    trainer.train()

Launching on several devices (the script is the same as for one device; each process takes
``per_device_train_batch_size`` images per step, so the global batch is that times the number
of processes times ``gradient_accumulation_steps``)::

    # one node, 8 GPUs
    accelerate launch --multi_gpu --num_processes 8 --num_machines 1 train.py
    # or
    torchrun --standalone --nproc_per_node 8 train.py

    # two nodes with 8 GPUs each (run on every node; machine_rank 0 on the first)
    accelerate launch --multi_gpu --num_processes 16 --num_machines 2 \
        --machine_rank 0 --main_process_ip 10.0.0.1 --main_process_port 29500 train.py
    accelerate launch --multi_gpu --num_processes 16 --num_machines 2 \
        --machine_rank 1 --main_process_ip 10.0.0.1 --main_process_port 29500 train.py
    # or
    torchrun --nnodes 2 --nproc_per_node 8 --node_rank 0 \
        --master_addr 10.0.0.1 --master_port 29500 train.py

    # CPU only, two processes (gloo); note that `accelerate launch --cpu --num_processes 2`
    # silently runs ONE process
    accelerate launch --multi_gpu --num_processes 2 --num_machines 1 \
        --mixed_precision no --dynamo_backend no train.py

Per-image normalization of the Shapley loss makes the objective a mean of per-image terms, so
one step on a batch of 8 equals two accumulated steps on batches of 4 and two processes with
4 images each (``tests/test_trainer.py`` and ``tests/test_distributed.py`` check both; the
latter fixes the data order with ``train_sampling_strategy="sequential"``: Accelerate shards
the Trainer's DataLoader by batches, so rank r takes the r-th batch of each round and every
step's global batch is the same rows as in one process).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn
from transformers import TrainerCallback, TrainingArguments
from transformers.utils import logging

from ..models.configuration_shapley import OBJECTIVE_SETTINGS, ShapleyConfig
from ..models.image_loading import to_rgb
from .checkpoint_loading import ConvertedCheckpointLoading
from .regression_proxy import classifier_regression_proxy, evaluation_coalitions

logger = logging.get_logger(__name__)

# Objective settings of ShapleyConfig that ShapleyTrainingArguments can override: derived from
# the config's declaration (configuration_shapley.OBJECTIVE_SETTINGS), in its order.
OBJECTIVE_FIELDS = tuple(setting.name for setting in OBJECTIVE_SETTINGS)
# Loss components the model returns in training mode, logged next to `loss`.
LOSS_COMPONENTS = ("cls_loss", "distill_loss", "shapley_loss", "consistency_loss")
# Written beside every checkpoint (training_args.bin is a pickle torch.load refuses by default).
SHAPLEY_ARGS_NAME = "shapley_training_args.json"
TRAINING_ARGS_JSON_NAME = "training_args.json"
EXAMPLE_INDEX_COLUMN = "example_index"


# --------------------------------------------------------------------------------------
# Arguments
# --------------------------------------------------------------------------------------


_KEEP_CONFIG = " None (default) keeps the model config's value."


def _objective_arguments() -> type:
    """A dataclass with one ``<type> | None = None`` field per objective setting, in the config's
    order, with the setting's help text: the override fields of ShapleyTrainingArguments."""
    cls = dataclasses.make_dataclass(
        "ShapleyObjectiveArguments",
        [
            (
                setting.name,
                setting.type | None,
                field(default=None, metadata={"help": setting.help + _KEEP_CONFIG}),
            )
            for setting in OBJECTIVE_SETTINGS
        ],
    )
    cls.__module__ = __name__
    cls.__doc__ = (
        "Overrides of the objective settings of ``ShapleyConfig`` (generated from "
        "``configuration_shapley.OBJECTIVE_SETTINGS``)."
    )
    return cls


ShapleyObjectiveArguments = _objective_arguments()


@dataclass
class ShapleyTrainingArguments(ShapleyObjectiveArguments, TrainingArguments):
    """``TrainingArguments`` plus the joint objective's settings.

    The objective fields (``OBJECTIVE_FIELDS``) are generated from the settings
    ``ShapleyConfig`` declares (``hf_shapley.models.configuration_shapley.OBJECTIVE_SETTINGS``): one
    field per setting, same name, typed ``<type> | None``, with the config's help text. Every
    one defaults to ``None``, which keeps the model's ``ShapleyConfig`` value; a field that is
    set is checked here by the config's own rule, overrides the config when the trainer is built
    (where combinations are checked) and is written back into ``model.config`` (so the saved
    ``config.json`` records how the model was trained) and into ``shapley_training_args.json``
    beside every checkpoint. See :class:`~hf_shapley.ShapleyConfig` for their meaning.

    Defaults that differ from ``TrainingArguments``: ``remove_unused_columns=False`` (image
    data sets keep their ``image`` column for a transform or the collator).

    Args:
        eval_num_shapley_coalitions (`int`, defaults to 16):
            Kernel coalitions per image (complementary pairs; even) for the evaluation metric
            ``shapley_regression_proxy``; 0 turns the metric off.
        eval_coalition_seed (`int`, defaults to 12345):
            Seed of those coalitions: fixed, so the proxy of two checkpoints is computed on the
            same coalitions.
        frozen_pass_cache_gb (`float`, defaults to 2.0):
            With ``reuse_shapley_coalitions`` (a frozen classifier), CPU memory for each
            training image's full pass (``FullPassCache``: what the head reads, the logits,
            ``v(empty)``), kept after the first epoch so that later epochs train the head
            without the classifier. Past the budget nothing is kept; 0 turns it off. Not an
            objective setting: the weights are the same either way.
    """

    remove_unused_columns: bool = field(
        default=False,
        metadata={
            "help": "Remove data set columns the model's forward does not take. False by default "
            "for image data: a set_transform or the collator needs the raw image column."
        },
    )
    eval_num_shapley_coalitions: int = field(
        default=16,
        metadata={
            "help": "Kernel coalitions per image for the eval metric shapley_regression_proxy "
            "(even; 0 turns it off)."
        },
    )
    eval_coalition_seed: int = field(
        default=12345, metadata={"help": "Seed of the evaluation coalitions."}
    )
    frozen_pass_cache_gb: float = field(
        default=2.0,
        metadata={
            "help": "With reuse_shapley_coalitions (a frozen classifier): keep each training "
            "image's full pass (what the head reads, logits, v(empty)) in CPU memory after the "
            "first epoch, up to this many GB in all (the main job: 1.3 GB); past it nothing is "
            "kept and every epoch recomputes. 0 turns it off."
        },
    )

    def __post_init__(self):
        super().__post_init__()
        self._check_fields()

    def _check_fields(self) -> None:
        """Each set objective field by the config's rule; combinations are checked against the
        model config when the trainer is built."""
        for setting in OBJECTIVE_SETTINGS:
            value = getattr(self, setting.name)
            if value is not None:
                setting.check(value, owner="ShapleyTrainingArguments.")
        m = self.eval_num_shapley_coalitions
        if not _is_int(m) or m < 0 or m % 2:
            raise ValueError(
                f"ShapleyTrainingArguments.eval_num_shapley_coalitions={m!r}: must be a "
                "non-negative even int (0 = off)."
            )
        gb = self.frozen_pass_cache_gb
        if not isinstance(gb, (int, float)) or isinstance(gb, bool) or not gb >= 0:
            raise ValueError(
                f"ShapleyTrainingArguments.frozen_pass_cache_gb={gb!r}: must be a number >= 0 "
                "(GB of CPU memory; 0 = off)."
            )
        if self.label_smoothing_factor:
            raise ValueError(
                "ShapleyTrainingArguments.label_smoothing_factor must be 0: the model computes "
                "its joint loss itself, and the Trainer's label smoother would replace it by "
                "plain cross-entropy."
            )

    def shapley_overrides(self) -> dict[str, Any]:
        """The objective fields that are set (not ``None``): what overrides the model config."""
        return {
            name: getattr(self, name)
            for name in OBJECTIVE_FIELDS
            if getattr(self, name) is not None
        }

    def to_json_dict(self) -> dict[str, Any]:
        """All arguments as JSON-safe values (what ``training_args.json`` holds)."""
        return json.loads(json.dumps(self.to_dict(), default=str))


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def apply_shapley_overrides(config: ShapleyConfig, overrides: Mapping[str, Any]) -> None:
    """Write objective settings into ``config`` and validate them; on error ``config`` is unchanged."""
    unknown = set(overrides) - set(OBJECTIVE_FIELDS)
    if unknown:
        raise ValueError(f"Not objective settings: {sorted(unknown)}; use {OBJECTIVE_FIELDS}.")
    previous = {name: getattr(config, name) for name in overrides}
    for name, value in overrides.items():
        setattr(config, name, value)
    try:
        config.validate_shapley_options()
    except ValueError as error:
        for name, value in previous.items():
            setattr(config, name, value)
        raise ValueError(
            f"ShapleyTrainingArguments {dict(overrides)} give an invalid model config: {error}"
        ) from error


# --------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------


class _IndexedDataset(torch.utils.data.Dataset):
    """A map-style data set of dicts, with each item's position added as ``example_index``."""

    def __init__(self, dataset: Any, column: str):
        self.dataset, self.column = dataset, column

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = self.dataset[index]
        if not isinstance(item, Mapping):
            raise TypeError(
                f"add_example_index needs items that are dicts; got {type(item).__name__}."
            )
        return {**item, self.column: int(index)}


def add_example_index(dataset: Any, column: str = EXAMPLE_INDEX_COLUMN, *, overwrite: bool = False):
    """Add a stable ``example_index`` column: each row's index in ``dataset`` as given.

    The training coalitions are keyed by it, so it must identify an example for the whole run:
    add it once, to the data set the Trainer will see, *before* shuffling or selecting (a
    column travels with its row) and before ``set_transform``/``with_transform`` (whose
    function must then keep the column: return the batch dict with ``pixel_values`` added
    rather than a new dict).

    Args:
        dataset: a ``datasets.Dataset``, a ``datasets.DatasetDict`` (each split numbered from
            0) or a map-style torch data set whose items are dicts (wrapped).
        column: name of the column.
        overwrite: replace an existing column of that name instead of raising.
    """
    import datasets

    if isinstance(dataset, datasets.DatasetDict):
        return datasets.DatasetDict(
            {
                name: add_example_index(split, column, overwrite=overwrite)
                for name, split in dataset.items()
            }
        )
    if isinstance(dataset, datasets.Dataset):
        if column in dataset.column_names:
            if not overwrite:
                raise ValueError(
                    f"The data set already has a {column!r} column; pass overwrite=True to renumber it."
                )
            dataset = dataset.remove_columns(column)
        return dataset.add_column(column, np.arange(len(dataset), dtype=np.int64))
    if isinstance(dataset, torch.utils.data.IterableDataset) or not hasattr(dataset, "__len__"):
        raise TypeError(
            "add_example_index needs a map-style data set (with __len__); for a streaming data "
            f"set, yield a unique, stable integer {column!r} with every example."
        )
    return _IndexedDataset(dataset, column)


@dataclass
class ShapleyImageCollator:
    """Batches image-classification examples for :class:`ShapleyTrainer`.

    Returns ``{"pixel_values": (B, C, H, W) float, "labels": (B,) long, "example_index": (B,)
    long}``; keys absent from the examples are left out and every other column is dropped.

    ``pixel_values`` come from a ``pixel_values`` entry of each example (tensor, array or
    nested list, e.g. made by a ``set_transform``) or, when the examples have none, from
    ``image_processor`` applied to ``image_column``. PIL images are converted to 8-bit RGB
    first by :func:`hf_shapley.models.image_loading.to_rgb`, the conversion ``load_rgb_image`` (and so
    the explanation pipeline) applies: 16-bit and 32-bit images are scaled from their range
    (PIL's own ``convert`` clips them) and transparent pixels are composited over white.

    Args:
        image_processor: an image processor (e.g. ``ViTImageProcessor``), used only when the
            examples carry no ``pixel_values``.
        image_column: the column with the images.
        label_column: the column with the labels; default ``"labels"``, else ``"label"``.
        index_column: the column with the example indices (see :func:`add_example_index`).
    """

    image_processor: Any = None
    image_column: str = "image"
    label_column: str | None = None
    index_column: str = EXAMPLE_INDEX_COLUMN

    def __call__(self, features: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        if not features:
            raise ValueError("ShapleyImageCollator got an empty list of examples.")
        first = features[0]
        batch: dict[str, torch.Tensor] = {}
        if "pixel_values" in first:
            batch["pixel_values"] = torch.stack(
                [
                    torch.as_tensor(np.asarray(f["pixel_values"]), dtype=torch.float32)
                    for f in features
                ]
            )
        elif self.image_column in first and self.image_processor is not None:
            images = [_rgb_if_pil(f[self.image_column]) for f in features]
            batch["pixel_values"] = self.image_processor(images, return_tensors="pt")[
                "pixel_values"
            ]
        else:
            raise ValueError(
                f"Examples need 'pixel_values', or an {self.image_column!r} column and an "
                f"image_processor; got keys {sorted(first)}."
            )
        label_column = self.label_column or ("labels" if "labels" in first else "label")
        if label_column in first and first[label_column] is not None:
            batch["labels"] = torch.as_tensor(
                [int(f[label_column]) for f in features], dtype=torch.long
            )
        if self.index_column in first:
            batch["example_index"] = torch.as_tensor(
                [int(f[self.index_column]) for f in features], dtype=torch.long
            )
        return batch


def _rgb_if_pil(image: Any) -> Any:
    """PIL images as 8-bit RGB (package conversion); arrays and tensors go to the processor as is."""
    return to_rgb(image) if isinstance(image, Image.Image) else image


# --------------------------------------------------------------------------------------
# Trainer
# --------------------------------------------------------------------------------------


class ShapleyProgressCallback(TrainerCallback):
    """Records the epoch the training loop is running, for :meth:`ShapleyTrainer.compute_loss`.

    The loop hands its epoch counter to no public hook, so it is counted here: the first
    ``on_epoch_begin`` of a ``train()`` call starts from ``floor(state.epoch)`` (0 on a fresh
    run; on resume, the epoch the checkpoint's step falls in, which is where the loop resumes),
    each later one adds 1. ``epoch`` is ``None`` outside ``train()``. :class:`ShapleyTrainer` adds one itself. (The optimizer
    step needs no callback: ``state.global_step`` is the number of optimizer steps already
    taken while every micro-batch of a step is computed.)
    """

    def __init__(self) -> None:
        self.epoch: int | None = None

    def on_train_begin(self, args, state, control, **kwargs):
        self.epoch = None

    def on_epoch_begin(self, args, state, control, **kwargs):
        if self.epoch is None:
            self.epoch = int(math.floor(state.epoch or 0.0))
        else:
            self.epoch += 1

    def on_train_end(self, args, state, control, **kwargs):
        self.epoch = None


class ShapleyTrainer(ConvertedCheckpointLoading):
    """``Trainer`` for :class:`~hf_shapley.ShapleyForImageClassification`.

    Takes the usual ``Trainer`` arguments; ``args`` should be :class:`ShapleyTrainingArguments`
    (plain ``TrainingArguments`` work too, without overrides). The data collator defaults to
    :class:`ShapleyImageCollator` with ``processing_class`` as its image processor.

    What it adds to ``Trainer``:

    * objective settings from the arguments are written into ``model.config`` and validated;
    * ``compute_loss`` passes ``example_index``, ``epoch`` and ``global_step`` (the optimizer
      step, for the loss warm-up) to the model in training mode; the epoch comes from a
      :class:`ShapleyProgressCallback`, the step from ``state.global_step``;
    * logs ``cls_loss``, ``distill_loss``, ``shapley_loss``, ``consistency_loss``;
    * evaluation metrics ``accuracy`` and ``shapley_regression_proxy`` (needs labels), in the
      logs and in what ``evaluate`` and ``predict`` return; ``shapley_values`` and
      ``base_values`` are never gathered (the config's ``keys_to_ignore_at_inference``), nor are
      the scalar loss components, so predictions are the ``(N, K)`` logits;
    * ``shapley_training_args.json`` and ``training_args.json`` beside every saved model.

    Training examples must carry ``example_index`` (see the module docstring).
    """

    #: Loss components the model returns in training mode, logged next to ``loss``.
    loss_components: tuple[str, ...] = LOSS_COMPONENTS
    #: The config's objective settings, recorded in ``shapley_training_args.json``.
    objective_fields: tuple[str, ...] = OBJECTIVE_FIELDS
    #: The per-image evaluation metric ``shapley_regression_proxy`` of this model family.
    regression_proxy = staticmethod(classifier_regression_proxy)

    def __init__(
        self, model: nn.Module | None = None, args: TrainingArguments | None = None, *a, **kw
    ):
        if kw.get("compute_loss_func") is not None:
            raise ValueError(
                "ShapleyTrainer does not take compute_loss_func: the model computes its joint loss."
            )
        if kw.get("data_collator") is None and len(a) == 0:
            processor = kw.get("processing_class")
            kw["data_collator"] = ShapleyImageCollator(
                image_processor=processor if _is_image_processor(processor) else None
            )
        super().__init__(model, args, *a, **kw)
        if self.args.label_smoothing_factor:
            raise ValueError(
                "ShapleyTrainer needs label_smoothing_factor=0 (the model owns its loss)."
            )
        self.progress = ShapleyProgressCallback()
        self.add_callback(self.progress)
        # Per-mode metric stores of running sums (constant memory, however long the logging
        # window), filled by compute_loss and emptied by log (and predict).
        self._metrics: dict[str, defaultdict[str, Any]] = {
            "train": defaultdict(float),
            "eval": defaultdict(float),
        }
        # Metric prefix of the evaluate/predict call in progress; None outside them.
        self._eval_prefix: str | None = None
        self._eval_position = 0
        if self.model is not None:
            self._apply_overrides(self.model)

    # ------------------------------------------------------------------ configuration
    def _shapley_model(self, model: nn.Module | None = None) -> nn.Module:
        unwrapped = self.accelerator.unwrap_model(model if model is not None else self.model)
        # Duck-typed: a model loaded with trust_remote_code has its own copy of ShapleyConfig.
        config = getattr(unwrapped, "config", None)
        if getattr(config, "model_type", None) != ShapleyConfig.model_type or not hasattr(
            config, "validate_shapley_options"
        ):
            raise TypeError(
                "ShapleyTrainer trains a ShapleyForImageClassification (a model whose config is a "
                f"ShapleyConfig); got {type(unwrapped).__name__}."
            )
        return unwrapped

    def _apply_overrides(self, model: nn.Module) -> None:
        shapley_model = self._shapley_model(model)
        config = shapley_model.config
        cache = getattr(shapley_model, "full_pass_cache", None)  # absent in older remote code
        if cache is not None:
            gb = getattr(self.args, "frozen_pass_cache_gb", 0.0)
            cache.max_bytes = int(gb * 2**30)
        overrides = (
            self.args.shapley_overrides() if isinstance(self.args, ShapleyTrainingArguments) else {}
        )
        if overrides:
            apply_shapley_overrides(config, overrides)
        else:
            config.validate_shapley_options()

    def call_model_init(self, trial=None):
        model = super().call_model_init(trial)
        self._apply_overrides(model)
        return model

    # ------------------------------------------------------------------ training
    def current_epoch(self) -> int:
        """The epoch being trained (see :class:`ShapleyProgressCallback`), else ``floor(state.epoch)``."""
        if self.progress.epoch is not None:
            return self.progress.epoch
        return int(math.floor(self.state.epoch or 0.0))

    def compute_loss(
        self,
        model: nn.Module,
        inputs: dict[str, Any],
        return_outputs: bool = False,
        num_items_in_batch: torch.Tensor | int | None = None,
    ):
        """The model's own loss: the joint objective in training mode, cross-entropy in eval mode.

        In training mode the model also gets ``epoch`` and ``global_step``. ``num_items_in_batch``
        is ignored: every term is a mean of per-image terms, and the Trainer divides it by the
        accumulation steps (the model sets ``accepts_loss_kwargs = False``).
        """
        unwrapped = self._shapley_model(model)
        inputs = dict(inputs)
        if unwrapped.training:
            if inputs.get("example_index") is None and "labels" in inputs:
                raise ValueError(
                    "ShapleyTrainer needs an 'example_index' in every training batch: the "
                    "coalitions are keyed by it, so that resumed and multi-process runs draw the "
                    "same ones. Add the column with hf_shapley.training.trainer.add_example_index(dataset) "
                    "and keep it through your transform (ShapleyImageCollator passes it on)."
                )
            inputs["epoch"] = self.current_epoch()
            # Optimizer steps already taken: the same for every micro-batch of an accumulation.
            inputs["global_step"] = int(self.state.global_step)
        else:
            inputs.pop("epoch", None)
            inputs.pop("global_step", None)
        outputs = model(**inputs)
        loss = outputs["loss"] if isinstance(outputs, Mapping) else outputs[0]
        if unwrapped.training:
            self._store_loss_components(outputs)
        elif self._eval_prefix is not None:
            self._store_eval_metrics(model, inputs, outputs)
        return (loss, outputs) if return_outputs else loss

    def _store_loss_components(self, outputs: Any) -> None:
        values = [
            (outputs.get(name) if isinstance(outputs, Mapping) else None)
            for name in self.loss_components
        ]
        if any(v is None for v in values):
            return
        # Summed on the device (no sync per step); averaged across processes in log().
        store = self._metrics["train"]
        for name, value in zip(self.loss_components, values, strict=True):
            store[name] = store[name] + value.detach().float().reshape(())
        store["count"] += 1

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """Add the stored metrics to ``logs`` (in place, so that ``evaluate`` returns them too).

        Training logs (the periodic ones with ``loss``, which every process reaches together)
        get the loss components averaged over the window and across processes; the log of an
        ``evaluate`` call gets ``<prefix>_accuracy`` and ``<prefix>_shapley_regression_proxy``.
        """
        if "loss" in logs:
            logs.update(self._flush_train_metrics())
        elif self._eval_prefix is not None:
            self._flush_eval_metrics(logs, self._eval_prefix)
        super().log(logs, start_time)

    def _flush_train_metrics(self) -> dict[str, float]:
        store = self._metrics["train"]
        sums = torch.zeros(len(self.loss_components) + 1, device=self.args.device)
        if store["count"]:
            sums[:-1] = torch.stack([store[name].to(sums.device) for name in self.loss_components])
        sums[-1] = store["count"]
        # Every process gathers, also one that ran no micro-batch in this window.
        totals = self.accelerator.gather(sums[None]).sum(0).cpu()
        store.clear()
        total_count = float(totals[-1])
        if total_count <= 0:
            return {}
        return {
            name: total / total_count
            for name, total in zip(self.loss_components, totals[:-1].tolist(), strict=True)
        }

    # ------------------------------------------------------------------ evaluation
    def evaluate(
        self,
        eval_dataset=None,
        ignore_keys: list[str] | None = None,
        metric_key_prefix: str = "eval",
    ) -> dict[str, float]:
        """``Trainer.evaluate``, plus ``<prefix>_accuracy`` and ``<prefix>_shapley_regression_proxy``.

        Both are computed per batch in ``compute_loss`` from per-image values gathered with
        ``gather_for_metrics`` (duplicates that pad the last batch across processes are
        dropped), so no ``(N, P, K)`` tensor is gathered; ``log`` adds them to the metrics this
        returns. Public override: it names the prefix the metrics are stored under.
        """
        with self._evaluating(metric_key_prefix):
            return super().evaluate(eval_dataset, ignore_keys, metric_key_prefix)

    def predict(self, test_dataset, ignore_keys: list[str] | None = None, metric_key_prefix="test"):
        """``Trainer.predict``, with the metrics of :meth:`evaluate` (``predict`` does not log)."""
        with self._evaluating(metric_key_prefix):
            output = super().predict(test_dataset, ignore_keys, metric_key_prefix)
            self._flush_eval_metrics(output.metrics, metric_key_prefix)
        return output

    @contextlib.contextmanager
    def _evaluating(self, prefix: str):
        previous = self._eval_prefix
        self._eval_prefix = prefix
        self._metrics["eval"].clear()
        self._eval_position = 0
        try:
            yield
        finally:
            self._eval_prefix = previous
            self._metrics["eval"].clear()

    def _flush_eval_metrics(self, metrics: dict[str, Any], prefix: str) -> None:
        store = self._metrics["eval"]
        if store["labelled"] > 0:
            # A compute_metrics "accuracy" comes first.
            metrics.setdefault(f"{prefix}_accuracy", store["correct"] / store["labelled"])
        if store["explained"] > 0:
            metrics[f"{prefix}_shapley_regression_proxy"] = store["proxy"] / store["explained"]
        store.clear()

    def prediction_step(
        self,
        model: nn.Module,
        inputs: dict[str, Any],
        prediction_loss_only: bool,
        ignore_keys: list[str] | None = None,
    ):
        if ignore_keys is None:
            config = getattr(self.accelerator.unwrap_model(self.model), "config", None)
            ignore_keys = list(getattr(config, "keys_to_ignore_at_inference", None) or [])
        # The eval-mode forward also returns cls_loss (= loss); a 0-d tensor must not join the
        # gathered predictions, which then are the (N, K) logits alone.
        ignore_keys = list(dict.fromkeys([*ignore_keys, *self.loss_components]))
        return super().prediction_step(model, inputs, prediction_loss_only, ignore_keys=ignore_keys)

    @torch.no_grad()
    def _store_eval_metrics(self, model: nn.Module, inputs: dict[str, Any], outputs: Any) -> None:
        store = self._metrics["eval"]
        self._store_prediction_metrics(store, inputs, outputs)
        m = getattr(self.args, "eval_num_shapley_coalitions", 16)  # plain TrainingArguments: 16
        if not m:
            return
        pixel_values = inputs["pixel_values"]
        batch_size = pixel_values.shape[0]
        example_index = inputs.get("example_index")
        if example_index is None:
            # No index column: this process's running position stands in (still deterministic).
            example_index = torch.arange(batch_size) + self._eval_position
            example_index = example_index + self.args.process_index * (1 << 40)
        self._eval_position += batch_size
        unwrapped = self._shapley_model(model)
        seed = getattr(self.args, "eval_coalition_seed", 12345)
        masks = evaluation_coalitions(
            unwrapped.num_players, m, seed, example_index, pixel_values.device
        )
        per_image = self.regression_proxy(model, unwrapped, pixel_values, outputs, masks)
        if per_image is None:
            return
        per_image = self.accelerator.gather_for_metrics(per_image)
        store["proxy"] += float(per_image.sum())
        store["explained"] += per_image.numel()

    def _store_prediction_metrics(self, store, inputs: dict[str, Any], outputs: Any) -> None:
        labels = inputs.get("labels")
        if labels is not None:
            correct = (outputs["logits"].argmax(-1) == labels).float()
            correct = self.accelerator.gather_for_metrics(correct)
            store["correct"] += float(correct.sum())
            store["labelled"] += correct.numel()

    # ------------------------------------------------------------------ saving
    # A private override on purpose: every branch of the public save_model (plain, FSDP,
    # DeepSpeed, SageMaker) and every checkpoint (_save_checkpoint -> save_model) writes the
    # model directory through _save on the saving process. Overriding save_model instead would
    # write these files after save_model's own push to the Hub (args.push_to_hub), which would
    # then leave them out; the public on_save callback fires for checkpoints only.
    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        super()._save(output_dir, state_dict=state_dict)
        output_dir = output_dir if output_dir is not None else self.args.output_dir
        if not self.args.should_save:
            return
        config = self.accelerator.unwrap_model(self.model).config
        write_training_arguments(self.args, config, self.objective_fields, output_dir)


def write_training_arguments(
    args: TrainingArguments, config: Any, objective_fields: Sequence[str], output_dir: str
) -> None:
    """``shapley_training_args.json`` (the objective as trained, the overrides given, the
    evaluation proxy's settings) and ``training_args.json`` (``training_args.bin`` is a pickle
    that ``torch.load`` refuses by default) in ``output_dir``."""
    shapley_args = {
        "overrides": (
            args.shapley_overrides() if isinstance(args, ShapleyTrainingArguments) else {}
        ),
        "objective": {name: getattr(config, name) for name in objective_fields},
        "eval_num_shapley_coalitions": getattr(args, "eval_num_shapley_coalitions", None),
        "eval_coalition_seed": getattr(args, "eval_coalition_seed", None),
        "hf_shapley_version": getattr(config, "hf_shapley_version", None),
    }
    _write_json(os.path.join(output_dir, SHAPLEY_ARGS_NAME), shapley_args)
    _write_json(
        os.path.join(output_dir, TRAINING_ARGS_JSON_NAME),
        json.loads(json.dumps(args.to_dict(), default=str)),
    )


def _write_json(path: str, data: Any) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2, sort_keys=True)
        f.write("\n")


def _is_image_processor(processor: Any) -> bool:
    from transformers.image_processing_base import ImageProcessingMixin

    return isinstance(processor, ImageProcessingMixin)


def shapley_training_args_from_json(path: str | os.PathLike) -> dict[str, Any]:
    """Read ``shapley_training_args.json`` (a checkpoint directory or the file itself)."""
    path = os.fspath(path)
    if os.path.isdir(path):
        path = os.path.join(path, SHAPLEY_ARGS_NAME)
    with open(path, encoding="utf-8") as f:
        return json.load(f)


__all__ = [
    "OBJECTIVE_FIELDS",
    "ShapleyImageCollator",
    "ShapleyTrainer",
    "ShapleyTrainingArguments",
    "add_example_index",
    "apply_shapley_overrides",
    "shapley_training_args_from_json",
]
