"""Support rules ``S(s)``: which tokens may receive probability.

A rule is a pytree dataclass with ``__call__(scores, mask, ctx) -> mask``: it receives the
boolean mask left by the rules before it (``Objective.support`` is an ordered chain, as
transformers applies top-k, then top-p, then min-p) and returns a subset of it. Rules
never loop over the vocabulary in Python and never fully sort it: top-k and top-p are
exact threshold searches (bisection on the bits of the threshold, then an exact tie
step), run on the few hundred largest entries of a candidate window when that provably
decides the whole row (see ``_window``), else over the row; min-p is one pass.

Tie rule (everywhere in simplex_decode): among tokens with equal scores, the lowest
token ids are kept first; greedy takes the lowest index among the maxima.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax.numpy as jnp
import numpy as np
from jax import lax

from ._numerics import cond, masked_exp, masked_max, row_sum, softmax_stats
from ._pytree import check_range, param, per_row, pytree_dataclass
from ._select import KCAP, tie_cut, topk_mask
from ._window import BLOCK, WINDOW_BLOCKS, choose, window

__all__ = ["SupportRule", "Full", "TopK", "TopP", "MinP", "Mask", "bisect_smallest_true", "nucleus_mask", "keep_at_least"]


class SupportRule:
    """Base class of support rules."""

    def __call__(self, scores, mask, ctx):  # pragma: no cover - interface
        raise NotImplementedError


def _row(x, like):
    """Per-row parameter broadcast to ``like``'s batch shape plus a trailing axis."""
    return per_row(x, like.shape[:-1])


def _float_bits(dtype):
    return (jnp.int64, 64) if jnp.dtype(dtype) == jnp.float64 else (jnp.int32, 32)


def bisect_smallest_true(pred, hi_value, dtype, batch_shape):
    """Smallest non-negative float ``x ≤ hi_value`` with ``pred(x)`` true, per row.

    ``pred`` maps a threshold of shape ``batch_shape + (1,)`` to booleans of the same
    shape and must be monotone (false … false true … true) on ``[0, hi_value]`` with
    ``pred(hi_value)`` true. Non-negative IEEE floats are ordered like their bit
    patterns, so bisection on the integer bits is exact after one step per bit.
    """
    itype, nbits = _float_bits(dtype)
    hi = lax.bitcast_convert_type(jnp.full(batch_shape + (1,), hi_value, dtype), itype)
    lo = jnp.zeros_like(hi)

    def body(_, carry):
        lo, hi = carry
        mid = lo + (hi - lo) // 2
        ok = pred(lax.bitcast_convert_type(mid, dtype))
        return jnp.where(ok, lo, mid), jnp.where(ok, mid, hi)

    lo, hi = lax.fori_loop(0, nbits - 1, body, (lo, hi))
    return lax.bitcast_convert_type(hi, dtype)


@pytree_dataclass
class Full(SupportRule):
    """The whole vocabulary (every token with a finite score)."""

    def __call__(self, scores, mask, ctx):
        return mask


def _min_keep():
    return param(
        1, lo=0, integer=True,
        doc="never keep fewer tokens than this (the most probable; 0 and 1 both keep the best one)",
    )


def keep_at_least(keep, x, min_keep, mask):
    """``keep`` plus the ``min_keep`` highest entries of ``x`` within ``mask`` (ties: lowest ids
    first; all of ``mask`` when it holds fewer), per row: a rule's ``min_keep``.

    ``keep`` must be closed upwards in ``x`` within ``mask`` (a token above a kept one is kept,
    as every threshold rule's set is): a row that keeps ``m < min_keep`` tokens then gets the
    ``min_keep − m`` best of the others, one exact arg-max round (two reductions over the
    row) per token added; a row that already keeps ``min_keep`` tokens is unchanged, and when
    no row is short no round runs. (``min_keep`` is meant to be small, as in llama.cpp and
    transformers; the rule's own window path is untouched.)
    """
    mk = per_row(min_keep, x.shape[:-1]).astype(jnp.int32)
    n = jnp.sum(mask, axis=-1, keepdims=True, dtype=jnp.int32)
    need = jnp.minimum(mk, n) - jnp.sum(keep, axis=-1, keepdims=True, dtype=jnp.int32)
    ids = lax.broadcasted_iota(jnp.int32, x.shape, x.ndim - 1)
    xm = jnp.where(mask, x, -jnp.inf)

    def body(carry):
        i, kept = carry
        rest = mask & ~kept
        top = jnp.max(jnp.where(rest, xm, -jnp.inf), axis=-1, keepdims=True)
        best = jnp.min(jnp.where(rest & (xm == top), ids, x.shape[-1]), axis=-1, keepdims=True)
        return i + 1, kept | ((ids == best) & (i < need))

    return lax.while_loop(lambda c: c[0] < jnp.max(need), body, (jnp.int32(0), keep))[1]


