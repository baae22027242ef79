"""Tests of simplex_decode.generation.strategies: beam search, lookahead, CoT-decoding, self-consistency,
best-of-N and pass@k, on hand-built and tiny random models (brute force as the oracle)."""

from __future__ import annotations

import functools
import itertools
import math
from collections import Counter
from fractions import Fraction

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import simplex_decode as sd
from simplex_decode.models.llama import LlamaConfig, init_cache, init_random_params, make_step


def bigram_step(params, tokens, cache, positions):
    return params[tokens], cache


def log_softmax(x):
    x = np.asarray(x, np.float64)
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


# From token 0, greedy takes 1 (p = .6) and then at best p = .4; token 2 (p = .4) leads to 0 with p = .95.
TRAP = jnp.log(jnp.array([[1e-9, 0.6, 0.4], [0.3, 0.3, 0.4], [0.95, 0.025, 0.025]]))


def seq_logprob(lp, prompt_last, seq):
    total, last = 0.0, prompt_last
    for tok in seq:
        total += lp[last, tok]
        last = tok
    return total


def all_sequences(V, T, eos):
    """Every sequence a search can return: ending at its first EOS, or cut at length T."""
    for n in range(1, T + 1):
        for seq in itertools.product(range(V), repeat=n):
            body_ok = all(t not in eos for t in seq[:-1])
            if body_ok and (seq[-1] in eos or n == T):
                yield seq


# --------------------------------------------------------------------------------------
# beam search
# --------------------------------------------------------------------------------------


def test_beam_search_beats_greedy_on_a_trap():
    greedy = sd.generate(bigram_step, TRAP, [[0]], decoder=sd.greedy(), key=jax.random.key(0), max_new_tokens=2)
    assert greedy.tokens.tolist() == [[1, 2]]
    out = sd.beam_search(bigram_step, TRAP, [[0]], beam_width=2, max_new_tokens=2, length_penalty=0.0)
    assert out.tokens[0, 0].tolist() == [2, 0]
    lp = np.asarray(TRAP, np.float64)
    np.testing.assert_allclose(out.logprobs[0, 0], np.log(0.4 * 0.95), rtol=1e-5)
    assert float(out.logprobs[0, 0]) > seq_logprob(lp, 0, [1, 2])
    assert out.lengths.tolist() == [[2, 2]]
    assert not out.finished.any()


@pytest.mark.parametrize("eos, length_penalty", [((), 0.0), ((3,), 0.7), ((3, 1), -0.5)])
def test_beam_search_wide_enough_is_exhaustive(eos, length_penalty):
    """With W ≥ V^(T-1) every prefix stays alive, so the W results are the brute-force top W."""
    V, T, W = 4, 3, 16
    table = jax.random.normal(jax.random.key(4), (V, V)) * 1.5
    lp = log_softmax(table)
    prompts, lengths = [[2, 1], [3, 0]], [2, 1]
    out = sd.beam_search(bigram_step, table, prompts, beam_width=W, max_new_tokens=T, eos_id=eos or None,
                         length_penalty=length_penalty, early_stopping=False, pad_id=0, prompt_lengths=lengths)
    for b in range(2):
        last = prompts[b][lengths[b] - 1]
        ref = sorted(
            ((seq_logprob(lp, last, s) / len(s) ** length_penalty, s) for s in all_sequences(V, T, set(eos))),
            key=lambda x: -x[0],
        )[:W]
        np.testing.assert_allclose(out.scores[b], [r[0] for r in ref], rtol=1e-5, atol=1e-5)
        for w in range(W):
            n = int(out.lengths[b, w])
            seq = tuple(out.tokens[b, w, :n].tolist())
            assert seq in {r[1] for r in ref}
            np.testing.assert_allclose(out.logprobs[b, w], seq_logprob(lp, last, seq), rtol=1e-5, atol=1e-5)
            assert bool(out.finished[b, w]) == (seq[-1] in eos)
            assert np.all(np.asarray(out.tokens[b, w, n:]) == 0)
        assert out.tokens[b, 0, : int(out.lengths[b, 0])].tolist() == list(ref[0][1])


def test_beam_search_early_stopping_returns_finished_beams():
    V = 5
    table = jax.random.normal(jax.random.key(2), (V, V))
    table = table.at[:, 4].add(1.0)  # EOS (4) is likely: the pool fills early
    out = sd.beam_search(bigram_step, table, [[0]], beam_width=3, max_new_tokens=12, eos_id=4)
    assert out.finished.all()
    assert np.all(np.diff(np.asarray(out.scores[0])) <= 0)
    for w in range(3):
        n = int(out.lengths[0, w])
        assert int(out.tokens[0, w, n - 1]) == 4 and 4 not in out.tokens[0, w, : n - 1].tolist()


