"""``simplex-decode bench SPEC``: the cost of one decoder per decoding step, with its ratio to
the memory floor and to temperature sampling measured in the same process.

Every number is device time per step of ``decoder.sample(key, logits)`` amortised inside one
jitted ``lax.fori_loop`` (:mod:`simplex_decode.benchmarking`; the decoder is a jit argument,
so its parameters are traced as in :func:`simplex_decode.generate`), on synthetic logits
(``peaked``: a few large values over a Gaussian bulk, like a confident language-model
step; ``flat``: the bulk only, the worst case for candidate windows). ``floor`` is one
max-reduction over the same logits in the same loop — one read of the memory, as this
machine achieves it. ``benchmarks/bench_decoders.py`` runs the same measurement over every
preset and a grid of shapes.
"""

from __future__ import annotations

import os
import platform

from .output import progress
from .spec import CLIError, build_decoder, check_fits

__all__ = ["run_bench"]


def run_bench(args) -> int:
    import jax

    from .. import benchmarking
    from ..presets import temperature

    try:
        decoder = build_decoder(args.spec)
    except ValueError as e:
        raise CLIError(str(e)) from None
    baseline = temperature(1.0)
    shapes = [(b, v) for v in args.vocab for b in args.batch]
    cpu = platform.processor() or platform.machine()
    print(f"decoder: {args.spec}")
    print(f"machine: {cpu}, {os.cpu_count()} cores, jax {jax.__version__} on {jax.default_backend()} "
          f"({jax.devices()[0].device_kind}); logits: {args.logits}, {args.dtype}; best of 3 runs of "
          f"{args.steps} steps in one jitted loop")
    print()
    print("| B | V | decoder ms/step | floor ms/step | x floor | temperature ms/step | x temperature |")
    print("|---|---|---|---|---|---|---|")
    bar = progress(len(shapes), "bench", unit="shape")
    try:
        for B, V in shapes:
            check_fits(decoder, V, what=args.spec)  # under jit a k > V could not raise
            bufs = benchmarking.make_buffers(B, V, args.dtype, peaked=args.logits == "peaked")
            t = benchmarking.decoder_step_time(decoder, bufs, steps=args.steps)
            floor = benchmarking.floor_step_time(bufs, steps=args.steps)
            base = benchmarking.decoder_step_time(baseline, bufs, steps=args.steps)
            bar.update(1)
            print(f"| {B} | {V} | {t * 1e3:.3f} | {floor * 1e3:.3f} | {t / floor:.1f} | {base * 1e3:.3f} "
                  f"| {t / base:.2f} |", flush=True)
    finally:
        bar.close()
    print()
    print("x floor: decoder time / one read of the logits; x temperature: / temperature(1.0) sampling. "
          "Times move with the machine's load; ratios taken in one process are steadier.")
    return 0