@pytree_dataclass
class TopK(SupportRule):
    """Keep the ``k`` highest scores (ties: lowest token ids first).

    ``k`` is a leaf (a scalar or a per-row integer array): new values never recompile.
    Exact without a full sort: the k-th largest score comes from a candidate window
    when it provably holds the top k, else from bisection on the bits of the float
    scores (32 counting passes over the row). ``min_keep`` keeps ``max(k, min_keep)``
    tokens (transformers' ``TopKLogitsWarper``; the default 1 changes nothing).

    Example:
      >>> import jax.numpy as jnp, simplex_decode as sd
      >>> x = jnp.array([1.0, 3.0, 2.0, 3.0])
      >>> sd.top_k(1).probs(x).tolist(), (sd.top_k(1, min_keep=3).probs(x) > 0).tolist()
      ([0.0, 1.0, 0.0, 0.0], [False, True, True, True])
    """

    k: Any = param(lo=1, hi="V", integer=True, doc="how many of the highest scores to keep")
    min_keep: Any = _min_keep()

    def __call__(self, scores, mask, ctx):
        return topk_mask(scores, jnp.maximum(_row(self.k, scores), _row(self.min_keep, scores)), mask)


def _from_model():
    return param(False, boolean=True, static=True, doc="measure probabilities under the untempered model logits")


def _from(rule, scores, ctx):
    return ctx.logits if rule.from_model else scores



@pytree_dataclass
class TopP(SupportRule):
    """Nucleus: the smallest set of most probable tokens whose mass reaches ``p``.

    Probabilities are ``softmax`` of the current scores restricted to the current mask
    (temperature first, as transformers and vLLM do); ``from_model=True`` takes them
    from the untempered model logits instead (the paper's definition). A token is kept
    iff the mass of the tokens ranked strictly before it is ``< p`` (transformers'
    ``TopPLogitsWarper``), so the most probable token is always kept. Exact, no sort.
    At least ``min_keep`` tokens are kept (the most probable; llama.cpp's ``last_idx ≥
    min_keep``, transformers' ``min_tokens_to_keep``); the default 1 changes nothing.

    Example:
      >>> import jax.numpy as jnp, simplex_decode as sd
      >>> x = jnp.log(jnp.array([0.6, 0.3, 0.1]))
      >>> (sd.top_p(0.5).probs(x) > 0).tolist(), (sd.top_p(0.5, min_keep=2).probs(x) > 0).tolist()
      ([True, False, False], [True, True, False])
    """

    p: Any = param(lo=0.0, hi=1.0, lo_open=True, doc="the nucleus mass")
    from_model: bool = _from_model()
    min_keep: Any = _min_keep()

    def __call__(self, scores, mask, ctx):
        x = _from(self, scores, ctx)
        return keep_at_least(nucleus_mask(x, _row(self.p, scores), mask), x, self.min_keep, mask)


