"""Exact solver for separable objectives: one multiplier per row, safeguarded Newton.

For a separable objective ``f(q) = Σ_v f_v(q_v)`` with

.. math::

    f_v(q) = s_v q + \\sum_j c_j \\varphi_{j,v}(q), \\qquad
    f_v'(q) = s_v + \\sum_j c_j \\varphi_{j,v}'(q) \\ \\text{decreasing},

the KKT conditions of ``max f(q)`` over ``{q ∈ Δ, supp q ⊆ S, q_v ≤ u_v}`` say that there is
one scalar ``ν`` per row with

.. math::

    q_v(\\nu) = \\mathrm{clip}\\big((f_v')^{-1}(\\nu),\\ 0,\\ u_v\\big), \\qquad
    \\sum_{v \\in S} q_v(\\nu) = 1 .

``Σ_v q_v(ν)`` is non-increasing in ``ν``; the solver finds its root with a safeguarded
Newton iteration (Newton on ``log Σ q`` when an entropic term is present — exact in one
step for softmax-like objectives — else on ``Σ q − 1``; bisection of a bracket that always
contains the root whenever a Newton step would leave it). For every ``ν`` the inversion
``(f_v')^{-1}(ν)`` is

* closed form when every non-entropic term vanishes on ``v`` (entropic terms — Shannon
  entropy and ``−KL(q‖p)``, ``φ'(q) = ℓ_v − log q − 1`` — give
  ``q_v = exp((s_v + Σ c_j ℓ_{j,v} − ν)/Σ_j c_j − 1)``) or when the one non-entropic term
  declares ``coord_grad_inverse``;
* otherwise a vectorised safeguarded Newton per coordinate (on ``log q`` when entropic
  terms are present, on ``q`` otherwise), warm-started from the previous outer iterate,
  with a bracket derived from ``φ'(0)`` and ``φ'(u)``.

Structure is exploited: when the only non-entropic term declares ``active_indices`` (e.g.
:class:`~simplex_decode.terms.Coverage` with ``weights="top_m"``: ``w_v = 0`` outside the
top ``m`` tokens) and there are entropic terms and no bounds, every other coordinate has
the closed form above and their total is one log-sum-exp computed once, so the Newton
iteration touches ``M`` coordinates instead of ``V`` — one pass over the vocabulary to set
up and one to write ``q``.

Sparsity is exploited too: in rows without entropic terms or bounds, ``q_v(ν) = 0``
exactly when ``f_v'(0) ≤ ν``. The solver takes the :data:`CANDIDATES` coordinates with the
largest ``f_v'(0)`` (among the :data:`BLOCKS` blocks of :data:`BLOCK` entries with the
largest maxima: one pass and two small top-k's), solves ``Σ_{v∈C} q_v(ν) = 1`` on them for
``ν_C`` and certifies the result: if every other coordinate has ``f_v'(0) ≤ ν_C`` (the
largest of them is known from the selection), it has ``q_v(ν_C) = 0`` and ``(ν_C, q)``
solves the whole row — exactly, not approximately. If any row of the batch fails the
certificate (a flat row whose support is larger), the batch runs the full path
(``lax.cond``; under ``vmap`` both run). Long rows only (``V ≥`` ``2·BLOCKS·BLOCK``).

Derivatives come from the implicit function theorem on the KKT system (``custom_jvp``;
reverse mode by transposition), never from unrolling the loops: on the free coordinates
(``0 < q_v < u_v``) with ``h_v = −f_v''(q_v) > 0`` and ``dg_v`` the change of ``f_v'(q_v)``
at fixed ``q``, ``dq_v = (dg_v − dν)/h_v``, ``dq_v = du_v`` on capped coordinates, 0 on
zeros, and ``dν`` makes ``Σ dq = 0``.

Scope: every row must be strictly concave on each support coordinate that can carry mass
(an entropic, squared-L2 or Tsallis weight > 0, or a coverage weight with ``K ≥ 2`` and
``w_v > 0``), or have every weight 0 (then ``q`` is the argmax of ``s``, lowest id on
ties). Rows outside this contract are reported by ``stats["converged"] = False``.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from .._pytree import param, per_row, pytree_dataclass, require
from .._window import choose, take_blocks
from ..terms import gather_coord_data
from .base import Solver
from .closed_form import argmax_onehot, greedy_where

__all__ = ["Exact", "best_response", "kkt_residual", "duality_gap"]


# --------------------------------------------------------------------------------------
# The objective split into its per-coordinate parts
# --------------------------------------------------------------------------------------


class _Parts(NamedTuple):
    """``f_v'(q) − m = z_v − A(log q + 1) + R_v(q)``, ``q ≤ u``, on the mask."""

    A: Any  # total entropic weight, (..., 1)
    z: Any  # s + Σ c ℓ − m on the mask, 0 elsewhere, (..., V)
    m: Any  # the shift (max of s + Σ c ℓ over the mask), (..., 1)
    rest: tuple  # ((term, c (..., 1), data), ...) for the non-entropic, non-bound terms
    u: Any  # upper bound, broadcastable to (..., V), ≤ 1
    mask: Any
    has_bound: bool
    all_zero: Any  # rows whose every weight is 0 (..., 1)


def _finite_or_zero(x, keep):
    return jnp.where(keep & jnp.isfinite(x), x, 0.0)