TINY = LlamaConfig(vocab_size=23, hidden_size=32, intermediate_size=48, num_layers=2, num_heads=4, num_kv_heads=2)


WIDTH = 12


@pytest.fixture(scope="module")
def llama():
    """A tiny random Llama, its cache factory, and a reference: log-probs from a fresh full forward pass."""
    params = jax.jit(init_random_params, static_argnums=(0,), static_argnames=("scale",))(
        TINY, jax.random.PRNGKey(1), scale=0.6)
    step = make_step(TINY)

    @jax.jit
    def _logits(ids, n):
        pos = jnp.where(jnp.arange(WIDTH) < n, jnp.arange(WIDTH), -1)[None].astype(jnp.int32)
        return step(params, ids[None], init_cache(TINY, 1, WIDTH), pos)[0][0]

    def all_logprobs(seq):
        """(len(seq), V): log p(· | seq[:i+1]) for every prefix, recomputed without reuse."""
        ids = jnp.asarray(list(seq) + [0] * (WIDTH - len(seq)), jnp.int32)
        return log_softmax(np.asarray(_logits(ids, len(seq))))[: len(seq)]

    return step, params, functools.partial(init_cache, TINY), all_logprobs


def test_beam_search_llama_cache_reordering_and_padding(llama):
    """Beams reorder the KV cache: each returned score must equal a fresh recomputation."""
    step, params, cache, all_logprobs = llama
    prompts, lengths = [[1, 2, 3, 4], [5, 6, 0, 0]], [4, 2]
    T, W = 4, 3
    out = sd.beam_search(step, params, prompts, beam_width=W, max_new_tokens=T, eos_id=7, prompt_lengths=lengths,
                         cache=cache, length_penalty=1.0)
    for b in range(2):
        p = prompts[b][: lengths[b]]
        for w in range(W):
            n = int(out.lengths[b, w])
            seq = p + out.tokens[b, w, :n].tolist()
            lg = all_logprobs(seq)
            ref = sum(lg[len(p) - 1 + i, seq[len(p) + i]] for i in range(n))
            np.testing.assert_allclose(out.logprobs[b, w], ref, atol=1e-4)
            np.testing.assert_allclose(out.scores[b, w], ref / n, atol=1e-4)


def test_beam_search_bad_arguments():
    with pytest.raises(ValueError, match="beam_width"):
        sd.beam_search(bigram_step, TRAP, [[0]], beam_width=0, max_new_tokens=2)
    with pytest.raises(ValueError, match="length_penalty"):
        sd.beam_search(bigram_step, TRAP, [[0]], beam_width=2, max_new_tokens=2, length_penalty=float("nan"))


# --------------------------------------------------------------------------------------
# lookahead
# --------------------------------------------------------------------------------------


def test_lookahead_picks_the_best_continuation_on_a_trap():
    out = sd.lookahead(bigram_step, TRAP, [[0]], depth=1, max_new_tokens=2, num_candidates=3)
    assert out.tokens.tolist() == [[2, 0]]
    np.testing.assert_allclose(out.diagnostics["lookahead_score"][0, 0], np.log(0.4 * 0.95), rtol=1e-5)
    greedy = sd.lookahead(bigram_step, TRAP, [[0]], depth=0, max_new_tokens=2, num_candidates=3)
    assert greedy.tokens.tolist() == [[1, 2]]


def lookahead_reference(lp, last, depth, T, eos):
    out = []
    for _ in range(T):
        best, best_score = None, -np.inf
        for v in np.argsort(-lp[last], kind="stable"):
            score, cur = lp[last, v], int(v)
            alive = cur not in eos
            for _ in range(depth):
                if not alive:
                    break
                g = int(np.argmax(lp[cur]))
                score += lp[cur, g]
                cur = g
                alive = g not in eos
            if score > best_score + 1e-9:
                best, best_score = int(v), score
        out.append(best)
        if best in eos:
            break
        last = best
    return out


