"""Structured generation inside the jitted loop: generate (per-row constraints, num_samples,
statuses), beam search, the host path, and a few real SmolLM2 generations that must parse."""

from __future__ import annotations

import functools
import importlib.util
import itertools
import json
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import simplex_decode as sd
from simplex_decode.constraints import Constraint, Vocabulary, json_schema, regex
from simplex_decode.constraints.examples import PATTERNS, PROMPTS, SCHEMAS

pytestmark = pytest.mark.skipif(importlib.util.find_spec("outlines_core") is None, reason="needs outlines-core")

TOY = [b"0", b"1", b"2", b"-", b"12", b"a", b"b", b"ab", b"{", b"}", b'"', b":", b" ", b'"a"', None, None]
EOS = 14
V = len(TOY)
PATTERN_A = r"[0-2]{2}-[0-2]{1,2}"
PATTERN_B = r"(ab|a)+b?"
SCHEMA = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}


def _step(params, tokens, cache, positions):  # a bigram model: the logits are a row of the table
    return params[tokens], cache


@pytest.fixture(scope="module")
def toy():
    voc = Vocabulary(TOY, eos_ids=[EOS])
    table = jnp.asarray(np.random.default_rng(0).standard_normal((V, V)) * 2.0, jnp.float32)
    return voc, table, regex(PATTERN_A, voc), regex(PATTERN_B, voc), json_schema(SCHEMA, voc)


def _text(voc, out, idx):
    n = int(out.lengths[idx])
    ids = [int(t) for t in np.asarray(out.tokens[idx])[:n]]
    assert EOS not in ids[:-1]
    return voc.decode([t for t in ids if t != EOS]).decode(), bool(ids and ids[-1] == EOS)


def test_generate_per_row_constraints_and_samples(toy):
    voc, table, a, b, s = toy
    which = jnp.array([0, 1, 2, 0])
    dec = sd.constrain(sd.top_p(0.95), [a, b, s], which=which)
    keys = jax.vmap(lambda i: jax.random.fold_in(jax.random.key(0), i))(jnp.arange(4, dtype=jnp.uint32))
    kw = dict(max_new_tokens=12, eos_id=EOS, num_samples=3)
    out = sd.generate(_step, table, [[0], [1], [2], [3]], decoder=dec, key=keys, **kw)
    assert out.tokens.shape == (4, 3, 12) and out.state[0].shape == (4, 3)
    checks = [lambda t: re.fullmatch(PATTERN_A, t), lambda t: re.fullmatch(PATTERN_B, t),
              lambda t: json.loads(t)["a"] is not None]
    for i, k in itertools.product(range(4), range(3)):
        text, ended = _text(voc, out, (i, k))
        assert ended and bool(out.finished[i, k]) and int(out.status[i, k]) == sd.Status.OK, (i, k, text)
        assert checks[int(which[i])](text), (i, k, text)
        assert bool(dec.objective.support[0].accepting(out.state[0][i, k]))
    assert not np.array_equal(np.asarray(out.tokens[0, 0]), np.asarray(out.tokens[0, 1]))  # samples differ
    # rows moved to other batch slots, with their keys and constraints, keep their tokens;
    # `which` is a leaf: new values reuse the compilation
    before = sd.generation.loop._generate_jit._cache_size()
    perm = jnp.array([3, 2, 0, 1])
    moved = sd.constrain(sd.top_p(0.95), [a, b, s], which=which[perm])
    again = sd.generate(_step, table, [[3], [2], [0], [1]], decoder=moved, key=keys[perm], **kw)
    np.testing.assert_array_equal(np.asarray(again.tokens), np.asarray(out.tokens[perm]))
    assert sd.generation.loop._generate_jit._cache_size() == before


def test_rows_cut_before_acceptance_get_their_status(toy):
    voc, table, a, b, _ = toy
    dec = sd.constrain(sd.greedy(), [a, b], which=jnp.array([0, 1]))
    out = sd.generate(_step, table, [[0], [1]], decoder=dec, key=jax.random.key(0), max_new_tokens=2, eos_id=EOS)
    text_a, _ = _text(voc, out, 0)
    assert len(text_a) == 2 and int(out.status[0]) == sd.Status.CONSTRAINT_INCOMPLETE and not bool(out.finished[0])
    text_b, ended = _text(voc, out, 1)  # '(ab|a)+b?' is a complete match after any 2 tokens
    assert re.fullmatch(PATTERN_B, text_b) and int(out.status[1]) == sd.Status.OK and not ended
    assert "max_new_tokens" in sd.Status.CONSTRAINT_INCOMPLETE.message


