"""Sequence-level strategies on the step protocol of :mod:`simplex_decode.generation.loop`.

A next-token decoder chooses one distribution per step; these choose among *sequences*:

* :func:`beam_search` — the W sequences of highest length-normalised log-probability
  ``Σ log p / length^length_penalty``, found by keeping the W best prefixes per step.
* :func:`lookahead` — at each step, the token (among the model's top candidates) whose
  greedy continuation of ``depth`` further tokens has the highest joint probability.
* :func:`cot_decode` — CoT-decoding (Wang & Zhou, 2024): branch on the top-k first tokens,
  continue each branch greedily, and choose the branch with the highest *answer
  confidence*, the mean margin ``p(top-1) − p(top-2)`` over its answer tokens.
* :func:`self_consistency` — majority vote over the answers of K samples (Wang et al., 2023).
* :func:`best_of_n` — the sample a user scoring function (a reward model, a verifier) likes best.
* :func:`pass_at_k` — the unbiased pass@k estimator (Chen et al., 2021).

The device-side parts (beam search, lookahead, the branches of CoT-decoding) are one
jitted ``lax.while_loop`` each, like :func:`simplex_decode.generate`; answer extraction
and scoring run on the host after generation, on numpy arrays.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Hashable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from .._numerics import log_softmax, softmax
from ..status import Status
from ._common import (
    batch_axes,
    check_cache,
    check_int,
    check_step,
    decode_loop,
    model_step,
    parse_eos_ids,
    parse_prompts,
    prefill,
    repeat_rows,
    take_rows,
)
from .loop import GenerateResult, generate

__all__ = [
    "BeamSearchResult",
    "CoTResult",
    "SelfConsistencyResult",
    "BestOfNResult",
    "beam_search",
    "lookahead",
    "cot_decode",
    "self_consistency",
    "majority_vote",
    "best_of_n",
    "pass_at_k",
]


def _is_eos(tok, eos_ids):
    if not eos_ids:
        return jnp.zeros(tok.shape, bool)
    return jnp.any(tok[..., None] == jnp.asarray(eos_ids, jnp.int32), axis=-1)


def _nonfinite_status(logits):
    bad = jnp.any(jnp.isnan(logits) | (logits == jnp.inf), axis=-1)
    return jnp.where(bad, Status.NONFINITE_LOGITS, Status.OK).astype(jnp.int32)


# --------------------------------------------------------------------------------------
# Beam search
# --------------------------------------------------------------------------------------


class BeamSearchResult(NamedTuple):
    """The ``beam_width`` best sequences per prompt, best first.

    Attributes:
      tokens: int32 ``(B, W, T)``, ``pad_id`` after each sequence's end (EOS kept).
      lengths: int32 ``(B, W)`` generated tokens (EOS included).
      scores: float32 ``(B, W)`` ``logprobs / lengths ** length_penalty`` (sorted, descending).
      logprobs: float32 ``(B, W)`` the sequences' total model log-probability.
      finished: bool ``(B, W)``: the sequence ended with EOS (False: cut at ``max_new_tokens``).
      status: int32 ``(B, W)``: ``OK``, or ``CONSTRAINT_INCOMPLETE`` for a sequence cut at
        ``max_new_tokens`` before it matched the ``constraint``.
    """

    tokens: jax.Array
    lengths: jax.Array
    scores: jax.Array
    logprobs: jax.Array
    finished: jax.Array
    status: jax.Array | None = None


class _Beams(NamedTuple):
    t: Any
    logits: Any
    cache: Any
    alive_tok: Any
    alive_lp: Any
    fin_tok: Any
    fin_score: Any
    fin_lp: Any
    fin_len: Any
    done: Any
    cstate: Any = None


def _norm(lp, length, length_penalty):
    return lp / jnp.asarray(length, jnp.float32) ** length_penalty


@functools.partial(
    jax.jit,
    static_argnames=("step", "cache_fn", "beam_width", "max_new_tokens", "eos_ids", "pad_id", "length_penalty",
                     "early_stopping"),
)
def _beam_jit(params, prompt, lengths, constraint, *, step, cache_fn, beam_width, max_new_tokens, eos_ids, pad_id,
              length_penalty, early_stopping):
    B, P = prompt.shape
    W, T = beam_width, max_new_tokens
    max_len = P + T
    last, cache, _ = prefill(step, params, prompt, lengths, cache_fn, max_len)
    axes = batch_axes(cache_fn, max_len)
    cache = repeat_rows(cache, axes, W)
    V = last.shape[-1]
    C = min(W * (1 + len(eos_ids)), W * V)
    pos0 = jnp.repeat(lengths, W)
    neg = jnp.float32(-jnp.inf)

    def body(s: _Beams) -> _Beams:
        logp = log_softmax(s.logits.astype(jnp.float32)).reshape(B, W, V)
        if constraint is not None:  # sequences outside the constraint's language have probability 0
            constraint.check_vocab_size(V)
            logp = jnp.where(constraint.allowed(s.cstate), logp, -jnp.inf)
        cand = (s.alive_lp[..., None] + logp).reshape(B, W * V)
        top_v, top_i = lax.top_k(cand, C)  # ties: lowest (beam, token) first
        beam, tok = top_i // V, (top_i % V).astype(jnp.int32)
        seqs = jnp.take_along_axis(s.alive_tok, beam[..., None], axis=1).at[:, :, s.t].set(tok)
        eos = _is_eos(tok, eos_ids) & (top_v > neg)
        # sequences ending here join the finished pool (frozen once a prompt is done)
        f_score = jnp.where(eos & ~s.done[:, None], _norm(top_v, s.t + 1, length_penalty), neg)
        all_score = jnp.concatenate([s.fin_score, f_score], axis=1)
        fs, fi = lax.top_k(all_score, W)
        pick = lambda a, b, i: jnp.take_along_axis(jnp.concatenate([a, b], axis=1), i, axis=1)  # noqa: E731
        fin_tok = pick(s.fin_tok, seqs, fi[..., None])
        fin_lp = pick(s.fin_lp, top_v, fi)
        fin_len = pick(s.fin_len, jnp.full((B, C), s.t + 1, jnp.int32), fi)
        # the W best continuing prefixes stay alive
        a_v, ai = lax.top_k(jnp.where(eos, neg, top_v), W)
        alive_tok = jnp.take_along_axis(seqs, ai[..., None], axis=1)
        parent = jnp.take_along_axis(beam, ai, axis=1)
        new_tok = jnp.take_along_axis(tok, ai, axis=1).reshape(B * W)
        cstate = s.cstate
        if constraint is not None:
            cstate = constraint.update_state(jnp.take_along_axis(s.cstate, parent, axis=1), new_tok.reshape(B, W), None)
        n_fin = jnp.sum(fs > neg, axis=1)
        full = n_fin == W
        if early_stopping:
            done = s.done | full
        else:
            # the best any alive prefix can still reach (log-probs only decrease)
            best_len = T if length_penalty > 0 else s.t + 1
            bound = _norm(jnp.max(a_v, axis=1), best_len, length_penalty)
            done = s.done | (full & (jnp.min(fs, axis=1) >= bound)) | jnp.all(a_v == neg, axis=1)
        rows = (jnp.arange(B)[:, None] * W + parent).reshape(B * W)
        more = (s.t + 1 < T) & ~jnp.all(done)

        def advance(c):
            c = take_rows(c, axes, rows)
            logits, c, _ = model_step(step, params, new_tok, c, pos0 + s.t)
            return logits, c

        logits, cache = lax.cond(more, advance, lambda c: (s.logits, c), s.cache)
        return _Beams(s.t + 1, logits, cache, alive_tok, a_v, fin_tok, fs, fin_lp, fin_len, done, cstate)

    alive_lp = jnp.where(jnp.arange(W) == 0, 0.0, neg)[None, :].repeat(B, axis=0)  # one live beam at first
    init = _Beams(
        t=jnp.int32(0),
        logits=jnp.repeat(last, W, axis=0),
        cache=cache,
        alive_tok=jnp.full((B, W, T), pad_id, jnp.int32),
        alive_lp=alive_lp.astype(jnp.float32),
        fin_tok=jnp.full((B, W, T), pad_id, jnp.int32),
        fin_score=jnp.full((B, W), neg),
        fin_lp=jnp.full((B, W), neg),
        fin_len=jnp.zeros((B, W), jnp.int32),
        done=jnp.zeros((B,), bool),
        cstate=None if constraint is None else constraint.init_state((B, W)),
    )
    s = lax.while_loop(lambda s: (s.t < T) & ~jnp.all(s.done), body, init)
    # prompts still searching when the budget ran out: their alive prefixes compete too
    a_score = jnp.where(s.done[:, None], neg, _norm(s.alive_lp, s.t, length_penalty))
    all_score = jnp.concatenate([s.fin_score, a_score], axis=1)
    scores, idx = lax.top_k(all_score, W)
    cat = lambda a, b: jnp.concatenate([a, b], axis=1)  # noqa: E731
    tokens = jnp.take_along_axis(cat(s.fin_tok, s.alive_tok), idx[..., None], axis=1)
    logprobs = jnp.take_along_axis(cat(s.fin_lp, s.alive_lp), idx, axis=1)
    lens = jnp.take_along_axis(cat(s.fin_len, jnp.full((B, W), s.t, jnp.int32)), idx, axis=1)
    finished = (idx < W) & (scores > neg)  # (a -inf slot: fewer than W sequences exist)
    if constraint is None:
        status = jnp.zeros((B, W), jnp.int32)
    else:  # an alive prefix cut at max_new_tokens: is it a complete match?
        ended = jnp.concatenate([jnp.zeros((B, W), jnp.int32), constraint.end_status(s.cstate)], axis=1)
        status = jnp.take_along_axis(ended, idx, axis=1)
    return BeamSearchResult(tokens=tokens, lengths=lens, scores=scores, logprobs=logprobs, finished=finished,
                            status=status)


def beam_search(
    step: Callable,
    params: Any,
    prompt_tokens: Any,
    *,
    beam_width: int,
    max_new_tokens: int,
    eos_id: int | Sequence[int] | None = None,
    cache: Callable | None = None,
    length_penalty: float = 1.0,
    early_stopping: bool = True,
    pad_id: int = 0,
    prompt_lengths: Any = None,
    constraint: Any = None,
) -> BeamSearchResult:
    """Beam search: the ``beam_width`` sequences of highest normalised log-probability.

    Approximately solves, per prompt,

    .. math::

        \\arg\\max_{y_{1:n},\\ n \\le T}\\ \\frac{\\sum_{t=1}^{n} \\log p(y_t \\mid x, y_{<t})}{n^{\\alpha}}

    over sequences that end with EOS (or are cut at ``T = max_new_tokens``), with
    ``α = length_penalty`` (Hugging Face's convention: α > 0 favours longer sequences,
    α = 0 is the raw log-probability). Each step extends the W live prefixes by every
    token, moves the candidates that end in EOS to a pool of W finished sequences, and
    keeps the W best others alive (ties: lowest beam, then lowest token id). With
    ``W ≥ V^(T-1)`` the search is exhaustive.

    Args:
      step, params, prompt_tokens, cache, pad_id, prompt_lengths: as in :func:`simplex_decode.generate`.
      beam_width: W (static).
      max_new_tokens: T.
      eos_id: id(s) ending a sequence, or None (then all sequences have length T).
      length_penalty: α.
      early_stopping: True stops a prompt once W sequences have finished (Hugging Face's
        ``early_stopping=True``); False continues until no live prefix can still beat the
        worst finished one (the exact criterion, Hugging Face's ``"never"``).
      constraint: None, or a :class:`simplex_decode.Constraint` (a regex / JSON schema per
        prompt): the search runs over the sequences of its language only — every token it
        does not allow has log-probability ``-inf`` (the model's own, not renormalised: the
        search maximises ``log p(y)`` over valid ``y``), and EOS only ends a complete match.

    Returns:
      A :class:`BeamSearchResult`, best first.

    Example:
      >>> import jax.numpy as jnp, simplex_decode as sd
      >>> # from token 0: greedy takes 1 (p=.6) then anything (p≤.4); 2 (p=.4) leads to 0 (p=.95)
      >>> table = jnp.log(jnp.array([[.0, .6, .4], [.3, .3, .4], [.95, .025, .025]]) + 1e-9)
      >>> step = lambda params, tokens, cache, positions: (params[tokens], cache)
      >>> out = sd.beam_search(step, table, [[0]], beam_width=2, max_new_tokens=2, length_penalty=0.0)
      >>> out.tokens[0, 0].tolist()
      [2, 0]
    """
    step_s = check_step(step)
    cache_s = check_cache(cache)
    beam_width = check_int("beam_width", beam_width, 1)
    max_new_tokens = check_int("max_new_tokens", max_new_tokens, 1)
    pad_id = check_int("pad_id", pad_id, 0)
    if isinstance(length_penalty, bool) or not isinstance(length_penalty, (int, float)) or not np.isfinite(length_penalty):
        raise ValueError(f"length_penalty: must be a finite number, got {length_penalty!r}")
    if not isinstance(early_stopping, bool):
        raise ValueError(f"early_stopping: must be True or False, got {early_stopping!r}")
    prompt, lengths = parse_prompts(prompt_tokens, prompt_lengths, pad_id)
    eos_ids = parse_eos_ids(eos_id)
    if constraint is not None:
        if not (hasattr(constraint, "allowed") and hasattr(constraint, "init_state") and hasattr(constraint, "update_state")):
            raise ValueError(f"constraint: must be None or a simplex_decode.Constraint, got {type(constraint).__name__}")
        missing = [i for i in constraint.eos_ids if i not in eos_ids]
        if missing:
            raise ValueError(
                f"eos_id: the constraint ends its output with token id(s) {list(constraint.eos_ids)}, so the search "
                f"must stop on them; got eos_id={eos_id!r}"
            )
    return _beam_jit(
        params, prompt, lengths, constraint, step=step_s, cache_fn=cache_s, beam_width=beam_width,
        max_new_tokens=max_new_tokens, eos_ids=eos_ids, pad_id=pad_id,
        length_penalty=float(length_penalty), early_stopping=early_stopping,
    )


# --------------------------------------------------------------------------------------
# Lookahead
# --------------------------------------------------------------------------------------


@functools.partial(
    jax.jit, static_argnames=("step", "cache_fn", "depth", "num_candidates", "max_new_tokens", "eos_ids", "pad_id")
)
def _lookahead_jit(params, prompt, lengths, *, step, cache_fn, depth, num_candidates, max_new_tokens, eos_ids,
                   pad_id):
    B, P = prompt.shape
    c = num_candidates
    max_len = P + max_new_tokens + depth
    last, cache, _ = prefill(step, params, prompt, lengths, cache_fn, max_len)
    axes = batch_axes(cache_fn, max_len)
    if c > last.shape[-1]:
        raise ValueError(f"num_candidates: must be <= the vocabulary size {last.shape[-1]}, got {c}")

    def select(t, logits, second, cache, pos, hist, hmask, active, threaded):
        logp = log_softmax(logits.astype(jnp.float32))
        first_lp, cand = lax.top_k(logp, c)  # (B, c), best first, lowest id on ties
        score = first_lp.reshape(B * c)
        tokens = cand.reshape(B * c).astype(jnp.int32)
        alive = ~_is_eos(tokens, eos_ids)
        branch_pos = jnp.repeat(pos, c)

        def roll(i, carry):
            score, tokens, alive, bc = carry
            lg, bc, _ = model_step(step, params, tokens, bc, jnp.where(alive, branch_pos + i, -1))
            lp = log_softmax(lg.astype(jnp.float32))
            g = jnp.argmax(lp, axis=-1).astype(jnp.int32)
            score = score + jnp.where(alive, jnp.max(lp, axis=-1), 0.0)
            return score, g, alive & ~_is_eos(g, eos_ids), bc

        if depth > 0:
            score, *_ = lax.fori_loop(0, depth, roll, (score, tokens, alive, repeat_rows(cache, axes, c)))
        score = score.reshape(B, c)
        best = jnp.argmax(score, axis=-1)  # ties: the candidate the model ranks higher
        ids = jnp.take_along_axis(cand, best[:, None], axis=1)[:, 0]
        joint = jnp.take_along_axis(score, best[:, None], axis=1)[:, 0]
        return ids, jnp.zeros((B,), jnp.float32), _nonfinite_status(logits), {"lookahead_score": joint}, threaded

    out, finished = decode_loop(
        step, params, cache, last, prompt, lengths, select, max_new_tokens=max_new_tokens, eos_ids=eos_ids,
        pad_id=pad_id, extras=("lookahead_score",),
    )
    return GenerateResult(
        tokens=out.tokens, lengths=out.n_gen, finished=finished, logprobs=out.logq, model_logprobs=out.logp,
        status=out.status, diagnostics=dict(out.extras),
    )


def lookahead(
    step: Callable,
    params: Any,
    prompt_tokens: Any,
    *,
    depth: int,
    max_new_tokens: int,
    num_candidates: int = 8,
    eos_id: int | Sequence[int] | None = None,
    cache: Callable | None = None,
    pad_id: int = 0,
    prompt_lengths: Any = None,
) -> GenerateResult:
    """Lookahead decoding: commit the token whose greedy continuation is most probable.

    At every step, for each of the model's ``num_candidates`` most likely next tokens
    ``v``, roll out ``depth`` greedy tokens ``g_1 … g_d`` and commit

    .. math::

        y_t = \\arg\\max_{v \\in \\text{top-}c}\\ \\log p(v \\mid y_{<t})
              + \\sum_{i=1}^{d} \\log p(g_i \\mid y_{<t}, v, g_{<i}),
        \\qquad g_i = \\arg\\max_u p(u \\mid y_{<t}, v, g_{<i}).

    A continuation stops accumulating at EOS (so an early EOS competes with its
    probability so far); ties go to the candidate the model ranks higher. ``depth=0`` is
    greedy decoding. Each step costs ``depth`` model calls on ``B·c`` rows plus one on B.

    Args:
      step, params, prompt_tokens, cache, pad_id, prompt_lengths, eos_id: as in :func:`simplex_decode.generate`
        (the cache factory is called with ``max_len = P + max_new_tokens + depth``).
      depth: d, the greedy continuation length (static).
      max_new_tokens: T.
      num_candidates: c, the candidates examined per step (``c = V`` is the exact rule).

    Returns:
      A :class:`simplex_decode.GenerateResult` (``logprobs`` are 0: the choice is
      deterministic) whose ``diagnostics["lookahead_score"]`` holds the winning joint
      log-probability at each step.

    Example:
      >>> import jax.numpy as jnp, simplex_decode as sd
      >>> table = jnp.log(jnp.array([[.0, .6, .4], [.3, .3, .4], [.95, .025, .025]]) + 1e-9)
      >>> step = lambda params, tokens, cache, positions: (params[tokens], cache)
      >>> sd.lookahead(step, table, [[0]], depth=1, max_new_tokens=1, num_candidates=3).tokens.tolist()
      [[2]]
    """
    step_s = check_step(step)
    cache_s = check_cache(cache)
    depth = check_int("depth", depth, 0)
    num_candidates = check_int("num_candidates", num_candidates, 1)
    max_new_tokens = check_int("max_new_tokens", max_new_tokens, 1)
    pad_id = check_int("pad_id", pad_id, 0)
    prompt, lengths = parse_prompts(prompt_tokens, prompt_lengths, pad_id)
    return _lookahead_jit(
        params, prompt, lengths, step=step_s, cache_fn=cache_s, depth=depth, num_candidates=num_candidates,
        max_new_tokens=max_new_tokens, eos_ids=parse_eos_ids(eos_id), pad_id=pad_id,
    )


# --------------------------------------------------------------------------------------
# CoT-decoding
# --------------------------------------------------------------------------------------


class CoTResult(NamedTuple):
    """CoT-decoding branches and the chosen one.

    Attributes:
      tokens: int32 ``(B, k, T)``: branch j starts with the model's j-th most likely token.
      lengths: int32 ``(B, k)``.
      first_logprobs: float32 ``(B, k)``: ``log p`` of each branch's first token.
      margins: float32 ``(B, k, T)``: ``p(top-1) − p(top-2)`` of the model at each step.
      spans: ``(B, k, 2)`` int ``[start, stop)`` of each branch's answer (``(0, 0)`` if none).
      confidence: float ``(B, k)``: mean margin over the answer span (``-inf`` if none).
      best: int ``(B,)``: the chosen branch (highest confidence; ties: the lower branch).
    """

    tokens: np.ndarray
    lengths: np.ndarray
    first_logprobs: np.ndarray
    margins: np.ndarray
    spans: np.ndarray
    confidence: np.ndarray
    best: np.ndarray


@functools.partial(
    jax.jit, static_argnames=("step", "cache_fn", "num_branches", "max_new_tokens", "eos_ids", "pad_id")
)
def _cot_jit(params, prompt, lengths, *, step, cache_fn, num_branches, max_new_tokens, eos_ids, pad_id):
    B, P = prompt.shape
    k = num_branches
    max_len = P + max_new_tokens
    last, cache, _ = prefill(step, params, prompt, lengths, cache_fn, max_len)
    if k > last.shape[-1]:
        raise ValueError(f"num_branches: must be <= the vocabulary size {last.shape[-1]}, got {k}")
    cache = repeat_rows(cache, batch_axes(cache_fn, max_len), k)
    _, first = lax.top_k(last.astype(jnp.float32), k)
    first = first.reshape(B * k).astype(jnp.int32)

    def select(t, logits, second, cache, pos, hist, hmask, active, threaded):
        p = softmax(logits.astype(jnp.float32))
        top2 = lax.top_k(p, 2)[0]
        ids = jnp.where(t == 0, first, jnp.argmax(p, axis=-1).astype(jnp.int32))
        return ids, jnp.zeros(ids.shape, jnp.float32), _nonfinite_status(logits), {"margin": top2[:, 0] - top2[:, 1]}, threaded

    out, _ = decode_loop(
        step, params, cache, jnp.repeat(last, k, axis=0), jnp.repeat(prompt, k, axis=0),
        jnp.repeat(lengths, k, axis=0), select, max_new_tokens=max_new_tokens, eos_ids=eos_ids, pad_id=pad_id,
        extras=("margin",),
    )
    r = lambda x: x.reshape((B, k) + x.shape[1:])  # noqa: E731
    return r(out.tokens), r(out.n_gen), r(out.logp[:, 0]), r(out.extras["margin"])


def cot_decode(
    step: Callable,
    params: Any,
    prompt_tokens: Any,
    *,
    max_new_tokens: int,
    num_branches: int = 10,
    answer_span: Callable[[np.ndarray], tuple[int, int] | None] | None = None,
    eos_id: int | Sequence[int] | None = None,
    cache: Callable | None = None,
    pad_id: int = 0,
    prompt_lengths: Any = None,
) -> CoTResult:
    """CoT-decoding (Wang & Zhou, 2024): branch on the first token, decode greedily, pick by confidence.

    Branch j starts with the model's j-th most likely first token and continues greedily.
    Its answer confidence is

    .. math::

        \\Delta_j = \\frac{1}{|A_j|} \\sum_{t \\in A_j} p(x^1_t \\mid \\cdot) - p(x^2_t \\mid \\cdot),

    the mean gap between the two most likely tokens over the positions ``A_j`` of the
    branch's answer, and the chosen branch is ``argmax_j Δ_j``.

    Args:
      step, params, prompt_tokens, cache, pad_id, prompt_lengths, eos_id: as in :func:`simplex_decode.generate`.
      max_new_tokens: T.
      num_branches: k, the first tokens branched on (static).
      answer_span: ``answer_span(ids) -> (start, stop) | None`` locating the answer in a
        branch's generated ids (a numpy array, EOS included if emitted), e.g. the tokens of
        the last number; None means "no answer" (confidence ``-inf``). Default: the whole
        branch without its final EOS.

    Returns:
      A :class:`CoTResult` (numpy arrays).

    Example:
      >>> import jax.numpy as jnp, simplex_decode as sd
      >>> table = jnp.log(jnp.array([[.0, .6, .4], [.3, .3, .4], [.95, .025, .025]]) + 1e-9)
      >>> step = lambda params, tokens, cache, positions: (params[tokens], cache)
      >>> res = sd.cot_decode(step, table, [[0]], max_new_tokens=2, num_branches=2)
      >>> res.tokens[0].tolist(), int(res.best[0])
      ([[1, 2], [2, 0]], 1)
    """
    step_s = check_step(step)
    cache_s = check_cache(cache)
    num_branches = check_int("num_branches", num_branches, 1)
    max_new_tokens = check_int("max_new_tokens", max_new_tokens, 1)
    pad_id = check_int("pad_id", pad_id, 0)
    if answer_span is not None and not callable(answer_span):
        raise ValueError(f"answer_span: must be None or a callable ids -> (start, stop) | None, got {answer_span!r}")
    eos_ids = parse_eos_ids(eos_id)
    prompt, lengths = parse_prompts(prompt_tokens, prompt_lengths, pad_id)
    tokens, lens, first_lp, margins = jax.device_get(_cot_jit(
        params, prompt, lengths, step=step_s, cache_fn=cache_s, num_branches=num_branches,
        max_new_tokens=max_new_tokens, eos_ids=eos_ids, pad_id=pad_id,
    ))
    B, k = lens.shape
    spans = np.zeros((B, k, 2), np.int64)
    conf = np.full((B, k), -np.inf)
    for b in range(B):
        for j in range(k):
            ids = tokens[b, j, : lens[b, j]]
            if answer_span is None:
                n = len(ids) - int(len(ids) > 0 and int(ids[-1]) in eos_ids)
                span = (0, n)
            else:
                span = answer_span(ids)
            if span is None:
                continue
            start, stop = (int(x) for x in span)
            if not 0 <= start <= stop <= len(ids):
                raise ValueError(
                    f"answer_span: returned {span!r} for a branch of {len(ids)} tokens; need 0 <= start <= stop <= {len(ids)}"
                )
            spans[b, j] = (start, stop)
            if stop > start:
                conf[b, j] = float(np.mean(margins[b, j, start:stop]))
    return CoTResult(
        tokens=tokens, lengths=lens, first_logprobs=first_lp, margins=margins, spans=spans, confidence=conf,
        best=np.argmax(conf, axis=1),
    )


# --------------------------------------------------------------------------------------
# Self-consistency, best-of-N, pass@k
# --------------------------------------------------------------------------------------


def majority_vote(answers: Sequence[Hashable | None]) -> tuple[Hashable | None, dict]:
    """The most frequent answer (``None`` entries abstain) and the vote counts.

    Ties go to the answer that appeared first. Returns ``(None, {})`` when every sample
    abstained.

    Example:
      >>> majority_vote(["4", None, "5", "4", "5"])
      ('4', {'4': 2, '5': 2})
    """
    counts: dict = {}
    for a in answers:
        if a is not None:
            counts[a] = counts.get(a, 0) + 1
    if not counts:
        return None, counts
    best = max(counts.values())
    return next(a for a, c in counts.items() if c == best), counts


class SelfConsistencyResult(NamedTuple):
    """Per prompt: the voted ``answer`` (None if all abstained), its ``votes`` (answer → count),
    every sample's extracted answer (``sample_answers[b][k]``), and the ``generation``."""

    answers: list
    votes: list
    sample_answers: list
    generation: GenerateResult


def _samples(result: GenerateResult):
    tokens, lengths = jax.device_get((result.tokens, result.lengths))
    return [[tokens[b, k, : lengths[b, k]] for k in range(tokens.shape[1])] for b in range(tokens.shape[0])]


def self_consistency(
    step: Callable,
    params: Any,
    prompt_tokens: Any,
    *,
    extract_answer: Callable[[np.ndarray], Hashable | None],
    num_samples: int,
    **generate_kwargs,
) -> SelfConsistencyResult:
    """Self-consistency (Wang et al., 2023): sample K completions, vote on their answers.

    ``answer = argmax_a #{k : extract_answer(y_k) = a}`` over the K samples of
    :func:`simplex_decode.generate` (with ``decoder``, ``key``, ``max_new_tokens`` … passed
    through). ``extract_answer`` gets each sample's generated ids (numpy, EOS included)
    and returns a hashable answer or None (abstain); ties go to the answer sampled first.

    Example:
      >>> import jax, jax.numpy as jnp, simplex_decode as sd
      >>> table = jnp.log(jnp.array([[.1, .6, .3], [.2, .2, .6], [.5, .4, .1]]))
      >>> step = lambda params, tokens, cache, positions: (params[tokens], cache)
      >>> res = sd.self_consistency(step, table, [[0]], extract_answer=lambda ids: int(ids[0]),
      ...     num_samples=64, decoder=sd.temperature(1.0), key=jax.random.key(0), max_new_tokens=1)
      >>> res.answers
      [1]
    """
    if not callable(extract_answer):
        raise ValueError(f"extract_answer: must be a callable ids -> answer | None, got {extract_answer!r}")
    num_samples = check_int("num_samples", num_samples, 1)
    gen = generate(step, params, prompt_tokens, num_samples=num_samples, **generate_kwargs)
    per_sample = [[extract_answer(ids) for ids in row] for row in _samples(gen)]
    voted = [majority_vote(row) for row in per_sample]
    return SelfConsistencyResult(
        answers=[a for a, _ in voted], votes=[v for _, v in voted], sample_answers=per_sample, generation=gen
    )


class BestOfNResult(NamedTuple):
    """Per prompt: ``best`` sample index ``(B,)``, every sample's ``scores`` ``(B, N)``,
    the best samples' ids (``tokens``, a list of numpy arrays), and the ``generation``."""

    best: np.ndarray
    scores: np.ndarray
    tokens: list
    generation: GenerateResult


def best_of_n(
    step: Callable,
    params: Any,
    prompt_tokens: Any,
    *,
    score_fn: Callable[[np.ndarray], float],
    num_samples: int,
    **generate_kwargs,
) -> BestOfNResult:
    """Best-of-N: sample N completions and keep ``argmax_k score_fn(y_k)``.

    ``score_fn`` gets each sample's generated ids (numpy, EOS included) and returns a
    float (a reward model, a verifier, a length penalty …); ties go to the lower index,
    and a NaN score is an error. Generation arguments pass through to
    :func:`simplex_decode.generate`.

    Example:
      >>> import jax, jax.numpy as jnp, simplex_decode as sd
      >>> table = jnp.log(jnp.array([[.1, .6, .3], [.2, .2, .6], [.5, .4, .1]]))
      >>> step = lambda params, tokens, cache, positions: (params[tokens], cache)
      >>> res = sd.best_of_n(step, table, [[0]], score_fn=lambda ids: float((ids == 2).sum()),
      ...     num_samples=16, decoder=sd.temperature(1.0), key=jax.random.key(0), max_new_tokens=3)
      >>> res.scores.shape, bool(res.scores[0, res.best[0]] == res.scores[0].max())
      ((1, 16), True)
    """
    if not callable(score_fn):
        raise ValueError(f"score_fn: must be a callable ids -> float, got {score_fn!r}")
    num_samples = check_int("num_samples", num_samples, 1)
    gen = generate(step, params, prompt_tokens, num_samples=num_samples, **generate_kwargs)
    samples = _samples(gen)
    scores = np.array([[float(score_fn(ids)) for ids in row] for row in samples])
    if np.isnan(scores).any():
        b, k = np.argwhere(np.isnan(scores))[0]
        raise ValueError(f"score_fn: returned NaN for prompt {b}, sample {k}")
    best = np.argmax(scores, axis=1)
    return BestOfNResult(best=best, scores=scores, tokens=[samples[b][best[b]] for b in range(len(samples))],
                         generation=gen)


def _pass_at_k_one(n, c, k):
    if n - c < k:
        return 1.0
    i = np.arange(n - c + 1, n + 1, dtype=np.float64)
    return float(1.0 - np.prod(1.0 - k / i))


def pass_at_k(num_samples, num_correct, k):
    """Unbiased pass@k estimate from ``n`` samples of which ``c`` are correct (Chen et al., 2021).

    .. math::

        \\widehat{\\text{pass@}k} = 1 - \\binom{n-c}{k} \\Big/ \\binom{n}{k}
                                 = 1 - \\prod_{i=n-c+1}^{n} \\left(1 - \\frac{k}{i}\\right),

    the probability that a random size-k subset of the n samples holds a correct one,
    computed in the product form (no huge binomials). Arguments broadcast (numpy);
    requires ``0 <= c <= n`` and ``1 <= k <= n``. Average over problems for the benchmark
    score.

    Example:
      >>> round(float(pass_at_k(10, 3, 1)), 6), float(pass_at_k(10, 3, 8))
      (0.3, 1.0)
    """
    n, c, k = np.broadcast_arrays(np.asarray(num_samples), np.asarray(num_correct), np.asarray(k))
    for name, x in (("num_samples", n), ("num_correct", c), ("k", k)):
        if not np.issubdtype(x.dtype, np.integer):
            raise ValueError(f"pass_at_k: `{name}` must hold integers, got dtype {x.dtype}")
    if np.any(c < 0) or np.any(c > n):
        raise ValueError("pass_at_k: `num_correct` must be in [0, num_samples]")
    if np.any(k < 1) or np.any(k > n):
        raise ValueError("pass_at_k: `k` must be in [1, num_samples]")
    out = np.vectorize(_pass_at_k_one, otypes=[np.float64])(n, c, k)
    return out[()] if out.ndim == 0 else out
