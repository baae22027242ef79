"""Eager calls: the first at a shape (compiles) and the next ones with new parameter values.

    python benchmarks/bench_eager.py [--B 3] [--V 37]

Prints, per decoder, the first call's wall time and the median of 5 later calls, each with
a new float parameter value (``block_until_ready``). Run it at a checkout before
``Decoder.solve`` compiled eager calls (commit add95cc) for the op-by-op numbers.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

import simplex_decode as sd

DECODERS = {
    "temperature": lambda t: sd.temperature(t),
    "top_p": lambda t: sd.top_p(0.8, temperature=t),
    "sparsemax": lambda t: sd.sparsemax(t),
    "best_of_k": lambda t: sd.best_of_k(4, lam=1.0, beta=t),
}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--B", type=int, default=3)
    ap.add_argument("--V", type=int, default=37)
    args = ap.parse_args(argv)
    x = np.random.default_rng(0).standard_normal((args.B, args.V)).astype(np.float32)
    print(f"eager probs, logits ({args.B}, {args.V}): first call / median of 5 later calls (new values)")
    for name, make in DECODERS.items():
        t0 = time.perf_counter()
        make(0.5).probs(x).block_until_ready()
        first = time.perf_counter() - t0
        later = []
        for t in (0.6, 0.7, 0.8, 0.9, 1.1):
            t0 = time.perf_counter()
            make(t).probs(x).block_until_ready()
            later.append(time.perf_counter() - t0)
        print(f"{name:12s} {first * 1e3:9.1f} ms   {statistics.median(later) * 1e3:9.2f} ms")


if __name__ == "__main__":
    main()
