"""Configuration of :class:`ShapleyCLIPModel`, a self-explaining image-text dual encoder.

One config describes the whole model: the wrapped CLIP model (a nested ``clip_config``), the
players of the image's Shapley game (``players_grid`` over the vision tower's patch grid), the
Shapley head that explains the image embedding, and the joint training objective for image-text
pairs. The objective settings are declared with :func:`objective_field` as on
:class:`~hf_shapley.models.configuration_shapley.ShapleyConfig` and validated the same way.

This file is shipped as remote code: relative imports only, and nothing from the training side.
"""

# No `from __future__ import annotations`: the objective settings' types are read from the field
# annotations at runtime (dataclasses.fields), as in configuration_shapley.py.

from typing import Any

from transformers import AutoConfig, PreTrainedConfig
from transformers.configuration_utils import SubConfigSpec

from .configuration_shapley import (
    HF_SHAPLEY_VERSION,
    LOSS_NORMALIZATIONS,
    ObjectiveSetting,
    _drop_locally_registered_pipelines,
    _objective_settings,
    objective_field,
)

#: Dual-encoder families whose vision tower can drop tokens: a CLS token that pools the image
#: and survives alone (the empty coalition). SigLIP pools with an attention probe over the patch
#: tokens, which is undefined when every patch token is removed.
SUPPORTED_DUAL_ENCODERS = ("clip",)

# The zero-shot explanation pipeline every saved dual encoder carries as remote code
# (config.json's "custom_pipelines"; the file is copied beside the model files by
# ShapleyCLIPModel.save_pretrained), as CUSTOM_PIPELINES in configuration_shapley.py.
ZERO_SHOT_PIPELINE_TASK = "zero-shot-image-shapley-explanation"
ZERO_SHOT_PIPELINE_MODULE = "pipeline_shapley_clip"
ZERO_SHOT_PIPELINE_CLASS = "ZeroShotImageShapleyExplanationPipeline"
CLIP_CUSTOM_PIPELINES = {
    ZERO_SHOT_PIPELINE_TASK: {
        "impl": f"{ZERO_SHOT_PIPELINE_MODULE}.{ZERO_SHOT_PIPELINE_CLASS}",
        # `pt` must name a class transformers itself has (it is looked up there on load).
        "pt": ["AutoModelForZeroShotImageClassification"],
        "type": "multimodal",
    }
}


