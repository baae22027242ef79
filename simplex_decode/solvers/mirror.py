"""First-order solvers on the simplex: mirror ascent (the paper's Algorithm 1) and
projected gradient ascent.

Both maximise ``f(q) = <q, s> + Σ_j c_j φ_j(q)`` over ``{q ∈ Δ, supp q ⊆ S}`` using only
the terms' gradients, so they accept non-separable terms (the exact solver does not).
Both start at ``q₀ = p``, the reference distribution of the Objective's first
:class:`~simplex_decode.terms.KL` term (by default the model's ``softmax(logits)``; the
model distribution when there is no KL term), restricted to the support and renormalised.
Rows whose weights are all 0 (a linear objective, e.g. ``lam = 0``) return the argmax of
``s`` (lowest id on ties), the optimum, instead of iterating.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

from .._pytree import param, per_row, pytree_dataclass
from ..terms import Term
from .base import Solver
from .closed_form import greedy_where

__all__ = ["Mirror", "ProjectedGradient"]


def _lse(x, mask):
    x = jnp.where(mask, x, -jnp.inf)
    m = jnp.max(x, axis=-1, keepdims=True)
    m = jnp.where(jnp.isfinite(m), m, 0.0)
    total = jnp.sum(jnp.where(mask, jnp.exp(x - m), 0.0), axis=-1, keepdims=True)
    return m + jnp.log(jnp.where(total > 0, total, 1.0))


def _log_start(objective, problem):
    """``log q₀``: the first KL term's reference (else the model) on the support."""
    ctx, mask = problem.ctx, problem.mask
    logp = ctx.log_model
    for t in objective.terms:
        if hasattr(t, "log_reference"):
            logp = t.log_reference(ctx)
            break
    logp = jnp.where(mask, logp, -jnp.inf)
    # A reference with no mass on the support cannot start the iteration: start uniform there.
    none = ~jnp.any(jnp.isfinite(logp), axis=-1, keepdims=True)
    logp = jnp.where(none & mask, 0.0, logp)
    return jnp.where(mask, logp - _lse(logp, mask), -jnp.inf)


def _check_terms(objective, owner):
    bad = [type(t).__name__ for t in objective.terms if t.bound]
    if bad:
        raise ValueError(f"{owner}: constraint terms ({', '.join(bad)}) need solver='exact'")


def _weights(objective, batch, dtype):
    return [per_row(t.weight, batch, dtype) for t in objective.terms]


def _gradient_fn(objective, problem, weights):
    """``log q ↦ ∇f(q) = s + Σ_j c_j ∇φ_j(q)`` on the support (0 elsewhere).

    Per-coordinate data of separable terms (coverage weights, log p) is computed once,
    outside the iteration; entropic gradients are taken from ``log q`` directly.
    """
    s, mask, ctx = problem.scores, problem.mask, problem.ctx
    parts = []
    for t, c in zip(objective.terms, weights, strict=True):
        if t.entropic:
            lb = jnp.asarray(t.coord_data(ctx)["log_base"], s.dtype)
            parts.append(("entropic", t, c, jnp.where(mask & jnp.isfinite(lb), lb, 0.0)))
        elif t.separable and type(t).coord_grad is not Term.coord_grad:
            parts.append(("coord", t, c, t.coord_data(ctx)))
        else:
            parts.append(("full", t, c, None))

    def gradient(logq):
        q = jnp.where(mask, jnp.exp(logq), 0.0)
        lq = jnp.where(mask, logq, 0.0)
        g = jnp.where(mask, s, 0.0)
        for kind, t, c, data in parts:
            if kind == "entropic":
                gt = data - lq - 1.0
            elif kind == "coord":
                gt = t.coord_grad(q, data)
            else:
                gt = t.grad(q, ctx)
            g = g + jnp.where((c > 0) & mask, c * gt, 0.0)
        return g

    return gradient


def _all_zero(weights, batch):
    nz = jnp.zeros(batch + (1,), bool)
    for c in weights:
        nz = nz | (c > 0)
    return ~nz


