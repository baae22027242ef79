"""Structured generation: compiled automata against the library they come from, on the device.

* parity: over random token walks of 2 000 steps through each of 6 regular expressions and 3
  JSON schemas with the SmolLM2 tokenizer, the device mask (and the state) at every step
  equal outlines-core's own (its ``Guide``, the object vLLM and outlines run), and for the
  regular expressions also llguidance's, an independent engine;
* the tables (one automaton, the union of several, the host path) agree with each other;
* the support rule composes: a constrained decoder is the decoder on the logits with the
  disallowed tokens at -inf, for every kind of decoder;
* bad input gets a clear error.
"""

from __future__ import annotations

import importlib.util
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import simplex_decode as sd
from simplex_decode.constraints import Constraint, Vocabulary, json_schema, regex
from simplex_decode.constraints import tables as ct
from simplex_decode.constraints.examples import PATTERNS, SCHEMAS

pytestmark = pytest.mark.skipif(importlib.util.find_spec("outlines_core") is None, reason="needs outlines-core")

# --------------------------------------------------------------------------------------
# A toy vocabulary (no model files): digits, letters, JSON punctuation, two specials.
# --------------------------------------------------------------------------------------

TOY = [b"0", b"1", b"2", b"-", b"12", b"a", b"b", b"ab", b"{", b"}", b'"', b":", b" ", b'"a"', None, None]
TOY_EOS = 14


@pytest.fixture(scope="module")
def toy():
    return Vocabulary(TOY, eos_ids=[TOY_EOS])


def test_vocabulary_from_tokenizer_bytes(smollm2_tokenizer, smollm2_vocabulary):
    tok, voc = smollm2_tokenizer, smollm2_vocabulary
    assert voc.size == tok.vocab_size == 49152 and voc.eos_ids == (tok.eos_token_id,)
    text = "Grüße, 世界! {\"a\": -1.5}\n"
    assert voc.decode(tok.encode(text)).decode("utf-8") == text  # byte-level BPE: bytes round trip
    assert all(voc.token_bytes(i) is None for i in range(tok.vocab_size) if tok.is_special(i))
    assert sum(voc.token_bytes(i) is None for i in range(voc.size)) == 17
    padded = Vocabulary.from_tokenizer(tok, vocab_size=49160)
    assert padded.size == 49160 and padded.token_bytes(49159) is None
    with pytest.raises(ValueError, match="vocab_size: must be an integer >= the tokenizer's 49152"):
        Vocabulary.from_tokenizer(tok, vocab_size=100)


# --------------------------------------------------------------------------------------
# Parity with outlines-core (and llguidance) over random walks, SmolLM2 tokenizer
# --------------------------------------------------------------------------------------

PARITY_REGEXES = {
    **PATTERNS,
    "general_decimal": r"[+-]?[0-9]+(\.[0-9]+)?",  # the optional tail outlines-core 0.2.14 mis-indexes
    "animals": r"(cat|dog|bird)s?( and (cat|dog|bird)s?)*",
    "unicode_words": r"(\p{Lu}\p{Ll}{1,8} ?){1,3}",
}
STEPS = 2000


@pytest.fixture(scope="module")
def automata(smollm2_vocabulary):
    out = {name: regex(p, smollm2_vocabulary) for name, p in PARITY_REGEXES.items()}
    out.update({name: json_schema(s, smollm2_vocabulary) for name, s in SCHEMAS.items()})
    return out


def _unpack(bitmask_words, V):
    return np.unpackbits(np.ascontiguousarray(bitmask_words).view(np.uint8), bitorder="little")[:V].astype(bool)


