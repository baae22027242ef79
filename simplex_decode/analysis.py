"""Diagnostics of a decoding distribution ``q`` and of the objective it should solve.

Every function is batched over leading dimensions (``q`` of shape ``(..., V)``), pure JAX
(jit/vmap-compatible), and returns one value per row:

* :func:`entropy` — ``H(q)`` in nats; :func:`support_size` — ``#{v: q_v > tol}``;
* :func:`kl_to_model` — ``KL(q ‖ softmax(logits))``;
* :func:`coverage_probability` — the probability that ``k`` independent draws from ``q``
  contain all of the model's ``m`` most probable tokens (exact, ``O(m·k²)`` per row);
* :func:`effective_temperature` — the ``τ`` whose ``softmax(logits/τ)`` is closest to ``q``
  in ``KL(q ‖ ·)``;
* :func:`kkt_residual` and :func:`objective_gap` — how far ``q`` is from the optimum of a
  separable :class:`~simplex_decode.Objective`.

Example:
  >>> import jax.numpy as jnp, simplex_decode as sd
  >>> from simplex_decode import analysis
  >>> logits = jnp.array([2.0, 1.0, 0.0, -1.0])
  >>> q = sd.temperature(0.5).probs(logits)
  >>> round(float(analysis.effective_temperature(q, logits)), 4)
  0.5
  >>> float(analysis.kkt_residual(sd.best_of_k(4, 0.5, 0.1, top_m=2).objective, logits, q)) > 1e-3
  True
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.scipy.special import xlogy

from ._pytree import check_range
from .objective import as_logits

__all__ = [
    "entropy",
    "support_size",
    "kl_to_model",
    "coverage_probability",
    "effective_temperature",
    "kkt_residual",
    "objective_gap",
]


def _float(q):
    q = jnp.asarray(q)
    if not jnp.issubdtype(q.dtype, jnp.floating) or q.dtype in (jnp.float16, jnp.bfloat16):
        q = q.astype(jnp.float32)
    return q


def entropy(q):
    """Shannon entropy ``−Σ_v q_v log q_v`` (nats; ``0 log 0 = 0``), shape ``(...)``."""
    q = _float(q)
    return -jnp.sum(xlogy(q, q), axis=-1)


def support_size(q, tol=0.0):
    """Number of tokens with ``q_v > tol`` (int32), shape ``(...)``."""
    return jnp.sum(_float(q) > tol, axis=-1, dtype=jnp.int32)


def kl_to_model(q, logits):
    """``KL(q ‖ p) = Σ_v q_v log(q_v / p_v)`` with ``p = softmax(logits)`` (``+inf`` when ``q``
    puts mass on a token the model gives probability 0)."""
    q = _float(q)
    logp = jax.nn.log_softmax(as_logits(logits).astype(q.dtype), axis=-1)
    cross = jnp.where(q > 0, q * jnp.where(q > 0, logp, 0.0), 0.0)
    return jnp.sum(xlogy(q, q) - cross, axis=-1)


def _binomial_rows(pi, k):
    """``B[..., j, n] = Binom(n; j, π)`` for ``0 ≤ n ≤ j ≤ k`` by Pascal's recursion
    ``B_j(n) = (1 − π)·B_{j−1}(n) + π·B_{j−1}(n−1)``: sums of non-negative terms only, so
    float32 keeps ~``√k·eps`` relative accuracy (log-gamma differences would lose
    ``log C(k, k/2)·eps``)."""
    pi = pi[..., None]
    row0 = jnp.zeros(pi.shape[:-1] + (k + 1,), pi.dtype).at[..., 0].set(1.0)

    def step(row, _):
        shifted = jnp.concatenate([jnp.zeros_like(row[..., :1]), row[..., :-1]], axis=-1)
        new = (1.0 - pi) * row + pi * shifted
        return new, new

    _, rows = lax.scan(step, row0, None, length=k)
    return jnp.concatenate([row0[None], rows], axis=0)  # (k+1, ..., k+1): j first


def coverage_probability(q, logits=None, *, m, k, p=None):
    """``P(all top-m tokens of the model appear within k i.i.d. draws from q)``.

    The top-``m`` set ``M`` is taken from ``p = softmax(logits)`` (or from ``p`` when given;
    exactly one of them), ties by lowest id. ``q`` need not be normalised (draws follow
    ``q/Σq``).

    Method (exact, no inclusion–exclusion): draw the ``k`` samples and count how many
    land on the first token of ``M``: ``Binomial(k, π₁)``; given that count ``n₁``, the other
    ``k − n₁`` draws are i.i.d. from ``q`` conditioned off that token, and so on. So with
    ``π_i = q_i / (Σq − Σ_{l<i} q_l)`` and ``F_{m+1} ≡ 1``,
    ``F_i(j) = Σ_{n=1}^{j} Binom(n; j, π_i) F_{i+1}(j − n)`` and the answer is ``F_1(k)``.
    The binomial probabilities come from Pascal's recursion. Every term is non-negative,
    so unlike ``Σ_{S⊆M} (−1)^{|S|}(1 − q(S))^k`` (2^m terms with cancellation) it is
    accurate in float32 (about 1e-6). Cost ``O(m·k²)`` per row; memory ``(k+1)²`` per row.
    """
    q = _float(q)
    check_range("coverage_probability", "m", m, lo=1, hi=q.shape[-1], integer=True)
    check_range("coverage_probability", "k", k, lo=1, integer=True)
    m, k = int(m), int(k)
    if (logits is None) == (p is None):
        raise ValueError("coverage_probability: give exactly one of `logits` and `p`")
    if logits is not None:
        score = jax.nn.log_softmax(as_logits(logits).astype(q.dtype), axis=-1)
    else:
        score = jnp.asarray(p, q.dtype)
    return _coverage(q, jnp.broadcast_to(score, q.shape), m, k)


@functools.partial(jax.jit, static_argnums=(2, 3))
def _coverage(q, score, m, k):
    _, idx = lax.top_k(score, m)
    qm = jnp.take_along_axis(q, idx, axis=-1)  # (..., m)
    # Mass not yet conditioned away, as sums of non-negative terms (no cancellation when
    # the top tokens hold almost all of q): the mass outside M plus q_i + … + q_m.
    in_top = jnp.sum(jax.nn.one_hot(idx, q.shape[-1], dtype=q.dtype), axis=-2) > 0
    outside = jnp.sum(jnp.where(in_top, 0.0, q), axis=-1, keepdims=True)
    rem = outside + jnp.cumsum(qm[..., ::-1], axis=-1)[..., ::-1]
    pi = jnp.clip(qm / jnp.where(rem > 0, rem, 1.0), 0.0, 1.0)
    pi = jnp.where(rem > 0, pi, 0.0)
    j = np.arange(k + 1)[:, None]  # draws available
    r = np.arange(k + 1)[None, :]  # draws left for the next tokens
    n = np.clip(j - r, 0, k)  # draws on this token (≥ 1 where used)
    valid = jnp.asarray(j - r >= 1)

    def step(F, pi_i):
        B = jnp.moveaxis(_binomial_rows(pi_i, k), 0, -2)  # (..., j, n)
        T = jnp.take_along_axis(B, jnp.broadcast_to(jnp.asarray(n), B.shape), axis=-1)  # (..., j, r)
        T = jnp.where(valid, T, 0.0)
        return jnp.einsum("...jr,...r->...j", T, F), None

    F0 = jnp.ones(q.shape[:-1] + (k + 1,), q.dtype)
    F, _ = lax.scan(step, F0, jnp.moveaxis(pi, -1, 0)[::-1])
    return jnp.clip(F[..., k], 0.0, 1.0)


def effective_temperature(q, logits, *, iters=96):
    """The ``τ ≥ 0`` minimising ``KL(q ‖ softmax(logits/τ))``.

    With ``b = 1/τ`` the objective ``−b·<q, x> + logsumexp(b·x)`` is convex in ``b``, with
    derivative ``E_{softmax(bx)}[x] − <q, x>`` increasing in ``b``; its root is found by
    bisection on ``log b`` (``iters`` halvings of a bracket spanning 1e-12 to 1e12 times the
    logits' scale). Returns ``0`` when ``<q, x> ≥ max x`` (``q`` sits on the argmax: greedy)
    and ``inf`` when ``<q, x>`` is not above the uniform mean of ``x`` (no positive
    temperature is closer than τ = ∞). Tokens with ``-inf`` logits are ignored.
    """
    q = _float(q)
    return _effective_temperature(q, as_logits(logits).astype(q.dtype), int(iters))


@functools.partial(jax.jit, static_argnums=2)
def _effective_temperature(q, x, iters):
    fin = jnp.isfinite(x)
    xs = jnp.where(fin, x, 0.0)
    qs = jnp.where(fin, q, 0.0)
    target = jnp.sum(qs * xs, axis=-1, keepdims=True) / jnp.sum(qs, axis=-1, keepdims=True)
    xmax = jnp.max(jnp.where(fin, x, -jnp.inf), axis=-1, keepdims=True)
    n = jnp.sum(fin, axis=-1, keepdims=True)
    mean = jnp.sum(xs, axis=-1, keepdims=True) / jnp.maximum(n, 1)
    spread = jnp.maximum(xmax - mean, jnp.finfo(q.dtype).tiny)
    xc = jnp.where(fin, x - xmax, -jnp.inf)  # ≤ 0

    def mean_at(logb):
        w = jax.nn.softmax(jnp.exp(logb) * xc, axis=-1)
        return jnp.sum(jnp.where(fin, w * xs, 0.0), axis=-1, keepdims=True)

    lo = -jnp.log(spread) - 12 * jnp.log(10.0)
    hi = -jnp.log(spread) + 12 * jnp.log(10.0)

    def body(_, c):
        lo, hi = c
        mid = 0.5 * (lo + hi)
        below = mean_at(mid) < target
        return jnp.where(below, mid, lo), jnp.where(below, hi, mid)

    lo, hi = lax.fori_loop(0, iters, body, (lo, hi))
    tau = jnp.exp(-0.5 * (lo + hi))
    # Within rounding of the uniform mean (e.g. q uniform): no finite temperature.
    flat = target - mean <= 16 * jnp.finfo(q.dtype).eps * (jnp.abs(mean) + spread)
    tau = jnp.where(target >= xmax, 0.0, tau)
    tau = jnp.where(flat, jnp.inf, tau)
    return tau[..., 0]


def _check_q(name, q, logits):
    q, logits = jnp.asarray(q), as_logits(logits)
    if q.shape != logits.shape:
        raise ValueError(f"{name}: `q` must have the logits' shape {logits.shape}, got {q.shape}")


@jax.jit
def _kkt(objective, logits, q, history, history_mask):
    from .solvers.exact import kkt_residual as _residual

    problem = objective.prepare(logits, history=history, history_mask=history_mask)
    return _residual(objective.terms, problem, jnp.asarray(q, problem.scores.dtype))


@jax.jit
def _gap(objective, solver, logits, q, history, history_mask):
    from .decoder import Decoder

    problem = objective.prepare(logits, history=history, history_mask=history_mask)
    best = Decoder(objective, solver=solver).solve(logits, history=history, history_mask=history_mask).q
    return objective.value(best, problem) - objective.value(jnp.asarray(q, problem.scores.dtype), problem)


def kkt_residual(objective, logits, q, *, history=None, history_mask=None):
    """KKT residual of ``q`` for a separable ``objective`` on ``logits`` (per row, ≥ 0).

    ``‖q − q(ν̂)‖₁ + |Σq − 1| + mass off the support``, where ``q(ν)`` is the exact
    per-coordinate best response to a multiplier ``ν`` and ``ν̂`` the multiplier that best
    explains ``q`` (see :func:`simplex_decode.solvers.exact.kkt_residual`). It is 0 at the
    optimum and in probability units (an L1 distance) otherwise.
    """
    if not objective.separable:
        raise ValueError("kkt_residual: needs a separable objective")
    _check_q("kkt_residual", q, logits)
    return _kkt(objective, logits, q, history, history_mask)


def objective_gap(objective, logits, q, *, history=None, history_mask=None):
    """``f(q*) − f(q) ≥ 0``: the objective lost by ``q`` against the exact optimum ``q*``
    (closed form where one exists, else :class:`~simplex_decode.solvers.Exact`).
    ``+inf`` when ``q`` puts mass off the support."""
    from .solvers.auto import Auto

    solver = Auto().select(objective)
    if type(solver).__name__ not in ("ClosedForm", "Exact"):
        raise ValueError("objective_gap: needs an objective with a closed form or separable terms")
    _check_q("objective_gap", q, logits)
    return _gap(objective, solver, logits, q, history, history_mask)
