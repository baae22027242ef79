"""sd.chain: combinations in one line, in a stated and changeable order."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import simplex_decode as sd
from simplex_decode import reference

from .test_catalogue_supports import _log_softmax, epsilon_ref, eta_ref, top_h_ref, typical_ref
from .test_history import repetition_ref

_probs = jax.jit(lambda dec, x, h: dec.probs(x, history=h))


def topk_ref(s, k):
    keep = np.zeros(s.shape, bool)
    for idx in np.ndindex(*s.shape[:-1]):
        keep[idx + (np.argsort(-s[idx], kind="stable")[:k],)] = True
    return keep & np.isfinite(s)


def topp_ref(s, p):
    """transformers' TopPLogitsWarper: keep a token iff the mass ranked before it is < p."""
    keep = np.zeros(s.shape, bool)
    for idx in np.ndindex(*s.shape[:-1]):
        probs = np.exp(_log_softmax(s[idx]))
        order = np.argsort(-probs, kind="stable")
        before = np.cumsum(probs[order]) - probs[order]
        keep[idx + (order[before < p],)] = True
    return keep & np.isfinite(s)


def minp_ref(s, p):
    probs = np.exp(_log_softmax(s))
    return probs >= p * probs.max(-1, keepdims=True)


def _pipeline(s, steps):
    """Apply warpers one after another, each seeing the −inf of the previous ones (transformers)."""
    s = np.asarray(s, np.float64)
    for ref, param in steps:
        s = np.where(ref(s, param), s, -np.inf)
    return np.exp(_log_softmax(s))


def test_default_order_is_transformers_order():
    dec = sd.chain(sd.Eta(1e-3), sd.MinP(0.05), sd.Typical(0.9), sd.Epsilon(1e-4), sd.TopP(0.9),
                   sd.TopK(50), sd.TopH(0.5), sd.Temperature(0.7), sd.RepetitionPenalty(1.2))
    assert [type(r).__name__ for r in dec.objective.support] == [
        "TopH", "TopK", "TopP", "MinP", "Typical", "Epsilon", "Eta"
    ]
    assert [type(t).__name__ for t in dec.objective.transforms] == ["RepetitionPenalty", "Temperature"]
    assert [type(t).__name__ for t in dec.objective.terms] == ["Entropy"]
    given = sd.chain(sd.MinP(0.05), sd.TopK(50), sd.Temperature(0.7), sd.RepetitionPenalty(1.2), order="given")
    assert [type(r).__name__ for r in given.objective.support] == ["MinP", "TopK"]
    assert [type(t).__name__ for t in given.objective.transforms] == ["Temperature", "RepetitionPenalty"]
    vllm = sd.chain(sd.TopP(0.9), sd.TopK(50), sd.MinP(0.05), order="vllm")
    assert [type(r).__name__ for r in vllm.objective.support] == ["MinP", "TopK", "TopP"]


@pytest.mark.parametrize("shape", [(5, 64), (2, 2, 500)], ids=str)
def test_chain_equals_transformers_pipeline(shape):
    rng = np.random.default_rng(shape[-1])
    V = shape[-1]
    logits = (rng.standard_normal(shape) * 2.5).astype(np.float32)
    history = rng.integers(0, V, size=shape[:-1] + (12,))
    pen, t = 1.3, 0.7
    dec = sd.chain(sd.Eta(2e-3), sd.Epsilon(1e-3), sd.Typical(0.95), sd.MinP(0.02), sd.TopP(0.9),
                   sd.TopK(40), sd.Temperature(t), sd.RepetitionPenalty(pen))
    q = np.asarray(_probs(dec, logits, history), np.float64)
    flat_l, flat_h = logits.reshape(-1, V), history.reshape(-1, 12)
    s = np.stack([repetition_ref(flat_l[i : i + 1], [list(flat_h[i])], pen)[0] for i in range(len(flat_l))])
    s = (s.astype(np.float32) / np.float32(t)).astype(np.float64)
    ref = _pipeline(s, [(topk_ref, 40), (topp_ref, 0.9), (minp_ref, 0.02), (typical_ref, 0.95),
                        (epsilon_ref, 1e-3), (eta_ref, 2e-3)]).reshape(shape)
    assert np.abs(q - ref).max() <= 1e-5


