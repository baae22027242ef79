"""Decoders none of the peers ship, declared in a few lines: each equals an independent float64
KKT solution written here from its definition, and the cvxpy optimum of its Objective."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import simplex_decode as sd
from simplex_decode import reference

_probs = jax.jit(lambda dec, x: dec.probs(x))


def _softmax(x):
    x = np.asarray(x, np.float64)
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _bisect_decreasing(f, lo, hi, iters):
    """Root of an elementwise decreasing ``f`` in ``[lo, hi]``, by bisection."""
    lo, hi = np.array(lo, np.float64), np.array(hi, np.float64)
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        pos = f(mid) > 0
        lo, hi = np.where(pos, mid, lo), np.where(pos, hi, mid)
    return 0.5 * (lo + hi)


def capped_ref(s, c):
    """Water-filling by sorting: cap the j largest at c and spread 1 − j·c over the rest in
    softmax proportions, for the smallest j at which no remaining token exceeds c."""
    s = np.asarray(s, np.float64)
    out = np.zeros(s.shape)
    for idx in np.ndindex(*s.shape[:-1]):
        row = s[idx]
        order = np.argsort(-row, kind="stable")
        e = np.exp(row[order] - row.max())
        cc = float(np.broadcast_to(c, s.shape[:-1])[idx])
        for j in range(row.size + 1):
            rest = (1 - j * cc) * e[j:] / e[j:].sum()
            if rest.size == 0 or rest[0] <= cc * (1 + 1e-12):
                q = np.concatenate([np.full(j, cc), rest])
                break
        out[idx + (order,)] = q
    return out


def js_ref(s, p, lam):
    """argmax <q,s> − lam·JS(q‖p): q_v = r_v p_v/(2 − r_v), r_v = exp(2(s_v − ν)/lam), Σq = 1
    (ν per row by bisection; Σ q → ∞ as ν ↓ max s − lam·log(2)/2)."""
    s, p = np.asarray(s, np.float64), np.asarray(p, np.float64)
    lam = np.asarray(lam, np.float64)[..., None] if np.ndim(lam) else lam

    def q_of(nu):
        r = np.exp(2 * (s - nu) / lam)
        return r * p / (2 - r)

    top = s.max(-1, keepdims=True)
    nu = _bisect_decreasing(lambda nu: q_of(nu).sum(-1, keepdims=True) - 1, top - lam * np.log(2) / 2,
                            top + 50 * lam, 300)
    return q_of(nu)


def tsallis_coverage_ref(s, w, alpha, lam, beta, k):
    """argmax <q,s> + lam·H_α(q) + lam·β·Σ w(1 − (1 − q)^K) by its KKT conditions: for each ν,
    q_v = 0 if f_v'(0) ≤ ν else the root of f_v'(q) = ν (bisection), and Σ q(ν) = 1 (bisection)."""
    s, w = np.asarray(s, np.float64), np.asarray(w, np.float64)

    def fprime(q):
        tsallis = (1 - alpha * q ** (alpha - 1)) / (alpha * (alpha - 1))
        return s + lam * tsallis + lam * beta * w * k * (1 - q) ** (k - 1)

    def q_of(nu):
        inner = _bisect_decreasing(lambda q: fprime(q) - nu, np.zeros_like(s), np.ones_like(s), 60)
        return np.where(fprime(np.zeros_like(s)) <= nu, 0.0, inner)

    span = 10 * (1 + lam + lam * beta * k)
    nu = _bisect_decreasing(lambda nu: q_of(nu).sum(-1, keepdims=True) - 1, s.min(-1, keepdims=True) - span,
                            s.max(-1, keepdims=True) + span, 60)
    return q_of(nu)


SHAPES = [(6,), (3, 40), (2, 2, 300)]


def _logits(shape, seed):
    return (np.random.default_rng(seed).standard_normal(shape) * 2).astype(np.float32)


def _tempered(logits, t):
    return (logits / np.float32(t)).astype(np.float64)


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_capped_equals_water_filling(shape):
    logits = _logits(shape, 1)
    V = shape[-1]
    for c in sorted({1.0 / V, 2.0 / V, 0.1, 0.3, 0.6, 1.0}):
        if c * V < 1:
            continue  # infeasible (tested below)
        q = np.asarray(_probs(sd.capped(c, temperature=0.8), logits), np.float64)
        assert np.abs(q - capped_ref(_tempered(logits, 0.8), c)).max() <= 1e-5, c
        assert q.max() <= c + 1e-6
    np.testing.assert_allclose(np.asarray(_probs(sd.capped(1.0 / V), logits)), 1.0 / V, atol=1e-6)


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_js_anchored_equals_its_kkt_solution(shape):
    logits = _logits(shape, 2)
    p = _softmax(logits)
    for lam in (0.2, 1.0, 5.0):
        q = np.asarray(_probs(sd.js_anchored(lam, temperature=0.8), logits), np.float64)
        assert np.abs(q - js_ref(_tempered(logits, 0.8), p, lam)).max() <= 1e-5, lam


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_tsallis_coverage_equals_its_kkt_solution(shape):
    logits = _logits(shape, 3)
    w = _softmax(logits)  # weights="model"
    # K is static (one compilation per value): K = 8 on one shape only.
    settings = [(1.5, 1.0, 0.5, 4), (1.3, 0.5, 1.0, 4), (2.0, 1.0, 0.2, 4)]
    if shape == (3, 40):
        settings.append((1.7, 0.7, 2.0, 8))
    for alpha, lam, beta, k in settings:
        dec = sd.tsallis_coverage(k, alpha=alpha, lam=lam, beta=beta, temperature=0.8)
        q = np.asarray(_probs(dec, logits), np.float64)
        ref = tsallis_coverage_ref(_tempered(logits, 0.8), w, alpha, lam, beta, k)
        assert np.abs(q - ref).max() <= 1e-5, (alpha, lam, beta, k)


DECODERS = {
    "capped": lambda: sd.capped(0.25, temperature=0.7),
    "capped_top_k": lambda: sd.chain(sd.capped(0.3), sd.TopK(6)),
    "js_anchored": lambda: sd.js_anchored(0.7, temperature=0.9),
    "js_anchored_ref": lambda: sd.js_anchored(
        1.5, reference=np.random.default_rng(0).dirichlet(np.ones(20)).astype(np.float32)
    ),
    "tsallis_coverage": lambda: sd.tsallis_coverage(4, alpha=1.5, lam=1.0, beta=0.5),
    "tsallis_coverage_top_m": lambda: sd.tsallis_coverage(6, alpha=1.7, lam=0.5, beta=2.0, weights="top_m", top_m=5),
}


@pytest.mark.parametrize("name", sorted(DECODERS))
def test_equals_cvxpy_optimum(name):
    pytest.importorskip("cvxpy")
    dec = DECODERS[name]()
    logits = _logits((3, 20), 4)
    q = np.asarray(_probs(dec, logits), np.float64)
    assert np.abs(q - reference.solve(dec.objective, logits)).max() <= 1e-5


def test_limits():
    logits = _logits((3, 40), 5)
    p = _softmax(logits)
    # capped with c ≥ 1 is the softmax; JS with a huge weight is p, with a tiny one the argmax
    np.testing.assert_allclose(np.asarray(_probs(sd.capped(1.0), logits)), p, atol=1e-6)
    np.testing.assert_allclose(np.asarray(_probs(sd.js_anchored(1e6), logits)), p, atol=1e-5)
    q = np.asarray(_probs(sd.js_anchored(1e-3), logits))
    np.testing.assert_allclose(q.max(-1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(q.argmax(-1), logits.argmax(-1))
    # beta = 0 is α-entmax of s/lam
    q = np.asarray(_probs(sd.tsallis_coverage(4, alpha=1.5, lam=0.5, beta=0.0), logits))
    np.testing.assert_allclose(q, np.asarray(_probs(sd.entmax(1.5, temperature=0.5), logits)), atol=1e-5)


def test_per_row_parameters_under_one_compilation():
    logits = _logits((3, 40), 6)
    traces = []

    @jax.jit
    def run(dec, x):
        traces.append(1)
        return dec.probs(x)

    c = np.array([0.05, 0.2, 0.5], np.float32)
    q = np.asarray(run(sd.capped(c), logits), np.float64)
    for i in range(3):
        assert np.abs(q[i] - capped_ref(logits[i], c[i])).max() <= 1e-5
    run(sd.capped(c[::-1].copy()), logits)
    lam = np.array([0.3, 1.0, 3.0], np.float32)
    q = np.asarray(jax.jit(lambda d, x: d.probs(x))(sd.js_anchored(lam), logits), np.float64)
    assert np.abs(q - js_ref(logits, _softmax(logits), lam)).max() <= 1e-5
    assert len(traces) == 1


def _kl(a, b):
    return np.sum(np.where(a > 0, a * np.log(np.where(a > 0, a, 1) / b), 0))


def test_jensen_shannon_term_facts():
    """value / grad of the term against numpy, and concavity along random chords."""
    rng = np.random.default_rng(7)
    V = 9
    p = rng.dirichlet(np.ones(V))
    p[2] = 0.0
    p /= p.sum()
    term = sd.JensenShannon(1.0, reference=p.astype(np.float32))
    with jax.enable_x64(True):
        ctx = sd.Context(logits=jnp.zeros(V, jnp.float64), log_model=None)
        for _ in range(3):
            q = rng.dirichlet(np.ones(V))
            m = (q + p) / 2
            js = 0.5 * _kl(q, m) + 0.5 * _kl(p, m)
            assert float(term.value(jnp.asarray(q), ctx)) == pytest.approx(-js, abs=1e-6)
            g = np.asarray(term.grad(jnp.asarray(q), ctx))
            np.testing.assert_allclose(g, -0.5 * np.log(2 * q / (q + p)), atol=1e-6)
            q2 = rng.dirichlet(np.ones(V))
            mid = float(term.value(jnp.asarray((q + q2) / 2), ctx))
            assert mid >= 0.5 * (float(term.value(jnp.asarray(q), ctx)) + float(term.value(jnp.asarray(q2), ctx))) - 1e-12
    # a token the reference never produces gets no mass
    q = np.asarray(_probs(sd.js_anchored(1.0, reference=p.astype(np.float32)), np.zeros(V, np.float32)))
    assert q[2] == 0.0 and q.sum() == pytest.approx(1.0, abs=1e-6)


def test_infeasible_cap_is_an_error():
    with pytest.raises(ValueError, match=r"Cap: .*c·\|support\| >= 1"):
        sd.capped(0.1).probs(_logits((6,), 1))
    with pytest.raises(ValueError, match=r"Cap: .*c·\|support\| >= 1"):
        sd.chain(sd.capped(0.2), sd.TopK(4)).probs(_logits((2, 10), 1))


def test_bad_parameters_are_named():
    cases = [
        # presets name their own arguments (these asserted the components' names before)
        (lambda: sd.capped(0.0), "capped: `c`"),
        (lambda: sd.js_anchored(-1.0), "js_anchored: `lam`"),
        (lambda: sd.tsallis_coverage(0), "tsallis_coverage: `k`"),
        (lambda: sd.tsallis_coverage(4, alpha=1.0), "tsallis_coverage: `alpha`"),
        (lambda: sd.tsallis_coverage(4, beta=-0.5), "tsallis_coverage: `beta`"),
        (lambda: sd.Cap(0.0), "Cap: `c`"),
        (lambda: sd.JensenShannon(-1.0), "JensenShannon: `weight`"),
        (lambda: sd.JensenShannon(1.0, reference=np.array([0.5, 0.6])), "JensenShannon: `reference` must sum to 1"),
    ]
    for make, msg in cases:
        with pytest.raises(ValueError) as e:
            make()
        assert msg in str(e.value), (msg, str(e.value))
