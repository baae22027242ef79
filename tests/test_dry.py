"""DRY ("don't repeat yourself") against a literal numpy port of llama.cpp's sampler
(restart sequences, the reverse Z-algorithm): llama.cpp's own test vectors, hand-built
cases with breakers and repeats across padding, and random histories."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import simplex_decode as sd

from . import _numpy_ref_samplers as ref


@jax.jit
def dry_scores(transform, logits, history, mask):
    return sd.Objective(transforms=transform).prepare(logits, history=history, history_mask=mask).scores


def run(transform, logits, history, mask=None):
    history = jnp.asarray(history, jnp.int32)
    mask = jnp.ones(history.shape, bool) if mask is None else jnp.asarray(mask)
    return np.asarray(dry_scores(transform, jnp.asarray(logits, jnp.float32), history, mask))


@pytest.mark.parametrize(
    "probs, last, expected, mult, base, allowed, last_n, breakers",
    [  # llama.cpp tests/test-sampling.cpp (probabilities after DRY and a softmax)
        ([0.25] * 4, [0, 1], [0.25] * 4, 1.0, 1.1, 2, 4, []),
        ([0.25] * 4, [0, 1, 2, 0, 1], [0.296923, 0.296923, 0.109232, 0.296923], 1.0, 1.1, 2, 5, []),
        ([0.2] * 5, [0, 1, 3, 4, 0, 1], [0.2] * 5, 1.0, 1.1, 2, 6, [[3]]),
        ([0.2] * 5, [0, 1, 2, 0, 1], [0.241818, 0.241818, 0.032727, 0.241818, 0.241818], 2.0, 1.1, 2, 5, []),
        ([0.2] * 5, [0, 1, 2, 3, 4, 0, 1], [0.2] * 5, 1.0, 1.1, 4, 7, []),
    ],
)
def test_llama_cpp_test_vectors(probs, last, expected, mult, base, allowed, last_n, breakers):
    dry = sd.DRY(mult, base, allowed, last_n, breakers)
    s = run(dry, np.log(probs), last)
    np.testing.assert_allclose(ref.softmax(s), expected, atol=1e-5)
    np.testing.assert_allclose(s, ref.dry_penalised(np.log(probs), last, mult, base, allowed, last_n, breakers),
                               rtol=1e-6)


def test_hand_built_breakers_and_repeats_across_padding():
    V = 8
    logits = np.zeros(V)
    # "5 1 2 3 | 4 1 2 3": the suffix "1 2 3" repeats; 4 would extend it to length 4
    h = [5, 1, 2, 3, 4, 1, 2, 3]
    want = np.zeros(V)
    want[4] = -1.0 * 2.0 ** (3 - 2)
    np.testing.assert_allclose(run(sd.DRY(1.0, 2.0, 2), logits, h), want)
    # the same history with padding anywhere (left, middle, right): padding never counts
    padded = np.array([0, 5, 1, 0, 0, 2, 3, 4, 1, 0, 2, 3, 0])
    real = np.array([0, 1, 1, 0, 0, 1, 1, 1, 1, 0, 1, 1, 0], bool)
    np.testing.assert_allclose(run(sd.DRY(1.0, 2.0, 2), logits, padded, real), want)
    # a single-token breaker 2 after the repeat's start caps the length at 1 (< allowed): no penalty
    np.testing.assert_allclose(run(sd.DRY(1.0, 2.0, 2, -1, [[2]]), logits, h), np.zeros(V))
    # a two-token breaker "2 3" ends the context: nothing after it, rep_limit 0 < allowed 1
    np.testing.assert_allclose(run(sd.DRY(1.0, 2.0, 1, -1, [[2, 3]]), logits, h), np.zeros(V))
    # ... while with allowed_length 0 every token that followed anything is penalised (base^0)
    np.testing.assert_allclose(run(sd.DRY(1.0, 2.0, 0, -1, [[2, 3]]), logits, h),
                               ref.dry_penalised(logits, h, 1.0, 2.0, 0, -1, [[2, 3]]))
    assert (run(sd.DRY(1.0, 2.0, 0, -1, [[2, 3]]), logits, h) == [0, -1, -1, -1, -1, 0, 0, 0]).all()
    # breaker "6 7" never completes (7 absent): no effect
    np.testing.assert_allclose(run(sd.DRY(1.0, 2.0, 2, -1, [[6, 7]]), logits, h), want)
    # penalty_last_n = 4 sees "4 1 2 3" only: no earlier occurrence
    np.testing.assert_allclose(run(sd.DRY(1.0, 2.0, 2, 4), logits, h), np.zeros(V))
    # a single-token breaker is never penalised itself: 4 is one here
    np.testing.assert_allclose(run(sd.DRY(1.0, 2.0, 2, -1, [[4]]), logits, h), np.zeros(V))


def test_exponent_clamp_and_banned_tokens_stay_banned():
    h = [1, 2] * 30  # a long repeat
    logits = np.array([0.0, 0.0, -np.inf, 0.0, 0.0])
    base = 1e10  # max exponent int(88.72 / ln 1e10) = 3
    s = run(sd.DRY(0.5, base, 2), logits, h)
    want = ref.dry_penalised(logits, h, 0.5, base, 2, -1, [])
    assert s[2] == -np.inf and np.isfinite(s[1])
    np.testing.assert_allclose(s, want, rtol=1e-6)
    assert want[1] == pytest.approx(-0.5 * base**3)


def test_random_histories_per_row_parameters_and_padding():
    """64 rows: histories over 4 tokens (many repeats) with random padding, per-row
    multiplier / base / allowed length, shared random breakers, every window size."""
    rng = np.random.default_rng(0)
    B, L, V = 64, 24, 6
    hist = rng.integers(0, 4, (B, L))
    real = rng.random((B, L)) < 0.8
    logits = rng.standard_normal((B, V)).astype(np.float32)
    logits[rng.random((B, V)) < 0.1] = -np.inf
    mult = rng.choice([0.0, 0.5, 1.0, 2.0], B).astype(np.float32)
    base = rng.choice([1.0, 1.1, 1.75, 3.0], B).astype(np.float32)
    allowed = rng.integers(0, 4, B)
    breakers = [[3], [1, 2], [0, 0, 1]]
    for last_n in (-1, 0, 1, 5, 16, 40):
        dry = sd.DRY(mult, base, allowed, last_n, breakers)
        s = run(dry, logits, hist, real)
        for b in range(B):
            want = ref.dry_penalised(logits[b], hist[b][real[b]].tolist(), float(mult[b]), float(base[b]),
                                     int(allowed[b]), last_n, breakers)
            np.testing.assert_allclose(s[b], want, rtol=2e-6, atol=1e-6, err_msg=f"last_n={last_n} row {b}")
    hit = run(sd.DRY(mult, base, allowed, -1, breakers), logits, hist, real) != logits
    assert 0 < hit.any(-1).sum() < B  # some rows penalised, some not


def test_new_values_do_not_recompile():
    h = jnp.array([[1, 2, 3, 1, 2]], jnp.int32)
    run(sd.DRY(1.0, 1.5, 2, 8, [[3], [1, 2]]), np.zeros((1, 5)), h)
    n = dry_scores._cache_size()
    run(sd.DRY(0.3, 2.5, 1, 8, [[4], [0, 2]]), np.zeros((1, 5)), h)
    assert dry_scores._cache_size() == n


def test_dry_sequence_breakers_from_strings():
    """koboldcpp's rule on a toy vocabulary: a token containing the string is a breaker
    alone; a token ending with a prefix of it starts a breaker continued by the rest."""
    vocab = ["a", "\n", "x\ny", "b:", ":", "ab", "c"]
    encode = {"\n": [1], ":": [4], "b:": [3], ":\n": [4, 1]}

    def enc(text):
        return encode[text] if text in encode else [vocab.index(ch) for ch in text]

    out = sd.dry_sequence_breakers(["\n", "b:"], decode=lambda ids: vocab[ids[0]], encode=enc, vocab_size=len(vocab))
    assert (1,) in out and (2,) in out  # "\n" and "x\ny" contain "\n"
    assert (3,) in out  # "b:" contains "b:"
    assert (5, 4) in out  # "ab" ends with "b", the rest ":" is token 4
    assert (0,) not in out and (6,) not in out
    dry = sd.DRY(1.0, 2.0, 2, -1, out)
    assert dry.sequence_breakers.shape == (len(out), 2)


def test_bad_input_is_named():
    for args, kwargs, match in (
        ((-1.0,), {}, r"DRY: `multiplier` must be in \[0, inf\)"),
        ((1.0, 0.5), {}, r"DRY: `base` must be in \[1, inf\), got 0.5"),
        ((1.0, 1.5, -1), {}, r"DRY: `allowed_length` must be an integer in \[0, inf\)"),
        ((1.0, 1.5, 2, -2), {}, r"DRY: `penalty_last_n` must be an integer in \[-1, inf\)"),
        ((1.0, 1.5, 2, -1, [[]]), {}, "non-empty sequence"),
        ((1.0, 1.5, 2, -1, [[-3]]), {}, "token ids must be >= 0"),
    ):
        with pytest.raises(ValueError, match=match):
            sd.DRY(*args, **kwargs)
    with pytest.raises(ValueError, match="DRY: reads the token history"):
        sd.Objective(transforms=sd.DRY(1.0)).prepare(jnp.zeros(4))