def _parts(s, mask, terms, ctx, *, safe_weights=True, rest_data=None) -> _Parts:
    """Split the terms. ``safe_weights`` guards ``0·inf`` in the primal; the implicit
    derivative uses plain products (so d/dc at c = 0 is kept). ``rest_data``: the
    non-entropic terms' per-coordinate data when already known (the fast path gathers it
    at the active ids instead of computing it on the whole vocabulary)."""
    dtype = s.dtype
    batch = s.shape[:-1]
    A = jnp.zeros(batch + (1,), dtype)
    L = jnp.zeros(s.shape, dtype)
    u = jnp.ones(batch + (1,), dtype)
    rest = []
    nonzero = jnp.zeros(batch + (1,), bool)
    has_bound = False
    for t in terms:
        if t.bound:
            u = jnp.minimum(u, jnp.asarray(t.upper_bound(ctx), dtype))
            has_bound = True
            continue
        c = per_row(t.weight, batch, dtype)
        nonzero = nonzero | (c > 0)
        if t.entropic:
            data = t.coord_data(ctx)
            lb = _finite_or_zero(jnp.asarray(data["log_base"], dtype), mask)
            A = A + c
            L = L + (jnp.where(c > 0, c * lb, 0.0) if safe_weights else c * lb)
        else:
            data = t.coord_data(ctx) if rest_data is None else rest_data[len(rest)]
            rest.append((t, c, data))
    sl = jnp.where(mask, s + L, -jnp.inf)
    m = jnp.max(sl, axis=-1, keepdims=True)
    m = jnp.where(jnp.isfinite(m), m, 0.0)
    m = lax.stop_gradient(m)
    z = jnp.where(mask, sl - m, 0.0)
    return _Parts(A, z, m, tuple(rest), u, mask, has_bound, ~nonzero)


def _rest_eval(rest, datas, q, *, safe_weights=True, hess=True):
    """``R(q) = Σ c_j φ_j'(q)`` and ``R'(q) = Σ c_j φ_j''(q)`` over the non-entropic terms."""
    R = jnp.zeros_like(q)
    Rp = jnp.zeros_like(q)
    for (t, c, _), d in zip(rest, datas, strict=True):
        g = t.coord_grad(q, d)
        R = R + (jnp.where(c > 0, c * g, 0.0) if safe_weights else c * g)
        if hess:
            h = t.coord_hess(q, d)
            Rp = Rp + (jnp.where(c > 0, c * h, 0.0) if safe_weights else c * h)
    return R, Rp


def _scatter_set(base, idx, vals, mode=None):
    """``base[..., idx] = vals`` row by row (no Python loop over rows); ``mode="drop"``
    skips ids ``≥ V``."""
    V = base.shape[-1]
    M = idx.shape[-1]
    n = int(np.prod(base.shape[:-1], dtype=np.int64))
    rows = jnp.arange(n)[:, None]
    out = base.reshape(n, V).at[rows, idx.reshape(n, M)].set(vals.reshape(n, M), mode=mode)
    return out.reshape(base.shape)


# --------------------------------------------------------------------------------------
# Best response q(ν): per-coordinate inversion of f'
# --------------------------------------------------------------------------------------


class _Coords(NamedTuple):
    """One set of coordinates (all of them, or the gathered active ones)."""

    z: Any
    datas: tuple
    u: Any
    mask: Any
    R0: Any  # R(0)
    Ru: Any  # R(u)


def _make_coords(P: _Parts, z, datas, u, mask) -> _Coords:
    zeros = jnp.zeros_like(z)
    R0, _ = _rest_eval(P.rest, datas, zeros, hess=False)
    Ru, _ = _rest_eval(P.rest, datas, zeros + u, hess=False)
    return _Coords(z, datas, u, mask, R0, Ru)


def _closed_inverse(P: _Parts, C: _Coords, nu):
    """``q(ν)`` in closed form, or None when the inversion needs Newton."""
    if not P.rest:
        # Entropic terms only (rows with A = 0 here are all-zero rows, handled as argmax).
        Asafe = jnp.where(P.A > 0, P.A, 1.0)
        t = (C.z - nu) / Asafe - 1.0
        return jnp.where(C.mask, jnp.minimum(jnp.exp(t), C.u), 0.0), None
    if len(P.rest) == 1:
        t, c, _ = P.rest[0]
        d = C.datas[0]
        csafe = jnp.where(c > 0, c, 1.0)
        y = (nu - C.z) / csafe
        inv = t.coord_grad_inverse(y, d)
        if inv is not None:
            return inv, "rows without entropic terms"
    return None, None


