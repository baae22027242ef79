"""Plumbing shared by :func:`~simplex_decode.generation.generate` and the sequence
strategies: argument checks, prompts and keys, the cache's batch axes, prefill, and the
jitted decode loop over the step protocol (see :mod:`simplex_decode.generation.loop`)."""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from ..status import Status


class Static:
    """Hashable wrapper of a callable used as a static jit argument.

    A ``functools.partial`` compares by its function and (hashable) arguments, so
    ``partial(init_cache, config)`` built anew on every call does not recompile; any other
    callable compares by identity.
    """

    __slots__ = ("fn", "_key")

    def __init__(self, fn):
        self.fn = fn
        key = ("id", fn)
        if isinstance(fn, functools.partial):
            cand = ("partial", fn.func, fn.args, tuple(sorted(fn.keywords.items())))
            try:
                hash(cand)
                key = cand
            except TypeError:
                pass
        self._key = key

    def __hash__(self):
        return hash(self._key)

    def __eq__(self, other):
        return isinstance(other, Static) and self._key == other._key

    def __call__(self, *args, **kwargs):
        return self.fn(*args, **kwargs)


def check_step(step):
    if not callable(step):
        raise ValueError(f"step: must be a callable step(params, tokens, cache, positions), got {step!r}")
    return Static(step)


def check_cache(cache):
    if cache is None:
        return None
    if not callable(cache):
        raise ValueError(
            "cache: must be None (stateless model) or a factory cache(batch_size, max_len) -> cache, "
            f"e.g. functools.partial(simplex_decode.models.init_cache, config); got {type(cache).__name__}"
        )
    return Static(cache)


def check_int(name, value, lo):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < lo:
        raise ValueError(f"{name}: must be an integer >= {lo}, got {value!r}")
    return int(value)


def parse_eos_ids(eos_id) -> tuple[int, ...]:
    if eos_id is None:
        return ()
    ids = (eos_id,) if isinstance(eos_id, (int, np.integer)) else tuple(eos_id)
    for i in ids:
        if isinstance(i, bool) or not isinstance(i, (int, np.integer)) or i < 0:
            raise ValueError(f"eos_id: must be None, a token id >= 0 or a sequence of them, got {eos_id!r}")
    return tuple(int(i) for i in ids)


def parse_prompts(prompt_tokens, prompt_lengths, pad_id):
    """(tokens int32 (B, P), lengths int32 (B,)) from an array or a ragged list of prompts."""
    if isinstance(prompt_tokens, (list, tuple)) and prompt_tokens and not np.isscalar(prompt_tokens[0]):
        rows = [np.asarray(r) for r in prompt_tokens]
        if any(r.ndim != 1 for r in rows):
            raise ValueError("prompt_tokens: a list of prompts must hold 1-D sequences of token ids")
        if prompt_lengths is None and len({len(r) for r in rows}) > 1:
            width = max(len(r) for r in rows)
            prompt_lengths = [len(r) for r in rows]
            rows = [np.concatenate([r, np.full(width - len(r), pad_id, r.dtype if r.size else np.int32)]) for r in rows]
        prompt_tokens = np.stack(rows)
    is_jax = isinstance(prompt_tokens, jax.Array)
    tokens = prompt_tokens if is_jax else np.asarray(prompt_tokens)
    if tokens.ndim != 2 or tokens.shape[0] < 1 or tokens.shape[1] < 1:
        raise ValueError(
            f"prompt_tokens: must have shape (batch, prompt_len) with both >= 1 (or be a list of "
            f"prompts), got shape {tokens.shape}"
        )
    if not jnp.issubdtype(tokens.dtype, jnp.integer):
        raise ValueError(f"prompt_tokens: must hold integer token ids, got dtype {tokens.dtype}")
    B, P = tokens.shape
    if prompt_lengths is None:
        lengths = np.full((B,), P, np.int32)
    else:
        lengths = prompt_lengths if isinstance(prompt_lengths, jax.Array) else np.asarray(prompt_lengths)
        if lengths.shape != (B,) or not jnp.issubdtype(lengths.dtype, jnp.integer):
            raise ValueError(
                f"prompt_lengths: must be integers of shape (batch,) = ({B},), got {lengths.dtype} {lengths.shape}"
            )
        if not isinstance(lengths, jax.Array) and (lengths.min() < 1 or lengths.max() > P):
            raise ValueError(f"prompt_lengths: every length must be in [1, prompt_len={P}], got {lengths.tolist()}")
    return jnp.asarray(tokens, jnp.int32), jnp.asarray(lengths, jnp.int32)


def is_key_array(key):
    return jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key)


def prompt_keys(key, batch):
    """One key per prompt: ``fold_in(key, b)`` for a single key, or the given (B,) keys."""
    if not isinstance(key, jax.Array):
        key = jnp.asarray(key)
    kb = key.shape if is_key_array(key) else key.shape[:-1]
    if not is_key_array(key) and (key.dtype != jnp.uint32 or key.ndim < 1):
        raise ValueError(f"key: must be a jax.random.key / PRNGKey or one per prompt, got {key.dtype} {key.shape}")
    if kb == ():
        return jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(batch, dtype=jnp.uint32))
    if kb != (batch,):
        raise ValueError(f"key: must be a single key or one key per prompt (batch shape ({batch},)), got {kb}")
    return key