def _iterate(step, x0, steps, tol, batch):
    """Run ``x ← step(x)`` ``steps`` times, or until ``‖Δq‖₁ ≤ tol`` per row (rows that
    reach it are frozen, so a row's result does not depend on the rest of the batch)."""
    if tol is None:
        x = lax.fori_loop(0, steps, lambda _, x: step(x)[0], x0)
        return x, jnp.full(batch, steps, jnp.int32), jnp.ones(batch, bool)

    def cond(c):
        j, _, _, done = c
        return (j < steps) & ~jnp.all(done)

    def body(c):
        j, x, it, done = c
        xn, delta = step(x)
        conv = delta <= tol
        x = jnp.where(done[..., None], x, xn)
        it = it + (~done).astype(jnp.int32)
        return j + 1, x, it, done | conv

    init = (jnp.zeros((), jnp.int32), x0, jnp.zeros(batch, jnp.int32), jnp.zeros(batch, bool))
    _, x, it, done = lax.while_loop(cond, body, init)
    return x, it, done


def _finish(q, it, conv, weights, problem):
    """Rows whose weights are all 0 are the argmax (computed only when some row is one);
    they took no iterations and count as converged."""
    zero = _all_zero(weights, q.shape[:-1])
    q = greedy_where(zero, q, problem.scores, problem.mask)
    return q, {"iterations": jnp.where(zero[..., 0], 0, it), "converged": conv | zero[..., 0]}


def _steps(default):
    return param(default, lo=1, integer=True, static=True, doc="the number of steps J")


def _tol():
    return param(None, lo=0.0, lo_open=True, static=True, optional=True, doc="None: exactly `steps` steps")


@pytree_dataclass
class Mirror(Solver):
    """Entropic mirror ascent, the paper's Algorithm 1.

    ``q₀ = p``; for ``j = 0 … J−1``: ``g = ∇f(q_j)``, ``M = max(η g)``,
    ``q̃ = q_j ⊙ exp(η g − M)``, ``q_{j+1} = q̃ / ‖q̃‖₁``; return ``q_J``. The iterates are
    carried as ``log q`` (``log q_{j+1} = log q_j + η g − logsumexp(log q_j + η g)`` over
    the support), which is the same sequence without underflow of small probabilities.

    Args:
      steps: ``J``, the number of steps (static). The paper uses 5.
      step_size: ``η > 0`` (a leaf: scalar or per-row), or None for ``1/Σ_j c_j`` per row
        (the step at which entropy/KL-only objectives are solved in one step).
      tol: None runs exactly ``steps`` steps (Algorithm 1); a float stops a row once
        ``‖q_{j+1} − q_j‖₁ ≤ tol`` (at most ``steps`` steps).

    With only KL terms (``β = 0`` in Best-of-K) the iterates are
    ``q_J ∝ p·exp(c_J s)``, ``c_J = (1 − (1 − ηλ)^J)/λ``: a change of temperature.

    Example:
      >>> import jax.numpy as jnp, simplex_decode as sd
      >>> obj = sd.Objective(terms=sd.KL(0.5))
      >>> q = sd.Decoder(obj, solver=sd.Mirror(steps=3, step_size=1.0)).probs(jnp.array([1.0, 0.0]))
      >>> round(float(q[0]), 4)  # p ∝ e^{logits}, c_3 = (1 − 0.5³)/0.5 = 1.75: ∝ e^{2.75·s}
      0.9399
    """

    steps: int = _steps(5)
    step_size: Any = param(1.0, lo=0.0, lo_open=True, optional=True, doc="η > 0, or None: 1/Σ c_j per row")
    tol: Any = _tol()

    def __call__(self, objective, problem):
        _check_terms(objective, "Mirror")
        return _jitted_run(self, objective, problem)

    def _run(self, objective, problem):
        s, mask = problem.scores, problem.mask
        batch, dtype = s.shape[:-1], s.dtype
        weights = _weights(objective, batch, dtype)
        if self.step_size is None:
            total = sum(weights, jnp.zeros(batch + (1,), dtype))
            eta = 1.0 / jnp.where(total > 0, total, 1.0)
        else:
            eta = per_row(self.step_size, batch, dtype)

        gradient = _gradient_fn(objective, problem, weights)

        def step(logq):
            g = gradient(logq)
            z = jnp.where(mask, logq + eta * g, -jnp.inf)
            new = jnp.where(mask, z - _lse(z, mask), -jnp.inf)
            delta = jnp.sum(jnp.abs(jnp.exp(new) - jnp.exp(logq)), axis=-1)
            return new, delta

        logq, it, conv = _iterate(step, _log_start(objective, problem), self.steps, self.tol, batch)
        return _finish(jnp.where(mask, jnp.exp(logq), 0.0), it, conv, weights, problem)


