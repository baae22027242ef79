"""Score transforms that read the token history: penalties, n-gram bans, token lists, min length.

``Decoder.probs(logits, history=ids, history_mask=real)`` hands every transform the
previous token ids of each row, ``history`` of shape ``(..., L)`` (integers in
``[0, V)``), and ``history_mask`` (bool, same shape; True = a real token, False =
padding; all True when omitted). Rows of different lengths share one padded array, so
one compilation serves them all; padding may sit anywhere (left, right or in between)
and never counts. Counting is one scatter-add over the history per call — no Python
loop over positions, rows or the vocabulary.

Prompt and generated tokens. ``history`` is whatever the caller passes: usually the
prompt followed by the tokens generated so far. The transforms that must tell the two
apart take ``prompt_length`` (a per-row integer leaf): the first ``prompt_length`` *real*
entries of a row are its prompt, the rest were generated. This is how
:class:`MinNewTokens` knows how many tokens were generated (``#real − prompt_length``),
and how the penalties reproduce transformers' ``prompt_ignore_length`` or vLLM/OpenAI's
"output tokens only" frequency and presence penalties.

Every transform here maps scores to scores (``s ← T(s; history)``); ``-inf`` bans a token.
"""

from __future__ import annotations

import math
from typing import Any

import jax.numpy as jnp

from ._pytree import param, per_row, pytree_dataclass
from .scores import ScoreTransform

__all__ = [
    "token_counts",
    "RepetitionPenalty",
    "FrequencyPenalty",
    "PresencePenalty",
    "NoRepeatNGram",
    "BanTokens",
    "AllowTokens",
    "MinNewTokens",
]


def token_counts(history, vocab_size: int, weights=None, dtype=jnp.int32):
    """``counts[..., v] = #{l : history[..., l] = v and weights[..., l]}``.

    ``history``: integer ids ``(..., L)``; ``weights``: bool ``(..., L)`` (None: all
    True). Entries outside ``[0, vocab_size)`` or with a False weight are ignored. One
    scatter-add; returns ``(..., vocab_size)`` of ``dtype``.

    Example:
      >>> import jax.numpy as jnp
      >>> token_counts(jnp.array([[2, 0, 2, 1], [3, 3, 0, 0]]), 4,
      ...              weights=jnp.array([[True] * 4, [True, True, False, False]])).tolist()
      [[1, 1, 2, 0], [0, 0, 0, 2]]
    """
    history = jnp.asarray(history)
    batch, length = history.shape[:-1], history.shape[-1]
    valid = (history >= 0) & (history < vocab_size)
    if weights is not None:
        valid = valid & jnp.asarray(weights, bool)
    ids = jnp.where(valid, history, vocab_size).reshape((math.prod(batch), length))
    rows = jnp.arange(ids.shape[0])[:, None]
    out = jnp.zeros((ids.shape[0], vocab_size), dtype).at[rows, ids].add(jnp.ones((), dtype), mode="drop")
    return out.reshape(batch + (vocab_size,))


def _history(owner, ctx):
    if ctx.history is None:
        raise ValueError(
            f"{owner}: reads the token history; pass `history=` (and `history_mask=` for padded rows) "
            "to probs / sample / solve"
        )
    return ctx.history, ctx.history_mask


def _prompt_length(default=None):
    return param(
        default, optional=default is None, lo=0, integer=True,
        doc="per row: how many of the first real history entries are the prompt",
    )


def _penalty(**bounds):
    return param(**bounds, doc="the penalty (per row)")


def _after_prompt(mask, prompt_length):
    """The real entries after each row's first ``prompt_length`` real ones."""
    if prompt_length is None:
        return mask
    rank = jnp.cumsum(mask, axis=-1, dtype=jnp.int32)  # 1-based rank among the real entries
    return mask & (rank > per_row(prompt_length, mask.shape[:-1]))


def _counts(owner, scores, ctx, prompt_length):
    history, mask = _history(owner, ctx)
    return token_counts(history, scores.shape[-1], _after_prompt(mask, prompt_length))


