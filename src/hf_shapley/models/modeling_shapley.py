"""Self-explaining image classification: ``ShapleyForImageClassification``.

A vision backbone with a Shapley head whose logits explain themselves. With
``prediction_mode="shapley_sum"`` (soft voting, Fan, Yang and Ma, AAAI 2026) the prediction is

    logits(x) = b + sum_i r_i(x),          r_i(x) = sum of the head over player i's tokens,

and ``prediction_mode="backbone_head"`` keeps a wrapped classifier's own head for the logits and
trains the Shapley head as an auxiliary explainer of it. Either way
``logits == base_values + shapley_values.sum(1)``, where ``base_values = v(empty)``.

The file holds the model and its two *readouts* (how present features become logits, one per
prediction mode); how players are removed is the model's *game* (``games_shapley.py``), and the
training loss is a pure function of tensors (``objective.py``). Training
(``forward(pixel_values, labels=...)`` in training mode) makes ``shapley_values`` the Shapley
values of the model's own masked predictions ``v_x(S) = model(x, coalition=S)``.

This file is shipped as remote code: relative imports only.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedConfig, PreTrainedModel
from transformers import initialization as init
from transformers.utils import ModelOutput

from .backbones import attention_features_per_token, get_adapter, wrap_backbone
from .coalitions import coalitions_per_image
from .configuration_shapley import CUSTOM_PIPELINES, PIPELINE_MODULE, ShapleyConfig
from .games_shapley import (
    CoalitionValueCache,
    FullPassCache,
    GameExplanation,
    GameGeometry,
    PlayerView,
    ShapleyGame,
    build_game,
)
from .loss_shapley import ShapleyTrainingLoss


@dataclass
class ShapleyImageClassifierOutput(ModelOutput):
    """Output of :class:`ShapleyForImageClassification`.

    Args:
        loss (`torch.FloatTensor` of shape `()`, *optional*):
            In training mode with labels: the joint objective. In eval mode: cross-entropy.
        logits (`torch.FloatTensor` of shape `(B, K)`, or `(B, M, K)` with a 3D `coalition`):
            Class logits; with ``coalition=`` the value function ``v_x(S)``.
        shapley_values (`torch.FloatTensor` of shape `(B, P, K)`):
            One value per player and class; ``logits == base_values + shapley_values.sum(1)``.
        base_values (`torch.FloatTensor` of shape `(B, K)`):
            ``v(empty)``, the prediction with every player removed.
        cls_loss, distill_loss, shapley_loss, consistency_loss (`torch.FloatTensor` of shape `()`, *optional*):
            Components of the joint training objective.
    """

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    shapley_values: torch.FloatTensor | None = None
    base_values: torch.FloatTensor | None = None
    cls_loss: torch.FloatTensor | None = None
    distill_loss: torch.FloatTensor | None = None
    shapley_loss: torch.FloatTensor | None = None
    consistency_loss: torch.FloatTensor | None = None


def pre_norm_encoder_layer(layer: nn.TransformerEncoderLayer, x: torch.Tensor) -> torch.Tensor:
    """``layer(x)`` for the head's mixer layers (``norm_first``, ``batch_first``, GELU), computed
    from the layer's own parameters: (B, N, D) -> (B, N, D).

    ``nn.TransformerEncoderLayer`` in training mode projects q, k and v through copies into a
    contiguous packed tensor and zero-filled gradient buffers; reading them as views of one
    projection gives the same values (forward bit-identical here) with a head training step of
    the main job about 1.2x faster. The parameters and the saved weights are the layer's.
    """
    attention = layer.self_attn
    batch, length, width = x.shape
    heads = attention.num_heads
    qkv = F.linear(layer.norm1(x), attention.in_proj_weight, attention.in_proj_bias)
    q, k, v = qkv.view(batch, length, 3, heads, width // heads).permute(2, 0, 3, 1, 4)
    attended = F.scaled_dot_product_attention(
        q, k, v, dropout_p=attention.dropout if layer.training else 0.0
    )
    attended = attention.out_proj(attended.transpose(1, 2).reshape(batch, length, width))
    x = x + layer.dropout1(attended)
    hidden = layer.dropout(layer.activation(layer.linear1(layer.norm2(x))))
    return x + layer.dropout2(layer.linear2(hidden))


class ShapleyHead(nn.Module):
    """Per-token head: (..., D) features -> (..., K) contributions, always computed in fp32.

    The head, the sums over tokens and the base value stay in fp32 under bf16 autocast: the
    Shapley values are small differences of large sums, and efficiency must hold to fp32
    precision.
    """

    def __init__(
        self,
        hidden_size: int,
        num_labels: int,
        head_hidden_size: int = 0,
        dropout: float = 0.0,
        num_layers: int = 0,
        num_hidden_states: int = 1,
        width: int = 0,
    ):
        super().__init__()
        # width: where the layers below work; one linear map reaches it from the features.
        width = width or hidden_size
        # num_hidden_states > 1: each token arrives at every depth of the backbone, (..., L + 1,
        # D). Each depth is normalized, then one linear map mixes them back to D: the early
        # depths keep what the patch shows, the late ones what the classifier made of it
        # (explainer study: pooled error 0.257 -> 0.227 on one game, for one matrix).
        self.hidden_states_mix = None
        if num_hidden_states > 1:
            self.hidden_states_mix = nn.Sequential(
                nn.LayerNorm(hidden_size, elementwise_affine=False),
                nn.Flatten(-2),
                nn.Linear(num_hidden_states * hidden_size, width),
            )
        self.input_proj = (
            nn.Linear(hidden_size, width)
            if width != hidden_size and self.hidden_states_mix is None
            else None
        )
        self.dropout = nn.Dropout(dropout)
        # Optional self-attention over the tokens before the per-token projection (backbone_head
        # mode only: the explainer sees the full image, never a packed pair of coalitions). A
        # player's Shapley value depends on the whole image; a per-token map of features
        # trained for classification reaches it only so far.
        self.mixer = None
        if num_layers > 0:
            heads = next(h for h in (8, 4, 2, 1) if width % h == 0)
            layer = nn.TransformerEncoderLayer(
                width,
                heads,
                dim_feedforward=2 * width,
                dropout=dropout,
                activation="gelu",
                batch_first=True,
                norm_first=True,
            )
            self.mixer = nn.TransformerEncoder(layer, num_layers, enable_nested_tensor=False)
        if head_hidden_size > 0:
            self.dense = nn.Linear(width, head_hidden_size)
            self.activation = nn.GELU()
            self.out_proj = nn.Linear(head_hidden_size, num_labels)
        else:
            self.dense = None
            self.out_proj = nn.Linear(width, num_labels)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """(..., D) token features, or (..., L + 1, D) with ``num_hidden_states = L + 1`` ->
        (..., K) fp32 contributions."""
        with torch.autocast(device_type=features.device.type, enabled=False):
            x = features.to(self.out_proj.weight.dtype)
            if self.hidden_states_mix is not None:
                x = self.hidden_states_mix(x)
            elif self.input_proj is not None:
                x = self.input_proj(x)
            x = self.dropout(x)
            if self.mixer is not None:
                for layer in self.mixer.layers:
                    x = pre_norm_encoder_layer(layer, x)
            if self.dense is not None:
                x = self.activation(self.dense(x))
            return self.out_proj(x).float()


def additive_efficiency(votes: torch.Tensor, gap: torch.Tensor) -> torch.Tensor:
    """The one place efficiency is imposed: ``phi_i = r_i + gap / P``.

    Args:
        votes: (B, P, K) per-player values ``r``.
        gap: (B or 1, K), ``v(all) - v(empty) - sum_i r_i``.

    Returns:
        (B, P, K) values whose sum over players is exactly ``v(all) - v(empty)``.
    """
    return votes + gap[:, None] / votes.shape[1]


@dataclass(frozen=True)
class SoftVotingReadout:
    """``prediction_mode="shapley_sum"``: a row's logits are ``b`` plus the votes of its voting
    tokens. Built by the model on every call (parameters are replaced when weights load)."""

    reads_tokens: ClassVar[bool] = True

    head: ShapleyHead
    bias: nn.Parameter
    center_votes: bool

    def modules(self) -> tuple[nn.Module, ...]:
        return (self.head,)

    def votes(self, tokens: torch.Tensor) -> torch.Tensor:
        """(n, N, D) -> (n, N, K): the head's output, minus its mean over classes with
        ``center_votes`` (softmax-invariant, so predictions keep)."""
        votes = self.head(tokens)
        if self.center_votes:
            votes = votes - votes.mean(-1, keepdim=True)
        return votes

    def vote_sum(self, view: PlayerView) -> torch.Tensor:
        """(n, K): the summed votes of each row's voting tokens (``voting`` None or (n, N))."""
        votes = self.votes(view.tokens)
        if view.voting is None:
            return votes.sum(1)
        return (votes * view.voting.to(votes.dtype)[..., None]).sum(1)

    def value(self, view: PlayerView) -> torch.Tensor:
        bias = self.bias.float()
        voting = view.voting
        if voting is None or voting.ndim == 2:
            return bias + self.vote_sum(view)
        # G coalitions a row: the shared tokens' votes once, then one value per coalition,
        # each with its own bias term as separate coalitions would have.
        votes = self.votes(view.tokens)
        weights = voting.to(votes.dtype)[..., None]
        return torch.stack(
            [bias + (votes * weights[:, g]).sum(1) for g in range(voting.shape[1])], dim=1
        )

    def explain(self, full, empty, player_sum, empty_statistics) -> GameExplanation:
        bias = self.bias.float()
        with empty_statistics():
            # v(empty) - b: the votes of the empty coalition (none with token removal, the
            # baseline image's otherwise). v(all) - v(empty) - sum_i r_i = -offset.
            offset = self.vote_sum(empty)
        r = player_sum(self.votes(full.tokens))
        logits = bias.expand(r.shape[0], -1) + r.sum(1)
        phi = additive_efficiency(r, -offset)
        return GameExplanation(logits, phi, (bias + offset).expand_as(logits))


