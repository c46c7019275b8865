"""Configuration of :class:`ShapleyForImageClassification`.

One config describes the whole self-explaining model: the wrapped backbone (a nested
``backbone_config``), the players of the Shapley game (``players_grid``), the Shapley head,
the prediction mode, and the joint training objective. Objective settings live here, not in
the trainer, so that a model trained with a plain Accelerate loop records how it was trained
in its own ``config.json``.

Each objective setting is declared once, as a field of :class:`ShapleyConfig` whose metadata
(:func:`objective_field`) holds its help text, model card label and validation rule;
:data:`OBJECTIVE_SETTINGS` lists them. ``ShapleyConfig`` validates them from it,
``hf_shapley.ShapleyTrainingArguments`` generates its override fields from it and the model card
(``hf_shapley.publishing``) takes its rows from it.

This file is shipped as remote code: relative imports only, and nothing from the training side.
"""

# No `from __future__ import annotations`: the objective settings' types are read from the field
# annotations at runtime (dataclasses.fields), so they must be types, not strings.

import math
import numbers
import sys
import textwrap
from dataclasses import dataclass, field, fields
from types import UnionType
from typing import Any, Union, get_args, get_origin

from transformers import AutoConfig, PreTrainedConfig
from transformers.configuration_utils import SubConfigSpec

PREDICTION_MODES = ("shapley_sum", "backbone_head")
LOSS_NORMALIZATIONS = ("per_image", "none")
FROZEN_GAME_DTYPES = ("float32", "bfloat16")

#: What ``from_backbone`` sets for ``prediction_mode="backbone_head"`` (a fine-tuned classifier
#: that keeps its own head) unless told otherwise. The head's losses stay out of the classifier
#: (no distillation, detached features): the Shapley head, which sees the whole image through
#: its own attention layers, learns the classifier's own game by the regression on class-centered
#: logits, weighted 10 (the signal per player of a kernel regression is weak: objective.py).
EXPLAINER_DEFAULTS: dict[str, Any] = {
    "detach_head_features": True,
    "distill_loss_weight": 0.0,
    "center_logits": True,
    "shapley_loss_weight": 10.0,
    "head_hidden_size": 256,
    "head_num_layers": 3,
}
#: Added to :data:`EXPLAINER_DEFAULTS` for the token-removal families (ViT, DeiT, DINOv2): the
#: head reads every depth of the backbone. On three frozen main-job games it lowered the pooled
#: error on each one (explainer study: mean 0.246 -> 0.229 at equal steps, about 2% more time);
#: the pixel-baseline families' stages have other resolutions.
#: With blocks whose attention it can read (ViT, DeiT; not DINOv2) the head also reads the
#: attention each patch token received: on the three main-job games of one machine it lowered
#: the pooled error on each one (mean 0.262 -> 0.247 at equal steps and time,
#: ``benchmarks/results/main_job_seeds_v10_head_attn.md``).
EXPLAINER_TOKEN_REMOVAL_DEFAULTS: dict[str, Any] = {
    "head_reads_hidden_states": True,
    "head_reads_attention": True,
}
#: Added to :data:`EXPLAINER_DEFAULTS` for the pixel-baseline families (ResNet, ConvNeXt, Swin):
#: the head reads every stage's feature map, averaged over each final cell, beside the final
#: features. On the user's road it lowered the pooled error against exact values on every
#: family and seed (``benchmarks/results/user_road/pixel_head_variants.md``). Dropped for a
#: backbone with a stage wider than its final features.
EXPLAINER_PIXEL_BASELINE_DEFAULTS: dict[str, Any] = {
    "head_reads_hidden_states": True,
}
#: Added to :data:`EXPLAINER_DEFAULTS` when the classifier is frozen (``train_backbone=False``,
#: ``from_backbone``'s default for a fine-tuned classifier): its game never changes, so each
#: image's coalition values are computed once and kept, 32 per image (with 8 kept the head learns
#: those few coalitions and not the game); fixed targets cannot collapse in scale, so the
#: regression is unnormalized and weighs images as the pooled error does (explainer study: lower
#: pooled error and higher r than per-image normalization at equal steps). The head's learning
#: rate for this recipe is a training argument (``FROZEN_EXPLAINER_LEARNING_RATE``).
FROZEN_EXPLAINER_DEFAULTS: dict[str, Any] = {
    "reuse_shapley_coalitions": True,
    "num_shapley_coalitions": 32,
    "shapley_loss_normalization": "none",
}
#: The head's learning rate on a frozen game (explainer study: 3e-3 beat 1e-3 and 3e-4).
FROZEN_EXPLAINER_LEARNING_RATE = 3e-3
EXPLAINED_CLASSES = ("all", "label", "top")
#: Whose attention a head with ``head_reads_attention`` reads (``head_attention_from``).
HEAD_ATTENTION_FROM = ("class_and_mean", "class")

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


