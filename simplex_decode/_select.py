"""Selection primitives that avoid full sorts and variadic reductions (slow on CPU).

* :func:`argmax` — ``max`` then ``min`` of the indices attaining it (two one-operand
  reductions; XLA's variadic argmax reduction is ~50× slower on CPU).
* :func:`topk_mask` — the exact top-k set: XLA's float top-k on a candidate window
  (:mod:`._window`) when it provably holds the answer (k ≤ :data:`KCAP`, float32 rows),
  else bisection on the order-preserving integer image of the scores over the whole row
  (one counting pass per bit: 32, or 64 for float64); ties: lowest ids first.
* :func:`tie_cut` — the id up to which tied entries are kept; its prefix sum runs
  only when some row actually has a tie straddling the cut (``lax.cond``).
"""

from __future__ import annotations

import jax.numpy as jnp
from jax import lax

from ._numerics import cond
from ._window import choose, window

__all__ = ["argmax", "topk_mask", "tie_cut", "ordered_key", "KCAP"]


def argmax(x, axis: int = -1):
    """Index of the maximum along ``axis`` (lowest index on ties), int32."""
    m = jnp.max(x, axis=axis, keepdims=True)
    idx = lax.broadcasted_iota(jnp.int32, x.shape, x.ndim + axis if axis < 0 else axis)
    return jnp.min(jnp.where(x == m, idx, x.shape[axis]), axis=axis).clip(0, x.shape[axis] - 1)


def _key_type(dtype):
    """(unsigned key type, bits): 64-bit keys for float64 values, else 32-bit."""
    return (jnp.uint64, 64) if jnp.dtype(dtype) == jnp.float64 else (jnp.uint32, 32)


def ordered_key(x):
    """Unsigned key with the order of the float values (``-inf`` smallest): uint32 for
    float32 (and narrower floats, widened exactly), uint64 for float64 — every distinct
    value keeps a distinct key, so no two scores tie that do not."""
    if jnp.dtype(x.dtype) != jnp.float64:
        x = x.astype(jnp.float32)
    utype, bits = _key_type(x.dtype)
    x = jnp.where(x == 0, jnp.zeros((), x.dtype), x)  # -0.0 and +0.0 are equal: one key
    u = lax.bitcast_convert_type(x, utype)
    neg = (u >> (bits - 1)) == 1
    return jnp.where(neg, ~u, u | jnp.asarray(1 << (bits - 1), utype))


def tie_cut(tie, r, ids=None):
    """The largest id among the first ``r`` tied entries (index order), per row.

    ``strict | (tie & id ≤ cut)`` keeps exactly ``r`` ties. ``ids`` are the entries'
    token ids (default: their positions). The prefix sum over the ties is only
    computed when some row has more ties than it keeps; otherwise the cut keeps all.
    """
    if ids is None:
        ids = lax.broadcasted_iota(jnp.int32, tie.shape, tie.ndim - 1)
    n_tie = jnp.sum(tie, axis=-1, keepdims=True, dtype=jnp.int32)
    overflow = jnp.any(n_tie > r)
    keep_all = jnp.full(r.shape, jnp.iinfo(jnp.int32).max, jnp.int32)

    def with_ranks():
        rank = jnp.cumsum(tie, axis=-1, dtype=jnp.int32)
        cut = jnp.max(jnp.where(tie & (rank <= r), ids, -1), axis=-1, keepdims=True)
        return jnp.where(n_tie > r, cut, keep_all)

    return cond(overflow, with_ranks, lambda: keep_all)


KCAP = 256  # largest k served from the candidate window


def _kth_key(key, k, mask):
    """The k-th largest ``key`` within ``mask`` per row (the row minimum if fewer)."""
    utype, bits = key.dtype, jnp.iinfo(key.dtype).bits
    lo = jnp.min(jnp.where(mask, key, jnp.asarray(jnp.iinfo(utype).max, utype)), axis=-1, keepdims=True)
    hi = jnp.max(jnp.where(mask, key, jnp.zeros((), utype)), axis=-1, keepdims=True)

    def count_ge(t):
        return jnp.sum(mask & (key >= t), axis=-1, keepdims=True, dtype=jnp.int32)

    # invariant: count_ge(lo) >= k or lo is the row minimum; count_ge(hi + 1) < k.
    one = jnp.ones((), utype)
    hi1 = hi + one  # may wrap only for the key of NaN, which never gets here

    def body(_, c):
        lo, hi1 = c
        mid = lo + (hi1 - lo) // (one + one)
        ok = count_ge(mid) >= k
        return jnp.where(ok, mid, lo), jnp.where(ok, hi1, mid)

    lo, _ = lax.fori_loop(0, bits, body, (lo, hi1))
    return lo


def topk_mask(x, k, mask):
    """The ``k`` largest entries of ``x`` within ``mask`` (all of them if fewer), per row.

    ``k`` is an int array broadcastable to ``x.shape[:-1] + (1,)``. Exact: the k-th
    largest value comes from XLA's top-k on a candidate window (the blocks with the
    largest maxima) whenever every entry outside the window is strictly below it and
    ``k ≤ KCAP`` (float32 rows); otherwise from bisection on the order-preserving keys
    over the whole row. Ties at it are cut by index.
    """
    k = jnp.asarray(k, jnp.int32)

    def keys(x, mask):
        key = ordered_key(jnp.where(mask, x, -jnp.inf))
        return jnp.where(mask, key, jnp.zeros((), key.dtype))

    def full_row(x, mask, k):
        key = keys(x, mask)
        t = _kth_key(key, k, mask)
        r = k - jnp.sum(mask & (key > t), axis=-1, keepdims=True, dtype=jnp.int32)
        return t, tie_cut(mask & (key == t), r)

    xm = jnp.where(mask, x, -jnp.inf)
    # float32 only: XLA's fast top-k is float32, and a float32 image of float64 scores
    # could merge distinct values
    win = window(xm, mask, fill=-jnp.inf) if xm.dtype == jnp.float32 else None
    if win is None:
        t, cut = full_row(x, mask, k)
    else:
        wx, wmask = win.values
        kcap = min(KCAP, wx.shape[-1])
        vals = lax.top_k(wx, kcap)[0]  # XLA's float top-k, on the window only
        first_k = lax.broadcasted_iota(jnp.int32, vals.shape, vals.ndim - 1) < k
        t_w = ordered_key(jnp.min(jnp.where(first_k, vals, jnp.inf), axis=-1, keepdims=True))
        wkey = jnp.where(wmask, ordered_key(wx), jnp.zeros((), t_w.dtype))
        r_w = k - jnp.sum(wmask & (wkey > t_w), axis=-1, keepdims=True, dtype=jnp.int32)
        cut_w = tie_cut(wmask & (wkey == t_w), r_w, win.ids)
        # Exact iff everything outside is strictly below the window's k-th value (then
        # that value is finite, so the window holds k valid entries); rows with fewer
        # than k finite entries take the full-row path.
        fits = (ordered_key(win.outside) < t_w) & (k <= kcap)
        k_rows = jnp.broadcast_to(k, fits.shape)  # per row: gathered with the failing rows
        t, cut = choose(fits, (t_w, cut_w), full_row, x, mask, k_rows)
    key = keys(x, mask)
    ids = lax.broadcasted_iota(jnp.int32, key.shape, key.ndim - 1)
    return mask & ((key > t) | ((key == t) & (ids <= cut)))


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