@dataclass(frozen=True)
class PlayerVotesReadout:
    """Each player's vote instead of their sum: a row's value is ``(P * K,)``, player-major
    (``(n, G, P * K)`` for G coalitions a row). An absent player's entry is 0 with token
    removal; with a pixel baseline every player votes. Soft voting only.

    Used for the vote-consistency term (``objective.py``) and the vote-influence matrix
    (``hf_shapley.evaluation.vote_influence``): both need who cast which votes in a masked
    context, from the passes that give ``v(S)``.
    """

    reads_tokens: ClassVar[bool] = True

    voting: SoftVotingReadout
    player_sum: Callable[[torch.Tensor], torch.Tensor]

    def modules(self) -> tuple[nn.Module, ...]:
        return self.voting.modules()

    def value(self, view: PlayerView) -> torch.Tensor:
        votes = self.voting.votes(view.tokens)
        weights = view.voting
        if weights is None:
            return self.player_sum(votes).flatten(1)
        if weights.ndim == 2:
            return self.player_sum(votes * weights.to(votes.dtype)[..., None]).flatten(1)
        groups = [weights[:, g].to(votes.dtype)[..., None] for g in range(weights.shape[1])]
        return torch.stack([self.player_sum(votes * w).flatten(1) for w in groups], dim=1)