# --------------------------------------------------------------------------------------
# Objective settings: declared once, as ShapleyConfig fields with this metadata
# --------------------------------------------------------------------------------------

_OBJECTIVE_KEY = "hf_shapley_objective"


def objective_field(
    default: Any,
    *,
    help: str,
    label: str | None = None,
    details: str = "",
    minimum: float | None = None,
    even: bool = False,
    why: str = "",
    choices: tuple[str, ...] = (),
    needed_if: tuple[str, tuple[Any, ...]] | None = None,
) -> Any:
    """A :class:`ShapleyConfig` field that is an objective setting; arguments as in
    :class:`ObjectiveSetting` (name, type and default come from the field itself)."""
    rule = dict(
        help=help,
        label=label,
        details=details,
        minimum=minimum,
        even=even,
        why=why,
        choices=tuple(choices),
        needed_if=needed_if,
    )
    return field(default=default, metadata={_OBJECTIVE_KEY: rule})


@dataclass(frozen=True)
class ObjectiveSetting:
    """One setting of the joint training objective, as declared on :class:`ShapleyConfig`.

    ``ShapleyConfig`` validates it with :meth:`check`, ``ShapleyTrainingArguments`` offers an
    override of it (typed ``type | None``, help text ``help``) and the model card shows it in a
    row named ``label``.

    Attributes:
        name: The config field.
        type: Its value type (``int``, ``float``, ``bool`` or ``str``), from the annotation.
        default: Its default, from the field.
        optional: Whether ``None`` is allowed (the annotation admits ``None``).
        help: One line: the override's help text and the summary in the config's docstring.
        label: The model card's name of the row; ``None`` keeps the setting off the card (it
            changes only speed or memory).
        details: More documentation, for the config's docstring.
        minimum: Numbers: the smallest value allowed.
        even: Ints: must be even.
        why: The reason for the rule, given in the error message.
        choices: Strings: the values allowed.
        needed_if: ``(other setting, its values)``: the setting is used only where the other
            one has one of these values; there it must not be ``None``, and only there the
            model card shows it.
    """

    name: str
    type: type
    default: Any
    help: str
    label: str | None = None
    optional: bool = False
    details: str = ""
    minimum: float | None = None
    even: bool = False
    why: str = ""
    choices: tuple[str, ...] = ()
    needed_if: tuple[str, tuple[Any, ...]] | None = None

    def requirement(self, *, allow_none: bool | None = None) -> str:
        """What a valid value is, in words (``"a non-negative even int"``)."""
        if self.type is bool:
            text = "True or False"
        elif self.type is str:
            text = f"one of {self.choices}" if self.choices else "a string"
        elif self.type is int:
            kind = "even int" if self.even else "int"
            if self.minimum is None:
                text = f"an {kind}"
            elif self.minimum == 0:
                text = f"a non-negative {kind}"
            elif self.minimum == 1:
                text = f"a positive {kind}"
            else:
                text = f"an {kind} >= {self.minimum:g}"
        elif self.type is float:
            text = "a finite number" + ("" if self.minimum is None else f" >= {self.minimum:g}")
        else:
            text = f"a {self.type.__name__}"
        if self.optional if allow_none is None else allow_none:
            text += " or None"
        return text

    def is_valid(self, value: Any) -> bool:
        """Whether ``value`` satisfies this setting's own rule (not the ``needed_if`` one)."""
        if value is None:
            return self.optional
        if self.type is bool:
            return isinstance(value, bool)
        if self.type is str:
            return isinstance(value, str) and (not self.choices or value in self.choices)
        if isinstance(value, bool):
            return False
        if self.type is int:
            if not isinstance(value, numbers.Integral) or (self.even and value % 2):
                return False
        elif self.type is float:
            if not isinstance(value, numbers.Real) or not math.isfinite(value):
                return False
        elif not isinstance(value, self.type):
            return False
        return self.minimum is None or value >= self.minimum

    def check(self, value: Any, owner: str = "") -> None:
        """Raise ``ValueError`` naming ``owner + name`` when ``value`` breaks the rule."""
        if not self.is_valid(value):
            reason = f" ({self.why})" if self.why else ""
            raise ValueError(
                f"{owner}{self.name} must be {self.requirement()}{reason}; got {value!r}."
            )

    def is_used(self, config: Any) -> bool:
        """Whether the setting matters for ``config`` (see ``needed_if``)."""
        if self.needed_if is None:
            return True
        other, values = self.needed_if
        return getattr(config, other, None) in values

    def card_value(self, value: Any) -> str:
        """The value as the model card shows it (strings as code)."""
        return f"`{value}`" if self.type is str else str(value)

    def docstring(self, indent: str = " " * 8) -> str:
        """The entry of this setting in ``ShapleyConfig``'s ``Args`` section."""
        if self.default is None:
            default = ""
        elif isinstance(self.default, (bool, str)):
            default = f", defaults to `{self.default!r}`".replace("'", '"')
        else:
            default = f", defaults to {self.default!r}"
        head = f"{indent}{self.name} (`{self.type.__name__}`, *optional*{default}):"
        body = textwrap.fill(
            f"{self.help} {self.details}".strip(),
            width=96,
            initial_indent=indent + "    ",
            subsequent_indent=indent + "    ",
            break_on_hyphens=False,
        )
        return f"{head}\n{body}"


