"""simplex_decode.analysis against direct numpy computations."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import simplex_decode as sd
from simplex_decode import analysis


def _softmax(x):
    z = np.exp(x - x.max(-1, keepdims=True))
    return z / z.sum(-1, keepdims=True)


def _rows(shape, seed, scale=2.0):
    rng = np.random.default_rng(seed)
    logits = rng.standard_normal(shape) * scale
    q = rng.dirichlet(np.full(shape[-1], 0.3), size=shape[:-1])
    q[..., :2] = 0.0  # exact zeros
    return logits, q / q.sum(-1, keepdims=True)


def test_entropy_support_kl(x64):
    logits, q = _rows((2, 3, 20), seed=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        xlogx = np.where(q > 0, q * np.log(q), 0.0)
        logp = np.log(_softmax(logits))
    assert np.allclose(analysis.entropy(q), -xlogx.sum(-1), atol=1e-13)
    assert np.array_equal(analysis.support_size(q), (q > 0).sum(-1))
    assert np.array_equal(analysis.support_size(q, tol=0.05), (q > 0.05).sum(-1))
    assert np.allclose(analysis.kl_to_model(q, logits), (xlogx - np.where(q > 0, q * logp, 0.0)).sum(-1), atol=1e-12)
    banned = logits.copy()
    banned[0, 0, 5] = -np.inf
    kl = np.asarray(analysis.kl_to_model(q, banned))
    assert kl[0, 0] == (np.inf if q[0, 0, 5] > 0 else kl[0, 0]) and np.isfinite(kl[1]).all()


def _coverage_inclusion_exclusion(q, top, k):
    """Σ_{S⊆M} (−1)^{|S|} (1 − q(S))^k with q normalised (numpy, float64)."""
    q = q / q.sum()
    total = 0.0
    for r in range(len(top) + 1):
        for S in itertools.combinations(top, r):
            total += (-1) ** r * (1.0 - q[list(S)].sum()) ** k
    return total


@pytest.mark.parametrize("m,k", [(1, 1), (3, 2), (5, 16), (8, 64), (4, 200)])
def test_coverage_probability_equals_inclusion_exclusion(x64, m, k):
    logits, q = _rows((3, 15), seed=m * k)
    q[2] = _softmax(logits[2] / 3.0)  # a flat q: coverage is likely
    cov = np.asarray(analysis.coverage_probability(q, logits, m=m, k=k))
    for r in range(3):
        top = list(np.argsort(-logits[r], kind="stable")[:m])
        assert abs(cov[r] - _coverage_inclusion_exclusion(q[r], top, k)) <= 1e-12
    # p instead of logits, and an unnormalised q: the same numbers.
    cov_p = np.asarray(analysis.coverage_probability(3.0 * q, m=m, k=k, p=_softmax(logits)))
    assert np.allclose(cov_p, cov, atol=1e-12)


def test_coverage_probability_float32_and_edge_cases():
    logits, q = _rows((4, 30), seed=1)
    q = _softmax(logits / 2.0)
    with jax.enable_x64(True):
        ref = np.asarray(analysis.coverage_probability(q, logits, m=8, k=64))
    got = np.asarray(analysis.coverage_probability(jnp.asarray(q, jnp.float32), jnp.asarray(logits, jnp.float32),
                                                   m=8, k=64))
    assert got.dtype == np.float32 and np.abs(got - ref).max() <= 1e-5  # no cancellation
    one_hot = np.eye(30)[np.argmax(logits, -1)]
    assert np.allclose(analysis.coverage_probability(one_hot, logits, m=1, k=1), 1.0)
    assert np.allclose(analysis.coverage_probability(one_hot, logits, m=2, k=50), 0.0)
    with pytest.raises(ValueError, match="`m`"):
        analysis.coverage_probability(q, logits, m=31, k=2)
    with pytest.raises(ValueError, match="`k`"):
        analysis.coverage_probability(q, logits, m=2, k=0)
    with pytest.raises(ValueError, match="exactly one"):
        analysis.coverage_probability(q, m=2, k=2)


def _tau_numpy(q, x):
    """Root of E_{softmax(b x)}[x] = <q, x> in b by brentq (scipy), τ = 1/b."""
    from scipy.optimize import brentq

    target = q @ x

    def d(logb):
        w = _softmax(np.exp(logb) * x)
        return w @ x - target

    return 1.0 / np.exp(brentq(d, -20.0, 20.0, xtol=1e-14, rtol=1e-14))


def test_effective_temperature(x64):
    pytest.importorskip("scipy")
    logits, noise = _rows((3, 40), seed=2)
    q = 0.7 * _softmax(logits / 0.6) + 0.3 * noise  # not a tempered softmax, but close to one
    tau = np.asarray(analysis.effective_temperature(q, logits))
    for r in range(3):
        assert abs(tau[r] - _tau_numpy(q[r], logits[r])) <= 1e-9 * tau[r]
    # q = softmax(logits / τ0) is recovered exactly; extremes go to 0 and ∞.
    for t0 in (0.05, 0.7, 3.0):
        assert abs(float(analysis.effective_temperature(_softmax(logits / t0), logits)[0]) - t0) <= 1e-9 * t0
    one_hot = np.eye(40)[np.argmax(logits, -1)]
    assert np.all(np.asarray(analysis.effective_temperature(one_hot, logits)) == 0.0)
    assert np.all(np.isinf(np.asarray(analysis.effective_temperature(np.full((3, 40), 1 / 40), logits))))


def test_effective_temperature_of_best_of_k_mirror_iterates(x64):
    """With beta = 0 the paper's J = 5 steps at lam = 0.1, eta = 1 are a temperature change:
    the effective temperature is 1/(1 + c_5) exactly (c_5 ≈ 4.1: τ ≈ 0.196)."""
    logits = np.random.default_rng(3).standard_normal((2, 100)) * 2
    lam = float(np.float32(0.1))
    q = sd.best_of_k(8, lam, 0.0, solver="mirror", steps=5, step_size=1.0).probs(logits)
    c5 = (1 - (1 - lam) ** 5) / lam
    assert np.allclose(analysis.effective_temperature(q, logits), 1.0 / (1.0 + c5), rtol=1e-9)


def test_kkt_residual_and_objective_gap_against_numpy(x64):
    """Entropy + KL to a given reference (a softmax-like objective): the residual's
    definition written out in numpy, and the gap f(q*) − f(q) with f in numpy."""
    rng = np.random.default_rng(4)
    logits = rng.standard_normal((3, 25)) * 2
    ref = rng.dirichlet(np.ones(25), size=3)
    a, b = float(np.float32(0.3)), float(np.float32(0.6))  # weights are stored in float32
    obj = sd.Objective(terms=(sd.Entropy(a), sd.KL(b, reference=ref)))
    q_star = np.asarray(sd.Decoder(obj, solver="exact").probs(logits))
    q = 0.8 * q_star + 0.2 * rng.dirichlet(np.ones(25), size=3)

    A, L = a + b, b * np.log(ref)

    def f(q):
        return (q * logits).sum(-1) - a * (q * np.log(q)).sum(-1) - b * (q * np.log(q / ref)).sum(-1)

    g = logits + L - A * (np.log(q) + 1.0)  # f'_v(q_v)
    nu = (q * g).sum(-1, keepdims=True) / q.sum(-1, keepdims=True)  # weights 1/(−f'') = q/A
    best = np.exp((logits + L - nu) / A - 1.0)
    residual = np.abs(q - best).sum(-1) + np.abs(q.sum(-1) - 1.0)
    assert np.allclose(analysis.kkt_residual(obj, logits, q), residual, rtol=1e-9)
    assert np.all(np.asarray(analysis.kkt_residual(obj, logits, q_star)) <= 1e-13)
    gap = np.asarray(analysis.objective_gap(obj, logits, q))
    assert np.allclose(gap, f(q_star) - f(q), rtol=1e-9) and np.all(gap > 0)
    assert np.all(np.abs(np.asarray(analysis.objective_gap(obj, logits, q_star))) <= 1e-12)


def test_gap_between_the_paper_algorithm_and_the_exact_optimum(x64):
    """The diagnostics say how far Algorithm 1 (J = 5) is from the BoK optimum."""
    pytest.importorskip("cvxpy")
    from simplex_decode import reference

    logits = np.random.default_rng(5).standard_normal((2, 30)) * 2
    exact = sd.best_of_k(16, 0.5, 0.05, top_m=4)
    paper = sd.best_of_k(16, 0.5, 0.05, top_m=4, solver="mirror", steps=5, step_size=1.0)
    q5 = np.asarray(paper.probs(logits))
    gap = np.asarray(analysis.objective_gap(exact.objective, logits, q5))
    f = lambda q: reference.objective_value(exact.objective, logits, q)  # noqa: E731
    assert np.allclose(gap, f(reference.solve(exact.objective, logits)) - f(q5), rtol=1e-6, atol=1e-9)
    assert np.all(gap > 0) and np.all(np.asarray(analysis.kkt_residual(exact.objective, logits, q5)) > 1e-6)
    with pytest.raises(ValueError, match="shape"):
        analysis.kkt_residual(exact.objective, logits, q5[:, :10])


def test_batched_and_jittable():
    logits, q = _rows((2, 3, 16), seed=6)
    logits, q = jnp.asarray(logits, jnp.float32), jnp.asarray(q, jnp.float32)
    obj = sd.best_of_k(4, 0.5, 0.1, top_m=3).objective

    @jax.jit
    def all_of_them(q, logits):
        return (analysis.entropy(q), analysis.support_size(q), analysis.kl_to_model(q, logits),
                analysis.coverage_probability(q, logits, m=3, k=4), analysis.effective_temperature(q, logits),
                analysis.kkt_residual(obj, logits, q), analysis.objective_gap(obj, logits, q))

    for out in all_of_them(q, logits):
        assert out.shape == (2, 3)
