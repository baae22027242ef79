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

from ..sampling import sample_from_probs
from ..status import Status, raise_on_bad_rows
from ._common import (
    batch_axes,
    check_cache,
    check_int,
    check_step,
    decode_loop,
    fold_keys,
    parse_eos_ids,
    parse_prompts,
    prefill,
    prompt_keys,
    repeat_rows,
    safe_log,
    step_diagnostics,
    take_ids,
)

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
      state: the decoder's final state (``decoder.init`` of the rows' shape; a tuple of
        Nones for decoders without state), e.g. a Constraint's automaton state per row.
    """

    tokens: jax.Array
    lengths: jax.Array
    finished: jax.Array
    logprobs: jax.Array
    model_logprobs: jax.Array
    status: jax.Array
    diagnostics: dict | None = None
    state: Any = None


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
    last, cache = prefill(step, params, prompt, lengths, cache_fn, max_len)
    cache = repeat_rows(cache, batch_axes(cache_fn, max_len), K)
    logits = jnp.repeat(last, K, axis=0)
    # keys: prompt b, sample k -> fold_in(key_b, k); step t -> fold_in(., t)
    row_keys = jax.vmap(lambda kb: fold_keys(jnp.broadcast_to(kb, (K,) + kb.shape), jnp.arange(K)))(keys)
    row_keys = row_keys.reshape((N,) + row_keys.shape[2:])
    names = ("entropy", "support_size", "kl_to_model", "model_entropy") if diagnostics else ()

    def select(t, logits, cache, pos, hist, hmask, dstate):
        V = logits.shape[-1]
        sol = decoder.solve(
            logits.reshape(B, K, V), state=dstate, history=hist.reshape(B, K, -1), history_mask=hmask.reshape(B, K, -1)
        )
        raise_on_bad_rows(sol.status)
        ok = sol.status == Status.OK
        step_keys = fold_keys(row_keys, t)
        ids = sample_from_probs(step_keys.reshape((B, K) + step_keys.shape[1:]), sol.q, valid=ok)
        q = sol.q.reshape(N, V)
        ids = ids.reshape(N)
        ex = step_diagnostics(q, logits) if diagnostics else {}
        return ids, take_ids(safe_log(q), ids), sol.status.reshape(N), ex

    def advance(dstate, tok, emit):
        return decoder.update(dstate, jnp.where(emit, tok, -1).reshape(B, K))

    out, finished = decode_loop(
        step, params, cache, logits, jnp.repeat(prompt, K, axis=0), jnp.repeat(lengths, K, axis=0), select,
        max_new_tokens=max_new_tokens, eos_ids=eos_ids, pad_id=pad_id, extras=names,
        callback=(_run_callback, (callback_id,)) if stream else None, callback_shape=(B,) if squeeze else (B, K),
        dstate=decoder.init((B, K)), advance=advance,
    )
    # rows cut at max_new_tokens: a constraint whose match is unfinished says so
    ended = decoder.objective.end_status(out.dstate, (B, K)).reshape(N)
    status = jnp.where(~out.done & (out.status == Status.OK), ended, out.status)
    shape = (B,) if squeeze else (B, K)
    r = lambda x: x.reshape(shape + x.shape[1:])  # noqa: E731
    return GenerateResult(
        tokens=r(out.tokens),
        lengths=r(out.n_gen),
        finished=r(finished),
        logprobs=r(out.logq),
        model_logprobs=r(out.logp),
        status=r(status),
        diagnostics={k: r(v) for k, v in out.extras.items()} if diagnostics else None,
        state=jax.tree.map(lambda x: x.reshape(shape + x.shape[2:]), out.dstate),
    )


def _check_constraint_eos(decoder, eos_ids, eos_id):
    need = decoder.objective.eos_ids if hasattr(decoder, "objective") else ()
    missing = [i for i in need if i not in eos_ids]
    if missing:
        raise ValueError(
            f"eos_id: the decoder's constraint ends its output with token id(s) {list(need)}, so generation "
            f"must stop on them; got eos_id={eos_id!r}"
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
    step_s = check_step(step)
    cache_s = check_cache(cache)
    max_new_tokens = check_int("max_new_tokens", max_new_tokens, 1)
    squeeze = num_samples is None
    num_samples = 1 if squeeze else check_int("num_samples", num_samples, 1)
    pad_id = check_int("pad_id", pad_id, 0)
    eos_ids = parse_eos_ids(eos_id)
    if not hasattr(decoder, "solve"):
        raise ValueError(f"decoder: must be a simplex_decode.Decoder, got {type(decoder).__name__}")
    _check_constraint_eos(decoder, eos_ids, eos_id)
    if callback is not None and not callable(callback):
        raise ValueError(f"callback: must be None or a callable (t, tokens, done), got {callback!r}")
    prompt, lengths = parse_prompts(prompt_tokens, prompt_lengths, pad_id)
    keys = prompt_keys(key, prompt.shape[0])
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
