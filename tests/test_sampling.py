"""Sampling: frequencies match q, keys determine ids, rows are independent of their batch."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import simplex_decode as sd

V = 12


def _logits(shape, seed=0):
    return (np.random.default_rng(seed).standard_normal(shape) * 1.5).astype(np.float32)


@pytest.mark.parametrize("method", ["inverse_cdf", "gumbel"])
@pytest.mark.parametrize("dec", [sd.temperature(0.9), sd.top_p(0.8), sd.sparsemax(0.5)], ids=["temp", "top_p", "sparsemax"])
def test_empirical_frequencies_match_q_chi_square(method, dec):
    logits = _logits((V,), seed=1)
    q = np.asarray(dec.probs(logits), np.float64)
    n = 40_000
    ids = np.asarray(jax.jit(lambda k: dec.sample(k, logits, num_samples=n, method=method))(jax.random.key(7)))
    assert ids.shape == (n,)
    counts = np.bincount(ids, minlength=V)
    assert np.all(counts[q == 0] == 0), "sampled a token outside the support"
    support = q > 0
    expected = n * q[support]
    chi2 = float(((counts[support] - expected) ** 2 / expected).sum())
    dof = int(support.sum()) - 1
    # 99.9% quantile of chi-square(dof) via the Wilson–Hilferty approximation.
    z = 3.09
    crit = dof * (1 - 2 / (9 * dof) + z * np.sqrt(2 / (9 * dof))) ** 3 if dof > 0 else 0.0
    assert chi2 <= crit, (chi2, crit, dof)


def test_same_key_same_ids_and_different_keys_differ():
    logits = _logits((4, V))
    dec = sd.temperature(1.0)
    a = np.asarray(dec.sample(jax.random.key(3), logits, num_samples=50))
    b = np.asarray(dec.sample(jax.random.key(3), logits, num_samples=50))
    c = np.asarray(dec.sample(jax.random.key(4), logits, num_samples=50))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_row_does_not_depend_on_other_rows():
    dec = sd.top_p(0.95)
    logits = _logits((5, V), seed=2)
    key = jax.random.key(11)
    ids = np.asarray(dec.sample(key, logits, num_samples=20))
    other = logits.copy()
    other[[0, 2, 4]] = _logits((3, V), seed=9)
    ids2 = np.asarray(dec.sample(key, other, num_samples=20))
    np.testing.assert_array_equal(ids[[1, 3]], ids2[[1, 3]])


def test_per_row_keys_follow_the_request_not_the_slot():
    dec = sd.temperature(1.0)
    logits = _logits((4, V), seed=3)
    keys = jax.random.split(jax.random.key(5), 4)
    ids = np.asarray(dec.sample(keys, logits, num_samples=10))
    perm = np.array([2, 0, 3, 1])
    ids_perm = np.asarray(dec.sample(keys[perm], logits[perm], num_samples=10))
    np.testing.assert_array_equal(ids_perm, ids[perm])
    # a request alone in its batch gets the same ids with its own key
    alone = np.asarray(dec.sample(keys[2:3], logits[2:3], num_samples=10))
    np.testing.assert_array_equal(alone[0], ids[2])


def test_shapes_and_greedy_sampling():
    logits = _logits((2, 3, V), seed=4)
    ids = sd.top_k(3).sample(jax.random.key(0), logits)
    assert ids.shape == (2, 3) and ids.dtype == jnp.int32
    ids = sd.greedy().sample(jax.random.key(0), logits, num_samples=4)
    np.testing.assert_array_equal(np.asarray(ids), np.repeat(np.argmax(logits, -1)[..., None], 4, -1))
    keep = np.asarray(sd.top_k(3).probs(logits)) > 0
    s = np.asarray(sd.top_k(3).sample(jax.random.key(1), logits, num_samples=64))
    assert np.all(np.take_along_axis(keep, s, -1))


def test_legacy_prng_keys_work():
    logits = _logits((3, V))
    ids = sd.temperature(1.0).sample(jax.random.PRNGKey(0), logits, num_samples=3)
    assert ids.shape == (3, 3)
    ids = sd.temperature(1.0).sample(jax.random.split(jax.random.PRNGKey(0), 3), logits)
    assert ids.shape == (3,)


@pytest.mark.parametrize("V", [3, 511, 512, 513, 1500, 20000])
def test_inverse_cdf_equals_a_plain_cumsum_search(V):
    """The two-level (block sums, then one block) search returns the id a full float64
    cumulative sum gives for the same uniforms, including the overlapping last block
    and blocks of zeros; only draws within rounding of a boundary may differ."""
    from simplex_decode.sampling import _inverse_cdf_row

    rng = np.random.default_rng(V)
    q = rng.random(V).astype(np.float32) ** 3
    q[rng.random(V) < 0.3] = 0.0  # zeros, incl. whole stretches
    q[: V // 4] = 0.0
    q = q / q.sum()
    k = 4000
    key = jax.random.key(7)
    ids = np.asarray(_inverse_cdf_row(key, jnp.asarray(q), k))
    u = np.asarray(jax.random.uniform(key, (k,), dtype=jnp.float32), np.float64)
    cum = np.cumsum(q.astype(np.float64))
    x = u * cum[-1]
    want = np.minimum(np.searchsorted(cum, x, side="right"), V - 1)
    near = np.min(np.abs(cum[None, :] - x[:, None]), axis=1) < 1e-5
    assert np.all(q[ids] > 0)
    assert np.all((ids == want) | near)
    assert np.mean(ids == want) > 0.99
