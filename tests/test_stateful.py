"""Decoder state (optax-style init / sample(state=) / update), mirostat v1/v2 and XTC.

Mirostat and XTC are checked against from-scratch ports of llama.cpp's samplers
(``tests/_numpy_ref_samplers.py``) on hand-built cases (llama.cpp's own XTC test vectors,
mirostat's μ over 50 steps with fixed keys) and on random logits with ties and ``-inf``.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import simplex_decode as sd
from simplex_decode.stateful import component_keys, row_uniform

from . import _numpy_ref_samplers as ref


@jax.jit
def jprobs(dec, logits, key=None, state=None):
    """``dec.probs`` under one jit per decoder structure and shape (eager calls of the
    window-based rules would compile every primitive separately)."""
    return dec.probs(logits, key=key, state=state)


@jax.jit
def jsample(dec, key, logits, state):
    return dec.sample(key, logits, state=state)


def random_logits(rng, shape, *, ties=True, neg_inf=True):
    """float32 logits with (optionally) tied values and banned (-inf) tokens, never a fully banned row."""
    x = rng.standard_normal(shape) * 2.0
    if ties:
        x = np.round(x * 2.0) / 2.0  # few distinct values: many ties
    if neg_inf:
        ban = rng.random(shape) < 0.15
        ban[..., 0] = False
        x = np.where(ban, -np.inf, x)
    return x.astype(np.float32)


# --------------------------------------------------------------------------------------
# The state API
# --------------------------------------------------------------------------------------


def test_stateless_decoders_have_an_empty_state_and_unchanged_api():
    dec = sd.min_p(0.1, temperature=0.7)
    logits = jnp.asarray(random_logits(np.random.default_rng(0), (3, 20)))
    assert dec.init((3,)) == () and not dec.stateful

    @jax.jit
    def both(dec, key, logits):
        return dec.sample(key, logits), dec.sample(key, logits, state=()), dec.probs(logits), dec.probs(logits, state=())

    plain, (ids, state), q, q_state = both(dec, jax.random.key(4), logits)
    assert state == ()
    np.testing.assert_array_equal(ids, plain)
    np.testing.assert_array_equal(q_state, q)


def test_stateful_decoder_requires_its_state_to_sample():
    dec = sd.mirostat(tau=3.0)
    logits = jnp.zeros((2, 8))
    assert dec.stateful
    with pytest.raises(ValueError, match=r"state: .*Mirostat.*decoder.init"):
        dec.sample(jax.random.key(0), logits)
    with pytest.raises(ValueError, match="num_samples"):
        dec.sample(jax.random.key(0), logits, state=dec.init((2,)), num_samples=2)
    with pytest.raises(ValueError, match=r"state: must be this decoder's state \(a tuple of 1"):
        jprobs(dec, logits, state=())
    # probs / solve read the initial state by default (μ = 2τ)
    np.testing.assert_array_equal(jprobs(dec, logits), jprobs(dec, logits, state=dec.init((2,))))


def test_update_keeps_the_state_of_bad_rows_and_masked_rows():
    dec = sd.mirostat(tau=2.0, eta=0.5)
    state = dec.init((3,))
    q = jnp.full((3, 4), 0.25)
    new = dec.update(state, q, jnp.array([1, -1, 2]), valid=jnp.array([True, True, False]))
    mu = np.asarray(new[0].mu)
    assert mu[0] == pytest.approx(4.0 - 0.5 * (2.0 - 2.0))  # surprise of 1/4 is 2 bits
    assert mu[1] == 4.0 and mu[2] == 4.0


def test_state_is_a_traced_value_new_values_do_not_recompile():
    step = jax.jit(lambda dec, key, logits, state: dec.sample(key, logits, state=state))
    logits = jnp.asarray(random_logits(np.random.default_rng(1), (2, 30)))
    dec = sd.mirostat(tau=jnp.array([3.0, 2.0]), eta=jnp.array([0.1, 0.1]))
    state = dec.init((2,))
    ids, state = step(dec, jax.random.key(0), logits, state)
    n = step._cache_size()
    for tau, eta in (([2.0, 5.0], [0.5, 0.2]), ([1.0, 4.0], [0.2, 1.0])):
        d = sd.mirostat(tau=jnp.array(tau), eta=jnp.array(eta))
        ids, state = step(d, jax.random.key(1), logits, state)
    assert step._cache_size() == n


# --------------------------------------------------------------------------------------
# Mirostat
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("version", [1, 2])
def test_mirostat_mu_over_50_steps_with_fixed_keys_equals_llama_cpp(version):
    """Three rows with their own τ, η and logits sequences (ties, -inf): at every step the
    support, q and μ equal the numpy port of llama.cpp, fed the tokens the decoder drew."""
    rng = np.random.default_rng(10 + version)
    B, T, V = 3, 50, 40
    seq = random_logits(rng, (T, B, V))
    tau = np.array([1.5, 3.0, 5.0], np.float32)
    eta = np.array([0.1, 0.5, 1.0], np.float32)
    dec = sd.mirostat(tau=tau, eta=eta, version=version, m=20 if version == 1 else 100)

    @jax.jit
    def run(dec, seq, key):
        def body(state, xs):
            logits, t = xs
            q = dec.probs(logits, state=state)
            ids, new = dec.sample(jax.random.fold_in(key, t), logits, state=state)
            return new, (ids, q, state[0].mu)

        final, out = jax.lax.scan(body, dec.init((B,)), (seq, jnp.arange(T)))
        return final, out

    final, (ids, qs, mus) = run(dec, jnp.asarray(seq), jax.random.key(7))
    ids, qs, mus = np.asarray(ids), np.asarray(qs), np.asarray(mus)
    mus = np.concatenate([mus, np.asarray(final[0].mu)[None]], axis=0)
    for b in range(B):
        r_mu, r_keep, r_q = ref.mirostat_trajectory(seq[:, b], ids[:, b], float(tau[b]), float(eta[b]), version,
                                                    m=20)
        np.testing.assert_array_equal(qs[:, b] > 0, r_q > 0)
        np.testing.assert_allclose(qs[:, b], r_q, atol=2e-6)
        np.testing.assert_allclose(mus[:, b], r_mu, atol=2e-4, rtol=1e-5)
    # the controller does its job: μ moved away from 2τ and the supports vary
    assert np.all(np.abs(mus[-1] - 2 * tau) > 1e-3)
    assert len({int((qs[t, 0] > 0).sum()) for t in range(T)}) > 1


def test_mirostat_v2_hand_built():
    """p = (.5, .3, .15, .05): surprises 1, 1.74, 2.74, 4.32 bits."""
    logits = jnp.log(jnp.array([0.5, 0.3, 0.15, 0.05]))
    dec = sd.mirostat(tau=1.0, eta=0.5)
    for mu, kept in ((2.0, 2), (3.0, 3), (0.5, 1), (5.0, 4)):
        state = (sd.stateful.MirostatState(mu=jnp.float32(mu)),)
        q = np.asarray(jprobs(dec, logits, state=state))
        p = np.array([0.5, 0.3, 0.15, 0.05])[:kept]
        np.testing.assert_allclose(q[:kept], p / p.sum(), rtol=1e-6)
        assert np.all(q[kept:] == 0)
    # the update: μ ← μ − η(−log2 q(x) − τ)
    state = dec.init(())
    ids, new = jsample(dec, jax.random.key(3), logits, state)
    q = np.asarray(jprobs(dec, logits, state=state))
    assert float(new[0].mu) == pytest.approx(2.0 - 0.5 * (-math.log2(q[int(ids)]) - 1.0), rel=1e-6)


def test_mirostat_greedy_rows_and_temperature_first():
    """llama.cpp runs temperature before mirostat; temperature 0 is the argmax (surprise 0)."""
    rng = np.random.default_rng(3)
    logits = jnp.asarray(random_logits(rng, (2, 25), ties=False))
    dec = sd.mirostat(tau=2.0, eta=0.3, temperature=jnp.array([0.0, 0.7]))
    state = dec.init((2,))
    ids, new = jsample(dec, jax.random.key(0), logits, state)
    assert int(ids[0]) == int(np.argmax(np.asarray(logits[0])))
    assert float(new[0].mu[0]) == pytest.approx(4.0 + 0.3 * 2.0)
    seq = (np.asarray(logits[1]) / 0.7)[None]
    r_mu, _, r_q = ref.mirostat_trajectory(seq, [int(ids[1])], 2.0, 0.3, 2)
    np.testing.assert_allclose(jprobs(dec, logits, state=state)[1], r_q[0], atol=2e-6)
    assert float(new[0].mu[1]) == pytest.approx(r_mu[1], rel=1e-5)


def test_mirostat_bad_parameters_are_named():
    for kwargs, match in (
        (dict(tau=0.0), r"mirostat: `tau` must be in \(0, inf\), got 0.0"),
        (dict(tau=-1.0), "`tau`"),
        (dict(tau=3.0, eta=0.0), r"mirostat: `eta` must be in \(0, 1\], got 0.0"),
        (dict(tau=3.0, eta=1.5), r"`eta` must be in \(0, 1\]"),
        (dict(tau=3.0, version=3), r"mirostat: `version` must be an integer in \[1, 2\], got 3"),
        (dict(tau=3.0, m=0), "`m` must be an integer in"),
    ):
        with pytest.raises(ValueError, match=match):
            sd.mirostat(**kwargs)


# --------------------------------------------------------------------------------------
# XTC
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "threshold, kept", [(0.09, [3]), (0.19, [2, 3]), (0.29, [1, 2, 3]), (0.39, [0, 1, 2, 3])]
)
def test_xtc_llama_cpp_test_vectors(threshold, kept):
    """llama.cpp's tests/test-sampling.cpp: p = (.4, .3, .2, .1), min_keep 0 (its coin fires)."""
    logits = jnp.log(jnp.array([0.4, 0.3, 0.2, 0.1]))
    q = np.asarray(jprobs(sd.xtc(threshold, 1.0, min_keep=0), logits, key=jax.random.key(0)))
    p = np.array([0.4, 0.3, 0.2, 0.1])
    want = np.zeros(4)
    want[kept] = p[kept] / p[kept].sum()
    np.testing.assert_allclose(q, want, rtol=1e-6)


