"""Image-text retrieval of a self-explaining dual encoder: R@1, and R@1 after deleting patches.

* :func:`retrieval_hits`: from a square score matrix (image ``i`` matches text ``i``), whether
  each image retrieves its text first (image to text) and each text its image (text to image);
  R@1 is the mean of the hits.
* :func:`deletion_recall_at_1` (the "deletion R@1" protocol): for each image, remove the ``k``
  players its map ranks highest (the map of its matching text), score the cut-down image
  against every text through the model's value function (``model(x, input_ids, coalition=S)``),
  and recompute R@1 on the matrix of cut-down images, for each ``k`` of a list. A map that
  finds the patches the match rests on makes R@1 fall fastest.
* :class:`CLIPTextScores`: a :class:`~hf_shapley.ShapleyCLIPModel` with a fixed set of ``T``
  texts seen as a ``T``-class image classifier (``.logits`` = the scores against the texts), so
  that every classifier tool of :mod:`hf_shapley.evaluation` (the baseline explainers,
  :func:`~hf_shapley.evaluation.player_curve`, :func:`~hf_shapley.evaluation.model_coalition_values`,
  KernelSHAP through :func:`~hf_shapley.evaluation.estimators.model_game`) works on CLIP scores, the
  "class" of an image being the index of a text.

Ties: an image whose matching text shares the top score with ``n - 1`` other texts counts as
``1 / n`` of a hit (the expected R@1 under a random tie break), so a matrix of equal scores
gives chance, ``1 / N``, rather than 0 or 1. This matters at the end of a deletion curve: with
every player removed, all images are the CLS token alone and score alike.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn
from transformers.utils import ModelOutput

from ..models.modeling_shapley_clip import check_text_inputs
from .faithfulness import check_attributions, curve_masks

__all__ = [
    "CLIPTextScoreOutput",
    "CLIPTextScores",
    "DeletionRecall",
    "RetrievalHits",
    "deletion_recall_at_1",
    "retrieval_hits",
]

CoalitionScores = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class RetrievalHits:
    """Per-item hits of a square score matrix (1 = retrieved first, ``1/n`` = tied with n - 1).

    Attributes:
        image_to_text: ``(N,)`` float64, image ``i`` ranks text ``i`` first among the N texts.
        text_to_image: ``(N,)`` float64, text ``j`` ranks image ``j`` first among the N images.
    """

    image_to_text: torch.Tensor
    text_to_image: torch.Tensor

    @property
    def recall_image_to_text(self) -> float:
        return float(self.image_to_text.mean())

    @property
    def recall_text_to_image(self) -> float:
        return float(self.text_to_image.mean())


def _check_square(scores: torch.Tensor, name: str = "scores") -> torch.Tensor:
    if not isinstance(scores, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape (N, N); got {type(scores)}.")
    if scores.ndim != 2 or scores.shape[0] != scores.shape[1] or scores.shape[0] == 0:
        raise ValueError(
            f"{name} must be a square (N, N) matrix of images by texts, image i matching text i, "
            f"N >= 1; got shape {tuple(scores.shape)}."
        )
    if not torch.isfinite(scores).all():
        raise ValueError(f"{name} contains NaN or infinite values.")
    return scores.detach().double().cpu()


def _row_hits(scores: torch.Tensor) -> torch.Tensor:
    """(N, N) -> (N,): 1 / (number of entries tied at the row's top) if the diagonal is among
    them, else 0."""
    top = scores.amax(dim=1, keepdim=True)
    at_top = scores == top
    diagonal = torch.diagonal(at_top)
    return torch.where(diagonal, 1.0 / at_top.sum(1).double(), torch.zeros_like(top[:, 0]))


def retrieval_hits(scores: torch.Tensor) -> RetrievalHits:
    """R@1 hits of a score matrix ``(N, N)`` (images by texts; image ``i`` matches text ``i``).

    Image to text reads the rows, text to image the columns; ties as in the module docstring.
    """
    scores = _check_square(scores)
    return RetrievalHits(image_to_text=_row_hits(scores), text_to_image=_row_hits(scores.t()))


@dataclass
class DeletionRecall:
    """R@1 after deleting each image's top-``k`` players, for each ``k`` of ``ks``.

    Attributes:
        ks: the numbers of players removed.
        scores: ``(len(ks), N, N)`` float64: ``scores[j, i, t]`` is the score of image ``i``
            without its ``ks[j]`` top players against text ``t``.
        image_to_text: ``(len(ks), N)`` per-image hits (see :class:`RetrievalHits`).
        text_to_image: ``(len(ks), N)`` per-text hits, the gallery being the cut-down images.
    """

    ks: list[int]
    scores: torch.Tensor
    image_to_text: torch.Tensor
    text_to_image: torch.Tensor

    def recall(self) -> dict[str, list[float]]:
        """``{"image_to_text": [R@1 per k], "text_to_image": [...]}``."""
        return {
            "image_to_text": self.image_to_text.mean(1).tolist(),
            "text_to_image": self.text_to_image.mean(1).tolist(),
        }


def deletion_recall_at_1(
    coalition_scores: CoalitionScores, attributions: torch.Tensor, ks: Sequence[int]
) -> DeletionRecall:
    """The deletion R@1 protocol: R@1 after removing each image's ``k`` most relevant players.

    For image ``i`` the players are ranked by ``attributions[i]`` (most relevant first, ties by
    player index, as :func:`~hf_shapley.evaluation.curve_masks`); the coalition without the top
    ``k`` is scored against all N texts, giving row ``i`` of a new score matrix, and R@1 is
    recomputed on it both ways (text to image searches the cut-down images).

    Args:
        coalition_scores: bool ``(N, M, P)`` coalitions (True = present) -> ``(N, M, N)`` scores
            of each image's coalitions against the N texts, text ``i`` matching image ``i``
            (e.g. :func:`~hf_shapley.evaluation.model_coalition_values` of a
            :class:`CLIPTextScores` over the images' own captions).
        attributions: ``(N, P)`` each image's map for its matching text.
        ks: numbers of players to remove, each in ``[0, P]`` (0 = the full images).

    Returns:
        :class:`DeletionRecall`. Cost: ``len(ks)`` coalition evaluations per image.
    """
    attributions = check_attributions(attributions)
    N, P = attributions.shape
    ks = [int(k) for k in ks]
    if not ks:
        raise ValueError("ks must hold at least one number of players to remove.")
    bad = [k for k in ks if not 0 <= k <= P]
    if bad:
        raise ValueError(f"ks must lie in [0, P] = [0, {P}]; got {bad}.")
    masks = curve_masks(attributions, "deletion")[:, ks]  # (N, len(ks), P)
    scores = coalition_scores(masks)
    if not isinstance(scores, torch.Tensor) or tuple(scores.shape) != (N, len(ks), N):
        shape = tuple(scores.shape) if isinstance(scores, torch.Tensor) else type(scores)
        raise ValueError(
            f"coalition_scores must return (N, M, T) = ({N}, {len(ks)}, {N}) for masks of shape "
            f"{tuple(masks.shape)}: one text per image (text i matches image i); got {shape}."
        )
    scores = scores.detach().double().cpu().transpose(0, 1)  # (len(ks), N, N)
    hits = [retrieval_hits(s) for s in scores]
    return DeletionRecall(
        ks=ks,
        scores=scores,
        image_to_text=torch.stack([h.image_to_text for h in hits]),
        text_to_image=torch.stack([h.text_to_image for h in hits]),
    )


# ---------------------------------------------------------------------------- CLIP as a classifier
@dataclass
class CLIPTextScoreOutput(ModelOutput):
    """Output of :class:`CLIPTextScores` for B images and its T texts.

    Args:
        logits (`torch.FloatTensor` of shape `(B, T)`, or `(B, M, T)` with a 3D `coalition`):
            The scores ``logits_per_image``; with ``coalition=`` the game ``v_{x,t}(S)``.
        shapley_values (`torch.FloatTensor` of shape `(B, P, T)`): ``phi_i(x, t)``.
        base_values (`torch.FloatTensor` of shape `(B, T)`): ``v_{x,t}(empty)``.
    """

    logits: torch.FloatTensor | None = None
    shapley_values: torch.FloatTensor | None = None
    base_values: torch.FloatTensor | None = None


class CLIPTextScores(nn.Module):
    """A :class:`~hf_shapley.ShapleyCLIPModel` and T fixed texts as a T-class image classifier.

    ``forward(pixel_values, coalition=None)`` returns ``.logits`` = the model's
    ``logits_per_image`` against the texts (``(B, T)``, or ``(B, M, T)`` with a ``(B, M, P)``
    coalition, through the model's public ``coalition=`` API), and ``.shapley_values``
    ``(B, P, T)``. It exposes what the baseline explainers of
    :mod:`hf_shapley.evaluation.explainers` read (``players_grid``, ``num_players``,
    ``token_grid``, ``adapter``, ``backbone`` = the vision tower, ``config``), so they explain
    the score of text ``t`` when given ``target = t``; the texts are encoded on every call
    (the text tower is cheap next to the image side and this keeps the public forward the one
    path to the scores).

    Args:
        model: the dual encoder (its eval/train mode is left as it is).
        input_ids: ``(T, L)`` token ids of the texts.
        attention_mask: ``(T, L)``, optional.
    """

    def __init__(
        self,
        model: nn.Module,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
    ):
        super().__init__()
        if not all(hasattr(model, name) for name in ("game", "clip", "get_text_embeds")):
            raise TypeError(
                f"model must be a ShapleyCLIPModel (a dual encoder with a game); got "
                f"{type(model).__name__}."
            )
        check_text_inputs(
            input_ids, attention_mask, model.config.clip_config.text_config.max_position_embeddings
        )
        self.model = model
        self.register_buffer("input_ids", input_ids, persistent=False)
        self.register_buffer("attention_mask", attention_mask, persistent=False)

    @property
    def config(self):
        return self.model.config

    @property
    def num_texts(self) -> int:
        return int(self.input_ids.shape[0])

    @property
    def players_grid(self) -> tuple[int, int]:
        return self.model.players_grid

    @property
    def num_players(self) -> int:
        return self.model.num_players

    @property
    def token_grid(self) -> tuple[int, int]:
        return self.model.token_grid

    @property
    def adapter(self):
        """The vision tower's token-removal adapter (for Grad-CAM's layer and the cost of a
        coalition: complementary pairs share one packed pass)."""
        return self.model.game.adapter

    @property
    def backbone(self) -> nn.Module:
        """The vision tower (for attention rollout and Grad-CAM)."""
        return self.model.clip.vision_model

    def forward(
        self, pixel_values: torch.Tensor, coalition: torch.Tensor | None = None
    ) -> CLIPTextScoreOutput:
        """(B, C, H, W) images -> scores against the T texts; see the class docstring."""
        out = self.model(
            pixel_values,
            input_ids=self.input_ids,
            attention_mask=self.attention_mask,
            coalition=coalition,
        )
        return CLIPTextScoreOutput(
            logits=out.logits_per_image,
            shapley_values=out.shapley_values,
            base_values=out.base_values,
        )