@pytree_dataclass
class RepetitionPenalty(ScoreTransform):
    """CTRL's repetition penalty (Keskar et al., 2019), transformers' semantics.

    For every token that occurs in the history (at least once; the penalty is applied
    once per token, not per occurrence): ``s_v ← s_v / penalty`` if ``s_v > 0`` and
    ``s_v · penalty`` otherwise. ``penalty > 1`` discourages repetition, ``< 1``
    encourages it, ``1`` is a no-op. ``prompt_length`` (per row, optional) skips each
    row's first real entries (transformers' ``prompt_ignore_length``).

    Example:
      >>> import jax.numpy as jnp, simplex_decode as sd
      >>> obj = sd.Objective(transforms=sd.RepetitionPenalty(2.0))
      >>> obj.prepare(jnp.array([2.0, -1.0, 3.0]), history=jnp.array([0, 1, 0])).scores.tolist()
      [1.0, -2.0, 3.0]
    """

    penalty: Any = _penalty(lo=0.0, lo_open=True)
    prompt_length: Any = _prompt_length()

    def __call__(self, scores, ctx):
        seen = _counts("RepetitionPenalty", scores, ctx, self.prompt_length) > 0
        pen = per_row(self.penalty, scores.shape[:-1], scores.dtype)
        penalised = jnp.where(scores > 0, scores / pen, scores * pen)
        return jnp.where(seen, penalised, scores)


@pytree_dataclass
class FrequencyPenalty(ScoreTransform):
    """OpenAI / vLLM frequency penalty: ``s_v ← s_v − penalty · count_v``.

    ``count_v`` is the number of occurrences of ``v`` in the history (after each row's
    ``prompt_length`` prompt entries; OpenAI and vLLM count the generated tokens only,
    so pass ``prompt_length`` to match them). Any finite value is accepted; OpenAI
    documents ``[−2, 2]``; negative values encourage repetition.

    Example:
      >>> import jax.numpy as jnp, simplex_decode as sd
      >>> obj = sd.Objective(transforms=sd.FrequencyPenalty(0.5))
      >>> obj.prepare(jnp.zeros(3), history=jnp.array([2, 0, 2])).scores.tolist()
      [-0.5, 0.0, -1.0]
    """

    penalty: Any = _penalty()
    prompt_length: Any = _prompt_length()

    def __call__(self, scores, ctx):
        counts = _counts("FrequencyPenalty", scores, ctx, self.prompt_length).astype(scores.dtype)
        return scores - per_row(self.penalty, scores.shape[:-1], scores.dtype) * counts


@pytree_dataclass
class PresencePenalty(ScoreTransform):
    """OpenAI / vLLM presence penalty: ``s_v ← s_v − penalty · [count_v > 0]``.

    Same counting as :class:`FrequencyPenalty` (pass ``prompt_length`` to count only the
    generated tokens). Combined, the two give OpenAI's
    ``s_v − f·count_v − p·[count_v > 0]``.
    """

    penalty: Any = _penalty()
    prompt_length: Any = _prompt_length()

    def __call__(self, scores, ctx):
        seen = _counts("PresencePenalty", scores, ctx, self.prompt_length) > 0
        return scores - per_row(self.penalty, scores.shape[:-1], scores.dtype) * seen.astype(scores.dtype)


@pytree_dataclass
class NoRepeatNGram(ScoreTransform):
    """No n-gram occurs twice (fairseq / transformers' ``NoRepeatNGramLogitsProcessor``).

    Bans (``-inf``) every token that would complete an ``n``-gram already present in the
    row's history: with ``prefix`` = the last ``n − 1`` real tokens, each window
    ``history[j : j + n]`` of real tokens whose first ``n − 1`` entries equal ``prefix``
    bans its last entry. ``n = 1`` bans every token already in the history. ``n`` is
    static (it fixes the window shape). Padding is removed first (a stable compaction of
    each row), so windows never straddle it. Cost: ``O(L · n)`` compares plus one
    scatter, vectorised over windows and rows.

    Example:
      >>> import jax.numpy as jnp, simplex_decode as sd
      >>> obj = sd.Objective(transforms=sd.NoRepeatNGram(2))
      >>> s = obj.prepare(jnp.zeros(4), history=jnp.array([1, 2, 1, 3, 1])).scores
      >>> s.tolist()  # "1 2" and "1 3" occurred: after the final 1, tokens 2 and 3 are banned
      [0.0, 0.0, -inf, -inf]
    """

    n: int = param(3, lo=1, integer=True, static=True, doc="the n-gram length")

    def banned(self, history, mask, vocab_size):
        """Bool ``(..., V)``: the tokens that would repeat an n-gram."""
        n, length = self.n, history.shape[-1]
        if length < n:
            return jnp.zeros(history.shape[:-1] + (vocab_size,), bool)
        # Stable compaction: padding first, real tokens in their order at the end.
        order = jnp.argsort(mask.astype(jnp.int8), axis=-1, stable=True)
        h = jnp.take_along_axis(history, order, axis=-1)
        m = jnp.take_along_axis(mask, order, axis=-1)
        num_windows = length - n + 1
        win = jnp.arange(num_windows)[:, None] + jnp.arange(n)[None, :]  # (W, n)
        hw, mw = h[..., win], m[..., win]  # (..., W, n)
        prefix = h[..., length - n + 1 :]  # the last n − 1 (real, if any window is) tokens
        match = jnp.all(mw, axis=-1) & jnp.all(hw[..., :-1] == prefix[..., None, :], axis=-1)
        return token_counts(hw[..., -1], vocab_size, weights=match) > 0

    def __call__(self, scores, ctx):
        history, mask = _history("NoRepeatNGram", ctx)
        return jnp.where(self.banned(history, mask, scores.shape[-1]), -jnp.inf, scores)