def _tie_keep(n_tie, below, tail, t):
    """How many tokens tied at probability ``t`` the nucleus keeps.

    Ties are ranked lowest id first, i.e. last in ascending order: the tie of rank j
    (0-based) is kept iff ``below + (n_tie − j)·t > tail``. The first token of the ranking
    has no mass before it and is always kept: when ``t`` is the row's largest ``e`` (which
    is exactly 1) at least one tie is kept, even where ``p·Z`` is below the resolution of
    ``Z`` (``p`` of 1e-7 on a flat row) and the rounded tail mass says otherwise.
    """
    safe_t = jnp.where(t > 0, t, 1.0)
    r = jnp.ceil(n_tie.astype(t.dtype) - (tail - below) / safe_t)
    first = (t >= 1.0).astype(jnp.int32)
    return jnp.clip(r.astype(jnp.int32), first, n_tie)


def _nucleus_threshold(e, tail, small):
    """(t, below): the nucleus is ``e > t`` plus some of the ties ``e == t``; ``below``
    is the mass under ``t``.

    ``e`` holds every entry above the range of ``small``, the mass of the entries left
    out of ``e`` (0 for a whole row). Works with tail masses, as transformers'
    ascending cumsum does: a token of probability v is kept iff the mass of tokens
    ranked at or after it exceeds ``tail`` = (1 − p)·Z; summing the small entries
    keeps float32 exact enough near p = 1.
    """

    def tail_mass_exceeds(thr):
        return small + row_sum(jnp.where(e <= thr, e, 0.0)) > tail

    x_star = bisect_smallest_true(tail_mass_exceeds, 1.0, e.dtype, e.shape[:-1])
    t = jnp.min(jnp.where(e >= x_star, e, jnp.inf), axis=-1, keepdims=True)
    below = small + row_sum(jnp.where(e < t, e, 0.0))
    return t, below


def _nucleus_ties(e, valid, t, below, tail, ids):
    tie = (e == t) & valid
    r = _tie_keep(jnp.sum(tie, axis=-1, keepdims=True, dtype=jnp.int32), below, tail, t)
    return tie_cut(tie, r, ids)


class _Candidates(NamedTuple):
    cand: Any  # the Candidates of the masked scores (values, ids, rest)
    m: Any  # the row max (shift of e)
    ev: Any  # exp(values − m) where above `rest`, else 0: every entry with e > rest
    rest: Any  # e of the largest entry that is not a candidate (an upper bound)
    small: Any  # Σ e over the entries with e ≤ rest (the non-candidates and ties of rest)


#: Candidate tiers of probability-threshold rules, tried in order before the full row:
#: (block, blocks kept, candidates: the largest ``KCAP`` of the window, or None: all of
#: it). The second window holds the 1024 largest entries at least, for flatter rows
#: (at temperature 1, 10 % of SmolLM2's top-p(0.9) nuclei exceed 256 tokens).
TIERS = ((BLOCK, WINDOW_BLOCKS, KCAP), (16, 1024, None))


def _candidates(xm, e, tier=TIERS[0]):
    """The largest entries of ``softmax(xm)`` (``e = exp(xm − max)``), or None (no window).

    Probability-threshold rules (top-p, typical) search their threshold among these when
    the mass outside (``small``) provably does not reach the cut.
    """
    block, n_select, kcap = tier
    win = window(xm, fill=-jnp.inf, block=block, n_select=n_select) if xm.dtype == jnp.float32 else None
    if win is None:
        return None
    # the whole window, or its kcap largest entries (a cheaper search on fewer candidates)
    cand = win.all() if kcap is None else win.top(kcap)
    m = masked_max(cand.values, cand.values > -jnp.inf)  # the row max lies in the window
    m = jnp.where(jnp.isfinite(m), m, 0.0)
    rest = jnp.exp(cand.rest - m)
    small = row_sum(jnp.where(e <= rest, e, 0.0))
    ev = jnp.exp(cand.values - m)
    return _Candidates(cand, m, jnp.where(ev > rest, ev, 0.0), rest, small)


