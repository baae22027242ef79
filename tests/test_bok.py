"""The best_of_k preset: what it declares, what it means, and its errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import simplex_decode as sd
from simplex_decode import analysis


@jax.jit
def _probs(dec, logits):
    return dec.solve(logits).q


def _softmax(x):
    z = np.exp(x - x.max(-1, keepdims=True))
    return z / z.sum(-1, keepdims=True)


def test_declares_the_papers_objective():
    dec = sd.best_of_k(16, 0.1, 0.01)
    kl, cov = dec.objective.terms
    assert isinstance(kl, sd.KL) and kl.reference is None and float(kl.weight) == pytest.approx(0.1)
    assert isinstance(cov, sd.Coverage) and cov.k == 16 and cov.rule == "top_m" and cov.top_m == 8
    assert float(cov.weight) == pytest.approx(0.1 * 0.01)
    (temp,) = dec.objective.transforms
    assert isinstance(temp, sd.Temperature) and float(temp.t) == 1.0
    assert dec.objective.support == ()
    assert isinstance(dec.solver, sd.Exact)
    mirror = sd.best_of_k(16, 0.1, 0.01, solver="mirror", steps=7, step_size=0.5)
    assert isinstance(mirror.solver, sd.Mirror) and mirror.solver.steps == 7
    assert float(mirror.solver.step_size) == 0.5 and mirror.solver.tol is None
    pg = sd.best_of_k(16, 0.1, 0.01, solver="projected_gradient", steps=3, step_size=0.2)
    assert isinstance(pg.solver, sd.ProjectedGradient) and pg.solver.steps == 3
    rules = sd.best_of_k(4, 0.5, 0.1, support=(sd.TopK(50), sd.TopP(0.9))).objective.support
    assert [type(r) for r in rules] == [sd.TopK, sd.TopP]


def test_temperature_scales_s_but_not_p(x64):
    """beta = 0: q ∝ p·exp(s/λ) with p = softmax(logits), s = logits/t."""
    logits = np.random.default_rng(0).standard_normal((3, 30)) * 2
    lam, t = float(np.float32(0.4)), 0.5
    q = np.asarray(_probs(sd.best_of_k(4, lam, 0.0, temperature=t), logits))
    assert np.abs(q - _softmax(logits * (1.0 + 1.0 / (lam * t)))).max() <= 1e-12


def test_coverage_term_raises_the_coverage_probability(x64):
    """The point of Best-of-K: more beta, more probability that K draws contain all of the
    model's top-m tokens (measured by simplex_decode.analysis)."""
    logits = np.random.default_rng(1).standard_normal((4, 200)) * 3
    covs = []
    for beta in (0.0, 0.5, 2.0, 8.0):
        q = _probs(sd.best_of_k(16, 0.5, beta, top_m=4), logits)
        covs.append(np.asarray(analysis.coverage_probability(q, logits, m=4, k=16)))
    covs = np.stack(covs)
    assert np.all(np.diff(covs, axis=0) > 0)


def test_lam_zero_and_temperature_zero_are_greedy():
    logits = jnp.array([[0.5, 2.0, 2.0, -1.0], [3.0, 0.0, 1.0, 2.0]])
    greedy = np.eye(4)[[1, 0]]
    for solver in ("exact", "mirror"):
        assert np.array_equal(np.asarray(_probs(sd.best_of_k(2, 0.0, 0.3, top_m=2, solver=solver), logits)), greedy)
        assert np.array_equal(
            np.asarray(_probs(sd.best_of_k(2, 0.5, 0.3, top_m=2, temperature=0.0, solver=solver), logits)), greedy
        )


def test_sampling_per_row_parameters_and_jit():
    logits = jnp.asarray(np.random.default_rng(2).standard_normal((3, 50)), jnp.float32)
    dec = sd.best_of_k(8, jnp.array([0.1, 0.5, 2.0]), jnp.array([0.01, 0.1, 1.0]), top_m=4)
    key = jax.random.key(0)
    sample = jax.jit(lambda d, k, x: d.sample(k, x, num_samples=5))
    ids = sample(dec, key, logits)
    assert ids.shape == (3, 5) and ids.dtype == jnp.int32
    assert np.array_equal(np.asarray(ids), np.asarray(sample(dec, key, logits)))  # same key, same ids
    assert not np.array_equal(np.asarray(ids), np.asarray(sample(dec, jax.random.key(1), logits)))
    q = _probs(dec, logits)
    for i, (lam, beta) in enumerate([(0.1, 0.01), (0.5, 0.1), (2.0, 1.0)]):
        qi = _probs(sd.best_of_k(8, lam, beta, top_m=4), logits[i])
        assert float(jnp.abs(q[i] - qi).max()) <= 1e-6