def test_lookahead_matches_its_definition():
    V, T, depth = 7, 6, 2
    table = jax.random.normal(jax.random.key(9), (V, V)) * 2.0
    lp = log_softmax(table)
    prompts = [[3], [5]]
    out = sd.lookahead(bigram_step, table, prompts, depth=depth, max_new_tokens=T, num_candidates=V, eos_id=6)
    for b, p in enumerate(prompts):
        ref = lookahead_reference(lp, p[-1], depth, T, {6})
        assert out.tokens[b, : len(ref)].tolist() == ref
        assert int(out.lengths[b]) == len(ref)
    with pytest.raises(ValueError, match="num_candidates"):
        sd.lookahead(bigram_step, table, prompts, depth=1, max_new_tokens=2, num_candidates=V + 1)


def test_lookahead_and_cot_with_a_kv_cache(llama):
    """Branches copy the committed cache; every choice must match a recomputation without cache."""
    step, params, cache, all_logprobs = llama
    prompts, lengths = [[1, 2, 3], [4, 5, 0]], [3, 2]
    T, d, c = 3, 2, 3
    out = sd.lookahead(step, params, prompts, depth=d, num_candidates=c, max_new_tokens=T, cache=cache,
                       prompt_lengths=lengths)
    cot = sd.cot_decode(step, params, prompts, max_new_tokens=T, num_branches=c, cache=cache, prompt_lengths=lengths)
    for b in range(2):
        seq = prompts[b][: lengths[b]]
        for _ in range(T):  # lookahead, by its definition
            lp = all_logprobs(seq)[-1]
            best, best_score = None, -np.inf
            for v in np.argsort(-lp, kind="stable")[:c]:
                ext = seq + [int(v)]
                score = lp[v]
                for _ in range(d):
                    g_lp = all_logprobs(ext)[-1]
                    g = int(np.argmax(g_lp))
                    score += g_lp[g]
                    ext.append(g)
                if score > best_score + 1e-6:
                    best, best_score = int(v), score
            seq.append(best)
        assert out.tokens[b].tolist() == seq[lengths[b]:]
        base = prompts[b][: lengths[b]]
        firsts = np.argsort(-all_logprobs(base)[-1], kind="stable")[:c]
        for j in range(c):  # CoT branches: j-th first token, then greedy
            branch = base + [int(firsts[j])]
            for _ in range(T - 1):
                branch.append(int(np.argmax(all_logprobs(branch)[-1])))
            assert cot.tokens[b, j].tolist() == branch[lengths[b]:]


# --------------------------------------------------------------------------------------
# CoT-decoding
# --------------------------------------------------------------------------------------


