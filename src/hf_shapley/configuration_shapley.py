"""Configuration of :class:`ShapleyForImageClassification`.

One config describes the whole self-explaining model: the wrapped backbone (a nested
``backbone_config``), the players of the Shapley game (``players_grid``), the Shapley head,
the prediction mode, and the joint training objective. Objective settings live here, not in
the trainer, so that a model trained with a plain Accelerate loop records how it was trained
in its own ``config.json``.

This file is shipped as remote code: relative imports only.
"""

from __future__ import annotations

import sys

from transformers import AutoConfig, PreTrainedConfig
from transformers.configuration_utils import SubConfigSpec

PREDICTION_MODES = ("shapley_sum", "backbone_head")
LOSS_NORMALIZATIONS = ("per_image", "none")
EXPLAINED_CLASSES = ("all", "label", "top")

# Version of the hf-shapley code that wrote a config; written into every saved config.json
# beside transformers' own `transformers_version`. Kept here (not in __init__) because this
# file must import on its own as remote code.
HF_SHAPLEY_VERSION = "0.1.0.dev0"

# The explanation pipeline every saved model carries as remote code (config.json's
# "custom_pipelines"; the file is copied beside the model files by save_pretrained).
PIPELINE_TASK = "image-shapley-explanation"
PIPELINE_MODULE = "pipeline_shapley"
CUSTOM_PIPELINES = {
    PIPELINE_TASK: {
        "impl": f"{PIPELINE_MODULE}.ImageShapleyExplanationPipeline",
        # `pt` must name a class transformers itself has (it is looked up there on load).
        "pt": ["AutoModelForImageClassification"],
        "type": "image",
    }
}


def _drop_locally_registered_pipelines(kwargs: dict) -> None:
    """Forget ``custom_pipelines`` entries whose task this process already registered.

    transformers' ``pipeline(task, model=...)`` demands ``trust_remote_code=True`` for any
    task listed in the loaded config's ``custom_pipelines``, even when ``import hf_shapley``
    registered that task with the installed code. Dropping the entry on load lets the
    registered pipeline serve the task; ``save_pretrained`` writes the entry again. In a
    process without the package nothing registered the task, so remote code keeps it.
    """
    custom = kwargs.get("custom_pipelines")
    pipelines_module = sys.modules.get("transformers.pipelines")
    if not custom or pipelines_module is None:
        return
    registered = pipelines_module.PIPELINE_REGISTRY.supported_tasks
    remaining = {task: info for task, info in custom.items() if task not in registered}
    if remaining:
        kwargs["custom_pipelines"] = remaining
    else:
        kwargs.pop("custom_pipelines")


