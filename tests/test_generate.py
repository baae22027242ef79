"""Tests of simplex_decode.generation: the jitted generation loop over a model step function.

Two tiny models: a stateless bigram model (logits = a fixed random table indexed by the
last token) whose rollouts are easy to reproduce in numpy, and a 2-layer random Llama
from simplex_decode.models (a real KV cache, padding via position -1).
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import simplex_decode as sd
from simplex_decode._pytree import pytree_dataclass
from simplex_decode.generation.loop import _generate_jit
from simplex_decode.models.llama import LlamaConfig, init_cache, init_random_params, make_step
from simplex_decode.scores import ScoreTransform

V = 11


def bigram_step(params, tokens, cache, positions):
    return params[tokens], cache


@pytest.fixture(scope="module")
def table():
    return jax.random.normal(jax.random.key(1), (V, V)) * 2.0


def np_log_softmax(x):
    x = np.asarray(x, np.float64)
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


TINY = LlamaConfig(vocab_size=37, hidden_size=32, intermediate_size=48, num_layers=2, num_heads=4, num_kv_heads=2)


@pytest.fixture(scope="module")
def llama():
    params = jax.jit(init_random_params, static_argnums=(0,), static_argnames=("scale",))(
        TINY, jax.random.PRNGKey(3), scale=0.5)
    return make_step(TINY), params, functools.partial(init_cache, TINY)


def full_forward_last_logits(step, params, ids):
    """Logits of the last token from a fresh full forward pass (no cache reuse)."""
    ids = np.asarray(ids, np.int32)[None]
    cache = init_cache(TINY, 1, ids.shape[1])
    logits, _ = step(params, ids, cache, np.arange(ids.shape[1], dtype=np.int32)[None])
    return np.asarray(logits[0, -1])


# Most tests share a few compilations (same step function, shapes and static options),
# which keeps the file fast on CPU.
PROMPTS = [[3, 1], [5, 0], [2, 8]]
LENGTHS = [2, 1, 2]
KW = dict(max_new_tokens=8, eos_id=10, pad_id=0, prompt_lengths=LENGTHS)


def rollout(tab, prompt, choose, T=8, eos=10):
    """Reference generation on the bigram table: (tokens, model log-probs), stopping after EOS."""
    last, toks, lps = prompt[-1], [], []
    for t in range(T):
        nxt = choose(t, tab[last])
        toks.append(nxt)
        lps.append(np_log_softmax(tab[last])[nxt])
        if nxt == eos:
            break
        last = nxt
    return toks, lps


def padded(toks, T=8, pad=0):
    return toks + [pad] * (T - len(toks))


def greedy_bigram(table):
    return sd.generate(bigram_step, table, PROMPTS, decoder=sd.greedy(), key=jax.random.key(0), **KW)


def sample_bigram(table, decoder, key, prompts=PROMPTS, lengths=LENGTHS, callback=None):
    kw = dict(KW, prompt_lengths=lengths)
    return sd.generate(bigram_step, table, prompts, decoder=decoder, key=key, num_samples=3,
                       return_diagnostics=True, callback=callback, **kw)


# --------------------------------------------------------------------------------------
# greedy = argmax rollout
# --------------------------------------------------------------------------------------


def test_greedy_equals_argmax_rollout_bigram(table):
    out = greedy_bigram(table)
    tab = np.asarray(table)
    for b, (p, n) in enumerate(zip(PROMPTS, LENGTHS, strict=True)):
        toks, lps = rollout(tab, p[:n], lambda t, lg: int(np.argmax(lg)))
        assert out.tokens[b].tolist() == padded(toks)
        assert int(out.lengths[b]) == len(toks)
        assert bool(out.finished[b]) == (toks[-1] == 10)
        np.testing.assert_allclose(out.model_logprobs[b, : len(toks)], lps, rtol=1e-5, atol=1e-5)
        np.testing.assert_array_equal(out.logprobs[b], 0.0)  # q is a point mass
    assert out.status.tolist() == [0, 0, 0]


def test_greedy_equals_argmax_rollout_llama_padded_batch(llama):
    """Right-padded prompts of different lengths and a real KV cache, vs full recomputation."""
    step, params, cache = llama
    prompts = [[1, 2, 3, 4, 5], [7, 8], [9, 10, 11]]
    T, width = 6, 12
    out = sd.generate(step, params, prompts, decoder=sd.greedy(), key=jax.random.key(0), max_new_tokens=T,
                      cache=cache)

    @jax.jit
    def last_logits(ids, n):  # a fresh, padded full forward pass: one compilation
        pos = jnp.where(jnp.arange(width) < n, jnp.arange(width), -1)[None].astype(jnp.int32)
        logits, _ = step(params, ids[None], init_cache(TINY, 1, width), pos)
        return logits[0, n - 1]

    for b, p in enumerate(prompts):
        seq, ref_lp = list(p), []
        for _ in range(T):
            lg = np.asarray(last_logits(jnp.asarray(padded(seq, width), jnp.int32), len(seq)))
            nxt = int(np.argmax(lg))
            ref_lp.append(np_log_softmax(lg)[nxt])
            seq.append(nxt)
        assert out.tokens[b].tolist() == seq[len(p):]
        np.testing.assert_allclose(out.model_logprobs[b], ref_lp, atol=1e-4)


# --------------------------------------------------------------------------------------
# keys and sampling
# --------------------------------------------------------------------------------------


def test_same_key_same_tokens_and_key_matters(table):
    dec = sd.temperature(1.5)
    a, b, c = (sample_bigram(table, dec, jax.random.key(k)).tokens for k in (7, 7, 8))
    np.testing.assert_array_equal(a, b)
    assert a.shape == (3, 3, 8)
    assert not np.array_equal(a, c)
    assert len({tuple(r) for r in np.asarray(a).reshape(9, 8)}) > 3  # samples are different streams


def test_row_keeps_its_samples_in_any_batch(table):
    """With one key per prompt, a prompt's samples depend neither on its batch slot nor on its neighbours."""
    dec = sd.temperature(1.3)
    keys = jax.random.split(jax.random.key(0), 5)
    full = sample_bigram(table, dec, keys[:3]).tokens
    perm = [2, 0, 1]
    moved = sample_bigram(table, dec, keys[jnp.array(perm)], prompts=[PROMPTS[i] for i in perm],
                          lengths=[LENGTHS[i] for i in perm]).tokens
    for new, old in enumerate(perm):
        np.testing.assert_array_equal(moved[new], full[old])
    other = sample_bigram(table, dec, keys[jnp.array([3, 1, 4])], prompts=[[7, 7], PROMPTS[1], [4, 4]]).tokens
    np.testing.assert_array_equal(other[1], full[1])


