"""Two sources of scores: CFG, contrastive decoding and DoLa against numpy versions of
their published definitions (transformers for CFG and DoLa, Li et al. 2023 for contrastive
decoding), and against the cvxpy reference where the problem is convex."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import simplex_decode as sd
from simplex_decode import reference

from . import _numpy_ref_samplers as ref


@jax.jit
def jprobs(dec, logits, second, history=None):
    return dec.probs(logits, second_logits=second, history=history)


def pair(rng, shape, *, ties=True, neg_inf=True):
    """Two logits arrays (ties, some -inf in either, never a fully banned row)."""
    out = []
    for _ in range(2):
        x = rng.standard_normal(shape) * 2.0
        if ties:
            x = np.round(x * 2) / 2
        if neg_inf:
            ban = rng.random(shape) < 0.1
            ban[..., :2] = False
            x = np.where(ban, -np.inf, x)
        out.append(x.astype(np.float32))
    return out


# --------------------------------------------------------------------------------------
# CFG
# --------------------------------------------------------------------------------------


def test_cfg_equals_transformers_on_random_logits():
    rng = np.random.default_rng(0)
    B, V = 40, 24
    cond, uncond = pair(rng, (B, V))
    g = rng.choice([0.0, 0.5, 1.0, 1.5, 3.0], B).astype(np.float32)
    q = np.asarray(jprobs(sd.cfg(g), jnp.asarray(cond), jnp.asarray(uncond)))
    for b in range(B):
        s = ref.cfg_scores(cond[b], uncond[b], float(g[b]))
        # a token the negative stream bans gets the log-probability RULED_OUT (-1e20) there
        lu = ref.log_softmax(uncond[b])
        lu = np.where(lu > -np.inf, lu, sd.contrast.RULED_OUT)
        lc = ref.log_softmax(cond[b])
        with np.errstate(invalid="ignore"):
            s_floor = np.where(lc > -np.inf, g[b] * lc + (1 - g[b]) * lu, -np.inf)
        np.testing.assert_allclose(q[b], ref.softmax(s_floor), atol=2e-6, err_msg=f"row {b}")
        if np.all(uncond[b][cond[b] > -np.inf] > -np.inf):  # no floor involved: transformers exactly
            np.testing.assert_allclose(q[b], ref.softmax(s), atol=2e-6)
    assert np.isfinite(q).all()


def test_cfg_limits_and_temperature():
    rng = np.random.default_rng(1)
    cond, uncond = pair(rng, (3, 10), neg_inf=False)
    c, u = jnp.asarray(cond), jnp.asarray(uncond)
    np.testing.assert_allclose(jprobs(sd.cfg(1.0), c, u), jprobs(sd.temperature(1.0), c, None), atol=1e-6)
    np.testing.assert_allclose(jprobs(sd.cfg(0.0), c, u), jprobs(sd.temperature(1.0), u, None), atol=1e-6)
    # temperature divides the guided scores; temperature 0 is their argmax
    s = np.stack([ref.cfg_scores(cond[b], uncond[b], 2.0) for b in range(3)])
    np.testing.assert_allclose(jprobs(sd.cfg(2.0, temperature=0.5), c, u),
                               np.stack([ref.softmax(r / 0.5) for r in s]), atol=2e-6)
    ids = jax.jit(lambda d, k, x, y: d.sample(k, x, second_logits=y))(sd.cfg(2.0, 0.0), jax.random.key(0), c, u)
    np.testing.assert_array_equal(ids, s.argmax(-1))


def test_cfg_and_contrastive_agree_with_cvxpy():
    pytest.importorskip("cvxpy")
    rng = np.random.default_rng(2)
    cond, _ = pair(rng, (3, 7))  # -inf in the first source: banned tokens
    _, uncond = pair(rng, (3, 7), neg_inf=False)  # (a ruled-out token's 1e20 contrast would not be an LP to solve)
    for dec in (sd.contrastive(0.2, beta=0.6, temperature=0.7), sd.chain(sd.CFG(2.0), sd.MinP(0.05), sd.Temperature(0.9))):
        q = np.asarray(jprobs(dec, jnp.asarray(cond), jnp.asarray(uncond)))
        r = reference.solve(dec.objective, cond, second_logits=uncond)
        np.testing.assert_allclose(q, r, atol=2e-5)


# --------------------------------------------------------------------------------------
# Contrastive decoding
# --------------------------------------------------------------------------------------


def test_contrastive_equals_li_et_al_on_random_logits():
    rng = np.random.default_rng(3)
    B, V = 40, 24
    expert, amateur = pair(rng, (B, V))
    amateur = np.where(np.isinf(amateur), 0.0, amateur).astype(np.float32)  # the amateur allows every token
    alpha = rng.choice([0.0, 0.05, 0.1, 0.5, 1.0], B).astype(np.float32)
    beta = rng.choice([0.0, 0.5, 1.0], B).astype(np.float32)
    tau_a = rng.choice([0.5, 1.0, 1.5], B).astype(np.float32)
    e, a = jnp.asarray(expert), jnp.asarray(amateur)
    for t in (1.0, 0.6):
        dec = sd.contrastive(alpha, beta, t, amateur_temperature=tau_a)
        q = np.asarray(jprobs(dec, e, a))
        for b in range(B):
            s = ref.contrastive_scores(expert[b], amateur[b], float(alpha[b]), float(beta[b]), float(tau_a[b]))
            np.testing.assert_allclose(q[b], ref.softmax(s / t), atol=2e-6, err_msg=f"row {b}")
    # the paper's greedy search: the argmax of the contrast over the plausible head
    greedy = jax.jit(lambda d, k, x, y: d.sample(k, x, second_logits=y))(
        sd.contrastive(alpha, beta, 0.0, amateur_temperature=tau_a), jax.random.key(0), e, a)
    want = [np.argmax(ref.contrastive_scores(expert[b], amateur[b], float(alpha[b]), float(beta[b]),
                                             float(tau_a[b]))) for b in range(B)]
    np.testing.assert_array_equal(greedy, want)


def test_contrastive_token_the_amateur_rules_out_wins_without_nan():
    expert = jnp.log(jnp.array([0.5, 0.3, 0.2]))
    amateur = jnp.array([0.0, -jnp.inf, 0.0])
    q = np.asarray(jprobs(sd.contrastive(0.1), expert, amateur))
    assert np.isfinite(q).all() and q.argmax() == 1 and q[1] > 0.999


def test_contrastive_is_plain_expert_at_beta_zero_and_alpha_zero():
    rng = np.random.default_rng(4)
    e, a = (jnp.asarray(x) for x in pair(rng, (4, 12), neg_inf=False))
    np.testing.assert_allclose(jprobs(sd.contrastive(0.0, 0.0), e, a), jprobs(sd.temperature(1.0), e, None),
                               atol=1e-6)


# --------------------------------------------------------------------------------------
# DoLa
# --------------------------------------------------------------------------------------


def test_dola_premature_layer_and_scores_equal_transformers():
    rng = np.random.default_rng(5)
    B, J, V = 24, 4, 30
    final = (rng.standard_normal((B, V)) * 3).astype(np.float32)
    cands = (rng.standard_normal((B, J, V)) * rng.uniform(0.5, 4, (B, J, 1))).astype(np.float32)
    final[:3] = np.round(final[:3])  # ties
    e, c = jnp.asarray(final), jnp.asarray(cands)
    chosen, js = (np.asarray(x) for x in jax.jit(lambda e, c: (sd.DoLa().premature(e, c),
                                                                sd.contrast.js_divergence(e, c)))(e, c))
    for b in range(B):
        want = ref.dola_js(final[b], cands[b])
        np.testing.assert_allclose(js[b], want, rtol=1e-5)
        assert chosen[b] == np.argmax(want)
    assert len(set(chosen.tolist())) > 1  # rows choose different layers
    hist = rng.integers(0, V, (B, 6))
    q = np.asarray(jprobs(sd.dola(0.1, 1.2, 0.8), e, c, jnp.asarray(hist)))
    for b in range(B):
        s, _ = ref.dola_scores(final[b], cands[b])
        s = ref.repetition_penalty(s, hist[b], 1.2)
        np.testing.assert_allclose(q[b], ref.softmax(s / 0.8), atol=2e-6, err_msg=f"row {b}")
    # greedy DoLa (transformers' default) and one candidate layer (no selection)
    ids = jax.jit(lambda d, k, x, y, h: d.sample(k, x, second_logits=y, history=h))(
        sd.dola(temperature=0.0), jax.random.key(0), jnp.asarray(final), jnp.asarray(cands[:, 1]), jnp.asarray(hist))
    want = [np.argmax(ref.repetition_penalty(ref.dola_scores(final[b], cands[b, 1])[0], hist[b], 1.2)) for b in range(B)]
    np.testing.assert_array_equal(ids, want)


def test_dola_row_does_not_depend_on_its_batch():
    rng = np.random.default_rng(6)
    final = rng.standard_normal((6, 20)).astype(np.float32)
    cands = rng.standard_normal((6, 3, 20)).astype(np.float32) * 2
    dec = sd.dola(repetition_penalty=1.0)
    full = np.asarray(jprobs(dec, jnp.asarray(final), jnp.asarray(cands)))
    perm = rng.permutation(6)
    np.testing.assert_array_equal(np.asarray(jprobs(dec, jnp.asarray(final[perm]), jnp.asarray(cands[perm]))),
                                  full[perm])


# --------------------------------------------------------------------------------------
# Bad input
# --------------------------------------------------------------------------------------


def test_second_logits_shape_and_presence_are_named():
    x = jnp.zeros((2, 5))
    with pytest.raises(ValueError, match=r"second_logits: must have the logits' shape batch \+ \(V,\) = \(2, 5\)"):
        sd.cfg(1.5).probs(x, second_logits=jnp.zeros((2, 6)))
    with pytest.raises(ValueError, match=r"second_logits: must have the logits' shape"):
        sd.cfg(1.5).probs(x, second_logits=jnp.zeros((3, 5)))
    with pytest.raises(ValueError, match=r"CFG: `second_logits` must have shape \(2, 5\), got \(2, 3, 5\)"):
        sd.cfg(1.5).probs(x, second_logits=jnp.zeros((2, 3, 5)))
    with pytest.raises(ValueError, match="AmateurContrast: reads a second logits array; pass second_logits="):
        sd.contrastive().probs(x)
    with pytest.raises(ValueError, match="DoLa: reads a second logits array"):
        sd.dola(repetition_penalty=1.0).probs(x)
    with pytest.raises(ValueError, match=r"cfg: `guidance_scale` must be in \[0, inf\), got -1.0"):
        sd.cfg(-1.0)
    with pytest.raises(ValueError, match=r"contrastive: `amateur_temperature` must be in \(0, inf\)"):
        sd.contrastive(amateur_temperature=0.0)
    with pytest.raises(ValueError, match=r"contrastive: `alpha` must be in \[0, 1\]"):
        sd.contrastive(alpha=1.5)


def test_nonfinite_second_logits_flag_the_row():
    x = jnp.zeros((2, 4))
    second = jnp.array([[0.0, jnp.nan, 0.0, 0.0], [0.0, 1.0, 2.0, 3.0]])
    sol = sd.cfg(1.5).solve(x, second_logits=second)
    assert sol.status.tolist() == [sd.Status.NONFINITE_LOGITS, sd.Status.OK]
    assert np.isfinite(np.asarray(sol.q)).all() and float(sol.q[0].sum()) == 0.0
