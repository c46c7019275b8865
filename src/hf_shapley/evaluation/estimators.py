"""Ground-truth Shapley values of a game: exact enumeration and KernelSHAP.

These estimators are what the evaluation compares a model's one-pass explanation
against, so they are written for trust rather than speed: float64 throughout, no
approximations beyond the Monte Carlo error of KernelSHAP, which is estimated and
reported.

A *game* here is any callable ``game(masks) -> values`` where ``masks`` is a bool tensor
of shape ``(M, P)`` (``True`` = player present) and ``values`` has shape ``(M, *T)`` for
any trailing shape ``T``: ``()`` for a scalar game, ``(K,)`` for the logits of one image,
``(B, K)`` to explain a batch of images with one call per coalition batch. Every output
entry is an independent game; all of them are explained at once.

:func:`model_game` makes the game of a self-explaining model on a batch of images (through
its ``coalition=`` value function).

* :func:`exact_shapley_values` enumerates all ``2**P`` coalitions (``P <= 16``) and
  applies the weights ``|S|! (P - |S| - 1)! / P!`` as one matrix product per chunk.
* :func:`kernel_shap` is paired-sampling KernelSHAP as analysed by Covert & Lee,
  "Improving KernelSHAP: Practical Shapley Value Estimation via Linear Regression"
  (AISTATS 2021). Shapley values solve the efficiency-constrained least-squares problem
  ``min_beta beta^T A beta - 2 b^T beta`` s.t. ``1^T beta = v(all) - v(empty)``, with
  ``A = E[z z^T]`` and ``b = E[z (v(z) - v(empty))]`` under the Shapley kernel.
  ``method="regression"`` (default) estimates both ``A`` and ``b`` from the same sampled
  pairs, i.e. KernelSHAP's weighted regression; ``method="unbiased"`` uses the exact
  ``A`` and estimates only ``b``. The regression is slightly biased (O(1/n)) but has far
  lower variance: it is exact for additive games and, on the closed-form P = 16 games of
  the tests, reaches the 1% stopping rule in under a thousand evaluations where the
  unbiased estimator needs tens of thousands. Both report a standard error per value,
  from the per-pair samples (the delta method for the regression), and stop when
  ``max_i std(phi_i) / (max_i phi_i - min_i phi_i) < tolerance`` for every output.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

import numpy as np
import torch

from ..models.coalitions import (
    check_num_players,
    enumerate_coalitions,
    sample_shapley_kernel_coalitions,
    shapley_kernel_size_probabilities,
)

__all__ = [
    "KernelShapResult",
    "KernelShapStep",
    "exact_shapley_values",
    "kernel_shap",
    "model_game",
]

Game = Callable[[torch.Tensor], "torch.Tensor | np.ndarray"]

# Exact enumeration is 2**P game evaluations: 65,536 at P = 16, a million at P = 20.
MAX_PLAYERS_EXACT = 16


# --------------------------------------------------------------------------------------
# Calling the game
# --------------------------------------------------------------------------------------


def model_game(model: torch.nn.Module, pixel_values: torch.Tensor) -> Game:
    """The game ``masks (M, P) -> (M, B, K)`` of ``model`` on a batch of images: its own
    predictions ``v_x(S) = model(x, coalition=S)``, every image explained at once."""

    @torch.no_grad()
    def game(masks: torch.Tensor) -> torch.Tensor:
        coalitions = masks.to(pixel_values.device)[None].expand(pixel_values.shape[0], -1, -1)
        return model(pixel_values, coalition=coalitions).logits.transpose(0, 1)

    return game


def _evaluate(
    game: Game,
    masks: torch.Tensor,
    trailing_shape: tuple[int, ...] | None,
    dtype: torch.dtype,
) -> tuple[torch.Tensor, tuple[int, ...]]:
    """Call ``game`` on ``(M, P)`` masks; return its values as ``(M, prod(T))`` in ``dtype``, and ``T``.

    Checks what the game returned so that a wrong value function fails here, with the
    coalitions in view, rather than as a silently wrong attribution.
    """
    num_coalitions = masks.shape[0]
    values = game(masks)
    if isinstance(values, np.ndarray):
        values = torch.from_numpy(values)
    if not isinstance(values, torch.Tensor):
        raise TypeError(
            f"game must return a torch.Tensor (or numpy array) of shape ({num_coalitions}, *T) "
            f"for {num_coalitions} coalitions; got {type(values).__name__}."
        )
    if values.ndim == 0 or values.shape[0] != num_coalitions:
        raise ValueError(
            f"game was called with {num_coalitions} coalitions (masks of shape "
            f"{tuple(masks.shape)}) and must return shape ({num_coalitions}, *T), one row per "
            f"coalition; got shape {tuple(values.shape)}."
        )
    if trailing_shape is not None and tuple(values.shape[1:]) != trailing_shape:
        raise ValueError(
            f"game returned shape {tuple(values.shape)} for {num_coalitions} coalitions, but "
            f"earlier calls returned trailing shape {trailing_shape}; the output shape T must "
            "not depend on the coalitions."
        )
    if values.is_complex() or values.dtype == torch.bool:
        raise TypeError(f"game must return real numbers; got dtype {values.dtype}.")
    shape = tuple(values.shape[1:])
    values = values.detach().to(dtype).reshape(num_coalitions, -1)
    finite = torch.isfinite(values).all(dim=1)
    if not bool(finite.all()):
        bad = (~finite).nonzero().flatten()
        example = masks[bad[0]].nonzero().flatten().tolist()
        raise ValueError(
            f"game returned NaN or inf for {bad.numel()} of {num_coalitions} coalitions "
            f"(output shape {tuple(values.shape)}); e.g. coalition {int(bad[0])} with present "
            f"players {example}. Shapley values are only defined for finite games."
        )
    return values, shape


def _check_dtype(dtype: torch.dtype) -> None:
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating-point torch.dtype; got {dtype!r}.")


# --------------------------------------------------------------------------------------
# Exact Shapley values
# --------------------------------------------------------------------------------------


def _exact_weights(num_players: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per coalition size s = 0..P: weight of v(S) in phi_i when i is in S, and when it is not.

    phi_i = sum_{S not containing i} w(|S|) [v(S + i) - v(S)], w(s) = s! (P - s - 1)! / P!.
    Rewritten as a sum over all S of v(S) times a signed weight:
      i in S:     +w(|S| - 1) = (|S| - 1)! (P - |S|)! / P!
      i not in S: -w(|S|)     = |S|! (P - |S| - 1)! / P!
    computed from exact integers and rounded once to float64.
    """
    factorial, total = math.factorial, math.factorial(num_players)
    present = [0.0] + [
        factorial(s - 1) * factorial(num_players - s) / total for s in range(1, num_players + 1)
    ]
    absent = [factorial(s) * factorial(num_players - s - 1) / total for s in range(num_players)]
    absent.append(0.0)  # the full coalition has no absent player
    return (
        torch.tensor(present, dtype=torch.float64),
        torch.tensor(absent, dtype=torch.float64),
    )


