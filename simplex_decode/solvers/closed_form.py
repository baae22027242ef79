"""Closed-form solutions, recognised from the *types* of an Objective's terms.

=====================================  ==============================================
terms (weights)                        solution on the support ``S``
=====================================  ==============================================
none, or every weight 0                one-hot argmax of ``s`` (lowest id on ties)
``Entropy(a)`` and/or ``KL_j(b_j)``    ``softmax((s + Σ_j b_j log p_j) / (a + Σ_j b_j))``
``SquaredL2(c)``                       ``sparsemax(s / c)``
``Tsallis(α, c)``                      ``α-entmax(s / c)``
=====================================  ==============================================

Every closed form is invariant to a shift of the scores, and each is computed on the
scores shifted by their row maximum (the largest is 0): ``s / c`` and ``(α − 1)·z`` then
never overflow for finite scores, however large ``|s|`` or small ``c``, and the threshold
searches work at the scale of the solution (``τ ∈ [−1, 0]``), not of the logits.

sparsemax and entmax find the threshold τ by bisection (no full sort) followed by an
exact step (sparsemax: τ recomputed from the identified support; both: renormalisation,
so q is on the simplex to rounding); the bisection runs on the ``KCAP`` largest entries
of a candidate window when every other entry provably lies at or below τ, else on the
whole row, with ``custom_jvp`` derivatives from the support Jacobian
``diag(g) − g gᵀ / Σ g``, ``g = q^{2−α}`` — never differentiated through the bisection.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from .._numerics import cond, masked_softmax, row_shift, row_sum
from .._pytree import per_row, pytree_dataclass
from .._select import KCAP, argmax
from .._window import choose, window
from ..terms import KL, Entropy, SquaredL2, Tsallis
from .base import Solver

__all__ = ["ClosedForm", "closed_form_kind", "solve_closed_form", "argmax_onehot", "greedy_where", "sparsemax", "entmax"]


def closed_form_kind(terms) -> str | None:
    """Name of the closed form that solves these terms, or None."""
    types = [type(t) for t in terms]
    if not types:
        return "argmax"
    if all(t in (Entropy, KL) for t in types):
        return "gibbs"
    if types == [SquaredL2]:
        return "sparsemax"
    if types == [Tsallis]:
        return "entmax"
    return None


def argmax_onehot(s, mask):
    """One-hot argmax of ``s`` over the mask; ties go to the lowest index."""
    idx = argmax(jnp.where(mask, s, -jnp.inf))
    return jax.nn.one_hot(idx, s.shape[-1], dtype=s.dtype)


def greedy_where(rows, q, s, mask):
    """``q`` with the one-hot argmax of ``s`` in the ``rows`` (shape ``(..., 1)``).

    The argmax (two passes and a write over the vocabulary) runs only when some row of
    the batch needs it (``lax.cond``), not on every step of a sampling loop.
    """
    return cond(
        jnp.any(rows),
        lambda q, s, mask: jnp.where(rows, argmax_onehot(s, mask), q),
        lambda q, s, mask: q,
        q, s, mask,
    )


def _per_row(x, like):
    return per_row(x, like.shape[:-1], like.dtype)


def _bisect_iters(dtype):
    return 64 if jnp.dtype(dtype) == jnp.float64 else 34


def _bisect_threshold(xm, am1, n):
    """τ with Σ_v [xm_v − τ]_+^{1/am1} = 1 by bisection (``xm`` is −inf off the mask and
    shifted so that its largest entry is 0: the bracket ``[−1, −(1/n)^{am1}]`` is then
    resolved to a few ulps of 1 whatever the magnitude of the scores)."""
    mx = jnp.max(xm, axis=-1, keepdims=True)
    mx = jnp.where(jnp.isfinite(mx), mx, 0.0)
    lo = mx - 1.0
    hi = mx - (1.0 / jnp.maximum(n, 1.0)) ** am1
    inv = 1.0 / am1

    def total(tau):
        return row_sum(jnp.maximum(xm - tau, 0.0) ** inv)

    def body(_, c):
        lo, hi = c
        mid = 0.5 * (lo + hi)
        big = total(mid) >= 1.0
        return jnp.where(big, mid, lo), jnp.where(big, hi, mid)

    lo, hi = lax.fori_loop(0, _bisect_iters(xm.dtype), body, (lo, hi))
    return lo


def _sparsemax_step(xm, tau):
    """Exact sparsemax threshold from the support ``xm > tau`` that bisection found."""
    supp = xm > tau
    k = jnp.maximum(jnp.sum(supp, axis=-1, keepdims=True), 1).astype(xm.dtype)
    return (row_sum(jnp.where(supp, xm, 0.0)) - 1.0) / k


def _threshold_solution(x, am1, mask, output, *, exact_step=False):
    """``output(xm, τ)`` with τ solving Σ_v [x_v − τ]_+^{1/am1} = 1 over the mask
    (x = (α−1)·z shifted so that its largest entry is 0, ``xm`` = x masked with −inf);
    ``output(xm, τ, am1)`` maps entries to their probabilities, gives 0 where ``xm ≤ τ``
    and normalises them (per-row values reach it as arguments: the full-row path runs on
    the failing rows only, see ``choose``).

    τ is solved on the :data:`KCAP` largest entries of a candidate window when every
    other entry lies at or below the resulting τ (then it is the row's τ: they carry no
    mass, and ``output`` runs on the window only and is scattered back); otherwise by
    bisection over the whole row. ``exact_step`` (sparsemax): recompute τ from the
    support the bisection identified.
    """
    xm = jnp.where(mask, x, -jnp.inf)

    def solve(xm, am1, n):
        tau = _bisect_threshold(xm, am1, n)
        return _sparsemax_step(xm, tau) if exact_step else tau

    def full_row(xm, am1):
        n = jnp.sum(xm > -jnp.inf, axis=-1, keepdims=True).astype(xm.dtype)
        return output(xm, solve(xm, am1, n), am1)

    # float32 only: XLA's fast top-k is float32, and a float32 copy of float64 values
    # could not certify the window exactly
    win = window(xm, fill=-jnp.inf) if xm.dtype == jnp.float32 else None
    if win is None:
        return full_row(xm, am1)
    (wx,) = win.values
    c = win.top(KCAP)
    n_c = jnp.sum(c.values > -jnp.inf, axis=-1, keepdims=True).astype(xm.dtype)
    tau_w = solve(c.values, am1, n_c)
    fits = (c.rest <= tau_w) & (n_c > 0)
    return choose(fits, win.scatter(output(wx, tau_w, am1)), full_row, xm, am1)


def _normalised(p):
    return p / jnp.where(row_sum(p) > 0, row_sum(p), 1.0)


@jax.custom_jvp
def sparsemax(z, mask):
    """``argmax_{q ∈ Δ, supp ⊆ mask} <q, z> − ½‖q‖²`` (Euclidean projection of z)."""
    x = jnp.where(mask, z - row_shift(z, mask), 0.0)
    return _threshold_solution(
        x, jnp.ones_like(z[..., :1]), mask, lambda xm, tau, _: _normalised(jnp.maximum(xm - tau, 0.0)), exact_step=True
    )


@sparsemax.defjvp
def _sparsemax_jvp(primals, tangents):
    z, mask = primals
    dz, _ = tangents
    q = sparsemax(z, mask)
    g = (q > 0).astype(q.dtype)
    dz = jnp.where(mask, dz, 0.0)
    dq = g * dz - g * jnp.sum(g * dz, axis=-1, keepdims=True) / jnp.sum(g, axis=-1, keepdims=True)
    return q, dq


@jax.custom_jvp
def entmax(z, alpha, mask):
    """``argmax_{q ∈ Δ, supp ⊆ mask} <q, z> + H_α(q)`` with the Tsallis α-entropy.

    ``q_v = [(α−1) z_v − τ]_+^{1/(α−1)}`` (Peters, Niculae & Martins, 2019).
    """
    am1 = _per_row(alpha, z) - 1.0

    def output(xm, tau, am1):
        return _normalised(jnp.maximum(xm - tau, 0.0) ** (1.0 / am1))

    # shifted first: (α − 1)·z overflows for α > 2 and z near the float maximum
    x = jnp.where(mask, z - row_shift(z, mask), 0.0) * am1
    return _threshold_solution(x, am1, mask, output)


@entmax.defjvp
def _entmax_jvp(primals, tangents):
    z, alpha, mask = primals
    dz, dalpha, _ = tangents
    q = entmax(z, alpha, mask)
    am1 = _per_row(alpha, z) - 1.0
    supp = q > 0
    safe_q = jnp.where(supp, q, 1.0)
    g = jnp.where(supp, safe_q ** (1.0 - am1), 0.0)  # q^{2−α}
    dz = jnp.where(mask, dz, 0.0)
    r = g * dz
    if not isinstance(dalpha, jax.custom_derivatives.SymbolicZero) and dalpha.dtype != jax.dtypes.float0:
        da = _per_row(dalpha, z)
        zs = jnp.where(mask, z, 0.0)
        # ∂q_v/∂α at fixed τ: (g_v z_v − q_v log q_v) / (α−1); then renormalise via τ.
        r = r + da * jnp.where(supp, g * zs - safe_q * jnp.log(safe_q), 0.0) / am1
    dq = r - g * jnp.sum(r, axis=-1, keepdims=True) / jnp.sum(g, axis=-1, keepdims=True)
    return q, dq


def _weight(term, like):
    return _per_row(term.weight, like)


def solve_closed_form(kind: str, terms, problem):
    """The optimum of ``<q, s> + Σ c_j φ_j(q)`` on the support, for a recognised ``kind``."""
    s, mask, ctx = problem.scores, problem.mask, problem.ctx
    if kind == "argmax":
        return argmax_onehot(s, mask)
    # shift-invariant: work on s − max s (≤ 0), so s / c cannot overflow
    shifted = jnp.where(mask, s - row_shift(s, mask), -jnp.inf)
    if kind == "gibbs":
        lam = sum((_weight(t, s) for t in terms), jnp.zeros_like(s[..., :1]))
        safe = jnp.where(lam > 0, lam, 1.0)
        # (s + Σ_j c_j log p_j) / λ with each c_j / λ ≤ 1: no term can overflow
        num = shifted / safe
        for t in terms:
            if isinstance(t, KL):
                c = _weight(t, s)
                logp = t.log_reference(ctx)
                num = num + jnp.where(c > 0, (c / safe) * jnp.where(mask, logp, 0.0), 0.0)
        q = masked_softmax(num, mask)
        return greedy_where(lam <= 0, q, s, mask)
    (term,) = terms
    c = _weight(term, s)
    safe = jnp.where(c > 0, c, 1.0)
    z = jnp.where(mask, shifted / safe, 0.0)
    if kind == "sparsemax":
        q = sparsemax(z, mask)
    elif kind == "entmax":
        q = entmax(z, term.alpha, mask)
    else:  # pragma: no cover - guarded by closed_form_kind
        raise ValueError(f"unknown closed form {kind!r}")
    return greedy_where(c <= 0, q, s, mask)


@pytree_dataclass
class ClosedForm(Solver):
    """Closed-form solution of a recognised objective (see ``closed_form``)."""

    def __call__(self, objective, problem):
        kind = closed_form_kind(objective.terms)
        if kind is None:
            names = ", ".join(type(t).__name__ for t in objective.terms)
            raise ValueError(
                f"solver: no closed form for the terms ({names}); use solver='auto' or 'exact'"
            )
        return solve_closed_form(kind, objective.terms, problem), {}
