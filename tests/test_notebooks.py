"""Execute every notebook in ``notebooks/`` (nbclient), at the profile ``NOTEBOOK_PROFILE``
names (``fast`` by default: each notebook's experiment runs as a pipeline check).

A notebook that writes experiment results under ``$NOTEBOOK_OUT`` (the reproduction
notebooks do) has them checked for well-formedness: every estimate finite with
``lo <= mean <= hi`` — never which decoder wins. ``NOTEBOOK_STORE=1`` writes the executed
notebook, outputs included, back in place (how the committed outputs are made).

    python -m pytest -q tests/test_notebooks.py                 # fast profile
    NOTEBOOK_PROFILE=full python -m pytest -q tests/test_notebooks.py   # full (hours)
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


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(path, tmp_path, monkeypatch):
    monkeypatch.setenv("NOTEBOOK_PROFILE", os.environ.get("NOTEBOOK_PROFILE", "fast"))
    monkeypatch.setenv("NOTEBOOK_OUT", str(tmp_path))
    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=1800, kernel_name="python3",
                                     resources={"metadata": {"path": str(path.parent)}})
    client.execute()
    for results in tmp_path.rglob("results.json"):
        check_results_well_formed(json.loads(results.read_text()))
    if os.environ.get("NOTEBOOK_STORE") == "1":
        nbformat.write(nb, path)
