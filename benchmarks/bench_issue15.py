"""Per-step cost of the stateful / randomised / two-source decoders of issue 15, as ratios to
``temperature`` and ``top_p`` measured in the same process.

    python benchmarks/bench_issue15.py                  # B ∈ {1, 8}, V = 49152 (SmolLM2's vocabulary)
    python benchmarks/bench_issue15.py --B 8 --V 151936 --out results/issue15.md

Each decoder samples one token per row inside a jitted ``fori_loop`` (``simplex_decode.benchmarking.per_step_time``:
dispatch amortised; the decoder, its state, the second logits and the history are jit
arguments). Mirostat also updates its state (``sample(..., state=)``); DRY reads a history of
``--L`` tokens over a 64-token window and over the whole history; CFG and contrastive decoding
read one second logits array, DoLa 8 candidate layers. The model's own cost (the second
stream's forward pass, the early-exit LM heads) is not included: this is the decoder alone.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
import simplex_decode as sd  # noqa: E402
from simplex_decode.benchmarking import make_buffers, per_step_time  # noqa: E402


def cases(L):
    rep = sd.RepetitionPenalty(1.0)  # a no-op history transform: DRY's baseline for reading the history
    return {
        "temperature": (sd.temperature(0.7), {}),
        "top_p": (sd.top_p(0.9, temperature=0.7), {}),
        "mirostat_v2": (sd.mirostat(5.0, 0.1, temperature=0.7), {"state": True}),
        "mirostat_v1": (sd.mirostat(5.0, 0.1, version=1, temperature=0.7), {"state": True}),
        "xtc": (sd.xtc(0.1, 0.5, temperature=0.7), {}),
        "history_noop": (sd.chain(rep, sd.Temperature(0.7)), {"history": True}),
        "dry_w64": (sd.chain(sd.DRY(0.8, 1.75, 2, 64, [[10], [11, 12]]), sd.Temperature(0.7)), {"history": True}),
        f"dry_w{L}": (sd.chain(sd.DRY(0.8, 1.75, 2, -1, [[10], [11, 12]]), sd.Temperature(0.7)), {"history": True}),
        "cfg": (sd.cfg(1.5, temperature=0.7), {"second": 1}),
        "contrastive": (sd.contrastive(0.1, temperature=0.7), {"second": 1}),
        "dola_J8": (sd.dola(0.1, 1.2, temperature=0.7), {"second": 8, "history": True}),
    }


def run_case(dec, opts, B, V, L, bufs):
    rng = np.random.default_rng(1)
    hist = jnp.asarray(rng.integers(0, 64, (B, L)), jnp.int32)  # a small alphabet: many repeats
    second = None
    if opts.get("second"):
        J = opts["second"]
        shape = (B, V) if J == 1 else (B, J, V)
        second = jnp.asarray(rng.standard_normal(shape).astype(np.float32) * 3)
    state = dec.init((B,)) if opts.get("state") else None
    extra = {"history": hist if opts.get("history") else None, "second": second, "state": state}

    def step(key, x, operand):
        d, ex = operand
        out = d.sample(key, x, history=ex["history"], second_logits=ex["second"], state=ex["state"])
        if ex["state"] is not None:
            ids, new = out
            return ids + (jnp.sum(new[0].mu) * 0).astype(ids.dtype)
        return out

    return per_step_time(step, bufs, operand=(dec, extra))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--B", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--V", type=int, nargs="+", default=[49152])
    ap.add_argument("--L", type=int, default=256, help="history length (prompt + generated)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    lines = [f"# issue 15 decoders, per-step cost ({platform.machine()}, {os.cpu_count()} CPUs, "
             f"jax {jax.__version__}, backend {jax.default_backend()}, history L={args.L})", "",
             "| B | V | decoder | ms/step | × temperature | × top_p |", "|---|---|---|---|---|---|"]
    for B in args.B:
        for V in args.V:
            bufs = make_buffers(B, V, jnp.float32)
            times = {}
            for name, (dec, opts) in cases(args.L).items():
                times[name] = run_case(dec, opts, B, V, args.L, bufs)
                print(f"B={B} V={V} {name}: {times[name] * 1e3:.3f} ms/step", flush=True)
            # the ratios once both baselines are measured (top_p is the second case)
            for name, t in times.items():
                lines.append(f"| {B} | {V} | {name} | {t * 1e3:.3f} | {t / times['temperature']:.2f} | "
                             f"{t / times['top_p']:.2f} |")
    text = "\n".join(lines) + "\n"
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)
    return text


if __name__ == "__main__":
    main()
