"""Support rules with state or randomness: mirostat (v1, v2) and XTC (llama.cpp semantics).

**State, the optax way.** A component that carries per-row state between decoding steps
subclasses :class:`Stateful`: ``init_state(batch_shape)`` returns its state (a pytree whose
leaves have the batch shape as their leading axes) and ``update_state(state, ids, q_ids)``
returns the next one from the sampled token ids and their probabilities under the solved
``q``. While the rule runs, ``ctx.state`` holds *its own* state (the Objective binds each
stateful component to its slot of the decoder's state; see
:meth:`simplex_decode.Decoder.init`). Stateless decoders have the empty state ``()``.

**Randomness.** A component with ``needs_key = True`` reads ``ctx.key``: one key per row
(batch shape), derived from the key the caller passes to ``sample`` / ``probs`` / ``solve``
as ``fold_in(row key, 1 + position)`` (``position``: the component's index among the
Objective's transforms followed by its support rules), so its draws are
independent of the sampler's and of every other component's, and a row's draws depend
only on its own key (not on its batch neighbours).
"""

from __future__ import annotations

from typing import Any, ClassVar, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from ._numerics import masked_log_softmax
from ._pytree import param, per_row, pytree_dataclass
from ._select import argmax, topk_mask
from .sampling import row_keys
from .supports import SupportRule

__all__ = ["Stateful", "component_keys", "row_uniform", "Mirostat", "MirostatState", "XTC"]


class Stateful:
    """Mixin of components that carry per-row state (see the module docstring)."""

    def init_state(self, batch_shape):  # pragma: no cover - interface
        raise NotImplementedError

    def update_state(self, state, ids, q_ids):  # pragma: no cover - interface
        raise NotImplementedError


def _is_typed(keys):
    return jax.dtypes.issubdtype(keys.dtype, jax.dtypes.prng_key)


def component_keys(key, batch_shape, salt: int):
    """One key per row for the component at position ``salt``: ``fold_in(row key, salt)``.

    ``key`` is one key (row ``i`` of the flattened batch then uses ``fold_in(key, i)``, as
    :func:`simplex_decode.sample_from_probs` does) or one key per row.
    """
    keys = row_keys(key, tuple(batch_shape))
    lead = keys.shape if _is_typed(keys) else keys.shape[:-1]
    flat = keys.reshape((-1,) + keys.shape[len(lead):])
    out = jax.vmap(lambda k: jax.random.fold_in(k, salt))(flat)
    return out.reshape(lead + out.shape[1:])


def row_uniform(keys, batch_shape, dtype=jnp.float32):
    """One ``U[0, 1)`` draw per row from per-row keys (shape ``batch_shape``)."""
    batch_shape = tuple(batch_shape)
    flat = keys.reshape((-1,) + keys.shape[len(batch_shape):])
    u = jax.vmap(lambda k: jax.random.uniform(k, (), dtype))(flat)
    return u.reshape(batch_shape)


def _from(rule, scores, ctx):
    return ctx.logits if rule.from_model else scores


# --------------------------------------------------------------------------------------
# Mirostat
# --------------------------------------------------------------------------------------


class MirostatState(NamedTuple):
    """Mirostat's per-row state: ``mu``, the current surprise cut-off (bits), shape batch."""

    mu: Any


_LN2 = 0.6931471805599453


