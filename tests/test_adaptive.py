"""Adaptive temperature against from-scratch numpy versions of the EDT paper, llama.cpp and entropix."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import simplex_decode as sd
from simplex_decode import reference

_probs = jax.jit(lambda dec, x: dec.probs(x))


def _softmax(x):
    x = np.asarray(x, np.float64)
    finite = np.isfinite(x)
    m = np.max(np.where(finite, x, -np.inf))
    e = np.where(finite, np.exp(x - m), 0.0)
    return e / e.sum()


def _entropy(p):
    return -np.sum(np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0))


def edt_ref(logits, t0, theta, n):
    """EDT (Zhang et al., 2024): T = T0 · N^(θ/H), H the entropy of softmax(logits)."""
    out = np.zeros(logits.shape, np.float64)
    for idx in np.ndindex(*logits.shape[:-1]):
        row = logits[idx].astype(np.float64)
        t = t0 * n ** (theta / _entropy(_softmax(row)))
        out[idx] = _softmax(row / t)
    return out


def llama_cpp_dynatemp_ref(logits, temp, delta, exponent):
    """llama.cpp llama_sampler_temp_ext_apply (delta > 0), on the full candidate list."""
    out = np.zeros(logits.shape, np.float64)
    for idx in np.ndindex(*logits.shape[:-1]):
        row = logits[idx].astype(np.float64)
        min_temp, max_temp = max(0.0, temp - delta), temp + delta
        max_entropy = -np.log(1.0 / row.size)
        p = _softmax(row)
        entropy = -np.sum([pi * np.log(pi) for pi in p if pi > 0.0])
        dyn_temp = min_temp + (max_temp - min_temp) * (entropy / max_entropy) ** exponent
        out[idx] = _softmax(row / dyn_temp)
    return out


def entropix_ref(logits, t=1.0, t_fork=1.2, t_mist=2.0):
    """entropix's sampler branches on entropy / varentropy in bits (attention terms dropped)."""
    out = np.zeros(logits.shape, np.float64)
    branches = []
    for idx in np.ndindex(*logits.shape[:-1]):
        row = logits[idx].astype(np.float64)
        log_probs = np.log(_softmax(row))
        probs = np.exp(log_probs)
        ent = -np.sum(probs * log_probs) / np.log(2)
        vent = np.sum(probs * (log_probs / np.log(2) + ent) ** 2)
        if ent < 0.1 and vent < 0.1:
            out[idx + (int(np.argmax(row)),)] = 1.0
            branches.append("argmax")
            continue
        elif ent < 5.0 and vent > 5.0:
            temp, name = t_fork, "fork"
        elif ent > 5.0 and vent > 5.0:
            temp, name = t_mist, "mist"
        else:
            temp, name = t, "base"
        branches.append(name)
        out[idx] = _softmax(row / temp)
    return out, branches


def _varied_logits(rng, shape):
    """Rows from peaked to flat: scales spread over three orders of magnitude."""
    scale = 10 ** rng.uniform(-1.5, 1.3, shape[:-1] + (1,))
    return (rng.standard_normal(shape) * scale).astype(np.float32)


SHAPES = [(6,), (2, 3, 300), (3, 3000)]


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_edt_equals_paper_formula(shape):
    rng = np.random.default_rng(shape[-1])
    logits = _varied_logits(rng, shape)
    for t0, theta, n in [(1.0, 1.0, 0.8), (0.7, 0.2, 0.8), (1.5, 2.0, 0.5)]:
        q = np.asarray(_probs(sd.edt(t0, theta, n), logits), np.float64)
        assert np.abs(q - edt_ref(logits, t0, theta, n)).max() <= 1e-5, (t0, theta, n)


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_dynamic_temperature_equals_llama_cpp(shape):
    rng = np.random.default_rng(shape[-1] + 1)
    logits = _varied_logits(rng, shape)
    for temp, delta, exponent in [(0.8, 0.5, 1.0), (1.0, 0.3, 2.0), (0.4, 1.0, 0.5)]:
        dec = sd.Decoder(sd.Objective(
            terms=sd.Entropy(), transforms=sd.DynamicTemperature.from_llama_cpp(temp, delta, exponent)
        ))
        q = np.asarray(_probs(dec, logits), np.float64)
        assert np.abs(q - llama_cpp_dynatemp_ref(logits, temp, delta, exponent)).max() <= 1e-5