def _library_mask(guide, V):
    words = np.zeros((V + 31) // 32, np.int32)
    guide.write_mask_into(words.ctypes.data, words.size, words.itemsize)
    return words


def _choose(rng, a, row, allowed):
    """A random allowed token: EOS now and then where allowed, else a random next state
    among those reachable, then a random token leading there (so walks leave strings)."""
    eos = np.asarray(a.eos_ids)
    ids = np.nonzero(allowed)[0]
    text = ids[~np.isin(ids, eos)]
    if len(text) == 0 or (allowed[eos].any() and rng.random() < 0.15):
        return int(eos[0])
    targets = a.transitions[row, a.token_class[text]]
    t = rng.choice(np.unique(targets))
    return int(rng.choice(text[targets == t]))


def _walk(a, steps, seed):
    """Walk the library's Guide: (tokens, its mask at every step, its state at every step)."""
    from outlines_core import Guide

    V = a.vocab_size
    rng = np.random.default_rng(seed)
    guide = Guide(a.index)
    row = a.start
    tokens, masks, lib_states = [], [], []
    for _ in range(steps):
        words = _library_mask(guide, V)
        lib_states.append(guide.get_state())
        masks.append(words)
        tok = _choose(rng, a, row, _unpack(words, V))
        tokens.append(tok)
        if tok in a.eos_ids:  # the end of a match: start a new walk
            guide.reset()
            row = a.start
        else:
            guide.advance(tok)
            row = int(a.transitions[row, a.token_class[tok]])
    return np.asarray(tokens), np.stack(masks), np.asarray(lib_states)


@jax.jit
def _device_walk(tables, start, tokens, eos):
    """The device states and packed masks along a token sequence (restarting after EOS)."""

    def body(state, tok):
        m = ct.mask(tables, state)
        nxt = jnp.where(jnp.any(tok == eos), start, ct.advance(tables, state, tok))
        return nxt, (state, jnp.packbits(m, bitorder="little"))

    _, (states, packed) = jax.lax.scan(body, start, tokens)
    return states, packed


def _device_side(a, tokens):
    c = Constraint(a)
    states, packed = _device_walk(c.tables, c.starts[0], jnp.asarray(tokens, jnp.int32), jnp.asarray(a.eos_ids))
    return np.asarray(states), np.asarray(packed)


@pytest.mark.parametrize("name", [*PARITY_REGEXES, *SCHEMAS])
def test_device_mask_equals_outlines_core_over_random_walks(automata, name):
    a = automata[name]
    tokens, lib_masks, lib_states = _walk(a, STEPS, seed=sum(map(ord, name)))
    states, packed = _device_side(a, tokens)
    lib_bytes = lib_masks.view(np.uint8)[:, : packed.shape[1]]
    bad = np.nonzero(np.any(packed != lib_bytes, axis=1))[0]
    assert bad.size == 0, f"{name}: masks differ at steps {bad[:5]}"
    np.testing.assert_array_equal(a.library_states[states], lib_states)  # the same automaton state
    n_walks = int(np.isin(tokens, a.eos_ids).sum())
    assert n_walks >= 3, f"{name}: the walk completed only {n_walks} matches"  # it explored whole matches
    eos_allowed = np.unpackbits(packed, axis=1, bitorder="little")[:, a.eos_ids[0]].astype(bool)
    np.testing.assert_array_equal(eos_allowed, a.accepting[states])  # EOS exactly in accepting states


def _llguidance_tokenizer(tok, voc):
    llg = pytest.importorskip("llguidance")

    class Wrapped:
        eos_token_id = voc.eos_ids[0]
        bos_token_id = tok.bos_token_id
        tokens = [voc.token_bytes(i) or b"\xff" + tok.id_to_token(i).encode() for i in range(voc.size)]
        special_token_ids = [i for i in range(voc.size) if voc.token_bytes(i) is None]

        def __call__(self, s):
            return tok.encode(s.decode("utf-8", "replace") if isinstance(s, bytes) else s)

    return llg.LLTokenizer(llg.TokenizerWrapper(Wrapped()))


@pytest.fixture(scope="module")
def llg_tokenizer(smollm2_tokenizer, smollm2_vocabulary):
    return _llguidance_tokenizer(smollm2_tokenizer, smollm2_vocabulary)


@pytest.mark.parametrize("name", list(PARITY_REGEXES))
def test_device_mask_agrees_with_llguidance_for_regexes(automata, llg_tokenizer, name):
    """An independent engine (llguidance: derivative-based regex, lazy token trie) along our
    walks: wherever it forces no bytes, its allowed-token set equals ours; where the pattern
    forces text (``' and '`` after ``'cat'``) it allows only the canonical spelling of that
    text, so its set is a subset of ours and the tokens only we allow are other spellings of
    the forced bytes (a tokenization policy, not a different language). This is what catches
    the outlines-core 0.2.14 completeness bug (see the next test)."""
    import llguidance as llg

    a = automata[name]
    V = a.vocab_size
    matcher = llg.LLMatcher(llg_tokenizer, llg.LLMatcher.grammar_from_regex(PARITY_REGEXES[name]), log_level=0)
    assert not matcher.is_error(), matcher.get_error()
    rng = np.random.default_rng(1 + sum(map(ord, name)))
    words = np.zeros((1, (V + 31) // 32), np.int32)
    row, tokens, theirs, forced = a.start, [], [], []
    for _ in range(STEPS // 2):
        forced.append(matcher.compute_ff_bytes())
        matcher.unsafe_compute_mask_ptr(words.ctypes.data, words.nbytes)
        theirs.append(words[0].copy())
        tok = _choose(rng, a, row, a.transitions[row][a.token_class] != 0)
        tokens.append(tok)
        if tok in a.eos_ids:
            matcher.reset()
            row = a.start
        else:
            assert matcher.consume_token(tok), matcher.get_error()
            row = int(a.transitions[row, a.token_class[tok]])
    _, packed = _device_side(a, tokens)
    equal = 0
    for i, (ours_bits, their_words, ff) in enumerate(zip(packed, theirs, forced, strict=True)):
        ours, their = _unpack(ours_bits, V), _unpack(their_words, V)
        if ff == b"":
            assert np.array_equal(ours, their), f"{name}: masks differ from llguidance at step {i}"
            equal += 1
        else:
            assert not np.any(their & ~ours), f"{name}: llguidance allows a token we do not at step {i}"
            extra = [a.vocabulary.token_bytes(t) for t in np.nonzero(ours & ~their)[0]]
            assert all(ff.startswith(b) or b.startswith(ff) for b in extra), (name, i, ff, extra[:5])
    assert equal >= 300, f"{name}: only {equal} steps without forced text"


def test_optional_tail_after_a_possible_end_is_offered(smollm2_vocabulary):
    """outlines-core 0.2.14 never offers '.' after the digits of ``[+-]?[0-9]+(\\.[0-9]+)?``
    (its DFA reports the match one byte late, and the index drops the token); compiling the
    end-anchored pattern restores it — the language is the same."""
    from outlines_core import Index

    voc = smollm2_vocabulary
    dot, five = voc._outlines().get(b"."), voc._outlines().get(b"5")
    pattern = PARITY_REGEXES["general_decimal"]
    raw = Index(pattern, voc._outlines())
    s = raw.get_next_state(raw.get_initial_state(), five[0])
    assert dot[0] not in raw.get_allowed_tokens(s)  # the library's own index: '.' is missing
    a = regex(pattern, voc)
    after = a.walk(five)
    assert a.accepting[after] and a.walk(five + dot) > 0 and a.accepting[a.walk(five + dot + five)]


def test_iso_date_pattern_is_exactly_the_calendar():
    import datetime

    rx = re.compile(PATTERNS["iso_date"])
    years = [*range(0, 12), *range(1896, 1905), *range(1996, 2005), *range(2096, 2105), *range(2396, 2405), 9999]
    for y, m, d in ((y, m, d) for y in years for m in range(14) for d in range(33)):
        s = f"{y:04d}-{m:02d}-{d:02d}"
        try:
            datetime.date.fromisoformat(s)
            valid = True
        except ValueError:
            valid = False
        assert (rx.fullmatch(s) is not None) == valid, s


def test_tables_are_small_and_pruning_never_needed(automata):
    for name, a in automata.items():
        assert a.on_device and a.stats["pruned"] == 0, name
        assert a.stats["classes"] <= 512 and a.stats["table_bytes"] < 2 * 2**20, (name, a.stats)


# --------------------------------------------------------------------------------------
# Several automata in one table; the host path
# --------------------------------------------------------------------------------------


def test_union_rows_follow_their_own_automaton(automata):
    names = ["iso_date", "email", "person"]
    c = Constraint([automata[n] for n in names], which=jnp.array([0, 1, 2]))
    state = c.init_state((3,))
    rng = np.random.default_rng(0)
    rows = [automata[n].start for n in names]
    for _ in range(40):
        m = np.asarray(c.allowed(state))
        toks = []
        for i, n in enumerate(names):
            a = automata[n]
            own = a.transitions[rows[i]][a.token_class] != 0
            np.testing.assert_array_equal(m[i], own)
            toks.append(_choose(rng, a, rows[i], own) if own.any() else 0)
            if toks[-1] in a.eos_ids:
                toks[-1] = -1  # keep the state: stay inside the match
            else:
                rows[i] = int(a.transitions[rows[i], a.token_class[toks[-1]]])
        state = c.update_state(state, jnp.asarray(toks))


def test_host_path_gives_the_same_masks_and_states(smollm2_vocabulary, automata):
    a_dev = automata["email"]
    a_host = regex(PATTERNS["email"], smollm2_vocabulary, max_table_bytes=0)
    assert not a_host.on_device and a_host.transitions is None
    c_dev, c_host = Constraint(a_dev), Constraint(a_host)
    assert isinstance(c_host.tables, ct.HostTables)
    tokens, _, _ = _walk(a_dev, 300, seed=3)

    @jax.jit
    def run(c, tokens):
        def body(state, tok):
            m = c.allowed(state)
            nxt = jnp.where(tok == a_dev.eos_ids[0], c.init_state(), c.update_state(state, tok))
            return nxt, (c.accepting(state), jnp.packbits(m, bitorder="little"))

        return jax.lax.scan(body, c.init_state(), tokens)[1]

    acc_d, mask_d = run(c_dev, jnp.asarray(tokens))
    acc_h, mask_h = run(c_host, jnp.asarray(tokens))
    np.testing.assert_array_equal(np.asarray(mask_d), np.asarray(mask_h))
    np.testing.assert_array_equal(np.asarray(acc_d), np.asarray(acc_h))


# --------------------------------------------------------------------------------------
# Composition: the decoder solves its own problem on the allowed set
# --------------------------------------------------------------------------------------

DECODERS = {
    "greedy": lambda: sd.greedy(),
    "top_p": lambda: sd.top_p(0.8, temperature=0.7),
    "top_p_from_model": lambda: sd.top_p(0.8, temperature=0.7, from_model=True),
    "min_p": lambda: sd.min_p(0.2),
    "typical": lambda: sd.typical(0.9),
    "best_of_k": lambda: sd.best_of_k(k=4, lam=0.5, beta=0.5, top_m=3),
    "best_of_k_model_weights": lambda: sd.best_of_k(k=4, lam=0.5, beta=0.5, weights="model"),
    "best_of_k_mirror": lambda: sd.best_of_k(k=4, lam=0.5, beta=0.5, top_m=3, solver="mirror"),
    "mirostat": lambda: sd.mirostat(tau=2.0),  # its own state next to the Constraint's
}
#: in CI: one of each kind (argmax, a truncation, a stateful cut, Best-of-K's coverage); the rest: pytest -m slow
_CI_DECODERS = ("greedy", "top_p", "min_p", "best_of_k", "mirostat")


@pytest.mark.parametrize(
    "name", [n if n in _CI_DECODERS else pytest.param(n, marks=pytest.mark.slow) for n in DECODERS]
)
def test_constrained_decoder_equals_decoder_on_masked_logits(toy, name):
    """constrain(d, c).probs(logits, state) == d.probs(logits with disallowed = -inf): the
    nucleus, min-p's threshold, BoK's top_m coverage and p are all taken among allowed tokens."""
    a = regex(r"(12|[0-2])+-?(ab|a)*", toy)
    dec = DECODERS[name]()
    cdec = sd.constrain(dec, a)
    logits = jnp.asarray(np.random.default_rng(5).standard_normal((6, len(TOY))) * 3, jnp.float32)
    state = jnp.asarray([a.walk(p) for p in ([], [0], [4, 3], [4, 3, 5], [1, 2], [0, 7, 5])], jnp.int32)
    state = (state,) + dec.init((6,))  # the Constraint's slot first (sd.constrain puts it first)
    allowed = np.asarray(cdec.objective.support[0].allowed(state[0]))
    assert allowed.any(axis=1).all() and (~allowed).any(axis=1).all()  # each row is constrained
    both = jax.jit(lambda cd, d, x, st, m: (cd.probs(x, state=st), d.probs(jnp.where(m, x, -jnp.inf))))
    q, ref = both(cdec, dec, logits, state, allowed)
    np.testing.assert_allclose(np.asarray(q), np.asarray(ref), rtol=1e-6, atol=1e-7)
    assert not np.any(np.asarray(q)[~allowed])


def test_nucleus_is_taken_among_allowed_tokens(toy):
    """The composition is not "top-p, then drop what is disallowed": that would keep only
    the allowed part of the full nucleus; the constrained nucleus is the allowed tokens'."""
    a = regex(r"[0-2]", toy)  # one digit: not '-', not '12'
    logits = jnp.asarray([[0.0, 0.5, 1.0, 6.0, 5.0] + [-2.0] * (len(TOY) - 5)], jnp.float32)  # '-' and '12' lead
    dec = sd.top_p(0.6)
    q, full = jax.jit(lambda cd, d, st: (cd.probs(logits, state=st), d.probs(logits)))(
        sd.constrain(dec, a), dec, (jnp.asarray([a.start]),))
    naive = full * np.asarray(sd.Constraint(a).allowed(jnp.asarray([a.start])))
    assert float(jnp.sum(naive)) == 0.0  # the full nucleus holds no allowed token at all
    assert float(q[0, 2]) > 0.5 and float(jnp.sum(q)) == pytest.approx(1.0)


def test_chain_and_constrain_agree(toy):
    """A Constraint given to sd.chain (anywhere in the order) is the same restriction."""
    a = regex(r"[0-2]{2}(ab)?", toy)
    c = Constraint(a)
    chained = sd.chain(sd.MinP(0.1), c, sd.TopP(0.8), sd.Temperature(0.7))
    direct = sd.constrain(sd.chain(sd.MinP(0.1), sd.TopP(0.8), sd.Temperature(0.7)), c)
    logits = jnp.asarray(np.random.default_rng(2).standard_normal((3, len(TOY))) * 3, jnp.float32)
    state = jnp.asarray([a.start, a.walk([0]), a.walk([4])], jnp.int32)
    qs = [jax.jit(lambda d, st: d.probs(logits, state=st))(d, (state,)) for d in (chained, direct)]
    np.testing.assert_array_equal(np.asarray(qs[0]), np.asarray(qs[1]))


def test_sample_with_state_moves_the_state(toy):
    a = regex(r"ab(12)?", toy)
    dec = sd.constrain(sd.greedy(), a)
    logits = jnp.zeros((2, len(TOY))).at[:, 7].set(1.0)  # 'ab' is the favourite
    sample = jax.jit(lambda key, state: dec.sample(key, logits, state=state))
    state = dec.init((2,))
    seen = []
    for i in range(4):  # 'ab', then '1' (lowest id among the allowed ties '1', '12', EOS), '2', EOS
        ids, state = sample(jax.random.key(i), state)
        seen.append(ids.tolist())
    assert seen == [[7, 7], [1, 1], [2, 2], [TOY_EOS, TOY_EOS]]
    assert bool(jnp.all(dec.objective.support[0].accepting(state[0])))


# --------------------------------------------------------------------------------------
# Bad input
# --------------------------------------------------------------------------------------


def test_invalid_pattern_and_schema_are_named(toy):
    with pytest.raises(ValueError, match=re.escape("regex '(ab': not a valid regular expression")):
        regex("(ab", toy)
    with pytest.raises(ValueError, match=re.escape("regex 'a)|(b': not a valid regular expression")):
        regex("a)|(b", toy)
    with pytest.raises(ValueError, match="json_schema: not valid JSON"):
        json_schema("{", toy)
    with pytest.raises(ValueError, match="json_schema: not a valid JSON Schema at type"):
        json_schema({"type": "objekt"}, toy)
    with pytest.raises(ValueError, match="outlines-core does not enforce \\('minimum' at properties/n\\)"):
        json_schema({"type": "object", "properties": {"n": {"type": "integer", "minimum": 0}}}, toy)
    with pytest.raises(ValueError, match="json_schema: must be a dict or JSON text"):
        json_schema([1], toy)
    with pytest.raises(ValueError, match="vocabulary: must be a simplex_decode.constraints.Vocabulary"):
        regex("a", None)


def test_empty_language_is_an_error_before_generation(toy):
    with pytest.raises(ValueError, match="regex 'x': its language is empty for this vocabulary"):
        regex("x", toy)  # no token spells 'x'
    with pytest.raises(ValueError, match="its language is empty for this vocabulary"):
        regex("a|bx", toy)  # a branch no token can finish
    with pytest.raises(ValueError, match="language is empty|admits no JSON document"):
        json_schema({"enum": []}, toy)


def test_traced_which_out_of_range_is_an_invalid_parameter(toy):
    """A per-row ``which`` known only on device cannot raise: its bad rows get INVALID_PARAMETER
    (never a clamped index silently following another automaton)."""
    a, b = regex("[0-2]+", toy), regex("ab", toy)
    status = jax.jit(lambda w: sd.constrain(sd.top_p(0.9), [a, b], which=w).solve(jnp.zeros((3, 16))).status)
    assert status(jnp.array([1, 2, 0])).tolist() == [sd.Status.OK, sd.Status.INVALID_PARAMETER, sd.Status.OK]


def test_vocabulary_and_token_mismatches(toy):
    a = regex("[0-2]+", toy)
    dec = sd.constrain(sd.top_p(0.9), a)
    with pytest.raises(ValueError, match="compiled for a vocabulary of V=16 token ids .*logits have V=20"):
        dec.probs(jnp.zeros(20), state=dec.init())
    with pytest.raises(ValueError, match="token ids must be in \\[0, V-1=15\\]"):
        dec.update(dec.init(), jnp.ones(16) / 16, 16)
    no_state, start = jax.jit(lambda d: (d.probs(jnp.zeros(16)), d.probs(jnp.zeros(16), state=d.init())))(dec)
    np.testing.assert_array_equal(np.asarray(no_state), np.asarray(start))  # no state: the start state
    with pytest.raises(ValueError, match="state: this decoder carries state between steps"):
        dec.sample(jax.random.key(0), jnp.zeros(16))
    with pytest.raises(ValueError, match="the state must have the logits' batch shape \\(2,\\)"):
        dec.probs(jnp.zeros((2, 16)), state=dec.init((3,)))
    other = Vocabulary(TOY[:-1] + [b"z"], eos_ids=[TOY_EOS])
    with pytest.raises(ValueError, match="same vocabulary"):
        Constraint([a, regex("z", other)])
    with pytest.raises(ValueError, match="Constraint: `which` must be an integer in \\[0, 1\\]"):
        Constraint([a, a], which=2)
    with pytest.raises(ValueError, match="num_samples: a decoder's state is per row"):
        dec.sample(jax.random.key(0), jnp.zeros(16), state=dec.init(), num_samples=2)
    with pytest.raises(ValueError, match="already has a Constraint"):
        sd.constrain(dec, a)
    with pytest.raises(ValueError, match="Vocabulary: `eos_ids` must be in \\[0, 2\\]"):
        Vocabulary([b"a", b"b", None], eos_ids=[3])


def test_unsound_number_digit_bounds_are_rejected(toy):
    schema = {"type": "number", "maxDigitsFraction": 2}
    with pytest.raises(ValueError, match="'maxDigitsFraction' at \\(root\\)"):
        json_schema(schema, toy)
    assert json_schema({"type": "integer", "maxDigits": 2}, toy).max_tokens == 3  # '-', then two digits


def test_max_tokens_is_the_longest_match(toy):
    assert regex(r"[0-2]{2}-[0-2]{1,2}", toy).max_tokens == 5
    assert regex(r"(12|1)2", toy).max_tokens == 3  # '1', '2', '2'
    assert regex(r"(ab|a)+b?", toy).max_tokens is None  # unbounded