def test_xtc_at_probability_0_and_1_on_random_logits():
    rng = np.random.default_rng(5)
    B, V = 64, 30
    logits = random_logits(rng, (B, V))
    thr = rng.uniform(0.0, 0.6, B).astype(np.float32)
    min_keep = rng.choice([0, 1, 2, 5, 30], B)
    plain = np.asarray(jprobs(sd.temperature(1.0), jnp.asarray(logits)))
    for prob in (0.0, 1.0):
        dec = sd.xtc(thr, prob, min_keep=min_keep)
        for seed in range(3):
            q = np.asarray(jprobs(dec, jnp.asarray(logits), key=jax.random.key(seed)))
            if prob == 0.0:
                np.testing.assert_allclose(q, plain, atol=1e-6)
                continue
            for b in range(B):
                keep = ref.xtc_keep(logits[b], float(thr[b]), 1.0, int(min_keep[b]), chance=0.0)
                want = ref.renormalised(V, keep, np.exp(ref.log_softmax(logits[b]))[keep])
                np.testing.assert_allclose(q[b], want, atol=1e-6, err_msg=f"row {b}")
    # the rule fired on some rows and not on others (threshold > 0.5, fewer than 2 above, min_keep)
    q1 = np.asarray(jprobs(sd.xtc(thr, 1.0, min_keep=min_keep), jnp.asarray(logits), key=jax.random.key(0)))
    changed = np.any(np.abs(q1 - plain) > 1e-6, axis=-1)
    assert 0 < changed.sum() < B


