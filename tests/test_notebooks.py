"""Execute every notebook in ``notebooks/`` (nbclient), at the profile ``NOTEBOOK_PROFILE``
names (``fast`` by default: each notebook's experiment runs as a pipeline check).

Every executed notebook must have no error output, and every code cell that draws a
matplotlib figure must show it as an image. A notebook that writes experiment results
under ``$NOTEBOOK_OUT`` (the reproduction notebooks do) has them checked for
well-formedness: every estimate finite with ``lo <= mean <= hi`` — never which decoder
wins. ``NOTEBOOK_STORE=1`` writes the executed notebook, outputs included, back in place
(how the committed outputs are made). The research notebooks (metadata
``simplex_decode.outputs = "stored"``) are committed with the outputs of their full
setting; :func:`test_stored_outputs` checks those outputs without executing anything.

    python -m pytest -q tests/test_notebooks.py                 # fast profile (repro_* are -m slow)
    python -m pytest -q -m "slow or not slow" tests/test_notebooks.py   # fast profile, every notebook
    NOTEBOOK_PROFILE=full python -m pytest -q tests/test_notebooks.py   # full (hours)
    NOTEBOOK_PROFILE=full NOTEBOOK_STORE=1 python -m pytest -q tests/test_notebooks.py -k tour_of_the_simplex
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from .conftest import check_results_well_formed

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))
STORED = [p for p in NOTEBOOKS if nbformat.read(p, as_version=4).metadata.get("simplex_decode", {}).get("outputs") == "stored"]


def check_outputs(nb, name):
    """No error output; every cell that shows a matplotlib figure has an image output."""
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        outputs = cell.get("outputs", [])
        errors = [o for o in outputs if o.output_type == "error"]
        assert not errors, f"{name}, cell {i}: error output {errors[0].get('ename')}: {errors[0].get('evalue')}"
        stderr = "".join(o.get("text", "") for o in outputs if o.output_type == "stream" and o.get("name") == "stderr")
        assert "Traceback" not in stderr, f"{name}, cell {i}: a traceback on stderr"
        if "plt.show()" in cell.source:
            images = [o for o in outputs if "image/png" in o.get("data", {})]
            assert images, f"{name}, cell {i}: draws a figure but shows no image"


def _runs_param(path):
    """The reproduction notebooks (``repro_*``: 130–340 s each in the fast profile on CI's two
    cores) are ``slow``: CI checks their committed full-profile outputs
    (:func:`test_stored_outputs`) and executes the other notebooks; ``-m slow`` executes them."""
    marks = [pytest.mark.slow] if path.stem.startswith("repro_") else []
    return pytest.param(path, id=path.stem, marks=marks)


@pytest.mark.parametrize("path", [_runs_param(p) for p in NOTEBOOKS])
def test_notebook_runs(path, tmp_path, monkeypatch):
    monkeypatch.setenv("NOTEBOOK_PROFILE", os.environ.get("NOTEBOOK_PROFILE", "fast"))
    monkeypatch.setenv("NOTEBOOK_OUT", str(tmp_path))
    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=1800, kernel_name="python3",
                                     resources={"metadata": {"path": str(path.parent)}})
    client.execute()
    check_outputs(nb, path.stem)
    for results in tmp_path.rglob("results.json"):
        check_results_well_formed(json.loads(results.read_text()))
    if os.environ.get("NOTEBOOK_STORE") == "1":
        if "simplex_decode" in nb.metadata:  # which setting the stored outputs come from
            nb.metadata["simplex_decode"]["profile"] = os.environ["NOTEBOOK_PROFILE"]
        nbformat.write(nb, path)


@pytest.mark.parametrize("path", STORED, ids=[p.stem for p in STORED])
def test_stored_outputs(path):
    """The committed outputs are those of a complete run: every code cell ran, in order, in
    the full setting, without error, and every figure is there."""
    nb = nbformat.read(path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    counts = [c.get("execution_count") for c in code]
    assert counts == list(range(1, len(code) + 1)), f"{path.stem}: not one complete run (execution counts {counts})"
    check_outputs(nb, path.stem)
    assert nb.metadata.get("simplex_decode", {}).get("profile") == "full", f"{path.stem}: outputs not from the full setting"
