"""The exact solver's candidate path (rows without entropic terms, sparse solutions).

Without entropic terms or bounds, ``q_v = 0`` exactly when ``f_v'(0) ≤ ν``; the solver
solves the problem on the coordinates with the largest ``f_v'(0)`` and certifies the
result (every other coordinate has ``f_v'(0) ≤ ν``), else runs the full row. The path is
used only for long rows, so these tests run at V in the tens of thousands. Each case
records which path ran and checks that it exercises the path it was built for: peaked
rows (a few large logits, as language models produce) are certified; flat rows fall back.
Results are compared with the full path and with an independent float64 numpy solution
of the KKT conditions (bisection on ν, and per coordinate on q).
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import simplex_decode as sd
from simplex_decode.solvers import exact

from .conftest import record_choices, retrace, synthetic_logits

V = 20000


def _fresh_jit(m):
    """A new jitted solver, so that the monkeypatched module globals are traced."""
    m.setattr(exact, "_solve_jit", jax.jit(functools.partial(exact._solve), static_argnums=0))


@pytest.fixture
def paths(monkeypatch):
    """Record, for each candidate decision, whether every row was certified."""
    taken = record_choices(monkeypatch, exact)
    _fresh_jit(monkeypatch)
    return taken


def _full_path(monkeypatch, fn, *args):
    """``fn(*args)`` with the candidate path switched off."""
    with retrace(monkeypatch) as m:
        m.setattr(exact, "_MIN_LENGTH", 1 << 62)
        _fresh_jit(m)
        return jax.tree.map(np.asarray, fn(*args))


def _logits(kind, B, n, seed):
    """:func:`synthetic_logits` (peaked or flat); peaked rows lose their largest logit to
    the mask (-inf), a token that would otherwise carry mass."""
    x = synthetic_logits(kind, B, n, seed)
    if kind == "peaked":
        x[0, np.argmax(x[0])] = -np.inf
    return x


# name: (terms, numpy description [(kind, weight, parameter)]); weights="model" coverage
# reads softmax(logits), computed by the reference itself.
OBJECTIVES = {
    "tsallis_coverage": (
        sd.tsallis_coverage(4, alpha=1.5, lam=1.0, beta=0.5).objective.terms,
        [("tsallis", 1.0, 1.5), ("coverage", 0.5, (4, "model"))],
    ),
    "tsallis+l2": ((sd.Tsallis(1.3, weight=0.7), sd.SquaredL2(0.4)), [("tsallis", 0.7, 1.3), ("l2", 0.4, None)]),
    "tsallis": ((sd.Tsallis(1.5, weight=0.8),), [("tsallis", 0.8, 1.5)]),
    "sparsemax+coverage_top_m": (
        (sd.Tsallis(2.0, weight=1.0), sd.Coverage(3, "top_m", weight=0.6, top_m=5)),
        [("tsallis", 1.0, 2.0), ("coverage", 0.6, (3, "top_m5"))],
    ),
}


def _fprime_np(desc, s, w, q):
    """``f_v'(q)`` in float64 (``q`` broadcasts against ``s``)."""
    g = s + 0.0 * q
    for kind, c, p in desc:
        if kind == "tsallis":
            g = g + c * (1.0 - p * q ** (p - 1.0)) / (p * (p - 1.0))
        elif kind == "l2":
            g = g - c * q
        else:
            k = p[0]
            g = g + c * w[p[1]] * k * (1.0 - q) ** (k - 1)
    return g


