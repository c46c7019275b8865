r"""Self-explaining image-text matching: ``ShapleyCLIPModel``.

A CLIP model whose image-text scores explain themselves, patch group by patch group, for any
text, with the per-patch terms computed once per image.

The game and why it is vector-valued
------------------------------------
Players are groups of the vision tower's patch tokens (``players_grid``); an absent player's
tokens are dropped after the position embedding (token removal, as for ViT: games_shapley.py),
so the empty coalition is the CLS token alone through the encoder. With only the players in S
present, the image side of CLIP gives the vector

    u(x_S) = s * normalize(visual_projection(post_layernorm(CLS(x_S))))   in R^D,

(``s = exp(logit_scale)``), and the score of a text t with unit embedding e_t is

    v_{x,t}(S) = <u(x_S), e_t>,        so v_{x,t}(all) = CLIP's logits_per_image[x, t].

Shapley values are linear in the game and the text enters linearly, so

    phi_i(x, t) = <Phi_i(x), e_t>,     Phi_i(x) = the Shapley value of the VECTOR game u(x_S).

The Shapley head predicts ``Phi_i(x)`` (B, P, D) from the image's tokens; efficiency is imposed
on the vectors (``sum_i Phi_i = u(x) - u(empty)``, the gap spread evenly, as
``modeling_shapley.additive_efficiency`` does for classes), and ``base(t) = <u(empty), e_t>``.
Then ``score(x, t) = base(t) + sum_i phi_i(x, t)`` holds for ANY text, seen in training or not,
to fp32 rounding: one image pass explains every text, and one more text costs a text pass and a
(P x D) @ D product.

The normalization choice: the image embedding is normalized inside the game, per coalition
(each ``u(x_S)`` is a unit vector times s), exactly as CLIP scores a cut-down image. The score
is therefore unchanged: ``logits_per_image`` is CLIP's own, bit for bit with a frozen CLIP.
What it changes is the explained quantity: a player's value is its effect on the scaled cosine
similarity, including its effect on the image embedding's direction through the normalization
(adding a patch can lower every other text's score by turning the embedding towards one text).
Normalizing once, outside the game (explaining the unnormalized projection), would make the
values additive in a quantity CLIP does not score; dividing by the full image's norm would
make ``v(S)`` depend on players outside S.

This file is shipped as remote code: relative imports only.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn
from transformers import AutoModel, PreTrainedModel
from transformers import initialization as init
from transformers.utils import ModelOutput

from .backbones import CLIP_VISION_ADAPTER
from .coalitions import coalitions_per_image
from .configuration_shapley_clip import (
    CLIP_CUSTOM_PIPELINES,
    ZERO_SHOT_PIPELINE_CLASS,
    ZERO_SHOT_PIPELINE_MODULE,
    ShapleyCLIPConfig,
)
from .games_shapley import GameExplanation, GameGeometry, PlayerView, ShapleyGame, TokenRemovalGame
from .loss_shapley_clip import ShapleyCLIPTrainingLoss
from .modeling_shapley import (
    ShapleyHead,
    _pipeline_class,
    additive_efficiency,
    check_pixel_values,
    save_with_remote_code,
)
from .objective_clip import image_text_contrastive_loss


@dataclass
class ShapleyCLIPOutput(ModelOutput):
    """Output of :class:`ShapleyCLIPModel` for B images and T texts.

    Args:
        loss (`torch.FloatTensor` of shape `()`, *optional*):
            With ``return_loss=True``: the joint objective in training mode, the contrastive
            loss in eval mode.
        logits_per_image (`torch.FloatTensor` of shape `(B, T)`, or `(B, M, T)` with a 3D `coalition`):
            CLIP's scaled cosine similarities; with ``coalition=`` the game ``v_{x,t}(S)``.
        logits_per_text (`torch.FloatTensor` of shape `(T, B)`): The transpose.
        shapley_values (`torch.FloatTensor` of shape `(B, P, T)`):
            ``phi_i(x, t)``; ``logits_per_image == base_values + shapley_values.sum(1)``.
        base_values (`torch.FloatTensor` of shape `(B, T)`): ``v_{x,t}(empty)``.
        image_shapley_vectors (`torch.FloatTensor` of shape `(B, P, D)`):
            ``Phi_i(x)``, the Shapley values of the vector game; ``phi_i(x, t) = <Phi_i(x), e_t>``.
        image_base_vector (`torch.FloatTensor` of shape `(B, D)`): ``u(empty)``.
        text_embeds (`torch.FloatTensor` of shape `(T, D)`): Unit text embeddings ``e_t``.
        image_embeds (`torch.FloatTensor` of shape `(B, D)`): Unit image embeddings.
        contrastive_loss, distill_loss, shapley_loss (`torch.FloatTensor` of shape `()`, *optional*):
            Components of the joint training objective.
    """

    loss: torch.FloatTensor | None = None
    logits_per_image: torch.FloatTensor | None = None
    logits_per_text: torch.FloatTensor | None = None
    shapley_values: torch.FloatTensor | None = None
    base_values: torch.FloatTensor | None = None
    image_shapley_vectors: torch.FloatTensor | None = None
    image_base_vector: torch.FloatTensor | None = None
    text_embeds: torch.FloatTensor | None = None
    image_embeds: torch.FloatTensor | None = None
    contrastive_loss: torch.FloatTensor | None = None
    distill_loss: torch.FloatTensor | None = None
    shapley_loss: torch.FloatTensor | None = None


@dataclass
class ShapleyCLIPImageExplanation(ModelOutput):
    """The per-image part of an explanation, for any number of texts (:meth:`ShapleyCLIPModel.explain_texts`).

    Args:
        image_embeds (`torch.FloatTensor` of shape `(B, D)`): Unit image embeddings.
        image_vectors (`torch.FloatTensor` of shape `(B, D)`): ``u(x) = s * image_embeds``.
        image_shapley_vectors (`torch.FloatTensor` of shape `(B, P, D)`): ``Phi_i(x)``.
        image_base_vector (`torch.FloatTensor` of shape `(B, D)`): ``u(empty)``.
    """

    image_embeds: torch.FloatTensor | None = None
    image_vectors: torch.FloatTensor | None = None
    image_shapley_vectors: torch.FloatTensor | None = None
    image_base_vector: torch.FloatTensor | None = None


@dataclass
class _ImageGameExplanation(GameExplanation):
    """A :class:`GameExplanation` of the vector game plus the unit image embedding, from which
    CLIP's own score is computed (``logits`` = ``s * image_embeds``)."""

    image_embeds: torch.Tensor | None = None


