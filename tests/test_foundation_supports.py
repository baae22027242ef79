"""Support rules and closed forms against independent sort-based numpy implementations."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import simplex_decode as sd

from . import _numpy_ref as npr


def _support(rule, logits, temperature=1.0):
    obj = sd.Objective(terms=sd.Entropy(), support=rule, transforms=sd.Temperature(temperature))
    return np.asarray(obj.prepare(jnp.asarray(logits)).mask)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("V", [5, 64, 3000])
def test_top_k_top_p_min_p_masks(seed, V):
    rng = np.random.default_rng(seed)
    logits = (rng.standard_normal((6, V)) * 3).astype(np.float32)
    t = 0.7
    probs = npr.softmax(logits.astype(np.float64) / t)
    for k in (1, 3, min(V, 40), V):
        assert np.array_equal(_support(sd.TopK(k), logits, t), npr.topk_mask(logits, k))
    for p in (0.05, 0.5, 0.9, 0.999, 1.0):
        np.testing.assert_array_equal(_support(sd.TopP(p), logits, t), npr.topp_mask(probs, p))
    for p in (0.0, 0.01, 0.3, 1.0):
        np.testing.assert_array_equal(_support(sd.MinP(p), logits, t), npr.minp_mask(probs, p))


def test_ties_keep_lowest_indices():
    logits = np.array([[1.0, 3.0, 2.0, 3.0, 3.0, 0.0]], np.float32)
    assert _support(sd.TopK(2), logits).tolist() == [[False, True, False, True, False, False]]
    # Three tied maxima each of mass ~0.3: p = 0.5 keeps the first two of them.
    probs = npr.softmax(logits)
    assert probs[0, 1] < 0.5 < 2 * probs[0, 1]
    assert _support(sd.TopP(0.5), logits).tolist() == [[False, True, False, True, False, False]]
    q = sd.greedy().probs(logits)
    assert int(jnp.argmax(q)) == 1
    assert float(q.sum()) == 1.0


def test_top_p_from_model_uses_untempered_distribution():
    rng = np.random.default_rng(0)
    logits = (rng.standard_normal((4, 100)) * 2).astype(np.float32)
    m = _support(sd.TopP(0.6, from_model=True), logits, temperature=3.0)
    np.testing.assert_array_equal(m, npr.topp_mask(npr.softmax(logits), 0.6))


def test_per_row_k_and_p():
    rng = np.random.default_rng(1)
    logits = (rng.standard_normal((3, 50)) * 2).astype(np.float32)
    k = np.array([1, 5, 17])
    np.testing.assert_array_equal(_support(sd.TopK(k), logits), npr.topk_mask(logits, k))
    p = np.array([0.2, 0.7, 0.95], np.float32)
    np.testing.assert_array_equal(_support(sd.TopP(p), logits), npr.topp_mask(npr.softmax(logits), p))


@pytest.mark.parametrize("V", [4, 40, 2000])
def test_sparsemax_entmax_second_algorithm(V):
    rng = np.random.default_rng(V)
    z = (rng.standard_normal((5, V)) * 2).astype(np.float32)
    np.testing.assert_allclose(sd.sparsemax().probs(z), npr.sparsemax(z), atol=2e-6)
    np.testing.assert_allclose(sd.entmax(1.5).probs(z), npr.entmax15_sort(z), atol=2e-6)
    for a in (1.2, 1.5, 2.0, 3.0):
        np.testing.assert_allclose(sd.entmax(a).probs(z), npr.entmax_bisect(z, a), atol=2e-6)


def test_entmax_per_row_alpha_equals_loop():
    rng = np.random.default_rng(2)
    z = (rng.standard_normal((4, 30)) * 2).astype(np.float32)
    alpha = np.array([1.1, 1.5, 2.0, 2.5], np.float32)
    batched = np.asarray(sd.entmax(alpha).probs(z))
    for i in range(4):
        np.testing.assert_allclose(batched[i], np.asarray(sd.entmax(float(alpha[i])).probs(z[i])), atol=1e-7)


def test_masking_invariance():
    """-inf columns leave the other columns equal to the map on them alone (entmax test_mask)."""
    rng = np.random.default_rng(4)
    z = (rng.standard_normal((3, 12)) * 2).astype(np.float32)
    zm = z.copy()
    zm[:, 8:] = -np.inf
    for dec in (sd.temperature(0.9), sd.sparsemax(), sd.entmax(1.5), sd.top_p(0.9), sd.top_k(3)):
        full = np.asarray(dec.probs(zm))
        part = np.asarray(dec.probs(z[:, :8]))
        np.testing.assert_allclose(full[:, :8], part, atol=1e-7)
        assert np.all(full[:, 8:] == 0)


def test_gibbs_closed_form_with_kl_and_entropy():
    rng = np.random.default_rng(5)
    logits = (rng.standard_normal((2, 20)) * 2).astype(np.float64)
    s = logits / 0.5
    obj = sd.Objective(terms=(sd.Entropy(0.3), sd.KL(0.9)), transforms=sd.Temperature(0.5))
    with jax.enable_x64(True):
        q = np.asarray(sd.Decoder(obj).probs(logits))
    logp = np.log(npr.softmax(logits))
    np.testing.assert_allclose(q, npr.softmax((s + 0.9 * logp) / 1.2), atol=1e-12)
