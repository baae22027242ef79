"""The catalogue's support rules against from-scratch numpy versions of their published definitions.

Each reference below re-implements the peer's code path in float64 numpy with a full sort
(transformers' ``TypicalLogitsWarper``, ``EpsilonLogitsWarper``, ``EtaLogitsWarper``,
``TopHLogitsWarper``; llama.cpp's ``top_n_sigma``; RWKV's top-a), applied, as transformers
does, to the tempered scores. Ties in a sort are broken by the lowest token id.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import simplex_decode as sd
from simplex_decode import reference


def _log_softmax(x):
    x = np.asarray(x, np.float64)
    finite = np.isfinite(x)
    m = np.max(np.where(finite, x, -np.inf), -1, keepdims=True)
    z = np.log(np.sum(np.where(finite, np.exp(x - m), 0.0), -1, keepdims=True))
    return np.where(finite, x - m - z, -np.inf)


def _entropy(logp):
    p = np.exp(logp)
    return -np.sum(np.where(p > 0, p * np.where(p > 0, logp, 0.0), 0.0), -1, keepdims=True)


def typical_ref(scores, mass):
    """transformers' TypicalLogitsWarper (min_tokens_to_keep=1)."""
    scores = np.asarray(scores, np.float64)
    keep = np.zeros(scores.shape, bool)
    for idx in np.ndindex(*scores.shape[:-1]):
        row = scores[idx]
        logp = _log_softmax(row)
        ent = -np.nansum(logp * np.exp(logp))
        shifted = np.abs(-logp - ent)
        order = np.argsort(shifted, kind="stable")
        cum = np.cumsum(np.exp(_log_softmax(row[order])))
        last = min(int(np.sum(cum < mass)), row.size - 1)
        remove = shifted[order] > shifted[order][last]
        remove[0] = False
        keep[idx + (order[~remove],)] = True
    return keep & np.isfinite(scores)


def epsilon_ref(scores, eps):
    """transformers' EpsilonLogitsWarper: remove prob < eps unless the score is the max."""
    scores = np.asarray(scores, np.float64)
    probs = np.exp(_log_softmax(scores))
    top = scores.max(-1, keepdims=True)
    return ~((probs < eps) & (scores < top)) & np.isfinite(scores)


def eta_ref(scores, eps):
    """transformers' EtaLogitsWarper: cutoff min(eps, sqrt(eps)·exp(−H))."""
    scores = np.asarray(scores, np.float64)
    logp = _log_softmax(scores)
    cut = np.minimum(eps, np.sqrt(eps) * np.exp(-_entropy(logp)))
    top = scores.max(-1, keepdims=True)
    return ~((np.exp(logp) < cut) & (scores < top)) & np.isfinite(scores)


def top_n_sigma_ref(logits, n):
    """llama.cpp's top-n-sigma (for n > 0): keep logit ≥ max − n·std over the finite logits."""
    x = np.asarray(logits, np.float64)
    finite = np.isfinite(x)
    cnt = finite.sum(-1, keepdims=True)
    mean = np.where(finite, x, 0).sum(-1, keepdims=True) / cnt
    std = np.sqrt(np.where(finite, (x - mean) ** 2, 0).sum(-1, keepdims=True) / cnt)
    top = np.where(finite, x, -np.inf).max(-1, keepdims=True)
    return finite & ~(x < top - n * std)


def top_h_ref(scores, h, top_n=100):
    """transformers' TopHLogitsWarper. H(π) is taken as the sum of the same entropy terms
    (mathematically identical; at h = 1 transformers' ``cum ≤ H`` is otherwise decided by
    rounding, and the definition keeps every one of the top_n tokens)."""
    scores = np.asarray(scores, np.float64)
    keep = np.zeros(scores.shape, bool)
    for idx in np.ndindex(*scores.shape[:-1]):
        row = scores[idx]
        n = min(top_n, row.size)
        order = np.argsort(-row, kind="stable")[:n]
        logp = _log_softmax(row[order])
        p = np.exp(logp)
        cum = np.cumsum(np.where(p > 0, -p * logp, 0.0))
        tau = cum[-1] * h
        sel = cum <= tau
        sel[0] = True
        keep[idx + (order[sel],)] = True
    return keep & np.isfinite(scores)


