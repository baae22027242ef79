"""The transformers adapter: any Decoder as a LogitsProcessor, on a tiny random Llama built
from a config (nothing downloaded)."""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.torch

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

import simplex_decode as sd  # noqa: E402
from simplex_decode.integrations.transformers import (  # noqa: E402
    WARPERS_OFF,
    DecoderLogitsProcessor,
    generate_kwargs,
    to_jax,
    to_torch,
)

V = 64


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(vocab_size=V, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                                   pad_token_id=0, bos_token_id=1, eos_token_id=2)
    m = transformers.LlamaForCausalLM(cfg).eval()
    # a random init gives near-uniform logits; sharpen them so truncation rules bite
    with torch.no_grad():
        m.lm_head.weight.mul_(40.0)
    return m


@pytest.fixture(scope="module")
def prompt():
    g = torch.Generator().manual_seed(1)
    return torch.randint(3, V, (3, 7), generator=g)


def _log(q):
    q = np.asarray(q, np.float64)
    return np.where(q > 0, np.log(np.where(q > 0, q, 1.0)), -np.inf)


# the exact solver, the linear problem, a history reader with a truncation rule (closed forms:
# the generate tests below)
DECODERS = {
    "best_of_k": sd.best_of_k(k=4, lam=0.5, beta=0.5, top_m=3),
    "greedy": sd.greedy(),
    "penalty_top_k": sd.chain(sd.RepetitionPenalty(1.5), sd.TopK(5)),
}


@pytest.mark.parametrize("name", sorted(DECODERS))
def test_processed_scores_are_log_q(model, prompt, name):
    dec = DECODERS[name]
    with torch.no_grad():
        scores = model(prompt).logits[:, -1, :].float()
    out = DecoderLogitsProcessor(dec)(prompt, scores)
    assert out.shape == scores.shape and out.dtype == scores.dtype
    history = prompt.numpy() if name == "penalty_top_k" else None
    q = jax.jit(lambda d, x, h: d.probs(x, history=h))(dec, scores.numpy(), history)
    expected = _log(q)
    got = out.numpy().astype(np.float64)
    np.testing.assert_array_equal(np.isneginf(got), np.isneginf(expected))
    fin = np.isfinite(expected)
    np.testing.assert_allclose(got[fin], expected[fin], atol=1e-5, rtol=0)
    assert np.all(np.isfinite(got) | np.isneginf(got))


def test_history_transform_matches_transformers_repetition_penalty(model, prompt):
    from transformers.generation.logits_process import RepetitionPenaltyLogitsProcessor

    with torch.no_grad():
        scores = model(prompt).logits[:, -1, :].float()
    ours = DecoderLogitsProcessor(sd.chain(sd.RepetitionPenalty(1.5)))(prompt, scores.clone())
    theirs = torch.log_softmax(RepetitionPenaltyLogitsProcessor(1.5)(prompt, scores.clone()), -1)
    np.testing.assert_allclose(ours.numpy(), theirs.numpy(), atol=1e-5)


def test_reads_history_only_when_needed():
    assert not DecoderLogitsProcessor(sd.top_p(0.9)).reads_history(V)
    assert DecoderLogitsProcessor(sd.chain(sd.NoRepeatNGram(2))).reads_history(V)
    assert DecoderLogitsProcessor(sd.top_p(0.9), history=True).reads_history(V)
    with pytest.raises(ValueError, match="history"):
        DecoderLogitsProcessor(sd.top_p(0.9), history="yes")
    with pytest.raises(ValueError, match="decoder"):
        DecoderLogitsProcessor("top_p")


def test_greedy_through_the_adapter_equals_transformers_greedy(model, prompt):
    kw = dict(max_new_tokens=12, pad_token_id=0, eos_token_id=None)
    ref = model.generate(prompt, do_sample=False, **kw)
    proc = transformers.LogitsProcessorList([DecoderLogitsProcessor(sd.greedy())])
    ours = model.generate(prompt, do_sample=False, logits_processor=proc, **kw)
    sampled = model.generate(prompt, **generate_kwargs(sd.greedy()), **kw)  # sampling from one-hot q
    assert torch.equal(ours, ref) and torch.equal(sampled, ref)


def test_generate_samples_only_from_the_support(model, prompt):
    torch.manual_seed(0)
    out = model.generate(prompt, max_new_tokens=8, pad_token_id=0, eos_token_id=None, return_dict_in_generate=True,
                         output_logits=True, **generate_kwargs(sd.top_k(3, temperature=2.0)))
    new = out.sequences[:, prompt.shape[1]:]
    for t, logits in enumerate(out.logits):  # the raw model logits of each step
        top3 = torch.topk(logits, 3, dim=-1).indices
        assert bool((top3 == new[:, t : t + 1]).any(-1).all())