def test_eos_only_in_accepting_states_even_when_the_model_wants_it(toy):
    voc, table, a, _, _ = toy
    eager = table.at[:, EOS].set(30.0)  # the model always prefers to stop
    out = sd.generate(_step, eager, [[0]], decoder=sd.constrain(sd.greedy(), a), key=jax.random.key(0),
                      max_new_tokens=8, eos_id=EOS)
    text, ended = _text(voc, out, 0)
    assert ended and re.fullmatch(PATTERN_A, text) and len(text) == 4  # stops at the first complete match


def test_eos_of_the_constraint_must_end_generation(toy):
    _, table, a, _, _ = toy
    dec = sd.constrain(sd.greedy(), a)
    with pytest.raises(ValueError, match=r"eos_id: the decoder's constraint ends its output with token id\(s\) \[14\]"):
        sd.generate(_step, table, [[0]], decoder=dec, key=jax.random.key(0), max_new_tokens=4, eos_id=None)
    with pytest.raises(ValueError, match=r"eos_id: the constraint ends its output with token id\(s\) \[14\]"):
        sd.beam_search(_step, table, [[0]], beam_width=2, max_new_tokens=4, eos_id=3, constraint=Constraint(a))


def _language(a, max_len):
    """Every token sequence (EOS included) the automaton accepts within max_len tokens."""
    out, frontier = [], [((), a.start)]
    for _ in range(max_len):
        nxt = []
        for seq, s in frontier:
            if a.accepting[s]:
                out.append(seq + (EOS,))
            for t in range(V):
                s2 = int(a.transitions[s, a.token_class[t]])
                if s2 and t != EOS:
                    nxt.append((seq + (t,), s2))
        frontier = nxt
    return out


def test_beam_search_is_exhaustive_over_the_language(toy):
    """With a beam wider than the language, the finished sequences are exactly the valid ones
    (EOS included) and the best of them is the most probable; sequences cut at
    ``max_new_tokens`` are valid prefixes, OK exactly when they are complete matches."""
    voc, table, _, _, _ = toy
    a = regex(r"(ab|a)(12|0)?", voc)
    T, W = 4, 32
    lang = _language(a, T)
    logp = np.asarray(jax.nn.log_softmax(table, axis=-1))

    def score(seq, first):
        prev, total = first, 0.0
        for t in seq:
            total += logp[prev, t]
            prev = t
        return total

    out = sd.beam_search(_step, table, [[0], [3]], beam_width=W, max_new_tokens=T, eos_id=EOS,
                         length_penalty=0.0, early_stopping=False, constraint=Constraint(a))
    for b, first in enumerate([0, 3]):
        seqs = [tuple(int(t) for t in out.tokens[b, w, : int(out.lengths[b, w])]) for w in range(W)]
        fin = np.asarray(out.finished[b])
        finished = [q for q, f in zip(seqs, fin, strict=True) if f]
        assert set(finished) == set(lang) and len(finished) == len(lang)  # all valid ones, nothing else
        best = max(lang, key=lambda q: score(q, first))
        assert finished[0] == best
        assert float(out.logprobs[b, int(np.argmax(fin))]) == pytest.approx(score(best, first), rel=1e-5)
        for q, f, st, sc in zip(seqs, fin, np.asarray(out.status[b]), np.asarray(out.scores[b]), strict=True):
            if not f and sc > -np.inf:  # cut at T tokens: a valid prefix
                state = a.walk(q)
                assert len(q) == T and state > 0
                assert st == (sd.Status.OK if a.accepting[state] else sd.Status.CONSTRAINT_INCOMPLETE)


def test_beam_search_flags_unfinished_matches(toy):
    _, table, a, _, _ = toy
    out = sd.beam_search(_step, table, [[0]], beam_width=2, max_new_tokens=3, eos_id=EOS, constraint=Constraint(a))
    assert not np.any(np.asarray(out.finished)) and np.all(np.asarray(out.status) == sd.Status.CONSTRAINT_INCOMPLETE)


@pytest.mark.slow  # two more loop compilations; the host path's masks and states are checked in CI (test_constraints)
def test_host_path_generates_the_same_tokens(toy):
    voc, table, _, _, _ = toy
    a_dev, a_host = regex(PATTERN_B, voc), regex(PATTERN_B, voc, max_table_bytes=0)
    assert not a_host.on_device
    kw = dict(key=jax.random.key(3), max_new_tokens=10, eos_id=EOS, num_samples=4)
    dev = sd.generate(_step, table, [[0], [5]], decoder=sd.constrain(sd.temperature(1.0), a_dev), **kw)
    host = sd.generate(_step, table, [[0], [5]], decoder=sd.constrain(sd.temperature(1.0), a_host), **kw)
    np.testing.assert_array_equal(np.asarray(dev.tokens), np.asarray(host.tokens))
    np.testing.assert_array_equal(np.asarray(dev.status), np.asarray(host.status))


# --------------------------------------------------------------------------------------
# SmolLM2-135M-Instruct: a few real generations (the full evaluation is
# experiments/structured.py)
# --------------------------------------------------------------------------------------