def test_weights_rules_and_arrays(x64):
    logits = np.random.default_rng(3).standard_normal((2, 20))
    w_top = np.zeros((2, 20))
    np.put_along_axis(w_top, np.argsort(-logits, axis=-1, kind="stable")[:, :5], 1.0, axis=-1)
    a = _probs(sd.best_of_k(4, 0.5, 1.0, top_m=5), logits)
    b = _probs(sd.best_of_k(4, 0.5, 1.0, weights=w_top), logits)
    assert float(jnp.abs(a - b).max()) <= 1e-12
    c = _probs(sd.best_of_k(4, 0.5, 1.0, weights="model"), logits)
    d = _probs(sd.best_of_k(4, 0.5, 1.0, weights=_softmax(logits)), logits)
    assert float(jnp.abs(c - d).max()) <= 1e-12
    e = _probs(sd.best_of_k(4, 0.5, 1.0, weights=w_top[0]), logits[:1])  # (V,) broadcasts
    assert float(jnp.abs(e - a[:1]).max()) <= 1e-12


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(k=0), "`k`"),
        (dict(k=2.5), "`k`"),
        (dict(lam=-0.1), "`lam`"),
        (dict(lam=float("nan")), "`lam`"),
        (dict(beta=-1.0), "`beta`"),
        (dict(weights=np.array([1.0, -0.5, 0.0, 0.0])), "`weights`"),
        (dict(weights=2.0), "`weights`"),
        (dict(weights="uniform"), "`weights`"),
        (dict(top_m=0), "`top_m`"),
        (dict(steps=0), "`steps`"),
        (dict(step_size=0.0), "`step_size`"),
        (dict(step_size=-1.0), "`step_size`"),
        (dict(temperature=-1.0), "temperature"),
        (dict(solver="newton"), "solver"),
    ],
)
def test_bad_parameters_raise_naming_them(kwargs, match):
    args = dict(k=4, lam=0.5, beta=0.1)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        sd.best_of_k(**args)


def test_bad_weight_shapes_raise_at_call_time():
    logits = jnp.zeros((3, 4))
    with pytest.raises(ValueError, match="`weights`"):
        sd.best_of_k(2, 0.5, 0.1, weights=np.ones(5)).probs(logits)  # V mismatch
    with pytest.raises(ValueError, match="`weights`"):
        sd.best_of_k(2, 0.5, 0.1, weights=np.ones((2, 4))).probs(logits)  # batch mismatch
    with pytest.raises(ValueError, match="`top_m`"):
        sd.best_of_k(2, 0.5, 0.1, top_m=5).probs(logits)  # more than V


def test_top_m_weights_ties_and_large_vocabulary():
    """weights="top_m" picks the m most probable tokens, lowest ids first among ties, also
    on the chunked selection used for large V (checked against a stable numpy sort)."""
    rng = np.random.default_rng(4)
    logits = np.round(rng.standard_normal((3, 20_000)) * 2, 1).astype(np.float32)  # many ties
    logits[1, :5000] = -np.inf
    logits[2, 7] = logits[2, 19_999] = logits[2].max()  # a tie at the top, far apart
    obj = sd.best_of_k(4, 0.5, 1.0, top_m=8).objective
    ctx = obj.prepare(logits).ctx
    w = np.asarray(jax.jit(lambda c: obj.terms[1].coverage_weights(c))(ctx))
    idx = np.asarray(jax.jit(lambda c: obj.terms[1].active_indices(c))(ctx))
    for r in range(3):
        expected = np.argsort(-logits[r], kind="stable")[:8]
        assert np.array_equal(np.flatnonzero(w[r]), np.sort(expected))
        assert np.array_equal(idx[r], expected)
