"""Coalitions over players: Shapley-kernel sampling, uniform-size sampling, enumeration.

A *coalition* is a boolean vector over the ``P`` players of a game, ``True`` meaning the
player is PRESENT (the opposite convention of transformers' ``bool_masked_pos``). Every
function here works on these vectors; what a player is (a group of tokens, a pixel block)
is decided elsewhere.

Why the samplers are counter-based instead of drawing from a ``torch.Generator``:
the Trainer's checkpoints only save the global random generators, and data loaders in
several processes see different slices of a batch. If coalition ``j`` of example ``i``
came from a stateful generator, resuming from a checkpoint, changing the batch size or
adding a process would silently change the training signal. Here every coalition is a
pure function of ``(seed, epoch, example index, coalition index)``: the bits are produced
by hashing that tuple (SplitMix64 finalizer, computed in numpy ``uint64`` where
overflow wraps modulo 2**64 by definition), so

* coalition ``j`` of example ``i`` is the same whatever else is in the batch and in
  whatever order the examples come;
* asking for ``M = 8`` coalitions returns the first 8 of what ``M = 32`` returns (for
  the paired Shapley-kernel sampler the unit is a pair ``(S, ~S)``);
* ``offset=`` continues a stream, so a long stream can be produced in chunks.

A uniform subset of exactly ``k`` players is the ``k`` players with the smallest hashed
keys (random ranks; the low bits of each key hold the player index so ties are
impossible), and a size ``k`` is drawn by inverse CDF of one hashed uniform.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch

__all__ = [
    "all_coalitions",
    "check_coalitions",
    "check_num_players",
    "enumerate_coalitions",
    "sample_shapley_kernel_coalitions",
    "sample_uniform_size_coalitions",
    "shapley_kernel_size_probabilities",
]

# Largest P for which `all_coalitions` materializes the full (2**P, P) table (20 -> 20 MiB).
MAX_PLAYERS_ALL_COALITIONS = 20
# Integer codes are int64, bit i = player i.
_MAX_PLAYERS_ENUMERATION = 62

_MASK64 = (1 << 64) - 1
_BLOCK_KEYS = 1 << 15
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)  # 2**64 / golden ratio, the SplitMix64 increment
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
_SHIFT30, _SHIFT27, _SHIFT31, _SHIFT11 = (np.uint64(s) for s in (30, 27, 31, 11))
# Stream tags: the two samplers draw independent streams even with the same seed.
_TAG_SHAPLEY_KERNEL = 0x5348415059_4B524E  # "SHAPY" "KRN"
_TAG_UNIFORM_SIZE = 0x554E49_464F524D  # "UNI" "FORM"


# --------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------


def check_num_players(num_players: int) -> int:
    """Validate a number of players ``P`` (an int >= 2) and return it as an ``int``."""
    if isinstance(num_players, bool) or not isinstance(num_players, (int, np.integer)):
        raise TypeError(
            f"num_players must be an int (the number of players P); got {type(num_players).__name__}."
        )
    num_players = int(num_players)
    if num_players < 2:
        raise ValueError(
            f"a game needs at least 2 players; got P={num_players}. With a single player there "
            "is nothing to attribute: use a players_grid with at least 2 cells."
        )
    return num_players


def check_coalitions(
    mask: torch.Tensor,
    num_players: int,
    name: str = "coalition",
    *,
    ndim: int | tuple[int, ...] | None = None,
) -> torch.Tensor:
    """Check that ``mask`` is a boolean coalition tensor over ``num_players`` players.

    Args:
        mask: bool tensor of shape ``(..., P)``, ``True`` = player present.
        num_players: the number of players ``P``.
        name: how the argument is called in error messages.
        ndim: the allowed number(s) of dimensions, e.g. ``(2, 3)`` for ``(B, P)`` or
            ``(B, M, P)``; ``None`` accepts any ``ndim >= 1``.

    Returns:
        ``mask`` unchanged.

    Raises:
        TypeError: not a tensor, or not ``torch.bool``.
        ValueError: wrong number of dimensions or last dimension not ``P``.
    """
    num_players = check_num_players(num_players)
    if not isinstance(mask, torch.Tensor):
        raise TypeError(
            f"{name} must be a torch.Tensor of dtype torch.bool and shape (..., {num_players}); "
            f"got {type(mask).__name__}."
        )
    if mask.dtype != torch.bool:
        raise TypeError(
            f"{name} must have dtype torch.bool (True = player present); got {mask.dtype}. "
            f"Convert it with `{name}.bool()` (or `{name} > 0.5` for 0/1 floats)."
        )
    allowed = (ndim,) if isinstance(ndim, int) else ndim
    if mask.ndim == 0 or (allowed is not None and mask.ndim not in allowed):
        expected = "at least 1" if allowed is None else " or ".join(str(d) for d in allowed)
        raise ValueError(
            f"{name} must have {expected} dimension(s) with players last; got shape "
            f"{tuple(mask.shape)} ({mask.ndim} dimension(s))."
        )
    if mask.shape[-1] != num_players:
        raise ValueError(
            f"{name} must have the players in its last dimension, of size P={num_players}; got "
            f"shape {tuple(mask.shape)}. A coalition is a bool vector over the P players of "
            "players_grid (flattened row-major), not over pixels or tokens."
        )
    return mask


def sample_complementary_pairs(
    num_players: int,
    num_coalitions: int,
    *,
    seed: int,
    epoch: int,
    example_indices: torch.Tensor,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """bool (B, num_coalitions, P): uniform-size coalitions, each followed by its complement
    (a pair shares one packed sequence under token removal, so S and ~S cost one pass); an odd
    count drops the last complement."""
    half = sample_uniform_size_coalitions(
        num_players,
        (num_coalitions + 1) // 2,
        seed=seed,
        epoch=epoch,
        example_indices=example_indices,
        device=device,
    )
    pairs = torch.stack([half, ~half], dim=2).reshape(half.shape[0], -1, num_players)
    return pairs[:, :num_coalitions]


def coalitions_per_image(
    coalition: torch.Tensor, num_players: int, batch_size: int
) -> torch.Tensor:
    """A model's ``coalition=`` argument, checked, as bool ``(B, M, P)``: ``(B, P)`` (one
    coalition per image) or ``(B, M, P)`` with one row per image of the batch."""
    check_coalitions(coalition, num_players, "coalition", ndim=(2, 3))
    if coalition.shape[0] != batch_size:
        raise ValueError(
            f"coalition has {coalition.shape[0]} rows but pixel_values has {batch_size} images; "
            f"pass shape ({batch_size}, {num_players}) or ({batch_size}, M, {num_players})."
        )
    return coalition if coalition.ndim == 3 else coalition[:, None]


def _check_count(value: int, name: str, *, even: bool = False) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise ValueError(f"{name} must be a non-negative int; got {value!r}.")
    if even and value % 2:
        raise ValueError(
            f"{name} must be even: Shapley-kernel coalitions come in complementary pairs "
            f"(S, ~S); got {value}."
        )
    return int(value)


def _example_indices_to_numpy(
    example_indices: Sequence[int] | torch.Tensor | np.ndarray,
) -> np.ndarray:
    if isinstance(example_indices, torch.Tensor):
        array = example_indices.detach().cpu().numpy()
    else:
        array = np.asarray(example_indices)
    if array.ndim != 1:
        raise ValueError(
            "example_indices must be a 1-D sequence with one dataset index per example, shape "
            f"(B,); got shape {array.shape}."
        )
    if array.size and not np.issubdtype(array.dtype, np.integer):
        raise TypeError(
            f"example_indices must hold integers (dataset indices); got dtype {array.dtype}."
        )
    if array.size and (array < 0).any():
        raise ValueError(
            f"example_indices must be non-negative dataset indices; got {array[array < 0][:5]}."
        )
    return array.astype(np.uint64)


# --------------------------------------------------------------------------------------
# Counter-based hashing
# --------------------------------------------------------------------------------------


def _mix(z: np.ndarray) -> np.ndarray:
    """SplitMix64 finalizer: a bijection of uint64 with full avalanche (wraps mod 2**64)."""
    z = (z ^ (z >> _SHIFT30)) * _MIX1
    z = (z ^ (z >> _SHIFT27)) * _MIX2
    return z ^ (z >> _SHIFT31)


def _absorb(state: np.ndarray, counter: np.ndarray) -> np.ndarray:
    """Next hash state: output number ``counter`` of the SplitMix64 stream seeded by ``state``."""
    return _mix(state + _GOLDEN * (counter + np.uint64(1)))


def _stream_states(
    tag: int, seed: int, epoch: int, example_indices: np.ndarray, coalition_indices: np.ndarray
) -> np.ndarray:
    """Hash state per (example, coalition): uint64 array of shape (B, J)."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed must be an int; got {type(seed).__name__}.")
    if isinstance(epoch, bool) or not isinstance(epoch, (int, np.integer)) or epoch < 0:
        raise ValueError(f"epoch must be a non-negative int; got {epoch!r}.")
    with np.errstate(over="ignore"):
        state = _mix(np.array([(int(seed) & _MASK64) ^ tag], dtype=np.uint64))
        state = _absorb(state, np.array([int(epoch)], dtype=np.uint64))
        state = _absorb(state, example_indices)[:, None]  # (B, 1)
        return _absorb(state, coalition_indices[None, :])  # (B, J)


