"""One of two processes decoding one sharded batch together (tests/test_sharding.py).

``python tests/sharding_multihost_worker.py PROCESS_ID PORT OUT`` — two processes with 2 CPU
devices each join by ``jax.distributed.initialize`` (gloo CPU collectives) into a 2 × 2 mesh
(batch × vocab over all 4 devices, so each row's vocabulary spans both processes), decode the
same logits with sd.sharding, and each writes its addressable rows of ``q`` and of the ids next
to the single-process answer (the Decoder on one local device) as JSON.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path


def main():
    # here, not at import: pytest's doctest collection imports this file into its own process
    os.environ["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=2"
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import jax
    import numpy as np

    pid, port, out = int(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address=f"127.0.0.1:{port}", num_processes=2, process_id=pid)
    import simplex_decode as sd
    from tests.sharding_worker import logits_for

    B, V = 4, 512
    host = np.asarray(logits_for(B, V))
    # devices ordered so that the vocabulary axis crosses the processes: mesh[i, j] = process j
    devs = sorted(jax.devices(), key=lambda d: (d.id % 2, d.process_index))
    mesh = sd.sharding.vocab_mesh(2, 2, devices=devs)
    sharding = sd.sharding.logits_sharding(mesh)
    x = jax.make_array_from_callback((B, V), sharding, lambda idx: host[idx], dtype=host.dtype)
    key = jax.random.key(3)
    res = {"mesh": [[(d.id, d.process_index) for d in row] for row in mesh.devices.tolist()]}
    for name, dec in {"top_p": sd.top_p(0.9, temperature=0.7), "top_k": sd.top_k(20), "sparsemax": sd.sparsemax()}.items():
        q = sd.sharding.probs(dec, x, mesh)
        ids = sd.sharding.sample(dec, key, x, mesh, num_samples=3, method="inverse_cdf")
        local = jax.local_devices()[0]
        q0 = np.asarray(dec.probs(jax.device_put(host, local)))
        ids0 = np.asarray(dec.sample(key, jax.device_put(host, local), num_samples=3, method="inverse_cdf"))
        diff = max(float(np.max(np.abs(np.asarray(s.data) - q0[s.index]))) for s in q.addressable_shards)
        same = all(np.array_equal(np.asarray(s.data), ids0[s.index]) for s in ids.addressable_shards)
        res[name] = {"max_abs_diff": diff, "ids_equal": same, "shards": len(q.addressable_shards)}
    out.write_text(json.dumps(res))
    jax.distributed.shutdown()


if __name__ == "__main__":
    main()
