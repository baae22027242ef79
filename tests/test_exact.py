"""The exact separable solver: equals cvxpy, the closed forms, and itself across paths."""

import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import simplex_decode as sd
from simplex_decode import analysis, reference

pytest.importorskip("cvxpy")

REL = 1e-6  # objective, relative to cvxpy's optimum
L1 = 1e-3


def _logits(shape, seed, scale=2.0):
    return np.random.default_rng(seed).standard_normal(shape) * scale


# Jitted with the Objective as an argument: one compilation per objective *structure*
# (new weights, lam, beta reuse it).
@jax.jit
def _exact_probs(obj, logits):
    return sd.Decoder(obj, solver="exact").solve(logits).q


@jax.jit
def _auto_probs(obj, logits):
    return sd.Decoder(obj).solve(logits).q


@jax.jit
def _certified(obj, logits):
    return sd.Decoder(obj, solver=sd.Exact(certificate=True)).solve(logits)


@jax.jit
def _value(obj, logits, q):
    return obj.value(q, obj.prepare(logits))


def _assert_matches_cvxpy(obj, logits):
    logits = jnp.asarray(logits)
    q = np.asarray(_exact_probs(obj, logits), np.float64)
    ref = reference.solve(obj, logits)
    f = np.asarray(_value(obj, logits, jnp.asarray(q)))
    f_ref = np.asarray(_value(obj, logits, jnp.asarray(ref)))
    assert np.all(np.abs(f - f_ref) <= REL * np.abs(f_ref) + 1e-10), (f, f_ref)
    assert np.abs(q - ref).sum(-1).max() <= L1
    assert np.allclose(q.sum(-1), 1.0, atol=1e-12)
    return q


def _masks(logits):
    """Per-row support masks: full, top-k (k = 9) and top-p (p = 0.8) of softmax(logits),
    in rotation (numpy, ties by lowest id)."""
    masks = np.ones(logits.shape, bool)
    for r in range(logits.shape[0]):
        order = np.argsort(-logits[r], kind="stable")
        kind = r % 3
        if kind == 1:
            masks[r] = False
            masks[r, order[:9]] = True
        elif kind == 2:
            p = np.exp(logits[r] - logits[r].max())
            p /= p.sum()
            before = np.cumsum(p[order]) - p[order]
            masks[r] = False
            masks[r, order[before < 0.8]] = True
    return masks


@pytest.mark.parametrize("k", [1, 2, 8, 64])
def test_best_of_k_equals_cvxpy(x64, k):
    """The issue's grid, one batch per k: every (lam, beta) in {0.05, 0.5, 5} × {0, 0.1, 10}
    as per-row parameters, random sparse weights, and per-row supports (full / top-k /
    top-p masks in rotation, three rows per (lam, beta))."""
    V = 24
    rng = np.random.default_rng(k)
    grid = [(lam, beta) for lam in (0.05, 0.5, 5.0) for beta in (0.0, 0.1, 10.0)]
    lam = np.repeat([g[0] for g in grid], 3)
    beta = np.repeat([g[1] for g in grid], 3)
    logits = _logits((len(lam), V), seed=k)
    weights = rng.uniform(0.0, 1.0, size=logits.shape) * (rng.uniform(size=logits.shape) < 0.6)
    masks = _masks(logits)
    dec = sd.best_of_k(k, jnp.asarray(lam), jnp.asarray(beta), weights=weights, support=sd.Mask(jnp.asarray(masks)))
    q = _assert_matches_cvxpy(dec.objective, logits)
    assert np.all(q[~masks] == 0.0)


@pytest.mark.slow  # ~60 s of cvxpy; CI: test_best_of_k_equals_cvxpy and the suite's reference contract
def test_best_of_k_with_support_rules_equals_cvxpy(x64):
    """The TopK and TopP rules themselves (the grid above uses their masks)."""
    logits = _logits((3, 24), seed=11)
    for support in (sd.TopK(9), sd.TopP(0.8)):
        dec = sd.best_of_k(8, 0.5, 0.1, weights="model", support=support)
        q = _assert_matches_cvxpy(dec.objective, logits)
        mask = np.asarray(dec.objective.prepare(logits).mask)
        assert mask.sum() < mask.size and np.all(q[~mask] == 0.0)


@pytest.mark.parametrize("weights", ["top_m", "model"])
def test_best_of_k_rules_equal_cvxpy(x64, weights):
    logits = _logits((3, 30), seed=7)
    lam, beta = jnp.array([0.5, 0.1, 5.0]), jnp.array([0.1, 0.01, 10.0])
    _assert_matches_cvxpy(sd.best_of_k(16, lam, beta, weights=weights, top_m=5).objective, logits)


@pytest.mark.slow  # ~45 s of cvxpy at a large V; CI: the smaller vocabularies
def test_best_of_k_large_vocabulary_equals_cvxpy(x64):
    """V = 50 000 against cvxpy (Clarabel), one case (about 5 s of Clarabel here). At this
    size Clarabel itself stops with InsufficientProgress on a 40 000-token top-p support,
    on dense weights and on k = 64, beta = 10, so those are covered at small V above."""
    logits = _logits((1, 50_000), seed=0, scale=1.0)
    t0 = time.perf_counter()
    _assert_matches_cvxpy(sd.best_of_k(8, 0.5, 0.1).objective, logits)
    assert time.perf_counter() - t0 < 120