def _kkt_np(desc, x):
    """The optimum in float64: ``q_v(ν) = (f_v')^{-1}(ν)`` clipped to [0, 1] by bisection
    per coordinate, ``Σ q(ν) = 1`` by bisection on ν."""
    x = np.asarray(x, np.float64)
    out = np.zeros_like(x)
    for b in range(x.shape[0]):
        mask = np.isfinite(x[b])
        s = x[b, mask]
        p = np.exp(s - s.max())
        p /= p.sum()
        top = np.zeros_like(p)
        top[np.argsort(-p, kind="stable")[:5]] = 1.0
        w = {"model": p, "top_m5": top}

        def q_of(nu, s=s, w=w):
            lo, hi = np.zeros_like(s), np.ones_like(s)
            for _ in range(64):
                mid = 0.5 * (lo + hi)
                above = _fprime_np(desc, s, w, mid) > nu
                lo, hi = np.where(above, mid, lo), np.where(above, hi, mid)
            q = 0.5 * (lo + hi)
            q = np.where(_fprime_np(desc, s, w, 0.0) <= nu, 0.0, q)
            return np.where(_fprime_np(desc, s, w, 1.0) >= nu, 1.0, q)

        nlo = np.max(_fprime_np(desc, s, w, 1.0))  # Σ q ≥ 1
        nhi = np.max(_fprime_np(desc, s, w, 0.0))  # Σ q = 0
        for _ in range(80):
            mid = 0.5 * (nlo + nhi)
            if q_of(mid).sum() >= 1.0:
                nlo = mid
            else:
                nhi = mid
        q = q_of(0.5 * (nlo + nhi))
        assert abs(q.sum() - 1.0) < 1e-12
        out[b, mask] = q
    return out


def _solve(terms, x):
    sol = sd.Decoder(sd.Objective(terms=terms), solver="exact").solve(x)
    return sol.q, sol.stats["converged"]


CASES = [(name, "peaked", True) for name in OBJECTIVES] + [
    ("tsallis_coverage", "flat", False),
    ("tsallis+l2", "flat", False),
]


@pytest.mark.parametrize("name, kind, fits", CASES)
def test_candidates_equal_full_path_and_numpy(paths, monkeypatch, name, kind, fits):
    seed = sorted(OBJECTIVES).index(name)
    x = jnp.asarray(_logits(kind, 3, V, seed))
    terms = OBJECTIVES[name][0]
    q, converged = jax.tree.map(np.asarray, _solve(terms, x))
    assert paths == [fits]
    assert converged.all()
    assert np.all(q[~np.isfinite(np.asarray(x))] == 0.0)
    support = (q > 0).sum(-1)
    if fits:
        assert support.max() <= exact.CANDIDATES < V
    else:
        assert support.min() > exact.CANDIDATES
    ref = _kkt_np(OBJECTIVES[name][1], x)
    np.testing.assert_allclose(q.sum(-1), 1.0, atol=1e-6)
    assert np.abs(q - ref).max() <= 5e-7, np.abs(q - ref).max()
    if fits:  # no token outside the support carries mass (the full path rounds at the edge)
        assert np.all((q > 0) <= (ref > 1e-9))
    q_full, conv_full = _full_path(monkeypatch, _solve, terms, x)
    assert paths == [fits]  # the full path records no decision
    assert conv_full.all()
    assert np.abs(q - q_full).max() <= 5e-7, np.abs(q - q_full).max()


def test_candidates_in_float64(x64, paths, monkeypatch):
    x = jnp.asarray(_logits("peaked", 3, V, 7), jnp.float64)
    terms = OBJECTIVES["tsallis_coverage"][0]
    sol = sd.Decoder(sd.Objective(terms=terms), solver=sd.Exact(certificate=True)).solve(x)
    q, converged = np.asarray(sol.q), np.asarray(sol.stats["converged"])
    assert paths == [True] and converged.all()
    # the full-vocabulary certificates agree
    assert float(sol.stats["kkt_residual"].max()) <= 1e-12
    gap = np.asarray(sol.stats["duality_gap"])
    assert np.all(np.abs(gap) <= 1e-10), gap
    ref = _kkt_np(OBJECTIVES["tsallis_coverage"][1], x)
    assert np.abs(q - ref).max() <= 1e-12, np.abs(q - ref).max()
    q_full, _ = _full_path(monkeypatch, _solve, terms, x)
    assert np.abs(q - q_full).max() <= 1e-13