def top_a_ref(scores, a):
    """RWKV's top-a: remove prob < a·max_prob² (the best token always stays)."""
    scores = np.asarray(scores, np.float64)
    probs = np.exp(_log_softmax(scores))
    top = probs.max(-1, keepdims=True)
    return ((probs >= a * top**2) | (scores == scores.max(-1, keepdims=True))) & np.isfinite(scores)


# One compilation per (rule, shape): parameters are leaves, so new values reuse it.
_probs = jax.jit(lambda dec, x: dec.probs(x))


def _softmax_on(scores, keep):
    z = np.where(keep, np.asarray(scores, np.float64), -np.inf)
    return np.exp(_log_softmax(z))


CASES = {
    # name: (preset(param, temperature), numpy reference on tempered scores, params)
    "typical": (sd.typical, typical_ref, (0.2, 0.5, 0.9, 0.95, 1.0)),
    "epsilon": (sd.epsilon, epsilon_ref, (0.0, 3e-4, 0.01, 0.1, 0.6)),
    "eta": (sd.eta, eta_ref, (3e-4, 4e-3, 0.05, 0.5)),
    "top_n_sigma": (sd.top_n_sigma, top_n_sigma_ref, (0.5, 1.0, 2.0, 3.5)),
    "top_h": (sd.top_h, top_h_ref, (0.1, 0.4, 0.8, 1.0)),
    "top_a": (sd.top_a, top_a_ref, (0.0, 0.2, 1.0, 4.0)),
}
SHAPES = [(7,), (2, 3, 300), (3, 3000)]


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_distribution_equals_published_definition(name, shape):
    preset, ref, params = CASES[name]
    rng = np.random.default_rng(len(shape) * 1000 + shape[-1])
    logits = (rng.standard_normal(shape) * 2.5).astype(np.float32)
    if len(shape) == 3:
        # Banned tokens (-inf logits, as the rules before a warper leave them in transformers)
        # must be invisible to the rule: its probabilities, entropy and σ ignore them.
        banned = rng.random(shape) < 0.25
        banned[..., 0] = False
        logits[banned] = -np.inf
    t = 0.8
    tempered = logits.astype(np.float64) / np.float32(t)
    for param in params:
        q = np.asarray(_probs(preset(param, temperature=t), logits), np.float64)
        keep = ref(tempered, param)
        expected = _softmax_on(tempered, keep)
        np.testing.assert_array_equal(q > 0, keep, err_msg=f"{name}({param}) support")
        assert np.abs(q - expected).max() <= 1e-5, (name, param)


EXTREME = {"typical": 1e-6, "epsilon": 0.999, "eta": 0.999, "top_n_sigma": 0.0, "top_h": 1e-6, "top_a": 50.0}


@pytest.mark.parametrize("name", sorted(CASES))
def test_equals_cvxpy_optimum_and_keeps_a_token(name):
    """Each catalogue decoder is ``argmax <q, s/T> + H(q)`` on its support: the cvxpy optimum.
    With the most extreme parameter it still keeps at least one token."""
    pytest.importorskip("cvxpy")
    preset, _, params = CASES[name]
    rng = np.random.default_rng(17)
    for row in (rng.standard_normal(7) * 2, np.array([30.0, 0, -5, -5, -5, -5, -5]), np.zeros(7)):
        logits = row.astype(np.float32)
        for param in (params[2], EXTREME[name]):
            dec = preset(param, temperature=0.8)
            q = np.asarray(_probs(dec, logits), np.float64)
            assert (q > 0).sum() >= 1
            assert np.abs(q - reference.solve(dec.objective, logits)).max() <= 1e-5, (name, param)


