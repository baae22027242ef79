"""DRY, "don't repeat yourself" (koboldcpp / llama.cpp's ``dry`` sampler), as a history transform.

DRY penalises the token that would extend a repetition of the row's most recent tokens:
if the last ``n ≥ allowed_length`` tokens also occurred earlier, followed by token ``v``,
then emitting ``v`` would repeat ``n + 1`` tokens, and ``s_v ← s_v − multiplier ·
base^(n − allowed_length)``. Sequence breakers (token-id sequences such as a newline)
cap the repetition length at the distance to the most recent breaker.

llama.cpp finds every earlier occurrence of a suffix of the context with the Z-algorithm
over the reversed context. Here the same lengths come from one comparison matrix per row:
``E[j, t] = (x[j − t] == x[N − 1 − t])`` over the last ``W`` real tokens, and the repetition
ending at position ``j`` is the run of leading ``True`` in ``E[j, :]`` — ``O(W²)`` compares,
fully vectorised over positions and rows (no loop), exact (no hashing).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import jax.numpy as jnp
import numpy as np

from ._pytree import param, per_row, pytree_dataclass, set_field
from .history import token_counts
from .scores import ScoreTransform

__all__ = ["DRY", "dry_sequence_breakers"]

_FLOAT_MAX_LOG = 88.7228391  # llama.cpp's log(FLT_MAX): the exponent clamp


def _breaker_array(breakers):
    """A list of token-id sequences (or an int array padded with -1) as int32 ``(n, L)``."""
    if isinstance(breakers, (np.ndarray, jnp.ndarray)) and np.ndim(breakers) == 2:
        arr = np.asarray(breakers)
    else:
        rows = [list(np.asarray(b, dtype=np.int64).reshape(-1)) for b in breakers]
        if any(len(r) == 0 for r in rows):
            raise ValueError("DRY: every entry of `sequence_breakers` must be a non-empty sequence of token ids")
        width = max((len(r) for r in rows), default=1)
        arr = np.full((len(rows), width), -1, np.int64)
        for i, r in enumerate(rows):
            arr[i, : len(r)] = r
    if arr.dtype == object or not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"DRY: `sequence_breakers` must hold integer token ids, got dtype {arr.dtype}")
    if arr.size and (arr.min() < -1 or np.any(arr[:, 0] < 0)):
        raise ValueError("DRY: `sequence_breakers` token ids must be >= 0 (-1 pads a row's end)")
    pad = arr < 0
    if np.any(pad[:, :-1] & ~pad[:, 1:]):
        raise ValueError("DRY: `sequence_breakers` padding (-1) may only follow a row's ids")
    return jnp.asarray(arr, jnp.int32)


@pytree_dataclass
class DRY(ScoreTransform):
    """DRY repetition penalty (koboldcpp, llama.cpp's ``dry``), read from the token history.

    With ``x`` the last ``N`` real tokens of the row (``N = min(#real, penalty_last_n)``;
    ``penalty_last_n = -1``: the whole history, ``0``: off) and ``rep_limit`` the number of
    tokens after the most recent complete sequence breaker (``N`` if none):

    * ``n_j`` = the length of the longest common suffix of ``x[..j]`` and ``x`` (the
      repetition of the context's end that ends at position ``j``), capped at
      ``rep_limit``;
    * for every ``j < N − 1`` with ``n_j ≥ allowed_length``, the token ``x[j+1]`` would
      extend that repetition: ``s_v ← s_v − multiplier · base^(max_j n_j − allowed_length)``
      (the exponent clamped at ``88.72 / ln base``, llama.cpp's overflow guard), except for
      single-token breakers;
    * nothing happens when ``N ≤ allowed_length`` or ``rep_limit < allowed_length``.

    ``multiplier ≥ 0`` (0: off), ``base ≥ 1`` and ``allowed_length ≥ 0`` (integer) are
    leaves (scalars or per row); ``penalty_last_n`` is static (it sets the window, and the
    cost: ``O(W²)`` compares per row, ``W = min(penalty_last_n, L)``; llama.cpp's CLI default
    is 64). ``sequence_breakers``: token-id sequences (llama.cpp tokenises the strings
    ``"\\n", ":", "\\"", "*"``; build them with :func:`dry_sequence_breakers`), shared by all
    rows. Padding in the history (anywhere) is skipped: repeats are found across it.

    Example:
      >>> import jax.numpy as jnp, simplex_decode as sd
      >>> obj = sd.Objective(transforms=sd.DRY(1.0, base=2.0, allowed_length=2))
      >>> # "1 2 3 4 1 2 3": the last 3 tokens repeat, and 4 would extend them: 1·2^(3−2)
      >>> obj.prepare(jnp.zeros(6), history=jnp.array([1, 2, 3, 4, 1, 2, 3])).scores.tolist()
      [0.0, 0.0, 0.0, 0.0, -2.0, 0.0]
    """

    multiplier: Any = param(lo=0.0, doc="the penalty scale (0: off), per row")
    base: Any = param(1.75, lo=1.0, doc="the base of the exponential growth, per row")
    allowed_length: Any = param(2, lo=0, integer=True, doc="repetitions up to this length are free, per row")
    penalty_last_n: int = param(-1, lo=-1, integer=True, static=True,
                                doc="the history window (-1: all of it, 0: off)")
    sequence_breakers: Any = ()

    def __post_init__(self):
        set_field(self, "sequence_breakers", _breaker_array(self.sequence_breakers))

    def __call__(self, scores, ctx):
        if ctx.history is None:
            raise ValueError(
                "DRY: reads the token history; pass `history=` (and `history_mask=` for padded rows) "
                "to probs / sample / solve"
            )
        if self.penalty_last_n == 0:
            return scores
        return scores - self.penalties(ctx.history, ctx.history_mask, scores.shape[-1]).astype(scores.dtype)

    def _window(self, history, mask):
        """The last ``W`` real tokens of each row, right-aligned, and which are real."""
        L = history.shape[-1]
        order = jnp.argsort(mask.astype(jnp.int8), axis=-1, stable=True)  # padding first, order kept
        h = jnp.take_along_axis(history, order, axis=-1)
        m = jnp.take_along_axis(mask, order, axis=-1)
        W = L if self.penalty_last_n < 0 else min(self.penalty_last_n, L)
        return h[..., L - W:], m[..., L - W:]

    def _rep_limit(self, y, valid, n_real):
        """Per row: the tokens after the most recent complete sequence breaker (``n_real``
        if none), llama.cpp's ``rep_limit``."""
        br = self.sequence_breakers
        W = y.shape[-1]
        if br.shape[0] == 0:
            return n_real
        head, tail = br[:, 0], br[:, 1:]
        tlen = jnp.sum(tail >= 0, axis=-1)
        j = jnp.arange(W)
        after = j[:, None] + 1 + jnp.arange(tail.shape[-1])[None, :]  # (W, Lb-1)
        nxt = jnp.where(after < W, y[..., jnp.clip(after, 0, W - 1)], -2)  # -2 matches no id
        tail_ok = jnp.all((tail < 0) | (nxt[..., :, None, :] == tail), axis=-1)  # (..., W, nb)
        match = valid[..., :, None] & (y[..., :, None] == head) & tail_ok
        longest = jnp.max(jnp.where(match, tlen, -1), axis=-1)  # (..., W)
        jstar = jnp.max(jnp.where(longest >= 0, j, -1), axis=-1)
        lstar = jnp.take_along_axis(longest, jnp.clip(jstar, 0, W - 1)[..., None], axis=-1)[..., 0]
        return jnp.where(jstar >= 0, (W - 1 - jstar) - lstar, n_real)

    def penalties(self, history, mask, vocab_size: int):
        """The penalty subtracted from each token's score, ``(..., V)`` float32."""
        if mask is None:
            mask = jnp.ones(history.shape, bool)
        y, valid = self._window(history, mask)
        batch, W = y.shape[:-1], y.shape[-1]
        n_real = jnp.sum(valid, axis=-1, dtype=jnp.int32)
        rep_limit = self._rep_limit(y, valid, n_real)
        allowed = per_row(self.allowed_length, batch)[..., 0]
        # n_j: leading run of matches between the suffixes ending at j and at W − 1
        j, t = jnp.arange(W)[:, None], jnp.arange(W)[None, :]
        back = j - t  # (W, W): position j − t
        e = (back >= 0) & valid[..., jnp.clip(back, 0, W - 1)]
        e = e & (y[..., jnp.clip(back, 0, W - 1)] == y[..., (W - 1 - t)[0]][..., None, :])
        run = jnp.sum(jnp.cumprod(e.astype(jnp.int32), axis=-1), axis=-1)  # (..., W)
        count = jnp.minimum(run, rep_limit[..., None])
        pos = jnp.arange(W)
        ends = valid & (pos <= W - 2) & (count >= allowed[..., None])
        nxt = y[..., jnp.clip(pos + 1, 0, W - 1)]
        rows = math.prod(batch)
        tok = jnp.where(ends, nxt, vocab_size).reshape(rows, W)
        longest = jnp.full((rows, vocab_size), -1, jnp.int32).at[jnp.arange(rows)[:, None], tok].max(
            count.reshape(rows, W).astype(jnp.int32), mode="drop").reshape(batch + (vocab_size,))
        br = self.sequence_breakers
        if br.shape[0]:
            single = token_counts(br[:, 0], vocab_size, weights=jnp.all(br[:, 1:] < 0, axis=-1)) > 0
        else:
            single = jnp.zeros((vocab_size,), bool)
        mult = per_row(self.multiplier, batch, jnp.float32)
        base = per_row(self.base, batch, jnp.float32)
        exp = (longest - allowed[..., None]).astype(jnp.float32)
        max_exp = jnp.where(base > 1.000001, jnp.floor(jnp.float32(_FLOAT_MAX_LOG) / jnp.log(base)), 0.0)
        exp = jnp.where((max_exp > 0) & (exp > max_exp), max_exp, exp)
        on = (mult != 0) & (n_real > allowed)[..., None] & (rep_limit >= allowed)[..., None]
        hit = on & (longest >= 0) & ~single
        return jnp.where(hit, mult * base**exp, 0.0)


def dry_sequence_breakers(
    strings: Sequence[str],
    *,
    decode: Callable[[list[int]], str],
    encode: Callable[[str], list[int]],
    vocab_size: int,
    max_chars: int = 40,
    max_tail: int = 20,
) -> list[tuple[int, ...]]:
    """Token-id breakers for :class:`DRY` from breaker strings (koboldcpp / llama.cpp).

    For each string ``b`` (cut to ``max_chars``) and each token ``v``: if ``b`` occurs in
    ``decode([v])``, ``v`` alone is a breaker; otherwise, wherever the token's text ends with
    a prefix of ``b`` (``b[:i]``), ``(v, *encode(b[i:])[:max_tail])`` is one. ``encode`` must
    not add special tokens. A host loop over the vocabulary, run once.
    """
    texts = [decode([v]) for v in range(vocab_size)]
    out: list[tuple[int, ...]] = []
    seen: set[tuple[int, ...]] = set()
    for b in strings:
        if not b:
            raise ValueError("dry_sequence_breakers: breaker strings must be non-empty")
        b = b[:max_chars]
        for v, word in enumerate(texts):
            found: list[tuple[int, ...]] = []
            if b in word:
                found.append((v,))
            else:
                pos = word.find(b[0])
                while pos != -1:
                    i = 1
                    while i < len(b) and pos + i < len(word) and word[pos + i] == b[i]:
                        i += 1
                    if pos + i == len(word):  # the token's text ends with b[:i]
                        found.append((v, *list(encode(b[i:]))[:max_tail]))
                    pos = word.find(b[0], pos + 1)
            for seq in found:
                if seq not in seen:
                    seen.add(seq)
                    out.append(seq)
    return out
