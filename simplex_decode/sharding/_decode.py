"""The per-shard decoders: a Decoder's problem solved on a row split over ``vocab``.

:func:`plan` reads a Decoder into the pieces this module implements (temperature
transforms, top-k / top-p / min-p support rules, a softmax / sparsemax / entmax term or
none) and names the first piece it does not; :func:`solve_local` and the draws run inside
``shard_map`` on one shard's entries, with the row operations of :mod:`._rows`. They
follow the single-device closed forms step for step (the same shifts, thresholds and tie
rules), with every row reduction made global.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from .._numerics import row_sum
from .._pytree import per_row
from ..scores import Temperature
from ..solvers.auto import Auto
from ..solvers.closed_form import ClosedForm
from ..status import Status
from ..supports import MinP, TopK, TopP, bisect_smallest_true
from ..terms import Entropy, SquaredL2, Tsallis
from ._rows import VOCAB, gany, gargmax, gcount, gshift, gsum, gtie_cut, topk_keep

#: what a Decoder may be made of to run sharded (anything else raises :class:`NotSharded`)
SUPPORTED = {
    "solver": (Auto, ClosedForm),
    "transforms": (Temperature,),
    "support": (TopK, TopP, MinP),
    "terms": (Entropy, SquaredL2, Tsallis),
}


class NotSharded(ValueError):
    """The decoder has a component that :mod:`simplex_decode.sharding` does not implement."""


class Plan(NamedTuple):
    kind: str  # "argmax", "gibbs", "sparsemax" or "entmax"


def plan(decoder) -> Plan:
    """The closed form of ``decoder`` on sharded logits; :class:`NotSharded` naming the
    first component that has no sharded implementation."""
    obj = decoder.objective

    def refuse(what):
        names = {k: ", ".join(c.__name__ for c in v) for k, v in SUPPORTED.items()}
        raise NotSharded(
            f"decoder: {what} has no vocabulary-sharded implementation (sd.sharding supports solver "
            f"{names['solver']}; transforms {names['transforms']}; support {names['support']}; at most one term of "
            f"{names['terms']}). Gather the logits yourself (jax.device_put(logits, replicated)) and call "
            "decoder.probs / decoder.sample if you mean to."
        )

    if not isinstance(decoder.solver, SUPPORTED["solver"]):
        refuse(f"solver {type(decoder.solver).__name__}")
    if obj.support_at is not None:
        refuse("a support rule placed inside the chain of transforms (Objective.support_at, order='llama.cpp')")
    for field in ("transforms", "support"):
        for c in getattr(obj, field):
            if type(c) not in SUPPORTED[field]:
                refuse(f"{field[:-1] if field == 'transforms' else field} {type(c).__name__}")
    if len(obj.terms) > 1:
        refuse("a sum of terms (" + " + ".join(type(t).__name__ for t in obj.terms) + ")")
    for t in obj.terms:
        if type(t) not in SUPPORTED["terms"]:
            refuse(f"term {type(t).__name__}")
    if not obj.terms:
        return Plan("argmax")
    return Plan({Entropy: "gibbs", SquaredL2: "sparsemax", Tsallis: "entmax"}[type(obj.terms[0])])


def _set(status, bad, code):
    """The first failure of a row wins (as :meth:`Objective.prepare` records them)."""
    return jnp.where((status == Status.OK) & bad, code, status)


# --- support rules ----------------------------------------------------------------------


def _gexp(x, mask):
    """``exp(x − max)`` on the mask, 0 elsewhere (the largest entry is exactly 1)."""
    return jnp.where(mask, jnp.exp(jnp.where(mask, x, -jnp.inf) - gshift(x, mask)), 0.0)


def _ties_kept(n_tie, below, tail, t):
    """How many of the ``n_tie`` tokens tied at probability ``t`` the nucleus keeps: the tie of
    rank j is kept iff ``below + (n_tie − j)·t > tail``, and the top token always is (as in
    :class:`~simplex_decode.TopP`)."""
    r = jnp.ceil(n_tie.astype(t.dtype) - (tail - below) / jnp.where(t > 0, t, 1.0))
    return jnp.clip(r.astype(jnp.int32), (t >= 1.0).astype(jnp.int32), n_tie)


def _nucleus_keep(x, p, mask, ids):
    """Top-p of ``softmax(x)`` on ``mask``: the threshold by bisection on the tail mass,
    one global sum per bit (:func:`~simplex_decode.supports.nucleus_mask`'s full-row path)."""
    e = _gexp(x, mask)
    tail = (1.0 - p.astype(e.dtype)) * gsum(e)
    x_star = bisect_smallest_true(lambda thr: gsum(jnp.where(e <= thr, e, 0.0)) > tail, 1.0, e.dtype, e.shape[:-1])
    t = lax.pmin(jnp.min(jnp.where(e >= x_star, e, jnp.inf), axis=-1, keepdims=True), VOCAB)
    below = gsum(jnp.where(e < t, e, 0.0))
    tie = (e == t) & mask
    r = _ties_kept(gcount(tie), below, tail, t)
    return mask & ((e > t) | (tie & (ids <= gtie_cut(tie, r, ids))))


def _min_p_keep(x, p, mask):
    e = _gexp(x, mask)
    probs = e / gsum(e)
    top = lax.pmax(jnp.max(probs, axis=-1, keepdims=True), VOCAB)
    return mask & (probs >= p.astype(e.dtype) * top)


def _at_least(keep, x, min_keep, mask, ids):
    """:func:`~simplex_decode.supports.keep_at_least` on the shards: one global arg-max round
    (a ``pmax`` and a ``pmin``) per token added to a row that keeps fewer than ``min_keep``."""
    need = jnp.minimum(per_row(min_keep, x.shape[:-1]).astype(jnp.int32), gcount(mask)) - gcount(keep)
    xm = jnp.where(mask, x, -jnp.inf)
    big = jnp.iinfo(jnp.int32).max

    def body(carry):
        i, kept = carry
        rest = mask & ~kept
        top = lax.pmax(jnp.max(jnp.where(rest, xm, -jnp.inf), axis=-1, keepdims=True), VOCAB)
        best = lax.pmin(jnp.min(jnp.where(rest & (xm == top), ids, big), axis=-1, keepdims=True), VOCAB)
        return i + 1, kept | ((ids == best) & (i < need))

    return lax.while_loop(lambda c: c[0] < jnp.max(need), body, (jnp.int32(0), keep))[1]


def _support(rule, s, x, mask, ids):
    src = x if getattr(rule, "from_model", False) else s
    value = per_row(rule.k if isinstance(rule, TopK) else rule.p, s.shape[:-1])
    if isinstance(rule, TopK):
        k = jnp.maximum(value.astype(jnp.int32), per_row(rule.min_keep, s.shape[:-1]).astype(jnp.int32))
        return topk_keep(s, k, mask, ids)
    if isinstance(rule, TopP):
        return _at_least(_nucleus_keep(src, value, mask, ids), src, rule.min_keep, mask, ids)
    return _at_least(_min_p_keep(src, value, mask), src, rule.min_keep, mask, ids)


# --- closed forms -----------------------------------------------------------------------


def _onehot_argmax(s, mask, ids):
    return (ids == gargmax(jnp.where(mask, s, -jnp.inf), ids)).astype(s.dtype)


def _normalised(p):
    z = gsum(p)
    return p / jnp.where(z > 0, z, 1.0)


def _threshold(xm, am1, n):
    """τ with Σ_v [xm_v − τ]_+^{1/am1} = 1 by bisection on the global sum (the bracket and
    the iterations of the single-device closed form)."""
    mx = lax.pmax(jnp.max(xm, axis=-1, keepdims=True), VOCAB)
    mx = jnp.where(jnp.isfinite(mx), mx, 0.0)
    lo, hi = mx - 1.0, mx - (1.0 / jnp.maximum(n, 1.0)) ** am1
    inv = 1.0 / am1

    def body(_, c):
        lo, hi = c
        mid = 0.5 * (lo + hi)
        big = gsum(jnp.maximum(xm - mid, 0.0) ** inv) >= 1.0
        return jnp.where(big, mid, lo), jnp.where(big, hi, mid)

    lo, _ = lax.fori_loop(0, 64 if xm.dtype == jnp.float64 else 34, body, (lo, hi))
    return lo


def _closed_form(kind, term, s, mask, ids):
    batch = s.shape[:-1]
    c = per_row(term.weight, batch, s.dtype)
    safe = jnp.where(c > 0, c, 1.0)
    shifted = jnp.where(mask, s - gshift(s, mask), -jnp.inf)
    if kind == "gibbs":
        num = shifted / safe
        q = _normalised(_gexp(num, mask))
    else:
        z = jnp.where(mask, shifted / safe, 0.0)
        am1 = jnp.ones_like(c) if kind == "sparsemax" else per_row(term.alpha, batch, s.dtype) - 1.0
        xm = jnp.where(mask, (z - gshift(z, mask)) * am1, -jnp.inf)
        tau = _threshold(xm, am1, gcount(mask).astype(s.dtype))
        if kind == "sparsemax":  # the exact threshold of the support bisection found
            supp = xm > tau
            tau = (gsum(jnp.where(supp, xm, 0.0)) - 1.0) / jnp.maximum(gcount(supp), 1).astype(s.dtype)
        q = _normalised(jnp.maximum(xm - tau, 0.0) ** (1.0 / am1))
    return jnp.where(c <= 0, _onehot_argmax(s, mask, ids), q)


def _on_simplex(q, mask):
    good = (q >= 0) & (mask | (q == 0))
    tol = 1e-10 if q.dtype == jnp.float64 else 1e-4  # decoder.simplex_tolerance
    return jnp.abs(gsum(jnp.where(good, q, jnp.nan)) - 1.0) <= tol


# --- the per-shard programs -------------------------------------------------------------


def solve_local(decoder, kind, logits, params_ok, offset):
    """``(q, status)`` of ``decoder`` for one shard: ``logits`` ``(b, L)`` holds the
    global ids ``offset … offset + L − 1`` of its rows; ``status`` is ``(b,)``, the same
    on every shard of a row. Rows that are not OK get ``q = 0``."""
    obj = decoder.objective
    x = logits.astype(jnp.float64 if logits.dtype == jnp.float64 else jnp.float32)
    batch = x.shape[:-1]
    ids = offset + lax.broadcasted_iota(jnp.int32, x.shape, x.ndim - 1)
    nonfinite = gany(jnp.isnan(x) | (x == jnp.inf))
    x = jnp.where(nonfinite, 0.0, x)
    status = jnp.full(batch + (1,), Status.OK, jnp.int32)
    status = _set(status, ~params_ok[..., None], Status.INVALID_PARAMETER)
    status = _set(status, nonfinite, Status.NONFINITE_LOGITS)
    status = _set(status, ~gany(x > -jnp.inf), Status.EMPTY_SUPPORT)
    s, greedy = x, jnp.zeros(batch + (1,), bool)
    for t in obj.transforms:  # Temperature: (s − max s) / t, t = 0 is greedy
        tt = per_row(t.t, batch)
        s = t(s - gshift(s, s > -jnp.inf), None)
        greedy = greedy | (tt == 0)
    mask = s > -jnp.inf
    for rule in obj.support:
        mask = _support(rule, s, x, mask, ids)
    if kind == "argmax":
        q = _onehot_argmax(s, mask, ids)
    else:
        q = _closed_form(kind, obj.terms[0], s, mask, ids)
    q = jnp.where(greedy, _onehot_argmax(s, mask, ids), q)
    status = _set(status, ~_on_simplex(q, mask), Status.INVALID_SOLUTION)
    return jnp.where(status == Status.OK, q, 0.0), status[..., 0]


def draw_inverse_cdf(keys, q, offset, k):
    """``k`` inverse-CDF draws per row from the shard's ``q`` ``(b, L)`` (``keys``: one per
    row, the single-device sampler's uniforms): the shard totals locate the shard that holds
    each draw (one float per shard and row exchanged), which finds the id in its own prefix
    sum. Returns global ids ``(b, k)``, the same on every shard of a row."""
    tot = lax.all_gather(row_sum(q), VOCAB, axis=q.ndim - 1, tiled=True)  # (b, n_shards)
    cum = jnp.cumsum(tot, axis=-1)
    total = cum[..., -1:]
    u = jax.vmap(lambda kk: jax.random.uniform(kk, (k,), dtype=q.dtype))(keys)
    x = jnp.minimum(u * total, jnp.nextafter(total, jnp.zeros_like(total)))  # (b, k)
    owner = jnp.minimum(jnp.sum(cum[..., None, :] <= x[..., None], axis=-1), cum.shape[-1] - 1)
    before = jnp.take_along_axis(cum - tot, owner, axis=-1)
    local = jnp.cumsum(q, axis=-1)
    L = q.shape[-1]
    last = L - 1 - jnp.argmax(q[..., ::-1] > 0, axis=-1)  # rounding past the end: its last positive entry
    j = jax.vmap(lambda c, r: jnp.searchsorted(c, r, side="right"))(local, x - before)
    j = jnp.minimum(j, last[..., None]).astype(jnp.int32)
    mine = owner == lax.axis_index(VOCAB)
    return lax.psum(jnp.where(mine, offset + j, 0), VOCAB)


def draw_gumbel(noise, q, ids):
    """Gumbel-max draws: ``noise`` ``(b, k, L)`` is the shard's slice of the single-device
    sampler's noise; per-shard maxima then the global argmax. Global ids ``(b, k)``."""
    logq = jnp.where(q > 0, jnp.log(jnp.where(q > 0, q, 1.0)), -jnp.inf)
    return gargmax(logq[..., None, :] + noise, ids[..., None, :])[..., 0]


def gumbel_noise(keys, k, V, dtype):
    """The single-device sampler's Gumbel noise ``(B, k, V)`` (one key per row)."""
    return jax.vmap(lambda kk: jax.random.gumbel(kk, (k, V), dtype=dtype))(keys)