def _project_rows(x, mask):
    """Euclidean projection of each row onto ``{q ∈ Δ, q = 0 off the mask}``.

    ``optax.projections.projection_simplex`` treats its whole input as one vector, so it
    is vmapped over the flattened rows. Entries off the mask are set below
    ``max − 1`` (the threshold's lower bound), which makes them exactly 0.
    """
    from optax.projections import projection_simplex

    top = jnp.max(jnp.where(mask, x, -jnp.inf), axis=-1, keepdims=True)
    top = jnp.where(jnp.isfinite(top), top, 0.0)
    x = jnp.where(mask, x, top - 2.0 * (1.0 + jnp.abs(top)))
    V = x.shape[-1]
    flat = jax.vmap(projection_simplex)(x.reshape(-1, V))
    return jnp.where(mask, flat.reshape(x.shape), 0.0)


@pytree_dataclass
class ProjectedGradient(Solver):
    """Projected gradient ascent ``q ← Π_{Δ∩S}(q + η ∇f(q))`` from ``q₀ = p``.

    The Euclidean step the paper contrasts with mirror ascent; it works for any term with
    a gradient (non-separable ones included) and reaches exact zeros, so it suits
    Euclidean objectives (squared-L2, Tsallis, coverage). It is a poor fit for entropic
    terms (entropy, KL): their gradient is ``+∞`` at ``q_v = 0`` (evaluated here at the
    smallest normal float), and a projection that zeroes a coordinate makes the next step
    jump — use :class:`Mirror` or the exact solver for those.

    Args:
      steps: number of steps (static); step_size: ``η > 0`` (leaf); tol: optional early
        stop on ``‖q_{j+1} − q_j‖₁ ≤ tol`` per row.

    Example:
      >>> import jax.numpy as jnp, simplex_decode as sd
      >>> obj = sd.Objective(terms=sd.SquaredL2())
      >>> pg = sd.ProjectedGradient(steps=50, step_size=0.5)
      >>> [round(float(v), 4) for v in sd.Decoder(obj, solver=pg).probs(jnp.array([1.0, 0.5, -1.0]))]
      [0.75, 0.25, 0.0]
    """

    steps: int = _steps(100)
    step_size: Any = param(0.1, lo=0.0, lo_open=True, doc="η > 0")
    tol: Any = _tol()

    def __call__(self, objective, problem):
        _check_terms(objective, "ProjectedGradient")
        return _jitted_run(self, objective, problem)

    def _run(self, objective, problem):
        s, mask = problem.scores, problem.mask
        batch, dtype = s.shape[:-1], s.dtype
        weights = _weights(objective, batch, dtype)
        eta = per_row(self.step_size, batch, dtype)
        tiny = jnp.finfo(dtype).tiny

        gradient = _gradient_fn(objective, problem, weights)

        def step(q):
            g = gradient(jnp.log(jnp.maximum(q, tiny)))
            g = jnp.where(mask, g, 0.0)
            new = _project_rows(q + eta * g, mask)
            return new, jnp.sum(jnp.abs(new - q), axis=-1)

        q0 = jnp.where(mask, jnp.exp(_log_start(objective, problem)), 0.0)
        q, it, conv = _iterate(step, q0, self.steps, self.tol, batch)
        return _finish(q, it, conv, weights, problem)


@jax.jit
def _jitted_run(solver, objective, problem):
    # One compilation per (solver, objective) structure for eager calls; inlined under jit.
    return solver._run(objective, problem)