def _objective_settings(config_class: type) -> tuple[ObjectiveSetting, ...]:
    """The objective settings declared on ``config_class`` (fields with objective metadata)."""
    settings = []
    for f in fields(config_class):
        rule = f.metadata.get(_OBJECTIVE_KEY)
        if rule is None:
            continue
        types = get_args(f.type) if get_origin(f.type) in (Union, UnionType) else (f.type,)
        value_types = [t for t in types if t is not type(None)]
        if len(value_types) != 1:
            raise TypeError(f"Objective setting {f.name} needs one value type; got {f.type!r}.")
        settings.append(
            ObjectiveSetting(
                name=f.name,
                type=value_types[0],
                default=f.default,
                optional=len(types) > 1,
                **rule,
            )
        )
    return tuple(settings)


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
            benchmarks/results/recipe_v1.md).
        head_hidden_size (`int`, *optional*, defaults to 0):
            Hidden width of the per-token Shapley head; 0 gives a linear head.
        head_dropout (`float`, *optional*, defaults to 0.0):
            Dropout on the token features before the Shapley head.
        head_num_layers (`int`, *optional*, defaults to 0):
            ``prediction_mode="backbone_head"`` only: transformer layers (self-attention over
            the image's tokens, pre-norm) in the Shapley head before its per-token projection,
            so that the explainer sees the whole image (benchmarks/results/recipe_v2.md).
        head_width (`int`, *optional*, defaults to 0):
            ``prediction_mode="backbone_head"`` only: the width at which the Shapley head's
            attention layers and MLP work, reached by one linear map from the backbone's
            features; 0 keeps the backbone's hidden size.
        head_reads_hidden_states (`bool`, *optional*, defaults to `False`):
            ``prediction_mode="backbone_head"`` only: the Shapley head reads each patch token at
            every depth of the backbone (token removal: the embeddings and every block's
            output; pixel baseline: the stem's and every stage's feature map averaged over each
            final cell, zero-padded to the final width), each normalized and mixed by one
            linear map, instead of the final features alone. The early depths keep what a
            patch shows, which a player's value depends on and the final features of a
            classifier blur (benchmarks/results/explainer_study.md). Costs one (L + 1) D x D
            matrix.
        head_reads_attention (`bool`, *optional*, defaults to `False`):
            With ``head_reads_hidden_states``: the head also reads, for each patch token, the
            attention the backbone paid to it in every block and head (from the class token,
            and on average over all tokens). A player's Shapley value includes its influence
            on the other tokens through attention, which its own states do not show.
        head_attention_from (`str`, *optional*, defaults to `"class_and_mean"`):
            With ``head_reads_attention``: which queries' attention the head reads,
            ``"class_and_mean"`` (the class token's, and the mean over all queries) or
            ``"class"`` (the class token's alone: one row of scores per block, not the whole
            matrix).
        prediction_mode (`str`, *optional*, defaults to `"shapley_sum"`):
            ``"shapley_sum"``: logits are the base value plus the sum of the players' values
            (soft voting). ``"backbone_head"``: the wrapped classifier's own head gives the
            logits and the Shapley head is an auxiliary explainer of it.
        train_backbone (`bool`, *optional*, defaults to `True`):
            With ``prediction_mode="backbone_head"`` and ``False``, the backbone and its
            classifier are frozen and predictions stay bit-identical to the original model.
        detach_head_features (`bool`, *optional*, defaults to `False`):
            With ``prediction_mode="backbone_head"``: the Shapley head reads detached token
            features, so the Shapley regression trains the head alone and the backbone and
            classifier train as a plain fine-tune would (cross-entropy, plus distillation when
            its weight is not 0). With ``train_backbone=False`` the features are always detached.
        classifier_in_features (`int`, *optional*):
            Input width of the wrapped classifier head in ``backbone_head`` mode (set by
            ``from_backbone``).
        {objective_settings}
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
    head_num_layers: int = 0
    head_width: int = 0
    head_reads_hidden_states: bool = False
    head_reads_attention: bool = False
    head_attention_from: str = "class_and_mean"
    prediction_mode: str = "shapley_sum"
    train_backbone: bool = True
    detach_head_features: bool = False
    classifier_in_features: int | None = None
    # The objective settings: each declared here once (type, default, help, card label, rule).
    num_shapley_coalitions: int = objective_field(
        8,
        help="m: coalitions per image for the Shapley regression, drawn from the Shapley kernel "
        "in complementary pairs.",
        label="Shapley coalitions per image (m, in complementary pairs)",
        minimum=0,
        even=True,
        why="coalitions come in complementary pairs",
    )
    num_distill_coalitions: int = objective_field(
        2,
        help="g: coalitions per image, with uniformly distributed sizes, on which the model is "
        "distilled towards its own detached full-image prediction.",
        details="These carry gradients. They are drawn as complementary pairs that share one "
        "packed sequence, so 2 cost the same as 1 (measured: "
        "benchmarks/results/train_cost_bf16_b64_h100.md).",
        label="Distillation coalitions per image (g)",
        minimum=0,
    )
    shapley_loss_weight: float = objective_field(
        1.0,
        help="lambda: weight of the Shapley regression loss.",
        label="Shapley loss weight (lambda)",
        minimum=0,
    )
    distill_loss_weight: float = objective_field(
        1.0,
        help="alpha: weight of the masked distillation loss.",
        label="Distillation loss weight (alpha)",
        minimum=0,
    )
    vote_consistency_weight: float = objective_field(
        0.0,
        help="beta: weight of the vote-consistency loss, which pulls each player's full-image "
        "vote towards its detached votes on the distillation coalitions that contain it.",
        details="Soft voting only. A player's full-image vote is what the model reports as its "
        "value, but the game credits a player for the votes it causes, not the ones it casts: a "
        "background player that reads the object through attention casts the object's votes "
        "(``hf_shapley.evaluation.vote_influence``). Pulling the full-image vote towards the "
        "player's votes in masked contexts removes what it only reads from others. The masked "
        "votes come from the distillation passes (no extra pass); they need "
        "``num_distill_coalitions >= 2`` (complementary pairs, so every player is present in one "
        "coalition of each pair).",
        label="Vote-consistency weight (beta)",
        minimum=0,
    )
    loss_warmup_steps: int = objective_field(
        0,
        help="Optimizer steps over which alpha and lambda ramp linearly from 0 to their values.",
        label="Loss warm-up steps",
        minimum=0,
    )
    shapley_stop_gradient: bool = objective_field(
        True,
        help="Detach the regression targets v(S) - v(empty).",
        label="Stop-gradient on regression targets",
    )
    shapley_loss_normalization: str = objective_field(
        "per_image",
        help="Normalization of the Shapley regression loss: 'per_image' or 'none'.",
        details='``"per_image"`` divides each image\'s mean squared residual by the detached '
        "mean square of its targets (same gradients under gradient accumulation and across "
        'processes); ``"none"`` uses the raw mean squared residual.',
        label="Shapley loss normalization",
        choices=LOSS_NORMALIZATIONS,
    )
    center_logits: bool = objective_field(
        False,
        help="Explain class-centered logits (logits minus their mean over classes).",
        details="This removes the one direction cross-entropy cannot see.",
        label="Class-centered logits",
    )
    explained_classes: str = objective_field(
        "all",
        help="Classes the Shapley regression covers each step: 'all', 'label' or 'top'.",
        details='``"label"``: the label plus ``num_explained_classes - 1`` sampled others; '
        '``"top"``: the top predictions.',
        label="Explained classes per step",
        choices=EXPLAINED_CLASSES,
    )
    num_explained_classes: int | None = objective_field(
        None,
        help="Classes per image when explained_classes is not 'all'.",
        label="Number of explained classes",
        minimum=1,
        needed_if=("explained_classes", tuple(c for c in EXPLAINED_CLASSES if c != "all")),
    )
    reuse_shapley_coalitions: bool = objective_field(
        False,
        help="Draw each image's Shapley coalitions once and keep their values, so that later "
        "epochs train the head without masked passes.",
        details="Needs a frozen classifier (``prediction_mode='backbone_head'``, "
        "``train_backbone=False``), whose game does not change while the head learns it, and "
        "the examples' data set indices (``ShapleyTrainer`` passes them; without them nothing "
        "is kept). The values live in memory (images x m x K floats), are not saved and are "
        "recomputed after a resume. Measured: ``benchmarks/results/explainer_study.md``.",
        label="Coalition values kept across epochs",
    )
    frozen_game_dtype: str = objective_field(
        "float32",
        help="Precision of a frozen classifier's passes while the head trains: 'float32' or "
        "'bfloat16'.",
        details="With ``'bfloat16'`` the full-image pass and the masked coalition passes of a "
        "frozen classifier (``prediction_mode='backbone_head'``, ``train_backbone=False``), "
        "which train nothing, run under bf16 autocast; the Shapley head, efficiency and the "
        "loss stay fp32. Inference is unaffected. About 1.7x faster masked passes on CPUs with "
        "AMX and on bf16 GPUs; the regression targets then carry bf16 rounding (measured: "
        "``benchmarks/results/main_job_seeds_v8_bf16_game.md``).",
        label="Frozen game precision while training",
        choices=FROZEN_GAME_DTYPES,
    )
    coalition_batch_size: int = objective_field(
        64,
        help="Packed sequences (one per pair of complementary coalitions) per backbone call when "
        "evaluating coalitions.",
        details="Bounds the memory of ``model(..., coalition=mask)``.",
        minimum=1,
    )
    coalition_seed: int = objective_field(
        0,
        help="Seed of the training coalitions.",
        details="The coalitions are a pure function of ``(seed, epoch, example index, coalition "
        "index)``, so that resumed and multi-process runs draw the same coalitions.",
        label="Coalition seed",
    )
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
        check_shapley_options(self)

    @property
    def num_players(self) -> int | None:
        """P = h * w, or ``None`` while the grid is left to its default."""
        if self.players_grid is None:
            return None
        return self.players_grid[0] * self.players_grid[1]


def check_shapley_options(config: ShapleyConfig) -> None:
    """The checks of :meth:`ShapleyConfig.validate_shapley_options`: every invalid setting or
    combination, with a message naming the fix."""
    if config.prediction_mode not in PREDICTION_MODES:
        raise ValueError(
            f"prediction_mode={config.prediction_mode!r} is not supported; use one of {PREDICTION_MODES}."
        )
    if config.players_grid is not None:
        if len(config.players_grid) != 2 or min(config.players_grid) < 1:
            raise ValueError(
                f"players_grid must be two positive integers (rows, cols); got {config.players_grid!r}."
            )
        if config.players_grid[0] * config.players_grid[1] < 2:
            raise ValueError(
                "players_grid=(1, 1) gives a game with a single player, whose Shapley value is "
                "just the prediction; use a grid with at least 2 players, e.g. (2, 2)."
            )
    if config.image_size is not None and (
        len(config.image_size) != 2 or min(config.image_size) < 1
    ):
        raise ValueError(
            f"image_size must be two positive integers (height, width); got {config.image_size!r}."
        )
    baseline = config.pixel_baseline
    values = baseline if isinstance(baseline, list) else [baseline]
    if not values or not all(isinstance(v, float) and abs(v) < float("inf") for v in values):
        raise ValueError(
            "pixel_baseline must be a finite number or a list of one finite number per channel; "
            f"got {baseline!r}."
        )
    for setting in OBJECTIVE_SETTINGS:
        value = getattr(config, setting.name)
        setting.check(value)
        if value is None and setting.needed_if is not None and setting.is_used(config):
            other = setting.needed_if[0]
            raise ValueError(
                f"{other}={getattr(config, other)!r} needs {setting.name} "
                f"({setting.requirement(allow_none=False)})."
            )
    if config.head_num_layers < 0 or not isinstance(config.head_num_layers, int):
        raise ValueError(
            f"head_num_layers must be a non-negative int; got {config.head_num_layers!r}."
        )
    if config.head_width < 0 or not isinstance(config.head_width, int):
        raise ValueError(f"head_width must be a non-negative int; got {config.head_width!r}.")
    if config.head_num_layers > 0 and config.prediction_mode != "backbone_head":
        raise ValueError(
            f"head_num_layers={config.head_num_layers} needs prediction_mode='backbone_head': with "
            "soft voting the head votes per token on packed coalitions, where attention across "
            "tokens would mix a coalition with its complement. Set head_num_layers=0."
        )
    if config.head_reads_hidden_states and config.prediction_mode != "backbone_head":
        raise ValueError(
            "head_reads_hidden_states=True needs prediction_mode='backbone_head': with "
            "soft voting the head votes on every masked pass, where only the final "
            "features are at hand. Set head_reads_hidden_states=False."
        )
    if config.head_attention_from not in HEAD_ATTENTION_FROM:
        raise ValueError(
            f"head_attention_from must be {' or '.join(map(repr, HEAD_ATTENTION_FROM))}; got "
            f"{config.head_attention_from!r}."
        )
    if config.head_reads_attention and not config.head_reads_hidden_states:
        raise ValueError(
            "head_reads_attention=True needs head_reads_hidden_states=True: the attention "
            "is read beside every depth's states. Set both, or head_reads_attention=False."
        )
    if config.reuse_shapley_coalitions and not (
        config.prediction_mode == "backbone_head" and not config.train_backbone
    ):
        raise ValueError(
            "reuse_shapley_coalitions=True keeps the game's values across epochs, which is "
            "only right for a game that does not train: it needs prediction_mode="
            f"'backbone_head' and train_backbone=False (got {config.prediction_mode!r}, "
            f"train_backbone={config.train_backbone}). Freeze the classifier or set "
            "reuse_shapley_coalitions=False."
        )
    if config.frozen_game_dtype != "float32" and not (
        config.prediction_mode == "backbone_head" and not config.train_backbone
    ):
        raise ValueError(
            f"frozen_game_dtype={config.frozen_game_dtype!r} runs a frozen classifier's passes "
            "in lower precision while the head trains: it needs prediction_mode="
            f"'backbone_head' and train_backbone=False (got {config.prediction_mode!r}, "
            f"train_backbone={config.train_backbone}). For a classifier that trains, use the "
            "Trainer's --bf16; or set frozen_game_dtype='float32'."
        )
    if config.vote_consistency_weight > 0:
        if config.prediction_mode != "shapley_sum":
            raise ValueError(
                f"vote_consistency_weight={config.vote_consistency_weight} needs "
                f"prediction_mode='shapley_sum' (players cast votes only with soft voting); "
                f"got {config.prediction_mode!r}. Set vote_consistency_weight=0."
            )
        if config.num_distill_coalitions < 2 or config.num_distill_coalitions % 2:
            raise ValueError(
                f"vote_consistency_weight={config.vote_consistency_weight} takes each player's "
                "masked-context vote from the distillation pairs: num_distill_coalitions must "
                f"be an even number >= 2; got {config.num_distill_coalitions}."
            )


#: The objective settings, in declaration order: what ``ShapleyTrainingArguments`` can override
#: and the model card lists.
OBJECTIVE_SETTINGS: tuple[ObjectiveSetting, ...] = _objective_settings(ShapleyConfig)

ShapleyConfig.__doc__ = ShapleyConfig.__doc__.replace(
    " " * 8 + "{objective_settings}", "\n".join(s.docstring() for s in OBJECTIVE_SETTINGS)
)

__all__ = [
    "EXPLAINER_DEFAULTS",
    "FROZEN_EXPLAINER_DEFAULTS",
    "FROZEN_EXPLAINER_LEARNING_RATE",
    "HEAD_ATTENTION_FROM",
    "EXPLAINER_PIXEL_BASELINE_DEFAULTS",
    "EXPLAINER_TOKEN_REMOVAL_DEFAULTS",
    "OBJECTIVE_SETTINGS",
    "ObjectiveSetting",
    "ShapleyConfig",
    "objective_field",
]