@pytree_dataclass
class Mirostat(SupportRule, Stateful):
    """Mirostat (Basu et al., 2021), llama.cpp's ``mirostat`` (v1) and ``mirostat-v2``.

    Both keep a per-row target ``μ`` (bits), initialised to ``2τ`` and, after each token
    ``x`` is drawn from ``q``, updated from its observed surprise:
    ``μ ← μ − η·(−log₂ q(x) − τ)``. With ``p = softmax`` of the current scores on the
    current mask (sorted by probability, ties lowest id first):

    * ``version=2`` keeps the tokens whose surprise ``−log₂ p_v ≤ μ`` (the most probable
      token alone if none);
    * ``version=1`` estimates the Zipf exponent from the ``m`` most probable tokens,
      ``ŝ = Σ t_i b_i / Σ t_i²`` with ``t_i = ln((i+2)/(i+1))``, ``b_i = ln(p_i / p_{i+1})``
      (``i < min(m, n) − 1``, ``n`` = tokens in the mask), and keeps the top
      ``k = max(1, ⌊(ε̂·2^μ / (1 − V^{−ε̂}))^{1/ŝ}⌋)`` tokens, ``ε̂ = ŝ − 1`` (``V``: the
      vocabulary size; ``k`` is clipped to ``[1, n]``, and ``ε̂/(1 − V^{−ε̂})`` is its limit
      ``1/ln V`` at ``ε̂ = 0``, where llama.cpp divides 0 by 0).

    The surprise is measured under the decoder's own ``q`` (with the default
    :func:`~simplex_decode.mirostat` preset, the softmax renormalised on the kept tokens,
    as llama.cpp does). ``tau > 0`` and ``eta ∈ (0, 1]`` are leaves (scalars or per row);
    ``m`` and ``version`` are static. llama.cpp estimates ``ŝ`` over its whole candidate
    array, where a token of probability 0 makes ``b_i`` infinite; here only tokens in the
    mask count.

    Example:
      >>> import jax, jax.numpy as jnp, simplex_decode as sd
      >>> dec = sd.mirostat(tau=1.0, eta=0.5)
      >>> state = dec.init(())                      # μ = 2τ = 2 bits
      >>> logits = jnp.log(jnp.array([0.5, 0.3, 0.15, 0.05]))
      >>> [round(float(v), 4) for v in dec.probs(logits, state=state)]  # surprise ≤ 2 bits
      [0.625, 0.375, 0.0, 0.0]
      >>> ids, state = dec.sample(jax.random.key(0), logits, state=state)
      >>> bool(state[0].mu != 2.0)
      True
    """

    tau: Any = param(lo=0.0, lo_open=True, doc="the target surprise (bits), per row")
    eta: Any = param(0.1, lo=0.0, hi=1.0, lo_open=True, doc="the learning rate of mu, per row")
    m: int = param(100, lo=1, integer=True, static=True, doc="tokens used to estimate the Zipf exponent (v1)")
    version: int = param(2, lo=1, hi=2, integer=True, static=True, doc="1 or 2 (llama.cpp's mirostat v1 / v2)")
    from_model: bool = param(False, boolean=True, static=True, doc="measure probabilities under the model logits")

    def init_state(self, batch_shape):
        return MirostatState(mu=2.0 * per_row(self.tau, tuple(batch_shape), jnp.float32)[..., 0])

    def update_state(self, state, ids, q_ids):
        batch = state.mu.shape
        surprise = -jnp.log(q_ids.astype(jnp.float32)) / _LN2
        tau = per_row(self.tau, batch, jnp.float32)[..., 0]
        eta = per_row(self.eta, batch, jnp.float32)[..., 0]
        return MirostatState(mu=state.mu - eta * (surprise - tau))

    def __call__(self, scores, mask, ctx):
        if ctx.state is None:
            raise ValueError("Mirostat: carries state; pass state= (from Decoder.init) to probs / sample / solve")
        x = _from(self, scores, ctx)
        logp = masked_log_softmax(x, mask)
        mu = ctx.state.mu.astype(x.dtype)[..., None]
        if self.version == 2:
            keep = mask & (-logp / _LN2 <= mu)
            top = argmax(jnp.where(mask, x, -jnp.inf))
            only_top = jax.nn.one_hot(top, x.shape[-1], dtype=bool) & mask
            return jnp.where(jnp.any(keep, axis=-1, keepdims=True), keep, only_top)
        return mask & topk_mask(x, self._v1_k(logp, mask, mu), mask)

    def _v1_k(self, logp, mask, mu):
        """llama.cpp's ``k`` from the Zipf exponent of the top ``m`` probabilities."""
        V = logp.shape[-1]
        m = min(self.m, V)
        top = lax.top_k(logp, m)[0]  # log-probabilities, descending
        n = jnp.sum(mask, axis=-1, keepdims=True)
        i = jnp.arange(m - 1, dtype=logp.dtype)
        used = (jnp.arange(m - 1) < jnp.minimum(m, n) - 1)
        t = jnp.log((i + 2.0) / (i + 1.0))
        b = jnp.where(used, top[..., :-1] - top[..., 1:], 0.0)
        s_hat = jnp.sum(t * b, axis=-1, keepdims=True) / jnp.sum(jnp.where(used, t * t, 0.0), axis=-1, keepdims=True)
        eps = s_hat - 1.0
        logv = jnp.log(jnp.asarray(V, logp.dtype))
        safe_eps = jnp.where(eps == 0, 1.0, eps)
        # ε̂ / (1 − V^{−ε̂}) → 1 / ln V as ε̂ → 0 (llama.cpp divides 0 by 0 there)
        ratio = jnp.where(eps == 0, 1.0 / logv, safe_eps / -jnp.expm1(-safe_eps * logv))
        k = (ratio * jnp.exp2(mu)) ** (1.0 / s_hat)
        k = jnp.where(jnp.isnan(k), 1.0, k)  # one token (ŝ = 0/0): every k keeps it
        return jnp.clip(jnp.floor(jnp.minimum(k, V)), 1, jnp.maximum(n, 1)).astype(jnp.int32)


