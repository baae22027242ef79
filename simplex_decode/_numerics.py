"""Masked reductions that hold over the whole float range: the one home of max / log-sum-exp /
softmax / log-softmax / entropy in simplex_decode.

Every function takes values ``x`` of shape ``(..., V)`` and a boolean ``mask`` of the same
shape (the entries that count) and reduces over the last axis. They are exact in the sense
that matters for decoding:

* the row is shifted by its largest masked entry before anything is exponentiated, so a
  finite ``x`` never overflows (``exp(x − max) ≤ 1``, the maximum is exactly 1) however
  large ``|x|`` is — up to the float maximum, where ``x − max`` itself may round to
  ``−inf`` for entries more than the float maximum below it, whose probability is 0;
* a row with no masked entry has ``max = −inf``, ``log-sum-exp = −inf`` and an all-zero
  softmax — never NaN; callers flag such rows with a status;
* the shift is a constant of the derivative (``stop_gradient``), so gradients are those of
  the unshifted formula;
* every float sum over a row is :func:`row_sum`, whose association is fixed by the row
  length alone, so a row's result is bit-identical whatever batch it is computed in.

Example:
  >>> import jax.numpy as jnp
  >>> from simplex_decode import _numerics as nx
  >>> x = jnp.array([[3.4e38, 0.0, -3.4e38], [1.0, 1.0, -jnp.inf]])
  >>> nx.masked_softmax(x, x > -jnp.inf).tolist()
  [[1.0, 0.0, 0.0], [0.5, 0.5, 0.0]]
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

__all__ = [
    "cond",
    "row_sum",
    "masked_max",
    "masked_min",
    "row_shift",
    "masked_exp",
    "masked_logsumexp",
    "masked_softmax",
    "masked_log_softmax",
    "softmax",
    "log_softmax",
    "SoftmaxStats",
    "softmax_stats",
    "xlogx",
    "entropy",
]


def cond(pred, true_fun, false_fun, *operands):
    """``lax.cond(pred, true_fun, false_fun, *operands)``, or — when ``pred`` is known in
    Python (an eager call, nothing traced) — the branch it picks, called directly.

    Eagerly, ``lax.cond`` compiles its branches at every call: they are closures, new at
    every call, so JAX's caches never hit (about 0.5 s per ``cond`` on CPU, measured in
    ``Objective.prepare``). Under a trace ``pred`` is a tracer and this is ``lax.cond``.
    """
    if not isinstance(pred, jax.core.Tracer):
        return true_fun(*operands) if bool(pred) else false_fun(*operands)
    return lax.cond(pred, true_fun, false_fun, *operands)


def _pairwise(parts):
    while len(parts) > 1:
        pairs = [parts[i] + parts[i + 1] for i in range(0, len(parts) - 1, 2)]
        parts = pairs + parts[len(pairs) * 2 :]
    return parts[0]


#: Fan-in of the first level of :func:`row_sum` (8 streams read the row once) and of the
#: later, short levels.
_FAN_IN = (8, 32)


def row_sum(x, keepdims=True):
    """``Σ_v x_v`` over the last axis with an association fixed by the row length.

    XLA's reductions choose their kernel, and with it the order in which a row's entries
    are added, from the *whole* array's shape (on CPU, YNNPACK takes f32 reductions of
    4096 elements or more, and tiles them by the batch size), so ``jnp.sum`` of a row can
    differ in its last bit between a batch of one and a batch of eight. This sum is a tree
    of elementwise additions (the row cut into 8 contiguous slices added pairwise, then
    the same with 32 on the partial sums, until one entry is left): elementwise IEEE
    additions are exact operations, so every row gets the same bits in any batch, at any
    position, on any backend. Its error is that of pairwise summation (``O(log V)`` ulps).
    """
    x = jnp.asarray(x)
    first = True
    while x.shape[-1] > 1:
        n_in = x.shape[-1]
        k = min(_FAN_IN[0] if first else _FAN_IN[1], n_in)
        n = -(-n_in // k)
        if n * k > n_in:
            x = jnp.pad(x, [(0, 0)] * (x.ndim - 1) + [(0, n * k - n_in)])
        x = _pairwise([x[..., i * n : (i + 1) * n] for i in range(k)])
        first = False
    if x.shape[-1] == 0:
        x = jnp.zeros(x.shape[:-1] + (1,), x.dtype)
    return x if keepdims else x[..., 0]


def masked_max(x, mask):
    """``max`` of ``x`` over ``mask`` per row, ``(..., 1)``; ``−inf`` for an empty row."""
    return jnp.max(jnp.where(mask, x, -jnp.inf), axis=-1, keepdims=True)


def masked_min(x, mask):
    """``min`` of ``x`` over ``mask`` per row, ``(..., 1)``; ``+inf`` for an empty row."""
    return jnp.min(jnp.where(mask, x, jnp.inf), axis=-1, keepdims=True)


def row_shift(x, mask):
    """The shift that keeps ``exp`` in range: the row's masked maximum, 0 where it is not
    finite (an empty row), as a constant of the derivative. ``(..., 1)``."""
    m = masked_max(x, mask)
    return lax.stop_gradient(jnp.where(jnp.isfinite(m), m, 0.0))


def masked_exp(x, mask, shift=None):
    """``exp(x − shift)`` on the mask, 0 elsewhere (``shift`` defaults to :func:`row_shift`:
    the largest masked entry is then exactly 1)."""
    m = row_shift(x, mask) if shift is None else shift
    return jnp.where(mask, jnp.exp(jnp.where(mask, x, -jnp.inf) - m), 0.0)


def _safe(z):
    return jnp.where(z > 0, z, 1.0)


def masked_logsumexp(x, mask):
    """``log Σ_{mask} exp(x)`` per row, ``(..., 1)``; ``−inf`` for an empty row."""
    m = row_shift(x, mask)
    z = row_sum(masked_exp(x, mask, m))
    return jnp.where(z > 0, m + jnp.log(_safe(z)), -jnp.inf)


def masked_softmax(x, mask):
    """``softmax(x)`` restricted to the mask (0 elsewhere; an all-zero row when empty)."""
    e = masked_exp(x, mask)
    return e / _safe(row_sum(e))


def masked_log_softmax(x, mask):
    """``log softmax(x)`` restricted to the mask, ``−inf`` off it (and on empty rows)."""
    m = row_shift(x, mask)
    z = row_sum(masked_exp(x, mask, m))
    return jnp.where(mask, x - m - jnp.log(_safe(z)), -jnp.inf)


def softmax(x):
    """``softmax(x)`` over the last axis (``−inf`` entries get 0; NaN propagates)."""
    return masked_softmax(x, x != -jnp.inf)


def log_softmax(x):
    """``log softmax(x)`` over the last axis (``−inf`` entries stay ``−inf``; NaN propagates)."""
    return masked_log_softmax(x, x != -jnp.inf)


class SoftmaxStats(NamedTuple):
    """``softmax(x)`` on a mask and the quantities derived from it, per row."""

    p: object  # probabilities (0 off the mask)
    logp: object  # log p (−inf off the mask)
    entropy: object  # H(p) = −Σ p log p, (..., 1)
    e: object  # exp(x − shift) (the largest is 1)
    z: object  # Σ e, (..., 1)


def softmax_stats(x, mask) -> SoftmaxStats:
    """``p = softmax(x)`` on ``mask`` with ``log p``, its entropy and the unnormalised
    ``e = exp(x − max)``, ``z = Σ e`` (one shift, one pass of ``exp``)."""
    m = row_shift(x, mask)
    e = masked_exp(x, mask, m)
    z = row_sum(e)
    logp = jnp.where(mask, x - m - jnp.log(_safe(z)), -jnp.inf)
    p = e / _safe(z)
    ent = -row_sum(jnp.where(p > 0, p * jnp.where(p > 0, logp, 0.0), 0.0))
    return SoftmaxStats(p, logp, ent, e, z)


def xlogx(q):
    """``q log q`` elementwise, with ``0 log 0 = 0``."""
    safe = jnp.where(q > 0, q, 1.0)
    return jnp.where(q > 0, q * jnp.log(safe), 0.0)


def entropy(q):
    """Shannon entropy ``−Σ q log q`` (nats; ``0 log 0 = 0``) of each row of ``q``, ``(...,)``."""
    return -row_sum(xlogx(q), keepdims=False)