@dataclass(frozen=True)
class ClassifierReadout:
    """``prediction_mode="backbone_head"``: the wrapped classifier gives the logits; the Shapley
    head explains them, efficiency imposed by spreading ``v(all) - v(empty) - sum_i r_i``
    evenly over the players. With ``train_backbone=False`` (or ``detach_head_features``) the
    head reads detached features."""

    reads_tokens: ClassVar[bool] = False

    classifier: nn.Linear
    head: ShapleyHead
    head_gradients: bool  # whether the head's loss reaches the backbone

    def modules(self) -> tuple[nn.Module, ...]:
        return (self.classifier, self.head)

    def value(self, view: PlayerView) -> torch.Tensor:
        features = view.classifier_features()
        if isinstance(features, tuple):  # G coalitions a row
            return torch.stack([self.classifier(f).float() for f in features], dim=1)
        return self.classifier(features).float()

    def explain(self, full, empty, player_sum, empty_statistics) -> GameExplanation:
        logits = self.value(full)
        with empty_statistics():
            empty = self.value(empty)
        features = full.tokens if self.head.hidden_states_mix is None else full.hidden_states()
        return self.explain_features(features, logits, empty, player_sum)

    def explain_features(self, features, logits, empty, player_sum) -> GameExplanation:
        """The head's explanation from what it reads (``features``: (B, N, D), or (B, N, L + 1,
        D) for a head that reads every depth) and the pass's (B, K) ``logits`` and ``empty``:
        all that a kept full pass (``FullPassCache``) needs to give."""
        if self.head_gradients:
            r = player_sum(self.head(features))
            gap = (logits - empty) - r.sum(1)
        else:
            # The head's losses reach the head alone: not the backbone through the features,
            # nor the classifier through the efficiency gap.
            r = player_sum(self.head(features.detach()))
            gap = (logits - empty).detach() - r.sum(1)
        phi = additive_efficiency(r, gap)
        return GameExplanation(logits, phi, empty.expand_as(logits), head_features=features)


