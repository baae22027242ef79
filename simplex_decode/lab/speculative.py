"""Self-speculative decoding with a multi-token model's extra heads as the drafter.

A :class:`~simplex_decode.lab.LabConfig` model with ``n`` heads predicts, at position
``t``, the tokens ``t+1 … t+n``. Decoding with any :class:`~simplex_decode.Decoder`
``q = decoder(head-0 logits)`` (the *target*), each iteration

1. drafts ``y_1 … y_{n−1}`` from ``d_j = decoder(head-j logits)`` at the position before
   the pending token ``c``;
2. runs the model once on ``[c, y_1, …, y_{n−1}]`` (one forward over ``n`` tokens), which
   gives the target ``q_i`` for every drafted position and one more;
3. accepts ``y_i`` in order with probability ``min(1, q_i(y_i) / d_i(y_i))``; at the first
   rejection draws the replacement from ``(q_i − d_i)₊`` normalised, and when all are
   accepted draws a bonus token from the last ``q``.

This is the rejection rule of Leviathan et al. (2023) and Chen et al. (2023) applied to the
*decoder's* distribution: the committed tokens are distributed exactly as ``n`` ordinary
steps of :func:`simplex_decode.generate` with the same decoder (whatever the draft
``d``), while one forward commits between 1 and ``n`` tokens. History-reading decoders
(penalties) see, at each verified position, the prompt, the committed tokens and the
drafts before it, as they would in ordinary decoding.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from ..models.llama import KVCache, decoder_layers, embed, init_cache, unembed
from ..sampling import sample_from_probs
from ..status import Status
from .model import LabConfig, check_params

__all__ = ["SpeculativeResult", "speculative_generate"]


class SpeculativeResult(NamedTuple):
    """``tokens`` int32 ``(B, T)`` or ``(B, K, T)`` (``pad_id`` after the end, EOS kept),
    ``lengths`` (tokens generated), ``forwards`` (model calls after the prefill, per row:
    each one ran ``n`` tokens through the model), and ``status`` (``Status`` of the row).
    Tokens per forward = ``(lengths − 1) / forwards`` (the first token comes from the prefill)."""

    tokens: jax.Array
    lengths: jax.Array
    forwards: jax.Array
    status: jax.Array


class _Caches(NamedTuple):
    trunk: KVCache
    heads: KVCache  # leaves with a leading head axis


def _init_caches(config: LabConfig, batch, max_len):
    c = config.llama
    trunk = init_cache(dataclasses.replace(c, num_layers=max(config.num_layers, 1)), batch, max_len)
    if config.num_layers == 0:
        trunk = KVCache(trunk.k[:0], trunk.v[:0], trunk.pos)
    head = init_cache(dataclasses.replace(c, num_layers=config.head_layers), batch, max_len)
    heads = jax.tree.map(lambda x: jnp.broadcast_to(x, (config.mtp_heads,) + x.shape), head)
    return _Caches(trunk, heads)


def _forward(config, params, tokens, positions, caches):
    """All heads' logits ``(n, N, T, V)`` on ``tokens`` at ``positions``, updating the caches."""
    c = config.llama
    x = embed(c, params, tokens, positions)
    h, trunk = decoder_layers(c, params["layers"], x, positions, caches.trunk)

    def one(head, cache):
        y, cache = decoder_layers(c, head, h, positions, cache)
        return unembed(c, params, y), cache

    logits, heads = jax.vmap(one)(params["heads"], caches.heads)
    return logits, _Caches(trunk, heads)


def _solve(decoder, logits, hist, hmask):
    sol = decoder.solve(logits, history=hist, history_mask=hmask)
    return sol.q, sol.status


class _State(NamedTuple):
    out: Any        # (N, T + n) committed tokens
    n_gen: Any      # (N,)
    done: Any       # (N,)
    status: Any     # (N,)
    pending: Any    # (N,) the last committed token, not yet run through the model
    draft_logits: Any  # (N, n-1, V) heads 1.. at the position before `pending`
    caches: Any
    it: Any
    forwards: Any   # (N,)