def test_one_row_outside_the_certificate_sends_the_batch_to_the_full_path(paths, monkeypatch):
    x = np.concatenate([_logits("peaked", 2, V, 3), _logits("flat", 1, V, 4)])
    terms = OBJECTIVES["tsallis+l2"][0]
    q, converged = jax.tree.map(np.asarray, _solve(terms, jnp.asarray(x)))
    assert paths == [False] and converged.all()
    q_peaked, _ = jax.tree.map(np.asarray, _solve(terms, jnp.asarray(x[:2])))
    assert paths == [False, True]
    assert np.abs(q[:2] - q_peaked).max() <= 1e-6


def test_candidate_path_gradients(x64, paths):
    """Forward mode = central finite differences along a random direction, reverse mode
    its transpose, on rows certified by the candidate path (coverage weights depend on
    the logits too)."""
    n = 2 * exact._MIN_LENGTH
    x0 = jnp.asarray(_logits("peaked", 2, n, 11), jnp.float64)
    x0 = jnp.where(jnp.isfinite(x0), x0, -30.0)  # finite differences need finite logits
    rng = np.random.default_rng(12)
    t = jnp.asarray(rng.standard_normal(x0.shape))
    ct = jnp.asarray(rng.standard_normal(x0.shape))

    def f(x):
        return sd.tsallis_coverage(4, alpha=1.5, lam=0.7, beta=0.5, weights="model").probs(x)

    h = 1e-6
    fj = jax.jit(f)
    y, jv = jax.jit(lambda x, t: jax.jvp(f, (x,), (t,)))(x0, t)
    fd = (fj(x0 + h * t) - fj(x0 - h * t)) / (2 * h)
    assert paths and all(paths), paths
    assert 2 <= int((np.asarray(y) > 0).sum(-1).min())  # several tokens move
    scale = float(jnp.abs(fd).max())
    assert scale > 1e-3
    assert float(jnp.abs(jv - fd).max()) <= 1e-9 + 1e-6 * scale, (float(jnp.abs(jv - fd).max()), scale)
    (g,) = jax.jit(lambda x, ct: jax.vjp(f, x)[1](ct))(x0, ct)
    lhs, rhs = float(jnp.vdot(g, t)), float(jnp.vdot(ct, jv))
    assert abs(lhs - rhs) <= 1e-10 * (1.0 + abs(rhs))


def test_per_row_weights_and_greedy_rows(paths, monkeypatch):
    """Per-row weights under one compilation; a row whose weights are all 0 is the argmax."""
    x = jnp.asarray(_logits("peaked", 3, V, 13))
    lam = jnp.asarray([0.5, 0.0, 2.0])
    terms = (sd.Tsallis(1.5, weight=lam), sd.Coverage(4, "model", weight=0.5 * lam))
    q, converged = jax.tree.map(np.asarray, _solve(terms, x))
    assert paths == [True] and converged.all()
    assert q[1, np.argmax(np.asarray(x[1]))] == 1.0 and q[1].sum() == 1.0
    for b in (0, 2):
        ref = _kkt_np([("tsallis", float(lam[b]), 1.5), ("coverage", 0.5 * float(lam[b]), (4, "model"))], x[b : b + 1])
        assert np.abs(q[b] - ref[0]).max() <= 5e-7
    q_full, _ = _full_path(monkeypatch, _solve, terms, x)
    assert np.abs(q - q_full).max() <= 5e-7


def test_per_row_fallback_gathers_per_row_weights(paths):
    """B = 8, per-row weights, one flat row: the row that fails the certificate is solved
    in a sub-batch (its weight gathered with it) and every row equals, bit for bit, the
    same row solved alone with its own weight."""
    x = _logits("peaked", 8, V, 21)
    x[5] = synthetic_logits("flat", 1, V, 22)[0]
    lam = np.linspace(0.4, 1.1, 8).astype(np.float32)

    def terms(w):
        return (sd.Tsallis(1.3, weight=jnp.asarray(w)), sd.SquaredL2(0.4))

    q, converged = jax.tree.map(np.asarray, _solve(terms(lam), jnp.asarray(x)))
    assert paths == [False] and converged.all()
    for b in range(8):
        q_b, _ = _solve(terms(lam[b : b + 1]), jnp.asarray(x[b : b + 1]))
        np.testing.assert_array_equal(q[b], np.asarray(q_b)[0])
