"""Self-explaining image classification: ``ShapleyForImageClassification``.

A backbone (ViT, DeiT, DINOv2) is wrapped with a per-token Shapley head. With
``prediction_mode="shapley_sum"`` (soft voting, Fan, Yang and Ma, AAAI 2026) the prediction is

    logits(x) = b + sum_i r_i(x),          r_i(x) = sum of the head over player i's tokens,

and because an absent player's tokens are dropped, the empty coalition predicts exactly ``b``:
``base_values = v(empty) = b`` and ``shapley_values = r``. Training (``objective.py``) makes
``r`` the Shapley values of the model's own masked predictions ``v_x(S) = model(x, coalition=S)``.

Coalitions are evaluated without padding waste: a coalition S and its complement are packed
into one sequence (two copies of the special tokens, then every patch token once) under a
block-diagonal attention mask, so a pair of complementary coalitions costs one full pass.

Pixel-baseline families (ResNet, ConvNeXt, Swin) cannot drop tokens: an absent player's pixel
block takes the baseline ``z`` (``config.pixel_baseline``) and every player votes, so
``v(empty)`` is the model on the all-baseline image,
``base_values = b + sum_j r_j(z)`` and ``shapley_values_i = r_i(x) - (1/P) sum_j r_j(z)``
(which the Shapley regression uses). That extra pass is one image whatever the batch; it is
cached in eval mode and the cache is dropped by ``train()``/``eval()``, weight loading and
device or dtype moves (call :meth:`ShapleyForImageClassification.clear_baseline_cache` after
editing weights in place in eval mode). Masked, target and baseline passes run normalization
layers in eval mode, so only the unmasked training pass updates BatchNorm statistics.

This file is shipped as remote code: relative imports only.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedConfig, PreTrainedModel
from transformers import initialization as init
from transformers.utils import ModelOutput

from .backbones import (
    Adapter,
    get_adapter,
    load_backbone,
    player_index_of_pixels,
    player_index_of_tokens,
)
from .coalitions import check_coalitions
from .configuration_shapley import CUSTOM_PIPELINES, PIPELINE_MODULE, ShapleyConfig


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
        cls_loss, distill_loss, shapley_loss (`torch.FloatTensor` of shape `()`, *optional*):
            Components of the joint training objective.
    """

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    shapley_values: torch.FloatTensor | None = None
    base_values: torch.FloatTensor | None = None
    cls_loss: torch.FloatTensor | None = None
    distill_loss: torch.FloatTensor | None = None
    shapley_loss: torch.FloatTensor | None = None


class ShapleyHead(nn.Module):
    """Per-token head: (..., D) features -> (..., K) contributions, always computed in fp32.

    The head, the sums over tokens and the base value stay in fp32 under bf16 autocast: the
    Shapley values are small differences of large sums, and efficiency must hold to fp32
    precision.
    """

    def __init__(
        self, hidden_size: int, num_labels: int, head_hidden_size: int = 0, dropout: float = 0.0
    ):
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        if head_hidden_size > 0:
            self.dense = nn.Linear(hidden_size, head_hidden_size)
            self.activation = nn.GELU()
            self.out_proj = nn.Linear(head_hidden_size, num_labels)
        else:
            self.dense = None
            self.out_proj = nn.Linear(hidden_size, num_labels)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type=features.device.type, enabled=False):
            x = self.dropout(features.to(self.out_proj.weight.dtype))
            if self.dense is not None:
                x = self.activation(self.dense(x))
            return self.out_proj(x).float()


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
        elif isinstance(module, ShapleyForImageClassification):
            init.zeros_(module.shapley_bias)
            # Non-persistent buffers are not in the checkpoint: rebuild them on every load.
            init.copy_(
                module.token_to_player,
                player_index_of_tokens(module.token_grid, module.players_grid, module._grid_name),
            )
            if module.adapter.kind == "pixel_baseline":
                init.copy_(
                    module.pixel_to_player,
                    player_index_of_pixels(module.image_size, module.players_grid),
                )
                init.copy_(module.baseline_pixels, module._baseline_pixels())