def test_order_changes_the_support_and_each_order_matches_its_pipeline():
    rng = np.random.default_rng(1)
    logits = (rng.standard_normal((64, 40)) * 2).astype(np.float32)
    no_history = np.zeros((64, 0), int)
    rules = (sd.TopP(0.6), sd.MinP(0.3), sd.TopH(0.6))
    q_tf = np.asarray(_probs(sd.chain(*rules), logits, no_history), np.float64)
    q_vl = np.asarray(_probs(sd.chain(*rules, order="vllm"), logits, no_history), np.float64)
    q_given = np.asarray(_probs(sd.chain(*rules, order="given"), logits, no_history), np.float64)
    s = logits.astype(np.float64)
    ref_tf = _pipeline(s, [(top_h_ref, 0.6), (topp_ref, 0.6), (minp_ref, 0.3)])
    ref_vl = _pipeline(s, [(minp_ref, 0.3), (topp_ref, 0.6), (top_h_ref, 0.6)])
    ref_given = _pipeline(s, [(topp_ref, 0.6), (minp_ref, 0.3), (top_h_ref, 0.6)])
    assert np.abs(q_tf - ref_tf).max() <= 1e-5
    assert np.abs(q_vl - ref_vl).max() <= 1e-5
    assert np.abs(q_given - ref_given).max() <= 1e-5
    assert np.abs(q_tf - q_vl).max() > 1e-2  # the order is not cosmetic


def test_chain_extends_a_preset_and_keeps_its_terms():
    rng = np.random.default_rng(2)
    logits = (rng.standard_normal((3, 30)) * 2).astype(np.float32)
    history = rng.integers(0, 30, size=(3, 6))
    base = sd.top_p(0.9, temperature=0.7)
    dec = sd.chain(base, sd.MinP(0.05), sd.RepetitionPenalty(1.2))
    assert [type(r).__name__ for r in dec.objective.support] == ["TopP", "MinP"]
    assert [type(t).__name__ for t in dec.objective.transforms] == ["RepetitionPenalty", "Temperature"]
    same = sd.Decoder(sd.Objective(terms=sd.Entropy(), support=(sd.TopP(0.9), sd.MinP(0.05)),
                                   transforms=(sd.RepetitionPenalty(1.2), sd.Temperature(0.7))))
    np.testing.assert_array_equal(np.asarray(_probs(dec, logits, history)), np.asarray(_probs(same, logits, history)))
    # A greedy base stays greedy (no default entropy term is added).
    q = np.asarray(_probs(sd.chain(sd.greedy(), sd.BanTokens([int(np.argmax(logits[0]))])), logits, None))
    assert q[0].max() == 1.0 and q[0, int(np.argmax(logits[0]))] == 0.0
    # An explicit term replaces the default entropy: sparsemax on the top-k support.
    q = np.asarray(_probs(sd.chain(sd.SquaredL2(), sd.TopK(5), sd.Temperature(0.5)), logits, None))
    ref = reference.solve(sd.Objective(terms=sd.SquaredL2(), support=sd.TopK(5), transforms=sd.Temperature(0.5)),
                          logits)
    assert np.abs(q - ref).max() <= 1e-5


def test_chain_with_penalties_equals_cvxpy():
    pytest.importorskip("cvxpy")
    rng = np.random.default_rng(3)
    logits = (rng.standard_normal((3, 25)) * 2).astype(np.float32)
    history = rng.integers(0, 25, size=(3, 10))
    mask = rng.random((3, 10)) < 0.7
    dec = sd.chain(sd.FrequencyPenalty(0.4), sd.PresencePenalty(0.2), sd.NoRepeatNGram(2), sd.TopK(12),
                   sd.Typical(0.9), sd.Temperature(0.8))
    q = np.asarray(jax.jit(lambda d, x, h, m: d.probs(x, history=h, history_mask=m))(dec, logits, history, mask))
    ref = reference.solve(dec.objective, logits, history=history, history_mask=mask)
    assert np.abs(q - ref).max() <= 1e-5


def test_chain_rejects_bad_input():
    with pytest.raises(ValueError, match="chain: `order` must be one of"):
        sd.chain(sd.TopK(3), order="llama")
    with pytest.raises(ValueError, match="chain: components must be"):
        sd.chain(sd.TopK(3), 0.7)
    with pytest.raises(ValueError, match="chain: at most one Decoder or Objective"):
        sd.chain(sd.top_p(0.9), sd.min_p(0.1))
    with pytest.raises(ValueError, match="solver: must be one of"):
        sd.chain(sd.TopK(3), solver="nope")