def _unit(embeds: torch.Tensor) -> torch.Tensor:
    """``x / ||x||`` computed as CLIP computes it (``_get_vector_norm``), bit for bit."""
    return embeds / torch.pow(torch.sum(torch.pow(embeds, 2), dim=-1, keepdim=True), 0.5)


@dataclass(frozen=True)
class ImageEmbeddingReadout:
    """The image side of CLIP as a readout of the game: present tokens -> ``u(x_S)`` in R^D.

    ``value`` gives the vector game; ``explain`` the Shapley head's ``Phi`` with efficiency
    imposed on the vectors. The head reads the patch tokens through ``post_layernorm`` (or,
    with ``head_reads_hidden_states``, every depth's), detached: its losses train the head
    alone. Built by the model on every call.
    """

    reads_tokens: ClassVar[bool] = False

    post_layernorm: nn.LayerNorm
    visual_projection: nn.Linear
    logit_scale: nn.Parameter
    head: ShapleyHead

    def modules(self) -> tuple[nn.Module, ...]:
        return (self.post_layernorm, self.visual_projection, self.head)

    def image_embeds(self, cls_states: torch.Tensor) -> torch.Tensor:
        """(n, H) CLS states -> (n, D) fp32 unit image embeddings, as CLIPModel computes them."""
        return _unit(self.visual_projection(self.post_layernorm(cls_states))).float()

    def scale(self) -> torch.Tensor:
        return self.logit_scale.exp().float()

    def value(self, view: PlayerView) -> torch.Tensor:
        """(n, D) ``u(x_S)`` of each row; (n, G, D) for G coalitions a row."""
        features = view.classifier_features()
        if isinstance(features, tuple):
            return torch.stack([self.image_embeds(f) for f in features], dim=1) * self.scale()
        return self.image_embeds(features) * self.scale()

    def explain(self, full, empty, player_sum, empty_statistics) -> _ImageGameExplanation:
        embeds = self.image_embeds(full.classifier_features())
        u_all = embeds * self.scale()
        with empty_statistics():
            u_empty = self.value(empty)
        if self.head.hidden_states_mix is None:
            features = self.post_layernorm(full.tokens)
        else:
            features = full.hidden_states()  # each depth is normalized inside the head
        r = player_sum(self.head(features.detach()))
        # The head's losses reach the head alone, not CLIP through the efficiency gap.
        phi = additive_efficiency(r, (u_all - u_empty).detach() - r.sum(1))
        return _ImageGameExplanation(u_all, phi, u_empty.expand_as(u_all), image_embeds=embeds)