class ShapleyPreTrainedModel(PreTrainedModel):
    config_class = ShapleyConfig
    config: ShapleyConfig
    base_model_prefix = "shapley"
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    # The joint loss is computed inside forward; the Trainer must not rescale it.
    accepts_loss_kwargs = False

    def _init_weights(self, module: nn.Module) -> None:
        std = self.config.initializer_range
        if isinstance(module, nn.Linear):
            init.trunc_normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, ShapleyGame):
            # Non-persistent buffers are not in the checkpoint: rebuild them on every load.
            module.reset_buffers()
        elif isinstance(module, ShapleyForImageClassification):
            init.zeros_(module.shapley_bias)


class ShapleyForImageClassification(GameGeometry, ShapleyPreTrainedModel):
    r"""A vision backbone with a Shapley head whose logits explain themselves.

    Example:

    ```python
    >>> import hf_shapley
    >>> from transformers import ViTConfig
    >>> config = hf_shapley.ShapleyConfig(backbone_config=ViTConfig(), num_labels=10, players_grid=(7, 7))
    >>> model = hf_shapley.ShapleyForImageClassification(config).eval()
    >>> out = model(pixel_values)                       # (B, 3, 224, 224)
    >>> out.shapley_values.shape                        # (B, 49, 10)
    >>> v = model(pixel_values, coalition=mask).logits  # mask: bool (B, 49), True = present
    ```
    """

    def __init__(self, config: ShapleyConfig):
        super().__init__(config)
        if config.backbone_config is None:
            raise ValueError("ShapleyConfig.backbone_config is required.")
        backbone_config = config.backbone_config
        adapter = get_adapter(backbone_config)
        self.backbone = adapter.build(backbone_config)
        # The game: players, their removal and v(S). Holds buffers only; borrows the backbone.
        self.game = build_game(config, adapter, self.backbone)
        # Soft voting with class-centered votes (None: on for the pixel-baseline families).
        self.center_votes = bool(
            config.center_votes
            if config.center_votes is not None
            else adapter.removal == "pixel_baseline"
        )
        self.num_labels = config.num_labels
        if (
            config.head_reads_hidden_states
            and adapter.removal == "pixel_baseline"
            and not adapter.stages_fit_final_width(backbone_config)
        ):
            raise ValueError(
                f"head_reads_hidden_states=True reads every stage zero-padded to the final "
                f"features' {adapter.hidden_size(backbone_config)} channels, but this "
                f"{adapter.family} backbone's stages have {adapter.stage_channels(backbone_config)}. "
                "Set head_reads_hidden_states=False."
            )
        if config.head_reads_attention:
            count = attention_features_per_token(
                adapter.layers(self.backbone), config.head_attention_from
            )
            if count is None:
                raise ValueError(
                    f"head_reads_attention=True needs ViT- or DeiT-like blocks (separate query and "
                    f"key maps); the {adapter.family} backbone's are not. Set "
                    "head_reads_attention=False."
                )
            # The attention rides in one more input slot of the head, zero-padded to D.
            if count > adapter.hidden_size(backbone_config):
                raise ValueError(
                    f"head_reads_attention=True: {count} attention features per token "
                    f"(head_attention_from={config.head_attention_from!r}) exceed the hidden size "
                    f"{adapter.hidden_size(backbone_config)}. Set head_attention_from='class' or "
                    "head_reads_attention=False."
                )
        self.shapley_head = ShapleyHead(
            adapter.hidden_size(backbone_config),
            config.num_labels,
            config.head_hidden_size,
            config.head_dropout,
            config.head_num_layers,
            self._num_head_inputs(config, adapter),
            config.head_width,
        )
        # b: the prediction of the empty coalition in soft-voting mode.
        self.shapley_bias = nn.Parameter(torch.zeros(config.num_labels))
        if config.prediction_mode == "backbone_head":
            in_features = config.classifier_in_features or adapter.classifier_in_features(
                backbone_config
            )
            config.classifier_in_features = in_features
            self.classifier = nn.Linear(in_features, config.num_labels)
        else:
            self.classifier = None
        # Attached by from_backbone, saved by save_pretrained, reloaded by from_pretrained.
        self.image_processor = None
        # The training step's loss, called by forward in training mode.
        self.loss_function = ShapleyTrainingLoss()
        # reuse_shapley_coalitions: the frozen game's values per training example.
        self.coalition_value_cache = CoalitionValueCache()
        # ... and its full passes, within a memory budget (ShapleyTrainer sets it from
        # ShapleyTrainingArguments.frozen_pass_cache_gb; 0 keeps nothing).
        self.full_pass_cache = FullPassCache()
        self.post_init()
        self._apply_train_backbone()

    def _num_head_inputs(self, config: ShapleyConfig, adapter) -> int:
        """How many feature vectors the head reads per token: 1, or every depth (token removal:
        the embeddings and each block, then the attention slot; pixel baseline: the stem's
        output and each stage)."""
        if not config.head_reads_hidden_states:
            return 1
        if adapter.removal == "pixel_baseline":
            return len(adapter.stage_channels(config.backbone_config))
        return len(adapter.layers(self.backbone)) + 1 + int(config.head_reads_attention)

    # ------------------------------------------------------------------ geometry
    @property
    def adapter(self):
        """The backbone family's adapter (``backbones.py``)."""
        return self.game.adapter

    @property
    def tokens_per_player(self) -> int:
        return self.game.tokens_per_player

    @property
    def readout(self) -> SoftVotingReadout | ClassifierReadout:
        """How present features become logits (the prediction mode), over the current modules."""
        if self.classifier is None:
            return SoftVotingReadout(self.shapley_head, self.shapley_bias, self.center_votes)
        config = self.config
        head_gradients = config.train_backbone and not config.detach_head_features
        return ClassifierReadout(self.classifier, self.shapley_head, head_gradients)

    # ------------------------------------------------------------------ construction
    # Wrap a backbone or a fine-tuned classifier; documented and implemented next to the family
    # adapters (backbones.wrap_backbone).
    from_backbone = classmethod(wrap_backbone)

    @classmethod
    def from_pretrained(cls, *args: Any, **kwargs: Any):
        # Loading replaces every parameter with a fresh one that requires grad, undoing the
        # freezing done in __init__ (train_backbone=False, unused parameters): redo it.
        result = super().from_pretrained(*args, **kwargs)
        model = result[0] if isinstance(result, tuple) else result
        model._apply_train_backbone()
        # The image processor saved beside the model comes back with it (save_pretrained wrote
        # it), so that a reloaded model publishes and explains as the saved one did.
        if args and os.path.isfile(os.path.join(str(args[0]), "preprocessor_config.json")):
            from transformers import AutoImageProcessor

            model.image_processor = AutoImageProcessor.from_pretrained(str(args[0]))
        return result

    def _frozen_classifier(self) -> bool:
        return self.classifier is not None and not self.config.train_backbone

    def _apply_train_backbone(self) -> None:
        frozen = self._frozen_classifier()
        for module in (self.backbone, self.classifier):
            if module is not None:
                module.requires_grad_(not frozen)
        # Parameters no forward uses must not require grad: DDP without find_unused_parameters
        # (a plain Accelerate loop; the Trainer with gradient checkpointing) fails on them.
        # The soft-voting bias is unused in backbone_head mode; DINOv2's mask_token always
        # (it is only read with bool_masked_pos).
        self.shapley_bias.requires_grad_(self.classifier is None)
        mask_token = getattr(getattr(self.backbone, "embeddings", None), "mask_token", None)
        if isinstance(mask_token, nn.Parameter):
            mask_token.requires_grad_(False)

    def train(self, mode: bool = True):
        """A frozen classifier (``backbone_head`` with ``train_backbone=False``) stays in eval
        mode, so that its predictions and BatchNorm statistics never change. (The game drops
        its cached ``v(empty)`` on every mode change.)"""
        super().train(mode)
        if mode and self._frozen_classifier():
            self.backbone.eval()
            self.classifier.eval()
        return self

    def clear_baseline_cache(self) -> None:
        """Forget the game's cached ``v(empty)`` (the special tokens alone, or the baseline
        image) and the kept coalition values and full passes; call it after editing weights in
        place while the model stays in eval mode (``train()``, ``eval()``, weight loading and
        device or dtype moves do it)."""
        self.game.clear_cache()
        self.coalition_value_cache.clear()
        self.full_pass_cache.clear()

    def save_pretrained(self, save_directory: str | os.PathLike, *args, **kwargs) -> None:
        """Save weights, config, code and image processor: a directory that loads everywhere.

        Besides what transformers writes, the config gets an ``auto_map`` entry for
        ``AutoModel`` and a ``custom_pipelines`` entry for the ``image-shapley-explanation``
        pipeline, whose code ``custom_object_save`` copies beside the model code, so that
        ``pipeline("image-shapley-explanation", model=dir, trust_remote_code=True)`` works in
        a process without hf-shapley.
        """
        parent_save = super().save_pretrained
        save_with_remote_code(
            self,
            save_directory,
            lambda directory: parent_save(directory, *args, **kwargs),
            _pipeline_class(),
            CUSTOM_PIPELINES,
            self.image_processor,
        )

    # ------------------------------------------------------------------ validation
    def _check_pixel_values(self, pixel_values: torch.Tensor) -> None:
        channels = getattr(self.config.backbone_config, "num_channels", 3)
        check_pixel_values(pixel_values, channels, self.image_size)

    # ------------------------------------------------------------------ forward
    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        coalition: torch.Tensor | None = None,
        example_index: torch.Tensor | None = None,
        epoch: int | None = None,
        global_step: int | None = None,
        return_dict: bool | None = None,
    ) -> ShapleyImageClassifierOutput | tuple:
        r"""
        Args:
            pixel_values (`torch.FloatTensor` of shape `(B, C, H, W)`): Images from the image processor.
            labels (`torch.LongTensor` of shape `(B,)`, *optional*): Class labels; in training
                mode they switch on the joint objective.
            coalition (`torch.BoolTensor` of shape `(B, P)` or `(B, M, P)`, *optional*): Players
                present (True) in each coalition; returns ``v_x(S)`` as ``logits`` of shape
                `(B, K)` or `(B, M, K)`.
            example_index (`torch.LongTensor` of shape `(B,)`, *optional*): Data set index of each
                image, so that training coalitions are a pure function of it (resume, DDP).
            epoch (`int`, *optional*): Epoch, the other key of the training coalitions.
            global_step (`int`, *optional*): Optimizer step, for the warm-up of the loss weights
                (``ShapleyTrainer`` passes it; without it, the count of training forwards).
            return_dict (`bool`, *optional*): ``False`` returns a tuple.
        """
        if pixel_values is None:
            raise ValueError("pixel_values is required.")
        self._check_pixel_values(pixel_values)
        if labels is not None:
            check_labels(labels, pixel_values.shape[0], self.num_labels)
        if coalition is not None:
            masks = coalitions_per_image(coalition, self.num_players, pixel_values.shape[0])
            values = self.coalition_values(pixel_values, masks)
            out = ShapleyImageClassifierOutput(
                logits=values if coalition.ndim == 3 else values[:, 0]
            )
        elif self.training and labels is not None:
            out = self.loss_function(self, pixel_values, labels, example_index, epoch, global_step)
        else:
            out = self.explain(pixel_values)
            if labels is not None:
                out.loss = F.cross_entropy(out.logits, labels)
                out.cls_loss = out.loss
        return out if return_dict is not False else out.to_tuple()

    def explain(self, pixel_values: torch.Tensor) -> ShapleyImageClassifierOutput:
        """The full prediction with its explanation: logits, shapley_values, base_values."""
        explanation = self.game.explain(self.game.prepare(pixel_values), self.readout)
        return ShapleyImageClassifierOutput(
            logits=explanation.logits,
            shapley_values=explanation.shapley_values,
            base_values=explanation.base_values,
        )

    def coalition_values(
        self, pixel_values: torch.Tensor, coalitions: torch.Tensor, *, chunk_size: int | None = None
    ) -> torch.Tensor:
        """``v_x(S)``: (B, C, H, W), bool (B, M, P) -> (B, M, K) fp32 (what ``coalition=`` returns).

        Normalization layers run in eval mode; at most ``chunk_size`` (default
        ``config.coalition_batch_size``) backbone rows per call.
        """
        context = self.game.prepare(pixel_values)
        return self.game.values(context, coalitions, self.readout, chunk_size=chunk_size)

    def activation_checkpointing_enable(
        self, activation_checkpointing_kwargs=None, every_n_layers: int = 1, offload: bool = False
    ):
        """Delegate activation (gradient) checkpointing to the backbone, ``use_reentrant=False``
        unless told otherwise; a clear error for a family whose backbone does not support it."""
        if not getattr(self.backbone, "supports_gradient_checkpointing", False):
            import transformers

            raise ValueError(
                f"Gradient checkpointing is not supported for {self.adapter.family} backbones "
                f"({type(self.backbone).__name__} in transformers {transformers.__version__}). Train "
                "without it (drop gradient_checkpointing=True) or lower the batch size."
            )
        kwargs = {"use_reentrant": False, **(activation_checkpointing_kwargs or {})}
        self.backbone.activation_checkpointing_enable(
            activation_checkpointing_kwargs=kwargs, every_n_layers=every_n_layers, offload=offload
        )


