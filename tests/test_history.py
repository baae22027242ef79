"""Score transforms that read the token history: hand-computed examples, peer semantics, batching."""

import collections

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import simplex_decode as sd


@jax.jit
def _prepare(obj, logits, history, mask):
    return obj.prepare(logits, history=history, history_mask=mask).scores


def _scores(transform, logits, history, mask=None):
    return np.asarray(_prepare(sd.Objective(transforms=transform), jnp.asarray(logits), history, mask))


# --- hand-computed examples ---------------------------------------------------------------


def test_repetition_penalty_hand_example_with_repeats_and_padding():
    logits = np.array([2.0, -1.0, 3.0, 0.5, -2.0], np.float32)
    # Token 0 occurs twice (penalised once), token 4 twice; the padding entries hold id 2,
    # which must not be penalised.
    history = np.array([0, 1, 2, 0, 4, 2, 4])
    mask = np.array([True, True, False, True, True, False, True])
    out = _scores(sd.RepetitionPenalty(2.0), logits, history, mask)
    np.testing.assert_array_equal(out, [1.0, -2.0, 3.0, 0.5, -4.0])
    # penalty < 1 rewards repetition the same way round
    out = _scores(sd.RepetitionPenalty(0.5), logits, history, mask)
    np.testing.assert_array_equal(out, [4.0, -0.5, 3.0, 0.5, -1.0])


def test_frequency_and_presence_penalties_hand_example():
    logits = np.zeros((2, 5), np.float32)
    history = np.array([[3, 3, 1, 3, 0, 0], [4, 0, 0, 0, 2, 2]])
    mask = np.array([[True, True, True, True, False, False], [True, True, True, True, True, False]])
    freq = _scores(sd.FrequencyPenalty(0.5), logits, history, mask)
    np.testing.assert_array_equal(freq, [[0, -0.5, 0, -1.5, 0], [-1.5, 0, -0.5, 0, -0.5]])
    pres = _scores(sd.PresencePenalty(1.0), logits, history, mask)
    np.testing.assert_array_equal(pres, [[0, -1, 0, -1, 0], [-1, 0, -1, 0, -1]])
    both = _scores((sd.FrequencyPenalty(0.5), sd.PresencePenalty(1.0)), logits, history, mask)
    np.testing.assert_array_equal(both, freq + pres)


def test_prompt_length_counts_only_generated_tokens_wherever_the_padding_is():
    logits = np.zeros((2, 4), np.float32)
    # Same real tokens [1, 1, 2, 3] (prompt = first two); row 0 left-padded, row 1 right-padded.
    history = np.array([[0, 0, 1, 1, 2, 3], [1, 1, 2, 3, 0, 0]])
    mask = np.array([[False, False, True, True, True, True], [True, True, True, True, False, False]])
    out = _scores(sd.FrequencyPenalty(1.0, prompt_length=np.array([2, 2])), logits, history, mask)
    np.testing.assert_array_equal(out, [[0, 0, -1, -1], [0, 0, -1, -1]])
    out = _scores(sd.RepetitionPenalty(2.0, prompt_length=3), np.ones((2, 4), np.float32), history, mask)
    np.testing.assert_array_equal(out, [[1, 1, 1, 0.5], [1, 1, 1, 0.5]])


def test_no_repeat_ngram_hand_examples():
    z = np.zeros(8, np.float32)
    out = _scores(sd.NoRepeatNGram(2), z, np.array([1, 2, 1, 3, 1]))
    assert np.flatnonzero(np.isinf(out)).tolist() == [2, 3]
    out = _scores(sd.NoRepeatNGram(3), z, np.array([5, 6, 7, 5, 6]))
    assert np.flatnonzero(np.isinf(out)).tolist() == [7]
    # Padding in the middle is removed before the windows are formed.
    out = _scores(sd.NoRepeatNGram(3), z, np.array([5, 0, 6, 7, 5, 6]), np.array([1, 0, 1, 1, 1, 1], bool))
    assert np.flatnonzero(np.isinf(out)).tolist() == [7]
    # n = 1 bans every token already present; too short a history bans nothing.
    out = _scores(sd.NoRepeatNGram(1), z, np.array([4, 1, 4]))
    assert np.flatnonzero(np.isinf(out)).tolist() == [1, 4]
    out = _scores(sd.NoRepeatNGram(4), z, np.array([1, 1, 1]))
    assert not np.isinf(out).any()


