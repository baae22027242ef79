"""Cost of Best-of-K per decoding step, against temperature sampling in the same process.

    python benchmarks/bench_bok.py                       # CPU: B = 8, V = 32 000
    python benchmarks/bench_bok.py --B 64 --V 151936     # the accelerator setting

Every decoder draws one token per row; the time is device time per step amortised inside
one jitted ``lax.fori_loop`` over ``--steps`` steps that rotates among three logits
buffers and feeds each step's output back as a data dependency (``simplex_decode.benchmarking.per_step_time``),
so neither dispatch nor hoisting is measured. Also reports the exact solver's iteration
counts on the same logits (outer Newton steps on the multiplier per row, and the
vectorised per-coordinate Newton steps summed over them) and its KKT residual. Prints a
markdown table.
"""

from __future__ import annotations

import argparse
import os
import platform

import jax
import jax.numpy as jnp
import numpy as np

import simplex_decode as sd
from simplex_decode.benchmarking import make_buffers, per_step_time


def decoders(t):
    return {
        f"temperature({t})": sd.temperature(t),
        "best_of_k(16, lam=0.1, beta=0.01), exact": sd.best_of_k(16, 0.1, 0.01, temperature=t),
        "best_of_k(16, lam=0.5, beta=0.05), exact": sd.best_of_k(16, 0.5, 0.05, temperature=t),
        "best_of_k(16, lam=0.5, beta=10), exact": sd.best_of_k(16, 0.5, 10.0, temperature=t),
        "best_of_k(16, lam=0.5, beta=0.05, weights='model'), exact": sd.best_of_k(
            16, 0.5, 0.05, weights="model", temperature=t
        ),
        "best_of_k(16, lam=0.5, beta=0.05), mirror J=5": sd.best_of_k(
            16, 0.5, 0.05, temperature=t, solver="mirror", steps=5
        ),
    }


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--B", type=int, default=8)
    ap.add_argument("--V", type=int, default=32000)
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--temperature", type=float, default=0.7)
    args = ap.parse_args(argv)

    bufs = make_buffers(args.B, args.V, jnp.dtype(args.dtype))
    decs = decoders(args.temperature)
    rows = []
    base = None
    for name, dec in decs.items():
        t = per_step_time(lambda key, x, dec: dec.sample(key, x), bufs, steps=args.steps, operand=dec)
        base = t if base is None else base
        its = inner = kkt = "–"
        if isinstance(dec.solver, sd.Exact):
            certified = sd.Decoder(dec.objective, solver=sd.Exact(certificate=True))
            sols = [jax.jit(certified.solve)(bufs[i]) for i in range(bufs.shape[0])]
            it = np.concatenate([np.asarray(s.stats["iterations"]) for s in sols])
            inn = np.asarray([int(s.stats["inner_iterations"][0]) for s in sols])
            its = f"{it.mean():.1f} / {it.max()}"
            inner = f"{inn.mean():.0f}"
            kkt = f"{max(float(s.stats['kkt_residual'].max()) for s in sols):.1e}"
        rows.append((name, t * 1e3, t / base, its, inner, kkt))

    print(f"B = {args.B}, V = {args.V}, {args.dtype}, {jax.default_backend()} "
          f"({platform.processor() or platform.machine()}, {os.cpu_count()} cores), jax {jax.__version__}\n")
    print("| decoder (sample 1 token/row) | ms/step | × temperature | outer iterations mean / max | "
          "inner iterations | KKT residual |")
    print("|---|---|---|---|---|---|")
    for name, ms, ratio, its, inner, kkt in rows:
        print(f"| {name} | {ms:.3f} | {ratio:.2f} | {its} | {inner} | {kkt} |")


if __name__ == "__main__":
    main()