# --------------------------------------------------------------------------------------
# XTC
# --------------------------------------------------------------------------------------


@pytree_dataclass
class XTC(SupportRule):
    """XTC, "exclude top choices" (llama.cpp / text-generation-webui ``xtc``).

    With probability ``probability`` (one coin per row, drawn from the row's key), remove
    every token whose probability is ``≥ threshold`` except the least probable of them;
    ``p = softmax`` of the current scores on the current mask, ranked by probability (ties:
    lowest id first, so the token kept among tied ones is the highest id). Nothing is
    removed when fewer than two tokens reach the threshold, when the removal would leave
    fewer than ``min_keep`` tokens, when ``probability = 0``, or when ``threshold > 0.5``
    (llama.cpp's convention: XTC is off). ``threshold`` and ``probability`` are leaves in
    ``[0, 1]``; ``min_keep`` (≥ 0) is a leaf too.

    Example:
      >>> import jax, jax.numpy as jnp, simplex_decode as sd
      >>> logits = jnp.log(jnp.array([0.4, 0.3, 0.2, 0.1]))
      >>> q = sd.xtc(threshold=0.15, probability=1.0).probs(logits, key=jax.random.key(0))
      >>> [round(float(v), 4) for v in q]    # 0.4 and 0.3 removed, 0.2 (the last above 0.15) kept
      [0.0, 0.0, 0.6667, 0.3333]
    """

    threshold: Any = param(lo=0.0, hi=1.0, doc="the probability a top choice needs (> 0.5: off)")
    probability: Any = param(lo=0.0, hi=1.0, doc="the chance per row that XTC acts")
    min_keep: Any = param(1, lo=0, integer=True, doc="never leave fewer tokens than this")
    from_model: bool = param(False, boolean=True, static=True, doc="measure probabilities under the model logits")
    needs_key: ClassVar[bool] = True

    def removed(self, x, mask, u):
        """Bool ``(..., V)``: the tokens this rule removes, given each row's coin ``u`` ``(...)``."""
        batch = x.shape[:-1]
        logp = masked_log_softmax(x, mask)
        p = jnp.where(mask, jnp.exp(logp), 0.0)
        thr = per_row(self.threshold, batch, p.dtype)
        prob = per_row(self.probability, batch, p.dtype)[..., 0]
        above = mask & (p >= thr)
        n_above = jnp.sum(above, axis=-1)
        n = jnp.sum(mask, axis=-1)
        # the least probable token above the threshold (ties: the highest id, ranked last)
        pmin = jnp.min(jnp.where(above, p, jnp.inf), axis=-1, keepdims=True)
        ids = lax.broadcasted_iota(jnp.int32, p.shape, p.ndim - 1)
        last = jnp.max(jnp.where(above & (p == pmin), ids, -1), axis=-1, keepdims=True)
        fires = (
            (prob > 0) & (u <= prob) & (thr[..., 0] <= 0.5) & (n >= 2) & (n_above >= 2)
            & (n - (n_above - 1) >= per_row(self.min_keep, batch)[..., 0])
        )
        return fires[..., None] & above & (ids != last)

    def __call__(self, scores, mask, ctx):
        if ctx.key is None:
            raise ValueError("XTC: draws a random coin per row; pass key= to probs / solve (sample passes its own)")
        batch = scores.shape[:-1]
        u = row_uniform(ctx.key, batch, scores.dtype)
        return mask & ~self.removed(_from(self, scores, ctx), mask, u)
