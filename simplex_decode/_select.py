"""Selection primitives that avoid sorts and variadic reductions (slow on CPU).

* :func:`argmax` — ``max`` then ``min`` of the indices attaining it (two one-operand
  reductions; XLA's variadic argmax reduction is ~50× slower on CPU).
* :func:`topk_mask` — the exact top-k set by bisection on the order-preserving integer
  image of the float scores (32 counting passes, no sort; ties: lowest ids first).
* :func:`tie_break` — keep the first ``r`` tied entries by index; its prefix sum runs
  only when some row actually has a tie straddling the cut (``lax.cond``).
"""

from __future__ import annotations

import jax.numpy as jnp
from jax import lax

__all__ = ["argmax", "topk_mask", "tie_break", "ordered_key"]


def argmax(x, axis: int = -1):
    """Index of the maximum along ``axis`` (lowest index on ties), int32."""
    m = jnp.max(x, axis=axis, keepdims=True)
    idx = lax.broadcasted_iota(jnp.int32, x.shape, x.ndim + axis if axis < 0 else axis)
    return jnp.min(jnp.where(x == m, idx, x.shape[axis]), axis=axis).clip(0, x.shape[axis] - 1)


def ordered_key(x):
    """uint32 key with the order of the float32 values (``-inf`` smallest)."""
    u = lax.bitcast_convert_type(x.astype(jnp.float32), jnp.uint32)
    neg = (u >> 31) == 1
    return jnp.where(neg, ~u, u | jnp.uint32(0x80000000))


def tie_break(strict, tie, r):
    """``strict | (tie & rank ≤ r)`` where rank is the 1-based index order among ties.

    ``r`` (shape ``(..., 1)``) is how many tied entries to keep. The prefix sum over the
    ties is only computed when some row has more ties than it keeps.
    """
    n_tie = jnp.sum(tie, axis=-1, keepdims=True, dtype=jnp.int32)
    overflow = jnp.any(n_tie > r)

    def with_ranks(_):
        rank = jnp.cumsum(tie, axis=-1, dtype=jnp.int32)
        return strict | (tie & (rank <= r))

    return lax.cond(overflow, with_ranks, lambda _: strict | tie, None)


def topk_mask(x, k, mask):
    """The ``k`` largest entries of ``x`` within ``mask`` (all of them if fewer), per row.

    ``k`` is an int array broadcastable to ``x.shape[:-1] + (1,)``. Exact: the k-th
    largest key is found by bisection on uint32 keys, then ties at it are cut by index.
    """
    key = ordered_key(jnp.where(mask, x, -jnp.inf))
    lo = jnp.min(jnp.where(mask, key, jnp.uint32(0xFFFFFFFF)), axis=-1, keepdims=True)
    hi = jnp.max(jnp.where(mask, key, jnp.uint32(0)), axis=-1, keepdims=True)
    k = jnp.asarray(k, jnp.int32)

    def count_ge(t):
        return jnp.sum(mask & (key >= t), axis=-1, keepdims=True, dtype=jnp.int32)

    # invariant: count_ge(lo) >= k or lo is the row minimum; count_ge(hi + 1) < k.
    hi1 = hi + jnp.uint32(1)  # may wrap only for the key of NaN, which never gets here

    def body(_, c):
        lo, hi1 = c
        mid = lo + (hi1 - lo) // jnp.uint32(2)
        ok = count_ge(mid) >= k
        return jnp.where(ok, mid, lo), jnp.where(ok, hi1, mid)

    lo, _ = lax.fori_loop(0, 32, body, (lo, hi1))
    strict = mask & (key > lo)
    tie = mask & (key == lo)
    r = k - jnp.sum(strict, axis=-1, keepdims=True, dtype=jnp.int32)
    return tie_break(strict, tie, r)



def topk_indices(x, m: int):
    """Indices of the ``m`` largest entries of each row, largest first, lowest id on ties.

    For small static ``m`` this is ``m`` rounds of :func:`argmax` (2 one-operand
    reductions each) instead of ``lax.top_k``, which XLA lowers to a full sort on CPU.
    """
    if m > 32:
        return lax.top_k(x, m)[1].astype(jnp.int32)
    iota = lax.broadcasted_iota(jnp.int32, x.shape, x.ndim - 1)

    def body(i, c):
        x, out = c
        j = argmax(x)
        out = lax.dynamic_update_index_in_dim(out, j, i, axis=-1)
        return jnp.where(iota == j[..., None], -jnp.inf, x), out

    out = jnp.zeros(x.shape[:-1] + (m,), jnp.int32)
    _, out = lax.fori_loop(0, m, body, (x, out))
    return out