def best_response(P: _Parts, C: _Coords, nu, x0=None, *, inner_steps=32):
    """``q_v(ν) = clip((f_v')^{-1}(ν), 0, u_v)`` for every coordinate of ``C``.

    Returns ``(q, dq/dν, x, n_inner)``; ``x`` is the Newton variable (``log q`` in rows
    with entropic terms, ``q`` otherwise), to warm-start the next call.
    """
    dtype = C.z.dtype
    eps = jnp.finfo(dtype).eps
    log_space = P.A > 0
    Asafe = jnp.where(log_space, P.A, 1.0)
    logu = jnp.log(C.u)
    zmn = C.z - nu

    closed, closed_rows = _closed_inverse(P, C, nu)
    if closed is not None and closed_rows is None:
        # Entropic only: q = min(u, exp((z − ν)/A − 1)); dq/dν = −q/A on the free ones.
        q = closed
        free = C.mask & (q < C.u)
        dq = jnp.where(free, -q / Asafe, 0.0)
        x = jnp.log(jnp.where(q > 0, q, 1.0))
        return q, dq, x, jnp.zeros((), jnp.int32)

    # Brackets: f' − ν is decreasing in q; R(u) ≤ R(q) ≤ R(0).
    tlo = jnp.minimum((zmn + C.Ru) / Asafe - 1.0, logu)
    thi = jnp.minimum((zmn + C.R0) / Asafe - 1.0, logu)
    capped_log = (zmn + C.Ru) / Asafe - 1.0 >= logu
    h0 = zmn + C.R0  # f'(0) − ν in rows without entropic terms
    hu = zmn + C.Ru  # f'(u) − ν
    zero_q = h0 <= 0
    capped_q = (hu >= 0) & ~zero_q
    lo = jnp.where(log_space, tlo, 0.0)
    hi = jnp.where(log_space, thi, jnp.broadcast_to(C.u, zmn.shape))
    fixed = ~C.mask | jnp.where(log_space, capped_log, zero_q | capped_q)
    x_fixed = jnp.where(log_space, logu, jnp.where(zero_q, 0.0, C.u))

    if closed is not None:
        # One non-entropic term with a closed-form inverse: exact in rows without A.
        q_closed = jnp.clip(closed, 0.0, C.u)
        x_closed = q_closed
    else:
        x_closed = None

    # Start (or restart) at the right end of the bracket, where H ≤ 0: H is concave in
    # log q for small q (entropy + coverage), so Newton from the right is monotone there.
    if x0 is None:
        x0 = hi
    x0 = jnp.where(jnp.isfinite(x0), x0, hi)
    x = jnp.clip(x0, lo, hi)
    if x_closed is not None:
        x = jnp.where(log_space, x, x_closed)
    x = jnp.where(fixed, x_fixed, x)
    datas = C.datas

    def evaluate(x):
        q = jnp.where(log_space, jnp.exp(x), x)
        R, Rp = _rest_eval(P.rest, datas, q)
        linear = jnp.where(log_space, P.A * (x + 1.0), 0.0)
        H = zmn + R - linear
        Hp = jnp.where(log_space, -P.A + Rp * q, Rp)
        noise = 2 * eps * (jnp.abs(zmn) + jnp.abs(R) + jnp.abs(linear))
        return H, Hp, noise

    settled0 = fixed
    if x_closed is not None:
        settled0 = settled0 | ~log_space

    def cond(c):
        i, *_, settled = c
        return (i < inner_steps) & ~jnp.all(settled)

    def body(c):
        # Safeguarded Newton (Numerical Recipes' rtsafe), vectorised; settled coordinates
        # are frozen, so a coordinate's result does not depend on the others.
        i, x, lo, hi, dx, dx_old, settled = c
        H, Hp, noise = evaluate(x)
        lo = jnp.where(H > 0, x, lo)
        hi = jnp.where(H < 0, x, hi)
        newton = H / Hp
        xn = x - newton
        slow = jnp.abs(2.0 * H) > jnp.abs(dx_old * Hp)
        bisect = ~((xn >= lo) & (xn <= hi)) | slow  # also True for NaN
        xn = jnp.where(bisect, 0.5 * (lo + hi), xn)
        step = jnp.abs(xn - x)
        done = (jnp.abs(H) <= noise) | (step <= 4 * eps * jnp.maximum(jnp.abs(x), 1.0))
        x = jnp.where(settled | (jnp.abs(H) <= noise), x, xn)
        return i + 1, x, lo, hi, jnp.where(settled, dx, step), dx, settled | done

    width = hi - lo
    init = (jnp.zeros((), jnp.int32), x, lo, hi, width, width, settled0)
    n, x, *_ = lax.while_loop(cond, body, init)
    H, Hp, noise = evaluate(x)
    q = jnp.where(C.mask, jnp.where(log_space, jnp.exp(x), x), 0.0)
    q_fixed = jnp.broadcast_to(jnp.where(log_space, C.u, x_fixed), q.shape)
    q = jnp.where(fixed & C.mask, q_fixed, q)
    q = jnp.minimum(q, C.u)
    # dq/dν; at a cap, the one-sided derivative from the right when ν sits exactly at the
    # kink f'(u) (the coordinate leaves its cap as ν grows): what a Newton step from
    # Σq > 1 needs, e.g. from the initial ν = max_v f'_v(1).
    at_kink = ~fixed | (H <= 4 * noise)
    moving = C.mask & (q > 0) & (Hp < 0) & at_kink
    dq = jnp.where(moving, jnp.where(log_space, q, 1.0) / jnp.where(moving, Hp, -1.0), 0.0)
    return q, dq, x, n


# --------------------------------------------------------------------------------------
# The outer iteration on ν
# --------------------------------------------------------------------------------------


class _Config(NamedTuple):
    max_steps: int
    tol: float | None
    inner_steps: int


def _tol(cfg, dtype):
    return cfg.tol if cfg.tol is not None else float(8 * jnp.finfo(dtype).eps)