@functools.partial(jax.jit, static_argnames=("config", "max_new_tokens", "eos_ids", "num_samples", "pad_id"))
def _spec_jit(params, prompt, decoder, keys, *, config, max_new_tokens, eos_ids, num_samples, pad_id):
    n = config.mtp_heads
    B, P = prompt.shape
    K = num_samples
    N = B * K
    T = max_new_tokens
    L = P + T + n
    eos = jnp.asarray(eos_ids if eos_ids else (-1,), jnp.int32)
    is_eos = lambda t: jnp.any(t[..., None] == eos, axis=-1) if eos_ids else jnp.zeros(t.shape, bool)  # noqa: E731

    caches = _init_caches(config, B, L)
    pos0 = jnp.broadcast_to(jnp.arange(P, dtype=jnp.int32), (B, P))
    logits, caches = _forward(config, params, prompt, pos0, caches)
    last = logits[:, :, -1]  # (n, B, V)
    rep = lambda x, ax: jnp.repeat(x, K, axis=ax)  # noqa: E731
    caches = _Caches(jax.tree.map(lambda x: x if x.ndim < 2 else rep(x, 1 if x.ndim == 5 else 0), caches.trunk),
                     jax.tree.map(lambda x: rep(x, 2 if x.ndim == 6 else 1), caches.heads))
    last = rep(last, 1)  # (n, N, V)
    row_keys = jax.vmap(lambda kb: jax.vmap(lambda i: jax.random.fold_in(kb, i))(jnp.arange(K)))(keys)
    row_keys = row_keys.reshape((N,) + row_keys.shape[2:])
    prompt_n = rep(prompt, 0)
    cols = jnp.arange(L, dtype=jnp.int32)

    def history(out, upto):
        """(N, m, L) histories: prompt + committed + ``extra`` drafts, masked below ``upto`` (N, m)."""
        h = jnp.concatenate([prompt_n, out[:, : L - P]], axis=1)  # (N, L)
        return jnp.broadcast_to(h[:, None], (N, upto.shape[1], L)), cols[None, None, :] < upto[:, :, None]

    # the first token: an ordinary step on the prefill's head-0 logits
    out = jnp.full((N, T + n), pad_id, jnp.int32)
    h0, m0 = history(out, jnp.full((N, 1), P))
    q0, st0 = _solve(decoder, last[0][:, None], h0, m0)
    k0 = jax.vmap(lambda k: jax.random.fold_in(k, 0))(row_keys)
    c = sample_from_probs(k0, q0[:, 0])
    ok0 = st0[:, 0] == Status.OK
    c = jnp.where(ok0, c, pad_id).astype(jnp.int32)
    out = out.at[:, 0].set(c)
    done = ~ok0 | is_eos(c) | (T <= 1)
    state = _State(out=out, n_gen=jnp.ones((N,), jnp.int32), done=done,
                   status=jnp.where(ok0, Status.OK, st0[:, 0]).astype(jnp.int32), pending=c,
                   draft_logits=jnp.moveaxis(last[1:], 0, 1), caches=caches, it=jnp.int32(1),
                   forwards=jnp.zeros((N,), jnp.int32))

    def body(s: _State) -> _State:
        keys_it = jax.vmap(lambda k: jax.random.split(jax.random.fold_in(k, s.it), 4))(row_keys)
        pos_c = P + s.n_gen - 1  # position of the pending token
        # 1. drafts from heads 1..n-1 (history: what is committed)
        hd, md = history(s.out, jnp.broadcast_to(pos_c[:, None] + 1, (N, n - 1)))
        d, _ = _solve(decoder, s.draft_logits, hd, md)  # (N, n-1, V)
        y = sample_from_probs(jax.vmap(lambda k: jax.random.split(k, n - 1))(keys_it[:, 0]), d)  # (N, n-1)
        y = jnp.where(y >= 0, y, 0).astype(jnp.int32)
        # 2. one forward on [c, y_1..y_{n-1}]
        feed = jnp.concatenate([s.pending[:, None], y], axis=1)  # (N, n)
        fpos = pos_c[:, None] + jnp.arange(n, dtype=jnp.int32)[None, :]
        fpos = jnp.where(s.done[:, None], -1, fpos)
        logits, caches = _forward(config, params, feed, fpos, s.caches)
        # 3. targets q_i (i = 0..n-1) for positions pos_c+1+i; history includes c, y_1..y_i
        cand = s.out.at[jnp.arange(N)[:, None], s.n_gen[:, None] + jnp.arange(n - 1)[None, :]].set(
            y, mode="drop")
        ht, mt = history(cand, pos_c[:, None] + 1 + jnp.arange(n)[None, :])
        q, st = _solve(decoder, logits[0], ht, mt)  # (N, n, V)
        take = lambda p, ids: jnp.take_along_axis(p, ids[..., None], axis=-1)[..., 0]  # noqa: E731
        qy = take(q[:, : n - 1], y)
        dy = take(d, y)
        u = jax.vmap(lambda k: jax.random.uniform(k, (n - 1,)))(keys_it[:, 1])
        # u < q/d: accepted with probability min(1, q/d); a draft the drafter gave no mass
        # (its row was invalid) is rejected, and the replacement is then drawn from q itself
        accept = (dy > 0) & (u * dy < qy)
        n_acc = jnp.sum(jnp.cumprod(accept.astype(jnp.int32), axis=1), axis=1)  # (N,)
        # 4. the replacement (first rejection) or the bonus token (all accepted)
        q_at = jnp.take_along_axis(q, n_acc[:, None, None], axis=1)[:, 0]  # (N, V)
        d_pad = jnp.concatenate([d, jnp.zeros_like(d[:, :1])], axis=1)
        d_at = jnp.take_along_axis(d_pad, n_acc[:, None, None], axis=1)[:, 0]
        resid = jnp.maximum(q_at - d_at, 0.0)
        mass = jnp.sum(resid, axis=-1, keepdims=True)
        resid = jnp.where(mass > 0, resid / jnp.where(mass > 0, mass, 1.0), q_at)
        z = sample_from_probs(keys_it[:, 2], resid).astype(jnp.int32)
        st_at = jnp.take_along_axis(st, n_acc[:, None], axis=1)[:, 0]
        # 5. commit y_1..y_{n_acc}, z; stop at EOS / max_new_tokens
        new = jnp.where(jnp.arange(n)[None, :] < n_acc[:, None], jnp.concatenate([y, y[:, :1]], axis=1), 0)
        new = new.at[jnp.arange(N), n_acc].set(z)  # (N, n): n_acc + 1 valid tokens
        count = n_acc + 1
        e = is_eos(new) & (jnp.arange(n)[None, :] < count[:, None])
        first_eos = jnp.where(jnp.any(e, axis=1), jnp.argmax(e, axis=1) + 1, count)
        count = jnp.minimum(first_eos, T - s.n_gen)
        bad = st_at != Status.OK
        count = jnp.where(s.done | bad, 0, count)
        slot = s.n_gen[:, None] + jnp.arange(n)[None, :]
        slot = jnp.where(jnp.arange(n)[None, :] < count[:, None], slot, T + n)
        out = s.out.at[jnp.arange(N)[:, None], slot].set(new, mode="drop")
        n_gen = s.n_gen + count
        hit_eos = jnp.any(e & (jnp.arange(n)[None, :] < count[:, None]), axis=1)
        done = s.done | bad | hit_eos | (n_gen >= T)
        last_tok = jnp.take_along_axis(new, jnp.maximum(count - 1, 0)[:, None], axis=1)[:, 0]
        pending = jnp.where(count > 0, last_tok, s.pending)
        # drafts for the next round: heads 1.. at the position before the new pending token
        at = jnp.clip(n_acc, 0, n - 1)
        dl = jnp.take_along_axis(logits[1:], at[None, :, None, None], axis=2)[:, :, 0]  # (n-1, N, V)
        return _State(
            out=out, n_gen=n_gen, done=done,
            status=jnp.where(~s.done & bad, st_at, s.status).astype(jnp.int32),
            pending=pending, draft_logits=jnp.where(s.done[:, None, None], s.draft_logits, jnp.moveaxis(dl, 0, 1)),
            caches=caches, it=s.it + 1, forwards=s.forwards + (~s.done).astype(jnp.int32),
        )

    s = lax.while_loop(lambda s: ~jnp.all(s.done), body, state)
    tokens = jnp.where(jnp.arange(T)[None, :] < s.n_gen[:, None], s.out[:, :T], pad_id)
    return tokens, s.n_gen, s.forwards, s.status


