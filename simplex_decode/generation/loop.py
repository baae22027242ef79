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
* optionally a third output, ``step(...) -> (logits, cache, second_logits)`` with
  ``second_logits`` ``(N, T, V)`` or ``(N, T, J, V)``: handed to the decoder as its second
  source of scores (DoLa's early layers: ``make_step(config, early_exit_layers=...)``).
  The strategies ignore it.

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
    SecondRun,
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

__all__ = ["GenerateResult", "SecondStream", "generate"]


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
        step whose logits were invalid (the row stops there and is padded), or
        ``CONSTRAINT_INCOMPLETE`` for a row of a constrained decoder cut at ``max_new_tokens``
        before its output was a complete match.
      diagnostics: None, or a dict of float32 per-step arrays (shape of ``tokens``; 0 after
        the end): ``entropy`` of q (nats), ``support_size`` (tokens with q > 0),
        ``kl_to_model`` = KL(q ‖ softmax(logits)), ``model_entropy``.
      state: the decoder's final state (batch shape ``(B,)``/``(B, K)``; ``()`` for stateless
        decoders): pass it back as ``state=`` to continue.
    """

    tokens: jax.Array
    lengths: jax.Array
    finished: jax.Array
    logprobs: jax.Array
    model_logprobs: jax.Array
    status: jax.Array
    diagnostics: dict | None = None
    state: Any = None


class SecondStream(NamedTuple):
    """A second model stream that :func:`generate` runs in the same jitted loop; its
    next-token logits reach the decoder as ``second_logits`` at every step.

    It is prefilled on its own prompt, then fed the tokens the main stream emits (as
    transformers' unbatched CFG feeds its negative prompt). Fields left None are the main
    stream's:

    * classifier-free guidance with a negative prompt: ``SecondStream(prompt_tokens=negative)``
      (transformers' unconditional default is the prompt's last token alone);
    * contrastive decoding with an amateur model: ``SecondStream(step=amateur_step,
      params=amateur_params, cache=amateur_cache)``, e.g. the bundled model cut to its first
      layers (:func:`simplex_decode.models.truncate`).

    DoLa needs no second stream: a step that returns ``(logits, cache, early_logits)``
    (``make_step(config, early_exit_layers=...)``) feeds its third output instead.

    Attributes:
      prompt_tokens / prompt_lengths: the second prompts (one per main prompt; a list of
        any lengths, or a right-padded array with lengths), as for :func:`generate`.
      step / params / cache: the second model's step function, parameters and cache factory.
    """

    prompt_tokens: Any = None
    prompt_lengths: Any = None
    step: Callable | None = None
    params: Any = None
    cache: Callable | None = None


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
                     "stream", "squeeze", "second_step", "second_cache_fn", "has_second"),
)
def _generate_jit(params, prompt, lengths, decoder, keys, callback_id, state, second_params, second_prompt,
                  second_lengths, *, step, cache_fn, max_new_tokens, eos_ids, num_samples, pad_id, diagnostics,
                  stream, squeeze, second_step, second_cache_fn, has_second):
    B, P = prompt.shape
    K = num_samples
    N = B * K
    max_len = P + max_new_tokens
    last, cache, aux = prefill(step, params, prompt, lengths, cache_fn, max_len)
    cache = repeat_rows(cache, batch_axes(cache_fn, max_len), K)
    logits = jnp.repeat(last, K, axis=0)
    V = logits.shape[-1]
    second, second_cache, second_run = (None if aux is None else jnp.repeat(aux, K, axis=0)), None, None
    if has_second:
        if aux is not None:
            raise ValueError("second: the step already returns second logits (its third output); pass second=None")
        max_len2 = second_prompt.shape[1] + max_new_tokens
        last2, second_cache, _ = prefill(second_step, second_params, second_prompt, second_lengths,
                                         second_cache_fn, max_len2)
        if last2.shape[-1] != V:
            raise ValueError(f"second: its logits have {last2.shape[-1]} entries, the main stream's {V}: the "
                             "two models must share the vocabulary")
        second_cache = repeat_rows(second_cache, batch_axes(second_cache_fn, max_len2), K)
        second = jnp.repeat(last2, K, axis=0)
        second_run = SecondRun(second_step, second_params, jnp.repeat(second_lengths, K))
    # keys: prompt b, sample k -> fold_in(key_b, k); step t -> fold_in(., t)
    row_keys = jax.vmap(lambda kb: fold_keys(jnp.broadcast_to(kb, (K,) + kb.shape), jnp.arange(K)))(keys)
    row_keys = row_keys.reshape((N,) + row_keys.shape[2:])
    names = ("entropy", "support_size", "kl_to_model", "model_entropy") if diagnostics else ()
    if state is None:
        state = decoder.init((B, K))
    elif squeeze:  # the caller's state has batch shape (B,)
        state = jax.tree.map(lambda x: x[:, None], state)

    def select(t, logits, second, cache, pos, hist, hmask, active, state):
        step_keys = fold_keys(row_keys, t)
        step_keys = step_keys.reshape((B, K) + step_keys.shape[1:])
        sol = decoder.solve(
            logits.reshape(B, K, V), history=hist.reshape(B, K, -1), history_mask=hmask.reshape(B, K, -1),
            second_logits=None if second is None else second.reshape((B, K) + second.shape[1:]),
            key=step_keys, state=state,
        )
        raise_on_bad_rows(sol.status, sol.stats["stage"], decoder.objective.stage_names)
        ok = sol.status == Status.OK
        ids = sample_from_probs(step_keys, sol.q, valid=ok)
        state = decoder.update(state, sol.q, ids, valid=active.reshape(B, K))
        q = sol.q.reshape(N, V)
        ids = ids.reshape(N)
        ex = step_diagnostics(q, logits) if diagnostics else {}
        return ids, take_ids(safe_log(q), ids), sol.status.reshape(N), ex, state

    out, finished = decode_loop(
        step, params, cache, logits, jnp.repeat(prompt, K, axis=0), jnp.repeat(lengths, K, axis=0), select,
        max_new_tokens=max_new_tokens, eos_ids=eos_ids, pad_id=pad_id, extras=names,
        callback=(_run_callback, (callback_id,)) if stream else None, callback_shape=(B,) if squeeze else (B, K),
        second=second, second_run=second_run, second_cache=second_cache, carry=state,
    )
    # rows cut at max_new_tokens: a stateful rule may object (a Constraint's unfinished match)
    ended = decoder.objective.end_status(out.carry, (B, K)).reshape(N)
    status = jnp.where(~out.done & (out.status == Status.OK), ended, out.status)
    shape = (B,) if squeeze else (B, K)
    r = lambda x: x.reshape(shape + x.shape[1:])  # noqa: E731
    final_state = jax.tree.map(lambda x: x[:, 0], out.carry) if squeeze else out.carry
    return GenerateResult(
        tokens=r(out.tokens),
        lengths=r(out.n_gen),
        finished=r(finished),
        logprobs=r(out.logq),
        model_logprobs=r(out.logp),
        status=r(status),
        diagnostics={k: r(v) for k, v in out.extras.items()} if diagnostics else None,
        state=final_state,
    )


def _check_constraint_eos(decoder, eos_ids, eos_id):
    """A decoder whose support rule ends sequences with EOS ids (a Constraint) needs the loop
    to stop on them."""
    need = decoder.objective.eos_ids
    if any(i not in eos_ids for i in need):
        raise ValueError(
            f"eos_id: the decoder's constraint ends its output with token id(s) {list(need)}, so generation "
            f"must stop on them; got eos_id={eos_id!r}"
        )


def _check_state(decoder, state, batch_shape):
    """The caller's initial decoder state, checked against ``decoder.init(batch_shape)``."""
    if state is None:
        return None
    want = jax.eval_shape(lambda: decoder.init(batch_shape))
    got_def, want_def = jax.tree.structure(state), jax.tree.structure(want)
    shapes = [jnp.shape(x) for x in jax.tree.leaves(state)]
    if got_def != want_def or shapes != [x.shape for x in jax.tree.leaves(want)]:
        raise ValueError(
            f"state: must be the decoder's state for batch shape {batch_shape} (decoder.init({batch_shape}), or "
            f"a previous GenerateResult.state), got structure {got_def} with leaf shapes {shapes}"
        )
    return jax.tree.map(jnp.asarray, state)


def _second_stream(second, step_s, cache_s, params, prompt, lengths, pad_id):
    """(traced args, static args) of ``_generate_jit`` for the second stream."""
    if second is None:
        return (None, None, None), dict(second_step=None, second_cache_fn=None, has_second=False)
    if not isinstance(second, SecondStream):
        raise ValueError(f"second: must be None or a simplex_decode.SecondStream, got {type(second).__name__}")
    if second.prompt_tokens is None and second.step is None and second.params is None:
        raise ValueError(
            "second: give it a prompt (SecondStream(prompt_tokens=...), e.g. CFG's negative prompt), a step "
            "or params (an amateur model); with none, it would repeat the main stream"
        )
    if second.prompt_tokens is None:
        if second.prompt_lengths is not None:
            raise ValueError("second: prompt_lengths without prompt_tokens")
        prompt2, lengths2 = prompt, lengths
    else:
        prompt2, lengths2 = parse_prompts(second.prompt_tokens, second.prompt_lengths, pad_id)
        if prompt2.shape[0] != prompt.shape[0]:
            raise ValueError(
                f"second: needs one prompt per main prompt ({prompt.shape[0]}), got {prompt2.shape[0]}"
            )
    step2 = step_s if second.step is None else check_step(second.step)
    cache2 = cache_s if second.cache is None else check_cache(second.cache)
    params2 = params if second.params is None else second.params
    return (params2, prompt2, lengths2), dict(second_step=step2, second_cache_fn=cache2, has_second=True)


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
    second: SecondStream | None = None,
    state: Any = None,
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
      second: a :class:`SecondStream` (a negative prompt for CFG, an amateur model for
        contrastive decoding) run in the same loop; its logits are the decoder's
        ``second_logits``. A step returning ``(logits, cache, second_logits)`` (DoLa's early
        layers) feeds them without one.
      state: the decoder's initial state (batch shape ``(B,)``, or ``(B, K)`` with
        ``num_samples``; default ``decoder.init``), e.g. a previous result's ``state``. Each
        row and sample carries its own state through the loop (mirostat's μ); it is a traced
        value: new values do not recompile.

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
    state = _check_state(decoder, state, (prompt.shape[0],) if squeeze else (prompt.shape[0], num_samples))
    second_args, second_static = _second_stream(second, step_s, cache_s, params, prompt, lengths, pad_id)
    cid = next(_CALLBACK_IDS) if callback is not None else 0
    run = functools.partial(
        _generate_jit, params, prompt, lengths, decoder, keys, jnp.int32(cid % 2**31), state, *second_args,
        step=step_s, cache_fn=cache_s, max_new_tokens=max_new_tokens, eos_ids=eos_ids,
        num_samples=num_samples, pad_id=pad_id, diagnostics=bool(return_diagnostics),
        stream=callback is not None, squeeze=squeeze, **second_static,
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