def test_cot_decode_branches_and_confidence():
    V, T, k = 6, 5, 3
    table = jax.random.normal(jax.random.key(12), (V, V)) * 2.0
    p = np.exp(log_softmax(table))
    res = sd.cot_decode(bigram_step, table, [[2]], max_new_tokens=T, num_branches=k)
    firsts = np.argsort(-p[2], kind="stable")[:k]
    conf = []
    for j in range(k):
        seq, margins, last = [int(firsts[j])], [], 2
        for t in range(T):
            top = np.sort(p[last])[::-1]
            margins.append(top[0] - top[1])
            if t > 0:
                seq.append(int(np.argmax(p[last])))
            last = seq[-1]
        assert res.tokens[0, j].tolist() == seq
        np.testing.assert_allclose(res.margins[0, j], margins, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(res.first_logprobs[0, j], np.log(p[2, firsts[j]]), rtol=1e-5)
        conf.append(np.mean(margins))
    np.testing.assert_allclose(res.confidence[0], conf, rtol=1e-5)
    assert int(res.best[0]) == int(np.argmax(conf))

    # an answer extractor: the answer is the last two tokens; branches whose first token is 0 have none
    def span(ids):
        return None if ids[0] == 0 else (len(ids) - 2, len(ids))

    res2 = sd.cot_decode(bigram_step, table, [[2]], max_new_tokens=T, num_branches=k, answer_span=span)
    for j in range(k):
        if firsts[j] == 0:
            assert res2.confidence[0, j] == -np.inf
        else:
            np.testing.assert_allclose(res2.confidence[0, j], res.margins[0, j, T - 2:].mean(), rtol=1e-5)
    assert res2.spans[0].tolist() == [[0, 0] if firsts[j] == 0 else [T - 2, T] for j in range(k)]
    with pytest.raises(ValueError, match="answer_span"):
        sd.cot_decode(bigram_step, table, [[2]], max_new_tokens=T, num_branches=k, answer_span=lambda ids: (0, 99))


def test_cot_decode_prefers_the_confident_branch():
    # the greedy first token (1) leads to a flat distribution; the second (2) to a confident one
    res = sd.cot_decode(bigram_step, TRAP, [[0]], max_new_tokens=2, num_branches=2)
    assert res.tokens[0].tolist() == [[1, 2], [2, 0]]
    assert int(res.best[0]) == 1


# --------------------------------------------------------------------------------------
# self-consistency, best-of-N
# --------------------------------------------------------------------------------------


def test_majority_vote():
    assert sd.majority_vote(["a", "b", "a", None]) == ("a", {"a": 2, "b": 1})
    assert sd.majority_vote(["b", "a", "a", "b"])[0] == "b"  # ties: first seen
    assert sd.majority_vote([None, None]) == (None, {})
    assert sd.majority_vote([]) == (None, {})


def test_self_consistency_votes_over_samples():
    V = 6
    table = jax.random.normal(jax.random.key(3), (V, V))
    extract = lambda ids: None if int(ids[-1]) == 5 else int(ids[-1]) % 3  # noqa: E731
    res = sd.self_consistency(bigram_step, table, [[0], [1]], extract_answer=extract, num_samples=24,
                              decoder=sd.temperature(1.0), key=jax.random.key(0), max_new_tokens=3)
    toks = np.asarray(res.generation.tokens)
    assert toks.shape == (2, 24, 3)
    for b in range(2):
        answers = [extract(toks[b, k]) for k in range(24)]
        assert res.sample_answers[b] == answers
        counts = Counter(a for a in answers if a is not None)
        assert res.votes[b] == dict(counts)
        top = max(counts.values())
        assert res.answers[b] == next(a for a in answers if a is not None and counts[a] == top)
    # a deterministic decoder: every sample agrees
    res = sd.self_consistency(bigram_step, table, [[0]], extract_answer=lambda ids: tuple(ids.tolist()),
                              num_samples=5, decoder=sd.greedy(), key=jax.random.key(0), max_new_tokens=3)
    assert list(res.votes[0].values()) == [5]


def test_best_of_n_uses_the_score_function():
    V = 6
    table = jax.random.normal(jax.random.key(3), (V, V))
    score = lambda ids: float(np.sum(ids == 4)) - 0.01 * float(ids[0])  # noqa: E731
    res = sd.best_of_n(bigram_step, table, [[0], [1]], score_fn=score, num_samples=24, decoder=sd.temperature(1.0),
                       key=jax.random.key(0), max_new_tokens=3)
    toks = np.asarray(res.generation.tokens)
    for b in range(2):
        ref = [score(toks[b, k]) for k in range(24)]
        np.testing.assert_array_equal(res.scores[b], ref)
        assert int(res.best[b]) == int(np.argmax(ref))
        np.testing.assert_array_equal(res.tokens[b], toks[b, res.best[b]])
    with pytest.raises(ValueError, match="NaN"):
        sd.best_of_n(bigram_step, table, [[0]], score_fn=lambda ids: float("nan"), num_samples=2,
                     decoder=sd.temperature(1.0), key=jax.random.key(0), max_new_tokens=3)


# --------------------------------------------------------------------------------------
# pass@k
# --------------------------------------------------------------------------------------


def test_pass_at_k_matches_the_combinatorial_formula():
    for n in range(1, 13):
        for c in range(n + 1):
            for k in range(1, n + 1):
                exact = 1 - Fraction(math.comb(n - c, k), math.comb(n, k))
                assert abs(sd.pass_at_k(n, c, k) - float(exact)) < 1e-12, (n, c, k)


def test_pass_at_k_large_and_vectorised():
    n, c, k = 2000, 7, 100
    exact = 1 - Fraction(math.comb(n - c, k), math.comb(n, k))
    assert abs(sd.pass_at_k(n, c, k) - float(exact)) < 1e-12
    got = sd.pass_at_k(np.array([10, 10, 10]), np.array([0, 1, 10]), 1)
    np.testing.assert_allclose(got, [0.0, 0.1, 1.0], atol=1e-15)
    # pass@1 is the fraction correct
    np.testing.assert_allclose(sd.pass_at_k(200, np.arange(201), 1), np.arange(201) / 200, atol=1e-13)


@pytest.mark.parametrize("args, match", [((5, 6, 1), "num_correct"), ((5, 2, 0), "k"), ((5, 2, 6), "k"),
                                         ((5.0, 2, 1), "num_samples")])
def test_pass_at_k_bad_input(args, match):
    with pytest.raises(ValueError, match=match):
        sd.pass_at_k(*args)
