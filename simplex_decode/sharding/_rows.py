"""Row operations on a row split over the ``vocab`` mesh axis (inside ``shard_map``).

Every function takes the local slice of a row (``(..., L)``, the shard's entries) and
returns what the single-device operation returns for the whole row, replicated on the
shards of the row: reductions are a local reduction then ``pmax`` / ``psum`` / ``pmin``
over :data:`VOCAB` (a few numbers per row), never a gather of the row. With a vocabulary
axis of size 1 the collectives are no-ops: one code path for any mesh.
"""

from __future__ import annotations

import jax.numpy as jnp
from jax import lax

from .._numerics import masked_max, row_sum
from .._select import ordered_key, tie_cut

BATCH = "batch"
VOCAB = "vocab"


def gmax(x, mask):
    """The masked row maximum, ``(..., 1)`` (``-inf`` for an empty row)."""
    return lax.pmax(masked_max(x, mask), VOCAB)


def gsum(x):
    """``Σ_v x_v`` over the whole row, ``(..., 1)``."""
    return lax.psum(row_sum(x), VOCAB)


def gcount(b):
    """How many entries of the row are True, int32 ``(..., 1)``."""
    return lax.psum(jnp.sum(b, axis=-1, keepdims=True, dtype=jnp.int32), VOCAB)


def gany(b):
    """Whether any entry of the row is True, ``(..., 1)``."""
    return gcount(b) > 0


def gshift(x, mask):
    """The row's masked maximum, 0 where it is not finite (:func:`row_shift`)."""
    m = gmax(x, mask)
    return lax.stop_gradient(jnp.where(jnp.isfinite(m), m, 0.0))


def gargmax(x, ids):
    """The global id of the row's maximum (lowest id on ties), int32 ``(..., 1)``."""
    m = lax.pmax(jnp.max(x, axis=-1, keepdims=True), VOCAB)
    big = jnp.iinfo(jnp.int32).max
    return lax.pmin(jnp.min(jnp.where(x == m, ids, big), axis=-1, keepdims=True), VOCAB)


def gtie_cut(tie, r, ids):
    """The largest global id among the first ``r`` tied entries of the row (id order).

    Each shard keeps the ties that the shards before it left over: the per-shard tie
    counts (one int per shard and row) are all the shards exchange.
    """
    n = jnp.sum(tie, axis=-1, keepdims=True, dtype=jnp.int32)
    counts = lax.all_gather(n, VOCAB, axis=n.ndim - 1, tiled=True)
    me = lax.axis_index(VOCAB)
    before = jnp.sum(jnp.where(jnp.arange(counts.shape[-1]) < me, counts, 0), axis=-1, keepdims=True)
    return tie_cut(tie, jnp.clip(r - before, 0, n), ids)


def gkth_key(key, k, mask):
    """The k-th largest ``key`` (unsigned) within ``mask`` over the whole row (its
    minimum if fewer): bisection on the bits, one global count per bit."""
    utype, bits = key.dtype, jnp.iinfo(key.dtype).bits
    lo = lax.pmin(jnp.min(jnp.where(mask, key, jnp.asarray(jnp.iinfo(utype).max, utype)), axis=-1, keepdims=True), VOCAB)
    hi = lax.pmax(jnp.max(jnp.where(mask, key, jnp.zeros((), utype)), axis=-1, keepdims=True), VOCAB)
    one = jnp.ones((), utype)

    def body(_, c):
        lo, hi1 = c
        mid = lo + (hi1 - lo) // (one + one)
        ok = gcount(mask & (key >= mid)) >= k
        return jnp.where(ok, mid, lo), jnp.where(ok, hi1, mid)

    lo, _ = lax.fori_loop(0, bits, body, (lo, hi + one))
    return lo


def topk_keep(x, k, mask, ids):
    """The ``k`` largest entries of the row within ``mask`` (ties: lowest ids first)."""
    key = jnp.where(mask, ordered_key(jnp.where(mask, x, -jnp.inf)), jnp.zeros((), jnp.uint32 if x.dtype != jnp.float64 else jnp.uint64))
    t = gkth_key(key, k, mask)
    r = k - gcount(mask & (key > t))
    tie = mask & (key == t)
    return mask & ((key > t) | (tie & (ids <= gtie_cut(tie, r, ids))))