def test_logprobs_and_diagnostics(table):
    t = 0.8
    out = sample_bigram(table, sd.temperature(t), jax.random.key(3))
    tab = np.asarray(table)
    for b, (p, n) in enumerate(zip(PROMPTS, LENGTHS, strict=True)):
        for k in range(3):
            seq = out.tokens[b, k, : int(out.lengths[b, k])].tolist()
            ref, lps = rollout(tab, p[:n], lambda i, lg: seq[i])  # noqa: B023
            assert ref == seq
            last = p[n - 1]
            for i, tok in enumerate(seq):
                logq = np_log_softmax(tab[last] / t)
                q = np.exp(logq)
                np.testing.assert_allclose(out.logprobs[b, k, i], logq[tok], rtol=1e-5, atol=1e-5)
                np.testing.assert_allclose(out.model_logprobs[b, k, i], lps[i], atol=1e-5)
                d = {name: float(v[b, k, i]) for name, v in out.diagnostics.items()}
                np.testing.assert_allclose(d["entropy"], -(q * logq).sum(), rtol=1e-4)
                assert d["support_size"] == V
                kl = (q * (logq - np_log_softmax(tab[last]))).sum()
                np.testing.assert_allclose(d["kl_to_model"], kl, atol=1e-5)
                last = tok
            rest = int(out.lengths[b, k])
            assert np.all(np.asarray(out.logprobs[b, k, rest:]) == 0)
            assert np.all(np.asarray(out.tokens[b, k, rest:]) == 0)