def _fast_coords(terms, ctx, V):
    """``(ids, data)`` of the only non-entropic term, when the fast path applies."""
    if any(t.bound for t in terms) or not any(t.entropic for t in terms):
        return None
    rest = [t for t in terms if not t.entropic]
    if len(rest) != 1:
        return None
    coords = rest[0].active_coords(ctx)
    if coords is None or 2 * coords[0].shape[-1] > V:
        return None
    return coords


def _newton_on_nu(P: _Parts, cfg: _Config, evaluate, nu0, lo, hi, x0, q0):
    """Safeguarded Newton on ν; ``evaluate(nu, x) -> (q, S, dS, x, n_inner)``."""
    dtype = nu0.dtype
    eps = float(jnp.finfo(dtype).eps)
    tol = _tol(cfg, dtype)
    log_space = P.A > 0
    scale = jnp.maximum(P.A, 0.0)
    done0 = P.all_zero | ~jnp.any(P.mask, axis=-1, keepdims=True)

    def cond(c):
        k, *_, done = c
        return (k < cfg.max_steps) & ~jnp.all(done)

    def body(c):
        k, nu, lo, hi, x, q, S_keep, it, n_inner, done = c
        q_n, S, dS, x_n, ni = evaluate(nu, x)
        hit = jnp.abs(S - 1.0) <= tol
        lo = jnp.where(S > 1.0, nu, lo)
        hi = jnp.where(S < 1.0, nu, hi)
        # Newton on log Σq in rows with entropic terms (exact for entropy-only rows), on
        # Σq − 1 otherwise; dS uses one-sided derivatives at the bounds.
        use_log = log_space & (S > 0)
        Ssafe = jnp.where(S > 0, S, 1.0)
        step = jnp.where(use_log, Ssafe * jnp.log(Ssafe), S - 1.0) / jnp.where(dS < 0, dS, -1.0)
        nu_n = nu - jnp.where(dS < 0, step, jnp.nan)
        ok = (nu_n >= lo) & (nu_n <= hi)
        ulps = 4 * eps * jnp.maximum(jnp.abs(nu), scale) + jnp.finfo(dtype).tiny
        # ν known to a few ulps: the Newton step, or the bracket, is that small.
        stall = (ok & (jnp.abs(nu_n - nu) <= ulps)) | (hi - lo <= ulps)
        nu_n = jnp.where(ok, nu_n, 0.5 * (lo + hi))
        conv = hit | stall
        q = jnp.where(done, q, q_n)
        x = jnp.where(done, x, x_n)
        S_keep = jnp.where(done, S_keep, S)
        it = it + (~done).astype(jnp.int32)
        nu = jnp.where(done | conv, nu, nu_n)
        return k + 1, nu, lo, hi, x, q, S_keep, it, n_inner + ni, done | conv

    ones = jnp.ones_like(nu0)
    init = (
        jnp.zeros((), jnp.int32), nu0, lo, hi, x0, q0, ones,
        jnp.zeros(nu0.shape, jnp.int32), jnp.zeros((), jnp.int32), done0,
    )
    _, nu, _, _, _, q, S, it, n_inner, done = lax.while_loop(cond, body, init)
    slack = max(tol, float(np.sqrt(eps)))
    converged = done & ((jnp.abs(S - 1.0) <= slack) | done0)
    return nu, q, S, it, n_inner, converged