def test_entropix_branches_equal_reference():
    rng = np.random.default_rng(0)
    V = 3000
    rows = []
    peaked = np.full(V, -30.0)
    peaked[7] = 10.0  # flowing: entropy and varentropy ~ 0 -> argmax
    rows.append(peaked)
    for head, tail_mass in [(0.8, 0.2), (0.5, 0.5)]:  # one dominant token over a flat tail
        row = np.full(V, np.log(tail_mass / (V - 1)))
        row[3] = np.log(head)
        rows.append(row + rng.standard_normal(V) * 0.01)
    rows.append(rng.standard_normal(V) * 0.3)  # near-uniform: high entropy, low varentropy -> base
    rows.append(rng.standard_normal(V) * 2.5)
    logits = np.stack(rows).astype(np.float32)
    ref, branches = entropix_ref(logits)
    assert {"argmax", "fork", "mist", "base"} <= set(branches), branches
    q = np.asarray(_probs(sd.entropix(), logits), np.float64)
    assert np.abs(q - ref).max() <= 1e-5
    # temperature_of reports the chosen temperatures
    t = np.asarray(sd.EntropixTemperature().temperature_of(jnp.asarray(logits)))
    expected = {"argmax": 0.0, "fork": 1.2, "mist": 2.0, "base": 1.0}
    np.testing.assert_allclose(t, [expected[b] for b in branches])


def test_zero_temperature_rows_are_greedy_with_lowest_index_ties():
    logits = np.array(
        [[-np.inf, 2.0, -np.inf, -np.inf], [5.0, 1.0, 5.0, -np.inf], [0.5, 0.1, 0.2, 0.0]], np.float32
    )
    # EDT: a row with one finite token has H = 0 -> T = 0 (the limit), i.e. greedy.
    q = np.asarray(_probs(sd.edt(1.0, 1.0, 0.8), logits))
    np.testing.assert_array_equal(q[0], [0, 1, 0, 0])
    # dynatemp with t_min = 0 on an H = 0 row is greedy too; rows with fewer than two
    # finite tokens are left unscaled, as in llama.cpp.
    t = np.asarray(sd.DynamicTemperature(0.0, 2.0).temperature_of(jnp.asarray(logits)))
    assert t[0] == 1.0
    # Per-row EDT: theta = 0 leaves T = t0; a huge theta drives T to 0 -> argmax (lowest id on ties).
    q = np.asarray(_probs(sd.edt(np.array([1.0, 1.0, 1.0]), np.array([0.0, 1e6, 0.0]), 0.8), logits))
    np.testing.assert_array_equal(q[1], [1, 0, 0, 0])
    np.testing.assert_allclose(q[2], _softmax(logits[2]), atol=1e-6)
    assert np.all(np.isfinite(q))


@pytest.mark.parametrize("name", ["edt", "dynamic_temperature", "entropix"])
def test_adaptive_equals_cvxpy_optimum(name):
    """The objective is <q, s/T(p)> + H(q): cvxpy on the same transformed scores agrees."""
    pytest.importorskip("cvxpy")
    rng = np.random.default_rng(2)
    logits = _varied_logits(rng, (4, 20))
    dec = {"edt": sd.edt(0.9, 0.5), "dynamic_temperature": sd.dynamic_temperature(0.2, 1.5, 1.0),
           "entropix": sd.entropix()}[name]
    q = np.asarray(_probs(dec, logits), np.float64)
    assert np.abs(q - reference.solve(dec.objective, logits)).max() <= 1e-5


def test_per_row_parameters_under_one_compilation():
    rng = np.random.default_rng(3)
    logits = _varied_logits(rng, (3, 100))
    traces = []

    @jax.jit
    def run(dec, x):
        traces.append(1)
        return dec.probs(x)

    t0 = np.array([0.5, 1.0, 1.5], np.float32)
    theta = np.array([0.1, 1.0, 3.0], np.float32)
    q = np.asarray(run(sd.edt(t0, theta, 0.8), logits))
    for i in range(3):
        assert np.abs(q[i] - edt_ref(logits[i], t0[i], theta[i], 0.8)).max() <= 1e-5
    run(sd.edt(t0[::-1].copy(), theta, 0.6), logits)
    assert len(traces) == 1


def test_bad_parameters_are_named():
    cases = [
        (lambda: sd.EDT(theta=-1.0), "EDT: `theta` must be in [0, inf)"),
        (lambda: sd.EDT(n=1.5), "EDT: `n` must be in (0, 1]"),
        (lambda: sd.EDT(n=0.0), "EDT: `n`"),
        (lambda: sd.EDT(t0=np.nan), "EDT: `t0`"),
        (lambda: sd.DynamicTemperature(1.0, 0.5), "DynamicTemperature: `t_max` must be >= `t_min`"),
        (lambda: sd.DynamicTemperature(-0.1, 1.0), "DynamicTemperature: `t_min`"),
        (lambda: sd.DynamicTemperature(0.1, 1.0, exponent=-1.0), "DynamicTemperature: `exponent`"),
        (lambda: sd.DynamicTemperature.from_llama_cpp(0.8, -0.1), "DynamicTemperature: `dynatemp_range`"),
        (lambda: sd.EntropixTemperature(t_mist=-2.0), "EntropixTemperature: `t_mist`"),
    ]
    for make, msg in cases:
        with pytest.raises(ValueError) as e:
            make()
        assert msg in str(e.value), (msg, str(e.value))