def test_smollm2_generations_parse_and_validate(smollm2_model):
    jsonschema = pytest.importorskip("jsonschema")
    config, params, tok, step = smollm2_model
    from simplex_decode.models import init_cache

    voc = Vocabulary.from_tokenizer(tok)
    names = ["person", "iso_date"]
    autos = [json_schema(SCHEMAS["person"], voc), regex(PATTERNS["iso_date"], voc)]
    prompts = [tok.encode(tok.apply_chat_template([{"role": "user", "content": PROMPTS[n]}])) for n in names]
    dec = sd.constrain(sd.top_p(0.9, temperature=0.8), autos, which=jnp.arange(2))
    # every match of these languages has at most max_tokens tokens: with one more, every row ends with EOS
    max_new = max(a.max_tokens for a in autos) + 1
    out = sd.generate(step, params, prompts, decoder=dec, key=jax.random.key(0), max_new_tokens=max_new,
                      eos_id=tok.eos_token_id, cache=functools.partial(init_cache, config))
    assert np.all(np.asarray(out.finished)) and np.all(np.asarray(out.status) == sd.Status.OK)
    texts = [tok.decode(out.tokens[i, : int(out.lengths[i]) - 1].tolist()) for i in range(2)]  # without EOS
    jsonschema.validate(json.loads(texts[0]), SCHEMAS["person"])
    assert re.fullmatch(PATTERNS["iso_date"], texts[1]), texts[1]


# --------------------------------------------------------------------------------------
# The CLI: simplex-decode generate --regex PATTERN / --json-schema FILE (a tiny random Llama
# with a 40-token byte-level vocabulary, so no model file is needed)
# --------------------------------------------------------------------------------------


@pytest.fixture
def tiny_cli_model(monkeypatch):
    from simplex_decode import cli
    from simplex_decode.models import GGUFTokenizer, LlamaConfig, init_random_params

    tokens = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", *"0123456789", "-", *"abcdefghijklmnopqrstuvwxyz"]
    tok = GGUFTokenizer(tokens, merges=[], token_types=[3, 3, 3] + [1] * 37, eos_token_id=2)
    config = LlamaConfig(vocab_size=40, hidden_size=16, intermediate_size=32, num_layers=1, num_heads=2,
                         num_kv_heads=1, max_position_embeddings=32)
    params = jax.jit(init_random_params, static_argnums=(0,))(config, jax.random.PRNGKey(0))
    model = cli.Model(config, params, tok)
    monkeypatch.setattr(cli.model, "load_model", lambda path=None: model)
    return cli


def test_cli_regex_and_json_schema(tiny_cli_model, tmp_path, capsys):
    cli = tiny_cli_model
    pattern = "[0-9]{4}-[0-9]{2}-[0-9]{2}"
    assert cli.main(["generate", "--prompt", "date", "--regex", pattern, "--max-new-tokens", "12",
                     "--decoder", "top_p(p=0.9)", "--num-samples", "2"]) == 0
    texts = [t for t in capsys.readouterr().out.splitlines() if not t.startswith("---")]
    assert len(texts) == 2 and all(re.fullmatch(pattern, t) for t in texts), texts
    schema = tmp_path / "schema.json"
    schema.write_text(json.dumps({"type": "array", "items": {"type": "integer"}, "minItems": 1, "maxItems": 1}))
    # no '[', ']' or ',' in this vocabulary: the schema's language is empty here, said before generating
    assert cli.main(["generate", "--prompt", "n", "--json-schema", str(schema)]) == 2
    assert "--json-schema: json_schema " in capsys.readouterr().err


@pytest.mark.slow  # one more compilation of the loop; the option's parsing is covered above
def test_cli_json_schema_generates(tiny_cli_model, tmp_path, capsys):
    cli = tiny_cli_model
    schema = tmp_path / "schema.json"
    schema.write_text(json.dumps({"type": "integer"}))
    assert cli.main(["generate", "--prompt", "n", "--json-schema", str(schema), "--max-new-tokens", "8"]) == 0
    assert isinstance(json.loads(capsys.readouterr().out), int)


def test_cli_constraint_errors(tiny_cli_model, tmp_path, capsys):
    cli = tiny_cli_model
    assert cli.main(["generate", "--prompt", "a", "--regex", "(ab"]) == 2
    assert "simplex-decode: error: --regex: regex '(ab': not a valid regular expression" in capsys.readouterr().err
    assert cli.main(["generate", "--prompt", "a", "--json-schema", str(tmp_path / "missing.json")]) == 2
    assert "json_schema: cannot read" in capsys.readouterr().err
    assert cli.main(["generate", "--prompt", "a", "--regex", "[0-9]{20}", "--max-new-tokens", "3"]) == 1
    assert "sample 1 reached --max-new-tokens before its output matched the constraint" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["generate", "--prompt", "a", "--regex", "a", "--json-schema", "x.json"])