def test_chain_is_one_compilation_for_new_parameter_values():
    traces = []

    @jax.jit
    def run(dec, x):
        traces.append(1)
        return dec.probs(x)

    x = jnp.asarray(np.random.default_rng(4).standard_normal((2, 50)), jnp.float32)
    for p, t in [(0.9, 0.7), (0.5, 1.3), (0.99, 0.2)]:
        run(sd.chain(sd.TopP(p), sd.Typical(p), sd.Temperature(t)), x)
    assert len(traces) == 1


def test_llama_cpp_order_sorts_and_places_truncation_before_temperature():
    dec = sd.chain(sd.Temperature(0.7), sd.XTC(0.1, 0.5), sd.MinP(0.05), sd.TopP(0.9), sd.Typical(0.9),
                   sd.TopK(40), sd.TopNSigma(1.0), sd.PresencePenalty(0.1), sd.RepetitionPenalty(1.1),
                   order="llama.cpp")
    obj = dec.objective
    assert [type(r).__name__ for r in obj.support] == ["TopNSigma", "TopK", "Typical", "TopP", "MinP", "XTC"]
    assert [type(t).__name__ for t in obj.transforms] == ["RepetitionPenalty", "PresencePenalty", "Temperature"]
    assert obj.support_at == (2,) * 6  # every rule reads the scores before the temperature
    # mirostat reads the tempered scores (llama.cpp: temperature → mirostat)
    miro = sd.chain(sd.Mirostat(5.0), sd.TopK(40), sd.Temperature(0.7), order="llama.cpp").objective
    assert miro.support_at == (0, 1)
    # without a temperature the placement is the default one
    assert sd.chain(sd.TopK(4), sd.TopP(0.9), order="llama.cpp").objective.support_at is None
    with pytest.raises(ValueError, match="Objective: `support_at` must be None or 1 integers"):
        sd.Objective(support=sd.TopK(2), transforms=sd.Temperature(0.5), support_at=(2,))
    with pytest.raises(ValueError, match="non-decreasing"):
        sd.Objective(support=(sd.TopK(2), sd.TopP(0.5)), transforms=sd.Temperature(0.5), support_at=(1, 0))


@pytest.mark.parametrize("temp", [0.6, 1.7])
def test_llama_cpp_chain_equals_numpy_port(temp):
    """sd.chain(order="llama.cpp") equals a numpy port of llama.cpp's default sampler chain
    (penalties → top-nσ → top-k → typical → top-p → min-p → XTC → temperature → dist): the
    truncation reads the penalised, untempered logits; q = softmax(logits / temp) on what is left."""
    from . import _numpy_ref_samplers as npr

    rng = np.random.default_rng(7)
    B, V = 12, 48
    logits = (rng.standard_normal((B, V)) * 2.5).astype(np.float32)
    logits[1, rng.choice(V, 10, replace=False)] = -np.inf
    history = rng.integers(0, V, size=(B, 10))
    settings = dict(repeat=1.3, freq=0.2, present=0.1, top_n_sigma=2.0, top_k=20, typical=0.95, top_p=0.5,
                    min_p=0.05, xtc=(0.12, 1.0, 2, 0.0), temp=temp, min_keep=3)
    mk = settings["min_keep"]
    dec = sd.chain(sd.Temperature(temp), sd.XTC(0.12, 1.0, min_keep=2), sd.MinP(0.05, min_keep=mk),
                   sd.TopP(0.5, min_keep=mk), sd.Typical(0.95, min_keep=mk), sd.TopK(20), sd.TopNSigma(2.0),
                   sd.PresencePenalty(0.1), sd.FrequencyPenalty(0.2), sd.RepetitionPenalty(1.3), order="llama.cpp")
    q = np.asarray(jax.jit(lambda d, x, h, k: d.probs(x, history=h, key=k))(dec, logits, history, jax.random.key(0)))
    ref = np.stack([npr.llama_chain(logits[b], history[b], **settings) for b in range(B)])
    np.testing.assert_array_equal(q > 0, ref > 0)
    assert np.abs(q - ref).max() <= 1e-5
    # the transformers order (temperature first) is another decoder on these rows
    q_tf = np.asarray(sd.chain(*dec.objective.transforms, *dec.objective.support).probs(
        logits, history=history, key=jax.random.key(0)))
    assert np.abs(q_tf - ref).max() > 1e-3