def nucleus_mask(x, p, mask):
    """Top-p (nucleus) of ``softmax(x)`` on ``mask``, exact (see :class:`TopP`).

    The threshold is searched among the candidates of each of :data:`TIERS` in turn,
    the first whose left-out mass is at most the tail ``(1 − p)·Z`` (then the cut lies
    among its candidates), and over the whole row when none qualifies — decided row by
    row: a row's cut never depends on the path its neighbours take.
    """
    e = masked_exp(x, mask)
    z = row_sum(e)
    tail = (1.0 - p.astype(e.dtype)) * z
    no_veto = jnp.zeros(tail.shape, bool)

    def cut_from(x, e, tail, mask, z, veto, tiers=TIERS):
        """(t, cut) from the first tier whose candidates provably hold the cut (rows in
        ``veto`` are known not to fit this tier and skip it). Every per-row input is an
        argument: the rows that fall back are gathered into sub-batches (``choose``)."""
        c = _candidates(jnp.where(mask, x, -jnp.inf), e, tiers[0]) if tiers else None
        if c is None:
            if tiers:  # the row is too short for this tier's window
                return cut_from(x, e, tail, mask, z, jnp.zeros_like(veto), tiers[1:])
            t, below = _nucleus_threshold(e, tail, jnp.zeros_like(tail))
            return t, _nucleus_ties(e, mask, t, below, tail, None)
        t_w, below_w = _nucleus_threshold(c.ev, tail, c.small)
        cut_w = _nucleus_ties(c.ev, c.ev > 0, t_w, below_w, tail, c.cand.ids)
        # small <= tail: the cut lies strictly above `rest`, among the candidates
        fits = (c.small <= tail) & ~veto
        ops = (x, e, tail, mask, z)
        if len(tiers) < 2:
            return choose(fits, (t_w, cut_w), functools.partial(cut_from, tiers=tiers[1:]), *ops, jnp.zeros_like(veto))
        # A row cannot fit the next tier when, beyond these candidates, its nucleus needs
        # more mass (z − tail − Σ candidates) than the next window's entries of at most
        # `rest` each can carry: it skips that tier, and when every row that is not served
        # here is such a row, the tier is not computed at all.
        block, n_select, _ = tiers[1]
        need = jnp.maximum(z - tail - row_sum(c.ev), 0.0)
        hopeless = need > c.rest * (n_select * block)

        def wider(x, e, tail, mask, z, hopeless, done):
            """The next tier (its hopeless rows vetoed), or — when every row not served
            here is hopeless for it — the tier after, with no veto."""

            def next_tier(*ops):
                return cut_from(*ops, hopeless, tiers[1:])

            def skip(*ops):
                return cut_from(*ops, jnp.zeros_like(hopeless), tiers[2:])

            return cond(jnp.all(done), skip, next_tier, x, e, tail, mask, z)

        return choose(fits, (t_w, cut_w), wider, *ops, hopeless, fits | hopeless)

    t, cut = cut_from(x, e, tail, mask, z, no_veto)
    ids = lax.broadcasted_iota(jnp.int32, e.shape, e.ndim - 1)
    return mask & ((e > t) | ((e == t) & (ids <= cut)))


@pytree_dataclass
class MinP(SupportRule):
    """Keep tokens with ``prob ≥ p · max prob`` (transformers' ``MinPLogitsWarper``).

    ``p = 0`` keeps every token; the most probable token is always kept, and at least
    ``min_keep`` tokens (the most probable; llama.cpp's and transformers' ``min_keep``).
    ``from_model=True`` measures probabilities under the untempered model logits.
    """

    p: Any = param(lo=0.0, hi=1.0, doc="the fraction of the top probability a token needs")
    from_model: bool = _from_model()
    min_keep: Any = _min_keep()

    def __call__(self, scores, mask, ctx):
        x = _from(self, scores, ctx)
        e = masked_exp(x, mask)
        probs = e / row_sum(e)
        top = jnp.max(probs, axis=-1, keepdims=True)
        return keep_at_least(mask & (probs >= _row(self.p, e).astype(e.dtype) * top), x, self.min_keep, mask)