def speculative_generate(config: LabConfig, params, prompt_tokens, *, decoder, key, max_new_tokens: int,
                         eos_id=None, num_samples: int | None = None, pad_id: int = 0) -> SpeculativeResult:
    """Sample from ``decoder`` on a multi-token model, drafting with its extra heads.

    The output has the distribution of :func:`simplex_decode.generate` with the same
    ``decoder`` on :func:`~simplex_decode.lab.make_step` (head 0), whatever the heads
    draft (see the module docstring); the speed-up is in ``forwards``.

    Args:
      config, params: a :class:`~simplex_decode.lab.LabConfig` model with ``mtp_heads ≥ 2``.
      prompt_tokens: int ``(B, P)`` prompts of one length.
      decoder: any :class:`simplex_decode.Decoder` with scalar parameters (it sees logits
        of shape ``(N, m, V)``).
      key: one ``jax.random.key`` or one per prompt (shape ``(B,)``).
      max_new_tokens: T.
      eos_id: an id or a sequence of ids ending a row, or None.
      num_samples: K samples per prompt (outputs gain a K axis), or None for one.
      pad_id: written after a row's end.

    Example:
      >>> import jax, simplex_decode as sd
      >>> from simplex_decode import lab
      >>> cfg = lab.LabConfig(vocab_size=6, d_model=16, num_layers=1, mtp_heads=3)
      >>> params = lab.init_params(cfg, jax.random.key(0))
      >>> out = speculative_generate(cfg, params, [[1, 2]], decoder=sd.temperature(1.0),
      ...                            key=jax.random.key(0), max_new_tokens=5)
      >>> out.tokens.shape, bool(out.forwards[0] <= 4)
      ((1, 5), True)
    """
    if not isinstance(config, LabConfig):
        raise ValueError(f"config: must be a LabConfig, got {type(config).__name__}")
    if config.mtp_heads < 2:
        raise ValueError(f"speculative_generate: the model needs mtp_heads >= 2 to draft, got {config.mtp_heads}")
    check_params(config, params)
    if not hasattr(decoder, "solve"):
        raise ValueError(f"decoder: must be a simplex_decode.Decoder, got {type(decoder).__name__}")
    for name, v, lo in (("max_new_tokens", max_new_tokens, 1), ("pad_id", pad_id, 0)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
            raise ValueError(f"{name}: must be an integer >= {lo}, got {v!r}")
    squeeze = num_samples is None
    K = 1 if squeeze else num_samples
    if isinstance(K, bool) or not isinstance(K, (int, np.integer)) or K < 1:
        raise ValueError(f"num_samples: must be None or an integer >= 1, got {num_samples!r}")
    prompt = np.asarray(prompt_tokens)
    if prompt.ndim != 2 or prompt.shape[1] < 1 or not np.issubdtype(prompt.dtype, np.integer):
        raise ValueError(f"prompt_tokens: must be an integer array (B, P) of equal-length prompts, got shape {prompt.shape}")
    if prompt.min() < 0 or prompt.max() >= config.vocab_size:
        raise ValueError(f"prompt_tokens: ids must be in [0, {config.vocab_size})")
    eos_ids = () if eos_id is None else tuple(int(e) for e in np.atleast_1d(eos_id))
    B = prompt.shape[0]
    key = jnp.asarray(key) if not isinstance(key, jax.Array) else key
    keys = key if key.shape == (B,) else jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(B))
    tokens, lengths, forwards, status = _spec_jit(
        params, jnp.asarray(prompt, jnp.int32), decoder, keys, config=config, max_new_tokens=int(max_new_tokens),
        eos_ids=eos_ids, num_samples=int(K), pad_id=int(pad_id))
    shape = (B,) if squeeze else (B, int(K))
    r = lambda x: x.reshape(shape + x.shape[1:])  # noqa: E731
    return SpeculativeResult(r(tokens), r(lengths), r(forwards), r(status))