def test_xtc_coin_comes_from_the_rows_key():
    """With probability .3 the rule fires on ≈30 % of (row, key) draws; each row's outcome is
    the fired or the unfired reference, decided by the uniform drawn from its own key."""
    rng = np.random.default_rng(6)
    B, V = 8, 16
    logits = random_logits(rng, (B, V), neg_inf=False)
    dec = sd.xtc(0.05, 0.3, min_keep=0)
    fired_ref = [ref.xtc_keep(logits[b], 0.05, 1.0, 0, 0.0) for b in range(B)]
    can_fire = np.array([len(k) < V for k in fired_ref])
    assert can_fire.all()
    keys = jax.random.split(jax.random.key(11), 150)
    position = len(dec.objective.transforms)  # the first support rule

    @jax.jit
    def draws(dec, keys):
        probs = jax.vmap(lambda k: dec.probs(jnp.asarray(logits), key=k))(keys)
        # the row's own uniform, from fold_in(row key, 1 + position)
        u = jax.vmap(lambda kk: row_uniform(component_keys(kk, (B,), 1 + position), (B,)))(keys)
        return jnp.sum(probs > 0, axis=-1) < V, u

    fired, u = (np.asarray(x) for x in draws(dec, keys))  # (150, B)
    n, k = fired.size, int(fired.sum())
    lo, hi = n * 0.3 - 4 * math.sqrt(n * 0.3 * 0.7), n * 0.3 + 4 * math.sqrt(n * 0.3 * 0.7)
    assert lo < k < hi, (k, n)
    # the decision is that uniform: fired iff u ≤ probability
    np.testing.assert_array_equal(fired, u <= 0.3)
    # a row keeps its coin in another batch slot when it brings its own key
    row_keys = jax.random.split(jax.random.key(2), B)
    perm = rng.permutation(B)
    a = np.asarray(jprobs(dec, jnp.asarray(logits), key=row_keys))
    b = np.asarray(jprobs(dec, jnp.asarray(logits[perm]), key=row_keys[perm]))
    np.testing.assert_array_equal(a[perm], b)