MIXTURES = {
    "entropy+l2+kl": lambda ref: (sd.Entropy(0.3), sd.SquaredL2(0.7), sd.KL(0.4, reference=ref)),
    "tsallis+kl": lambda ref: (sd.Tsallis(1.5, 0.5), sd.KL(0.3)),
    "l2+coverage": lambda ref: (sd.SquaredL2(0.5), sd.Coverage(4, "model", weight=0.3)),  # no entropic term
    "tsallis+l2+coverage": lambda ref: (sd.Tsallis(1.3, 0.6), sd.SquaredL2(0.2), sd.Coverage(3, ref, weight=0.5)),
    "entropy+cap": lambda ref: (sd.Entropy(0.5), sd.Cap(0.2)),
    "l2+cap": lambda ref: (sd.SquaredL2(0.1), sd.Cap(0.3)),  # closed-form inverse, caps
    "kl+coverage+cap": lambda ref: (sd.KL(0.5), sd.Coverage(8, "top_m", weight=1.0, top_m=4), sd.Cap(0.35)),
}


@pytest.mark.parametrize("name", sorted(MIXTURES))
def test_mixtures_equal_cvxpy(x64, name):
    """Row 0 on the full vocabulary, row 1 on its 12 best tokens."""
    V = 20
    rng = np.random.default_rng(len(name))
    ref_p = rng.dirichlet(np.ones(V), size=2)
    logits = _logits((2, V), seed=len(name))
    allowed = np.ones((2, V), bool)
    allowed[1, np.argsort(-logits[1])[12:]] = False
    obj = sd.Objective(terms=MIXTURES[name](ref_p), support=sd.Mask(jnp.asarray(allowed)))
    assert sd.Auto().select(obj).__class__.__name__ == "Exact"
    q = _assert_matches_cvxpy(obj, logits)
    assert np.all(q[~allowed] == 0.0)
    if "cap" in name:
        c = float(next(t.c for t in obj.terms if isinstance(t, sd.Cap)))
        assert q.max() <= c + 1e-12 and np.any(q == c)  # c as stored (float64 under x64)


def test_per_row_weights_equal_cvxpy(x64):
    logits = _logits((3, 16), seed=4)
    obj = sd.best_of_k(4, jnp.array([0.1, 1.0, 3.0]), jnp.array([10.0, 0.0, 0.5])).objective
    obj = obj.replace(terms=(obj.terms[0], sd.Coverage(4, "top_m", weight=jnp.array([1.0, 0.0, 1.5]), top_m=3)))
    _assert_matches_cvxpy(obj, logits)
    cap = sd.Objective(terms=(sd.Entropy(jnp.array([0.5, 1.0, 2.0])), sd.Cap(jnp.array([0.2, 0.5, 1.0]))))
    _assert_matches_cvxpy(cap, logits)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_beta_zero_equals_kl_anchored_closed_form(dtype):
    with jax.enable_x64(dtype == np.float64):
        logits = jnp.asarray(_logits((4, 1000), seed=1), dtype)
        for lam, t in [(0.05, 1.0), (0.5, 0.7), (5.0, 2.0)]:
            q = _exact_probs(sd.best_of_k(8, lam, 0.0, temperature=t).objective, logits)
            closed = _auto_probs(sd.kl_anchored(lam, temperature=t).objective, logits)
            assert q.dtype == dtype
            tol = 1e-12 if dtype == np.float64 else 2e-6
            assert float(jnp.abs(q - closed).sum(-1).max()) <= tol


def test_fast_path_equals_dense_path(x64):
    """weights="top_m" (closed-form sum over the other tokens) = the same 0/1 weights as
    an array (the generic per-coordinate Newton over the whole vocabulary)."""
    logits = _logits((3, 400), seed=9)
    for k, lam, beta in [(16, 0.5, 0.1), (16, 0.05, 10.0), (16, 5.0, 1.0)]:
        fast = sd.best_of_k(k, lam, beta, top_m=8)
        w = np.asarray(fast.objective.terms[1].coverage_weights(fast.objective.prepare(logits).ctx))
        dense = sd.best_of_k(k, lam, beta, weights=w)
        qf, qd = _exact_probs(fast.objective, logits), _exact_probs(dense.objective, logits)
        assert float(jnp.abs(qf - qd).sum(-1).max()) <= 1e-12