def test_generate_samples_from_the_decoders_distribution(model):
    """One step, many rows: the empirical distribution of the sampled token is q (not q
    after transformers' default top_k=50 or any other warper)."""
    dec = sd.temperature(40.0)  # nearly flat: a top-50 cut would remove ~20 % of the mass
    ids = torch.full((1, 4), 5, dtype=torch.long)
    with torch.no_grad():
        q = np.asarray(jax.jit(lambda d, x: d.probs(x))(dec, model(ids).logits[:, -1, :].float().numpy()))[0]
    n = 4000
    torch.manual_seed(0)
    out = model.generate(ids.repeat(n, 1), max_new_tokens=1, pad_token_id=0, eos_token_id=None, **generate_kwargs(dec))
    freq = np.bincount(out[:, -1].numpy(), minlength=V) / n
    tv = 0.5 * np.abs(freq - q).sum()
    assert np.sort(q)[: V - 50].sum() > 0.1  # the check below could see a top-50 cut
    assert tv < 0.06, tv  # sampling noise at n = 4000 over 64 tokens: E[TV] ≈ 0.04


def test_warpers_off_really_are_off(model):
    cfg = model.generation_config
    merged = model._prepare_generation_config(cfg, **WARPERS_OFF, do_sample=True)[0]
    processors = model._get_logits_processor(merged, input_ids_seq_length=4, encoder_input_ids=None,
                                             prefix_allowed_tokens_fn=None, logits_processor=None)
    assert len(processors) == 0, [type(p).__name__ for p in processors]


def test_bad_scores_raise_the_library_message(prompt):
    scores = torch.zeros(3, V)
    scores[1, 4] = float("nan")
    with pytest.raises(ValueError, match=r"rows \[1\].*NaN"):
        DecoderLogitsProcessor(sd.top_p(0.9))(prompt, scores)


def test_dlpack_shares_memory_on_cpu():
    t = torch.randn(4, 100)
    a = to_jax(t)
    assert a.unsafe_buffer_pointer() == t.data_ptr()
    back = to_torch(jnp.log(jnp.abs(a) + 1.0), t)
    assert back.dtype == t.dtype and back.shape == t.shape
    b16 = torch.randn(2, 8, dtype=torch.bfloat16)
    assert to_jax(b16).dtype == jnp.bfloat16
    assert to_torch(to_jax(b16), b16).dtype == torch.bfloat16
    strided = torch.randn(4, 10)[:, ::2]  # not contiguous: copied, same values
    np.testing.assert_array_equal(np.asarray(to_jax(strided)), strided.numpy())


def test_stateful_decoder_threads_its_state_through_generate(model, prompt):
    """Mirostat in transformers' generate: each step's processed scores are log q of the
    decoder at the state reached by updating with the tokens transformers drew — replayed
    here with the library's own step API (probs at the state, then update)."""
    dec = sd.mirostat(tau=2.0, eta=0.5, temperature=1.5)
    proc = DecoderLogitsProcessor(dec)
    kw = dict(max_new_tokens=6, pad_token_id=0, eos_token_id=None, return_dict_in_generate=True, output_scores=True)
    torch.manual_seed(0)
    out = model.generate(prompt, logits_processor=transformers.LogitsProcessorList([proc]), do_sample=True,
                         **WARPERS_OFF, **kw)
    L = prompt.shape[1]
    state = dec.init((prompt.shape[0],))
    probs = jax.jit(lambda d, x, s: d.probs(x, state=s))
    update = jax.jit(lambda d, s, q, i: d.update(s, q, i))
    with torch.no_grad():
        for t, processed in enumerate(out.scores):
            logits = model(out.sequences[:, : L + t]).logits[:, -1, :].float().numpy()
            q = probs(dec, logits, state)
            np.testing.assert_allclose(np.exp(processed.numpy()), np.asarray(q), atol=1e-5)
            state = update(dec, state, q, out.sequences[:, L + t].numpy().astype(np.int32))
    mu0 = jax.tree.leaves(dec.init((prompt.shape[0],)))[0]
    assert not np.allclose(np.asarray(jax.tree.leaves(state)[0]), np.asarray(mu0))  # the state moved
    # a new generate call starts from the initial state again: its first step equals a fresh processor's
    torch.manual_seed(1)
    again = model.generate(prompt, logits_processor=transformers.LogitsProcessorList([proc]), do_sample=True,
                           **WARPERS_OFF, **kw)
    np.testing.assert_array_equal(again.scores[0].numpy(), out.scores[0].numpy())


def test_random_rules_get_a_key_and_two_source_decoders_are_refused(model, prompt):
    with torch.no_grad():
        scores = model(prompt).logits[:, -1, :].float()
    dec = sd.xtc(threshold=0.05, probability=1.0)  # the coin always fires: q does not depend on the key
    q = jax.jit(lambda d, x, k: d.probs(x, key=k))(dec, scores.numpy(), jax.random.key(3))
    got = DecoderLogitsProcessor(dec)(prompt, scores).numpy()
    np.testing.assert_allclose(np.exp(got), np.asarray(q), atol=1e-6)
    assert (np.asarray(q) == 0).any()  # XTC removed tokens (in rows with >= 2 above the threshold; a softmax has no zeros)
    for bad in (sd.cfg(1.5), sd.contrastive(), sd.dola()):
        with pytest.raises(ValueError, match="cannot run as a transformers LogitsProcessor.*second_logits"):
            DecoderLogitsProcessor(bad)(prompt, scores)
