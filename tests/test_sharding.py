"""sd.sharding: decoders on logits sharded over the vocabulary and the batch (issue 17).

The multi-device checks run in a subprocess with 8 host devices
(``XLA_FLAGS=--xla_force_host_platform_device_count=8`` must be set before jax starts, so
not in this process): ``tests/sharding_worker.py`` decodes one batch with each covered case
of the shared suite on meshes (batch × vocab) 2×4, 1×8 and 4×1, and on one device; each
test below asserts, per (case, mesh): ``q`` equal to the single-device ``q`` to 1e-6, the
sampled ids identical (3 draws per row, one key), results sharded like the input, and no
all-gather in the compiled program whose operand has a vocabulary-sized dimension — with a
control program that does gather, so that the HLO assertion is seen to fail.

Default profile (~60 s of CPU): V = 256, every covered case, on the 2×4 mesh (both axes
sharded), the control and Gumbel-max draws, and the in-process checks. Full profile
(``python -m pytest -m slow tests/test_sharding.py``, ~10 min here): V = 256 and 32000,
every covered case, every mesh (1×8: vocabulary only, 4×1: batch only, 2×4: both), and the
two-process (multi-host) run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import simplex_decode as sd

ROOT = Path(__file__).resolve().parents[1]
WORKER = ROOT / "tests" / "sharding_worker.py"
COVERED = ("temperature", "greedy", "top_k", "top_p", "top_p-from_model", "min_p", "sparsemax", "entmax")
MESHES = ("2x4", "1x8", "4x1")


def _run_worker(tmp_path_factory, *args):
    out = tmp_path_factory.mktemp("sharding") / "results.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    env.pop("XLA_FLAGS", None)
    proc = subprocess.run([sys.executable, str(WORKER), *args, "--out", str(out)], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return {(r["case"], r["mesh"]): r for r in json.loads(out.read_text())}


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    return _run_worker(tmp_path_factory, "--vocab", "256", "--meshes", "2x4", "--extras")


@pytest.fixture(scope="module")
def large(tmp_path_factory):
    return _run_worker(tmp_path_factory, "--vocab", "32000", "--meshes", "2x4", "--cases", "top_p")


@pytest.fixture(scope="module")
def full(tmp_path_factory):
    return _run_worker(tmp_path_factory, "--vocab", "32000", "--meshes", ",".join(MESHES), "--extras")


@pytest.fixture(scope="module")
def full_small(tmp_path_factory):
    return _run_worker(tmp_path_factory, "--vocab", "256", "--meshes", ",".join(MESHES))


def _check(r):
    assert r["max_abs_diff"] <= 1e-6, r
    assert r["ids_equal"], r
    assert r["vocab_gathers"] == [], r["vocab_gathers"]
    assert r["largest_operand"] <= 4 * 3, r  # no collective moves more than a number per row and draw
    assert r["sharded_like_input"], r


@pytest.mark.parametrize("case", COVERED)
def test_sharded_equals_single_device(small, case):
    """Both axes sharded (2 batch × 4 vocabulary), V = 256."""
    _check(small[case, "2x4"])


@pytest.mark.slow
def test_sharded_equals_single_device_v32000(large):
    """V = 32000: the single-device top-p takes its candidate-window path, the sharded one bisects."""
    _check(large["top_p", "2x4"])


def test_gumbel_draws_equal_single_device(small):
    _check(small["top_p-gumbel", "2x4"])


def test_hlo_assertion_catches_a_logits_gather(small):
    """The control: a program that all-gathers the vocabulary is flagged."""
    assert small["control-gather", "2x4"]["vocab_gathers"], "the HLO check found no gather in a program that gathers"


@pytest.mark.slow
@pytest.mark.parametrize("mesh", MESHES)
@pytest.mark.parametrize("case", COVERED)
def test_sharded_equals_single_device_full(full, full_small, case, mesh):
    """Over the vocabulary only (1×8), the batch only (4×1) and both (2×4), V = 256 and 32000."""
    _check(full_small[case, mesh])
    _check(full[case, mesh])


# --- in this process (one device: a mesh of one) -------------------------------------------


def _mesh1():
    return sd.sharding.vocab_mesh(1, 1)


@pytest.mark.parametrize(
    "dec, component",
    [
        (sd.typical(0.9), "Typical"),
        (sd.kl_anchored(0.5), "KL"),
        (sd.best_of_k(k=4, lam=0.5, beta=1.0), "solver"),
        (sd.chain(sd.top_k(5), sd.TopP(0.9), sd.MinP(0.05)), None),
    ],
)
def test_uncovered_decoders_raise_naming_the_component(dec, component):
    logits = jnp.zeros((2, 16))
    if component is None:  # a chain of covered rules is covered
        assert sd.sharding.covers(dec)
        np.testing.assert_allclose(sd.sharding.probs(dec, logits, _mesh1()), dec.probs(logits), atol=1e-6)
        return
    assert not sd.sharding.covers(dec)
    with pytest.raises(sd.sharding.NotSharded, match=component):
        sd.sharding.probs(dec, logits, _mesh1())


def test_bad_rows_raise_eagerly_and_are_zero_under_jit():
    dec = sd.top_p(0.9)
    logits = jnp.array([[0.0, 1.0, 2.0, 3.0], [0.0, jnp.nan, 1.0, 2.0]])
    with pytest.raises(ValueError, match=r"rows \[1\]"):
        sd.sharding.probs(dec, logits, _mesh1())
    sol = jax.jit(lambda x: sd.sharding.solve(dec, x, _mesh1()))(logits)
    assert sol.status.tolist() == [sd.Status.OK, sd.Status.NONFINITE_LOGITS]
    assert float(jnp.abs(sol.q[1]).sum()) == 0.0
    ids = jax.jit(lambda x: sd.sharding.sample(dec, jax.random.key(0), x, _mesh1(), method="inverse_cdf"))(logits)
    assert int(ids[1]) == -1 and 0 <= int(ids[0]) < 4


def test_bad_arguments_name_the_parameter():
    with pytest.raises(ValueError, match="vocab"):
        sd.sharding.vocab_mesh(1, 0)
    with pytest.raises(ValueError, match="batch × vocab"):
        sd.sharding.vocab_mesh(2, len(jax.devices()))
    with pytest.raises(ValueError, match="logits"):
        sd.sharding.probs(sd.top_k(2), jnp.zeros((4,)), _mesh1())
    with pytest.raises(ValueError, match="mesh"):
        sd.sharding.probs(sd.top_k(2), jnp.zeros((2, 4)), mesh="not a mesh")
    with pytest.raises(ValueError, match="top_k: `k`"):
        sd.sharding.probs(sd.top_k(9), jnp.zeros((2, 4)), _mesh1())


@pytest.mark.slow
def test_two_processes_agree_with_one(tmp_path):
    """Multi-host: two processes on this machine (2 CPU devices each, gloo collectives) form a
    2 × 2 mesh whose vocabulary axis crosses the processes; each process's rows of q and ids
    equal the single-process answer (tests/sharding_multihost_worker.py)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = str(s.getsockname()[1])
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    env.pop("XLA_FLAGS", None)
    worker = ROOT / "tests" / "sharding_multihost_worker.py"
    procs = [subprocess.Popen([sys.executable, str(worker), str(i), port, str(tmp_path / f"p{i}.json")], env=env,
                              cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for i in range(2)]
    logs = [p.communicate(timeout=600)[0] for p in procs]
    for p, log in zip(procs, logs, strict=True):
        assert p.returncode == 0, log[-3000:]
    for i in range(2):
        res = json.loads((tmp_path / f"p{i}.json").read_text())
        assert all({pid for _, pid in row} == {0, 1} for row in res["mesh"]), res["mesh"]  # rows span both
        for name in ("top_p", "top_k", "sparsemax"):
            assert res[name]["max_abs_diff"] <= 1e-6 and res[name]["ids_equal"], (i, name, res[name])


@pytest.mark.slow
@pytest.mark.parametrize("values", (1, 2))
def test_other_parameter_values(tmp_path_factory, values):
    """The suite's second and third value sets (k = 1 with a tie at the top split over two
    shards: the cross-shard tie cut; p = 1; α = 1.2 and 3), vocabulary over 8 devices."""
    res = _run_worker(tmp_path_factory, "--vocab", "256", "--meshes", "1x8", "--values", str(values))
    for case in COVERED:
        _check(res[case, "1x8"])