def test_ban_and_allow_lists_per_row_with_padding():
    logits = np.arange(12, dtype=np.float32).reshape(2, 6)
    ids = np.array([[1, 4, -1], [0, -1, -1]])
    out = _scores(sd.BanTokens(ids), logits, None)
    assert np.isinf(out).tolist() == [[False, True, False, False, True, False], [True] + [False] * 5]
    out = _scores(sd.AllowTokens(ids), logits, None)
    assert (~np.isinf(out)).tolist() == [[False, True, False, False, True, False], [True] + [False] * 5]
    q = np.asarray(jax.jit(lambda d, x: d.probs(x))(sd.chain(sd.AllowTokens(ids)), logits))
    assert q[0, [1, 4]].sum() == pytest.approx(1.0) and q[1, 0] == 1.0
    # An empty allow list leaves the row without a token: a clear error, not a fallback.
    with pytest.raises(ValueError, match="no token is allowed"):
        sd.chain(sd.AllowTokens(np.array([[1, 4], [-1, -1]]))).probs(logits)


def test_min_new_tokens_counts_generated_tokens_per_row():
    logits = np.zeros((3, 5), np.float32)
    history = np.array([[7 % 5, 1, 2, 0, 0], [1, 2, 3, 4, 0], [1, 1, 1, 1, 1]])
    mask = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 0], [1, 1, 1, 1, 1]], bool)
    # prompt lengths 2, 2, 1 -> generated 1, 2, 4; n per row 2, 2, 5
    t = sd.MinNewTokens(np.array([2, 2, 5]), eos_id=[4, 0], prompt_length=np.array([2, 2, 1]))
    out = _scores(t, logits, history, mask)
    assert np.isinf(out).tolist() == [
        [True, False, False, False, True],
        [False] * 5,
        [True, False, False, False, True],
    ]
    ctx = sd.Context(logits=jnp.asarray(logits), log_model=None, history=jnp.asarray(history), history_mask=mask)
    assert np.asarray(t.num_generated(ctx)).tolist() == [1, 2, 4]
    # n = 0 never bans
    assert not np.isinf(_scores(sd.MinNewTokens(0, eos_id=4), logits, history, mask)).any()


def test_sampling_never_draws_banned_or_repeated_ngrams():
    V = 6
    logits = np.zeros((4, V), np.float32)
    history = np.tile(np.array([2, 3, 2]), (4, 1))
    dec = sd.chain(sd.NoRepeatNGram(2), sd.BanTokens([5]))
    sample = jax.jit(lambda d, k, x, h: d.sample(k, x, history=h, num_samples=200))
    ids = np.asarray(sample(dec, jax.random.key(0), logits, history))
    assert not np.isin(ids, [3, 5]).any() and set(np.unique(ids)) == {0, 1, 2, 4}


# --- against the peers' definitions on random histories ------------------------------------


def _random_histories(rng, rows, L, V):
    history = rng.integers(0, V, size=(rows, L))
    mask = rng.random((rows, L)) < 0.8
    return history, mask


def _real(history, mask):
    return [list(h[m]) for h, m in zip(history, mask, strict=True)]


def repetition_ref(logits, tokens, penalty):
    """transformers' RepetitionPenaltyLogitsProcessor (gather, penalise, scatter) per row."""
    out = np.array(logits, np.float64)
    for i, toks in enumerate(tokens):
        ids = np.asarray(toks, int)
        if ids.size:
            s = out[i, ids]
            out[i, ids] = np.where(s < 0, s * penalty, s / penalty)
    return out


def openai_ref(logits, tokens, freq, pres):
    """OpenAI's documented formula: mu[j] − c[j]·alpha_frequency − float(c[j] > 0)·alpha_presence."""
    out = np.array(logits, np.float64)
    for i, toks in enumerate(tokens):
        for tok, c in collections.Counter(toks).items():
            out[i, tok] -= c * freq[i] + (c > 0) * pres[i]
    return out