def test_xtc_needs_a_key_and_names_bad_parameters():
    with pytest.raises(ValueError, match="XTC: draws a random coin per row; pass key="):
        sd.xtc(0.1, 0.5).probs(jnp.zeros(5))
    for kwargs, match in (
        (dict(threshold=0.1, probability=1.5), r"xtc: `probability` must be in \[0, 1\], got 1.5"),
        (dict(threshold=0.1, probability=-0.1), r"`probability` must be in \[0, 1\]"),
        (dict(threshold=1.2, probability=0.5), r"xtc: `threshold` must be in \[0, 1\]"),
        (dict(threshold=0.1, probability=0.5, min_keep=-1), "`min_keep` must be an integer in"),
    ):
        with pytest.raises(ValueError, match=match):
            sd.xtc(**kwargs)


def test_xtc_sample_draws_coin_and_token_from_independent_keys():
    """sample() passes its key to the rule, whose coin comes from a fold_in of it: the same
    key gives the same tokens, and the greedy argmax respects the rule."""
    logits = jnp.log(jnp.array([[0.4, 0.3, 0.2, 0.1]] * 4))
    dec = sd.xtc(0.15, 1.0, temperature=0.0)
    ids = jax.jit(lambda d, k, x: d.sample(k, x))(dec, jax.random.key(0), logits)
    np.testing.assert_array_equal(ids, [2, 2, 2, 2])  # 0.4 and 0.3 removed; argmax of the rest


def test_chain_places_the_new_components_where_llama_cpp_does():
    dec = sd.chain(sd.Mirostat(3.0), sd.XTC(0.1, 0.5), sd.TopK(40), sd.Temperature(0.8), sd.DRY(0.8),
                   sd.RepetitionPenalty(1.1), sd.CFG(1.5))
    assert [type(t).__name__ for t in dec.objective.transforms] == ["CFG", "RepetitionPenalty", "DRY", "Temperature"]
    assert [type(r).__name__ for r in dec.objective.support] == ["TopK", "XTC", "Mirostat"]
    assert dec.stateful and dec.objective.support[-1] is dec.objective.stateful[0]