def test_samples_follow_q(table):
    """First-token frequencies over many samples match q (a loose 5-sigma bound)."""
    n = 4000
    dec = sd.top_k(4, temperature=1.0)
    out = sd.generate(bigram_step, table, [[6]], decoder=dec, key=jax.random.key(11), max_new_tokens=1,
                      num_samples=n)
    q = np.asarray(jax.jit(dec.probs)(table[6]))
    freq = np.bincount(np.asarray(out.tokens[0, :, 0]), minlength=V) / n
    assert np.all(freq[q == 0] == 0)
    assert np.all(np.abs(freq - q) <= 5 * np.sqrt(q * (1 - q) / n) + 1e-9)


# --------------------------------------------------------------------------------------
# EOS, padding, bad rows
# --------------------------------------------------------------------------------------


def chain_table(nxt):
    """A deterministic bigram model: token i is followed by nxt[i]."""
    t = np.full((len(nxt), len(nxt)), -5.0, np.float32)
    t[np.arange(len(nxt)), nxt] = 5.0
    return jnp.asarray(t)


def test_eos_stops_a_row_pads_it_and_hides_it_from_the_model():
    # 1 -> 2 -> 3 -> 6 (eos);  4 -> 5 -> 4 -> 5 ... (5 is an eos only in the second run)
    tab = chain_table([0, 2, 3, 6, 5, 4, 0, 0])
    seen = []

    def step(params, tokens, cache, positions):
        jax.debug.callback(lambda p: seen.append(np.asarray(p)[:, 0].copy()), positions, ordered=True)
        return params[tokens], cache

    out = sd.generate(step, tab, [[1], [4]], decoder=sd.greedy(), key=jax.random.key(0), max_new_tokens=6,
                      eos_id=6, pad_id=7)
    jax.effects_barrier()
    assert out.tokens.tolist() == [[2, 3, 6, 7, 7, 7], [5, 4, 5, 4, 5, 4]]
    assert out.lengths.tolist() == [3, 6]
    assert out.finished.tolist() == [True, False]
    assert np.all(np.asarray(out.model_logprobs[0, 3:]) == 0.0)
    # prefill, then one model call per token but the last; row 0 is fed position -1 after its EOS
    assert [p.tolist() for p in seen] == [[0, 0], [1, 1], [2, 2], [-1, 3], [-1, 4], [-1, 5]]

    seen.clear()
    out = sd.generate(step, tab, [[1], [4]], decoder=sd.greedy(), key=jax.random.key(0), max_new_tokens=6,
                      eos_id=(6, 5), pad_id=7)
    jax.effects_barrier()
    assert out.tokens.tolist() == [[2, 3, 6, 7, 7, 7], [5, 7, 7, 7, 7, 7]]
    assert out.lengths.tolist() == [3, 1]
    assert out.finished.tolist() == [True, True]
    assert len(seen) == 3  # the loop stopped once both rows were done


def test_nonfinite_logits_stop_the_row_with_a_status():
    tab = np.array(chain_table([1, 2, 3, 0]))
    tab[2, 1] = np.nan  # reaching token 2 poisons the next step
    out = sd.generate(bigram_step, jnp.asarray(tab), [[0], [3]], decoder=sd.temperature(1.0),
                      key=jax.random.key(0), max_new_tokens=5)
    assert out.status.tolist() == [sd.Status.NONFINITE_LOGITS, sd.Status.NONFINITE_LOGITS]
    assert out.lengths.tolist() == [2, 3]  # 0 -> 1 -> 2 | ;  3 -> 0 -> 1 -> 2 |
    assert not out.finished.any()
    assert np.all(np.isfinite(np.asarray(out.logprobs))) and np.all(np.isfinite(np.asarray(out.model_logprobs)))
    with pytest.raises(Exception, match="invalid logits"):
        sd.checked(sd.generate)(bigram_step, jnp.asarray(tab), [[0], [3]], decoder=sd.temperature(1.0),
                                key=jax.random.key(0), max_new_tokens=5)


# --------------------------------------------------------------------------------------
# per-row decoders, history, callbacks, compilation
# --------------------------------------------------------------------------------------