def exact_shapley_values(
    game: Game,
    num_players: int,
    *,
    batch_size: int = 4096,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Exact Shapley values by enumerating all ``2**P`` coalitions.

    Each chunk of coalitions costs one game call and one matrix product
    ``W^T @ v`` with ``W[S, i] = +(|S|-1)!(P-|S|)!/P!`` if ``i`` in ``S`` else
    ``-|S|!(P-|S|-1)!/P!``, accumulated in ``dtype`` (float64 by default: the sum has
    alternating signs over up to 65,536 terms).

    Args:
        game: ``game(masks)`` with ``masks`` bool ``(M, P)`` (``True`` = present) returning
            ``(M, *T)`` (tensor or numpy array).
        num_players: ``P``, between 2 and 16.
        batch_size: coalitions per game call.
        dtype: accumulation dtype.
        device: where the masks are built (put them where the game runs).

    Returns:
        tensor of shape ``(P, *T)`` on the game's output device; ``phi[i, ...]`` is the
        Shapley value of player ``i`` for each output entry.
    """
    num_players = check_num_players(num_players)
    _check_dtype(dtype)
    if num_players > MAX_PLAYERS_EXACT:
        raise ValueError(
            f"exact_shapley_values enumerates all 2**P coalitions and is limited to "
            f"P <= {MAX_PLAYERS_EXACT}; got P={num_players} ({2**num_players:,} game "
            "evaluations). Use kernel_shap(game, num_players, tolerance=...) for larger games."
        )
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int; got {batch_size!r}.")
    present_weight, absent_weight = _exact_weights(num_players)
    phi: torch.Tensor | None = None
    trailing_shape: tuple[int, ...] | None = None
    for masks in enumerate_coalitions(num_players, chunk_size=batch_size, device=device):
        values, trailing_shape = _evaluate(game, masks, trailing_shape, dtype)  # (M, D)
        if phi is None:
            phi = torch.zeros(num_players, values.shape[1], dtype=dtype, device=values.device)
            present_weight = present_weight.to(values.device, dtype)
            absent_weight = absent_weight.to(values.device, dtype)
        masks = masks.to(values.device)
        sizes = masks.sum(dim=1)
        weights = torch.where(masks, present_weight[sizes, None], -absent_weight[sizes, None])
        phi += weights.T @ values
    assert phi is not None and trailing_shape is not None
    return phi.reshape(num_players, *trailing_shape)


# --------------------------------------------------------------------------------------
# KernelSHAP
# --------------------------------------------------------------------------------------


def _kernel_matrix_diagonal_gap(num_players: int) -> float:
    """``a`` in ``A = E[z z^T] = a I + c 1 1^T`` under the Shapley kernel.

    ``A_ii = P(i in S) = 1/2`` (the kernel is symmetric under ``k -> P - k``) and
    ``A_ij = P(i, j in S) = sum_k p(k) k (k - 1) / (P (P - 1))``, so ``a = 1/2 - A_ij``.

    Why this is all that is needed: with ``A = a I + c 1 1^T``, ``A^{-1} 1 = 1 / (a + c P)``
    and the efficiency-constrained solution
    ``beta = A^{-1} (b - 1 (1^T A^{-1} b - (v(1) - v(0))) / (1^T A^{-1} 1))`` reduces to
    ``beta = (I - 1 1^T / P) b / a + (v(1) - v(0)) / P``: center ``b`` over players,
    divide by ``a``, spread the total evenly (``c`` cancels). The same linear map
    ``(I - 1 1^T / P) / a`` carries the sampling error of ``b`` (or, to first order, of
    ``b - A beta`` for the regression) into the error of ``beta``.
    """
    sizes = torch.arange(1, num_players, dtype=torch.float64)
    probabilities = shapley_kernel_size_probabilities(num_players)
    co_occurrence = float((probabilities * sizes * (sizes - 1)).sum()) / (
        num_players * (num_players - 1)
    )
    return 0.5 - co_occurrence


def _centered_samples_square_sum(present: torch.Tensor, half_gap: torch.Tensor) -> torch.Tensor:
    """``sum_t`` of the squared centered per-pair samples, shape ``(P, D)``.

    For a pair ``(z, 1 - z)`` with ``q = (g(z) - g(1 - z)) / 2`` (per output), the per-pair
    sample ``s_t = (z g(z) + (1 - z) g(1 - z)) / 2`` centered over players is
    ``(z_i - k / P) q``, because ``z`` is 0/1. So sums over pairs of the samples and their
    squares are matrix products with ``z - k/P`` and the ``(n, P, D)`` tensor of samples is
    never built. ``present`` is ``(n, P)`` float, ``half_gap`` is ``q``, ``(n, D)``.
    """
    centered = present - present.mean(dim=1, keepdim=True)
    return centered.square().T @ half_gap.square()


# Condition number of the KKT system above which it is solved by the pseudo-inverse.
_SINGULAR_CONDITION = 1e10


def _constrained_solve(
    a_matrix: torch.Tensor, b: torch.Tensor, total: torch.Tensor
) -> torch.Tensor:
    """``argmin beta^T A beta - 2 b^T beta`` s.t. ``1^T beta = total``, per output column.

    Solves the KKT system ``[[A, 1], [1^T, 0]] [beta; lambda] = [b; total]``. Early on, when
    few distinct coalitions have been drawn, the sampled ``A`` can be singular; the
    pseudo-inverse then gives the minimum-norm solution (and the stopping rule is not
    consulted that early, see ``min_evaluations``).
    """
    num_players = a_matrix.shape[0]
    kkt = a_matrix.new_zeros(num_players + 1, num_players + 1)
    kkt[:num_players, :num_players] = a_matrix
    kkt[:num_players, -1] = kkt[-1, :num_players] = 1.0
    rhs = torch.cat([b, total[None]])
    solution, info = torch.linalg.solve_ex(kkt, rhs)
    # A singular A is seldom exactly singular in floating point (two players that were always
    # drawn together give two equal columns up to rounding): solve_ex then succeeds with values
    # of 1e15 and more. Treat a numerically singular system as singular.
    singular = int(info) != 0 or float(torch.linalg.cond(kkt)) > _SINGULAR_CONDITION
    if singular or not bool(torch.isfinite(solution).all()):
        solution = torch.linalg.pinv(kkt) @ rhs
    return solution[:num_players]


@dataclass
class KernelShapStep:
    """State of a KernelSHAP run after one batch (recorded with ``return_details=True``)."""

    num_evaluations: int
    values: torch.Tensor
    standard_error: torch.Tensor
    convergence_ratio: float


@dataclass
class KernelShapResult:
    """What :func:`kernel_shap` returns.

    Attributes:
        values: ``(P, *T)`` estimated Shapley values (they satisfy efficiency exactly:
            ``values.sum(0) == v(all) - v(empty)`` up to rounding).
        standard_error: ``(P, *T)`` estimated standard deviation of each value.
        num_evaluations: game evaluations used, including ``v(empty)`` and ``v(all)``.
        converged: whether the stopping rule was met before ``max_evaluations``.
        convergence_ratio: the final ``max_i std_i / (max_i phi_i - min_i phi_i)``, worst
            over the outputs (the quantity compared with ``tolerance``).
        base_value: ``(*T)`` the value of the empty coalition, ``v(empty)``.
        trace: with ``return_details=True``, one :class:`KernelShapStep` per batch.
    """

    values: torch.Tensor
    standard_error: torch.Tensor
    num_evaluations: int
    converged: bool
    convergence_ratio: float = math.inf
    base_value: torch.Tensor | None = None
    trace: list[KernelShapStep] | None = field(default=None, repr=False)


def _convergence_ratio(values: torch.Tensor, std: torch.Tensor) -> float:
    """Worst over outputs of ``max_i std / (max_i phi - min_i phi)``; ``values`` is (P, D)."""
    spread = values.amax(dim=0) - values.amin(dim=0)
    worst_std = std.amax(dim=0)
    # A flat attribution with zero uncertainty is converged (e.g. a constant game); a flat
    # one with uncertainty is not.
    ratio = torch.where(
        spread > 0,
        worst_std / spread.clamp_min(torch.finfo(values.dtype).tiny),
        torch.where(worst_std > 0, torch.inf, 0.0),
    )
    return float(ratio.max())


def kernel_shap(
    game: Game,
    num_players: int,
    *,
    batch_size: int = 256,
    max_evaluations: int = 100_000,
    min_evaluations: int | None = None,
    tolerance: float = 0.01,
    seed: int = 0,
    method: str = "regression",
    return_details: bool = False,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str | None = None,
) -> KernelShapResult:
    """Shapley values by paired-sampling KernelSHAP with a variance-based stopping rule.

    Coalitions come from :func:`~hf_shapley.models.coalitions.sample_shapley_kernel_coalitions`
    in complementary pairs ``(z, 1 - z)``, each pair giving one sample
    ``b_t = (z g(z) + (1 - z) g(1 - z)) / 2`` of ``b``, with ``g(z) = v(z) - v(empty)``.

    * ``method="regression"`` (default): also ``A_t = (z z^T + (1-z)(1-z)^T) / 2``, and
      ``phi`` solves the efficiency-constrained least squares with the sample means of
      ``A_t`` and ``b_t`` (KernelSHAP's weighted regression). Standard errors by the delta
      method from the per-pair residuals ``b_t - A_t phi``; this keeps the pairs
      (``(n, P)`` bools and ``(n, *T)`` values) for the duration of the call.
    * ``method="unbiased"``: exact ``A``; ``phi = (b_bar - mean_i b_bar) / a + total / P``,
      exactly unbiased, standard errors from the per-pair sample variance (streaming).

    After each batch, once ``min_evaluations`` are spent, the run stops if
    ``max_i std_i / (max_i phi_i - min_i phi_i) < tolerance`` for every output entry.

    Args:
        game: ``game(masks)`` with ``masks`` bool ``(M, P)`` returning ``(M, *T)``.
        num_players: ``P >= 2``.
        batch_size: coalitions per game call; even (pairs are never split).
        max_evaluations: budget of game evaluations, including ``v(empty)`` and ``v(all)``.
        min_evaluations: do not test the stopping rule before this many evaluations.
            Default ``max(512, 32 P)`` (16 P pairs): residual-based standard errors from
            fewer pairs than a few times ``P`` underestimate the error (the regression
            has ``P - 1`` free parameters), and with few distinct coalitions drawn (the
            kernel favours sizes 1 and ``P - 1``) the sampled ``A`` is close to singular.
        tolerance: relative tolerance of the stopping rule; ``0`` spends the whole budget.
        seed: seed of the coalition stream (the coalitions are a pure function of it).
        method: ``"regression"`` or ``"unbiased"``, see above.
        return_details: record a :class:`KernelShapStep` after every batch in ``trace``.
        dtype: accumulation dtype.
        device: where the masks are built.

    Returns:
        a :class:`KernelShapResult` with ``values`` and ``standard_error`` of shape
        ``(P, *T)``.
    """
    num_players = check_num_players(num_players)
    _check_dtype(dtype)
    if method not in ("regression", "unbiased"):
        raise ValueError(f"method must be 'regression' or 'unbiased'; got {method!r}.")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 2:
        raise ValueError(f"batch_size must be an int >= 2; got {batch_size!r}.")
    if batch_size % 2:
        raise ValueError(
            f"batch_size must be even: coalitions are evaluated in complementary pairs; got "
            f"{batch_size}."
        )
    if max_evaluations < 4:
        raise ValueError(
            f"max_evaluations must be at least 4 (v(empty), v(all) and one pair); got "
            f"{max_evaluations}."
        )
    if not tolerance >= 0:
        raise ValueError(f"tolerance must be >= 0; got {tolerance!r}.")
    if min_evaluations is None:
        min_evaluations = max(512, 32 * num_players)

    ends = torch.zeros(2, num_players, dtype=torch.bool, device=device)
    ends[1] = True
    end_values, trailing_shape = _evaluate(game, ends, None, dtype)  # (2, D)
    out_device = end_values.device
    empty_value, total = end_values[0], end_values[1] - end_values[0]
    gap = _kernel_matrix_diagonal_gap(num_players)
    num_outputs = end_values.shape[1]
    zeros = partial(torch.zeros, dtype=dtype, device=out_device)

    count = 0  # pairs so far
    a_sum, b_sum = zeros(num_players, num_players), zeros(num_players, num_outputs)
    # regression: the pairs, for the residuals; unbiased: sum of squared centered samples.
    kept_present: list[torch.Tensor] = []
    kept_half_gaps: list[torch.Tensor] = []
    square_sum = zeros(num_players, num_outputs)
    num_evaluations = 2
    values = total.expand(num_players, -1) / num_players
    std = torch.full_like(values, math.inf)
    ratio, converged = math.inf, False
    trace: list[KernelShapStep] | None = [] if return_details else None

    while True:
        size = min(batch_size, (max_evaluations - num_evaluations) // 2 * 2)
        if size < 2:
            break
        masks = sample_shapley_kernel_coalitions(
            num_players,
            size,
            seed=seed,
            epoch=0,
            example_indices=[0],
            offset=count * 2,
            device=device,
        )[0]
        gains, _ = _evaluate(game, masks, trailing_shape, dtype)
        gains = gains - empty_value  # (M, D): g(z) = v(z) - v(empty)
        num_evaluations += size
        present_bool = masks[0::2].to(out_device)
        present = present_bool.to(dtype)  # (n, P)
        absent = 1.0 - present
        gain_in, gain_out = gains[0::2], gains[1::2]  # g(z), g(1 - z): (n, D)
        count += present.shape[0]
        b_sum += (present.T @ gain_in + absent.T @ gain_out) / 2

        if method == "regression":
            a_sum += (present.T @ present + absent.T @ absent) / 2
            kept_present.append(present_bool)
            kept_half_gaps.append((gain_in - gain_out) / 2)
            values = _constrained_solve(a_sum / count, b_sum / count, total)
            if count > num_players:
                # Residual per pair: b_t - A_t phi = (z e(z) + (1 - z) e(1 - z)) / 2 with
                # e(z) = g(z) - z.phi; the same centering identity as for b_t applies, with
                # q = (e(z) - e(1 - z)) / 2 = (g(z) - g(1 - z) - (2z - 1).phi) / 2.
                all_present = torch.cat(kept_present).to(dtype)
                residual = torch.cat(kept_half_gaps) - (all_present - 0.5) @ values
                squares = _centered_samples_square_sum(all_present, residual)
                # Residual degrees of freedom: n pairs minus P - 1 free parameters.
                std = (squares / (count * (count - num_players + 1))).sqrt() / gap
        else:
            half_gap = (gain_in - gain_out) / 2
            square_sum += _centered_samples_square_sum(present, half_gap)
            centered_mean = b_sum / count - (b_sum / count).mean(dim=0, keepdim=True)
            values = centered_mean / gap + total / num_players
            if count > 1:
                # Var of the centered samples: E[d^2] - E[d]^2, per player and output.
                variance = (square_sum / count - centered_mean.square()).clamp_min(0.0)
                std = (variance / (count - 1)).sqrt() / gap

        if count > 1 and bool(torch.isfinite(std).all()):
            ratio = _convergence_ratio(values, std)
        if trace is not None:
            trace.append(
                KernelShapStep(
                    num_evaluations=num_evaluations,
                    values=values.reshape(num_players, *trailing_shape).clone(),
                    standard_error=std.reshape(num_players, *trailing_shape).clone(),
                    convergence_ratio=ratio,
                )
            )
        if num_evaluations >= min_evaluations and ratio < tolerance:
            converged = True
            break

    return KernelShapResult(
        values=values.reshape(num_players, *trailing_shape),
        standard_error=std.reshape(num_players, *trailing_shape),
        num_evaluations=num_evaluations,
        converged=converged,
        convergence_ratio=ratio,
        base_value=empty_value.reshape(trailing_shape),
        trace=trace,
    )
