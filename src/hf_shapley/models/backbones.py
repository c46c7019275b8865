"""Per-family backbone adapters: patch features and player removal.

The Shapley game of a self-explaining model is defined by how a player (a group of patch
tokens) is removed. For the token-removal families (ViT, DeiT, DINOv2 with and without
registers) an absent player's tokens are dropped after the position embedding, so the
remaining tokens see exactly the sequence they would see if the image were cut down to them.

The pixel-baseline families (ResNet, ConvNeXt, Swin) cannot drop tokens: a player is the
block of pixels under its cells of the final feature map, and an absent player's pixels take
a baseline value (:class:`PixelBaselineAdapter`). Every player still votes, so the empty
coalition is the model on the all-baseline image.

An adapter knows, for one family, where the patch tokens sit in the sequence, how to embed an
image once, how to run the encoder blocks on a (packed) sequence with an attention mask, and
what the wrapped classifier head reads. These call backbone internals that moved between
transformers releases (in 5.x ViT and DeiT keep their blocks in ``.layers``, DINOv2 in
``.encoder.layer``), which is why the package pins one transformers minor series.

This file is shipped as remote code: relative imports only.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedConfig, PreTrainedModel

from .configuration_shapley import HEAD_ATTENTION_FROM


@dataclass(frozen=True)
class _BlockLayout:
    """Where a pre-norm transformer block keeps its parts (attribute names)."""

    norm_before: str
    attention: str
    out_proj: str
    scale: str
    attention_dropout: str  # the attention module's dropout probability
    norm_after: str
    hidden_dropout: str | None  # the block's dropout module after attention and MLP, if any


# transformers 5.x: ViT and DeiT (ViTLayer / DeiTLayer), CLIP's vision tower (CLIPEncoderLayer).
_BLOCK_LAYOUTS = (
    _BlockLayout("layernorm_before", "attention", "o_proj", "scaling", "attention_dropout",
                 "layernorm_after", "dropout"),
    _BlockLayout("layer_norm1", "self_attn", "out_proj", "scale", "dropout", "layer_norm2", None),
)  # fmt: skip


def _layout_of(block: nn.Module) -> _BlockLayout | None:
    for layout in _BLOCK_LAYOUTS:
        attention = getattr(block, layout.attention, None)
        if (
            isinstance(getattr(block, layout.norm_before, None), nn.LayerNorm)
            and isinstance(getattr(block, layout.norm_after, None), nn.LayerNorm)
            and hasattr(block, "mlp")
            and all(
                isinstance(getattr(attention, name, None), nn.Linear)
                for name in ("q_proj", "k_proj", "v_proj", layout.out_proj)
            )
            and hasattr(attention, "head_dim")
        ):
            return layout
    return None


def block_for_leading_tokens(
    block: nn.Module,
    hidden_states: torch.Tensor,
    attention_mask: torch.Tensor | None,
    num_outputs: int,
) -> torch.Tensor:
    """One pre-norm encoder block's output for the first ``num_outputs`` tokens only.

    Every token still supplies keys and values, but queries, the attention output, the MLP and
    the residual stream are computed for the leading tokens alone: a readout of the special
    tokens after the last block needs nothing else. A block whose layout is not known runs
    whole and is sliced (same values, full cost).

    Args:
        block: an encoder block (ViT, DeiT or CLIP layout; others run whole).
        hidden_states: (n, L, D) the block's input.
        attention_mask: additive (n, 1, L, L) mask, or ``None``.
        num_outputs: how many leading tokens to compute.

    Returns:
        (n, num_outputs, D).
    """
    layout = _layout_of(block)
    if layout is None:
        return block(hidden_states, attention_mask=attention_mask)[:, :num_outputs]
    attention = getattr(block, layout.attention)
    n = hidden_states.shape[0]
    head_dim = attention.head_dim
    normed = getattr(block, layout.norm_before)(hidden_states)
    query = _split_heads(attention.q_proj(normed[:, :num_outputs]), head_dim)
    key = _split_heads(attention.k_proj(normed), head_dim)
    value = _split_heads(attention.v_proj(normed), head_dim)
    mask = None if attention_mask is None else attention_mask[:, :, :num_outputs]
    attended = F.scaled_dot_product_attention(
        query,
        key,
        value,
        attn_mask=mask,
        dropout_p=getattr(attention, layout.attention_dropout) if attention.training else 0.0,
        scale=getattr(attention, layout.scale),
    )
    attended = attended.transpose(1, 2).reshape(n, num_outputs, -1)
    dropout = getattr(block, layout.hidden_dropout) if layout.hidden_dropout else nn.Identity()
    residual = dropout(getattr(attention, layout.out_proj)(attended))
    residual = residual + hidden_states[:, :num_outputs]
    mlp = dropout(block.mlp(getattr(block, layout.norm_after)(residual)))
    return mlp + residual


def _split_heads(states: torch.Tensor, head_dim: int) -> torch.Tensor:
    """(n, T, H * d) -> (n, H, T, d)."""
    return states.view(states.shape[0], states.shape[1], -1, head_dim).transpose(1, 2)


def attention_features_per_token(
    blocks: Iterable[nn.Module], queries: str = "class_and_mean"
) -> int | None:
    """How many numbers :class:`AttentionReceived` gives per patch token over ``blocks``
    (2 per block and head, 1 from the class token only), or ``None`` when it cannot read one
    of them (not a ViT, DeiT or CLIP layout: DINOv2's blocks, say)."""
    count = 0
    for block in blocks:
        layout = _layout_of(block)
        if layout is None:
            return None
        attention = getattr(block, layout.attention)
        count += attention.q_proj.out_features // attention.head_dim
    return count * (2 if queries == "class_and_mean" else 1)


class AttentionReceived:
    """How much attention each patch token receives in pre-norm blocks, per head.

    Read from the pass itself: while active (``with recorder:``) it keeps the output of each
    block's query and key maps (forward hooks), so that only the attention scores are computed
    again (the pass runs a fused kernel that returns no probabilities); recomputing the two
    maps instead cost about a sixth of a ViT-S forward (``benchmarks/forward_cost.py``).
    Scaled by the sequence length, so that uniform attention reads 1.

    Args:
        blocks: the encoder blocks (ViT, DeiT or CLIP layout).
        queries: ``"class_and_mean"``: per block and head, the attention from the class token,
            then the mean over all queries (2 H L numbers per token); ``"class"``: from the
            class token only (H L numbers), which needs one row of scores per block instead of
            the whole matrix.
    """

    def __init__(self, blocks: Iterable[nn.Module], queries: str = "class_and_mean"):
        if queries not in HEAD_ATTENTION_FROM:
            raise ValueError(
                f"head_attention_from must be one of {HEAD_ATTENTION_FROM}; got {queries!r}."
            )
        self.queries = queries
        self.attentions = []
        for block in blocks:
            layout = _layout_of(block)
            if layout is None:
                raise ValueError(
                    f"head_reads_attention needs a ViT, DeiT or CLIP-like block; got "
                    f"{type(block).__name__}. Set head_reads_attention=False."
                )
            self.attentions.append((getattr(block, layout.attention), layout.scale))
        self._outputs: list[torch.Tensor] = []
        self._handles: list = []

    def __enter__(self) -> AttentionReceived:
        self._outputs = []

        def keep(module, inputs, output):
            self._outputs.append(output)

        for attention, _ in self.attentions:
            self._handles.append(attention.q_proj.register_forward_hook(keep))
            self._handles.append(attention.k_proj.register_forward_hook(keep))
        return self

    def __exit__(self, *exc_info) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def features(self, num_special: int) -> torch.Tensor:
        """(n, T - s, 2 H L) (or (n, T - s, H L) from the class token only) for the pass
        recorded last; ``num_special`` is the number s of special tokens (the first is the
        class token)."""
        if len(self._outputs) != 2 * len(self.attentions):
            raise RuntimeError(
                f"AttentionReceived recorded {len(self._outputs)} query and key maps for "
                f"{len(self.attentions)} blocks: run exactly one pass inside `with recorder:`."
            )
        received = []
        for i, (attention, scale) in enumerate(self.attentions):
            query = self._outputs[2 * i]
            if self.queries == "class":
                query = query[:, :1]
            query = _split_heads(query, attention.head_dim)
            key = _split_heads(self._outputs[2 * i + 1], attention.head_dim)
            length = key.shape[2]
            scores = query @ key.transpose(-1, -2) * getattr(attention, scale)
            probabilities = scores.softmax(-1)[..., num_special:] * length  # (n, H, T or 1, N)
            received.append(probabilities[:, :, 0])
            if self.queries == "class_and_mean":
                received.append(probabilities.mean(2))
        return torch.cat(received, dim=1).transpose(1, 2)


@dataclass(frozen=True)
class TokenRemovalAdapter:
    """Adapter for a ViT-like backbone whose patch tokens can be dropped.

    Attributes:
        family: Human-readable family name, used in messages.
        model_types: ``config.model_type`` values this adapter serves.
        model_attribute: Name of the backbone inside the family's ``*ForImageClassification``.
        layers_path: Dotted path of the ``nn.ModuleList`` of encoder blocks in the base model.
        classifier_reads_patch_mean: The family's classifier reads ``[CLS, mean(patch tokens)]``
            (DINOv2) instead of the CLS token alone.
    """

    # The game that removes this family's players (games_shapley.py).
    removal: ClassVar[str] = "token_removal"

    family: str
    model_types: tuple[str, ...]
    model_attribute: str
    layers_path: str
    has_pooler: bool = True
    classifier_reads_patch_mean: bool = False
    distillation_token: bool = False

    # ----------------------------------------------------------------- geometry
    def num_special_tokens(self, config: PreTrainedConfig) -> int:
        """Tokens before the patch tokens: CLS, DeiT's distillation token, DINOv2's registers."""
        registers = getattr(config, "num_register_tokens", 0) or 0
        return 1 + int(self.distillation_token) + registers

    def token_grid(self, config: PreTrainedConfig) -> tuple[int, int]:
        image_size = _pair(config.image_size)
        patch_size = _pair(config.patch_size)
        return image_size[0] // patch_size[0], image_size[1] // patch_size[1]

    def image_size(self, config: PreTrainedConfig) -> tuple[int, int]:
        return _pair(config.image_size)

    def hidden_size(self, config: PreTrainedConfig) -> int:
        return config.hidden_size

    def classifier_in_features(self, config: PreTrainedConfig) -> int:
        return config.hidden_size * (2 if self.classifier_reads_patch_mean else 1)

    # ----------------------------------------------------------------- modules
    def build(self, config: PreTrainedConfig) -> PreTrainedModel:
        """The base model without a pooler (an unused pooler breaks DDP)."""
        from transformers import AutoModel

        kwargs = {"add_pooling_layer": False} if self.has_pooler else {}
        return AutoModel.from_config(config, **kwargs)

    def layers(self, backbone: nn.Module) -> nn.ModuleList:
        module = backbone
        for name in self.layers_path.split("."):
            module = getattr(module, name)
        return module

    def embed(self, backbone: nn.Module, pixel_values: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, s + N, D): special tokens then patch tokens, positions added."""
        return backbone.embeddings(pixel_values)

    def encode_tokens(
        self,
        backbone: nn.Module,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None,
        all_hidden_states: list[torch.Tensor] | None = None,
        *,
        num_outputs: int | None = None,
    ) -> torch.Tensor:
        """Run every encoder block and the final norm. ``attention_mask`` is additive, 4D.

        ``all_hidden_states``, when given, receives the input and every block's output (L + 1
        tensors shaped like ``hidden_states``, as ``output_hidden_states=True`` returns them):
        what a head that reads every depth needs, at no extra pass.

        ``num_outputs``: only the first ``num_outputs`` tokens' final states are wanted (a
        readout of the special tokens alone), returned as (n, num_outputs, D). The last block
        then computes queries, attention output and MLP for those tokens only (keys and values
        still for every token): the same arithmetic for them, a packed pass of the main job
        (4 blocks, 66 tokens) 1.22x faster (``benchmarks/train_cost.py leading-tokens-block``)."""
        if all_hidden_states is not None:
            all_hidden_states.append(hidden_states)
        layers = self.layers(backbone)
        for i, layer in enumerate(layers):
            if num_outputs is not None and i == len(layers) - 1:
                hidden_states = block_for_leading_tokens(
                    layer, hidden_states, attention_mask, num_outputs
                )
            else:
                hidden_states = layer(hidden_states, attention_mask=attention_mask)
            if all_hidden_states is not None:
                all_hidden_states.append(hidden_states)
        return self.final_norm(backbone, hidden_states)

    def final_norm(self, backbone: nn.Module, hidden_states: torch.Tensor) -> torch.Tensor:
        """The norm after the last block (the base model's ``layernorm``)."""
        return backbone.layernorm(hidden_states)

    def classifier_features(
        self,
        special_states: torch.Tensor,
        patch_states: torch.Tensor,
        patch_weights: torch.Tensor | None,
    ) -> torch.Tensor:
        """What the family's classifier head reads, for one group of tokens.

        Args:
            special_states: (n, s, D) the group's special tokens after the final norm.
            patch_states: (n, N, D) patch tokens after the final norm.
            patch_weights: (n, N) 1 for the group's patch tokens, 0 for the others; ``None``
                for all of them, computed as the family's own classifier does (bit-identical).

        Returns:
            (n, D) or (n, 2D) for the families that also read the patch mean (DINOv2). An empty
            group's patch mean is defined as 0.
        """
        cls = special_states[:, 0]
        if not self.classifier_reads_patch_mean:
            return cls
        if patch_weights is None:
            return torch.cat([cls, patch_states.mean(dim=1)], dim=1)
        weights = patch_weights.to(patch_states.dtype)
        count = weights.sum(1, keepdim=True).clamp_min(1.0)
        mean = torch.einsum("nt,ntd->nd", weights, patch_states) / count
        return torch.cat([cls, mean], dim=-1)


@dataclass(frozen=True)
class CLIPVisionAdapter(TokenRemovalAdapter):
    """Token removal in a CLIP vision tower (``CLIPVisionModel``, the image side of ``CLIPModel``).

    CLIP normalizes the embeddings (``pre_layrnorm``, per token, so before dropping tokens is the
    same as after) and pools the CLS token through ``post_layernorm``; the encoder's output is
    returned without a final norm, so that the CLS state is what ``CLIPVisionModel`` pools.
    Not in :data:`ADAPTERS`: the dual encoder (``modeling_shapley_clip.py``) builds it itself.
    """

    def embed(self, backbone: nn.Module, pixel_values: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, 1 + N, D): CLS then patch tokens, positions added, pre-normed."""
        return backbone.pre_layrnorm(backbone.embeddings(pixel_values))

    def final_norm(self, backbone: nn.Module, hidden_states: torch.Tensor) -> torch.Tensor:
        """None: the encoder's output is what ``post_layernorm`` pools."""
        return hidden_states


CLIP_VISION_ADAPTER = CLIPVisionAdapter(
    "CLIP", ("clip_vision_model",), "vision_model", "encoder.layers", has_pooler=False
)


@dataclass(frozen=True)
class PixelBaselineAdapter:
    """Adapter for a backbone that cannot drop tokens (ResNet, ConvNeXt, Swin).

    A player is the block of pixels under its cells of the final feature map (row-major over
    ``players_grid``); an absent player's pixels take the baseline. The Shapley head reads one
    feature vector per final cell; the family's own classifier reads the pooled features.

    Attributes:
        family: Human-readable family name, used in messages.
        model_types: ``config.model_type`` values this adapter serves.
        model_attribute: Name of the backbone inside the family's ``*ForImageClassification``.
        layout: ``"channels_first"``: ``last_hidden_state`` is (B, C, h, w) (ResNet, ConvNeXt);
            ``"tokens"``: (B, h * w, C) after the final norm (Swin).
        has_pooler: The base model takes ``add_pooling_layer`` (Swin).
        cell_norm: The family normalizes the pooled features with the base model's final
            ``layernorm`` (ConvNeXt); the Shapley head then reads each cell through it too.
        pool_linear_head: The classifier is a linear map of the mean of the cell features
            (ResNet, Swin), so soft voting can reproduce it exactly (r_i = W f_i / N, b = bias).
    """

    removal: ClassVar[str] = "pixel_baseline"

    family: str
    model_types: tuple[str, ...]
    model_attribute: str
    layout: str
    has_pooler: bool = False
    cell_norm: bool = False
    pool_linear_head: bool = True

    # ----------------------------------------------------------------- geometry
    def num_special_tokens(self, config: PreTrainedConfig) -> int:
        return 0

    def image_size(self, config: PreTrainedConfig) -> tuple[int, int]:
        """The backbone config's ``image_size`` (ConvNeXt, Swin), else 224 (ResNet has none)."""
        return _pair(getattr(config, "image_size", None) or 224)

    def token_grid(
        self, config: PreTrainedConfig, image_size: tuple[int, int] | None = None
    ) -> tuple[int, int]:
        """The final feature grid (h, w) for an image of ``image_size``, from the family's strides."""
        height, width = image_size or self.image_size(config)
        return self._feature_size(config, height), self._feature_size(config, width)

    def _feature_size(self, config: PreTrainedConfig, n: int) -> int:
        if self.family == "ResNet":
            # 7x7/2 conv (pad 3) and 3x3/2 max pool (pad 1), then 3x3 convs (pad 1) of stride 2 in
            # every stage but the first (also the first with downsample_in_first_stage).
            n = math.ceil(math.ceil(n / 2) / 2)
            downsamples = len(config.depths) - 1 + int(bool(config.downsample_in_first_stage))
            for _ in range(downsamples):
                n = math.ceil(n / 2)
            return n
        if self.family == "ConvNeXt":
            # patchify stem (kernel = stride = patch_size), then a 2x2/2 conv before every later stage.
            n = n // _pair(config.patch_size)[0]
            for _ in range(config.num_stages - 1):
                n = n // 2
            return n
        if self.family == "Swin":
            # patch embedding (padded up to a multiple of patch_size), then a patch merging (padded
            # to even) after every stage but the last.
            n = math.ceil(n / _pair(config.patch_size)[0])
            for _ in range(len(config.depths) - 1):
                n = (n + 1) // 2
            return n
        raise NotImplementedError(self.family)

    def hidden_size(self, config: PreTrainedConfig) -> int:
        if self.family == "Swin":
            return int(config.embed_dim * 2 ** (len(config.depths) - 1))
        return int(config.hidden_sizes[-1])

    def classifier_in_features(self, config: PreTrainedConfig) -> int:
        return self.hidden_size(config)

    # ----------------------------------------------------------------- modules
    def build(self, config: PreTrainedConfig) -> PreTrainedModel:
        """The base model, without a pooler where the family has one with parameters."""
        from transformers import AutoModel

        kwargs = {"add_pooling_layer": False} if self.has_pooler else {}
        return AutoModel.from_config(config, **kwargs)

    def stage_channels(self, config: PreTrainedConfig) -> list[int]:
        """The channels of each feature map ``encode_pixels`` collects: the stem's output, then
        every stage's (Swin's after its patch merging), the last one the final features'."""
        if self.family == "Swin":
            dims = [int(config.embed_dim * 2**i) for i in range(len(config.depths))]
            return [dims[0], *dims[1:], dims[-1]]
        if self.family == "ResNet":
            return [int(config.embedding_size), *map(int, config.hidden_sizes)]
        return [int(config.hidden_sizes[0]), *map(int, config.hidden_sizes)]

    def stages_fit_final_width(self, config: PreTrainedConfig) -> bool:
        """Whether every stage's channels fit the final features' width, as a head reading
        every stage zero-padded to that width needs."""
        return max(self.stage_channels(config)) <= self.hidden_size(config)

    def encode_pixels(
        self,
        backbone: nn.Module,
        pixel_values: torch.Tensor,
        stages: list[torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """(B, C, H, W) -> the family's ``last_hidden_state``. ``stages``, when given, receives
        every feature map, (B, C_s, H_s, W_s) in ``stage_channels`` order."""
        if stages is None:
            return backbone(pixel_values).last_hidden_state
        out = backbone(pixel_values, output_hidden_states=True)
        stages.extend(out.reshaped_hidden_states if self.layout == "tokens" else out.hidden_states)
        return out.last_hidden_state

    def cell_features(self, backbone: nn.Module, hidden: torch.Tensor) -> torch.Tensor:
        """``last_hidden_state`` -> (B, h * w, D): one feature vector per final cell, row-major."""
        if self.layout == "channels_first":
            hidden = hidden.flatten(2).transpose(1, 2)
        if self.cell_norm:
            hidden = backbone.layernorm(hidden)
        return hidden

    def pooled_features(self, backbone: nn.Module, hidden: torch.Tensor) -> torch.Tensor:
        """``last_hidden_state`` -> (B, D), computed as the family's own classifier input is
        (same operations, so that a wrapped classifier's predictions stay bit-identical)."""
        if self.family == "ResNet":
            return torch.flatten(backbone.pooler(hidden), 1)
        if self.family == "ConvNeXt":
            return backbone.layernorm(hidden.mean([-2, -1]))
        # Swin: AdaptiveAvgPool1d over the tokens (the base model is built without its pooler).
        return torch.flatten(F.adaptive_avg_pool1d(hidden.transpose(1, 2), 1), 1)


def _pair(value) -> tuple[int, int]:
    if isinstance(value, (list, tuple)):
        return int(value[0]), int(value[1])
    return int(value), int(value)


Adapter = TokenRemovalAdapter | PixelBaselineAdapter

ADAPTERS: dict[str, Adapter] = {}
for _adapter in (
    TokenRemovalAdapter("ViT", ("vit",), "vit", "layers"),
    TokenRemovalAdapter("DeiT", ("deit",), "deit", "layers", distillation_token=True),
    TokenRemovalAdapter(
        "DINOv2",
        ("dinov2",),
        "dinov2",
        "encoder.layer",
        has_pooler=False,
        classifier_reads_patch_mean=True,
    ),
    TokenRemovalAdapter(
        "DINOv2 with registers",
        ("dinov2_with_registers",),
        "dinov2_with_registers",
        "encoder.layer",
        has_pooler=False,
        classifier_reads_patch_mean=True,
    ),
    PixelBaselineAdapter("ResNet", ("resnet",), "resnet", "channels_first"),
    PixelBaselineAdapter(
        "ConvNeXt",
        ("convnext",),
        "convnext",
        "channels_first",
        cell_norm=True,
        pool_linear_head=False,
    ),
    PixelBaselineAdapter("Swin", ("swin",), "swin", "tokens", has_pooler=True),
):
    for _model_type in _adapter.model_types:
        ADAPTERS[_model_type] = _adapter


def supported_model_types() -> list[str]:
    return sorted(ADAPTERS)


def get_adapter(config: PreTrainedConfig) -> Adapter:
    """The adapter for ``config.model_type``; a clear error naming the supported families."""
    model_type = getattr(config, "model_type", None)
    if model_type not in ADAPTERS:
        families = ", ".join(f"{a.family} ({'/'.join(a.model_types)})" for a in _unique_adapters())
        raise ValueError(
            f"Backbone model_type {model_type!r} is not supported by ShapleyForImageClassification. "
            f"Supported families: {families}. Pick a checkpoint of one of these families, or open an "
            "issue to request an adapter for this one."
        )
    return ADAPTERS[model_type]


@contextlib.contextmanager
def classifier_tokens_only(model: PreTrainedModel) -> Iterator[bool]:
    """While active, a plain token-removal classifier computes its last encoder block for the
    special tokens only (:func:`block_for_leading_tokens`): its head reads the CLS token
    (DeiT's also the distillation token), so the patch tokens' last block is wasted work (about
    18% of a training step of the main job's ViT). The patch tokens leave that block unchanged
    (their values are wrong, and read by nothing); the loss and its gradients are the same.

    Meant for training a stock ``*ForImageClassification`` (``plain_classifier.py``); the
    weights are untouched, so the saved model is an ordinary one. Yields whether it applied:
    ``False`` (nothing changed) for families whose classifier reads the patch tokens (DINOv2),
    pixel-baseline families and blocks of an unknown layout.
    """
    adapter = ADAPTERS.get(getattr(model.config, "model_type", None))
    base = getattr(model, getattr(adapter, "model_attribute", ""), None)
    if (
        not isinstance(adapter, TokenRemovalAdapter)
        or adapter.classifier_reads_patch_mean
        or base is None
    ):
        yield False
        return
    block = adapter.layers(base)[-1]
    if _layout_of(block) is None:
        yield False
        return
    num_outputs = adapter.num_special_tokens(model.config)

    def forward(hidden_states, attention_mask=None, **kwargs):
        leading = block_for_leading_tokens(block, hidden_states, attention_mask, num_outputs)
        return torch.cat([leading, hidden_states[:, num_outputs:]], dim=1)

    block.forward = forward  # an instance attribute: nn.Module.__call__ finds it first
    try:
        yield True
    finally:
        del block.forward


def _unique_adapters() -> list[Adapter]:
    seen: dict[int, Adapter] = {}
    for adapter in ADAPTERS.values():
        seen.setdefault(id(adapter), adapter)
    return list(seen.values())


def player_index_of_tokens(
    token_grid: tuple[int, int], players_grid: tuple[int, int], grid_name: str = "token"
) -> torch.Tensor:
    """(N,) long: the player of each patch token, row-major over both grids.

    Raises a ``ValueError`` when the players grid does not divide the token grid
    (``grid_name`` names it: "token", or "final feature" for the pixel-baseline families).
    """
    (gh, gw), (ph, pw) = token_grid, players_grid
    if gh % ph or gw % pw:
        divisors_h = [d for d in range(1, gh + 1) if gh % d == 0]
        divisors_w = [d for d in range(1, gw + 1) if gw % d == 0]
        raise ValueError(
            f"players_grid={tuple(players_grid)} does not divide the backbone's {gh} x {gw} "
            f"{grid_name} grid. Choose rows from {divisors_h} and columns from {divisors_w}."
        )
    rows = torch.arange(gh).div(gh // ph, rounding_mode="floor")
    cols = torch.arange(gw).div(gw // pw, rounding_mode="floor")
    return (rows[:, None] * pw + cols[None, :]).reshape(-1)


def player_index_of_pixels(
    image_size: tuple[int, int], players_grid: tuple[int, int]
) -> torch.Tensor:
    """(H, W) long: the player of each pixel, row-major, for the pixel-baseline families.

    Player (r, c) owns pixel rows ``[r * H / h, (r + 1) * H / h)`` and the same for columns: the
    pixels under its cells of the final feature map when the strides divide the image size.
    """
    (height, width), (ph, pw) = image_size, players_grid
    rows = torch.arange(height) * ph // height
    cols = torch.arange(width) * pw // width
    return rows[:, None] * pw + cols[None, :]


@dataclass
class LoadedBackbone:
    """What :func:`load_backbone` found: a base model (or only a config), a classifier head, a processor."""

    config: PreTrainedConfig
    model: PreTrainedModel | None = None
    classifier: nn.Module | None = None
    image_processor: Any = None

    def backbone_state_dict(self) -> dict[str, torch.Tensor]:
        return self.model.state_dict()


def load_backbone(
    source: str | os.PathLike | PreTrainedConfig | PreTrainedModel,
    *,
    load_image_processor: bool = True,
) -> LoadedBackbone:
    """Resolve ``from_backbone``'s argument into a base model and, for a classifier, its head.

    A path or Hub id is loaded as an image classifier when its config names a
    ``*ForImageClassification`` architecture, else as a bare backbone. A config gives random
    weights (no model). A model object is split into its base model and classifier head.
    """
    if isinstance(source, PreTrainedConfig):
        get_adapter(source)
        return LoadedBackbone(config=source)
    if isinstance(source, PreTrainedModel):
        return _split_model(source)
    if not isinstance(source, (str, os.PathLike)):
        raise TypeError(
            "from_backbone takes a Hub id or local directory, a PreTrainedConfig or a PreTrainedModel; "
            f"got {type(source).__name__}."
        )
    from transformers import (
        AutoConfig,
        AutoImageProcessor,
        AutoModel,
        AutoModelForImageClassification,
    )

    config = AutoConfig.from_pretrained(source)
    get_adapter(config)
    architectures = getattr(config, "architectures", None) or []
    if any(a.endswith("ForImageClassification") for a in architectures):
        loaded = _split_model(AutoModelForImageClassification.from_pretrained(source))
    else:
        loaded = _split_model(AutoModel.from_pretrained(source))
    if load_image_processor:
        try:
            loaded.image_processor = AutoImageProcessor.from_pretrained(source)
        except (OSError, ValueError):
            loaded.image_processor = None  # a bare checkpoint may ship none; the user brings one
    return loaded


def _split_model(model: PreTrainedModel) -> LoadedBackbone:
    adapter = get_adapter(model.config)
    base = getattr(model, adapter.model_attribute, None)
    if base is None:  # already the base model (ViTModel, Dinov2Model, ...)
        return LoadedBackbone(config=model.config, model=model)
    classifier = _linear_head(getattr(model, "classifier", None))
    if not isinstance(classifier, nn.Linear):
        raise ValueError(
            f"{type(model).__name__} has no single linear `classifier` head to explain. Wrap its base "
            f"model instead (model.{adapter.model_attribute}) and train a Shapley head for your labels."
        )
    return LoadedBackbone(config=model.config, model=base, classifier=classifier)


def describe_label_difference(given: dict[int, str], expected: dict[int, str]) -> str:
    """What separates two label mappings, in words, for an error message (they differ)."""
    missing = sorted(set(expected.values()) - set(given.values()))
    extra = sorted(set(given.values()) - set(expected.values()))
    if missing or extra:
        return f"lacks the classifier's labels {missing} and has labels it does not know {extra}"
    moved = [(i, given[i], expected[i]) for i in sorted(expected) if given.get(i) != expected[i]]
    shown = ", ".join(f"{i}: {g!r} (classifier: {e!r})" for i, g, e in moved[:4])
    return f"has the same labels in another order ({shown}{', ...' if len(moved) > 4 else ''})"


def _linear_head(classifier: nn.Module | None) -> nn.Module | None:
    """The linear layer of a head that is one, possibly behind a flatten (ResNet's
    ``Sequential(Flatten, Linear)``); the head itself otherwise."""
    if isinstance(classifier, nn.Sequential):
        layers = [m for m in classifier if not isinstance(m, (nn.Flatten, nn.Identity))]
        if len(layers) == 1 and isinstance(layers[0], nn.Linear):
            return layers[0]
    return classifier


# --------------------------------------------------------------------------------------
# from_backbone: wrapping a backbone or a fine-tuned classifier
# --------------------------------------------------------------------------------------


def wrap_backbone(
    model_class: type,
    backbone: str | os.PathLike | PreTrainedConfig | PreTrainedModel,
    *,
    num_labels: int | None = None,
    id2label: dict[int, str] | None = None,
    label2id: dict[str, int] | None = None,
    players_grid: tuple[int, int] | None = None,
    prediction_mode: str | None = None,
    train_backbone: bool | None = None,
    load_image_processor: bool = True,
    **config_kwargs: Any,
):
    """``ShapleyForImageClassification.from_backbone``: wrap a backbone or a fine-tuned classifier.

    Args:
        model_class: the class to build (``from_backbone`` is this function as a classmethod).
        backbone: A Hub id or local directory, a backbone config (random weights), or a
            model object: a bare backbone (``ViTModel``) or an image classifier
            (``ViTForImageClassification``), whose weights are kept.
        num_labels, id2label, label2id: The labels. A classifier's labels are inherited;
            giving a different count is an error.
        players_grid: ``(h, w)``, dividing the backbone's token grid (final feature grid for
            ResNet, ConvNeXt, Swin).
        prediction_mode: Defaults to ``"backbone_head"`` for a fine-tuned classifier (its
            CLS-token head cannot become soft voting) and ``"shapley_sum"`` otherwise. A
            ResNet or Swin classifier (average pool + linear) wrapped with ``"shapley_sum"``
            starts from soft voting that reproduces its logits. ``"backbone_head"`` takes the
            explainer recipe ``configuration_shapley.EXPLAINER_DEFAULTS`` (and the family's:
            ``EXPLAINER_TOKEN_REMOVAL_DEFAULTS`` or ``EXPLAINER_PIXEL_BASELINE_DEFAULTS``) for
            every setting not given in ``config_kwargs``.
        train_backbone: Whether the backbone (and, in ``backbone_head`` mode, the classifier's
            head) trains. Defaults to ``False`` in ``backbone_head`` mode: a fine-tuned
            classifier is kept as it is, its predictions bit-identical, and only the Shapley
            head learns its fixed game with the frozen recipe
            (``configuration_shapley.FROZEN_EXPLAINER_DEFAULTS``). ``True`` fine-tunes it too
            (its predictions change); ``shapley_sum`` mode always trains.
        load_image_processor: For a path or Hub id, also load the image processor and
            check its size against the backbone's image size. For ResNet, ConvNeXt and Swin
            the processor's output size is the image size unless ``image_size`` is given.
        config_kwargs: Any other ``ShapleyConfig`` field (objective settings...).
    """
    from .configuration_shapley import (
        EXPLAINER_DEFAULTS,
        EXPLAINER_PIXEL_BASELINE_DEFAULTS,
        EXPLAINER_TOKEN_REMOVAL_DEFAULTS,
        FROZEN_EXPLAINER_DEFAULTS,
        ShapleyConfig,
    )

    loaded = load_backbone(backbone, load_image_processor=load_image_processor)
    backbone_config = loaded.model.config if loaded.model is not None else loaded.config
    adapter = get_adapter(backbone_config)

    is_classifier = loaded.classifier is not None
    if is_classifier:
        inherited = dict(backbone_config.id2label)
        if num_labels is not None and num_labels != len(inherited):
            raise ValueError(
                f"The classifier has {len(inherited)} labels ({list(inherited.values())[:5]}...) but "
                f"num_labels={num_labels} was given. Drop num_labels to keep its head, or wrap the "
                "bare backbone (e.g. ViTModel) to train a new head for your labels."
            )
        if id2label is not None:
            given = {int(k): v for k, v in id2label.items()}
            if given != inherited:
                raise ValueError(
                    "A fine-tuned classifier keeps its own labels, in its own order: id2label "
                    f"{describe_label_difference(given, inherited)}. Drop id2label, and map your "
                    "data's labels onto the classifier's order "
                    "(hf_shapley.data.align_labels(dataset, model.config.id2label))."
                )
        id2label = inherited
    if id2label is not None:
        id2label = {int(k): v for k, v in id2label.items()}
        if num_labels is not None and num_labels != len(id2label):
            raise ValueError(f"num_labels={num_labels} but id2label has {len(id2label)} entries.")
        num_labels = len(id2label)
        label2id = label2id or {v: k for k, v in id2label.items()}
    if num_labels is None:
        raise ValueError("num_labels (or id2label) is required when wrapping a bare backbone.")

    mode = prediction_mode or ("backbone_head" if is_classifier else "shapley_sum")
    if mode == "backbone_head" and not is_classifier:
        raise ValueError(
            "prediction_mode='backbone_head' explains a classifier's own head, but a bare "
            "backbone has none. Pass a fine-tuned *ForImageClassification model or use "
            "prediction_mode='shapley_sum'."
        )
    if train_backbone is None:
        train_backbone = mode != "backbone_head"
    elif not train_backbone and mode != "backbone_head":
        raise ValueError(
            "train_backbone=False keeps a fine-tuned classifier as it is, but "
            f"prediction_mode={mode!r} has no classifier head to keep (a bare backbone, or soft "
            "voting): pass a *ForImageClassification checkpoint with "
            "prediction_mode='backbone_head', or let the backbone train (train_backbone=True)."
        )
    backbone_config = _strip_classifier_fields(backbone_config)
    if (
        adapter.removal == "pixel_baseline"
        and config_kwargs.get("image_size") is None
        and loaded.image_processor is not None
    ):
        # ResNet configs carry no image size (and a ConvNeXt's or Swin's is often the
        # pretraining one): the checkpoint's own processor says what the classifier was fed.
        config_kwargs["image_size"] = processor_image_size(loaded.image_processor)
    if mode == "backbone_head":
        family_defaults = dict(
            EXPLAINER_TOKEN_REMOVAL_DEFAULTS
            if adapter.removal == "token_removal"
            else EXPLAINER_PIXEL_BASELINE_DEFAULTS
        )
        if adapter.removal == "pixel_baseline" and not adapter.stages_fit_final_width(
            backbone_config
        ):
            del family_defaults["head_reads_hidden_states"]
        # The attention slot needs blocks whose query and key maps it can read (not DINOv2's),
        # and rides on the every-depth head.
        if "head_reads_attention" in family_defaults and (
            loaded.model is None
            or config_kwargs.get("head_reads_hidden_states") is False
            or attention_features_per_token(adapter.layers(loaded.model)) is None
        ):
            del family_defaults["head_reads_attention"]
        recipe_defaults = {} if train_backbone else dict(FROZEN_EXPLAINER_DEFAULTS)
        config_kwargs = {
            **EXPLAINER_DEFAULTS,
            **family_defaults,
            **recipe_defaults,
            **config_kwargs,
        }
    config = ShapleyConfig(
        backbone_config=backbone_config,
        num_labels=num_labels,
        id2label=id2label,
        label2id=label2id,
        players_grid=players_grid,
        prediction_mode=mode,
        train_backbone=train_backbone,
        classifier_in_features=adapter.classifier_in_features(backbone_config)
        if mode == "backbone_head"
        else None,
        **config_kwargs,
    )
    model = model_class(config)
    if loaded.model is not None:
        missing, unexpected = model.backbone.load_state_dict(
            loaded.backbone_state_dict(), strict=False
        )
        unexpected = [k for k in unexpected if not k.startswith("pooler.")]
        if missing or unexpected:
            raise ValueError(
                f"Backbone weights do not fit the {adapter.family} adapter: missing {missing[:5]}, "
                f"unexpected {unexpected[:5]}."
            )
    if mode == "backbone_head":
        model.classifier.load_state_dict(loaded.classifier.state_dict())
    elif is_classifier and getattr(adapter, "pool_linear_head", False):
        _init_soft_voting_from_classifier(model, loaded.classifier)
    if loaded.image_processor is not None:
        _check_image_processor_size(loaded.image_processor, model.image_size)
        model.image_processor = loaded.image_processor
    return model


@torch.no_grad()
def _init_soft_voting_from_classifier(model: nn.Module, classifier: nn.Linear) -> None:
    """Soft voting that reproduces an average-pool + linear classifier (ResNet, Swin):
    ``r_c = W f_c / N`` per final cell, ``b = bias``, so ``b + sum_c r_c = W mean_c f_c + bias``:
    its logits exactly with ``center_votes=False``; with centered votes (the default for these
    families) its logits minus their mean over classes plus that of the bias, so the same
    probabilities and predictions."""
    head = model.shapley_head
    if head.dense is not None:
        return  # a hidden layer cannot copy a linear map exactly: keep the random init
    num_cells = math.prod(model.token_grid)
    head.out_proj.weight.copy_(classifier.weight / num_cells)
    head.out_proj.bias.zero_()
    if classifier.bias is not None:
        model.shapley_bias.copy_(classifier.bias)
    else:
        model.shapley_bias.zero_()


def _strip_classifier_fields(config: PreTrainedConfig) -> PreTrainedConfig:
    """A copy of a backbone config; its labels live in the ShapleyConfig, not the backbone's."""
    config = config.__class__.from_dict(config.to_dict())
    config.architectures = None
    return config


def processor_image_size(processor) -> tuple[int, int] | None:
    """The (height, width) an image processor's output has: its crop size when it crops, else
    its ``size`` (``shortest_edge`` read as a square, as ConvNeXt's and ResNet's processors
    output); ``None`` when it does not say."""
    size = (
        getattr(processor, "crop_size", None)
        if getattr(processor, "do_center_crop", False)
        else None
    )
    size = size or getattr(processor, "size", None)
    if size is None:
        return None
    size = dict(size)
    height, width = size.get("height"), size.get("width")
    if height is None and "shortest_edge" in size:
        height = width = size["shortest_edge"]
    if height is None or width is None:
        return None
    return int(height), int(width)


def _check_image_processor_size(processor, image_size: tuple[int, int]) -> None:
    size = processor_image_size(processor)
    if size is None:
        return
    height, width = size
    if (height, width) != tuple(image_size):
        raise ValueError(
            f"The image processor resizes to {height} x {width} but the backbone expects "
            f"{image_size[0]} x {image_size[1]}. Fix the processor's `size` (or `crop_size`) before wrapping."
        )


__all__ = [
    "CLIP_VISION_ADAPTER",
    "CLIPVisionAdapter",
    "LoadedBackbone",
    "PixelBaselineAdapter",
    "TokenRemovalAdapter",
    "block_for_leading_tokens",
    "classifier_tokens_only",
    "describe_label_difference",
    "get_adapter",
    "load_backbone",
    "player_index_of_pixels",
    "player_index_of_tokens",
    "processor_image_size",
    "supported_model_types",
    "wrap_backbone",
]