def fold_keys(keys, i):
    """``fold_in(k, i)`` for every key of a flat (N,) key array; ``i`` scalar or (N,)."""
    i = jnp.broadcast_to(jnp.asarray(i, jnp.uint32), keys.shape[:1])
    return jax.vmap(jax.random.fold_in)(keys, i)


def batch_axes(cache_fn, max_len):
    """Per leaf of the cache pytree: its batch axis (the one axis that grows with the batch)."""
    if cache_fn is None:
        return None
    one = jax.eval_shape(lambda: cache_fn(1, max_len))
    two = jax.eval_shape(lambda: cache_fn(2, max_len))

    def axis(a, b):
        diff = [i for i, (x, y) in enumerate(zip(a.shape, b.shape, strict=False)) if x != y]
        if len(a.shape) != len(b.shape) or len(diff) > 1 or (diff and (a.shape[diff[0]], b.shape[diff[0]]) != (1, 2)):
            raise ValueError(
                f"cache: a leaf has shape {a.shape} for batch 1 and {b.shape} for batch 2; every leaf "
                "must have at most one batch axis, of size batch_size"
            )
        return diff[0] if diff else -1  # -1: shared by all rows

    return jax.tree.map(axis, one, two)


def repeat_rows(cache, axes, k):
    """Each row of the cache repeated ``k`` times along its batch axis (row b → rows b*k..b*k+k-1)."""
    if cache is None or k == 1:
        return cache
    return jax.tree.map(lambda x, a: x if a < 0 else jnp.repeat(x, k, axis=a), cache, axes)


def take_rows(cache, axes, idx):
    """The cache rows ``idx`` (a gather along each leaf's batch axis)."""
    if cache is None:
        return cache
    return jax.tree.map(lambda x, a: x if a < 0 else jnp.take(x, idx, axis=a), cache, axes)


def step_outputs(out):
    """``(logits, cache, second)`` from a step's output: ``(logits, cache)`` or
    ``(logits, cache, second_logits)`` (e.g. early-layer logits for DoLa); ``second`` is None
    for the former."""
    out = tuple(out) if isinstance(out, (list, tuple)) else out
    if not isinstance(out, tuple) or len(out) not in (2, 3):
        raise ValueError(
            "step: must return (logits, cache) or (logits, cache, second_logits), got "
            f"{type(out).__name__}" + (f" of {len(out)} entries" if isinstance(out, tuple) else "")
        )
    return out if len(out) == 3 else (out[0], out[1], None)


def prefill(step, params, prompt, lengths, cache_fn, max_len):
    """Run the model on the (right-padded) prompts: ``(logits, cache, second)`` of each
    prompt's last token (``second``: the step's second logits, or None)."""
    B, P = prompt.shape
    cache = None if cache_fn is None else cache_fn(B, max_len)
    cols = jnp.arange(P, dtype=jnp.int32)[None, :]
    positions = jnp.where(cols < lengths[:, None], cols, -1)
    logits, cache, second = step_outputs(step(params, prompt, cache, positions))

    def last(x):
        idx = (lengths - 1).reshape((B, 1) + (1,) * (x.ndim - 2))
        return jnp.take_along_axis(x, idx, axis=1)[:, 0]

    return last(logits), cache, None if second is None else last(second)


def model_step(step, params, tokens, cache, positions):
    """One decode step of the model on ``tokens`` (N,) at ``positions`` (N,; -1 skips):
    ``(logits, cache, second)``."""
    logits, cache, second = step_outputs(step(params, tokens[:, None], cache, positions[:, None]))
    return logits[:, 0], cache, None if second is None else second[:, 0]


def take_ids(x, ids):
    return jnp.take_along_axis(x, jnp.clip(ids, 0, x.shape[-1] - 1)[..., None], axis=-1)[..., 0]


def safe_log(q):
    return jnp.where(q > 0, jnp.log(jnp.where(q > 0, q, 1.0)), -jnp.inf)


def step_diagnostics(q, logits):
    """Per-row diagnostics of one decoding step (float32, shape ``q.shape[:-1]``)."""
    q = q.astype(jnp.float32)
    log_p = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    logq = jnp.where(q > 0, jnp.log(jnp.where(q > 0, q, 1.0)), 0.0)
    return {
        "entropy": -jnp.sum(q * logq, axis=-1),
        "support_size": jnp.sum(q > 0, axis=-1).astype(jnp.float32),
        "kl_to_model": jnp.sum(jnp.where(q > 0, q * (logq - log_p), 0.0), axis=-1),
        "model_entropy": -jnp.sum(jnp.exp(log_p) * log_p, axis=-1),
    }


class LoopState(NamedTuple):
    t: Any
    logits: Any
    cache: Any
    tokens: Any
    hist: Any
    hist_len: Any
    logq: Any
    logp: Any
    extras: Any
    done: Any
    status: Any
    n_gen: Any
    second: Any  # second logits (N, V) / (N, J, V), or None
    second_cache: Any  # the second stream's cache, or None
    carry: Any  # the select function's state (the decoder's state in generate), a pytree


