"""Draws from a distribution q: one uniform per draw (inverse CDF) or Gumbel-max.

Randomness comes only from explicit keys. ``key`` is either one key — then row ``i`` of
the (flattened) batch uses ``fold_in(key, i)``, so its draws do not depend on the other
rows — or an array of keys with the batch shape (one per row), so a request keeps its
samples wherever it sits in a batch (fold a request id into its key).
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from ._numerics import row_sum
from ._select import argmax

__all__ = ["row_keys", "sample_from_probs", "check_sample_args"]

_METHODS = ("auto", "inverse_cdf", "gumbel")
_KEY = "key: must be a jax.random.key(...) (or a legacy jax.random.PRNGKey) or an array of them, one per row"


@functools.cache
def _raw_key_size(impl: str) -> int:
    """The last axis of a legacy (uint32) key of the default PRNG implementation."""
    return jax.eval_shape(lambda: jax.random.PRNGKey(0)).shape[-1]


def _key_batch_shape(key):
    """``(key as an array, its batch shape)``; ``ValueError`` naming ``key`` if it is none."""
    if isinstance(key, str) or not isinstance(key, (jax.Array, np.ndarray)):
        raise ValueError(f"{_KEY}, got {type(key).__name__} {key!r:.60}")
    key = key if isinstance(key, jax.Array) else jnp.asarray(key)
    if jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key):
        return key, key.shape
    size = _raw_key_size(str(jax.config.jax_default_prng_impl))
    if key.dtype != jnp.uint32 or key.ndim < 1 or key.shape[-1] != size:
        raise ValueError(f"{_KEY}, got dtype {key.dtype} shape {key.shape} (a legacy key is uint32 of shape (..., {size}))")
    return key, key.shape[:-1]


def _check_key(key, batch_shape):
    key, kb = _key_batch_shape(key)
    if kb not in ((), tuple(batch_shape)):
        raise ValueError(
            f"key: must be a single key or one key per row with batch shape {tuple(batch_shape)}, got key batch shape {kb}"
        )
    return key, kb


def check_sample_args(key, batch_shape, num_samples=None, method="auto"):
    """Check the arguments of a draw for logits of batch shape ``batch_shape``, naming the
    one that is wrong; returns ``num_samples`` as a Python int (or None)."""
    if method not in _METHODS:
        raise ValueError(f"method: must be one of {_METHODS}, got {method!r}")
    if num_samples is not None:
        if isinstance(num_samples, (bool, np.bool_)) or not isinstance(num_samples, (int, np.integer)) or num_samples < 1:
            raise ValueError(f"num_samples: must be None or an integer >= 1 (a Python int), got {num_samples!r}")
        num_samples = int(num_samples)
    _check_key(key, batch_shape)
    return num_samples


def row_keys(key, batch_shape):
    """One key per row, shape ``batch_shape`` (+ the raw key dims for legacy keys)."""
    key, kb = _check_key(key, batch_shape)
    if kb == tuple(batch_shape):
        return key
    if batch_shape == ():
        return key
    n = math.prod(batch_shape)
    keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(n, dtype=jnp.uint32))
    return keys.reshape(tuple(batch_shape) + keys.shape[1:])


_BLOCK = 512


def _inverse_cdf_row(key, q, k):
    """Inverse-CDF draws with a two-level prefix sum: block sums (one pass over q),
    a prefix sum over the blocks, then a prefix sum inside the chosen block only.
    A full-length cumsum is several passes on CPU; this is one, and it reads ``q`` in
    place (no padded copy: the last block is the final ``BLOCK`` entries, overlapping
    its neighbour, with the overlap zeroed)."""
    V = q.shape[-1]
    bs = min(_BLOCK, V)
    nf = V // bs
    # row_sum: the block sums (and so the ids) do not depend on the batch the row is in
    bsum = row_sum(q[: nf * bs].reshape(nf, bs), keepdims=False)
    if nf * bs < V:
        bsum = jnp.concatenate([bsum, row_sum(q[nf * bs :])])
    nb = bsum.shape[0]
    cb = jnp.cumsum(bsum)
    total = cb[-1]
    u = jax.random.uniform(key, (k,), dtype=q.dtype)
    x = jnp.minimum(u * total, jnp.nextafter(total, jnp.zeros_like(total)))
    b = jnp.minimum(jnp.searchsorted(cb, x, side="right"), nb - 1)
    rem = x - (cb[b] - bsum[b])
    start = jnp.minimum(b * bs, V - bs)
    skip = b * bs - start  # leading window entries that belong to the previous block

    def within_block(start, skip, rem):
        row = lax.dynamic_slice(q, (start,), (bs,))
        row = jnp.where(jnp.arange(bs) >= skip, row, 0.0)
        j = jnp.searchsorted(jnp.cumsum(row), rem, side="right")
        # rounding can push rem past the block's own sum: take its last positive entry
        last = bs - 1 - argmax(row[::-1] > 0)
        return start + jnp.minimum(j, last)

    return jax.vmap(within_block)(start, skip, rem).astype(jnp.int32)


def _gumbel_row(key, q, k):
    logq = jnp.where(q > 0, jnp.log(jnp.where(q > 0, q, 1.0)), -jnp.inf)
    g = jax.random.gumbel(key, (k, q.shape[-1]), dtype=q.dtype)
    return argmax(logq + g)


def sample_from_probs(key, q, *, num_samples=None, method="auto", valid=None):
    """Token ids drawn from ``q`` (shape ``(..., V)``), with replacement.

    Returns ids of shape ``(...)``, or ``(..., num_samples)``. ``method``: ``"inverse_cdf"``
    (one uniform per draw and a prefix sum: no per-token noise, the right choice on
    CPU), ``"gumbel"`` (argmax of log q + Gumbel noise: one fused pass on accelerators)
    or ``"auto"`` (inverse CDF on CPU, Gumbel elsewhere; decided when the computation is
    lowered, with ``lax.platform_dependent``, so code traced on a CPU host and exported for
    an accelerator with ``jax.export`` draws by Gumbel-max). The two draw from the same
    distribution with different random streams (``tests/test_lowering.py``). Rows where
    ``valid`` is False get id ``-1``.
    """
    num_samples = check_sample_args(key, q.shape[:-1], num_samples, method)
    batch = q.shape[:-1]
    keys = row_keys(key, batch)
    k = 1 if num_samples is None else num_samples
    n = math.prod(batch)
    flat_keys = keys.reshape((n,) + keys.shape[len(batch):])

    def draw(fn):
        return lambda kk, qq: jax.vmap(lambda r, x: fn(r, x, k))(kk, qq)

    flat_q = q.reshape(n, q.shape[-1])
    if method == "auto":
        ids = lax.platform_dependent(flat_keys, flat_q, cpu=draw(_inverse_cdf_row), default=draw(_gumbel_row))
    else:
        ids = draw(_inverse_cdf_row if method == "inverse_cdf" else _gumbel_row)(flat_keys, flat_q)
    ids = ids.reshape(batch + (k,))
    if valid is not None:
        ids = jnp.where(valid[..., None], ids, -1)
    return ids[..., 0] if num_samples is None else ids