def _solve_full(cfg: _Config, s, mask, terms, ctx):
    V = s.shape[-1]
    dtype = s.dtype
    fast = _fast_coords(terms, ctx, V)
    idx = None if fast is None else fast[0]
    P = _parts(s, mask, terms, ctx, rest_data=None if fast is None else (fast[1],))
    n = jnp.maximum(jnp.sum(mask, axis=-1, keepdims=True), 1).astype(dtype)
    log_space = P.A > 0
    Asafe = jnp.where(log_space, P.A, 1.0)

    def fprime(C, q):
        """f'(q) − m for the coordinates of C (q > 0 in log-space rows)."""
        qs = jnp.where(q > 0, q, 1.0)
        R, _ = _rest_eval(P.rest, C.datas, q + jnp.zeros_like(C.z), hess=False)
        return C.z - jnp.where(log_space, P.A * (jnp.log(qs) + 1.0), 0.0) + R

    def lse(a, keep):
        a = jnp.where(keep, a, -jnp.inf)
        mx = jnp.max(a, axis=-1, keepdims=True)
        mxs = jnp.where(jnp.isfinite(mx), mx, 0.0)
        return mxs + jnp.log(jnp.sum(jnp.where(keep, jnp.exp(a - mxs), 0.0), axis=-1, keepdims=True))

    def masked_max(a, keep):
        return jnp.max(jnp.where(keep, a, -jnp.inf), axis=-1, keepdims=True)

    def masked_min(a, keep):
        return jnp.min(jnp.where(keep, a, jnp.inf), axis=-1, keepdims=True)

    if idx is None:
        datas = tuple(d for (_, _, d) in P.rest)
        C = _make_coords(P, P.z, datas, P.u, mask)
        u_full = jnp.broadcast_to(P.u, s.shape)
        hi = masked_max(fprime(C, 1.0 / n), mask)
        lo = jnp.where(
            jnp.all(u_full >= 1.0, axis=-1, keepdims=True),
            masked_max(fprime(C, jnp.ones_like(P.z)), mask),
            masked_min(fprime(C, u_full), mask),
        )
        nu_gibbs = P.A * (lse(P.z / Asafe, mask) - 1.0)

        def evaluate(nu, x):
            q, dq, x, ni = best_response(P, C, nu, x, inner_steps=cfg.inner_steps)
            return q, jnp.sum(q, -1, keepdims=True), jnp.sum(dq, -1, keepdims=True), x, ni

        x0 = jnp.full(s.shape, jnp.nan, dtype)
        q0 = jnp.zeros(s.shape, dtype)
    else:
        M = idx.shape[-1]
        act = _scatter_set(jnp.zeros(s.shape, bool), idx, jnp.ones(idx.shape, bool))
        inactive = mask & ~act
        gz = jnp.take_along_axis(P.z, idx, axis=-1)
        gmask = jnp.take_along_axis(mask, idx, axis=-1)
        datas = tuple(d for (_, _, d) in P.rest)  # already at the active ids
        C = _make_coords(P, gz, datas, P.u, gmask)
        lse_in = lse(P.z / Asafe, inactive)  # Σ_inactive exp(z/A), once
        has_in = jnp.any(inactive, axis=-1, keepdims=True)
        ln = jnp.log(n)
        hi = jnp.maximum(
            masked_max(P.z, inactive) + P.A * (ln - 1.0), masked_max(fprime(C, 1.0 / n), gmask)
        )
        lo = jnp.maximum(masked_max(P.z, inactive) - P.A, masked_max(fprime(C, jnp.ones_like(gz)), gmask))
        nu_gibbs = P.A * (jnp.logaddexp(lse_in, lse(gz / Asafe, gmask)) - 1.0)

        def evaluate(nu, x):
            q, dq, x, ni = best_response(P, C, nu, x, inner_steps=cfg.inner_steps)
            s_in = jnp.where(log_space & has_in, jnp.exp(lse_in - nu / Asafe - 1.0), 0.0)
            S = s_in + jnp.sum(q, -1, keepdims=True)
            dS = -s_in / Asafe + jnp.sum(dq, -1, keepdims=True)
            return q, S, dS, x, ni

        x0 = jnp.full(idx.shape, jnp.nan, dtype)
        q0 = jnp.zeros(idx.shape, dtype)
        del M

    nu0 = jnp.where(log_space, jnp.clip(nu_gibbs, lo, hi), lo)
    nu, q, S, it, n_inner, converged = _newton_on_nu(P, cfg, evaluate, nu0, lo, hi, x0, q0)

    if idx is None:
        u_full = jnp.broadcast_to(P.u, s.shape)
        at_cap = mask & (q >= u_full) & (u_full < 1.0)
        s_cap = jnp.sum(jnp.where(at_cap, q, 0.0), -1, keepdims=True)
        s_free = jnp.sum(jnp.where(at_cap, 0.0, q), -1, keepdims=True)
        scale = jnp.where(s_free > 0, (1.0 - s_cap) / jnp.where(s_free > 0, s_free, 1.0), 1.0)
        q = jnp.where(at_cap, q, q * scale)
    else:
        q_in = jnp.where(inactive & log_space, jnp.exp((P.z - nu) / Asafe - 1.0), 0.0)
        q = _scatter_set(q_in, idx, q)
        q = q / jnp.where(S > 0, S, 1.0)
        # Rows without entropic weight cannot sum the inactive block in closed form.
        converged = converged & (log_space | ~has_in | P.all_zero)

    greedy = argmax_onehot(s, mask)
    q = jnp.where(P.all_zero, greedy, q)
    q = jnp.where(mask, q, 0.0)
    return q, (nu + P.m)[..., 0], it[..., 0], jnp.broadcast_to(n_inner, it.shape[:-1]), converged[..., 0]


# --------------------------------------------------------------------------------------
# Rows without entropic terms: iterate on a candidate set
# --------------------------------------------------------------------------------------


CANDIDATES = 256  # static size of the candidate set (the largest f_v'(0) per row)
BLOCK = 64  # the candidates are chosen among the BLOCKS blocks of BLOCK entries ...
BLOCKS = 64  # ... with the largest maxima (one pass and two small top-k's, not a top-k of V)
_MIN_LENGTH = 2 * BLOCKS * BLOCK  # shorter rows go straight to the full path