class SecondRun(NamedTuple):
    """A second model stream inside the decode loop: fed the same tokens as the main one."""

    step: Any
    params: Any
    lengths: Any  # (N,) its prompt lengths: the position of its next token


def decode_loop(step, params, cache, logits, prompt, lengths, select, *, max_new_tokens, eos_ids, pad_id,
                extras=(), callback=None, callback_shape=None, second=None, second_run=None, second_cache=None,
                carry=()):
    """The shared decode loop over N rows (prompt/lengths already repeated to N rows).

    ``select(t, logits, second, cache, positions, history, history_mask, active, carry)``
    returns ``(ids, logq, status, extras, carry)`` for the N rows (``extras``: a dict of
    (N,) float32 arrays recorded per step under the names in ``extras``; ``carry``: any
    pytree threaded from step to step, e.g. the decoder's state; ``active``: the rows not
    yet finished). ``second``: the second logits of the first step, or None; they come from
    ``second_run`` (a :class:`SecondRun` with its ``second_cache``) when given, else from
    the step's own third output. ``callback``: None or ``(host_fn, args)``;
    ``host_fn(*args, t, tokens, done)`` runs on the host after each step. Finished rows
    get ``pad_id`` and position -1 (the models skip them); the loop stops when every row is
    finished or after ``max_new_tokens`` tokens, and never runs a model after the last token.
    """
    N, P = prompt.shape
    T = max_new_tokens
    L = P + T
    cols = jnp.arange(L, dtype=jnp.int32)[None, :]
    hist = jnp.concatenate([prompt, jnp.full((N, T), pad_id, jnp.int32)], axis=1)
    hist = jnp.where(cols < lengths[:, None], hist, pad_id)
    rows = jnp.arange(N)
    eos = jnp.asarray(eos_ids if eos_ids else (-1,), jnp.int32)

    def body(s: LoopState) -> LoopState:
        pos = lengths + s.t
        hmask = cols < s.hist_len[:, None]
        active = ~s.done
        ids, lq, st, ex, carry = select(s.t, s.logits, s.second, s.cache, pos, s.hist, hmask, active, s.carry)
        ok = st == Status.OK
        emit = active & ok
        tok = jnp.where(emit, ids, pad_id).astype(jnp.int32)
        lp = take_ids(jax.nn.log_softmax(s.logits.astype(jnp.float32), axis=-1), ids)
        put = lambda buf, v: buf.at[:, s.t].set(jnp.where(emit, v, 0).astype(buf.dtype))  # noqa: E731
        hist = s.hist.at[rows, jnp.where(emit, s.hist_len, L)].set(tok, mode="drop")
        is_eos = emit & jnp.any(tok[:, None] == eos[None, :], axis=-1) if eos_ids else jnp.zeros_like(emit)
        done = s.done | is_eos | (active & ~ok)
        if callback is not None:
            host_fn, host_args = callback
            jax.debug.callback(
                host_fn, *host_args, s.t, tok.reshape(callback_shape), done.reshape(callback_shape), ordered=True
            )
        more = (s.t + 1 < T) & ~jnp.all(done)

        def advance(caches):
            main, other = caches
            new_logits, main, aux = model_step(step, params, tok, main, jnp.where(done, -1, pos))
            if second_run is not None:
                aux, other, _ = model_step(
                    second_run.step, second_run.params, tok, other, jnp.where(done, -1, second_run.lengths + s.t)
                )
            return new_logits, aux if s.second is not None else None, (main, other)

        new_logits, new_second, (new_cache, new_second_cache) = lax.cond(
            more, advance, lambda c: (s.logits, s.second, c), (s.cache, s.second_cache)
        )
        return LoopState(
            t=s.t + 1,
            logits=new_logits,
            cache=new_cache,
            tokens=s.tokens.at[:, s.t].set(tok),
            hist=hist,
            hist_len=s.hist_len + emit,
            logq=put(s.logq, lq),
            logp=put(s.logp, lp),
            extras={k: put(s.extras[k], ex[k]) for k in extras},
            done=done,
            status=jnp.where(active & ~ok, st, s.status).astype(jnp.int32),
            n_gen=s.n_gen + emit,
            second=new_second,
            second_cache=new_second_cache,
            carry=carry,
        )

    zeros = jnp.zeros((N, T), jnp.float32)
    init = LoopState(
        t=jnp.int32(0),
        logits=logits,
        cache=cache,
        tokens=jnp.full((N, T), pad_id, jnp.int32),
        hist=hist,
        hist_len=lengths,
        logq=zeros,
        logp=zeros,
        extras={k: zeros for k in extras},
        done=jnp.zeros((N,), bool),
        status=jnp.zeros((N,), jnp.int32),
        n_gen=jnp.zeros((N,), jnp.int32),
        second=second,
        second_cache=second_cache,
        carry=carry,
    )
    out = lax.while_loop(lambda s: (s.t < T) & ~jnp.all(s.done), body, init)
    finished = out.done & (out.status == Status.OK)
    return out, finished