def ngram_ref(tokens, n):
    """transformers' _get_ngrams / _get_generated_ngrams (dict of prefixes), per row."""
    banned = []
    for toks in tokens:
        table = collections.defaultdict(list)
        for gram in zip(*[toks[i:] for i in range(n)], strict=False):
            table[tuple(gram[:-1])].append(gram[-1])
        cur = len(toks)
        banned.append(set(table.get(tuple(toks[cur + 1 - n : cur]), [])) if cur >= n else set())
    return banned


@pytest.mark.parametrize("seed", range(3))
def test_penalties_equal_peer_definitions_on_random_padded_histories(seed):
    rng = np.random.default_rng(seed)
    rows, L, V = 6, 40, 30
    logits = (rng.standard_normal((rows, V)) * 2).astype(np.float32)
    history, mask = _random_histories(rng, rows, L, V)
    tokens = _real(history, mask)
    pen = rng.uniform(0.5, 2.0, rows).astype(np.float32)
    freq = rng.uniform(-2, 2, rows).astype(np.float32)
    pres = rng.uniform(-2, 2, rows).astype(np.float32)
    out = _scores(sd.RepetitionPenalty(pen), logits, history, mask)
    ref = np.stack([repetition_ref(logits[i : i + 1], [tokens[i]], float(pen[i]))[0] for i in range(rows)])
    assert np.abs(out - ref).max() <= 1e-5
    out = _scores((sd.FrequencyPenalty(freq), sd.PresencePenalty(pres)), logits, history, mask)
    assert np.abs(out - openai_ref(logits, tokens, freq, pres)).max() <= 1e-5


@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_no_repeat_ngram_equals_transformers_on_random_padded_histories(n):
    rng = np.random.default_rng(n)
    rows, L, V = 8, 60, 5  # a small vocabulary, so n-grams repeat
    history, mask = _random_histories(rng, rows, L, V)
    mask[0] = False  # an all-padding row
    mask[1, : L - n + 1] = False  # a row with fewer than n real tokens
    banned = np.isinf(_scores(sd.NoRepeatNGram(n), np.zeros((rows, V), np.float32), history, mask))
    expected = ngram_ref(_real(history, mask), n)
    for i in range(rows):
        assert set(np.flatnonzero(banned[i]).tolist()) == expected[i], (n, i)


def test_token_counts_equals_counter():
    rng = np.random.default_rng(0)
    history, mask = _random_histories(rng, 5, 50, 17)
    counts = np.asarray(sd.token_counts(history.reshape(5, 1, 50), 17, weights=mask.reshape(5, 1, 50)))
    for i, toks in enumerate(_real(history, mask)):
        ref = np.zeros(17, int)
        for tok, c in collections.Counter(toks).items():
            ref[tok] = c
        np.testing.assert_array_equal(counts[i, 0], ref)


# --- batching: per-row parameters and histories of different lengths, one compilation -------


def test_per_row_parameters_and_history_lengths_under_one_compilation():
    rng = np.random.default_rng(4)
    rows, L, V = 4, 32, 50
    logits = (rng.standard_normal((rows, V)) * 2).astype(np.float32)
    traces = []

    @jax.jit
    def step(dec, logits, history, mask):
        traces.append(1)
        return dec.probs(logits, history=history, history_mask=mask)

    def make(pen, freq, n_min, plen):
        return sd.chain(
            sd.RepetitionPenalty(pen), sd.FrequencyPenalty(freq), sd.PresencePenalty(0.3),
            sd.NoRepeatNGram(2), sd.MinNewTokens(n_min, eos_id=0, prompt_length=plen),
            sd.TopP(0.95), sd.Temperature(0.8),
        )

    for trial in range(3):
        history = rng.integers(0, V, size=(rows, L))
        lengths = rng.integers(0, L + 1, size=rows)  # each row its own length (right padding)
        mask = np.arange(L)[None, :] < lengths[:, None]
        params = (rng.uniform(1.0, 2.0, rows).astype(np.float32), rng.uniform(0, 1, rows).astype(np.float32),
                  rng.integers(0, 10, rows), rng.integers(0, 5, rows))
        q = np.asarray(step(make(*params), logits, history, mask))
        # The same rows left-padded instead of right-padded: the same result, same compilation.
        shift = (np.arange(L)[None, :] + lengths[:, None]) % L
        q_left = np.asarray(step(make(*params), logits, np.take_along_axis(history, shift, 1),
                                 np.take_along_axis(mask, shift, 1)))
        assert np.abs(q - q_left).max() <= 1e-6
        if trial == 0:  # row 0 equals that row decoded alone, with its own unpadded history
            for i in range(1):
                one = make(*(p[i] for p in params))
                alone = np.asarray(one.probs(logits[i], history=history[i, : lengths[i]]))
                assert np.abs(q[i] - alone).max() <= 1e-6, (trial, i)
    assert len(traces) == 1


