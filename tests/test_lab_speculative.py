"""Self-speculative decoding (simplex_decode.lab.speculative) samples exactly from the decoder.

On a tiny random 3-head model over a 5-token vocabulary, the law of whole generated
sequences under the target decoder is computed exactly (enumerating every sequence, the
product of the decoder's q along it); 20 000 speculative draws are compared with it by a
chi-square goodness-of-fit test at significance 1e-3 (fixed seeds, so the verdict is
deterministic). The same test rejects the law of a nearby decoder (power check), and
accepts plain ``sd.generate`` draws (a check of the exact computation). The top-k case is
marked slow (``python -m pytest -m slow tests/test_lab_speculative.py``).
"""

from __future__ import annotations

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

import simplex_decode as sd
from simplex_decode import lab
from simplex_decode.lab.speculative import speculative_generate

ALPHA = 1e-3
M = 20_000
PROMPT = np.array([1, 3], np.int32)


@functools.cache
def _model():
    cfg = lab.LabConfig(vocab_size=5, d_model=16, num_layers=1, num_heads=2, mtp_heads=3)
    params = lab.init_params(cfg, jax.random.key(7))
    params["embed"] = params["embed"] * 3.0  # sharper, unequal distributions
    return cfg, params


@pytest.fixture
def model():
    return _model()


def exact_law(cfg, params, decoder, T, eos=None, pad=0):
    """{outcome tuple: probability} of T tokens (after an EOS: pad) under ``decoder``."""
    V, P = cfg.vocab_size, len(PROMPT)
    seqs = np.array(list(itertools.product(range(V), repeat=T)), np.int32)
    toks = np.concatenate([np.broadcast_to(PROMPT, (len(seqs), P)), seqs], axis=1)
    logits = lab.head_logits(cfg, params, toks[:, :-1])[0][:, P - 1:]  # (S, T, V): step t
    hist = np.broadcast_to(toks[:, None, :], (len(seqs), T, P + T))
    mask = np.broadcast_to(np.arange(P + T)[None, None, :] < (P + np.arange(T))[None, :, None], hist.shape)
    q = np.asarray(decoder.probs(logits, history=jnp.asarray(hist), history_mask=jnp.asarray(mask)))
    step_p = np.take_along_axis(q, seqs[..., None], axis=-1)[..., 0]
    law = {}
    for s, p in zip(seqs, step_p, strict=True):
        if eos is not None and (s == eos).any():
            end = int(np.argmax(s == eos)) + 1
            if (s[end:] != pad).any():
                continue  # one representative per truncated outcome
            p = p[:end]
            s = np.concatenate([s[:end], np.full(T - end, pad)])
        law[tuple(int(x) for x in s)] = law.get(tuple(int(x) for x in s), 0.0) + float(np.prod(p))
    return law


def chi2_pvalue(tokens, law):
    counts = {}
    for row in np.asarray(tokens).reshape(-1, np.shape(tokens)[-1]):
        counts[tuple(int(x) for x in row)] = counts.get(tuple(int(x) for x in row), 0) + 1
    assert set(counts) <= set(law), "a sample the law gives probability 0"
    keys = sorted(law, key=law.get, reverse=True)
    exp = np.array([law[k] for k in keys]) * M
    obs = np.array([counts.get(k, 0) for k in keys], float)
    small = exp < 5  # pool the rare outcomes into one cell
    if small.any():
        exp = np.append(exp[~small], exp[small].sum())
        obs = np.append(obs[~small], obs[small].sum())
    return stats.chisquare(obs, exp * obs.sum() / exp.sum()).pvalue


DECODERS = {
    "temperature": sd.temperature(0.8),
    "repetition": sd.chain(sd.RepetitionPenalty(1.8), sd.Temperature(0.9)),
    "bok_mirror": sd.best_of_k(k=4, lam=0.5, beta=0.5, top_m=2, solver="mirror", steps=5),
    "top_k": sd.top_k(3, temperature=1.2),
}
EOS, T = 0, 4  # rows end at token 0 or after 4 tokens


@functools.cache
def draws(name):
    cfg, params = _model()
    return speculative_generate(cfg, params, PROMPT[None], decoder=DECODERS[name], key=jax.random.key(11),
                                max_new_tokens=T, eos_id=EOS, num_samples=M, pad_id=0)


@pytest.mark.parametrize("name", ["temperature", "repetition", "bok_mirror",
                                  pytest.param("top_k", marks=pytest.mark.slow)])
def test_speculative_law_equals_decoder_law(name):
    cfg, params = _model()
    out = draws(name)
    assert np.all(np.asarray(out.status) == 0)
    law = exact_law(cfg, params, DECODERS[name], T, eos=EOS)
    assert abs(sum(law.values()) - 1.0) < 1e-4
    p = chi2_pvalue(out.tokens, law)
    assert p > ALPHA, f"{name}: speculative draws do not follow the decoder's law (p = {p:.2e})"
    # the drafts were used: more than one token per forward on average, fewer than n (some rejected)
    lengths, forwards = np.asarray(out.lengths), np.asarray(out.forwards)
    tpf = (lengths - 1).sum() / forwards.sum()
    assert 1.0 < tpf < cfg.mtp_heads


def test_chi2_detects_a_nearby_decoder():
    """Power: the temperature-0.8 draws are rejected against the law of temperature 1.0."""
    cfg, params = _model()
    assert chi2_pvalue(draws("temperature").tokens, exact_law(cfg, params, sd.temperature(1.0), T, eos=EOS)) < ALPHA


def test_plain_generate_passes_the_same_test(model):
    cfg, params = model
    dec = DECODERS["temperature"]
    out = sd.generate(lab.make_step(cfg), params, PROMPT[None], decoder=dec, key=jax.random.key(5),
                      max_new_tokens=T, eos_id=EOS, cache=lab.make_cache(cfg), num_samples=M, pad_id=0)
    assert chi2_pvalue(out.tokens, exact_law(cfg, params, dec, T, eos=EOS)) > ALPHA


def test_greedy_speculative_equals_greedy_generate(model):
    cfg, params = model
    prompts = np.array([[1, 3], [4, 0], [2, 2]], np.int32)
    spec = speculative_generate(cfg, params, prompts, decoder=sd.greedy(), key=jax.random.key(0), max_new_tokens=6)
    ref = sd.generate(lab.make_step(cfg), params, prompts, decoder=sd.greedy(), key=jax.random.key(0),
                      max_new_tokens=6, cache=lab.make_cache(cfg))
    np.testing.assert_array_equal(np.asarray(spec.tokens), np.asarray(ref.tokens))


def test_bad_arguments(model):
    cfg, params = model
    one = lab.LabConfig(vocab_size=5, d_model=16, num_layers=1, num_heads=2)
    with pytest.raises(ValueError, match="mtp_heads >= 2"):
        speculative_generate(one, lab.init_params(one, jax.random.key(0)), PROMPT[None], decoder=sd.greedy(),
                             key=jax.random.key(0), max_new_tokens=2)
    with pytest.raises(ValueError, match="max_new_tokens"):
        speculative_generate(cfg, params, PROMPT[None], decoder=sd.greedy(), key=jax.random.key(0), max_new_tokens=0)
    with pytest.raises(ValueError, match="prompt_tokens"):
        speculative_generate(cfg, params, np.array([[9]]), decoder=sd.greedy(), key=jax.random.key(0),
                             max_new_tokens=2)