def test_kkt_residual_float32_at_qwen_vocabulary():
    """float32, V = 151 936 (Qwen2.5): the certificate's KKT residual is below 1e-5."""
    logits = jnp.asarray(_logits((2, 151_936), seed=3, scale=3.0), jnp.float32)
    for k, lam, beta, weights in [(16, 0.1, 0.01, "top_m"), (16, 0.5, 0.1, "model")]:
        sol = _certified(sd.best_of_k(k, lam, beta, weights=weights).objective, logits)
        assert sol.q.dtype == jnp.float32
        assert bool(jnp.all(sol.stats["converged"]))
        assert float(sol.stats["kkt_residual"].max()) <= 1e-5, (k, lam, beta, weights)
        assert float(jnp.abs(sol.q.sum(-1) - 1.0).max()) <= 1e-6


def test_certificate_is_tight_in_float64(x64):
    logits = _logits((3, 50), seed=5)
    for obj in (sd.best_of_k(8, 0.5, 0.1, top_m=5).objective,
                sd.Objective(terms=(sd.Entropy(0.3), sd.SquaredL2(0.5), sd.Cap(0.3)))):
        sol = _certified(obj, jnp.asarray(logits))
        assert float(sol.stats["kkt_residual"].max()) <= 1e-12
        gap = np.asarray(sol.stats["duality_gap"])
        assert np.all(gap >= -1e-12) and np.all(gap <= 1e-10)
        # A perturbed q is detected.
        q_bad = 0.9 * sol.q + 0.1 / 50
        assert float(analysis.kkt_residual(obj, logits, q_bad).min()) > 1e-3


def test_iterations_are_few_and_reported():
    logits = jnp.asarray(_logits((8, 32_000), seed=2, scale=3.0), jnp.float32)
    sol = jax.jit(sd.best_of_k(16, 0.1, 0.01).solve)(logits)  # the paper's setting, follow-up's K
    assert set(sol.stats) >= {"iterations", "inner_iterations", "converged"}
    assert sol.stats["iterations"].shape == (8,)
    assert int(sol.stats["iterations"].max()) <= 6
    assert bool(jnp.all(sol.stats["converged"]))


def test_rows_are_independent_and_batch_shapes(x64):
    logits = _logits((2, 3, 40), seed=8)
    lam = jnp.array([0.1, 2.0])  # per leading row
    dec = sd.best_of_k(8, lam, 0.5, top_m=4)
    q = _exact_probs(dec.objective, logits)
    assert q.shape == (2, 3, 40)
    for i in range(2):
        qi = _exact_probs(sd.best_of_k(8, float(lam[i]), 0.5, top_m=4).objective, logits[i])
        assert float(jnp.abs(q[i] - qi).max()) <= 1e-13
    # vmap over the leading axis, lam mapped with it (in float64, as the concrete values are
    # stored under x64; traced ones are used as given)
    qv = jax.jit(jax.vmap(lambda lam_i, x: sd.best_of_k(8, lam_i, 0.5, top_m=4).solve(x).q))(lam, logits)
    assert float(jnp.abs(qv - q).max()) <= 1e-13


def test_shift_invariance_and_jit_no_retrace():
    logits = jnp.asarray(_logits((4, 500), seed=6), jnp.float32)
    traces = []

    @jax.jit
    def probs(logits, lam, beta):
        traces.append(1)
        return sd.best_of_k(8, lam, beta).probs(logits)

    q1 = probs(logits, 0.5, 0.1)
    q2 = probs(logits + 30.0, 0.7, 0.2)
    q3 = probs(logits + 30.0, 0.5, 0.1)
    assert len(traces) == 1
    assert float(jnp.abs(q1 - q3).max()) <= 2e-6
    assert float(jnp.abs(q2 - q3).max()) > 1e-3


def test_lam_zero_is_greedy_and_bad_rows():
    logits = jnp.array([[0.0, 3.0, 3.0, 1.0], [jnp.nan, 0.0, 1.0, 2.0]])
    sol = jax.jit(sd.best_of_k(2, jnp.array([0.0, 0.5]), 1.0, top_m=2).solve)(logits)
    assert np.array_equal(np.asarray(sol.q[0]), [0.0, 1.0, 0.0, 0.0])  # lowest id on ties
    assert int(sol.status[1]) == sd.Status.NONFINITE_LOGITS
    assert np.all(np.isfinite(np.asarray(sol.q)))


def test_cap_infeasible_and_exact_solver_errors():
    obj = sd.Objective(terms=(sd.Entropy(), sd.Cap(0.2)), support=sd.TopK(3))
    with pytest.raises(ValueError, match="Cap"):
        sd.Decoder(obj, solver="exact").probs(jnp.zeros(10))
    with pytest.raises(ValueError, match="Cap: `c`"):
        sd.Cap(0.0)
    with pytest.raises(ValueError, match="max_steps"):
        sd.Exact(max_steps=0)
    with pytest.raises(ValueError, match="tol"):
        sd.Exact(tol=-1.0)


def test_auto_selection():
    assert type(sd.Auto().select(sd.best_of_k(4, 0.5, 0.1).objective)).__name__ == "Exact"
    assert type(sd.Auto().select(sd.temperature(0.5).objective)).__name__ == "ClosedForm"
    assert type(sd.Auto().select(sd.Objective(terms=(sd.Entropy(), sd.Cap(0.5))))).__name__ == "Exact"