def _ids():
    return param(lo=-1, hi="V-1", integer=True, axis="list", doc="token ids, -1 = padding")


def _id_mask(ids, scores):
    """Bool ``(..., V)``: the ids of each row (``-1`` entries are padding)."""
    vocab_size, batch = scores.shape[-1], scores.shape[:-1]
    lead = ids.shape[:-1]
    # Per-row lists align with the leading batch axes (as every per-row parameter does;
    # params_ok checked the shape, naming `ids`).
    ids = ids.reshape(lead + (1,) * (len(batch) - len(lead)) + ids.shape[-1:])
    return token_counts(jnp.broadcast_to(ids, batch + ids.shape[-1:]), vocab_size) > 0


@pytree_dataclass
class BanTokens(ScoreTransform):
    """Banned tokens (transformers' ``SuppressTokens`` / ``bad_words_ids`` of length 1):
    ``s_v ← −inf`` for ``v`` in ``ids``.

    ``ids``: integers ``(n,)`` shared by all rows, or ``batch + (n,)`` per row; ``-1``
    entries are padding, so rows may ban lists of different lengths. A leaf: new lists
    of the same length never recompile.
    """

    ids: Any = _ids()

    def __call__(self, scores, ctx):
        return jnp.where(_id_mask(self.ids, scores), -jnp.inf, scores)


@pytree_dataclass
class AllowTokens(ScoreTransform):
    """Allowed tokens only: ``s_v ← −inf`` for ``v`` not in ``ids`` (same ``ids`` layout as
    :class:`BanTokens`, ``-1`` = padding). A row whose list is empty has no allowed token
    and gets the empty-support status, never a silent fallback."""

    ids: Any = _ids()

    def __call__(self, scores, ctx):
        return jnp.where(_id_mask(self.ids, scores), scores, -jnp.inf)


@pytree_dataclass
class MinNewTokens(ScoreTransform):
    """EOS is banned until ``n`` tokens have been generated (transformers'
    ``MinNewTokensLengthLogitsProcessor``, vLLM's ``min_tokens``).

    The number generated is read from the history: ``#real entries − prompt_length``
    per row (see the module docstring), so a generation loop only has to append each
    new token to ``history`` (and set its mask). ``n``, ``prompt_length`` and ``eos_id``
    (an id or a list of ids, e.g. EOS and end-of-turn) are leaves; ``n`` and
    ``prompt_length`` may be per row.

    Example:
      >>> import jax.numpy as jnp, simplex_decode as sd
      >>> obj = sd.Objective(transforms=sd.MinNewTokens(2, eos_id=3, prompt_length=2))
      >>> # Row 0 generated one token (its last entry is padding), row 1 two.
      >>> obj.prepare(jnp.zeros((2, 4)), history=jnp.array([[0, 2, 1, 0], [0, 2, 1, 1]]),
      ...             history_mask=jnp.array([[True, True, True, False], [True] * 4])).scores.tolist()
      [[0.0, 0.0, 0.0, -inf], [0.0, 0.0, 0.0, 0.0]]
    """

    n: Any = param(lo=0, integer=True, doc="per row: the minimum number of new tokens")
    eos_id: Any = param(lo=0, hi="V-1", integer=True, axis="list", doc="the end id (or ids)")
    prompt_length: Any = _prompt_length(0)

    def num_generated(self, ctx):
        """Per row: the real history entries after the prompt (``(...,)``, int32)."""
        _, mask = _history("MinNewTokens", ctx)
        total = jnp.sum(mask, axis=-1, dtype=jnp.int32)
        return total - per_row(self.prompt_length, mask.shape[:-1])[..., 0]

    def __call__(self, scores, ctx):
        vocab_size, batch = scores.shape[-1], scores.shape[:-1]
        eos = token_counts(jnp.broadcast_to(self.eos_id, batch + self.eos_id.shape[-1:]), vocab_size) > 0
        early = self.num_generated(ctx) < per_row(self.n, batch)[..., 0]
        return jnp.where(eos & early[..., None], -jnp.inf, scores)