def test_per_row_parameters_match_separate_runs(table):
    temps = jnp.array([0.0, 0.7, 2.0])
    keys = jax.random.split(jax.random.key(5), 3)
    out = sample_bigram(table, sd.temperature(temps), keys)
    for b in range(3):
        ref = sample_bigram(table, sd.temperature(float(temps[b])), keys)
        np.testing.assert_array_equal(out.tokens[b], ref.tokens[b])
        np.testing.assert_allclose(out.logprobs[b], ref.logprobs[b], atol=1e-6)
    greedy = greedy_bigram(table)
    for k in range(3):  # temperature 0 is greedy
        np.testing.assert_array_equal(out.tokens[0, k], greedy.tokens[0])
    # a (B, K) parameter is per sample
    out2 = sample_bigram(table, sd.temperature(jnp.array([[0.0, 1.0, 1.0]] * 3)), keys)
    np.testing.assert_array_equal(out2.tokens[:, 0], greedy.tokens)
    assert not np.array_equal(out2.tokens[:, 1], greedy.tokens)


def test_new_parameter_values_do_not_recompile(table):
    key = jax.random.key(0)
    sample_bigram(table, sd.temperature(0.5), key)
    sample_bigram(table, sd.temperature(jnp.array([0.1, 0.2, 0.3])), key)
    n = _generate_jit._cache_size()
    sample_bigram(table, sd.temperature(0.9), key)
    sample_bigram(table, sd.temperature(jnp.array([1.1, 0.0, 0.3])), key)
    sample_bigram(table * 0.5, sd.temperature(0.2), jax.random.key(1), prompts=[[1, 1], [2, 2], [4, 4]])
    assert _generate_jit._cache_size() == n


@pytree_dataclass
class FavourHistoryHash(ScoreTransform):
    """s[v] += 100 for v = Σ_i (i+1)·h_i mod V over the real history entries (in order)."""

    def __call__(self, scores, ctx):
        w = jnp.cumsum(ctx.history_mask, axis=-1) * ctx.history_mask
        h = jnp.sum(w * ctx.history, axis=-1) % scores.shape[-1]
        return scores + 100.0 * jax.nn.one_hot(h, scores.shape[-1], dtype=scores.dtype)


def test_history_reading_transform_sees_prompt_then_generated(table):
    dec = sd.Decoder(sd.Objective(transforms=FavourHistoryHash()))
    prompts = [[3, 1, 4, 1, 5], [9, 2]]
    out = sd.generate(bigram_step, table, prompts, decoder=dec, key=jax.random.key(0), max_new_tokens=8, pad_id=6)
    for b, p in enumerate(prompts):
        hist = list(p)
        for _ in range(8):
            hist.append(sum((i + 1) * h for i, h in enumerate(hist)) % V)
        assert out.tokens[b].tolist() == hist[len(p):]


def test_repetition_penalty_from_history_module(table):
    """A library history transform: a huge presence penalty forbids repeating any token."""
    dec = sd.Decoder(sd.Objective(transforms=sd.PresencePenalty(1e4)))
    out = sd.generate(bigram_step, table, [[0, 1], [2]], decoder=dec, key=jax.random.key(0), max_new_tokens=8)
    for b, p in enumerate([[0, 1], [2]]):
        seq = list(p) + out.tokens[b].tolist()
        assert len(set(seq)) == len(seq)


def test_min_new_tokens_counts_generated_tokens_per_row():
    """MinNewTokens reads #real history − prompt_length: right-padded prompts of different lengths."""
    tab = np.array(chain_table([0, 2, 3, 6, 5, 4, 0, 0]))  # 1 -> 2 -> 3 -> 6 (eos)
    tab[3, 1] = 0.0  # with EOS banned, 3 -> 1 -> 2 -> 3 -> ...
    tab = jnp.asarray(tab)
    prompts, lengths, n = [[4, 1], [2, 5]], [2, 1], [5, 2]
    dec = sd.Decoder(sd.Objective(transforms=sd.MinNewTokens(jnp.array(n), eos_id=6, prompt_length=jnp.array(lengths))))
    out = sd.generate(bigram_step, tab, prompts, decoder=dec, key=jax.random.key(0), max_new_tokens=8, eos_id=6,
                      pad_id=7, prompt_lengths=lengths)
    tab_np = np.asarray(tab)
    for b in range(2):
        last, ref = prompts[b][lengths[b] - 1], []
        while len(ref) < 8:
            s = tab_np[last].copy()
            if len(ref) < n[b]:
                s[6] = -np.inf
            ref.append(int(np.argmax(s)))
            if ref[-1] == 6:
                break
            last = ref[-1]
        assert out.tokens[b, : len(ref)].tolist() == ref
        assert ref[-1] == 6 and len(ref) > n[b]  # EOS came, but only after n new tokens