class ShapleyCLIPPreTrainedModel(PreTrainedModel):
    config_class = ShapleyCLIPConfig
    config: ShapleyCLIPConfig
    base_model_prefix = "shapley_clip"
    main_input_name = "pixel_values"
    input_modalities = ("image", "text")
    _supports_sdpa = True
    # The joint loss is computed inside forward; the Trainer must not rescale it.
    accepts_loss_kwargs = False

    def _init_weights(self, module: nn.Module) -> None:
        # The wrapped CLIPModel initializes its own modules (transformers dispatches each
        # PreTrainedModel's _init_weights to its own subtree); this covers the Shapley head.
        std = self.config.initializer_range
        if isinstance(module, nn.Linear):
            init.trunc_normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            init.ones_(module.weight)
            init.zeros_(module.bias)
        elif isinstance(module, ShapleyGame):
            module.reset_buffers()


class ShapleyCLIPModel(GameGeometry, ShapleyCLIPPreTrainedModel):
    r"""A CLIP model whose image-text scores are a base value plus per-patch Shapley values.

    See the module docstring for the game (vector-valued on the image side), the invariant
    ``logits_per_image == base_values + shapley_values.sum(1)`` for any text, and the choice of
    normalization (inside the game: the score is CLIP's own).

    Example:

    ```python
    >>> model = ShapleyCLIPModel.from_clip(clip_model, players_grid=(7, 7)).eval()
    >>> out = model(pixel_values, input_ids=ids, attention_mask=mask)
    >>> out.logits_per_image                  # (B, T), CLIP's scores
    >>> out.shapley_values                    # (B, P, T): per player and text
    >>> image = model.explain_image(pixel_values)          # once per image
    >>> model.explain_texts(image, model.get_text_embeds(other_ids))  # a dot product per text
    >>> model(pixel_values, input_ids=ids, coalition=mask).logits_per_image  # v(S), True = present
    ```
    """

    def __init__(self, config: ShapleyCLIPConfig):
        super().__init__(config)
        from transformers import CLIPModel

        self.clip = CLIPModel._from_config(config.clip_config)
        vision = self.clip.vision_model
        # The game: players, their removal and u(S). Holds buffers only; borrows the tower.
        self.game = TokenRemovalGame(config, CLIP_VISION_ADAPTER, vision)
        depths = len(CLIP_VISION_ADAPTER.layers(vision)) + 1
        self.shapley_head = ShapleyHead(
            config.clip_config.vision_config.hidden_size,
            config.clip_config.projection_dim,
            config.head_hidden_size,
            config.head_dropout,
            config.head_num_layers,
            depths if config.head_reads_hidden_states else 1,
        )
        self.processor = None  # attached by from_clip, saved by save_pretrained
        self.loss_function = ShapleyCLIPTrainingLoss()
        self.post_init()
        self._apply_train_clip()

    @property
    def readout(self) -> ImageEmbeddingReadout:
        """The image side of CLIP over the current modules (weights are replaced on load)."""
        return ImageEmbeddingReadout(
            self.clip.vision_model.post_layernorm,
            self.clip.visual_projection,
            self.clip.logit_scale,
            self.shapley_head,
        )

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_clip(
        cls,
        clip: str | os.PathLike | PreTrainedModel | Any,
        *,
        players_grid: tuple[int, int] | None = None,
        load_processor: bool = True,
        **config_kwargs: Any,
    ) -> ShapleyCLIPModel:
        """Wrap a CLIP model, keeping its weights, with a fresh Shapley head.

        Args:
            clip: A ``CLIPModel``, a ``CLIPConfig`` (random weights), or a local directory or
                Hub id of a CLIP checkpoint.
            players_grid: ``(h, w)``, dividing the vision tower's patch grid.
            load_processor: For a directory or Hub id, also load its processor (saved with
                the model) when it has one.
            config_kwargs: Any other :class:`ShapleyCLIPConfig` field.
        """
        from transformers import PreTrainedConfig

        processor = None
        if isinstance(clip, PreTrainedConfig):
            clip_config, weights = clip, None
        elif isinstance(clip, PreTrainedModel):
            clip_config, weights = clip.config, clip.state_dict()
        elif isinstance(clip, (str, os.PathLike)):
            from transformers import AutoConfig

            clip_config = AutoConfig.from_pretrained(clip)
            ShapleyCLIPConfig(clip_config=clip_config)  # a clear error for a non-CLIP checkpoint
            weights = AutoModel.from_pretrained(clip).state_dict()
            if load_processor:
                from transformers import AutoProcessor

                try:
                    processor = AutoProcessor.from_pretrained(clip)
                except (OSError, ValueError):
                    processor = None  # a bare checkpoint may ship none; the user brings one
        else:
            raise TypeError(
                "from_clip takes a CLIPModel, a CLIPConfig, or a Hub id or local directory; "
                f"got {type(clip).__name__}."
            )
        clip_config = clip_config.__class__.from_dict(clip_config.to_dict())
        clip_config.architectures = None
        config = ShapleyCLIPConfig(
            clip_config=clip_config, players_grid=players_grid, **config_kwargs
        )
        model = cls(config)
        if weights is not None:
            model.clip.load_state_dict(weights)
        model.processor = processor
        return model

    @classmethod
    def from_pretrained(cls, *args: Any, **kwargs: Any):
        # Loading replaces every parameter with a fresh one that requires grad, undoing the
        # freezing done in __init__: redo it.
        result = super().from_pretrained(*args, **kwargs)
        model = result[0] if isinstance(result, tuple) else result
        model._apply_train_clip()
        return result

    def _apply_train_clip(self) -> None:
        # Every CLIP parameter takes part in the contrastive loss when CLIP trains (DDP needs
        # no find_unused_parameters); frozen, none requires grad.
        self.clip.requires_grad_(self.config.train_clip)

    def train(self, mode: bool = True):
        """A frozen CLIP (``train_clip=False``) stays in eval mode, so its scores never change."""
        super().train(mode)
        if mode and not self.config.train_clip:
            self.clip.eval()
        return self

    def save_pretrained(self, save_directory: str | os.PathLike, *args, **kwargs) -> None:
        """Save weights, config, code and processor: a directory that loads everywhere.

        Besides what transformers writes, the config's ``auto_map`` gets an ``AutoModel`` entry
        (transformers writes only the saved class), so that ``AutoModel.from_pretrained(dir,
        trust_remote_code=True)`` works without hf-shapley, and a ``custom_pipelines`` entry
        for the ``zero-shot-image-shapley-explanation`` pipeline, whose code
        ``custom_object_save`` copies beside the model code, so that
        ``pipeline("zero-shot-image-shapley-explanation", model=dir, trust_remote_code=True)``
        works there too (with a tokenizer and image processor saved in the directory), as
        ``ShapleyForImageClassification.save_pretrained`` does for its pipeline.
        """
        parent_save = super().save_pretrained
        save_with_remote_code(
            self,
            save_directory,
            lambda directory: parent_save(directory, *args, **kwargs),
            _pipeline_class(ZERO_SHOT_PIPELINE_MODULE, ZERO_SHOT_PIPELINE_CLASS),
            CLIP_CUSTOM_PIPELINES,
            self.processor,
        )

    # ------------------------------------------------------------------ validation
    def _check_pixel_values(self, pixel_values: torch.Tensor) -> None:
        channels = getattr(self.config.clip_config.vision_config, "num_channels", 3)
        check_pixel_values(pixel_values, channels, self.image_size)

    # ------------------------------------------------------------------ the two sides
    def get_text_embeds(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """(T, L) token ids -> (T, D) fp32 unit text embeddings ``e_t``, as CLIPModel computes them."""
        check_text_inputs(
            input_ids, attention_mask, self.config.clip_config.text_config.max_position_embeddings
        )
        features = self.clip.get_text_features(
            input_ids=input_ids, attention_mask=attention_mask
        ).pooler_output
        return _unit(features).float()

    def explain_image(self, pixel_values: torch.Tensor) -> ShapleyCLIPImageExplanation:
        """The per-image part, for any texts: one pass of the vision tower (and of the CLS token
        alone, for ``u(empty)``) and one of the Shapley head.

        Args:
            pixel_values: (B, C, H, W) images from the model's processor.
        """
        self._check_pixel_values(pixel_values)
        explanation = self.game.explain(self.game.prepare(pixel_values), self.readout)
        return ShapleyCLIPImageExplanation(
            image_embeds=explanation.image_embeds,
            image_vectors=explanation.logits,
            image_shapley_vectors=explanation.shapley_values,
            image_base_vector=explanation.base_values,
        )

    def explain_texts(
        self, image: ShapleyCLIPImageExplanation, text_embeds: torch.Tensor
    ) -> ShapleyCLIPOutput:
        """Scores and explanations of B explained images against T texts, without an image pass.

        Args:
            image: from :meth:`explain_image`.
            text_embeds: (T, D) unit text embeddings from :meth:`get_text_embeds`.

        Returns:
            ``logits_per_image`` (B, T) (CLIP's formula), ``shapley_values`` (B, P, T) =
            ``<Phi_i, e_t>``, ``base_values`` (B, T) = ``<u(empty), e_t>``.
        """
        scale = self.clip.logit_scale.exp().float()
        # CLIP's own order of operations, so that a frozen CLIP's scores are bit-identical.
        logits_per_text = torch.matmul(text_embeds, image.image_embeds.t()) * scale
        return ShapleyCLIPOutput(
            logits_per_image=logits_per_text.t(),
            logits_per_text=logits_per_text,
            shapley_values=torch.einsum(
                "bpd,td->bpt", image.image_shapley_vectors, text_embeds.float()
            ),
            base_values=image.image_base_vector @ text_embeds.float().t(),
            image_shapley_vectors=image.image_shapley_vectors,
            image_base_vector=image.image_base_vector,
            text_embeds=text_embeds,
            image_embeds=image.image_embeds,
        )

    def coalition_vectors(
        self, pixel_values: torch.Tensor, coalitions: torch.Tensor, *, chunk_size: int | None = None
    ) -> torch.Tensor:
        """The vector game ``u(x_S)``: (B, C, H, W), bool (B, M, P) -> (B, M, D) fp32."""
        context = self.game.prepare(pixel_values)
        return self.game.values(context, coalitions, self.readout, chunk_size=chunk_size)

    # ------------------------------------------------------------------ forward
    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        coalition: torch.Tensor | None = None,
        return_loss: bool | None = None,
        example_index: torch.Tensor | None = None,
        epoch: int | None = None,
        global_step: int | None = None,
        return_dict: bool | None = None,
    ) -> ShapleyCLIPOutput | tuple:
        r"""
        Args:
            pixel_values (`torch.FloatTensor` of shape `(B, C, H, W)`): Images from the processor.
            input_ids (`torch.LongTensor` of shape `(T, L)`): Texts from the tokenizer.
            attention_mask (`torch.LongTensor` of shape `(T, L)`, *optional*): Padding mask.
            coalition (`torch.BoolTensor` of shape `(B, P)` or `(B, M, P)`, *optional*): Players
                present (True); returns the game ``v_{x,t}(S)`` of every text as
                ``logits_per_image`` of shape `(B, T)` or `(B, M, T)`.
            return_loss (`bool`, *optional*): In training mode, the joint objective (text i
                matches image i); in eval mode, the contrastive loss.
            example_index (`torch.LongTensor` of shape `(B,)`, *optional*): Data set index of each
                image, so that training coalitions are a pure function of it.
            epoch (`int`, *optional*): The other key of the training coalitions.
            global_step (`int`, *optional*): Optimizer step, for the loss warm-up.
            return_dict (`bool`, *optional*): ``False`` returns a tuple.
        """
        if pixel_values is None or input_ids is None:
            raise ValueError(
                "pixel_values and input_ids are both required: the model scores images against texts."
            )
        self._check_pixel_values(pixel_values)
        if coalition is not None:
            masks = coalitions_per_image(coalition, self.num_players, pixel_values.shape[0])
            text = self.get_text_embeds(input_ids, attention_mask)
            vectors = self.coalition_vectors(pixel_values, masks)  # (B, M, D)
            scores = vectors @ text.t()
            out = ShapleyCLIPOutput(
                logits_per_image=scores if coalition.ndim == 3 else scores[:, 0], text_embeds=text
            )
        elif self.training and return_loss:
            out = self.loss_function(
                self, pixel_values, input_ids, attention_mask, example_index, epoch, global_step
            )
        else:
            text = self.get_text_embeds(input_ids, attention_mask)
            out = self.explain_texts(self.explain_image(pixel_values), text)
            if return_loss:
                out.loss = image_text_contrastive_loss(out.logits_per_image)
                out.contrastive_loss = out.loss
        return out if return_dict is not False else out.to_tuple()