@pytree_dataclass
class Mask(SupportRule):
    """An explicit allow mask: boolean ``(V,)`` or ``(..., V)``; True = allowed.

    Build one from token ids with :meth:`Mask.from_ids`.
    """

    allowed: Any = param(boolean=True, axis="token", doc="True = allowed")

    @classmethod
    def from_ids(cls, vocab_size: int, *, allow=None, deny=None) -> Mask:
        """Allow only ``allow`` (all tokens if None), then remove ``deny``."""
        check_range("Mask", "vocab_size", vocab_size, lo=1, integer=True)
        a = np.zeros(vocab_size, bool) if allow is not None else np.ones(vocab_size, bool)
        for name, ids, val in (("allow", allow, True), ("deny", deny, False)):
            if ids is None:
                continue
            ids = np.asarray(ids, dtype=np.int64).reshape(-1)
            if ids.size and (ids.min() < 0 or ids.max() >= vocab_size):
                raise ValueError(
                    f"Mask: `{name}` token ids must be in [0, {vocab_size - 1}], got {ids}"
                )
            a[ids] = val
        return cls(jnp.asarray(a))

    def __call__(self, scores, mask, ctx):
        return mask & self.allowed



# --- The decoder catalogue: truncation rules of transformers, llama.cpp and the literature ---
#
# Each rule below measures probabilities as ``softmax`` of the current scores restricted to
# the mask left by the rules before it (temperature first, as transformers does), or of the
# untransformed model logits with ``from_model=True``. Each keeps at least one token, and at
# least ``min_keep`` (transformers' ``min_tokens_to_keep``, llama.cpp's ``min_keep``): the
# ``min_keep`` most probable tokens of the mask (ties: lowest ids first; the whole mask when
# it holds fewer) are added to the rule's set — for typical sampling the ``min_keep`` most
# *typical* ones, as both peers define it. The default 1 leaves every rule as it was.


def _keep_max(x, mask):
    """Every token tied at the highest score in the mask (transformers' min_tokens_to_keep=1)."""
    return mask & (x == masked_max(x, mask))


@pytree_dataclass
class Typical(SupportRule):
    """Locally typical sampling (Meister et al., 2023), transformers' ``TypicalLogitsWarper``.

    Tokens are ranked by ``|−log p_v − H(p)|`` (distance of their surprisal from the
    entropy); the kept set is every token whose distance is ``≤ t*``, where ``t*`` is the
    distance of the first token (in that ranking) at which the cumulative mass reaches
    ``p``. Tokens tied at ``t*`` are all kept, as in transformers. Exact without a sort:
    ``t*`` is the smallest float with ``mass{dist > t*} ≤ (1 − p)·Σ``, found by bisection on
    its bits. ``p = 1`` keeps every token of positive probability. ``min_keep``: at least
    that many tokens, the most typical (smallest distance; ties: lowest ids), as llama.cpp
    and transformers keep them.

    Example:
      >>> import jax.numpy as jnp, simplex_decode as sd
      >>> # The most probable token (surprisal far below the entropy) is not typical:
      >>> q = sd.typical(0.5).probs(jnp.array([4.0, 3.0, 3.0, 3.0, 3.0, 3.0, 0.0]))
      >>> [round(float(v), 4) for v in q]
      [0.0, 0.2, 0.2, 0.2, 0.2, 0.2, 0.0]
    """

    p: Any = param(lo=0.0, hi=1.0, lo_open=True, doc="the mass of the typical set")
    from_model: bool = _from_model()
    min_keep: Any = _min_keep()

    def __call__(self, scores, mask, ctx):
        x = _from(self, scores, ctx)
        _, logp, ent, e, z = softmax_stats(x, mask)
        dist = jnp.where(mask, jnp.abs(-logp - ent), jnp.inf)
        hi = jnp.max(jnp.where(mask, dist, 0.0), axis=-1, keepdims=True)
        tail = (1.0 - _row(self.p, e).astype(e.dtype)) * z

        def threshold(dist, e, small, tail, hi):
            """Smallest t with (small + mass of e at distance > t) <= tail."""

            def tail_small_enough(t):
                return small + row_sum(jnp.where(dist > t, e, 0.0)) <= tail

            return bisect_smallest_true(tail_small_enough, hi, e.dtype, e.shape[:-1])

        def full_row(dist, e, tail, hi):
            return threshold(dist, e, jnp.zeros_like(tail), tail, hi)

        c = _candidates(jnp.where(mask, x, -jnp.inf), e)
        if c is None:
            t_star = full_row(dist, e, tail, hi)
        else:
            # Candidates: the largest probabilities. Every other token has surprisal
            # ≥ log z − log rest, so its distance is ≥ d_out; below d_out the mass with
            # dist > t is `small` plus candidates, exactly, and t* < d_out certifies it.
            safe_z = jnp.where(z > 0, z, 1.0)
            logp_c = c.cand.values - c.m - jnp.log(safe_z)
            dist_c = jnp.where(c.ev > 0, jnp.abs(-logp_c - ent), jnp.inf)

            t_w = threshold(dist_c, c.ev, c.small, tail, hi)
            d_out = jnp.maximum(jnp.log(safe_z) - jnp.log(c.rest) - ent, 0.0)
            t_star = choose(t_w < d_out, t_w, full_row, dist, e, tail, hi)
        return keep_at_least(mask & (dist <= t_star), -dist, self.min_keep, mask)


