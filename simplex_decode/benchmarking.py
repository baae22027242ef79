"""Timing helpers for benchmarks: device time per decoding step, amortised inside one jitted loop.

``per_step_time(step_fn, logits_buffers, steps)`` compiles a ``lax.fori_loop`` that runs
``step_fn(key_i, logits_i)`` ``steps`` times, rotating among the buffers and feeding a
data dependency from each step's output into the next step's logits (so XLA can neither
hoist the work out of the loop nor skip it), and returns seconds per step measured over
the whole loop (dispatch overhead amortised away). ``per_call_latency`` measures one
jitted call end to end (dispatch + block), the number a Python-driven loop would see.
:func:`decoder_step_time` and :func:`floor_step_time` are the two numbers
``simplex-decode bench`` and ``benchmarks/bench_decoders.py`` report: a decoder's
``sample`` per step (the decoder enters the loop as a jit argument, so its parameters are
traced, as in :func:`simplex_decode.generate`) and one read of the logits (a max-reduction
in the same loop: the memory floor as the machine reaches it).

Speed is measured here, never in tests: ratios between numbers taken in the same process
are what these helpers are for.

Example:
  >>> import simplex_decode as sd
  >>> from simplex_decode import benchmarking
  >>> bufs = benchmarking.make_buffers(2, 1000, "float32")
  >>> t = benchmarking.decoder_step_time(sd.top_p(0.9), bufs, steps=4, repeats=1)
  >>> t > 0
  True
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "buffers_from_rows",
    "decoder_step_time",
    "floor_step_time",
    "make_buffers",
    "per_call_latency",
    "per_step_time",
]


def _loop(step_fn, steps):
    def run(bufs, key, operand):
        R = bufs.shape[0]

        def body(i, carry):
            acc = carry
            x = lax_index(bufs, i % R)
            # a data dependency on the previous step that does not change the values
            x = x + (acc * 0).astype(x.dtype)
            k = jax.random.fold_in(key, i)
            out = step_fn(k, x) if operand is None else step_fn(k, x, operand)
            return acc + jnp.sum(out).astype(jnp.float32) * 1e-30

        return jax.lax.fori_loop(0, steps, body, jnp.float32(0))

    return jax.jit(run)


def lax_index(bufs, i):
    return jax.lax.dynamic_index_in_dim(bufs, i, axis=0, keepdims=False)


def per_step_time(step_fn, bufs, *, steps=20, repeats=3, min_time=0.2, operand=None):
    """Seconds per step of ``step_fn`` amortised inside a jitted loop (best of repeats).

    ``operand`` (e.g. a Decoder pytree) is passed as ``step_fn(key, x, operand)`` and
    enters the jitted loop as an argument, so its float parameters are traced values,
    as in a generation loop, not constants XLA could fold.
    """
    key = jax.random.key(0)
    run = _loop(step_fn, steps)
    jax.block_until_ready(run(bufs, key, operand))  # compile + warm up
    best = np.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(run(bufs, key, operand))
        dt = time.perf_counter() - t0
        best = min(best, dt / steps)
        if dt > 5 * min_time and _ >= 1:
            break
    return best


def per_call_latency(step_fn, x, *, repeats=20, operand=None):
    """Median seconds of one jitted call, blocking (dispatch included)."""
    f = jax.jit(step_fn)
    args = () if operand is None else (operand,)
    key = jax.random.key(0)
    jax.block_until_ready(f(key, x, *args))
    times = []
    for i in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(f(jax.random.fold_in(key, i), x, *args))
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def make_buffers(B, V, dtype="float32", *, n=3, seed=0, scale=3.0, peaked=True):
    """``n`` rotating logits buffers ``(n, B, V)``.

    ``peaked`` (default): a few large values over a Gaussian bulk, like a confident
    LM step (at temperature 0.7 the top-p(0.9) nucleus holds 1–150 tokens). Otherwise
    a Gaussian bulk of std 1 only: a flat, uncertain step (nuclei of tens of thousands
    of tokens) — the worst case for candidate windows.
    """
    rng = np.random.default_rng(seed)
    if not peaked:
        return jnp.asarray(rng.standard_normal((n, B, V)).astype(np.float32)).astype(dtype)
    # heavy-tailed like real logits: a few large values over a Gaussian bulk
    x = rng.standard_normal((n, B, V)).astype(np.float32) * scale
    top = rng.integers(0, V, size=(n, B, 8))
    np.put_along_axis(x, top, np.take_along_axis(x, top, -1) + 4 * scale, -1)
    return jnp.asarray(x).astype(dtype)


def buffers_from_rows(rows, B, dtype, *, n=3):
    """``n`` buffers ``(n, B, V)`` cycling through real logits ``rows`` ``(L, V)``."""
    L = rows.shape[0]
    idx = (np.arange(n * B) % L).reshape(n, B)
    return jnp.asarray(np.asarray(rows, np.float32)[idx]).astype(dtype)


def _sample(key, x, decoder):
    return decoder.sample(key, x)


def _max(key, x):
    return jnp.max(x, -1)


def decoder_step_time(decoder, bufs, *, steps=20, repeats=3, min_time=0.2):
    """Seconds per ``decoder.sample(key, logits)`` step, the decoder a traced jit argument."""
    return per_step_time(_sample, bufs, steps=steps, repeats=repeats, min_time=min_time, operand=decoder)


def floor_step_time(bufs, *, steps=20, repeats=3, min_time=0.2):
    """Seconds per step of one max-reduction over the logits: the memory floor as reached."""
    return per_step_time(_max, bufs, steps=steps, repeats=repeats, min_time=min_time)