def _as_float(value):
    """Numbers as float; anything else unchanged, for validation to reject with a clear message."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return value


class ShapleyConfig(PreTrainedConfig):
    r"""Configuration of a self-explaining image classifier.

    The logits are ``base_values + shapley_values.sum(1)`` where ``shapley_values`` holds one
    value per player and class, and a joint objective trains those values to be the Shapley
    values of the model's own masked predictions (Fan, Yang and Ma, AAAI 2026).

    Args:
        backbone_config (`dict` or `PreTrainedConfig`, *optional*):
            Config of the wrapped vision backbone: a token-removal family (ViT, DeiT, DINOv2,
            DINOv2 with registers) or a pixel-baseline family (ResNet, ConvNeXt, Swin).
            Defaults to a ViT-Base config.
        players_grid (`tuple[int, int]`, *optional*):
            ``(h, w)``: the token grid is split into ``h x w`` players, each a rectangular group
            of tokens that is present or absent as a whole. Must divide the backbone's token grid.
            Defaults to the token grid itself (every patch token is a player). A model explains
            only the grid it was trained on: Shapley values do not add up under regrouping.
            For the pixel-baseline families the grid is the final feature map's (ResNet-50 at
            224 px: 7 x 7) and a player is the block of pixels under its cells.
        image_size (`tuple[int, int]`, *optional*):
            Pixel-baseline families only: the input size, which fixes the final feature grid
            and the players' pixel blocks. Defaults to the backbone config's ``image_size``
            (ConvNeXt, Swin), else 224 (ResNet configs have none). Token-removal families take
            the backbone config's and reject another value.
        pixel_baseline (`float` or `list[float]`, *optional*, defaults to 0.0):
            Pixel-baseline families only: the value an absent player's pixels take, in the
            normalized space the model reads (0 = the data mean with the usual normalization),
            one value for all channels or one per channel. ``v(empty)`` is the model on the
            all-baseline image, so ``base_values`` depend on it.
        center_votes (`bool`, *optional*):
            Soft voting only: subtract each player's mean over classes from its votes, which
            removes from the model the class-common direction of the logits that neither
            cross-entropy nor distillation can see (predictions are unchanged). Without it a
            pixel-baseline game is dominated by that direction. Defaults to `True` for the
            pixel-baseline families and `False` for the token-removal ones (see
            benchmarks/results/recipe.md).
        head_hidden_size (`int`, *optional*, defaults to 0):
            Hidden width of the per-token Shapley head; 0 gives a linear head.
        head_dropout (`float`, *optional*, defaults to 0.0):
            Dropout on the token features before the Shapley head.
        prediction_mode (`str`, *optional*, defaults to `"shapley_sum"`):
            ``"shapley_sum"``: logits are the base value plus the sum of the players' values
            (soft voting). ``"backbone_head"``: the wrapped classifier's own head gives the
            logits and the Shapley head is an auxiliary explainer of it.
        train_backbone (`bool`, *optional*, defaults to `True`):
            With ``prediction_mode="backbone_head"`` and ``False``, the backbone and its
            classifier are frozen and predictions stay bit-identical to the original model.
        classifier_in_features (`int`, *optional*):
            Input width of the wrapped classifier head in ``backbone_head`` mode (set by
            ``from_backbone``).
        num_shapley_coalitions (`int`, *optional*, defaults to 8):
            ``m``: coalitions per image for the Shapley regression, drawn from the Shapley kernel
            in complementary pairs (must be even).
        num_distill_coalitions (`int`, *optional*, defaults to 2):
            ``g``: coalitions per image, with uniformly distributed sizes, on which the model is
            distilled towards its own detached full-image prediction (these carry gradients).
            They are drawn as complementary pairs that share one packed sequence, so 2 cost
            the same as 1 (measured: benchmarks/results/train_cost_bf16_b64_h100.md).
        shapley_loss_weight (`float`, *optional*, defaults to 1.0):
            ``lambda``: weight of the Shapley regression loss.
        distill_loss_weight (`float`, *optional*, defaults to 1.0):
            ``alpha``: weight of the masked distillation loss.
        loss_warmup_steps (`int`, *optional*, defaults to 0):
            Steps over which ``alpha`` and ``lambda`` ramp linearly from 0 to their values.
        shapley_stop_gradient (`bool`, *optional*, defaults to `True`):
            Detach the regression targets ``v(S) - v(empty)``.
        shapley_loss_normalization (`str`, *optional*, defaults to `"per_image"`):
            ``"per_image"`` divides each image's mean squared residual by the detached mean
            square of its targets (same gradients under gradient accumulation and across
            processes); ``"none"`` uses the raw mean squared residual.
        center_logits (`bool`, *optional*, defaults to `False`):
            Explain class-centered logits (logits minus their mean over classes), removing the
            one direction cross-entropy cannot see.
        explained_classes (`str`, *optional*, defaults to `"all"`):
            Classes the regression covers each step: ``"all"``, ``"label"`` (the label plus
            ``num_explained_classes - 1`` sampled others) or ``"top"`` (the top predictions).
        num_explained_classes (`int`, *optional*):
            Number of classes per image when ``explained_classes`` is not ``"all"``.
        coalition_batch_size (`int`, *optional*, defaults to 64):
            Packed sequences (one per pair of complementary coalitions) per backbone call when
            evaluating coalitions; bounds the memory of ``model(..., coalition=mask)``.
        coalition_seed (`int`, *optional*, defaults to 0):
            Seed of the training coalitions, which are a pure function of
            ``(seed, epoch, example index, coalition index)`` so that resumed and multi-process
            runs draw the same coalitions.
    """

    model_type = "shapley"
    sub_configs_defaults = {
        "backbone_config": SubConfigSpec(config_class=AutoConfig, model_type="vit"),
    }
    # Per-player tensors are (N, P, K): never gather them during Trainer evaluation. The eval
    # forward also returns the 0-d cls_loss, which would turn predictions into a tuple.
    keys_to_ignore_at_inference = [
        "shapley_values",
        "base_values",
        "cls_loss",
        "distill_loss",
        "shapley_loss",
    ]

    backbone_config: dict | PreTrainedConfig | None = None
    players_grid: list[int] | tuple[int, ...] | None = None
    image_size: list[int] | tuple[int, ...] | None = None
    pixel_baseline: float | list[float] = 0.0
    center_votes: bool | None = None
    head_hidden_size: int = 0
    head_dropout: float = 0.0
    prediction_mode: str = "shapley_sum"
    train_backbone: bool = True
    classifier_in_features: int | None = None
    num_shapley_coalitions: int = 8
    num_distill_coalitions: int = 2
    shapley_loss_weight: float = 1.0
    distill_loss_weight: float = 1.0
    loss_warmup_steps: int = 0
    shapley_stop_gradient: bool = True
    shapley_loss_normalization: str = "per_image"
    center_logits: bool = False
    explained_classes: str = "all"
    num_explained_classes: int | None = None
    coalition_batch_size: int = 64
    coalition_seed: int = 0
    initializer_range: float = 0.02
    hf_shapley_version: str = HF_SHAPLEY_VERSION

    def __post_init__(self, **kwargs):
        _drop_locally_registered_pipelines(kwargs)
        super().__post_init__(**kwargs)
        if self.players_grid is not None:
            self.players_grid = [int(s) for s in self.players_grid]
        if isinstance(self.image_size, int):
            self.image_size = [self.image_size, self.image_size]
        if self.image_size is not None:
            self.image_size = [int(s) for s in self.image_size]
        if isinstance(self.pixel_baseline, (list, tuple)):
            self.pixel_baseline = [_as_float(v) for v in self.pixel_baseline]
        else:
            self.pixel_baseline = _as_float(self.pixel_baseline)
        self.validate_shapley_options()

    def validate_shapley_options(self) -> None:
        """Check the Shapley options; raise ``ValueError`` saying what to change."""
        if self.prediction_mode not in PREDICTION_MODES:
            raise ValueError(
                f"prediction_mode={self.prediction_mode!r} is not supported; use one of {PREDICTION_MODES}."
            )
        if self.players_grid is not None:
            if len(self.players_grid) != 2 or min(self.players_grid) < 1:
                raise ValueError(
                    f"players_grid must be two positive integers (rows, cols); got {self.players_grid!r}."
                )
            if self.players_grid[0] * self.players_grid[1] < 2:
                raise ValueError(
                    "players_grid=(1, 1) gives a game with a single player, whose Shapley value is "
                    "just the prediction; use a grid with at least 2 players, e.g. (2, 2)."
                )
        if self.image_size is not None and (len(self.image_size) != 2 or min(self.image_size) < 1):
            raise ValueError(
                f"image_size must be two positive integers (height, width); got {self.image_size!r}."
            )
        baseline = self.pixel_baseline
        values = baseline if isinstance(baseline, list) else [baseline]
        if not values or not all(isinstance(v, float) and abs(v) < float("inf") for v in values):
            raise ValueError(
                "pixel_baseline must be a finite number or a list of one finite number per channel; "
                f"got {baseline!r}."
            )
        if self.num_shapley_coalitions < 0 or self.num_shapley_coalitions % 2:
            raise ValueError(
                "num_shapley_coalitions must be a non-negative even number (coalitions come in "
                f"complementary pairs); got {self.num_shapley_coalitions}."
            )
        if self.num_distill_coalitions < 0:
            raise ValueError(
                f"num_distill_coalitions must be >= 0; got {self.num_distill_coalitions}."
            )
        if self.shapley_loss_normalization not in LOSS_NORMALIZATIONS:
            raise ValueError(
                f"shapley_loss_normalization={self.shapley_loss_normalization!r} is not supported; "
                f"use one of {LOSS_NORMALIZATIONS}."
            )
        if self.explained_classes not in EXPLAINED_CLASSES:
            raise ValueError(
                f"explained_classes={self.explained_classes!r} is not supported; use one of {EXPLAINED_CLASSES}."
            )
        if self.explained_classes != "all" and not self.num_explained_classes:
            raise ValueError(
                f"explained_classes={self.explained_classes!r} needs num_explained_classes (>= 1)."
            )
        if self.coalition_batch_size < 1:
            raise ValueError(f"coalition_batch_size must be >= 1; got {self.coalition_batch_size}.")

    @property
    def num_players(self) -> int | None:
        """P = h * w, or ``None`` while the grid is left to its default."""
        if self.players_grid is None:
            return None
        return self.players_grid[0] * self.players_grid[1]


__all__ = ["ShapleyConfig"]