@pytree_dataclass
class Epsilon(SupportRule):
    """ε-sampling (Hewitt et al., 2022), transformers' ``EpsilonLogitsWarper``: keep
    tokens with ``prob ≥ epsilon``, and always the most probable one(s).

    ``epsilon = 0`` keeps every token (a no-op row in a batch of per-row values). At least
    ``min_keep`` tokens are kept (transformers keeps every token tied with the
    ``min_keep``-th score; here ties beyond it are cut at the lowest ids, the library's rule).
    """

    epsilon: Any = param(lo=0.0, hi=1.0, hi_open=True, doc="the probability a token needs")
    from_model: bool = _from_model()
    min_keep: Any = _min_keep()

    def __call__(self, scores, mask, ctx):
        x = _from(self, scores, ctx)
        p = softmax_stats(x, mask).p
        eps = _row(self.epsilon, p).astype(p.dtype)
        return keep_at_least(mask & ((p >= eps) | _keep_max(x, mask)), x, self.min_keep, mask)


@pytree_dataclass
class Eta(SupportRule):
    """η-sampling (Hewitt et al., 2022), transformers' ``EtaLogitsWarper``: keep tokens with
    ``prob ≥ min(ε, √ε·exp(−H(p)))``, an entropy-dependent cut-off, and always the most
    probable one(s). ``epsilon`` is the paper's ε (transformers' ``eta_cutoff``). At least
    ``min_keep`` tokens are kept (as :class:`Epsilon` keeps them)."""

    epsilon: Any = param(lo=0.0, hi=1.0, hi_open=True, doc="ε of the entropy-dependent cut-off")
    from_model: bool = _from_model()
    min_keep: Any = _min_keep()

    def __call__(self, scores, mask, ctx):
        x = _from(self, scores, ctx)
        p, _, ent, _, _ = softmax_stats(x, mask)
        eps = _row(self.epsilon, p).astype(p.dtype)
        eta = jnp.minimum(eps, jnp.sqrt(eps) * jnp.exp(-ent))
        return keep_at_least(mask & ((p >= eta) | _keep_max(x, mask)), x, self.min_keep, mask)