def check_labels(labels: torch.Tensor, batch_size: int, num_labels: int) -> None:
    """Raise a clear error unless ``labels`` is a (batch_size,) tensor of class ids."""
    if labels.shape != (batch_size,):
        raise ValueError(f"labels must have shape ({batch_size},); got {tuple(labels.shape)}.")
    if labels.numel() and (labels.min() < 0 or labels.max() >= num_labels):
        raise ValueError(
            f"labels must lie in [0, {num_labels - 1}] for this {num_labels}-class model; "
            f"got values in [{int(labels.min())}, {int(labels.max())}]. Check the label mapping "
            "(config.id2label) against the data set's labels."
        )


def check_pixel_values(
    pixel_values: torch.Tensor, channels: int, image_size: tuple[int, int]
) -> None:
    """Raise a clear error unless ``pixel_values`` is a finite (B >= 1, channels, H, W) tensor
    of the backbone's ``image_size``."""
    if not isinstance(pixel_values, torch.Tensor):
        raise TypeError(
            f"pixel_values must be a torch.Tensor of shape (B, C, H, W); got {type(pixel_values).__name__}. "
            "Use the model's image processor: processor(images, return_tensors='pt')."
        )
    height, width = image_size
    expected = f"(B, {channels}, {height}, {width})"
    if pixel_values.ndim != 4:
        raise ValueError(
            f"pixel_values must be 4D {expected}; got shape {tuple(pixel_values.shape)}."
        )
    if pixel_values.shape[0] == 0:
        raise ValueError("pixel_values is an empty batch (B = 0); pass at least one image.")
    if pixel_values.shape[1] != channels:
        raise ValueError(
            f"pixel_values has {pixel_values.shape[1]} channels but the backbone expects {channels} "
            f"{expected}. Convert images to RGB (PIL: image.convert('RGB')) before the image processor."
        )
    if tuple(pixel_values.shape[2:]) != (height, width):
        raise ValueError(
            f"pixel_values has size {tuple(pixel_values.shape[2:])} but the backbone was built for "
            f"{height} x {width} {expected}. Resize with the model's image processor, or build the "
            "backbone with a matching image_size."
        )
    if not torch.isfinite(pixel_values).all():
        raise ValueError(
            "pixel_values contains NaN or infinite values; check the image loading and normalization."
        )