def check_text_inputs(
    input_ids: torch.Tensor, attention_mask: torch.Tensor | None, limit: int
) -> None:
    """A clear error for texts the text encoder cannot take: not (T, L), no text, more tokens
    than its context (``limit``), or a mask of another shape."""
    if not isinstance(input_ids, torch.Tensor) or input_ids.ndim != 2:
        shape = tuple(input_ids.shape) if isinstance(input_ids, torch.Tensor) else None
        raise ValueError(
            "input_ids must be a (T, L) tensor of token ids, one row per text (the model's "
            f"tokenizer with padding=True, return_tensors='pt'); got {type(input_ids).__name__}"
            f"{'' if shape is None else f' of shape {shape}'}."
        )
    if input_ids.shape[0] == 0:
        raise ValueError(
            "input_ids holds no text (T = 0); pass at least one text (candidate label)."
        )
    if input_ids.shape[1] > limit:
        raise ValueError(
            f"input_ids has {input_ids.shape[1]} tokens per text but the text encoder's context "
            f"holds {limit} (max_position_embeddings); shorten the text or tokenize with "
            f"truncation=True, max_length={limit}."
        )
    if attention_mask is not None and tuple(attention_mask.shape) != tuple(input_ids.shape):
        raise ValueError(
            f"attention_mask has shape {tuple(attention_mask.shape)} but input_ids has "
            f"{tuple(input_ids.shape)}; they must match."
        )


__all__ = [
    "ImageEmbeddingReadout",
    "ShapleyCLIPImageExplanation",
    "ShapleyCLIPModel",
    "ShapleyCLIPOutput",
    "ShapleyCLIPPreTrainedModel",
]
