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

import jax
import jax.numpy as jnp
from jax import lax
from jax.scipy.special import gammaln, xlogy

from ._core import check_range

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
    logp = jax.nn.log_softmax(jnp.asarray(logits, q.dtype), axis=-1)
    cross = jnp.where(q > 0, q * jnp.where(q > 0, logp, 0.0), 0.0)
    return jnp.sum(xlogy(q, q) - cross, axis=-1)


def _binom_logpmf(n, j, logpi, log1mpi):
    return (
        gammaln(j + 1.0) - gammaln(n + 1.0) - gammaln(j - n + 1.0)
        + jnp.where(n > 0, n * logpi, 0.0) + jnp.where(j - n > 0, (j - n) * log1mpi, 0.0)
    )


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
    Every term is non-negative, so unlike ``Σ_{S⊆M} (−1)^{|S|}(1 − q(S))^k`` (2^m terms with
    cancellation) it is accurate in float32. Cost ``O(m·k²)`` per row; memory ``(k+1)²``
    per row.
    """
    q = _float(q)
    check_range("coverage_probability", "m", m, lo=1, hi=q.shape[-1], integer=True)
    check_range("coverage_probability", "k", k, lo=1, integer=True)
    m, k = int(m), int(k)
    if (logits is None) == (p is None):
        raise ValueError("coverage_probability: give exactly one of `logits` and `p`")
    if logits is not None:
        score = jax.nn.log_softmax(jnp.asarray(logits, q.dtype), axis=-1)
    else:
        score = jnp.asarray(p, q.dtype)
    score = jnp.broadcast_to(score, q.shape)
    _, idx = lax.top_k(score, m)
    qm = jnp.take_along_axis(q, idx, axis=-1)  # (..., m)
    total = jnp.sum(q, axis=-1, keepdims=True)
    before = jnp.cumsum(qm, axis=-1) - qm
    rem = total - before
    pi = jnp.clip(qm / jnp.where(rem > 0, rem, 1.0), 0.0, 1.0)
    pi = jnp.where(rem > 0, pi, 0.0)
    logpi = jnp.log(jnp.where(pi > 0, pi, 1.0))
    logpi = jnp.where(pi > 0, logpi, -jnp.inf)
    log1mpi = jnp.log(jnp.where(pi < 1, 1.0 - pi, 1.0))
    log1mpi = jnp.where(pi < 1, log1mpi, -jnp.inf)

    j = jnp.arange(k + 1, dtype=q.dtype)[:, None]  # draws available
    r = jnp.arange(k + 1, dtype=q.dtype)[None, :]  # draws left for the next tokens
    n = j - r  # draws on this token (≥ 1)
    valid = n >= 1

    def step(F, args):
        lp, l1p = args  # (...,)
        lpmf = _binom_logpmf(n, j, lp[..., None, None], l1p[..., None, None])
        T = jnp.where(valid, jnp.exp(jnp.where(valid, lpmf, -jnp.inf)), 0.0)
        return jnp.einsum("...jr,...r->...j", T, F), None

    F0 = jnp.ones(q.shape[:-1] + (k + 1,), q.dtype)
    xs = (jnp.moveaxis(logpi, -1, 0)[::-1], jnp.moveaxis(log1mpi, -1, 0)[::-1])
    F, _ = lax.scan(step, F0, xs)
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
    x = jnp.asarray(logits, q.dtype)
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
    tau = jnp.where(target >= xmax, 0.0, tau)
    tau = jnp.where(target <= mean, jnp.inf, tau)
    return tau[..., 0]


def _prepared(objective, logits, history, history_mask):
    return objective.prepare(logits, history=history, history_mask=history_mask)


def kkt_residual(objective, logits, q, *, history=None, history_mask=None):
    """KKT residual of ``q`` for a separable ``objective`` on ``logits`` (per row, ≥ 0).

    ``‖q − q(ν̂)‖₁ + |Σq − 1| + mass off the support``, where ``q(ν)`` is the exact
    per-coordinate best response to a multiplier ``ν`` and ``ν̂`` the multiplier that best
    explains ``q`` (see :func:`simplex_decode.solvers.exact.kkt_residual`). It is 0 at the
    optimum and in probability units (an L1 distance) otherwise.
    """
    from .solvers.exact import kkt_residual as _kkt

    if not objective.separable:
        raise ValueError("kkt_residual: needs a separable objective")
    problem = _prepared(objective, logits, history, history_mask)
    q = jnp.asarray(q, problem.scores.dtype)
    if q.shape != problem.scores.shape:
        raise ValueError(f"kkt_residual: `q` must have the logits' shape {problem.scores.shape}, got {q.shape}")
    return _kkt(objective.terms, problem, q)


def objective_gap(objective, logits, q, *, history=None, history_mask=None):
    """``f(q*) − f(q) ≥ 0``: the objective lost by ``q`` against the exact optimum ``q*``
    (closed form where one exists, else :class:`~simplex_decode.solvers.Exact`).
    ``+inf`` when ``q`` puts mass off the support."""
    from .decoders import Decoder
    from .solvers.base import Auto

    solver = Auto().select(objective)
    if type(solver).__name__ not in ("ClosedForm", "Exact"):
        raise ValueError("objective_gap: needs an objective with a closed form or separable terms")
    problem = _prepared(objective, logits, history, history_mask)
    q = jnp.asarray(q, problem.scores.dtype)
    if q.shape != problem.scores.shape:
        raise ValueError(f"objective_gap: `q` must have the logits' shape {problem.scores.shape}, got {q.shape}")
    best = Decoder(objective, solver=solver).solve(logits, history=history, history_mask=history_mask).q
    return objective.value(best, problem) - objective.value(q, problem)