@pytree_dataclass
class TopNSigma(SupportRule):
    """Top-nσ (Tang et al., 2024; llama.cpp ``top_n_sigma``): keep tokens whose score is
    ``≥ max − n·σ``, with ``max`` and the population standard deviation ``σ`` taken over
    the scores in the mask.

    Invariant to temperature (both ``max`` and ``σ`` scale with it); it is usually applied
    to the raw logits: ``from_model=True`` reads them instead of the transformed scores.
    ``n = 0`` keeps only the maxima (llama.cpp instead treats ``n ≤ 0`` as "off").
    The moments are taken of the scores divided by a power of two at least their largest
    magnitude (an exact scaling), so rows near the float maximum never square to ``inf``.
    At least ``min_keep`` tokens are kept, the highest scores (llama.cpp's top-nσ has no
    ``min_keep``; the default 1 changes nothing).
    """

    n: Any = param(lo=0.0, doc="how many standard deviations below the max a token may be")
    from_model: bool = _from_model()
    min_keep: Any = _min_keep()

    def __call__(self, scores, mask, ctx):
        x = _from(self, scores, ctx)
        amax = masked_max(jnp.abs(x), mask)
        _, expo = jnp.frexp(jnp.where(jnp.isfinite(amax) & (amax > 0), amax, 1.0))
        y = jnp.where(mask, jnp.ldexp(x, -expo), 0.0)  # |y| < 1, exactly x / 2^expo
        cnt = jnp.maximum(jnp.sum(mask, axis=-1, keepdims=True), 1).astype(x.dtype)
        mean = row_sum(y) / cnt
        var = row_sum(jnp.where(mask, (y - mean) ** 2, 0.0)) / cnt
        top = masked_max(y, mask)
        n = _row(self.n, x).astype(x.dtype)
        return keep_at_least(mask & (y >= top - n * jnp.sqrt(var)), x, self.min_keep, mask)


@pytree_dataclass
class TopH(SupportRule):
    """Top-H (Baghaei Potraghloo et al., 2025), transformers' ``TopHLogitsWarper``.

    Among the ``top_n`` (default 100) highest-scoring tokens, with ``π = softmax`` over
    just those, keep the longest prefix (in descending score, ties by lowest id) whose
    cumulative entropy ``Σ_{i ≤ j} −π_i log π_i`` stays ``≤ h·H(π)``; the best token is
    always kept. ``h ∈ (0, 1]``; ``top_n`` is static (it sizes the partial sort). At least
    ``min_keep`` tokens are kept, the highest scores (even beyond ``top_n``; transformers'
    Top-H has no ``min_tokens_to_keep``, and the default 1 changes nothing).
    """

    h: Any = param(lo=0.0, hi=1.0, lo_open=True, doc="the fraction of the entropy the prefix may use")
    top_n: int = param(100, lo=1, integer=True, static=True, doc="how many top tokens are considered")
    from_model: bool = _from_model()
    min_keep: Any = _min_keep()

    def __call__(self, scores, mask, ctx):
        x = jnp.where(mask, _from(self, scores, ctx), -jnp.inf)
        n = min(self.top_n, x.shape[-1])
        vals, idx = lax.top_k(x, n)
        ok = vals > -jnp.inf
        p, logp, _, _, _ = softmax_stats(vals, ok)
        terms = jnp.where(p > 0, -p * jnp.where(ok, logp, 0.0), 0.0)
        cum = jnp.cumsum(terms, axis=-1)
        # H(π) is the last cumulative sum itself, so h = 1 keeps all top_n tokens exactly
        # (comparing against a separately rounded H would decide the tail by rounding).
        tau = cum[..., -1:] * _row(self.h, vals).astype(vals.dtype)
        sel = (cum <= tau) | (jnp.arange(n) == 0)
        keep = jnp.put_along_axis(jnp.zeros(x.shape, bool), idx, sel & ok, axis=-1, inplace=False)
        return keep_at_least(mask & keep, x, self.min_keep, mask)


@pytree_dataclass
class TopA(SupportRule):
    """Top-a (BlinkDL's RWKV sampler): keep tokens with ``prob ≥ a · (max prob)²``, and
    always the most probable one(s). ``a = 0`` keeps every token. At least ``min_keep``
    tokens are kept (as :class:`Epsilon` keeps them)."""

    a: Any = param(lo=0.0, doc="the factor on the squared top probability")
    from_model: bool = _from_model()
    min_keep: Any = _min_keep()

    def __call__(self, scores, mask, ctx):
        x = _from(self, scores, ctx)
        p = softmax_stats(x, mask).p
        top = jnp.max(p, axis=-1, keepdims=True)
        keep = mask & ((p >= _row(self.a, p).astype(p.dtype) * top * top) | _keep_max(x, mask))
        return keep_at_least(keep, x, self.min_keep, mask)


__all__ += ["Typical", "Epsilon", "Eta", "TopNSigma", "TopH", "TopA"]
