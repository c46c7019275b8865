"""Baseline explainers with one interface, so every method is scored the same way.

Every explainer maps images to a player-level map for one class per image,
``attribute(pixel_values, target) -> (B, P)``, over the ``players_grid`` of the model it explains
(the grid of its value function), and states its ``cost`` per image in full-forward equivalents
(docs/evaluation.md). Conventions for the cost: a backward pass counts as two forward passes; a
coalition evaluation costs one forward pass, except KernelSHAP on token-removal models, whose
complementary pairs share one packed sequence (half a pass per coalition).

Explainers that produce every class at once also have ``attribute_all(pixel_values) -> (B, P, K)``
(``all_classes = True``), used for agreement on the classes other than the predicted one.

All of them work on any :class:`~hf_shapley.ShapleyForImageClassification`: a vanilla classifier
gets a value function by ``from_backbone(classifier, prediction_mode="backbone_head",
train_backbone=False)``, which keeps its predictions bit-identical. Grad-CAM and Integrated
Gradients use captum; attention rollout needs a backbone that returns attention maps (the ViT
family; it switches the backbone to eager attention for the call).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from .estimators import model_game
from .faithfulness import player_pixel_index

__all__ = [
    "AttentionRolloutExplainer",
    "Explainer",
    "GradCamExplainer",
    "IntegratedGradientsExplainer",
    "KernelShapExplainer",
    "LeaveOneOutExplainer",
    "RandomExplainer",
    "ShapleyValuesExplainer",
    "coalition_cost",
    "pool_to_players",
]


def coalition_cost(model) -> float:
    """Full-forward equivalents of one coalition when evaluated in complementary pairs.

    Token-removal models pack a coalition and its complement into one sequence (one pass for
    two coalitions); pixel-baseline models run one full pass per coalition.
    """
    from ..models.backbones import TokenRemovalAdapter

    return 0.5 if isinstance(getattr(model, "adapter", None), TokenRemovalAdapter) else 1.0


def pool_to_players(maps: torch.Tensor, players_grid: Sequence[int]) -> torch.Tensor:
    """Sum a ``(B, H, W)`` map (pixels or feature-map cells) over each player: ``(B, P)``.

    Cell ``(r, c)`` belongs to player row ``floor(r * h / H)`` and column ``floor(c * w / W)``;
    sums keep completeness (the players' values add up to the map's total).
    """
    if maps.ndim != 3:
        raise ValueError(f"maps must have shape (B, H, W); got {tuple(maps.shape)}.")
    h, w = (int(s) for s in players_grid)
    index = player_pixel_index((h, w), maps.shape[-2:], device=maps.device).flatten()
    flat = maps.flatten(1)
    return flat.new_zeros(maps.shape[0], h * w).index_add(1, index, flat)


def _check_batch(pixel_values: torch.Tensor, target: torch.Tensor | Sequence[int]) -> torch.Tensor:
    if not isinstance(pixel_values, torch.Tensor) or pixel_values.ndim != 4:
        raise ValueError("pixel_values must be a (B, C, H, W) tensor.")
    if pixel_values.shape[0] == 0:
        raise ValueError("pixel_values is an empty batch (B = 0).")
    target = torch.as_tensor(target, dtype=torch.long, device=pixel_values.device)
    if target.ndim == 0:
        target = target.expand(pixel_values.shape[0])
    if target.shape != (pixel_values.shape[0],):
        raise ValueError(
            f"target must be an int or have shape ({pixel_values.shape[0]},); got "
            f"{tuple(target.shape)}."
        )
    return target


def _select(values: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """(B, P, K), (B,) -> (B, P)."""
    index = target.to(values.device).view(-1, 1, 1).expand(-1, values.shape[1], 1)
    return values.gather(2, index)[..., 0]


class Explainer:
    """Base class: ``attribute(pixel_values, target) -> (B, P)`` and a ``cost`` per image."""

    name: str = "explainer"
    all_classes: bool = False

    def __init__(self, model):
        self.model = model

    @property
    def players_grid(self) -> tuple[int, int]:
        return tuple(self.model.players_grid)

    @property
    def num_players(self) -> int:
        return int(self.model.num_players)

    @property
    def cost(self) -> float:
        """Full-forward equivalents per image."""
        raise NotImplementedError

    def attribute(self, pixel_values: torch.Tensor, target) -> torch.Tensor:
        target = _check_batch(pixel_values, target)
        return _select(self.attribute_all(pixel_values), target)

    def attribute_all(self, pixel_values: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError(f"{type(self).__name__} explains one class at a time.")

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, cost={self.cost:g})"


class RandomExplainer(Explainer):
    """Uniform random maps (a floor every method should beat); cost 0."""

    name = "random"

    def __init__(self, model, seed: int = 0):
        super().__init__(model)
        self.generator = torch.Generator().manual_seed(seed)

    @property
    def cost(self) -> float:
        return 0.0

    def attribute(self, pixel_values: torch.Tensor, target) -> torch.Tensor:
        _check_batch(pixel_values, target)
        return torch.rand(pixel_values.shape[0], self.num_players, generator=self.generator)


class ShapleyValuesExplainer(Explainer):
    """The model's own one-pass Shapley values ``phi`` (``out.shapley_values``); cost 1."""

    name = "phi (one pass)"
    all_classes = True

    @property
    def cost(self) -> float:
        return 1.0

    @torch.no_grad()
    def attribute_all(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values).shapley_values.float()