def save_with_remote_code(
    model: PreTrainedModel,
    save_directory: str | os.PathLike,
    save: Callable[[str | os.PathLike], None],
    pipeline_class: type | None,
    custom_pipelines: dict[str, Any],
    processor: Any,
) -> None:
    """What the package's models add to ``save_pretrained`` (``save``: transformers' own).

    transformers writes only the saved class into ``auto_map``: an ``AutoModel`` entry is added
    so that ``AutoModel`` loads it too. With the pipeline's code importable, the config gets
    ``custom_pipelines`` and ``custom_object_save`` copies the pipeline's code beside the model
    code, so that ``pipeline(task, model=dir, trust_remote_code=True)`` works without the
    package. The processor (image processor, or CLIP processor) is saved beside them.
    """
    from transformers.dynamic_module_utils import custom_object_save

    entries = {}
    if model._auto_class is not None:
        model_ref = f"{type(model).__module__.split('.')[-1]}.{type(model).__name__}"
        entries["auto_map"] = {**(getattr(model.config, "auto_map", None) or {})}
        entries["auto_map"]["AutoModel"] = model_ref
    if pipeline_class is not None:
        entries["custom_pipelines"] = {
            **(getattr(model.config, "custom_pipelines", None) or {}),
            **custom_pipelines,
        }
    with _config_entries(model.config, entries):
        save(save_directory)
    if pipeline_class is not None:
        custom_object_save(pipeline_class, save_directory)
    if processor is not None:
        processor.save_pretrained(save_directory)


