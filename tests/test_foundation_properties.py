"""Hypothesis properties shared by every closed-form decoder."""

import jax
import jax.numpy as jnp
import numpy as np
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import simplex_decode as sd

from . import _numpy_ref as npr

PRESETS = {
    "temperature": lambda: sd.temperature(0.8),
    "top_k": lambda: sd.top_k(3, temperature=1.3),
    "top_p": lambda: sd.top_p(0.7),
    "min_p": lambda: sd.min_p(0.1, temperature=0.9),
    "sparsemax": lambda: sd.sparsemax(0.7),
    "entmax": lambda: sd.entmax(1.5),
    "kl_anchored": lambda: sd.kl_anchored(0.3, temperature=0.8),
    "greedy": lambda: sd.greedy(),
}

logits_st = hnp.arrays(
    np.float32,
    st.tuples(st.sampled_from([1, 3]), st.sampled_from([3, 17, 40])),
    elements=st.floats(-8, 8, width=32),
)

_jitted = {name: jax.jit(lambda logits, dec: dec.probs(logits)) for name in PRESETS}


_run_jit = jax.jit(lambda dec, logits: dec.probs(logits))


def _run(dec, logits):
    return np.asarray(_run_jit(dec, logits))


def _probs(name, logits):
    return np.asarray(_jitted[name](logits, PRESETS[name]()), np.float64)


def kkt_residual(dec, logits, q):
    """max over the support of |g_v − ν| where q_v > 0 and (g_v − ν)_+ where q_v = 0."""
    problem = dec.objective.prepare(jnp.asarray(logits))
    g = np.asarray(problem.scores, np.float64)
    ctx = problem.ctx
    qj = jnp.asarray(q, jnp.float32)
    for term in dec.objective.terms:
        gt = np.asarray(term.grad(jnp.where(qj > 0, qj, 1.0), ctx), np.float64)
        g = g + float(term.weight) * np.where(q > 0, gt, 0.0)
    mask = np.asarray(problem.mask)
    pos = (q > 1e-6) & mask
    nu = (q * np.where(pos, g, 0)).sum(-1, keepdims=True) / np.where(pos, q, 0).sum(-1, keepdims=True)
    on = np.where(pos, np.abs(g - nu), 0).max(-1)
    # coordinates at zero: only meaningful for terms with finite derivative at 0
    return on


@given(logits_st, st.sampled_from(sorted(PRESETS)))
def test_on_simplex_and_support(logits, name):
    q = _probs(name, logits)
    assert np.all(np.isfinite(q)) and np.all(q >= 0)
    np.testing.assert_allclose(q.sum(-1), 1.0, atol=1e-5)
    mask = np.asarray(PRESETS[name]().objective.prepare(jnp.asarray(logits)).mask)
    assert np.all(q[~mask] == 0)


@given(logits_st, st.floats(-50, 50), st.sampled_from(sorted(PRESETS)))
def test_shift_invariance(logits, c, name):
    q1 = _probs(name, logits)
    q2 = _probs(name, (logits + np.float32(c)).astype(np.float32))
    np.testing.assert_allclose(q1, q2, atol=2e-5)


@given(logits_st, st.sampled_from(["temperature", "top_k", "top_p", "kl_anchored", "sparsemax", "entmax"]))
def test_kkt_residual_small(logits, name):
    dec = PRESETS[name]()
    q = _probs(name, logits)
    assert np.max(kkt_residual(dec, logits, q)) <= 2e-3 * max(1.0, np.abs(logits).max())


@given(logits_st)
def test_limits(logits):
    V = logits.shape[-1]
    soft = npr.softmax(logits.astype(np.float64))
    for dec in (sd.top_k(V), sd.top_p(1.0), sd.min_p(0.0)):
        np.testing.assert_allclose(_run(dec, logits), soft, atol=1e-6)
    # λ → 0: the regularised optimum tends to the argmax (when it is unique).
    srt = np.sort(logits, -1)
    gap = srt[..., -1] - srt[..., -2]
    rows = gap > 0.05
    greedy = _run(sd.greedy(), logits)
    for dec in (sd.temperature(1e-3), sd.sparsemax(1e-3), sd.entmax(1.5, 1e-3), sd.kl_anchored(1e-4)):
        np.testing.assert_allclose(_run(dec, logits)[rows], greedy[rows], atol=1e-4)
    np.testing.assert_array_equal(_run(sd.temperature(0.0), logits), greedy)