class LeaveOneOutExplainer(Explainer):
    """``v(all) - v(all without i)`` through the value function; cost ``P + 1``."""

    name = "leave-one-out"
    all_classes = True

    @property
    def cost(self) -> float:
        return float(self.num_players + 1)

    @torch.no_grad()
    def attribute_all(self, pixel_values: torch.Tensor) -> torch.Tensor:
        B, P = pixel_values.shape[0], self.num_players
        masks = torch.ones(P + 1, P, dtype=torch.bool, device=pixel_values.device)
        masks[1:] &= ~torch.eye(P, dtype=torch.bool, device=pixel_values.device)
        values = self.model(pixel_values, coalition=masks.expand(B, -1, -1)).logits
        return (values[:, :1] - values[:, 1:]).float()


class KernelShapExplainer(Explainer):
    """Paired-sampling KernelSHAP with a fixed budget of coalition evaluations.

    The whole budget is spent (no stopping rule); cost = ``budget * coalition_cost(model)``.
    """

    all_classes = True

    def __init__(self, model, budget: int, *, seed: int = 0, batch_size: int = 512):
        super().__init__(model)
        if budget < 4:
            raise ValueError(
                f"budget must be >= 4 evaluations (v(empty), v(all), a pair); got {budget}."
            )
        self.budget = int(budget)
        self.seed = seed
        self.batch_size = batch_size
        self.name = f"KernelSHAP ({self.budget} evals)"

    @property
    def cost(self) -> float:
        return self.budget * coalition_cost(self.model)

    def attribute_all(self, pixel_values: torch.Tensor) -> torch.Tensor:
        from .estimators import kernel_shap

        result = kernel_shap(
            model_game(self.model, pixel_values),
            self.num_players,
            max_evaluations=self.budget,
            tolerance=0.0,
            batch_size=max(2, min(self.batch_size, (self.budget - 2) // 2 * 2)),
            seed=self.seed,
        )
        return result.values.permute(1, 0, 2).float()  # (P, B, K) -> (B, P, K)


def _logits_forward(model):
    def forward(pixel_values: torch.Tensor) -> torch.Tensor:
        return model(pixel_values).logits

    return forward


class IntegratedGradientsExplainer(Explainer):
    """captum Integrated Gradients on the pixels, summed over channels and each player's pixels.

    Completeness carries over: the players' values add up to ``f(x) - f(baseline)`` (up to the
    Riemann error of ``n_steps``). The baseline is a constant in the model's normalized input
    space (0 = the mean image of the normalization). Cost ``3 * n_steps`` (a forward and a
    backward per step).
    """

    name = "Integrated Gradients"

    def __init__(
        self, model, n_steps: int = 16, baseline: float = 0.0, internal_batch_size: int = 256
    ):
        super().__init__(model)
        self.n_steps = n_steps
        self.baseline = baseline
        self.internal_batch_size = internal_batch_size
        self.name = f"Integrated Gradients ({n_steps} steps)"

    @property
    def cost(self) -> float:
        return 3.0 * self.n_steps

    def attribute_pixels(
        self, pixel_values: torch.Tensor, target, *, return_convergence_delta: bool = False
    ):
        """Pixel attributions ``(B, C, H, W)`` (and captum's completeness error, if asked)."""
        from captum.attr import IntegratedGradients

        target = _check_batch(pixel_values, target)
        ig = IntegratedGradients(_logits_forward(self.model))
        return ig.attribute(
            pixel_values,
            baselines=self.baseline,
            target=target,
            n_steps=self.n_steps,
            internal_batch_size=self.internal_batch_size,
            return_convergence_delta=return_convergence_delta,
        )

    def attribute(self, pixel_values: torch.Tensor, target) -> torch.Tensor:
        pixels = self.attribute_pixels(pixel_values, target)
        return pool_to_players(pixels.sum(1).detach(), self.players_grid).float()


class _GridProbe(nn.Module):
    """Identity on a ``(B, C, h, w)`` map: the layer captum's Grad-CAM hooks."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def _default_cam_layer(model) -> nn.Module:
    adapter = getattr(model, "adapter", None)
    if adapter is not None and hasattr(adapter, "layers"):
        # The input of the last block, as is usual for ViTs: a CLS-token head reads the last
        # block's patch outputs not at all, so their gradients would be zero.
        layers = adapter.layers(model.backbone)
        return layers[-2] if len(layers) > 1 else model.backbone.embeddings
    raise ValueError(
        "GradCamExplainer could not find the last backbone block of this model; pass layer=<the "
        "module whose output is the last feature map (B, C, h, w) or token sequence (B, T, D)>."
    )


class GradCamExplainer(Explainer):
    """captum ``LayerGradCam`` on the input of the last backbone block, summed per player.

    The default layer is the second-to-last block (the last block's input: a CLS-token head
    does not read the last block's patch outputs at all). A ViT block outputs a token sequence ``(B, T, D)``; a hook reshapes its patch tokens to a
    ``(B, D, h, w)`` grid and passes it through an identity module, which is the layer captum
    attributes (captum's Grad-CAM expects channels first). A convolutional block's ``(B, C, h,
    w)`` output is used as it is. ReLU is applied as in Grad-CAM. Cost 3 (one forward and one
    backward pass).
    """

    name = "Grad-CAM"

    def __init__(self, model, layer: nn.Module | None = None):
        super().__init__(model)
        self.layer = layer if layer is not None else _default_cam_layer(model)
        self.probe = _GridProbe()

    @property
    def cost(self) -> float:
        return 3.0

    def _hook(self, module, inputs, output):
        if isinstance(output, tuple):
            return (self._hook(module, inputs, output[0]), *output[1:])
        if output.ndim == 4:
            return self.probe(output)
        if output.ndim != 3:
            raise ValueError(f"Grad-CAM layer output must be 3D or 4D; got {tuple(output.shape)}.")
        grid_h, grid_w = getattr(self.model, "token_grid", (0, 0))
        num_patches = grid_h * grid_w
        if num_patches == 0:
            side = math.isqrt(output.shape[1])
            grid_h = grid_w = side
            num_patches = side * side
        if output.shape[1] < num_patches:
            # A shorter sequence (e.g. backbone_head's empty-coalition pass for base_values) is
            # not the image's full forward: leave it alone.
            return output
        specials = output.shape[1] - num_patches
        B, _, D = output.shape
        grid = output[:, specials:].transpose(1, 2).reshape(B, D, grid_h, grid_w)
        grid = self.probe(grid)
        return torch.cat([output[:, :specials], grid.flatten(2).transpose(1, 2)], dim=1)

    def attribute(self, pixel_values: torch.Tensor, target) -> torch.Tensor:
        from captum.attr import LayerGradCam

        target = _check_batch(pixel_values, target)
        handle = self.layer.register_forward_hook(self._hook)
        try:
            cam = LayerGradCam(_logits_forward(self.model), self.probe)
            maps = cam.attribute(pixel_values, target=target, relu_attributions=True)
        finally:
            handle.remove()
        return pool_to_players(maps[:, 0].detach(), self.players_grid).float()


class AttentionRolloutExplainer(Explainer):
    """Attention rollout (Abnar & Zuidema 2020), class-agnostic; ViT family only; cost 1.

    Per block: head-averaged attention, plus the identity for the residual, rows renormalized;
    the product over blocks gives how much each output token draws on each input token. The map
    reads the rows of the tokens the prediction uses: the CLS token for a classifier head
    (``backbone_head``), the patch tokens (mean of their rows) for soft voting (``shapley_sum``),
    or as set by ``query``; the patch columns are summed per player.
    """

    name = "attention rollout"

    def __init__(self, model, query: str = "auto", head_fusion: str = "mean"):
        super().__init__(model)
        if query not in ("auto", "cls", "patches"):
            raise ValueError(f"query must be 'auto', 'cls' or 'patches'; got {query!r}.")
        if head_fusion not in ("mean", "max"):
            raise ValueError(f"head_fusion must be 'mean' or 'max'; got {head_fusion!r}.")
        if query == "auto":
            mode = getattr(getattr(model, "config", None), "prediction_mode", "backbone_head")
            query = "patches" if mode == "shapley_sum" else "cls"
        self.query = query
        self.head_fusion = head_fusion

    @property
    def cost(self) -> float:
        return 1.0

    @torch.no_grad()
    def rollout(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """The rollout matrix ``(B, T, T)`` over all tokens (special tokens first); rows sum to 1."""
        backbone = self.model.backbone
        previous = backbone.config._attn_implementation
        try:
            backbone.set_attn_implementation("eager")
            out = backbone(pixel_values, output_attentions=True)
        finally:
            backbone.set_attn_implementation(previous)
        attentions = getattr(out, "attentions", None)
        if not attentions:
            raise ValueError(
                f"{type(backbone).__name__} returned no attention maps: attention rollout needs a "
                "transformer backbone (the ViT family)."
            )
        result = None
        for attention in attentions:
            fused = attention.mean(1) if self.head_fusion == "mean" else attention.amax(1)
            eye = torch.eye(fused.shape[-1], dtype=fused.dtype, device=fused.device)
            step = 0.5 * fused.double() + 0.5 * eye
            step = step / step.sum(-1, keepdim=True)
            result = step if result is None else step @ result
        return result

    def attribute(self, pixel_values: torch.Tensor, target) -> torch.Tensor:
        _check_batch(pixel_values, target)
        matrix = self.rollout(pixel_values)
        num_patches = math.prod(self.model.token_grid)
        specials = matrix.shape[-1] - num_patches
        rows = matrix[:, 0] if self.query == "cls" else matrix[:, specials:].mean(1)
        grid_h, grid_w = self.model.token_grid
        patch_map = rows[:, specials:].reshape(-1, grid_h, grid_w)
        return pool_to_players(patch_map, self.players_grid).float()