def _candidates(g, C: int):
    """``(ids, outside)``: the token ids of the ``C + 1`` largest ``g`` found in the
    ``BLOCKS`` blocks with the largest maxima (largest first; padding ids are ``≥ V``), and
    an upper bound on ``g`` at every id other than the first ``C`` (exactly the largest
    such ``g`` when those blocks hold the ``C + 1`` largest entries).

    Only ``lax.top_k``'s indices are used, in one piece: XLA CPU keeps its fast top-k
    custom call for that pattern and falls back to a full sort otherwise.
    """
    V = g.shape[-1]
    batch = g.shape[:-1]
    nb = -(-V // BLOCK)
    if nb * BLOCK > V:
        g = jnp.pad(g, [(0, 0)] * len(batch) + [(0, nb * BLOCK - V)], constant_values=-jnp.inf)
    gb = g.reshape(batch + (nb, BLOCK))
    top = lax.top_k(jnp.max(gb, axis=-1), BLOCKS + 1)[1]
    win = take_blocks(gb, top)  # (..., BLOCKS + 1, BLOCK)
    # Every block outside the first BLOCKS has its maximum ≤ that of block BLOCKS + 1.
    out_blocks = jnp.max(win[..., BLOCKS, :], axis=-1, keepdims=True)
    vals = jnp.where((jnp.arange(BLOCKS + 1) < BLOCKS)[:, None], win, -jnp.inf).reshape(batch + (-1,))
    pos = lax.top_k(vals, C + 1)[1]
    out_win = jnp.take_along_axis(vals, pos, axis=-1)[..., C:]
    gid = (top[..., None] * BLOCK + jnp.arange(BLOCK, dtype=top.dtype)).reshape(batch + (-1,))
    return jnp.take_along_axis(gid, pos, axis=-1), jnp.maximum(out_blocks, out_win)


def _solve_candidates(cfg: _Config, s, mask, terms, ctx):
    """The exact solution computed on the ``C`` coordinates with the largest ``f_v'(0)``,
    with its certificate, or None when the path does not apply (statically).

    Without entropic terms or bounds, ``q_v(ν) = 0`` exactly when ``f_v'(0) ≤ ν``. Solve
    ``Σ_{v∈C} q_v(ν) = 1`` on the candidates ``C`` for ``ν_C``; if every other coordinate
    has ``f_v'(0) ≤ ν_C`` (checked against the bound ``outside`` of :func:`_candidates`),
    then ``q_v(ν_C) = 0`` there, ``Σ_v q_v(ν_C) = 1`` over the whole row and ``(ν_C, q)``
    is the exact solution of the full problem. Returns ``(outputs, ok)``, ``ok`` per row
    (rows whose weights are all 0 are the argmax of ``s`` on either path).
    """
    V = s.shape[-1]
    C_n = CANDIDATES
    if V < _MIN_LENGTH or not terms or any(t.entropic or t.bound or t.dense for t in terms):
        return None
    dtype = s.dtype
    P = _parts(s, mask, terms, ctx)
    # f_v'(0) − m over the whole row (per-row constant parts broadcast, not materialised).
    zero = jnp.zeros(s.shape[:-1] + (1,), dtype)
    R0 = zero
    for t, c, d in P.rest:
        R0 = R0 + jnp.where(c > 0, c * t.coord_grad(zero, d), 0.0)
    g0 = jnp.where(mask, P.z + R0, -jnp.inf)
    # C + 1 ids, the last one kept out of the candidates by the mask (slicing the ids
    # would turn XLA's top-k into a sort); ids ≥ V (padding) are masked out too.
    ids, outside = _candidates(g0, C_n)
    idx = jnp.minimum(ids, V - 1)
    gz = jnp.take_along_axis(P.z, idx, axis=-1)
    gmask = jnp.take_along_axis(mask, idx, axis=-1) & (ids < V) & (jnp.arange(C_n + 1) < C_n)
    datas = tuple(gather_coord_data(d, idx, V) for (_, _, d) in P.rest)
    Pc = P._replace(z=gz, mask=gmask)
    Cc = _make_coords(Pc, gz, datas, P.u, gmask)
    n = jnp.maximum(jnp.sum(gmask, axis=-1, keepdims=True), 1).astype(dtype)

    def fprime(q):
        R, _ = _rest_eval(P.rest, datas, q + jnp.zeros_like(gz), hess=False)
        return gz + R

    def masked_max(a):
        return jnp.max(jnp.where(gmask, a, -jnp.inf), axis=-1, keepdims=True)

    hi = masked_max(fprime(1.0 / n))
    lo = masked_max(fprime(jnp.ones_like(gz)))

    def evaluate(nu, x):
        q, dq, x, ni = best_response(Pc, Cc, nu, x, inner_steps=cfg.inner_steps)
        return q, jnp.sum(q, -1, keepdims=True), jnp.sum(dq, -1, keepdims=True), x, ni

    x0 = jnp.full(idx.shape, jnp.nan, dtype)
    q0 = jnp.zeros(idx.shape, dtype)
    nu, q, S, it, n_inner, converged = _newton_on_nu(Pc, cfg, evaluate, lo, lo, hi, x0, q0)
    S = jnp.sum(q, -1, keepdims=True)
    q = q * jnp.where(S > 0, 1.0 / jnp.where(S > 0, S, 1.0), 1.0)
    q = _scatter_set(jnp.zeros(s.shape, dtype), ids, q, mode="drop")
    # q is 0 off the mask already (masked candidates are not free); the argmax only runs
    # when some row needs it.
    q = greedy_where(P.all_zero, q, s, mask)
    ok = P.all_zero | (converged & (outside <= nu))
    outs = (q, (nu + P.m)[..., 0], it[..., 0], jnp.broadcast_to(n_inner, it.shape[:-1]), converged[..., 0])
    return outs, ok


def _solve_impl(cfg: _Config, s, mask, terms, ctx):
    cand = _solve_candidates(cfg, s, mask, terms, ctx)
    if cand is None:
        return _solve_full(cfg, s, mask, terms, ctx)
    fast, ok = cand
    return choose(ok, fast, functools.partial(_solve_full, cfg), s, mask, terms, ctx)


# --------------------------------------------------------------------------------------
# Implicit differentiation
# --------------------------------------------------------------------------------------


def _fprime_at(q, free, s, mask, terms, ctx):
    """``(f_v'(q_v), −f_v''(q_v), u_v)`` at fixed ``q`` as functions of the inputs (free
    coordinates only are meaningful; others are evaluated at an interior point)."""
    P = _parts(s, mask, terms, ctx, safe_weights=False)
    qe = jnp.where(free, q, 0.5)
    datas = tuple(d for (_, _, d) in P.rest)
    R, Rp = _rest_eval(P.rest, datas, qe, safe_weights=False)
    g = P.z + P.m - P.A * (jnp.log(qe) + 1.0) + R
    h = P.A / qe - Rp
    return g, h, jnp.broadcast_to(P.u, s.shape)


def _zero_tangent(x):
    x = jnp.asarray(x)
    if jnp.issubdtype(x.dtype, jnp.floating):
        return jnp.zeros_like(x)
    return np.zeros(x.shape, dtype=jax.dtypes.float0)


@functools.partial(jax.custom_jvp, nondiff_argnums=(0,))
def _solve(cfg, s, mask, terms, ctx):
    return _solve_impl(cfg, s, mask, terms, ctx)


# Jitted so that eager calls compile once per objective structure (inside a caller's jit
# it is inlined); the loops would otherwise be re-traced and re-compiled on every call.
_solve_jit = jax.jit(_solve, static_argnums=0)


@_solve.defjvp
def _solve_jvp(cfg, primals, tangents):
    s, mask, terms, ctx = primals
    ds, _, dterms, dctx = tangents
    out = _solve(cfg, s, mask, terms, ctx)
    q = out[0]
    u = jnp.broadcast_to(_parts(s, mask, terms, ctx).u, s.shape)
    at_cap = mask & (q >= u) & (u < 1.0)
    free = mask & (q > 0) & ~at_cap

    def f(s_, terms_, ctx_):
        g, _, u_ = _fprime_at(q, free, s_, mask, terms_, ctx_)
        return g, u_

    (_, _), (dg, du) = jax.jvp(f, (s, terms, ctx), (ds, dterms, dctx))
    _, h, _ = _fprime_at(q, free, s, mask, terms, ctx)
    inv_h = jnp.where(free & (h > 0), 1.0 / jnp.where(free & (h > 0), h, 1.0), 0.0)
    dg = jnp.where(free, dg, 0.0)
    du = jnp.where(at_cap, du, 0.0)
    tot = jnp.sum(inv_h, -1, keepdims=True)
    dnu = (jnp.sum(inv_h * dg, -1, keepdims=True) + jnp.sum(du, -1, keepdims=True)) / jnp.where(
        tot > 0, tot, 1.0
    )
    dq = jnp.where(free, inv_h * (dg - dnu), du)
    tangent_out = (dq,) + tuple(_zero_tangent(o) for o in out[1:])
    return out, tangent_out


# --------------------------------------------------------------------------------------
# Certificates (shared with simplex_decode.analysis)
# --------------------------------------------------------------------------------------


def _dense(objective_terms, problem, inner_steps):
    P = _parts(problem.scores, problem.mask, objective_terms, problem.ctx)
    datas = tuple(d for (_, _, d) in P.rest)
    return P, _make_coords(P, P.z, datas, P.u, problem.mask)


def kkt_residual(terms, problem, q, *, inner_steps=64):
    """KKT residual of ``q`` for the separable objective with ``terms`` on ``problem``.

    ``ν̂`` is the mean of ``f_v'(q_v)`` over the free coordinates (``0 < q_v < u_v``)
    weighted by ``1/(−f_v''(q_v))`` (the ``ν`` that best explains ``q`` to first order;
    the ``q``-weighted mean for entropy-like terms); the residual is ``‖q − q(ν̂)‖₁ + |Σq − 1| + mass off the support``,
    where ``q(ν)`` is the coordinate-wise best response (exact per coordinate). It is 0
    exactly at the optimum and measures, in probability units, how far ``q`` is from
    satisfying stationarity, complementarity and feasibility. Rows whose weights are all 0
    (linear objective) use the argmax instead of ``q(ν̂)``.
    """
    P, C = _dense(terms, problem, inner_steps)
    q = jnp.asarray(q, P.z.dtype)
    u = jnp.broadcast_to(P.u, q.shape)
    pos = problem.mask & (q > 0)
    free = pos & (q < u)
    qs = jnp.where(pos, q, 1.0)
    R, Rp = _rest_eval(P.rest, C.datas, qs)
    g = P.z - jnp.where(P.A > 0, P.A * (jnp.log(qs) + 1.0), 0.0) + R
    # Weights dq_v/dg_v = 1/(−f_v''(q_v)): the least-squares ν for q ≈ q(ν) to first order.
    h = jnp.where(P.A > 0, P.A / qs, 0.0) - Rp
    wgt = jnp.where(free & (h > 0), 1.0 / jnp.where(h > 0, h, 1.0), 0.0)
    wsum = jnp.sum(wgt, -1, keepdims=True)
    nu = jnp.sum(wgt * g, -1, keepdims=True) / jnp.where(wsum > 0, wsum, 1.0)
    # No free coordinate (q at its bounds, e.g. one-hot): the largest ν that keeps every
    # coordinate with q_v = u_v at its bound.
    nu_cap = jnp.min(jnp.where(pos & ~free, g, jnp.inf), -1, keepdims=True)
    nu = jnp.where(wsum > 0, nu, jnp.where(jnp.isfinite(nu_cap), nu_cap, 0.0))
    br, _, _, _ = best_response(P, C, nu, inner_steps=inner_steps)
    br = jnp.where(P.all_zero, argmax_onehot(problem.scores, problem.mask), br)
    on = jnp.where(problem.mask, q, 0.0)
    off = jnp.sum(jnp.abs(jnp.where(problem.mask, 0.0, q)), -1)
    return jnp.sum(jnp.abs(on - br), -1) + jnp.abs(jnp.sum(q, -1) - 1.0) + off


def duality_gap(objective, problem, q, nu, *, inner_steps=64):
    """``D(ν) − f(q) ≥ 0`` with the Lagrange dual ``D(ν) = ν + Σ_v max_{0≤x≤u_v} f_v(x) − νx``.

    ``q`` must be feasible; ``nu`` is the (unshifted) multiplier. Exact arithmetic gives 0 at
    the optimum; in float32 the two values cancel to about ``eps·|f|``.
    """
    P, C = _dense(objective.terms, problem, inner_steps)
    nu_s = jnp.asarray(nu, P.z.dtype)[..., None] - P.m
    br, _, _, _ = best_response(P, C, nu_s, inner_steps=inner_steps)
    dual = nu * (1.0 - jnp.sum(br, -1)) + objective.value(br, problem)
    return jnp.where(P.all_zero[..., 0], 0.0, dual - objective.value(q, problem))


_kkt_jit = jax.jit(kkt_residual, static_argnames=("inner_steps",))
_gap_jit = jax.jit(duality_gap, static_argnames=("inner_steps",))


# --------------------------------------------------------------------------------------
# The solver object
# --------------------------------------------------------------------------------------


@pytree_dataclass
class Exact(Solver):
    """Exact optimum of any separable objective (see the module docstring for the method).

    Args:
      max_steps: bound on the outer (ν) iterations; typical rows need 2–6.
      tol: stop when ``|Σ_v q_v(ν) − 1| ≤ tol`` (default ``8·eps`` of the dtype) or when
        the Newton step on ``ν`` is below a few ulps. ``q`` is then rescaled on its free
        coordinates so that it sums to 1 exactly.
      inner_steps: bound on the per-coordinate Newton steps per outer iteration.
      certificate: also return ``stats["kkt_residual"]`` (see :func:`kkt_residual`) and
        ``stats["duality_gap"]`` per row.

    ``stats``: ``iterations`` (outer iterations per row), ``inner_iterations`` (per-coordinate
    Newton steps, summed over the outer iterations; shared by the batch), ``converged``.

    Example:
      >>> import jax.numpy as jnp, simplex_decode as sd
      >>> obj = sd.Objective(terms=(sd.KL(0.5), sd.Coverage(4, "top_m", weight=0.5, top_m=2)))
      >>> sol = sd.Decoder(obj, solver=sd.Exact(certificate=True)).solve(jnp.array([2.0, 1.0, 0.0, -1.0]))
      >>> bool(sol.stats["kkt_residual"] < 1e-5), round(float(sol.q.sum()), 6)
      (True, 1.0)
    """

    max_steps: int = param(64, lo=1, integer=True, static=True, doc="bound on the outer iterations")
    tol: Any = param(None, lo=0.0, lo_open=True, static=True, optional=True, doc="None: 8·eps of the dtype")
    inner_steps: int = param(32, lo=1, integer=True, static=True, doc="bound on the inner Newton steps")
    certificate: bool = param(False, boolean=True, static=True, doc="also return the KKT residual and gap")

    def __call__(self, objective, problem):
        if not objective.separable:
            names = ", ".join(type(t).__name__ for t in objective.terms if not t.separable)
            raise ValueError(f"Exact: needs separable terms; ({names}) are not — use solver='mirror'")
        cfg = _Config(self.max_steps, self.tol, self.inner_steps)
        terms = tuple(objective.terms)
        if any(t.bound for t in terms):
            P = _parts(problem.scores, problem.mask, terms, problem.ctx)
            cap_total = jnp.sum(jnp.where(problem.mask, jnp.broadcast_to(P.u, problem.mask.shape), 0.0), -1)
            empty = ~jnp.any(problem.mask, -1)
            require(
                empty | (cap_total >= 1.0 - 1e-6),
                "Cap: the bounds must leave a feasible distribution (c·|support| >= 1 in every row)",
                cap_total,
            )
        q, nu, it, inner, converged = _solve_jit(cfg, problem.scores, problem.mask, terms, problem.ctx)
        stats = {"iterations": it, "inner_iterations": inner, "converged": converged}
        if self.certificate:
            qs = lax.stop_gradient(q)
            steps = max(self.inner_steps, 64)
            stats["kkt_residual"] = _kkt_jit(terms, problem, qs, inner_steps=steps)
            stats["duality_gap"] = _gap_jit(objective, problem, qs, lax.stop_gradient(nu), inner_steps=steps)
        return q, stats
