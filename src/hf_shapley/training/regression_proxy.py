"""The ``shapley_regression_proxy`` evaluation metric of the trainers.

On held-out images, the per-image normalized Shapley regression residual of the model's values
against its own game on coalitions drawn from the Shapley kernel with a fixed evaluation seed.
A *proxy* for faithfulness (the network that gives phi also gives the game), cheap enough to
choose the step kept; the faithfulness report (``hf_shapley.evaluation``) is the measurement.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from ..models.coalitions import sample_shapley_kernel_coalitions
from ..models.objective import shapley_regression_loss
from ..models.objective_clip import vector_shapley_regression_loss


def evaluation_coalitions(
    num_players: int,
    num_coalitions: int,
    seed: int,
    example_index: torch.Tensor,
    device: torch.device,
) -> torch.Tensor:
    """bool (B, num_coalitions, P): the same coalitions for an image in every evaluation."""
    return sample_shapley_kernel_coalitions(
        num_players,
        num_coalitions,
        seed=seed,
        epoch=0,
        example_indices=example_index.detach().cpu(),
        device=device,
    )


def classifier_regression_proxy(
    model: nn.Module,
    unwrapped: nn.Module,
    pixel_values: torch.Tensor,
    outputs: Any,
    masks: torch.Tensor,
) -> torch.Tensor | None:
    """Per image (B,), for a ``ShapleyForImageClassification`` (``model`` as the Trainer calls
    it, ``unwrapped`` without its wrappers); ``None`` when the outputs carry no values."""
    phi = outputs.get("shapley_values") if isinstance(outputs, Mapping) else None
    base = outputs.get("base_values") if isinstance(outputs, Mapping) else None
    if phi is None or base is None:
        return None
    center = bool(unwrapped.config.center_logits)
    values = model(pixel_values=pixel_values, coalition=masks)["logits"]  # (B, m, K)
    targets = values.float() - base.float()[:, None]
    return torch.stack(
        [
            shapley_regression_loss(
                phi[i : i + 1].float(),
                masks[i : i + 1],
                targets[i : i + 1],
                normalization="per_image",
                center=center,
            )
            for i in range(len(masks))
        ]
    )


def clip_regression_proxy(
    model: nn.Module,
    unwrapped: nn.Module,
    pixel_values: torch.Tensor,
    outputs: Any,
    masks: torch.Tensor,
) -> torch.Tensor:
    """Per image (B,), for a ``ShapleyCLIPModel``: the image's vector game ``u(S)``."""
    vectors = unwrapped.coalition_vectors(pixel_values, masks)  # (B, m, D)
    phi = outputs["image_shapley_vectors"].float()
    targets = vectors.float() - outputs["image_base_vector"].float()[:, None]
    return torch.stack(
        [
            vector_shapley_regression_loss(phi[i : i + 1], masks[i : i + 1], targets[i : i + 1])
            for i in range(len(masks))
        ]
    )
