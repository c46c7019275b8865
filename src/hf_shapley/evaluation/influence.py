"""Who casts the votes and who causes them: the vote-influence matrix of a soft-voting model.

With soft voting the model's value is ``v(S) = b + sum_j u_j(S)``, where ``u_j(S)`` is player
``j``'s vote when the players in ``S`` are present (0 when ``j`` is absent and its tokens are
dropped). By linearity of the Shapley value, player ``i``'s true Shapley value is

    phi_i(v) = sum_j C_ij,        C_ij = Shapley value of player i in the game u_j,

so ``C_ii`` is what ``i``'s own vote is worth and ``C_ij`` (``i != j``) is ``i``'s influence on
``j``'s vote: a background player that casts the object's votes because it reads the object
through attention moves credit to the object (``C_object,background``). The model reports
``r_i(x) = u_i(all)``, its full-context vote; where the off-diagonal part is large, no
training of ``r`` alone can make ``r`` the Shapley value, whatever the objective weights.

:func:`vote_influence` computes ``C`` exactly (``2**P`` coalitions, float64) through the game
interface: the same packed passes as :func:`tabulate_game`, with a readout that returns every
player's vote instead of their sum, so it costs no extra forward pass over the exact truth.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..models.modeling_shapley import PlayerVotesReadout
from .estimators import exact_shapley_values
from .truth import tabulate_game


@dataclass
class VoteInfluence:
    """The exact vote-influence matrix of a batch, for the explained class of each image.

    Attributes:
        matrix: (B, P, P) ``C[b, i, j]``: Shapley value of player ``i`` in the game of player
            ``j``'s vote (for class ``classes[b]``).
        shapley_values: (B, P) ``sum_j C[b, i, j]``: the exact Shapley values.
        model_values: (B, P) what the model reports (``shapley_values`` of its output).
        full_votes: (B, P) ``u_i(all)``, each player's vote with every player present.
        classes: (B,) the explained class of each image.
    """

    matrix: torch.Tensor
    shapley_values: torch.Tensor
    model_values: torch.Tensor
    full_votes: torch.Tensor
    classes: torch.Tensor

    @property
    def own(self) -> torch.Tensor:
        """(B, P) ``C_ii``: what each player's own vote is worth."""
        return torch.diagonal(self.matrix, dim1=1, dim2=2)

    @property
    def received(self) -> torch.Tensor:
        """(B, P) ``sum_{j != i} C_ij``: credit for the votes player ``i`` causes in others."""
        return self.shapley_values - self.own

    def off_diagonal_share(self) -> torch.Tensor:
        """(B,) ``||received|| / (||own|| + ||received||)``: 0 when every vote is caused by
        the player that casts it (an additive model), towards 1 when votes are cast by
        players other than their causes."""
        own = self.own.norm(dim=1)
        received = self.received.norm(dim=1)
        return received / (own + received).clamp_min(1e-12)


@torch.no_grad()
def vote_influence(
    model,
    pixel_values: torch.Tensor,
    classes: torch.Tensor | None = None,
    *,
    center: bool = True,
    progress: bool = False,
) -> VoteInfluence:
    """The exact vote-influence matrix of a soft-voting model (P <= 16).

    Args:
        model: a ``ShapleyForImageClassification`` with ``prediction_mode="shapley_sum"``.
        pixel_values: (B, C, H, W).
        classes: (B,) the class to explain per image; default the predicted class.
        center: explain class-centered votes (each vote minus its mean over classes), the part
            softmax sees.
        progress: a progress bar over the enumeration.
    """
    readout = model.readout
    if not hasattr(readout, "votes"):
        raise ValueError(
            "vote_influence needs a soft-voting model (prediction_mode='shapley_sum'): in "
            "backbone_head mode the players cast no votes, the wrapped classifier decides."
        )
    P, K = model.num_players, model.num_labels
    was_training = model.training
    model.eval()
    try:
        out = model(pixel_values)
    finally:
        model.train(was_training)
    if classes is None:
        classes = out.logits.argmax(-1)
    votes = PlayerVotesReadout(readout, model.game.player_sum)
    table = tabulate_game(model, pixel_values, readout=votes, progress=progress)
    table = table.reshape(table.shape[0], table.shape[1], P, K)  # (2**P, B, P_j, K)
    if center:
        table = table - table.mean(-1, keepdim=True)
    index = classes.cpu()[None, :, None, None].expand(table.shape[0], -1, P, 1)
    table = table.gather(3, index)[..., 0]  # (2**P, B, P_j)
    weights = 2 ** torch.arange(P, dtype=torch.int64)

    def lookup(masks: torch.Tensor) -> torch.Tensor:
        return table[(masks.long().cpu() * weights).sum(-1)]

    matrix = exact_shapley_values(lookup, P).permute(1, 0, 2)  # (B, P_i, P_j)
    phi = out.shapley_values.double().cpu()
    if center:
        phi = phi - phi.mean(-1, keepdim=True)
    rows = torch.arange(len(classes))
    return VoteInfluence(
        matrix=matrix.contiguous(),
        shapley_values=matrix.sum(2),
        model_values=phi[rows, :, classes.cpu()],
        full_votes=table[-1],
        classes=classes.cpu(),
    )


__all__ = ["VoteInfluence", "vote_influence"]
