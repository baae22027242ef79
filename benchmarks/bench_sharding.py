"""Bytes communicated per decoding step with vocabulary-sharded logits (compile only).

    python benchmarks/bench_sharding.py                      # V = 151936 and 262144, mesh 2×4, B = 8
    python benchmarks/bench_sharding.py --V 32000 --mesh 1x8 # another setting

For each decoder covered by ``sd.sharding``, the decoding step ``sd.sharding.sample(dec,
key, logits, mesh)`` is compiled for 8 host devices and the operand bytes of every
collective in the compiled HLO are summed per device, each multiplied by the trip count of
the loops around it (``sd.sharding.hlo.bytes_communicated``; both branches of a
``lax.cond`` are counted, so it is an upper bound), with the number of collective rounds
(latency: a threshold bisection is one small all-reduce per bit, 31–34 rounds). The baseline is what a serving stack
does instead: an all-gather of the logits to every device of the row (compiled the same
way, ``with_sharding_constraint`` to ``P("batch", None)``). Nothing is timed. Prints a
markdown table (the README's "Sharded logits" section).
"""

from __future__ import annotations

import os

os.environ["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"

import argparse  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from jax.sharding import NamedSharding  # noqa: E402
from jax.sharding import PartitionSpec as P  # noqa: E402

import simplex_decode as sd  # noqa: E402

DECODERS = {
    "temperature": lambda: sd.temperature(0.7),
    "greedy": sd.greedy,
    "top_k": lambda: sd.top_k(50, temperature=0.7),
    "top_p": lambda: sd.top_p(0.9, temperature=0.7),
    "min_p": lambda: sd.min_p(0.1),
    "sparsemax": sd.sparsemax,
    "entmax": lambda: sd.entmax(1.5),
}


def step_bytes(fn, x, nv):
    """(bytes, collective rounds, vocabulary-sized gathers) of ``fn``'s compiled program."""
    text = jax.jit(fn).lower(x).compile().as_text()
    rounds = sum(c.runs for c in sd.sharding.hlo.collectives(text))
    return sd.sharding.hlo.bytes_communicated(text), rounds, len(sd.sharding.hlo.vocab_gathers(text, x.shape[-1] // nv))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--V", type=int, nargs="+", default=[151936, 262144])
    ap.add_argument("--B", type=int, default=8)
    ap.add_argument("--mesh", default="2x4", help="batch x vocab devices (of 8)")
    ap.add_argument("--methods", nargs="+", default=["inverse_cdf", "gumbel"])
    a = ap.parse_args(argv)
    nb, nv = (int(n) for n in a.mesh.split("x"))
    mesh = sd.sharding.vocab_mesh(nb, nv)
    key = jax.random.key(0)
    print(f"mesh {nb} (batch) × {nv} (vocab), B = {a.B}, float32 logits; bytes per device per step "
          "(operand bytes of the compiled collectives × loop trips)\n")
    cols = " | ".join(f"{m} bytes (rounds)" for m in a.methods)
    print(f"| V | decoder | {cols} | all-gather of the logits | ratio (best) | vocab-sized gathers |")
    print("|---|---|" + "---:|" * (len(a.methods) + 3))
    for V in a.V:
        x = sd.sharding.shard(jnp.zeros((a.B, V), jnp.float32), mesh)
        gathered = NamedSharding(mesh, P("batch", None))
        base, _, _ = step_bytes(lambda x, g=gathered: jax.lax.with_sharding_constraint(x, g) * 1.0, x, nv)
        for name, make in DECODERS.items():
            dec = make()
            row, worst = [], 0
            for m in a.methods:
                b, r, g = step_bytes(lambda x, dec=dec, m=m: sd.sharding.sample(dec, key, x, mesh, method=m), x, nv)
                row.append((b, r))
                worst = max(worst, g)
            print(f"| {V} | {name} | " + " | ".join(f"{b:,} ({r})" for b, r in row)
                  + f" | {base:,} | {base / min(b for b, _ in row):,.0f}× | {worst} |", flush=True)


if __name__ == "__main__":
    main()
