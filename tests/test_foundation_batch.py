"""Shapes, per-row parameters, jit/vmap, half precision, no recompilation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import simplex_decode as sd

B, T, V = 3, 2, 37


def _logits(shape, seed=0):
    return (np.random.default_rng(seed).standard_normal(shape) * 2).astype(np.float32)


T_ROWS = np.array([0.5, 1.0, 1.7], np.float32)
P_ROWS = np.array([0.3, 0.8, 1.0], np.float32)
K_ROWS = np.array([1, 4, 9])


def _make(t, p, k):
    return {
        "temperature": sd.temperature(t),
        "top_k": sd.top_k(k, temperature=t),
        "top_p": sd.top_p(p, temperature=t),
        "min_p": sd.min_p(p * 0.2, temperature=t),
        "sparsemax": sd.sparsemax(t),
        "entmax": sd.entmax(1.5, t),
        "kl_anchored": sd.kl_anchored(t, temperature=t),
    }


def _presets(per_row):
    return _make(T_ROWS, P_ROWS, K_ROWS) if per_row else _make(0.8, 0.8, 4)


def _row_preset(name, i):
    return _make(float(T_ROWS[i]), float(P_ROWS[i]), int(K_ROWS[i]))[name]


@pytest.mark.parametrize("name", sorted(_presets(False)))
def test_batch_equals_loop_over_rows_with_per_row_params(name):
    logits = _logits((B, V))
    q = np.asarray(_presets(True)[name].probs(logits))
    for i in range(B):
        np.testing.assert_allclose(q[i], np.asarray(_row_preset(name, i).probs(logits[i])), atol=1e-6)
    # (B, T, V) with per-row (B,) parameters: every position of row b uses row b's value.
    logits3 = _logits((B, T, V), seed=1)
    q3 = np.asarray(_presets(True)[name].probs(logits3))
    assert q3.shape == (B, T, V)
    for i in range(B):
        np.testing.assert_allclose(q3[i], np.asarray(_row_preset(name, i).probs(logits3[i])), atol=1e-6)


@pytest.mark.parametrize("name", sorted(_presets(False)))
def test_jit_and_vmap(name):
    dec = _presets(False)[name]
    logits = _logits((B, T, V), seed=2)
    eager = np.asarray(dec.probs(logits))
    jitted = np.asarray(jax.jit(lambda d, x: d.probs(x))(dec, logits))
    vmapped = np.asarray(jax.vmap(jax.vmap(dec.probs))(logits))
    np.testing.assert_allclose(jitted, eager, atol=1e-6)
    np.testing.assert_allclose(vmapped, eager, atol=1e-6)


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
@pytest.mark.parametrize("name", sorted(_presets(False)))
def test_half_precision_logits_computed_in_float32(dtype, name):
    dec = _presets(False)[name]
    logits = jnp.asarray(_logits((B, V), seed=3) * 3).astype(dtype)
    q = dec.probs(logits)
    assert q.dtype == jnp.float32
    ref = dec.probs(logits.astype(jnp.float32))
    np.testing.assert_allclose(np.asarray(q), np.asarray(ref), atol=1e-6)
    assert np.all(np.isfinite(np.asarray(q)))
    np.testing.assert_allclose(np.asarray(q).sum(-1), 1.0, atol=1e-5)


def test_low_temperature_half_precision_has_no_nan():
    """fp16 at T = 1e-4 overflows in naive code ("probability tensor contains inf/nan")."""
    logits = jnp.asarray(_logits((B, V), seed=4) * 10).astype(jnp.float16)
    for dec in (sd.temperature(1e-4), sd.top_p(0.9, 1e-4), sd.sparsemax(1e-4), sd.entmax(1.5, 1e-4)):
        q = np.asarray(dec.probs(logits))
        assert np.all(np.isfinite(q))
        np.testing.assert_allclose(q.sum(-1), 1.0, atol=1e-5)


def test_no_recompile_when_float_parameters_change():
    traces = []

    @jax.jit
    def run(dec, x):
        traces.append(1)
        return dec.probs(x)

    logits = _logits((B, V))
    for t in (0.5, 0.9, 1.3):
        for p in (0.5, 0.9):
            run(sd.top_p(p, temperature=t), logits)
    run(sd.top_p(np.array([0.2, 0.5, 0.9], np.float32), temperature=1.0), logits)
    run(sd.top_p(np.array([0.3, 0.6, 1.0], np.float32), temperature=0.7), logits)
    assert len(traces) == 2  # one for scalar leaves, one for per-row leaves
    traces.clear()
    for k in (1, 5, 8):
        run(sd.top_k(k, temperature=0.7), logits)
    assert len(traces) == 1


def test_pytree_roundtrip_keeps_structure():
    dec = sd.top_k(4, temperature=0.5)
    leaves, treedef = jax.tree_util.tree_flatten(dec)
    assert len(leaves) == 4  # k, min_keep, temperature, entropy weight
    again = jax.tree_util.tree_unflatten(treedef, leaves)
    np.testing.assert_array_equal(again.probs(_logits((V,))), dec.probs(_logits((V,))))