class ShapleyCLIPConfig(PreTrainedConfig):
    r"""Configuration of a self-explaining CLIP-style dual encoder.

    The image tower's players are groups of its patch tokens; the game of image ``x`` and text
    ``t`` is the model's image-text score with only the players in ``S`` present (token
    removal). The Shapley head predicts one vector per player (the Shapley values of the image
    embedding's vector game), so ``score(x, t) = base(t) + sum_i phi_i(x, t)`` for any text
    (see ``modeling_shapley_clip.py``).

    Args:
        clip_config (`dict` or `CLIPConfig`, *optional*):
            Config of the wrapped dual encoder; only CLIP (``model_type="clip"``) is supported.
            Defaults to a CLIP ViT-B/32 config.
        players_grid (`tuple[int, int]`, *optional*):
            ``(h, w)``: the vision tower's patch grid is split into ``h x w`` players, each a
            rectangular group of patch tokens. Must divide the patch grid (CLIP ViT-B/32 at
            224 px: 7 x 7). Defaults to the patch grid itself.
        head_hidden_size (`int`, *optional*, defaults to 256):
            Hidden width of the per-token Shapley head; 0 gives a linear head.
        head_dropout (`float`, *optional*, defaults to 0.0):
            Dropout on the token features before the Shapley head.
        head_num_layers (`int`, *optional*, defaults to 3):
            Transformer layers (self-attention over the image's patch tokens) in the Shapley
            head before its per-token projection, so that the explainer sees the whole image
            (the explainer recipe of benchmarks/results/recipe_v2.md).
        head_reads_hidden_states (`bool`, *optional*, defaults to `False`):
            The Shapley head reads every depth of the vision tower (the embeddings and each
            block's output), not only its final tokens, as the classifier's head does
            (``ShapleyConfig.head_reads_hidden_states``).
        train_clip (`bool`, *optional*, defaults to `False`):
            ``False``: CLIP is frozen and its scores stay bit-identical to the wrapped model's;
            only the Shapley head trains. ``True``: CLIP trains with the contrastive loss and
            the masked self-distillation; the head always reads detached features, so the
            Shapley regression trains the head alone.
        {objective_settings}
    """

    model_type = "shapley_clip"
    sub_configs_defaults = {
        "clip_config": SubConfigSpec(config_class=AutoConfig, model_type="clip"),
    }
    # Per-player tensors are (N, P, T) and (N, P, D): never gather them in Trainer evaluation.
    keys_to_ignore_at_inference = [
        "shapley_values",
        "base_values",
        "image_shapley_vectors",
        "image_base_vector",
        "text_embeds",
        "image_embeds",
        "contrastive_loss",
        "distill_loss",
        "shapley_loss",
    ]

    clip_config: dict | PreTrainedConfig | None = None
    players_grid: list[int] | tuple[int, ...] | None = None
    head_hidden_size: int = 256
    head_dropout: float = 0.0
    head_num_layers: int = 3
    head_reads_hidden_states: bool = False
    train_clip: bool = False
    num_shapley_coalitions: int = objective_field(
        8,
        help="m: coalitions per image for the Shapley regression on the image's vector game, "
        "drawn from the Shapley kernel in complementary pairs.",
        label="Shapley coalitions per image (m, in complementary pairs)",
        minimum=0,
        even=True,
        why="coalitions come in complementary pairs",
    )
    num_distill_coalitions: int = objective_field(
        2,
        help="g: coalitions per image, with uniformly distributed sizes, on which the masked "
        "image's similarity distribution over the batch's texts is distilled towards the full "
        "image's (train_clip=True only).",
        label="Distillation coalitions per image (g)",
        minimum=0,
    )
    contrastive_loss_weight: float = objective_field(
        1.0,
        help="Weight of the symmetric image-text contrastive loss (train_clip=True only).",
        label="Contrastive loss weight",
        minimum=0,
    )
    distill_loss_weight: float = objective_field(
        1.0,
        help="alpha: weight of the masked self-distillation of the similarity distribution.",
        label="Distillation loss weight (alpha)",
        minimum=0,
    )
    shapley_loss_weight: float = objective_field(
        10.0,
        help="lambda: weight of the Shapley regression on the image's vector game.",
        label="Shapley loss weight (lambda)",
        minimum=0,
    )
    text_shapley_loss_weight: float = objective_field(
        0.0,
        help="Weight of an extra Shapley regression on the scalar games of the batch's texts "
        "(the vector game's residuals projected on their embeddings).",
        details="It weights the regression towards the subspace the texts span; the vector "
        "regression alone already covers every text.",
        label="Text-game Shapley loss weight",
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
        help="Detach the regression targets u(S) - u(empty).",
        label="Stop-gradient on regression targets",
    )
    shapley_loss_normalization: str = objective_field(
        "per_image",
        help="Normalization of the Shapley regression loss: 'per_image' or 'none'.",
        label="Shapley loss normalization",
        choices=LOSS_NORMALIZATIONS,
    )
    coalition_batch_size: int = objective_field(
        64,
        help="Packed sequences (one per pair of complementary coalitions) per vision-tower call "
        "when evaluating coalitions.",
        minimum=1,
    )
    coalition_seed: int = objective_field(
        0,
        help="Seed of the training coalitions (a pure function of seed, epoch, example index "
        "and coalition index).",
        label="Coalition seed",
    )
    initializer_range: float = 0.02
    hf_shapley_version: str = HF_SHAPLEY_VERSION

    def __post_init__(self, **kwargs: Any):
        # Where `import hf_shapley` registered the zero-shot task, the installed pipeline serves
        # it (configuration_shapley._drop_locally_registered_pipelines).
        _drop_locally_registered_pipelines(kwargs)
        super().__post_init__(**kwargs)
        if self.players_grid is not None:
            self.players_grid = [int(s) for s in self.players_grid]
        self.validate_shapley_options()

    def validate_shapley_options(self) -> None:
        """Check the options; raise ``ValueError`` saying what to change."""
        model_type = getattr(self.clip_config, "model_type", None)
        if model_type not in SUPPORTED_DUAL_ENCODERS:
            raise ValueError(
                f"clip_config has model_type {model_type!r}, whose vision tower cannot drop tokens "
                "the way this game needs (a CLS token that pools the image and can stand alone for "
                f"the empty coalition). Supported: {SUPPORTED_DUAL_ENCODERS}. SigLIP-style towers "
                "pool with an attention probe over the patch tokens, undefined with none present."
            )
        if self.players_grid is not None:
            if len(self.players_grid) != 2 or min(self.players_grid) < 1:
                raise ValueError(
                    f"players_grid must be two positive integers (rows, cols); got {self.players_grid!r}."
                )
            if self.players_grid[0] * self.players_grid[1] < 2:
                raise ValueError(
                    "players_grid=(1, 1) gives a game with a single player; use a grid with at "
                    "least 2 players, e.g. (2, 2)."
                )
        for name in ("head_hidden_size", "head_num_layers"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be a non-negative int; got {value!r}.")
        for name in ("train_clip", "head_reads_hidden_states"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be True or False; got {getattr(self, name)!r}.")
        for setting in CLIP_OBJECTIVE_SETTINGS:
            setting.check(getattr(self, setting.name))

    # The game (games_shapley.py) reads these names, as it does on ShapleyConfig.
    @property
    def backbone_config(self) -> PreTrainedConfig:
        """The vision tower's config (``clip_config.vision_config``)."""
        return self.clip_config.vision_config

    @property
    def image_size(self) -> None:
        """Token removal takes the image size from the vision config."""
        return None

    @property
    def num_players(self) -> int | None:
        """P = h * w, or ``None`` while the grid is left to its default."""
        if self.players_grid is None:
            return None
        return self.players_grid[0] * self.players_grid[1]


#: The objective settings of the dual encoder, in declaration order.
CLIP_OBJECTIVE_SETTINGS: tuple[ObjectiveSetting, ...] = _objective_settings(ShapleyCLIPConfig)

ShapleyCLIPConfig.__doc__ = ShapleyCLIPConfig.__doc__.replace(
    " " * 8 + "{objective_settings}", "\n".join(s.docstring() for s in CLIP_OBJECTIVE_SETTINGS)
)

__all__ = [
    "CLIP_CUSTOM_PIPELINES",
    "CLIP_OBJECTIVE_SETTINGS",
    "SUPPORTED_DUAL_ENCODERS",
    "ZERO_SHOT_PIPELINE_TASK",
    "ShapleyCLIPConfig",
]