def test_streaming_callback(table):
    got = []
    out = sample_bigram(table, sd.temperature(1.0), jax.random.key(2),
                        callback=lambda t, tokens, done: got.append((t, tokens.copy(), done.copy())))
    jax.effects_barrier()
    assert [g[0] for g in got] == list(range(len(got)))
    streamed = np.zeros((3, 3, 8), np.int64)
    for t, tokens, _ in got:
        assert tokens.shape == (3, 3)
        streamed[:, :, t] = tokens
    np.testing.assert_array_equal(streamed, out.tokens)
    np.testing.assert_array_equal(got[-1][2], out.finished)


# --------------------------------------------------------------------------------------
# input validation
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(max_new_tokens=0), "max_new_tokens"),
        (dict(num_samples=0), "num_samples"),
        (dict(eos_id=-1), "eos_id"),
        (dict(cache=object()), "cache"),
        (dict(decoder="greedy"), "decoder"),
        (dict(prompt_lengths=[0]), "prompt_lengths"),
        (dict(key=jax.random.split(jax.random.key(0), 3)), "key"),
    ],
)
def test_bad_arguments_raise_naming_them(table, kwargs, match):
    kw = dict(decoder=sd.greedy(), key=jax.random.key(0), max_new_tokens=3)
    kw.update(kwargs)
    with pytest.raises(ValueError, match=match):
        sd.generate(bigram_step, table, [[1, 2]], **kw)


def test_bad_prompt_shape(table):
    with pytest.raises(ValueError, match="prompt_tokens"):
        sd.generate(bigram_step, table, jnp.zeros((3,), jnp.int32), decoder=sd.greedy(), key=jax.random.key(0),
                    max_new_tokens=2)


# --------------------------------------------------------------------------------------
# Equinox / Flax NNX recipes (documented in simplex_decode.generation.loop)
# --------------------------------------------------------------------------------------


def test_equinox_recipe(table):
    eqx = pytest.importorskip("equinox")

    class Bigram(eqx.Module):
        table: Any

        def __call__(self, tokens, cache, positions):
            return self.table[tokens], cache

    model = Bigram(table)
    params, static = eqx.partition(model, eqx.is_array)

    def step(params, tokens, cache, positions):
        return eqx.combine(params, static)(tokens, cache, positions)

    out = sd.generate(step, params, [[2]], decoder=sd.greedy(), key=jax.random.key(0), max_new_tokens=5)
    ref = sd.generate(bigram_step, table, [[2]], decoder=sd.greedy(), key=jax.random.key(0), max_new_tokens=5)
    np.testing.assert_array_equal(out.tokens, ref.tokens)


def test_flax_nnx_recipe(table):
    nnx = pytest.importorskip("flax.nnx")

    class Bigram(nnx.Module):
        def __init__(self, table):
            self.table = nnx.Param(table)

        def __call__(self, tokens, cache, positions):
            return self.table[...][tokens], cache

    graphdef, state = nnx.split(Bigram(table))

    def step(state, tokens, cache, positions):
        return nnx.merge(graphdef, state)(tokens, cache, positions)

    out = sd.generate(step, state, [[2]], decoder=sd.greedy(), key=jax.random.key(0), max_new_tokens=5)
    ref = sd.generate(bigram_step, table, [[2]], decoder=sd.greedy(), key=jax.random.key(0), max_new_tokens=5)
    np.testing.assert_array_equal(out.tokens, ref.tokens)