@contextlib.contextmanager
def _config_entries(config: PreTrainedConfig, entries: dict[str, Any]) -> Iterator[None]:
    """Set config attributes for one save (written to config.json), then restore them: a
    loaded config drops locally registered ``custom_pipelines`` (configuration_shapley.py)."""
    missing = object()
    previous = {name: config.__dict__.get(name, missing) for name in entries}
    for name, value in entries.items():
        setattr(config, name, value)
    try:
        yield
    finally:
        for name, value in previous.items():
            if value is missing:
                config.__dict__.pop(name, None)
            else:
                setattr(config, name, value)


def _pipeline_class(
    module_name: str = PIPELINE_MODULE, class_name: str = "ImageShapleyExplanationPipeline"
) -> type | None:
    """A pipeline's class from the file ``module_name`` beside this one (the installed package,
    or the remote-code folder of a model loaded with trust_remote_code); ``None`` where that
    file is absent: the model then saves without the ``custom_pipelines`` entry. Defaults: the
    ``image-shapley-explanation`` pipeline; ``ShapleyCLIPModel`` asks for its zero-shot one."""
    import importlib

    # importlib, not an import statement: the pipeline imports the Pipeline machinery, which
    # loading the model alone does not need, and a remote-code folder may lack the file.
    try:
        module = importlib.import_module(f"{__package__}.{module_name}")
    except ImportError:
        return None
    return getattr(module, class_name)


__all__ = [
    "ShapleyForImageClassification",
    "ShapleyImageClassifierOutput",
    "ShapleyPreTrainedModel",
    "PlayerVotesReadout",
]