def _hashed_uniform(states: np.ndarray) -> np.ndarray:
    """One float64 in [0, 1) per state, from the top 53 bits of a fresh hash."""
    return (_mix(states) >> _SHIFT11).astype(np.float64) * 2.0**-53


def _uniform_subsets(states: np.ndarray, sizes: np.ndarray, num_players: int) -> np.ndarray:
    """Bool (..., P): for each state, a uniform subset of exactly ``sizes[...]`` players.

    Player ``p`` gets key ``hash(state, p)``; the subset is the ``k`` smallest keys. The low
    bits of each key are replaced by ``p`` so keys are distinct and the ranks are a uniform
    random permutation (up to the quality of the hash).
    """
    players = np.arange(num_players, dtype=np.uint64)
    increments = _GOLDEN * (players + np.uint64(1))  # _absorb's counter term, precomputed
    index_bits = np.uint64(max(1, (num_players - 1).bit_length()))
    flat_states, flat_sizes = states.reshape(-1), sizes.reshape(-1).astype(np.intp)
    out = np.empty((flat_states.size, num_players), dtype=bool)
    # Work in blocks of ~32k keys: the dozen elementwise passes of the hash then run in
    # cache, about 3x faster than on the whole (B, M, P) array at B=64, M=32, P=196.
    rows = max(1, _BLOCK_KEYS // num_players)
    for start in range(0, flat_states.size, rows):
        stop = start + rows
        keys = _mix(flat_states[start:stop, None] + increments)
        keys = ((keys >> index_bits) << index_bits) | players
        threshold = np.take_along_axis(
            np.sort(keys, axis=-1), (flat_sizes[start:stop] - 1)[:, None], axis=-1
        )
        out[start:stop] = keys <= threshold
    return out.reshape(*states.shape, num_players)


# --------------------------------------------------------------------------------------
# Samplers
# --------------------------------------------------------------------------------------


def _kernel_size_probabilities_np(num_players: int) -> np.ndarray:
    sizes = np.arange(1, num_players, dtype=np.float64)
    weights = 1.0 / (sizes * (num_players - sizes))
    return weights / weights.sum()


def shapley_kernel_size_probabilities(num_players: int) -> torch.Tensor:
    """Probability of each coalition size under the Shapley kernel.

    The Shapley kernel weighs a coalition ``S`` by ``(P - 1) / (C(P, |S|) |S| (P - |S|))``;
    summed over the ``C(P, k)`` coalitions of size ``k`` this gives ``p(k) ∝ 1 / (k (P - k))``
    for ``k = 1 .. P - 1`` (the empty and full coalitions have infinite weight and enter
    exactly, through the efficiency constraint, instead).

    Args:
        num_players: the number of players ``P >= 2``.

    Returns:
        float64 tensor of shape ``(P - 1,)``; entry ``k - 1`` is ``p(k)``.
    """
    num_players = check_num_players(num_players)
    return torch.from_numpy(_kernel_size_probabilities_np(num_players))


def sample_shapley_kernel_coalitions(
    num_players: int,
    num_coalitions: int,
    *,
    seed: int,
    epoch: int,
    example_indices: Sequence[int] | torch.Tensor | np.ndarray,
    offset: int = 0,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Paired coalitions from the Shapley kernel, a pure function of the counters.

    For each example, coalitions come in adjacent complementary pairs
    ``[S_0, ~S_0, S_1, ~S_1, ...]``. ``S_j`` has a size ``k`` drawn with
    ``p(k) ∝ 1 / (k (P - k))`` and is a uniform subset of exactly ``k`` players. Pairing
    (antithetic sampling) makes every player present in exactly half of the coalitions and
    lowers the variance of KernelSHAP-style estimates.

    ``S_j`` of example ``i`` depends only on ``(seed, epoch, i, j)``: not on the other
    examples, their order, or ``num_coalitions``.

    Args:
        num_players: the number of players ``P >= 2``.
        num_coalitions: ``M``, coalitions per example; must be even (a pair counts as two).
        seed: any int (taken modulo 2**64).
        epoch: non-negative int, mixed into the hash so each epoch sees fresh coalitions.
        example_indices: ``(B,)`` non-negative dataset indices of the examples in the batch.
        offset: index of the first coalition (even); ``offset=8, num_coalitions=8`` returns
            coalitions 8..15 of the stream.
        device: where to put the result (computed on CPU).

    Returns:
        bool tensor of shape ``(B, M, P)``, ``True`` = player present.
    """
    num_players = check_num_players(num_players)
    num_coalitions = _check_count(num_coalitions, "num_coalitions", even=True)
    offset = _check_count(offset, "offset", even=True)
    examples = _example_indices_to_numpy(example_indices)
    num_pairs = num_coalitions // 2
    pair_indices = np.arange(offset // 2, offset // 2 + num_pairs, dtype=np.uint64)
    states = _stream_states(_TAG_SHAPLEY_KERNEL, seed, epoch, examples, pair_indices)
    cdf = np.cumsum(_kernel_size_probabilities_np(num_players))
    cdf[-1] = 1.0  # so u in [0, 1) never falls past the last size through rounding
    sizes = np.searchsorted(cdf, _hashed_uniform(states), side="right") + 1  # (B, J) in 1..P-1
    subsets = _uniform_subsets(states, sizes, num_players)  # (B, J, P)
    paired = np.stack([subsets, ~subsets], axis=2)  # (B, J, 2, P)
    mask = torch.from_numpy(paired.reshape(len(examples), num_coalitions, num_players))
    return mask.to(device) if device is not None else mask


def sample_uniform_size_coalitions(
    num_players: int,
    num_coalitions: int,
    *,
    seed: int,
    epoch: int,
    example_indices: Sequence[int] | torch.Tensor | np.ndarray,
    min_size: int = 1,
    max_size: int | None = None,
    offset: int = 0,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Coalitions whose size is uniform on ``[min_size, max_size]``, a pure function of the counters.

    Used for the masked distillation that trains the model as its own surrogate: the
    Shapley kernel puts most of its mass on sizes 1 and ``P - 1``, so a surrogate trained
    only on kernel masks would never see the mid-size coalitions that insertion/deletion
    curves walk through. Coalition ``g`` of example ``i`` depends only on
    ``(seed, epoch, i, g)``; the stream is independent of the Shapley-kernel stream.

    Args:
        num_players: the number of players ``P >= 2``.
        num_coalitions: ``G``, coalitions per example.
        seed: any int (taken modulo 2**64).
        epoch: non-negative int.
        example_indices: ``(B,)`` non-negative dataset indices.
        min_size: smallest coalition size (``0 <= min_size <= max_size``).
        max_size: largest coalition size (``<= P``); default ``P - 1``.
        offset: index of the first coalition.
        device: where to put the result (computed on CPU).

    Returns:
        bool tensor of shape ``(B, G, P)``, ``True`` = player present.
    """
    num_players = check_num_players(num_players)
    num_coalitions = _check_count(num_coalitions, "num_coalitions")
    offset = _check_count(offset, "offset")
    max_size = num_players - 1 if max_size is None else max_size
    for name, value in (("min_size", min_size), ("max_size", max_size)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise TypeError(f"{name} must be an int; got {type(value).__name__}.")
    if not 0 <= min_size <= max_size <= num_players:
        raise ValueError(
            f"need 0 <= min_size <= max_size <= P={num_players}; got min_size={min_size}, "
            f"max_size={max_size}."
        )
    examples = _example_indices_to_numpy(example_indices)
    indices = np.arange(offset, offset + num_coalitions, dtype=np.uint64)
    states = _stream_states(_TAG_UNIFORM_SIZE, seed, epoch, examples, indices)
    num_sizes = max_size - min_size + 1
    sizes = min_size + np.minimum(
        (_hashed_uniform(states) * num_sizes).astype(np.int64), num_sizes - 1
    )
    subsets = _uniform_subsets(states, np.maximum(sizes, 1), num_players)
    subsets &= (sizes > 0)[..., None]  # size 0: the empty coalition
    mask = torch.from_numpy(subsets)
    return mask.to(device) if device is not None else mask


# --------------------------------------------------------------------------------------
# Enumeration
# --------------------------------------------------------------------------------------


def enumerate_coalitions(
    num_players: int, *, chunk_size: int = 4096, device: torch.device | str | None = None
) -> Iterator[torch.Tensor]:
    """Iterate over all ``2**P`` coalitions in chunks, in order of their integer code.

    Coalition number ``c`` has player ``i`` present iff bit ``i`` of ``c`` is set, so the
    first chunk starts with the empty coalition and the last chunk ends with the full one.

    Args:
        num_players: the number of players ``P >= 2``.
        chunk_size: coalitions per chunk (the last chunk may be shorter).
        device: where to build the chunks.

    Yields:
        bool tensors of shape ``(chunk, P)``.
    """
    num_players = check_num_players(num_players)
    if num_players > _MAX_PLAYERS_ENUMERATION:
        raise ValueError(
            f"cannot enumerate 2**{num_players} coalitions (at most P={_MAX_PLAYERS_ENUMERATION})."
        )
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive int; got {chunk_size!r}.")
    bits = torch.arange(num_players, device=device, dtype=torch.int64)
    total = 1 << num_players
    for start in range(0, total, chunk_size):
        codes = torch.arange(
            start, min(start + chunk_size, total), device=device, dtype=torch.int64
        )
        yield ((codes[:, None] >> bits) & 1).bool()


def all_coalitions(num_players: int, *, device: torch.device | str | None = None) -> torch.Tensor:
    """All ``2**P`` coalitions as one bool tensor of shape ``(2**P, P)``, row ``c`` = code ``c``.

    Refuses ``P > 20`` (the table would hold over a million rows); use
    :func:`enumerate_coalitions` to stream them instead.
    """
    num_players = check_num_players(num_players)
    if num_players > MAX_PLAYERS_ALL_COALITIONS:
        raise ValueError(
            f"all_coalitions(P={num_players}) would build a ({2**num_players}, {num_players}) "
            f"table; it is limited to P <= {MAX_PLAYERS_ALL_COALITIONS}. Stream the coalitions "
            "with enumerate_coalitions(num_players, chunk_size=...) instead."
        )
    return next(enumerate_coalitions(num_players, chunk_size=1 << num_players, device=device))