def test_top_n_sigma_is_temperature_invariant_and_from_model():
    rng = np.random.default_rng(3)
    logits = (rng.standard_normal((3, 3000)) * 3).astype(np.float32)
    base = np.asarray(_probs(sd.top_n_sigma(1.5), logits)) > 0
    for t in (0.3, 0.7, 2.0):
        np.testing.assert_array_equal(np.asarray(_probs(sd.top_n_sigma(1.5, temperature=t), logits)) > 0, base)
    # from_model reads the raw logits, so a penalty applied before it does not move the cut.
    bias = np.zeros(3000, np.float32)
    bias[np.argmax(logits, -1)] = -50.0
    obj = sd.Objective(terms=sd.Entropy(), support=sd.TopNSigma(1.5, from_model=True), transforms=sd.LogitBias(bias))
    np.testing.assert_array_equal(np.asarray(_probs(sd.Decoder(obj), logits)) > 0, top_n_sigma_ref(logits, 1.5))


def test_typical_drops_the_most_probable_token():
    logits = np.array([4.0, 3.0, 3.0, 3.0, 3.0, 3.0, 0.0], np.float32)
    q = np.asarray(_probs(sd.typical(0.5), logits))
    assert q[0] == 0.0 and np.allclose(q[1:6], 0.2)


def test_top_h_reads_at_most_top_n_tokens():
    logits = np.broadcast_to(np.linspace(3.0, 0.0, 300, dtype=np.float32), (2, 3, 300))  # many tokens kept
    q_default = np.asarray(_probs(sd.top_h(1.0, temperature=0.8), logits))
    assert np.all((q_default > 0).sum(-1) == 100)
    q_wide = np.asarray(_probs(sd.top_h(1.0, top_n=300), logits))
    np.testing.assert_array_equal(q_wide > 0, top_h_ref(logits, 1.0, top_n=300))


def test_per_row_parameters_under_one_compilation():
    rng = np.random.default_rng(9)
    logits = (rng.standard_normal((3, 200)) * 2).astype(np.float32)
    traces = []

    @jax.jit
    def run(dec, x):
        traces.append(1)
        return dec.probs(x)

    for name, (preset, ref, params) in sorted(CASES.items()):
        traces.clear()
        per_row = np.array(params[:3], np.float32)
        q = np.asarray(run(preset(per_row), logits), np.float64)
        for i in range(3):
            expected = _softmax_on(logits[i], ref(logits[i].astype(np.float64), params[i]))
            assert np.abs(q[i] - expected).max() <= 1e-5, (name, i)
        run(preset(per_row[::-1].copy()), logits)
        assert len(traces) == 1, name


def test_bad_parameters_are_named():
    cases = [
        (lambda: sd.Typical(0.0), "Typical: `p` must be in (0, 1]"),
        (lambda: sd.Typical(1.5), "Typical: `p`"),
        (lambda: sd.typical(-0.1), "typical: `p`"),  # the preset names its own argument
        (lambda: sd.Epsilon(1.0), "Epsilon: `epsilon` must be in [0, 1)"),
        (lambda: sd.Eta(-1e-3), "Eta: `epsilon`"),
        (lambda: sd.TopNSigma(-1.0), "TopNSigma: `n` must be in [0, inf)"),
        (lambda: sd.TopH(0.0), "TopH: `h`"),
        (lambda: sd.TopH(0.5, top_n=0), "TopH: `top_n`"),
        (lambda: sd.TopA(-0.5), "TopA: `a`"),
        (lambda: sd.Typical(np.array([0.5, 1.2])), "Typical: `p`"),
    ]
    for make, msg in cases:
        with pytest.raises(ValueError) as e:
            make()
        assert msg in str(e.value), (msg, str(e.value))


def test_traced_bad_parameter_raises_under_checked():
    x = jnp.zeros((2, 5))

    @jax.jit
    def run(p, x):
        return sd.Decoder(sd.Objective(terms=sd.Entropy(), support=sd.Typical(p))).probs(x)

    with pytest.raises(Exception, match="Typical: `p`"):
        sd.checked(run)(jnp.float32(1.5), x)