class ShapleyForImageClassification(ShapleyPreTrainedModel):
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
        adapter = get_adapter(config.backbone_config)
        backbone_config = config.backbone_config
        self.adapter: Adapter = adapter
        pixel_baseline = adapter.kind == "pixel_baseline"
        if pixel_baseline:
            image_size = tuple(config.image_size or adapter.image_size(backbone_config))
            token_grid = adapter.token_grid(backbone_config, image_size)
            if min(token_grid) < 1:
                raise ValueError(
                    f"A {image_size[0]} x {image_size[1]} image is too small for this {adapter.family} "
                    f"backbone: its final feature grid would be {token_grid[0]} x {token_grid[1]}."
                )
        else:
            image_size = adapter.image_size(backbone_config)
            token_grid = adapter.token_grid(backbone_config)
            if config.image_size is not None and tuple(config.image_size) != image_size:
                raise ValueError(
                    f"image_size={tuple(config.image_size)} differs from the {adapter.family} backbone "
                    f"config's {image_size}; set it in the backbone config instead."
                )
        if config.players_grid is None:
            config.players_grid = list(token_grid)
        self.image_size = image_size
        # Soft voting with class-centered votes (None: on for the pixel-baseline families).
        self.center_votes = bool(
            config.center_votes if config.center_votes is not None else pixel_baseline
        )
        self._grid_name = "final feature" if pixel_baseline else "token"
        self.num_special_tokens = adapter.num_special_tokens(backbone_config)
        self.token_grid = token_grid
        self.players_grid = tuple(config.players_grid)
        self.num_players = self.players_grid[0] * self.players_grid[1]
        self.num_labels = config.num_labels
        self.register_buffer(
            "token_to_player",
            player_index_of_tokens(token_grid, self.players_grid, self._grid_name),
            persistent=False,
        )
        if pixel_baseline:
            self.register_buffer(
                "pixel_to_player",
                player_index_of_pixels(image_size, self.players_grid),
                persistent=False,
            )
            self.register_buffer("baseline_pixels", self._baseline_pixels(), persistent=False)
        # v(empty) of a pixel-baseline model in eval mode: (key, (K,) tensor) or None.
        self._baseline_cache: tuple[tuple, torch.Tensor] | None = None

        self.backbone = adapter.build(backbone_config)
        hidden_size = adapter.hidden_size(backbone_config)
        self.shapley_head = ShapleyHead(
            hidden_size, config.num_labels, config.head_hidden_size, config.head_dropout
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
        self.image_processor = None  # attached by from_backbone, saved by save_pretrained
        # Training-step bookkeeping for the objective's warm-up; ShapleyTrainer sets objective_step.
        self.objective_step: int | None = None
        self._objective_calls = 0
        self.post_init()
        self._apply_train_backbone()

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_backbone(
        cls,
        backbone: str | os.PathLike | PreTrainedConfig | PreTrainedModel,
        *,
        num_labels: int | None = None,
        id2label: dict[int, str] | None = None,
        label2id: dict[str, int] | None = None,
        players_grid: tuple[int, int] | None = None,
        prediction_mode: str | None = None,
        train_backbone: bool = True,
        load_image_processor: bool = True,
        **config_kwargs: Any,
    ) -> ShapleyForImageClassification:
        """Wrap a backbone or a fine-tuned classifier.

        Args:
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
                starts from soft voting that reproduces its logits.
            train_backbone: In ``backbone_head`` mode, ``False`` freezes the classifier so its
                predictions stay bit-identical.
            load_image_processor: For a path or Hub id, also load the image processor and
                check its size against the backbone's image size.
            config_kwargs: Any other :class:`ShapleyConfig` field (objective settings...).
        """
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
            if id2label is not None and len(id2label) != len(inherited):
                raise ValueError(
                    f"The classifier has {len(inherited)} labels but id2label has {len(id2label)}."
                )
            id2label = id2label or inherited
        if id2label is not None:
            id2label = {int(k): v for k, v in id2label.items()}
            if num_labels is not None and num_labels != len(id2label):
                raise ValueError(
                    f"num_labels={num_labels} but id2label has {len(id2label)} entries."
                )
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
        backbone_config = _strip_classifier_fields(backbone_config)
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
        model = cls(config)
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
            model._init_soft_voting_from_classifier(loaded.classifier)
        if loaded.image_processor is not None:
            _check_image_processor_size(loaded.image_processor, model.image_size)
            model.image_processor = loaded.image_processor
        return model

    @torch.no_grad()
    def _init_soft_voting_from_classifier(self, classifier: nn.Linear) -> None:
        """Soft voting that reproduces an average-pool + linear classifier (ResNet, Swin):
        ``r_c = W f_c / N`` per final cell, ``b = bias``, so ``b + sum_c r_c = W mean_c f_c + bias``:
        its logits exactly with ``center_votes=False``; with centered votes (the default for these
        families) its logits minus their mean over classes plus that of the bias, so the same
        probabilities and predictions."""
        if self.shapley_head.dense is not None:
            return  # a hidden layer cannot copy a linear map exactly: keep the random init
        num_cells = self.token_grid[0] * self.token_grid[1]
        self.shapley_head.out_proj.weight.copy_(classifier.weight / num_cells)
        self.shapley_head.out_proj.bias.zero_()
        if classifier.bias is not None:
            self.shapley_bias.copy_(classifier.bias)
        else:
            self.shapley_bias.zero_()

    @classmethod
    def from_pretrained(cls, *args: Any, **kwargs: Any):
        # Loading replaces every parameter with a fresh one that requires grad, undoing the
        # freezing done in __init__ (train_backbone=False, unused parameters): redo it.
        result = super().from_pretrained(*args, **kwargs)
        model = result[0] if isinstance(result, tuple) else result
        model._apply_train_backbone()
        return result

    def _apply_train_backbone(self) -> None:
        frozen = self.config.prediction_mode == "backbone_head" and not self.config.train_backbone
        for module in (self.backbone, self.classifier):
            if module is not None:
                module.requires_grad_(not frozen)
        # Parameters no forward uses must not require grad: DDP without find_unused_parameters
        # (a plain Accelerate loop; the Trainer with gradient checkpointing) fails on them.
        # The soft-voting bias is unused in backbone_head mode; DINOv2's mask_token always
        # (it is only read with bool_masked_pos).
        self.shapley_bias.requires_grad_(self.config.prediction_mode == "shapley_sum")
        mask_token = getattr(getattr(self.backbone, "embeddings", None), "mask_token", None)
        if isinstance(mask_token, nn.Parameter):
            mask_token.requires_grad_(False)

    def save_pretrained(self, save_directory: str | os.PathLike, *args, **kwargs) -> None:
        """Save weights, config, code and image processor: a directory that loads everywhere.

        Besides what transformers writes, the config gets an ``auto_map`` entry for
        ``AutoModel`` and a ``custom_pipelines`` entry for the ``image-shapley-explanation``
        pipeline, whose code is copied beside the model code, so that
        ``pipeline("image-shapley-explanation", model=dir, trust_remote_code=True)`` works in
        a process without hf-shapley.
        """
        super().save_pretrained(save_directory, *args, **kwargs)
        config_file = os.path.join(save_directory, "config.json")
        if os.path.isfile(config_file):
            with open(config_file, encoding="utf-8") as f:
                saved = json.load(f)
            # transformers writes only the saved class into auto_map; AutoModel must load it too.
            auto_map = saved.get("auto_map") or {}
            model_ref = auto_map.get("AutoModelForImageClassification")
            if model_ref is not None:
                auto_map["AutoModel"] = model_ref
                saved["auto_map"] = auto_map
            if _copy_pipeline_code(save_directory):
                saved["custom_pipelines"] = {
                    **saved.get("custom_pipelines", {}),
                    **CUSTOM_PIPELINES,
                }
            with open(config_file, "w", encoding="utf-8") as f:
                json.dump(saved, f, indent=2, sort_keys=True)
                f.write("\n")
        if self.image_processor is not None:
            self.image_processor.save_pretrained(save_directory)

    def push_to_hub(self, repo_id: str, **kwargs: Any) -> Any:
        """Publish the complete repository: see ``hf_shapley.hub.push_to_hub``.

        Where hf-shapley is installed this uploads weights, config, code, image processor,
        pipeline and a full model card (``example_image=``, ``metrics=`` ... are accepted). Where
        only this file is present (loaded as remote code), transformers' generic upload runs.
        """
        try:
            # importlib, not an import statement: this file is also remote code, and
            # transformers refuses remote code whose imports name an uninstalled package.
            import importlib

            hub = importlib.import_module("hf_shapley.hub")
        except ImportError:
            return super().push_to_hub(repo_id, **kwargs)
        return hub.push_to_hub(self, repo_id, **kwargs)

    # ------------------------------------------------------------------ validation
    def _check_pixel_values(self, pixel_values: torch.Tensor) -> None:
        if not isinstance(pixel_values, torch.Tensor):
            raise TypeError(
                f"pixel_values must be a torch.Tensor of shape (B, C, H, W); got {type(pixel_values).__name__}. "
                "Use the model's image processor: processor(images, return_tensors='pt')."
            )
        cfg = self.config.backbone_config
        channels = getattr(cfg, "num_channels", 3)
        height, width = self.image_size
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

    def _check_coalition(self, coalition: torch.Tensor, batch_size: int) -> torch.Tensor:
        """Return the coalition as bool (B, M, P); raise a clear error for a wrong one."""
        check_coalitions(coalition, self.num_players, "coalition", ndim=(2, 3))
        if coalition.shape[0] != batch_size:
            raise ValueError(
                f"coalition has {coalition.shape[0]} rows but pixel_values has {batch_size} images; pass "
                f"shape ({batch_size}, {self.num_players}) or ({batch_size}, M, {self.num_players})."
            )
        return coalition if coalition.ndim == 3 else coalition[:, None]

    # ------------------------------------------------------------------ forward
    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        coalition: torch.Tensor | None = None,
        example_index: torch.Tensor | None = None,
        epoch: int | None = None,
        return_dict: bool | None = None,
        **kwargs: Any,
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
        """
        if pixel_values is None:
            raise ValueError("pixel_values is required.")
        self._check_pixel_values(pixel_values)
        if coalition is not None:
            masks = self._check_coalition(coalition, pixel_values.shape[0])
            values = self.coalition_values(pixel_values, masks)
            return ShapleyImageClassifierOutput(
                logits=values if coalition.ndim == 3 else values[:, 0]
            )

        if labels is not None:
            self._check_labels(labels, pixel_values.shape[0])
        if self.training and labels is not None:
            from .objective import shapley_objective

            return shapley_objective(
                self, pixel_values, labels, example_index=example_index, epoch=epoch
            )

        out = self.explain(pixel_values)
        if labels is not None:
            out.loss = F.cross_entropy(out.logits, labels)
            out.cls_loss = out.loss
        return out if return_dict is not False else out.to_tuple()

    def _check_labels(self, labels: torch.Tensor, batch_size: int) -> None:
        if labels.shape != (batch_size,):
            raise ValueError(f"labels must have shape ({batch_size},); got {tuple(labels.shape)}.")
        if labels.numel() and (labels.min() < 0 or labels.max() >= self.num_labels):
            raise ValueError(
                f"labels must lie in [0, {self.num_labels - 1}] for this {self.num_labels}-class model; "
                f"got values in [{int(labels.min())}, {int(labels.max())}]. Check the label mapping "
                "(config.id2label) against the data set's labels."
            )

    def explain(self, pixel_values: torch.Tensor) -> ShapleyImageClassifierOutput:
        """The full prediction with its explanation: logits, shapley_values, base_values."""
        embeddings = self.adapter.embed(self.backbone, pixel_values)
        return self._explain_from_embeddings(embeddings)

    def _explain_from_embeddings(self, embeddings: torch.Tensor) -> ShapleyImageClassifierOutput:
        if self.adapter.kind == "pixel_baseline":
            return self._explain_pixels(embeddings)
        s = self.num_special_tokens
        states = self.adapter.encode(self.backbone, embeddings, None)
        patch_states = states[:, s:]
        if self.config.prediction_mode == "shapley_sum":
            r = self._player_values(self._votes(patch_states))
            base = self.shapley_bias.float().expand(r.shape[0], -1)
            return ShapleyImageClassifierOutput(
                logits=base + r.sum(1), shapley_values=r, base_values=base
            )

        # backbone_head: the classifier gives the logits; the head explains them, with efficiency
        # imposed by spreading the residual v(all) - v(empty) - sum_i r_i evenly over players.
        # patch_weights=None: the classifier's own feature computation, so that predictions stay
        # bit-identical to the wrapped classifier (a weighted mean differs in the last bit).
        logits = self.classifier(
            self.adapter.classifier_features(states[:, :s], patch_states, None)
        )
        base = self._empty_coalition_logits(embeddings)
        features = patch_states if self.config.train_backbone else patch_states.detach()
        r = self._player_values(self.shapley_head(features))
        gap = (logits.float() - base.float()) - r.sum(1)
        phi = r + gap[:, None] / self.num_players
        return ShapleyImageClassifierOutput(
            logits=logits.float(), shapley_values=phi, base_values=base.float()
        )

    def _votes(self, features: torch.Tensor) -> torch.Tensor:
        """Soft-voting contributions of each token or cell: the Shapley head's output, minus its
        mean over classes with ``center_votes`` (softmax-invariant, so predictions keep)."""
        votes = self.shapley_head(features)
        if self.center_votes:
            votes = votes - votes.mean(-1, keepdim=True)
        return votes

    def _player_values(self, token_values: torch.Tensor) -> torch.Tensor:
        """(B, N, K) per-token contributions -> (B, P, K) per-player sums."""
        B, _, K = token_values.shape
        out = token_values.new_zeros(B, self.num_players, K)
        return out.index_add(1, self.token_to_player, token_values)

    def _empty_coalition_logits(self, embeddings: torch.Tensor) -> torch.Tensor:
        """Classifier output with every player removed: only the special tokens remain."""
        s = self.num_special_tokens
        states = self.adapter.encode(self.backbone, embeddings[:, :s], None)
        empty = states.new_zeros(states.shape[0], 0, states.shape[-1])
        return self.classifier(self.adapter.classifier_features(states, empty, empty[..., 0]))

    # ------------------------------------------------------------------ value function
    def coalition_values(
        self, pixel_values: torch.Tensor, coalitions: torch.Tensor
    ) -> torch.Tensor:
        """v_x(S) for every coalition: (B, C, H, W), bool (B, M, P) -> (B, M, K) in fp32."""
        embeddings = self.adapter.embed(self.backbone, pixel_values)
        return self.coalition_values_from_embeddings(embeddings, coalitions)

    def coalition_values_from_embeddings(
        self, embeddings: torch.Tensor, coalitions: torch.Tensor, *, chunk_size: int | None = None
    ) -> torch.Tensor:
        """As :meth:`coalition_values`, reusing embeddings (B, s + N, D) computed once per image.

        Adjacent complementary coalitions ``[S, ~S]`` share one packed sequence; any other
        coalition is packed with its own complement, whose value is discarded.
        """
        if self.adapter.kind == "pixel_baseline":
            return self._pixel_coalition_values(embeddings, coalitions, chunk_size=chunk_size)
        B, M, P = coalitions.shape
        paired = M % 2 == 0 and bool((coalitions[:, 1::2] == ~coalitions[:, 0::2]).all())
        primary = coalitions[:, 0::2] if paired else coalitions
        num_seq = primary.shape[1]
        flat = primary.reshape(B * num_seq, P)
        image_of = torch.arange(B, device=flat.device).repeat_interleave(num_seq)

        values_in, values_out = [], []
        chunk = chunk_size or self.config.coalition_batch_size
        for start in range(0, flat.shape[0], chunk):
            sl = slice(start, start + chunk)
            v_in, v_out = self._packed_pair_values(embeddings[image_of[sl]], flat[sl])
            values_in.append(v_in)
            values_out.append(v_out)
        v_in = torch.cat(values_in).reshape(B, num_seq, -1)
        if not paired:
            return v_in
        v_out = torch.cat(values_out).reshape(B, num_seq, -1)
        return torch.stack([v_in, v_out], dim=2).reshape(B, M, -1)

    def _packed_pair_values(
        self, embeddings: torch.Tensor, present: torch.Tensor
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
        states = self.adapter.encode(self.backbone, sequence, attention_mask[:, None])
        patch_states = states[:, 2 * s :]
        if self.config.prediction_mode == "shapley_sum":
            token_values = self._votes(patch_states)
            weights = in_s.to(token_values.dtype)[..., None]
            bias = self.shapley_bias.float()
            return bias + (token_values * weights).sum(1), bias + (
                token_values * (1 - weights)
            ).sum(1)
        v_in = self.classifier(self.adapter.classifier_features(states[:, :s], patch_states, in_s))
        v_out = self.classifier(
            self.adapter.classifier_features(states[:, s : 2 * s], patch_states, ~in_s)
        )
        return v_in.float(), v_out.float()

    # ------------------------------------------------------------------ pixel-baseline families
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

    def _pixel_features(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One backbone pass -> (per-cell features (n, N, D), what the classifier reads or None)."""
        hidden = self.adapter.encode(self.backbone, pixel_values)
        cells = self.adapter.cell_features(self.backbone, hidden)
        if self.config.prediction_mode == "shapley_sum":
            return cells, None
        return cells, self.classifier(self.adapter.pooled_features(self.backbone, hidden))

    def _pixel_logits(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(n, C, H, W) images (already masked) -> (n, K) fp32 logits of the prediction mode."""
        cells, classifier_logits = self._pixel_features(pixel_values)
        if classifier_logits is not None:
            return classifier_logits.float()
        return self.shapley_bias.float() + self._votes(cells).sum(1)

    def _baseline_value(self, like: torch.Tensor) -> torch.Tensor:
        """(K,) fp32 of the all-baseline image z: ``sum_j r_j(z)`` (soft voting) or the classifier's
        logits (backbone_head). Normalization layers and dropout run in eval mode; cached in eval
        mode (detached), recomputed on every call in training mode (one image, with gradients)."""
        key = (
            like.device,
            like.dtype,
            torch.is_autocast_enabled(like.device.type),
            self.config.prediction_mode,
        )
        if not self.training and self._baseline_cache is not None:
            cached_key, cached = self._baseline_cache
            if cached_key == key:
                return cached
        from .objective import frozen_statistics

        image = self.baseline_pixels.to(device=like.device, dtype=like.dtype)
        image = image.expand(1, -1, *self.image_size)
        with frozen_statistics(self, disable_dropout=True):
            cells, classifier_logits = self._pixel_features(image)
            if classifier_logits is None:
                value = self._votes(cells).sum(1)[0]
            else:
                value = classifier_logits[0].float()
        if not self.training:
            # A normal tensor even when computed under inference_mode, so that a later forward
            # with autograd (attribution baselines such as Grad-CAM) can use the cached value.
            with torch.inference_mode(False):
                self._baseline_cache = (key, value.detach().clone())
        return value

    def clear_baseline_cache(self) -> None:
        """Forget the cached ``v(empty)`` (pixel-baseline families). ``train()``, ``eval()``,
        ``load_state_dict`` and moves between devices or dtypes call it; call it yourself after
        editing weights in place while the model stays in eval mode."""
        self._baseline_cache = None

    def _explain_pixels(self, pixel_values: torch.Tensor) -> ShapleyImageClassifierOutput:
        """Full prediction of a pixel-baseline model: every player present, all of them voting."""
        cells, classifier_logits = self._pixel_features(pixel_values)
        empty = self._baseline_value(pixel_values)  # (K,)
        B = pixel_values.shape[0]
        if classifier_logits is None:
            r = self._player_values(self._votes(cells))
            bias = self.shapley_bias.float()
            logits = bias + r.sum(1)
            base = (bias + empty).expand(B, -1)
            phi = r - (empty / self.num_players)
            return ShapleyImageClassifierOutput(logits=logits, shapley_values=phi, base_values=base)
        # backbone_head: as for the token families, efficiency by spreading the residual evenly.
        logits = classifier_logits.float()
        base = empty.expand(B, -1)
        features = cells if self.config.train_backbone else cells.detach()
        r = self._player_values(self.shapley_head(features))
        gap = (logits - base) - r.sum(1)
        phi = r + gap[:, None] / self.num_players
        return ShapleyImageClassifierOutput(logits=logits, shapley_values=phi, base_values=base)

    def _pixel_coalition_values(
        self, pixel_values: torch.Tensor, coalitions: torch.Tensor, *, chunk_size: int | None
    ) -> torch.Tensor:
        """v_x(S) of a pixel-baseline model: the model on x with absent players' blocks at the
        baseline, normalization layers in eval mode. One backbone pass per coalition, at most
        ``config.coalition_batch_size`` images per call (``chunk_size`` may only lower it)."""
        from .objective import frozen_statistics

        B, M, P = coalitions.shape
        flat = coalitions.reshape(B * M, P)
        image_of = torch.arange(B, device=flat.device).repeat_interleave(M)
        chunk = min(
            chunk_size or self.config.coalition_batch_size, self.config.coalition_batch_size
        )
        baseline = self.baseline_pixels.to(pixel_values.dtype)
        values = []
        with frozen_statistics(self, disable_dropout=False):
            for start in range(0, flat.shape[0], chunk):
                sl = slice(start, start + chunk)
                present = flat[sl][:, self.pixel_to_player]  # (n, H, W)
                images = torch.where(present[:, None], pixel_values[image_of[sl]], baseline)
                values.append(self._pixel_logits(images))
        return torch.cat(values).reshape(B, M, -1)

    # ------------------------------------------------------------------ modes and caches
    def train(self, mode: bool = True):
        """Also drops the cached ``v(empty)``; a frozen classifier (``backbone_head`` with
        ``train_backbone=False``) stays in eval mode, so that its predictions and BatchNorm
        statistics never change."""
        super().train(mode)
        self.clear_baseline_cache()
        if (
            mode
            and self.config.prediction_mode == "backbone_head"
            and not self.config.train_backbone
        ):
            self.backbone.eval()
            if self.classifier is not None:
                self.classifier.eval()
        return self

    def load_state_dict(self, state_dict, *args, **kwargs):
        self.clear_baseline_cache()
        return super().load_state_dict(state_dict, *args, **kwargs)

    def _apply(self, fn, *args, **kwargs):
        if getattr(self, "_baseline_cache", None) is not None:
            self.clear_baseline_cache()
        return super()._apply(fn, *args, **kwargs)

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

    def value_function(self, pixel_values: torch.Tensor):
        """A game ``masks (M, P) -> (M, B, K)`` for the estimators, explaining a batch at once."""

        @torch.no_grad()
        def game(masks: torch.Tensor) -> torch.Tensor:
            coalitions = masks.to(pixel_values.device)[None].expand(pixel_values.shape[0], -1, -1)
            return self.coalition_values(pixel_values, coalitions).transpose(0, 1)

        return game

    @property
    def tokens_per_player(self) -> int:
        return math.prod(self.token_grid) // self.num_players


def _copy_pipeline_code(save_directory: str | os.PathLike) -> bool:
    """Copy the pipeline file and the files it imports beside the saved model.

    Read from this file's own directory (the installed package, or the remote-code module
    folder of a model loaded with trust_remote_code). Returns False, copying nothing, where the
    pipeline file is not there: the model then saves without the ``custom_pipelines`` entry.
    """
    import shutil

    from transformers.dynamic_module_utils import get_relative_import_files

    here = os.path.dirname(os.path.abspath(__file__))
    pipeline_file = os.path.join(here, PIPELINE_MODULE + ".py")
    if not os.path.isfile(pipeline_file):
        return False
    needed = [pipeline_file, *get_relative_import_files(pipeline_file)]
    if not all(os.path.isfile(path) for path in needed):
        return False
    for path in needed:
        target = os.path.join(save_directory, os.path.basename(path))
        if os.path.abspath(path) != os.path.abspath(target):
            shutil.copy(path, target)
    return True


def _strip_classifier_fields(config: PreTrainedConfig) -> PreTrainedConfig:
    """A copy of a backbone config; its labels live in the ShapleyConfig, not the backbone's."""
    config = config.__class__.from_dict(config.to_dict())
    config.architectures = None
    return config


def _check_image_processor_size(processor, image_size: tuple[int, int]) -> None:
    size = (
        getattr(processor, "crop_size", None)
        if getattr(processor, "do_center_crop", False)
        else None
    )
    size = size or getattr(processor, "size", None)
    if size is None:
        return
    size = dict(size)
    height, width = size.get("height"), size.get("width")
    if height is None and "shortest_edge" in size:
        height = width = size["shortest_edge"]
    if (height, width) != tuple(image_size):
        raise ValueError(
            f"The image processor resizes to {height} x {width} but the backbone expects "
            f"{image_size[0]} x {image_size[1]}. Fix the processor's `size` (or `crop_size`) before wrapping."
        )


__all__ = [
    "ShapleyForImageClassification",
    "ShapleyImageClassifierOutput",
    "ShapleyPreTrainedModel",
]
