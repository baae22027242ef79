"""Worker for tests/test_sharding.py: runs in its own process with 8 host devices.

``python tests/sharding_worker.py --vocab 32000 --batch 4 --meshes 2x4,1x8,4x1 --out r.json``
decodes one batch with every covered decoder of the shared suite (tests/decoder_cases.py), on
each mesh with sd.sharding and on one device with the Decoder, and writes, per (decoder, mesh):
the largest |q − q_single|, whether the sampled ids agree (3 draws per row, the same key), and
the all-gathers of the compiled sharded program whose operand has a vocabulary-sized dimension.
"""

from __future__ import annotations

import os

if __name__ == "__main__":  # (imported for logits_for, it leaves the importer's devices alone)
    os.environ["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import simplex_decode as sd  # noqa: E402
from tests.decoder_cases import CASES  # noqa: E402

#: the covered cases of the shared suite, most used first
COVERED = ("temperature", "greedy", "top_k", "top_p", "top_p-from_model", "min_p", "sparsemax", "entmax")


def logits_for(B, V, seed=0):
    """Language-model-like rows: a heavy head over Gaussian noise, a tie at the top of row 1,
    a -inf (banned) stretch in row 2."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((B, V)).astype(np.float32) * 2.0
    x[:, rng.choice(V, 40, replace=False)] += 6.0
    if B > 1:
        x[1, 3], x[1, V - 2] = 12.0, 12.0
    if B > 2:
        x[2, V // 3 : V // 2] = -np.inf
    return jnp.asarray(x)


def largest_operand(text):
    """The most elements any one collective operand of the compiled program holds."""
    return max((math.prod(dims) for c in sd.sharding.hlo.collectives(text) for _, dims in c.operands), default=0)


def sharded_like(q, ids, x, mesh):
    """q is laid out like the logits, ids over the batch axis (replicated over the vocabulary)."""
    from jax.sharding import NamedSharding
    from jax.sharding import PartitionSpec as P

    rows = NamedSharding(mesh, P("batch"))
    return bool(q.sharding.is_equivalent_to(x.sharding, q.ndim) and ids.sharding.is_equivalent_to(rows, ids.ndim))


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--vocab", type=int, default=32000)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--meshes", default="2x4,1x8,4x1")
    ap.add_argument("--cases", default=",".join(COVERED))
    ap.add_argument("--values", type=int, default=0, help="which of each case's value sets")
    ap.add_argument("--extras", action="store_true", help="also the control gather and Gumbel-max draws")
    ap.add_argument("--out", required=True)
    a = ap.parse_args(argv)
    B, V = a.batch, a.vocab
    logits = logits_for(B, V)
    key = jax.random.key(7)
    cases = {c.id: c for c in CASES}
    meshes = [tuple(int(n) for n in m.split("x")) for m in a.meshes.split(",")]
    out = []
    for cid in a.cases.split(","):
        case = cases[cid]
        dec = case.build(V, **case.values[a.values])
        q0, ids0 = jax.jit(lambda x, dec=dec: (dec.probs(x), dec.sample(key, x, num_samples=3)))(logits)
        for nb, nv in meshes:
            mesh = sd.sharding.vocab_mesh(nb, nv)
            x = sd.sharding.shard(logits, mesh)
            fn = jax.jit(lambda x, dec=dec, mesh=mesh: (sd.sharding.probs(dec, x, mesh),
                                                       sd.sharding.sample(dec, key, x, mesh, num_samples=3)))
            text = fn.lower(x).compile().as_text()
            q, ids = fn(x)
            out.append({
                "case": cid, "mesh": f"{nb}x{nv}",
                "max_abs_diff": float(jnp.max(jnp.abs(q - q0))),
                "ids_equal": bool(np.array_equal(np.asarray(ids), np.asarray(ids0))),
                "sharded_like_input": sharded_like(q, ids, x, mesh),
                "vocab_gathers": [c.line[:200] for c in sd.sharding.hlo.vocab_gathers(text, V // nv)],
                "collectives": len(sd.sharding.hlo.collectives(text)),
                "largest_operand": largest_operand(text),
            })
            print(json.dumps(out[-1]), flush=True)
    if a.extras:
        out += extras(logits, key, meshes[0])
    Path(a.out).write_text(json.dumps(out, indent=1))


def extras(logits, key, shape):
    """The checks behind the checks: a program that does gather the logits is caught by the
    HLO assertion, and Gumbel-max draws (the accelerator default) agree with one device."""
    from jax.sharding import NamedSharding
    from jax.sharding import PartitionSpec as P

    V = logits.shape[-1]
    mesh = sd.sharding.vocab_mesh(*shape)
    x = sd.sharding.shard(logits, mesh)
    gather = jax.jit(lambda x: jax.lax.with_sharding_constraint(x, NamedSharding(mesh, P("batch", None))) * 2.0)
    text = gather.lower(x).compile().as_text()
    control = {"case": "control-gather", "mesh": "x".join(map(str, shape)),
               "vocab_gathers": [c.line[:200] for c in sd.sharding.hlo.vocab_gathers(text, V // shape[1])]}
    dec = sd.top_p(0.9, temperature=0.7)
    fn = jax.jit(lambda x: sd.sharding.sample(dec, key, x, mesh, num_samples=3, method="gumbel"))
    ids = fn(x)
    ids0 = dec.sample(key, logits, num_samples=3, method="gumbel")
    text = fn.lower(x).compile().as_text()
    gumbel = {"case": "top_p-gumbel", "mesh": control["mesh"], "max_abs_diff": 0.0,
              "ids_equal": bool(np.array_equal(np.asarray(ids), np.asarray(ids0))),
              "sharded_like_input": sharded_like(x, ids, x, mesh),
              "vocab_gathers": [c.line[:200] for c in sd.sharding.hlo.vocab_gathers(text, V // shape[1])],
              "largest_operand": largest_operand(text)}
    print(json.dumps(control), json.dumps(gumbel), sep="\n", flush=True)
    return [control, gumbel]


if __name__ == "__main__":
    main()
