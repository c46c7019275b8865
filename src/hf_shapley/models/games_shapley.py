"""The Shapley games of a self-explaining model: one class per way of removing players.

A game is defined by its players (groups of backbone tokens, or the pixel blocks under them)
and by how an absent player is removed. Every game answers the same three questions for a
batch of images, always through the model's own prediction head (its *readout*, see
``modeling_shapley.py``):

* :meth:`ShapleyGame.explain` -> :class:`GameExplanation`: every player present, with the
  per-player values and the base value ``v(empty)``;
* :meth:`ShapleyGame.values` -> ``(B, M, K)``: ``v_x(S)`` for a batch of coalitions;
* :meth:`ShapleyGame.base_values` -> ``(B, K)``: the base values ``v_x(empty)``.

Work that does not depend on the coalition (embedding the patches) is done once per image by
:meth:`ShapleyGame.prepare`; its result, the *context*, is what the three methods take.

* :class:`TokenRemovalGame` (ViT, DeiT, DINOv2): an absent player's tokens are dropped after
  the position embedding. A coalition S and its complement are packed into one sequence (two
  copies of the special tokens, then every patch token once) under a block-diagonal attention
  mask, so a pair of complementary coalitions costs one full pass. Only present tokens vote.
* :class:`PixelBaselineGame` (ResNet, ConvNeXt, Swin): an absent player's pixel block takes the
  baseline (``config.pixel_baseline``); every cell votes. ``v(empty)`` is the model on the
  all-baseline image, cached in eval mode (dropped by ``train()``/``eval()``, weight loading and
  device or dtype moves).

Masked and baseline passes run normalization layers in eval mode (:func:`frozen_statistics`),
so only the unmasked pass updates BatchNorm statistics.

A game owns its geometry (non-persistent buffers, rebuilt on every load) and borrows the
model's backbone; it holds no parameters. Adding a family that removes players in a new way
means adding one class here and naming it in the family's adapter (``backbones.py``).

This file is shipped as remote code: relative imports only.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedConfig
from transformers import initialization as init

from .backbones import (
    AttentionReceived,
    PixelBaselineAdapter,
    TokenRemovalAdapter,
    player_index_of_pixels,
    player_index_of_tokens,
)

logger = logging.getLogger(__name__)


@contextlib.contextmanager
def frozen_statistics(*modules: nn.Module, disable_dropout: bool) -> Iterator[None]:
    """Run normalization layers in eval mode (no BatchNorm statistics updates), optionally dropout too.

    Masked passes see partial images; letting them update running statistics would corrupt the
    statistics that inference uses (measured here: test accuracy at chance).
    """
    changed = []
    for root in modules:
        for module in root.modules():
            is_norm = isinstance(module, nn.modules.batchnorm._BatchNorm)
            is_dropout = disable_dropout and isinstance(module, nn.modules.dropout._DropoutNd)
            if (is_norm or is_dropout) and module.training:
                module.training = False
                changed.append(module)
    try:
        yield
    finally:
        for module in changed:
            module.training = True


@dataclass
class PlayerView:
    """What the backbone produced for a batch of rows (images, or coalitions of them).

    Attributes:
        tokens: (n, N, D) one feature vector per token that can vote (patch tokens after the
            final norm, or final feature-map cells), row-major over the token grid; ``None``
            in a packed pass for a readout that reads none (``Readout.reads_tokens``).
        voting: (n, N) bool, the tokens that vote in each row; ``None``: all of them. Or
            (n, G, N) for G coalitions sharing one pass (a packed pair: G = 2), whose values
            a readout returns as (n, G, K).
        classifier_features: () -> (n, D'), what a wrapped classifier head reads for each row
            (computed on demand: soft voting never needs it); a tuple of G of them for G
            coalitions.
        hidden_states: () -> (n, N, L + 1, D), the same tokens at every depth of the backbone
            (the embeddings, then each block's output, as ``output_hidden_states`` orders
            them); the full view of a token-removal game whose config sets
            ``head_reads_hidden_states`` only, ``None`` elsewhere.
    """

    tokens: torch.Tensor | None
    voting: torch.Tensor | None
    classifier_features: Callable[[], torch.Tensor]
    hidden_states: Callable[[], torch.Tensor] | None = None


class CoalitionValueCache:
    """The values ``v_x(S)`` of a game that does not train, kept per data set example.

    With a frozen classifier the game is a fixed function and each image's coalitions are a pure
    function of its index (``coalitions.py``), so the masked passes of the first epoch serve every
    later one: the head then trains at the cost of one unmasked forward pass per image
    (``reuse_shapley_coalitions``). Entries are ``(M, K)`` fp32 tensors on the values' device.
    """

    def __init__(self) -> None:
        self._values: dict[int, torch.Tensor] = {}

    def __len__(self) -> int:
        return len(self._values)

    def clear(self) -> None:
        self._values.clear()

    def get(self, example_index: torch.Tensor, num_coalitions: int) -> torch.Tensor | None:
        """(B, M, K) for the examples ``example_index`` (B,), or ``None`` unless all are kept
        with ``num_coalitions`` values each."""
        rows = [self._values.get(int(i)) for i in example_index]
        if any(row is None or row.shape[0] != num_coalitions for row in rows):
            return None
        return torch.stack(rows)

    def put(self, example_index: torch.Tensor, values: torch.Tensor) -> None:
        """Keep (B, M, K) ``values`` of the examples ``example_index`` (B,)."""
        for i, row in zip(example_index.tolist(), values.detach().float(), strict=True):
            self._values[int(i)] = row.clone()


class FullPassCache:
    """A frozen classifier's full-image pass, kept per data set example: what the Shapley head
    reads, the logits and ``v(empty)``.

    With a frozen classifier (``reuse_shapley_coalitions``) an image's full pass gives the same
    result in every epoch, so after the first epoch the head trains on kept features without
    running the backbone (about a fifth of a later epoch's step on the main job's CPU:
    ``benchmarks/results/frozen_pass_cache_cpu.md``). Entries live in CPU memory as the pass
    computed them (fp32). ``max_bytes`` bounds the whole store: the first entry that would
    exceed it empties the store and turns it off for good (every epoch then recomputes, as
    without it), since a store that holds only part of a shuffled data set serves almost no
    batch. ``max_bytes=0`` (the default for a model outside ``ShapleyTrainer``) keeps nothing.
    """

    def __init__(self, max_bytes: int = 0) -> None:
        self.max_bytes = int(max_bytes)
        self.overflowed = False
        self._entries: dict[int, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def nbytes(self) -> int:
        """Bytes held."""
        return self._bytes

    def clear(self) -> None:
        """Forget every entry (the store may fill again)."""
        self._entries.clear()
        self._bytes = 0
        self.overflowed = False

    def get(
        self, example_index: torch.Tensor, device: torch.device
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
        """``(features, logits, empty)`` stacked over the examples ``example_index`` (B,) and
        moved to ``device``, or ``None`` unless every one of them is kept."""
        rows = [self._entries.get(int(i)) for i in example_index]
        if not rows or any(row is None for row in rows):
            return None
        return tuple(torch.stack(parts).to(device) for parts in zip(*rows, strict=True))

    def put(
        self,
        example_index: torch.Tensor,
        features: torch.Tensor,
        logits: torch.Tensor,
        empty: torch.Tensor,
    ) -> None:
        """Keep the (B, ...) ``features`` and the (B, K) ``logits`` and ``empty`` of the
        examples ``example_index`` (B,), unless that would pass ``max_bytes``."""
        if self.overflowed or self.max_bytes <= 0:
            return
        parts = [t.detach().to("cpu") for t in (features, logits, empty)]
        for j, i in enumerate(example_index.tolist()):
            if int(i) in self._entries:
                continue
            row = tuple(t[j].clone() for t in parts)
            size = sum(t.numel() * t.element_size() for t in row)
            if self._bytes + size > self.max_bytes:
                logger.warning(
                    "The frozen classifier's full passes need more than the %.2f GB allowed "
                    "(%d images kept, %.0f KiB each): none are kept, every epoch recomputes "
                    "them. Raise frozen_pass_cache_gb to about (images x %.0f KiB) to keep them.",
                    self.max_bytes / 2**30,
                    len(self._entries),
                    size / 1024,
                    size / 1024,
                )
                self.clear()
                self.overflowed = True
                return
            self._entries[int(i)] = row
            self._bytes += size


@dataclass
class GameExplanation:
    """The full prediction with its explanation, all fp32.

    Attributes:
        logits: (B, K) ``v(all)``.
        shapley_values: (B, P, K), ``logits == base_values + shapley_values.sum(1)``.
        base_values: (B, K) ``v(empty)``.
        head_features: what a Shapley head read to explain a wrapped classifier (``None``
            for the other readouts): kept by a :class:`FullPassCache`.
    """

    logits: torch.Tensor
    shapley_values: torch.Tensor
    base_values: torch.Tensor
    head_features: torch.Tensor | None = None


class Readout(Protocol):
    """How present features become logits: the model's prediction mode (``modeling_shapley.py``)."""

    #: Whether ``value`` reads the view's ``tokens`` (votes); ``False``: only
    #: ``classifier_features``, so a token-removal pass may skip the patch tokens' last block.
    reads_tokens: ClassVar[bool]

    def modules(self) -> tuple[nn.Module, ...]:
        """The modules the readout runs (for :func:`frozen_statistics`)."""

    def value(self, view: PlayerView) -> torch.Tensor:
        """(n, K) fp32 logits of each row of ``view`` ((n, G, K) for G coalitions a row)."""

    def explain(
        self,
        full: PlayerView,
        empty: PlayerView,
        player_sum: Callable[[torch.Tensor], torch.Tensor],
        empty_statistics: Callable[[], contextlib.AbstractContextManager],
    ) -> GameExplanation:
        """The explanation from the full view and the empty coalition's view (B or 1 rows),
        on which the readout runs inside ``empty_statistics()``."""


class _Borrowed:
    """Holds a module without registering it: the game borrows the model's backbone, whose
    parameters the model owns and saves."""

    def __init__(self, module: nn.Module):
        self.module = module


class GameGeometry:
    """The geometry a model with a game (``self.game``) reports as its own."""

    @property
    def image_size(self) -> tuple[int, int]:
        return self.game.image_size

    @property
    def token_grid(self) -> tuple[int, int]:
        return self.game.token_grid

    @property
    def players_grid(self) -> tuple[int, int]:
        return self.game.players_grid

    @property
    def num_players(self) -> int:
        return self.game.num_players


class ShapleyGame(nn.Module):
    """One way of removing players; the interface every family's game implements.

    Args:
        config: the model's ``ShapleyConfig`` (read at call time: ``coalition_batch_size`` may
            be overridden by the trainer). Its ``players_grid`` defaults to the token grid.
        adapter: the backbone family's adapter (``backbones.py``).
        backbone: the model's backbone (borrowed, not registered).
    """

    removal: ClassVar[str]

    def __init__(self, config: PreTrainedConfig, adapter: Any, backbone: nn.Module):
        super().__init__()
        self.config = config
        self.adapter = adapter
        self._backbone = _Borrowed(backbone)
        self.image_size, self.token_grid = self.geometry(config, adapter)
        if config.players_grid is None:
            config.players_grid = list(self.token_grid)
        self.players_grid = tuple(config.players_grid)
        self.num_players = self.players_grid[0] * self.players_grid[1]
        self.register_buffer("token_to_player", self._token_to_player(), persistent=False)
        # What the empty coalition's view needs, in eval mode: (key, tensors). v(empty) does
        # not depend on the image in either removal, so inference computes it once.
        self._empty_cache: tuple[tuple, tuple[torch.Tensor, ...]] | None = None

    # ------------------------------------------------------------------ geometry
    grid_name: ClassVar[str] = "token"

    @staticmethod
    def geometry(config: PreTrainedConfig, adapter: Any) -> tuple[tuple[int, int], tuple[int, int]]:
        """(image size, token grid) of the backbone this game removes players from."""
        raise NotImplementedError

    def _token_to_player(self) -> torch.Tensor:
        return player_index_of_tokens(self.token_grid, self.players_grid, self.grid_name)

    def reset_buffers(self) -> None:
        """Rebuild the non-persistent buffers (they are not in the checkpoint)."""
        init.copy_(self.token_to_player, self._token_to_player())

    @property
    def backbone(self) -> nn.Module:
        return self._backbone.module

    @property
    def tokens_per_player(self) -> int:
        return math.prod(self.token_grid) // self.num_players

    # ------------------------------------------------------------------ the cache
    def clear_cache(self) -> None:
        """Forget the cached view of the empty coalition (call it after editing the backbone's
        weights in place while the model stays in eval mode)."""
        self._empty_cache = None

    def train(self, mode: bool = True):
        self.clear_cache()
        return super().train(mode)

    def _apply(self, fn, *args, **kwargs):
        self.clear_cache()
        return super()._apply(fn, *args, **kwargs)

    def _load_from_state_dict(self, *args, **kwargs):
        self.clear_cache()
        return super()._load_from_state_dict(*args, **kwargs)

    def _kept_empty(
        self, like: torch.Tensor, compute: Callable[[], tuple[torch.Tensor, ...]]
    ) -> tuple[torch.Tensor, ...]:
        """``compute()`` (one row of the empty coalition's view), kept detached in eval mode
        and recomputed, with gradients, on every call in training mode."""
        key = (like.device, like.dtype, torch.is_autocast_enabled(like.device.type))
        if self.training:
            return compute()
        if self._empty_cache is None or self._empty_cache[0] != key:
            parts = compute()
            # Normal tensors even when computed under inference_mode, so that a later forward
            # with autograd (attribution baselines such as Grad-CAM) can use the cached value.
            with torch.inference_mode(False):
                self._empty_cache = (key, tuple(part.detach().clone() for part in parts))
        return self._empty_cache[1]

    def player_sum(self, token_values: torch.Tensor) -> torch.Tensor:
        """(B, N, K) per-token values -> (B, P, K) per-player sums."""
        B, _, K = token_values.shape
        out = token_values.new_zeros(B, self.num_players, K)
        return out.index_add(1, self.token_to_player, token_values)

    # ------------------------------------------------------------------ the interface
    def prepare(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> the per-image context every coalition reuses."""
        raise NotImplementedError

    def full(self, context: torch.Tensor) -> PlayerView:
        """The view with every player present."""
        raise NotImplementedError

    def empty_view(self, context: torch.Tensor) -> PlayerView:
        """The view of the empty coalition (B rows, or 1 shared by all images); compute it and
        run a readout on it inside :meth:`empty_statistics`."""
        raise NotImplementedError

    def empty_statistics(self, readout: Readout) -> contextlib.AbstractContextManager:
        """The mode normalization layers and dropout run in for the empty coalition."""
        return contextlib.nullcontext()

    def base_values(self, context: torch.Tensor, readout: Readout) -> torch.Tensor:
        """(B, K) fp32 base values ``v(empty)``."""
        with self.empty_statistics(readout):
            value = readout.value(self.empty_view(context))
        return value.expand(context.shape[0], -1)

    def values(
        self,
        context: torch.Tensor,
        coalitions: torch.Tensor,
        readout: Readout,
        *,
        dropout: bool = True,
        chunk_size: int | None = None,
    ) -> torch.Tensor:
        """``v_x(S)``: bool (B, M, P) coalitions -> (B, M, K) fp32, normalization layers in eval
        mode (and dropout off with ``dropout=False``), at most ``chunk_size`` (default
        ``config.coalition_batch_size``) backbone rows per call."""
        raise NotImplementedError

    def explain(self, context: torch.Tensor, readout: Readout) -> GameExplanation:
        """Every player present: the prediction, its per-player values and ``v(empty)``."""
        full = self.full(context)
        with self.empty_statistics(readout):
            empty = self.empty_view(context)
        return readout.explain(full, empty, self.player_sum, lambda: self.empty_statistics(readout))


class TokenRemovalGame(ShapleyGame):
    """Absent players' tokens are dropped after the position embedding (ViT, DeiT, DINOv2).

    ``v(empty)`` is the readout of the special tokens alone (soft voting: the bias ``b``).
    """

    removal = "token_removal"
    adapter: TokenRemovalAdapter

    def __init__(self, config: PreTrainedConfig, adapter: TokenRemovalAdapter, backbone: nn.Module):
        super().__init__(config, adapter, backbone)
        self.num_special_tokens = adapter.num_special_tokens(config.backbone_config)

    @staticmethod
    def geometry(config, adapter):
        image_size = adapter.image_size(config.backbone_config)
        if config.image_size is not None and tuple(config.image_size) != image_size:
            raise ValueError(
                f"image_size={tuple(config.image_size)} differs from the {adapter.family} backbone "
                f"config's {image_size}; set it in the backbone config instead."
            )
        return image_size, adapter.token_grid(config.backbone_config)

    def prepare(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, s + N, D) embeddings: special tokens then patch tokens."""
        return self.adapter.embed(self.backbone, pixel_values)

    def full(self, context: torch.Tensor) -> PlayerView:
        s = self.num_special_tokens
        # Every block's output, kept only for a head that reads them (holding them otherwise
        # would keep every depth's activations alive through the readout).
        reads_depths = getattr(self.config, "head_reads_hidden_states", False)
        depths: list[torch.Tensor] | None = [] if reads_depths else None
        attention = None
        if reads_depths and getattr(self.config, "head_reads_attention", False):
            attention = AttentionReceived(
                self.adapter.layers(self.backbone), self.config.head_attention_from
            )
        with attention or contextlib.nullcontext():
            states = self.adapter.encode_tokens(self.backbone, context, None, depths)
        patch_states = states[:, s:]
        # patch_weights=None: the classifier's own feature computation, so that a wrapped
        # classifier's predictions stay bit-identical (a weighted mean differs in the last bit).
        return PlayerView(
            patch_states,
            None,
            lambda: self.adapter.classifier_features(states[:, :s], patch_states, None),
            None if depths is None else (lambda: self._depth_features(depths, attention)),
        )

    def _depth_features(
        self, depths: list[torch.Tensor], attention: AttentionReceived | None
    ) -> torch.Tensor:
        """(n, N, L + 1, D) every depth's patch tokens; with ``head_reads_attention`` one more
        slot, (n, N, L + 2, D), holds the attention each token received (2 L H numbers,
        zero-padded to D)."""
        s = self.num_special_tokens
        # The patch tokens of each depth, stacked once: contiguous, so the head's per-depth
        # normalization and flattening copy nothing (a slice of a stack of whole sequences
        # would be strided).
        features = torch.stack([depth[:, s:] for depth in depths], dim=2)
        if attention is None:
            return features
        received = attention.features(s).to(features.dtype)
        # At most D numbers: ShapleyForImageClassification checks it when it is built.
        slot = F.pad(received, (0, features.shape[-1] - received.shape[-1]))
        return torch.cat([features, slot[:, :, None]], dim=2)

    def empty_view(self, context: torch.Tensor) -> PlayerView:
        """No token votes; a wrapped classifier reads the special tokens encoded alone. They do
        not depend on the image: in eval mode one row is computed once and kept (training
        mode keeps one row per image, as embedding dropout differs between them)."""
        s = self.num_special_tokens
        rows = context if self.training else context[:1]
        no_tokens = rows.new_zeros(rows.shape[0], 0, rows.shape[-1])

        def classifier_features() -> tuple[torch.Tensor]:
            states = self.adapter.encode_tokens(self.backbone, rows[:, :s], None)
            return (self.adapter.classifier_features(states, no_tokens, no_tokens[..., 0]),)

        if self.training:
            return PlayerView(no_tokens, None, lambda: classifier_features()[0])
        (features,) = self._kept_empty(rows, classifier_features)
        return PlayerView(no_tokens, None, lambda: features)

    def values(self, context, coalitions, readout, *, dropout=True, chunk_size=None):
        """Adjacent complementary coalitions ``[S, ~S]`` share one packed sequence; any other
        coalition is packed with its own complement, whose value is discarded."""
        B, M, P = coalitions.shape
        paired = M % 2 == 0 and bool((coalitions[:, 1::2] == ~coalitions[:, 0::2]).all())
        primary = coalitions[:, 0::2] if paired else coalitions
        num_seq = primary.shape[1]
        flat = primary.reshape(B * num_seq, P)
        image_of = torch.arange(B, device=flat.device).repeat_interleave(num_seq)
        chunk = chunk_size or self.config.coalition_batch_size
        values_in, values_out = [], []
        with frozen_statistics(self.backbone, *readout.modules(), disable_dropout=not dropout):
            for start in range(0, flat.shape[0], chunk):
                sl = slice(start, start + chunk)
                v_in, v_out = self._packed_pair_values(context[image_of[sl]], flat[sl], readout)
                values_in.append(v_in)
                values_out.append(v_out)
        v_in = torch.cat(values_in).reshape(B, num_seq, -1)
        if not paired:
            return v_in
        v_out = torch.cat(values_out).reshape(B, num_seq, -1)
        return torch.stack([v_in, v_out], dim=2).reshape(B, M, -1)

    def _packed_pair_values(
        self, embeddings: torch.Tensor, present: torch.Tensor, readout: Readout
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Values of S and of its complement from one sequence ``[specials, specials, patches]``.

        Args:
            embeddings: (n, s + N, D) embedded images.
            present: (n, P) bool, the coalitions S.

        Returns:
            Two (n, K) fp32 tensors: v(S) and v(~S).
        """
        s = self.num_special_tokens
        specials, patches = embeddings[:, :s], embeddings[:, s:]
        sequence = torch.cat([specials, specials, patches], dim=1)
        in_s = present[:, self.token_to_player]  # (n, N): token belongs to S
        group = torch.cat(
            [in_s.new_ones(in_s.shape[0], s), in_s.new_zeros(in_s.shape[0], s), in_s], dim=1
        )
        same_group = group[:, :, None] == group[:, None, :]
        attention_mask = torch.zeros(same_group.shape, dtype=sequence.dtype, device=sequence.device)
        attention_mask.masked_fill_(~same_group, torch.finfo(sequence.dtype).min)
        # A readout of the special tokens alone needs no patch token after the last block.
        specials_only = not (readout.reads_tokens or self.adapter.classifier_reads_patch_mean)
        states = self.adapter.encode_tokens(
            self.backbone,
            sequence,
            attention_mask[:, None],
            num_outputs=2 * s if specials_only else None,
        )
        patch_states = None if specials_only else states[:, 2 * s :]
        classifier = self.adapter.classifier_features
        # One view for both coalitions: a readout computes the shared tokens' votes once.
        pair = PlayerView(
            patch_states,
            torch.stack([in_s, ~in_s], dim=1),
            lambda: (
                classifier(states[:, :s], patch_states, in_s),
                classifier(states[:, s : 2 * s], patch_states, ~in_s),
            ),
        )
        values = readout.value(pair)  # (n, 2, K)
        return values[:, 0], values[:, 1]


class PixelBaselineGame(ShapleyGame):
    """Absent players' pixel blocks take the baseline (ResNet, ConvNeXt, Swin); all cells vote.

    ``v(empty)`` is the readout of the all-baseline image: one pass whatever the batch, whose
    backbone features are cached in eval mode (call :meth:`clear_cache` after editing the
    backbone's weights in place while the model stays in eval mode).
    """

    removal = "pixel_baseline"
    grid_name = "final feature"
    adapter: PixelBaselineAdapter

    def __init__(
        self, config: PreTrainedConfig, adapter: PixelBaselineAdapter, backbone: nn.Module
    ):
        super().__init__(config, adapter, backbone)
        self.register_buffer("pixel_to_player", self._pixel_to_player(), persistent=False)
        self.register_buffer("baseline_pixels", self._baseline_pixels(), persistent=False)

    @staticmethod
    def geometry(config, adapter):
        backbone_config = config.backbone_config
        image_size = tuple(config.image_size or adapter.image_size(backbone_config))
        token_grid = adapter.token_grid(backbone_config, image_size)
        if min(token_grid) < 1:
            raise ValueError(
                f"A {image_size[0]} x {image_size[1]} image is too small for this {adapter.family} "
                f"backbone: its final feature grid would be {token_grid[0]} x {token_grid[1]}."
            )
        return image_size, token_grid

    def _pixel_to_player(self) -> torch.Tensor:
        return player_index_of_pixels(self.image_size, self.players_grid)

    def _baseline_pixels(self) -> torch.Tensor:
        """(C, 1, 1) fp32: the value an absent player's pixels take (``config.pixel_baseline``)."""
        channels = getattr(self.config.backbone_config, "num_channels", 3)
        value = torch.tensor(self.config.pixel_baseline, dtype=torch.float32).reshape(-1)
        if value.numel() not in (1, channels):
            raise ValueError(
                f"pixel_baseline has {value.numel()} values but the backbone reads {channels} channels; "
                "give one value, or one per channel."
            )
        return value.expand(channels).reshape(channels, 1, 1).clone()

    def reset_buffers(self) -> None:
        super().reset_buffers()
        init.copy_(self.pixel_to_player, self._pixel_to_player())
        init.copy_(self.baseline_pixels, self._baseline_pixels())

    # ------------------------------------------------------------------ the interface
    def prepare(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Nothing is embedded once per image: players are removed in pixel space."""
        return pixel_values

    def full(self, context: torch.Tensor) -> PlayerView:
        """The images' view; with ``head_reads_hidden_states`` it also holds every stage's
        feature map (only here: the coalitions' and the baseline image's passes need none)."""
        return self._view(context, getattr(self.config, "head_reads_hidden_states", False))

    def _view(self, images: torch.Tensor, with_stages: bool = False) -> PlayerView:
        stages: list[torch.Tensor] | None = [] if with_stages else None
        hidden = self.adapter.encode_pixels(self.backbone, images, stages)
        cells = self.adapter.cell_features(self.backbone, hidden)
        return PlayerView(
            cells,
            None,
            lambda: self.adapter.pooled_features(self.backbone, hidden),
            None if stages is None else (lambda: self._stage_features(stages, cells)),
        )

    def _stage_features(self, stages: list[torch.Tensor], cells: torch.Tensor) -> torch.Tensor:
        """(n, N, S, D): each earlier stage's feature map averaged over every final cell's
        pixels (zero-padded from its channels to D), then the final cells as the head reads
        them without stages. The head's mix normalizes each slot."""
        height, width = self.token_grid
        slots = [
            F.pad(
                F.adaptive_avg_pool2d(stage, (height, width)).flatten(2).transpose(1, 2),
                (0, cells.shape[-1] - stage.shape[1]),
            )
            for stage in stages[:-1]
        ]
        return torch.stack([*slots, cells], dim=2)

    def empty_statistics(self, readout: Readout) -> contextlib.AbstractContextManager:
        """Normalization layers and dropout in eval mode for the all-baseline image."""
        return frozen_statistics(self.backbone, *readout.modules(), disable_dropout=True)

    def empty_view(self, like: torch.Tensor) -> PlayerView:
        """One row: the all-baseline image. Its backbone features are cached (detached) in eval
        mode and recomputed, with gradients, on every call in training mode."""
        image = self.baseline_pixels.to(device=like.device, dtype=like.dtype)

        def compute() -> tuple[torch.Tensor, torch.Tensor]:
            view = self._view(image.expand(1, -1, *self.image_size))
            return view.tokens, view.classifier_features()

        cells, pooled = self._kept_empty(like, compute)
        return PlayerView(cells, None, lambda: pooled)

    def values(self, context, coalitions, readout, *, dropout=True, chunk_size=None):
        """One backbone pass per coalition, at most ``config.coalition_batch_size`` images per
        call (``chunk_size`` may only lower it)."""
        B, M, P = coalitions.shape
        flat = coalitions.reshape(B * M, P)
        image_of = torch.arange(B, device=flat.device).repeat_interleave(M)
        limit = self.config.coalition_batch_size
        chunk = min(chunk_size or limit, limit)
        baseline = self.baseline_pixels.to(context.dtype)
        values = []
        with frozen_statistics(self.backbone, *readout.modules(), disable_dropout=not dropout):
            for start in range(0, flat.shape[0], chunk):
                sl = slice(start, start + chunk)
                present = flat[sl][:, self.pixel_to_player]  # (n, H, W)
                images = torch.where(present[:, None], context[image_of[sl]], baseline)
                values.append(readout.value(self._view(images)))
        return torch.cat(values).reshape(B, M, -1)


GAMES: dict[str, type[ShapleyGame]] = {
    game.removal: game for game in (TokenRemovalGame, PixelBaselineGame)
}


def build_game(config: PreTrainedConfig, adapter: Any, backbone: nn.Module) -> ShapleyGame:
    """The game of ``adapter.removal`` for a model of ``config``."""
    return GAMES[adapter.removal](config, adapter, backbone)


__all__ = [
    "GAMES",
    "GameExplanation",
    "PixelBaselineGame",
    "PlayerView",
    "Readout",
    "ShapleyGame",
    "TokenRemovalGame",
    "build_game",
    "frozen_statistics",
]