# --- bad input is named -------------------------------------------------------------------


def test_bad_input_is_named():
    cases = [
        (lambda: sd.RepetitionPenalty(0.0), "RepetitionPenalty: `penalty` must be in (0, inf), got 0.0"),
        (lambda: sd.RepetitionPenalty(-1.2), "RepetitionPenalty: `penalty`"),
        (lambda: sd.RepetitionPenalty(np.array([1.2, 0.0])), "RepetitionPenalty: `penalty`"),
        (lambda: sd.FrequencyPenalty(np.nan), "FrequencyPenalty: `penalty`"),
        (lambda: sd.PresencePenalty(np.inf), "PresencePenalty: `penalty`"),
        (lambda: sd.FrequencyPenalty(0.5, prompt_length=-1), "FrequencyPenalty: `prompt_length`"),
        (lambda: sd.NoRepeatNGram(0), "NoRepeatNGram: `n` must be an integer in [1, inf)"),
        (lambda: sd.NoRepeatNGram(-2), "NoRepeatNGram: `n`"),
        (lambda: sd.MinNewTokens(-1, eos_id=0), "MinNewTokens: `n` must be an integer in [0, inf)"),
        (lambda: sd.MinNewTokens(1.5, eos_id=0), "MinNewTokens: `n`"),
        (lambda: sd.MinNewTokens(2, eos_id=-3), "MinNewTokens: `eos_id`"),
        (lambda: sd.BanTokens([1, -2]), "BanTokens: `ids`"),
    ]
    for make, msg in cases:
        with pytest.raises(ValueError) as e:
            make()
        assert msg in str(e.value), (msg, str(e.value))


def test_bad_history_and_ids_at_call_time_are_named():
    logits = np.zeros((2, 5), np.float32)
    dec = sd.chain(sd.RepetitionPenalty(1.3))
    with pytest.raises(ValueError, match=r"history: token ids must be in \[0, V-1=4\]"):
        dec.probs(logits, history=np.array([[1, 5], [0, 1]]))
    with pytest.raises(ValueError, match=r"history: token ids must be in \[0, V-1=4\]"):
        dec.probs(logits, history=np.array([[1, -1], [0, 1]]))
    # ids in padding are not checked
    dec.probs(logits, history=np.array([[1, 9], [0, 1]]), history_mask=np.array([[True, False], [True, True]]))
    with pytest.raises(ValueError, match="RepetitionPenalty: reads the token history"):
        dec.probs(logits)
    with pytest.raises(ValueError, match=r"MinNewTokens: `eos_id` must be an integer in \[0, V-1=4\]"):
        sd.chain(sd.MinNewTokens(2, eos_id=7)).probs(logits, history=np.zeros((2, 1), int))
    with pytest.raises(ValueError, match=r"BanTokens: `ids` must be an integer in \[-1, V-1=4\]"):
        sd.chain(sd.BanTokens([2, 5])).probs(logits)

    @jax.jit
    def step(history):
        return dec.probs(logits, history=history)

    with pytest.raises(Exception, match="history: token ids must be in"):
        sd.checked(step)(jnp.array([[1, 8], [0, 1]]))
