"""The generation loop: prefill, then a jit-compiled decode loop driven by any Decoder.

A model enters simplex_decode through one explicit protocol, the *step function*::

    step(params, tokens, cache, positions) -> (logits, cache)

* ``tokens``, ``positions``: int32 ``(N, T)``; ``positions[n, t]`` is the absolute position
  of ``tokens[n, t]`` in its row, and **-1 marks a padding token** (the model must not
  write it to its cache nor attend to it; its logits are ignored).
* ``cache``: any pytree (or ``None`` for a stateless model), created by a factory
  ``cache(batch_size, max_len)`` that :func:`generate` calls inside its jitted function.
  Every array leaf has at most one *batch axis*, found by comparing the shapes the
  factory gives for batch sizes 1 and 2; that is how prompts are prefilled once and
  then repeated for ``num_samples`` (and how beams are reordered in
  :func:`simplex_decode.strategies.beam_search`).
* ``logits``: ``(N, T, V)`` (computed in float32 by the decoder whatever their dtype).

:func:`simplex_decode.models.make_step` (the bundled Llama) follows it::

    >>> from functools import partial                                      # doctest: +SKIP
    >>> from simplex_decode.models import load_gguf, make_step, init_cache # doctest: +SKIP
    >>> config, params, tok = load_gguf()                                  # doctest: +SKIP
    >>> out = generate(make_step(config), params, [tok.encode("The capital of France is")],
    ...                decoder=sd.top_p(0.9, temperature=0.7), key=jax.random.key(0),
    ...                max_new_tokens=16, eos_id=tok.eos_token_id,
    ...                cache=partial(init_cache, config))                   # doctest: +SKIP

**Flax NNX** (recipe): split the module once and merge it inside the step, so the
parameters are a pytree argument of the jitted loop::

    graphdef, state = nnx.split(model)
    def step(state, tokens, cache, positions):
        return nnx.merge(graphdef, state)(tokens, cache, positions)
    generate(step, state, prompts, ...)

**Equinox** (recipe): partition the module into arrays and the static rest::

    params, static = eqx.partition(model, eqx.is_array)
    def step(params, tokens, cache, positions):
        return eqx.combine(params, static)(tokens, cache, positions)
    generate(step, params, prompts, ...)

Both recipes are exercised by ``tests/test_generate.py`` when the library is installed.
Define ``step`` (and the cache factory) once and reuse it: :func:`generate` compiles once
per step function, cache factory, prompt shape and Decoder structure; new decoder
*values* (temperatures, per-row arrays of them) reuse the compilation.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from ._core import Status
from .decoders import _raise_on_bad_rows
from .sampling import sample_from_probs

__all__ = ["GenerateResult", "generate"]


class GenerateResult(NamedTuple):
    """What :func:`generate` returns. Shapes are ``(B, T)`` per prompt, or ``(B, K, T)``
    with ``num_samples=K`` (``T = max_new_tokens``).

    Attributes:
      tokens: int32 generated ids; ``pad_id`` after a row's end (its EOS is kept).
      lengths: int32 ``(B,)``/``(B, K)``: how many tokens each row generated (EOS included).
      finished: bool: the row emitted an EOS token (False: it ran out of
        ``max_new_tokens``, or its logits were invalid, see ``status``).
      logprobs: float32 ``log q(token)`` under the decoder's distribution ``q`` (0 after the end).
      model_logprobs: float32 ``log_softmax(logits)[token]``, the model's own log-probability.
      status: int32 :class:`simplex_decode.Status` of the row: ``OK``, or the code of the
        step whose logits were invalid (the row stops there and is padded).
      diagnostics: None, or a dict of float32 per-step arrays (shape of ``tokens``; 0 after
        the end): ``entropy`` of q (nats), ``support_size`` (tokens with q > 0),
        ``kl_to_model`` = KL(q ‖ softmax(logits)), ``model_entropy``.
    """

    tokens: jax.Array
    lengths: jax.Array
    finished: jax.Array
    logprobs: jax.Array
    model_logprobs: jax.Array
    status: jax.Array
    diagnostics: dict | None = None


# --------------------------------------------------------------------------------------
# Plumbing shared with simplex_decode.strategies
# --------------------------------------------------------------------------------------


class _Static:
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
        return isinstance(other, _Static) and self._key == other._key

    def __call__(self, *args, **kwargs):
        return self.fn(*args, **kwargs)


def _check_step(step):
    if not callable(step):
        raise ValueError(f"step: must be a callable step(params, tokens, cache, positions), got {step!r}")
    return _Static(step)


def _check_cache(cache):
    if cache is None:
        return None
    if not callable(cache):
        raise ValueError(
            "cache: must be None (stateless model) or a factory cache(batch_size, max_len) -> cache, "
            f"e.g. functools.partial(simplex_decode.models.init_cache, config); got {type(cache).__name__}"
        )
    return _Static(cache)


def _check_int(name, value, lo):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < lo:
        raise ValueError(f"{name}: must be an integer >= {lo}, got {value!r}")
    return int(value)


def _eos_ids(eos_id) -> tuple[int, ...]:
    if eos_id is None:
        return ()
    ids = (eos_id,) if isinstance(eos_id, (int, np.integer)) else tuple(eos_id)
    for i in ids:
        if isinstance(i, bool) or not isinstance(i, (int, np.integer)) or i < 0:
            raise ValueError(f"eos_id: must be None, a token id >= 0 or a sequence of them, got {eos_id!r}")
    return tuple(int(i) for i in ids)


def _prompts(prompt_tokens, prompt_lengths, pad_id):
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


def _is_key_array(key):
    return jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key)


def _prompt_keys(key, batch):
    """One key per prompt: ``fold_in(key, b)`` for a single key, or the given (B,) keys."""
    if not isinstance(key, jax.Array):
        key = jnp.asarray(key)
    kb = key.shape if _is_key_array(key) else key.shape[:-1]
    if not _is_key_array(key) and (key.dtype != jnp.uint32 or key.ndim < 1):
        raise ValueError(f"key: must be a jax.random.key / PRNGKey or one per prompt, got {key.dtype} {key.shape}")
    if kb == ():
        return jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(batch, dtype=jnp.uint32))
    if kb != (batch,):
        raise ValueError(f"key: must be a single key or one key per prompt (batch shape ({batch},)), got {kb}")
    return key


def _fold(keys, i):
    """``fold_in(k, i)`` for every key of a flat (N,) key array; ``i`` scalar or (N,)."""
    i = jnp.broadcast_to(jnp.asarray(i, jnp.uint32), keys.shape[:1])
    return jax.vmap(jax.random.fold_in)(keys, i)


def _batch_axes(cache_fn, max_len):
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


def _repeat_rows(cache, axes, k):
    """Each row of the cache repeated ``k`` times along its batch axis (row b → rows b*k..b*k+k-1)."""
    if cache is None or k == 1:
        return cache
    return jax.tree.map(lambda x, a: x if a < 0 else jnp.repeat(x, k, axis=a), cache, axes)


def _take_rows(cache, axes, idx):
    """The cache rows ``idx`` (a gather along each leaf's batch axis)."""
    if cache is None:
        return cache
    return jax.tree.map(lambda x, a: x if a < 0 else jnp.take(x, idx, axis=a), cache, axes)


def _prefill(step, params, prompt, lengths, cache_fn, max_len):
    """Run the model on the (right-padded) prompts; logits of each prompt's last token."""
    B, P = prompt.shape
    cache = None if cache_fn is None else cache_fn(B, max_len)
    cols = jnp.arange(P, dtype=jnp.int32)[None, :]
    positions = jnp.where(cols < lengths[:, None], cols, -1)
    logits, cache = step(params, prompt, cache, positions)
    last = jnp.take_along_axis(logits, (lengths - 1)[:, None, None], axis=1)[:, 0]
    return last, cache


def _model_step(step, params, tokens, cache, positions):
    """One decode step of the model on ``tokens`` (N,) at ``positions`` (N,; -1 skips)."""
    logits, cache = step(params, tokens[:, None], cache, positions[:, None])
    return logits[:, 0], cache


def _take(x, ids):
    return jnp.take_along_axis(x, jnp.clip(ids, 0, x.shape[-1] - 1)[..., None], axis=-1)[..., 0]


def _safe_log(q):
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


class _Loop(NamedTuple):
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


def _decode_loop(step, params, cache, logits, prompt, lengths, select, *, max_new_tokens, eos_ids, pad_id,
                 extras=(), callback=None, callback_shape=None):
    """The shared decode loop over N rows (prompt/lengths already repeated to N rows).

    ``select(t, logits, cache, positions, history, history_mask)`` returns
    ``(ids, logq, status, extras)`` for the N rows (``extras``: a dict of (N,) float32
    arrays recorded per step under the names in ``extras``). ``callback``: None or
    ``(host_fn, args)``; ``host_fn(*args, t, tokens, done)`` runs on the host after each step. Finished rows get ``pad_id``
    and position -1 (the model skips them); the loop stops when every row is finished
    or after ``max_new_tokens`` tokens, and never runs the model after the last token.
    """
    N, P = prompt.shape
    T = max_new_tokens
    L = P + T
    cols = jnp.arange(L, dtype=jnp.int32)[None, :]
    hist = jnp.concatenate([prompt, jnp.full((N, T), pad_id, jnp.int32)], axis=1)
    hist = jnp.where(cols < lengths[:, None], hist, pad_id)
    rows = jnp.arange(N)
    eos = jnp.asarray(eos_ids if eos_ids else (-1,), jnp.int32)

    def body(s: _Loop) -> _Loop:
        pos = lengths + s.t
        hmask = cols < s.hist_len[:, None]
        ids, lq, st, ex = select(s.t, s.logits, s.cache, pos, s.hist, hmask)
        active = ~s.done
        ok = st == Status.OK
        emit = active & ok
        tok = jnp.where(emit, ids, pad_id).astype(jnp.int32)
        lp = _take(jax.nn.log_softmax(s.logits.astype(jnp.float32), axis=-1), ids)
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
        new_logits, new_cache = lax.cond(
            more,
            lambda c: _model_step(step, params, tok, c, jnp.where(done, -1, pos)),
            lambda c: (s.logits, c),
            s.cache,
        )
        return _Loop(
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
        )

    zeros = jnp.zeros((N, T), jnp.float32)
    init = _Loop(
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
    )
    out = lax.while_loop(lambda s: (s.t < T) & ~jnp.all(s.done), body, init)
    finished = out.done & (out.status == Status.OK)
    return out, finished


# --------------------------------------------------------------------------------------
# generate
# --------------------------------------------------------------------------------------


# Streaming callbacks are looked up at run time by an id (a traced argument), so a new
# callback function never recompiles the loop.
_CALLBACKS: dict[int, Callable] = {}
_CALLBACK_IDS = itertools.count()


def _run_callback(cid, t, tokens, done):
    fn = _CALLBACKS.get(int(cid))
    if fn is not None:
        fn(int(t), np.asarray(tokens), np.asarray(done))


@functools.partial(
    jax.jit,
    static_argnames=("step", "cache_fn", "max_new_tokens", "eos_ids", "num_samples", "pad_id", "diagnostics",
                     "stream", "squeeze"),
)
def _generate_jit(params, prompt, lengths, decoder, keys, callback_id, *, step, cache_fn, max_new_tokens, eos_ids,
                  num_samples, pad_id, diagnostics, stream, squeeze):
    B, P = prompt.shape
    K = num_samples
    N = B * K
    max_len = P + max_new_tokens
    last, cache = _prefill(step, params, prompt, lengths, cache_fn, max_len)
    cache = _repeat_rows(cache, _batch_axes(cache_fn, max_len), K)
    logits = jnp.repeat(last, K, axis=0)
    # keys: prompt b, sample k -> fold_in(key_b, k); step t -> fold_in(., t)
    row_keys = jax.vmap(lambda kb: _fold(jnp.broadcast_to(kb, (K,) + kb.shape), jnp.arange(K)))(keys)
    row_keys = row_keys.reshape((N,) + row_keys.shape[2:])
    names = ("entropy", "support_size", "kl_to_model", "model_entropy") if diagnostics else ()

    def select(t, logits, cache, pos, hist, hmask):
        V = logits.shape[-1]
        sol = decoder.solve(
            logits.reshape(B, K, V), history=hist.reshape(B, K, -1), history_mask=hmask.reshape(B, K, -1)
        )
        _raise_on_bad_rows(sol.status)
        ok = sol.status == Status.OK
        step_keys = _fold(row_keys, t)
        ids = sample_from_probs(step_keys.reshape((B, K) + step_keys.shape[1:]), sol.q, valid=ok)
        q = sol.q.reshape(N, V)
        ids = ids.reshape(N)
        ex = step_diagnostics(q, logits) if diagnostics else {}
        return ids, _take(_safe_log(q), ids), sol.status.reshape(N), ex

    out, finished = _decode_loop(
        step, params, cache, logits, jnp.repeat(prompt, K, axis=0), jnp.repeat(lengths, K, axis=0), select,
        max_new_tokens=max_new_tokens, eos_ids=eos_ids, pad_id=pad_id, extras=names,
        callback=(_run_callback, (callback_id,)) if stream else None, callback_shape=(B,) if squeeze else (B, K),
    )
    shape = (B,) if squeeze else (B, K)
    r = lambda x: x.reshape(shape + x.shape[1:])  # noqa: E731
    return GenerateResult(
        tokens=r(out.tokens),
        lengths=r(out.n_gen),
        finished=r(finished),
        logprobs=r(out.logq),
        model_logprobs=r(out.logp),
        status=r(out.status),
        diagnostics={k: r(v) for k, v in out.extras.items()} if diagnostics else None,
    )


def generate(
    step: Callable,
    params: Any,
    prompt_tokens: Any,
    *,
    decoder: Any,
    key: Any,
    max_new_tokens: int,
    eos_id: int | Sequence[int] | None = None,
    cache: Callable | None = None,
    num_samples: int | None = None,
    pad_id: int = 0,
    prompt_lengths: Any = None,
    return_diagnostics: bool = False,
    callback: Callable | None = None,
) -> GenerateResult:
    """Generate up to ``max_new_tokens`` tokens per prompt with ``decoder``, in one jitted call.

    At every step each row solves the decoder's problem on the model's logits ``ℓ``
    (its transforms may read the row's history: prompt + generated ids),

    .. math::

        q^* = \\arg\\max_{q \\in \\Delta(V),\\ \\mathrm{supp}\\,q \\subseteq S(s)}
              \\langle q, s(\\ell, \\text{history}) \\rangle + \\sum_j c_j \\varphi_j(q),

    and draws its next token from ``q*`` (greedy decoders take its mode). The prompts are
    prefilled once, repeated ``num_samples`` times, and decoded by a ``lax.while_loop``:
    no host synchronisation per token, and the loop stops as soon as every row has emitted
    an EOS token.

    Args:
      step: the model, ``step(params, tokens, cache, positions) -> (logits, cache)`` (see
        the module docstring; position -1 = padding).
      params: the model's parameter pytree (a traced argument: new weights do not recompile).
      prompt_tokens: int ``(B, P)`` prompts, right-padded when ``prompt_lengths`` is given,
        or a list of B token-id lists of any lengths (padded for you).
      decoder: a :class:`simplex_decode.Decoder`. It sees logits of shape ``(B, K, V)``, so a
        per-row parameter of shape ``(B,)`` applies to every sample of prompt b and one of
        shape ``(B, K)`` to each sample. History-reading transforms get ``history``
        ``(B, K, P + T)`` and ``history_mask`` (True on real tokens, a prefix of each row).
      key: one ``jax.random.key``, or one per prompt (shape ``(B,)``). Sample k of prompt b
        at step t uses ``fold_in(fold_in(key_b, k), t)`` with ``key_b = fold_in(key, b)`` for
        a single key: pass one key per prompt and a prompt keeps its samples in any batch.
      max_new_tokens: T, the number of decode steps (static).
      eos_id: a token id or a sequence of them that ends a row (kept in its output), or None.
      cache: None for a stateless model, or a factory ``cache(batch_size, max_len)``
        (``functools.partial(simplex_decode.models.init_cache, config)``); it is called with
        ``max_len = P + max_new_tokens``.
      num_samples: K samples per prompt (outputs gain a K axis), or None for one.
      pad_id: the id written after a row's end.
      prompt_lengths: int ``(B,)`` lengths of right-padded prompts (default: all ``P``).
      return_diagnostics: also return per-step entropy, support size and KL to the model.
      callback: optional streaming hook ``callback(t, tokens, done)``, called on the host
        after every decode step, in order, with numpy arrays of shape ``(B,)``/``(B, K)``
        (``pad_id`` for finished rows). A new callback does not recompile; with one,
        :func:`generate` returns only after the last call (without one it returns at once,
        asynchronously). Each call is a host round trip: leave it None for throughput.

    Returns:
      A :class:`GenerateResult`. Invalid logits never give NaN or a silent fallback: the row
      stops with its ``status`` set (wrap the call in :func:`simplex_decode.checked` to
      raise instead).

    Example:
      >>> import jax, jax.numpy as jnp, simplex_decode as sd
      >>> table = jnp.log(jnp.array([[.1, .6, .3], [.2, .2, .6], [.5, .4, .1]]))
      >>> def step(params, tokens, cache, positions):   # a bigram model, no cache
      ...     return params[tokens], cache
      >>> out = sd.generate(step, table, [[0]], decoder=sd.greedy(), key=jax.random.key(0),
      ...                   max_new_tokens=4)
      >>> out.tokens.tolist()
      [[1, 2, 0, 1]]
    """
    step_s = _check_step(step)
    cache_s = _check_cache(cache)
    max_new_tokens = _check_int("max_new_tokens", max_new_tokens, 1)
    squeeze = num_samples is None
    num_samples = 1 if squeeze else _check_int("num_samples", num_samples, 1)
    pad_id = _check_int("pad_id", pad_id, 0)
    eos_ids = _eos_ids(eos_id)
    if not hasattr(decoder, "solve"):
        raise ValueError(f"decoder: must be a simplex_decode.Decoder, got {type(decoder).__name__}")
    if callback is not None and not callable(callback):
        raise ValueError(f"callback: must be None or a callable (t, tokens, done), got {callback!r}")
    prompt, lengths = _prompts(prompt_tokens, prompt_lengths, pad_id)
    keys = _prompt_keys(key, prompt.shape[0])
    cid = next(_CALLBACK_IDS) if callback is not None else 0
    run = functools.partial(
        _generate_jit, params, prompt, lengths, decoder, keys, jnp.int32(cid % 2**31),
        step=step_s, cache_fn=cache_s, max_new_tokens=max_new_tokens, eos_ids=eos_ids,
        num_samples=num_samples, pad_id=pad_id, diagnostics=bool(return_diagnostics),
        stream=callback is not None, squeeze=squeeze,
    )
    if callback is None:
        return run()
    _CALLBACKS[cid % 2**31] = callback
    try:
        out = jax.block_until_ready(run())
        jax.effects_barrier()  # every step's callback has run
    finally:
        _CALLBACKS.pop(cid % 2**31, None)
    return out
