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

from . import _numpy_ref_samplers as npr


def _log_softmax(x):
    x = np.asarray(x, np.float64)
    finite = np.isfinite(x)
    m = np.max(np.where(finite, x, -np.inf), -1, keepdims=True)
    z = np.log(np.sum(np.where(finite, np.exp(x - m), 0.0), -1, keepdims=True))
    return np.where(finite, x - m - z, -np.inf)


def _entropy(logp):
    p = np.exp(logp)
    return -np.sum(np.where(p > 0, p * np.where(p > 0, logp, 0.0), 0.0), -1, keepdims=True)


def typical_ref(scores, mass, min_tokens_to_keep=1):
    """transformers' TypicalLogitsWarper."""
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
        remove[:min_tokens_to_keep] = False
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


# --- min_keep (transformers' min_tokens_to_keep, llama.cpp's min_keep) ---------------------


def _min_keep_rows(V=24, seed=5):
    """Random rows, a row of ties (few distinct values), a row with -inf entries and one with
    only three finite tokens (fewer than the larger min_keep values)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((5, V)) * 2.5
    x[1] = np.round(x[1]) / 2.0  # ties
    x[2, rng.choice(V, V // 3, replace=False)] = -np.inf
    x[3, 3:] = -np.inf
    x[4, :6] = 4.0  # a tied top
    return x.astype(np.float32)


def _top_m(scores, m):
    """The ``m`` highest finite scores of each row (ties: lowest ids), all finite if fewer."""
    keep = np.zeros(scores.shape, bool)
    for idx in np.ndindex(*scores.shape[:-1]):
        row = scores[idx]
        order = np.lexsort((np.arange(row.size), -row))
        order = order[np.isfinite(row[order])][:m]
        keep[idx + (order,)] = True
    return keep


def _llama_keep(fn, logits, *args):
    keep = np.zeros(logits.shape, bool)
    for b, row in enumerate(logits):
        ids, _ = fn(*npr.candidates(row), *args)
        keep[b, ids] = True
    return keep


@pytest.mark.parametrize("min_keep", [0, 1, 4, 30])
def test_min_keep_equals_llama_cpp(min_keep):
    """top-p, min-p and typical with ``min_keep`` equal llama.cpp's samplers (a numpy port of
    ``src/llama-sampling.cpp``) on random rows, ties and -inf; 30 exceeds every finite count."""
    logits = _min_keep_rows()
    for p in (0.05, 0.5, 0.9):
        q = np.asarray(_probs(sd.top_p(p, min_keep=min_keep), logits))
        np.testing.assert_array_equal(q > 0, _llama_keep(npr.lc_top_p, logits, p, min_keep), err_msg=f"top_p {p}")
    for p in (0.05, 0.3, 0.9):
        q = np.asarray(_probs(sd.min_p(p, min_keep=min_keep), logits))
        np.testing.assert_array_equal(q > 0, _llama_keep(npr.lc_min_p, logits, p, min_keep), err_msg=f"min_p {p}")
    # typical: llama.cpp cuts ties at the distance threshold by sort position, transformers keeps
    # them (as the library does): compare the rows without tied distances with llama.cpp, all
    # rows with transformers' warper (min_tokens_to_keep = min_keep).
    for p in (0.2, 0.6, 0.95):
        q = np.asarray(_probs(sd.typical(p, min_keep=min_keep), logits))
        llama = _llama_keep(npr.lc_typical, logits, p, min_keep)
        np.testing.assert_array_equal((q > 0)[[0, 2, 3]], llama[[0, 2, 3]], err_msg=f"typical {p}")
        np.testing.assert_array_equal(q > 0, typical_ref(logits, p, max(min_keep, 1)), err_msg=f"typical {p}")
        expected = _softmax_on(logits, q > 0)
        assert np.abs(q - expected).max() <= 1e-6


@pytest.mark.parametrize("name", ["epsilon", "eta", "top_n_sigma", "top_h", "top_a", "top_k"])
def test_min_keep_adds_the_most_probable_tokens(name):
    """Every other rule keeps its set plus the ``min_keep`` most probable tokens (ties: lowest
    ids; transformers' ``max(top_k, min_tokens_to_keep)`` for top-k)."""
    logits = _min_keep_rows()
    t = 0.8
    tempered = logits.astype(np.float64) / np.float32(t)
    if name == "top_k":
        preset, params = sd.top_k, (1, 3)
        ref = lambda s, k: _top_m(s, k)  # noqa: E731
    else:
        preset, ref, params = CASES[name]
        params = (params[1], params[-1])
    for param in params:
        for min_keep in (0, 1, 5, 30):
            q = np.asarray(_probs(preset(param, temperature=t, min_keep=min_keep), logits), np.float64)
            keep = ref(tempered, param) | _top_m(tempered, min_keep)
            np.testing.assert_array_equal(q > 0, keep, err_msg=f"{name}({param}, min_keep={min_keep})")
            assert np.abs(q - _softmax_on(tempered, keep)).max() <= 1e-5


def test_min_keep_per_row_under_one_compilation_jit_and_vmap():
    logits = _min_keep_rows()
    traces = []

    @jax.jit
    def run(dec, x):
        traces.append(1)
        return dec.probs(x)

    per_row = np.array([0, 2, 7, 30, 3], np.int32)
    for make in (lambda mk: sd.top_p(0.3, min_keep=mk), lambda mk: sd.min_p(0.5, min_keep=mk)):
        traces.clear()
        q = np.asarray(run(make(per_row), logits))
        run(make(per_row[::-1].copy()), logits)
        for i, mk in enumerate(per_row):  # one (scalar-leaf) compilation for every value
            np.testing.assert_array_equal(q[i], np.asarray(run(make(int(mk)), logits))[i])
        assert len(traces) == 2  # per-row and scalar leaves: shapes, not values
    qv = jax.vmap(lambda x, mk: sd.top_p(0.3, min_keep=mk).probs(x))(jnp.asarray(logits), jnp.asarray(per_row))
    np.testing.assert_array_equal(np.asarray(qv), np.asarray(run(sd.top_p(0.3, min_keep=per_row), logits)))


def test_min_keep_beyond_the_window_and_larger_than_the_row():
    """Rows of 3000 (the rules' candidate-window paths) with min_keep past the window's
    candidates, and min_keep above the finite count: every finite token, never a -inf one."""
    rng = np.random.default_rng(11)
    logits = (rng.standard_normal((2, 3000)) * 3).astype(np.float32)
    logits[0, :10] += 12.0  # peaked: top-p keeps a handful, min_keep adds many
    logits[1, 100:] = -np.inf
    for mk in (300, 2000):
        q = np.asarray(_probs(sd.top_p(0.9, min_keep=mk), logits))
        keep = npr_topp(logits, 0.9) | _top_m(logits.astype(np.float64), mk)
        np.testing.assert_array_equal(q > 0, keep)
        assert (q[1] > 0).sum() == 100


def npr_topp(s, p):
    keep = np.zeros(s.shape, bool)
    for b, row in enumerate(s):
        ids, _ = npr.lc_top_p(*npr.candidates(row), p, 0)
        keep[b, ids] = True
    return keep


def test_bad_min_keep_is_named():
    cases = [
        (lambda: sd.top_p(0.9, min_keep=-1), "top_p: `min_keep` must be an integer in [0, inf), got -1"),
        (lambda: sd.min_p(0.1, min_keep=2.5), "min_p: `min_keep` must be an integer in [0, inf), got 2.5"),
        (lambda: sd.typical(0.9, min_keep=np.array([1, -2])), "typical: `min_keep`"),
        (lambda: sd.TopK(3, min_keep=-1), "TopK: `min_keep` must be an integer"),
        (lambda: sd.Epsilon(0.1, min_keep=1.5), "Epsilon: `min_keep`"),
        (lambda: sd.TopNSigma(1.0, min_keep="3"), "TopNSigma: `min_keep`"),
    ]
    for make, msg in cases:
        with pytest.raises(ValueError) as e:
            make()
        assert msg in str(e.value), (msg, str(e.value))

    @jax.jit
    def run(mk, x):
        return sd.Decoder(sd.Objective(terms=sd.Entropy(), support=sd.TopP(0.5, min_keep=mk))).probs(x)

    with pytest.raises(Exception, match="TopP: `min_keep`"):
        sd.checked(run)(jnp.int32(-3), jnp.zeros((2, 5)))
