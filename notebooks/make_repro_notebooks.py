"""Write the notebooks: the reproduction notebooks ``notebooks/repro_*.ipynb`` (from the
specs below) and the research notebooks ``notebooks/<name>.ipynb`` (from the cell sources
``notebooks/src/<name>.py``, in the percent format: ``# %%`` starts a code cell,
``# %% [markdown]`` a markdown cell whose lines are ``# ``-prefixed). Then execute them to
store their outputs.

Each notebook runs its experiment at the profile named by the ``NOTEBOOK_PROFILE``
environment variable (``fast`` by default: the pipeline check CI runs; ``full``: the
reproduction, long), shows that run's tables, then presents the committed full-profile
results (both seeds, their plots and the cross-seed check) and the conclusion.

    python notebooks/make_repro_notebooks.py
    NOTEBOOK_PROFILE=fast python -m pytest -q tests/test_notebooks.py --store-outputs

The research notebooks are committed *with* the outputs of their full setting (their
metadata says so: ``simplex_decode.outputs = "stored"``, which tests/test_notebooks.py checks):

    python notebooks/make_repro_notebooks.py
    NOTEBOOK_PROFILE=full NOTEBOOK_STORE=1 python -m pytest -q tests/test_notebooks.py -k tour_of_the_simplex
"""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).parent

SETUP = '''import os, sys, json, tempfile
from pathlib import Path
from IPython.display import Markdown, Image, display

PROFILE = os.environ.get("NOTEBOOK_PROFILE", "fast")  # "fast": pipeline check; "full": the reproduction
ROOT = Path.cwd()
while not (ROOT / "experiments").is_dir():
    ROOT = ROOT.parent
sys.path.insert(0, str(ROOT / "experiments"))
RESULTS = ROOT / "experiments" / "results"
OUT = Path(os.environ.get("NOTEBOOK_OUT") or tempfile.mkdtemp()) / "{name}"
print("profile:", PROFILE)'''

RUN = '''import {name}
results = {name}.main(["--profile", PROFILE, "--seed", "0", "--out", str(OUT)])
display(Markdown((OUT / "tables.md").read_text()))'''

COMMITTED = '''for seed in (0, 1):
    d = RESULTS / "{name}" / f"seed{{seed}}"
    if (d / "results.json").exists():
        run = json.loads((d / "results.json").read_text())["run"]
        display(Markdown(f"### Committed full run, seed {{seed}} "
                         f"(wall {{run['wall_seconds']:.0f}} s, CPU {{run['cpu_seconds']:.0f}} s, "
                         f"load average {{run['load_average_start'][0]}} on {{run['cpu_count']}} cores)"))
        display(Markdown((d / "tables.md").read_text()))
        for png in sorted(d.glob("*.png")):
            display(Image(filename=str(png)))
    else:
        print(f"no committed full run for seed {{seed}}")
rep = RESULTS / "{name}" / "reproducibility.md"
if rep.exists():
    display(Markdown(rep.read_text()))'''

NOTEBOOKS = {
    "best_of_k": dict(
        title="Best-of-K (arXiv 2602.18292): where does the gain come from?",
        intro="""The paper reports that its Best-of-K (BoK) decoder — KL to the model plus a K-coverage bonus, solved by
5 steps of mirror ascent — raises accuracy at high temperature (e.g. MATH500 at τ = 0.9, 53.0 → 71.6). It omits the
ablation that separates the coverage term from the temperature drop that truncated mirror ascent performs anyway:
with β = 0, `q_J ∝ p·exp(c_J·s)`, `c_J = (1 − (1 − ηλ)^J)/λ`. This notebook runs that ablation, on a small model
trained with `simplex_decode.lab` to mid accuracy on 3-digit addition and on SmolLM2-135M-Instruct's one-token question
sets. The script: `experiments/best_of_k.py` (its docstring states every setting).""",
        extra=[("SmolLM2 question sets (measured before use)",
                '''t = RESULTS / "smollm_sets" / "tables.md"
display(Markdown(t.read_text()) if t.exists() else "not measured yet: python experiments/smollm_sets.py --profile full")''')],
        conclusion_file="best_of_k",
    ),
    "path_star": dict(
        title="The path-star task: the pitfall of next-token prediction",
        intro="""Bachmann & Nagarajan (2024) argue that teacher-forced next-token prediction fails on path-star graphs:
the model learns a "Clever Hans" shortcut for every token after the first decision and stays at chance (1/degree) on
that decision, so no decoder can rescue it; teacherless training and reversed targets fix it. This notebook trains
next-token, teacherless, reversed and multi-token models on the same graphs and runs greedy, beam, lookahead,
temperature, top-p and Best-of-K decoding on each, with the paper's diagnostics. The script:
`experiments/path_star.py`.""",
        extra=[],
        conclusion_file="path_star",
    ),
    "mtp": dict(
        title="Multi-token prediction and self-speculative decoding",
        intro="""Gloeckle et al. (2024) train n output heads on a shared trunk (head i predicts i + 1 tokens ahead) and
report gains on algorithmic tasks, plus self-speculative decoding with the extra heads. This notebook compares
next-token and multi-token models (n = 2, 4) at equal training FLOPs on 3-digit addition and path-star, and measures
self-speculative decoding — which, with the rejection rule applied to the *decoder's* q, samples exactly from the
decoder (tested by a chi-square test in `tests/test_lab_speculative.py`). The script: `experiments/mtp.py`. The lab's
training check (3-digit addition to ≥ 95 % on CPU, `experiments/addition.py`) is shown first.""",
        extra=[("The lab's training check: 3-digit addition",
                '''for d in sorted((RESULTS / "addition").glob("seed*")):
    if (d / "tables.md").exists():
        display(Markdown((d / "tables.md").read_text()))'''),
               ("Path-star: next-token vs multi-token at equal training FLOPs (trained by experiments/path_star.py)",
                '''for seed in (0, 1):
    f = RESULTS / "path_star" / f"seed{seed}" / "results.json"
    if not f.exists():
        continue
    r = json.loads(f.read_text())
    rows = ["| model | heads | steps | greedy accuracy (%) |", "|---|---|---|---|"]
    for m in ("ntp", "mtp2", "mtp4"):
        if m in r["models"]:
            v = r["models"][m]
            e = v["decoders"]["greedy"]["single"]
            rows.append(f"| {m} | {v['config']['mtp_heads']} | {v['steps']} | "
                        f"{100 * e['mean']:.1f} [{100 * e['lo']:.1f}, {100 * e['hi']:.1f}] |")
    display(Markdown(f"Seed {seed}:\\n\\n" + "\\n".join(rows)))''')],
        conclusion_file="mtp",
    ),
}


def conclusion_cell(name):
    return new_code_cell(f'''c = RESULTS / "{name}" / "conclusion.md"
display(Markdown(c.read_text()) if c.exists() else "no conclusion written yet")''')


KERNEL = {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}}


def cells_from_script(text):
    """Notebook cells from a percent-format script (``# %%`` / ``# %% [markdown]`` markers)."""
    cells, kind, lines = [], None, []

    def flush():
        body = "\n".join(lines).strip("\n")
        if kind == "markdown":
            body = "\n".join(line[2:] if line.startswith("# ") else line.lstrip("#") for line in body.splitlines())
            cells.append(new_markdown_cell(body))
        elif kind == "code" and body:
            cells.append(new_code_cell(body))

    for line in text.splitlines():
        if line.startswith("# %%"):
            flush()
            kind, lines = ("markdown" if "[markdown]" in line else "code"), []
        elif kind is not None:
            lines.append(line)
    flush()
    return cells


def build_research(src):
    """``notebooks/<name>.ipynb`` from ``notebooks/src/<name>.py`` (outputs: run it, stored)."""
    nb = new_notebook(cells=cells_from_script(src.read_text()),
                      metadata={**KERNEL, "simplex_decode": {"outputs": "stored"}})
    path = HERE / f"{src.stem}.ipynb"
    nbformat.write(nb, path)
    return path


def build(name, spec):
    cells = [new_markdown_cell(f"# {spec['title']}\n\n{spec['intro']}"),
             new_code_cell(SETUP.format(name=name))]
    for title, code in spec["extra"]:
        cells += [new_markdown_cell(f"## {title}"), new_code_cell(code)]
    cells += [new_markdown_cell("## This run\n\nAt `PROFILE = \"fast\"` a pipeline check only: a few training steps and "
                                "tiny sets, whose numbers mean nothing. At `\"full\"` the reproduction (long)."),
              new_code_cell(RUN.format(name=name)),
              new_markdown_cell("## The committed full-profile runs (two seeds) and their cross-seed check"),
              new_code_cell(COMMITTED.format(name=name)),
              new_markdown_cell("## What the evidence supports"),
              conclusion_cell(spec["conclusion_file"])]
    nb = new_notebook(cells=cells, metadata=KERNEL)
    path = HERE / f"repro_{name}.ipynb"
    nbformat.write(nb, path)
    return path


if __name__ == "__main__":
    import sys

    only = sys.argv[1:]  # names to build (default: all)
    for name, spec in NOTEBOOKS.items():
        if not only or name in only:
            print(build(name, spec))
    for src in sorted((HERE / "src").glob("*.py")):
        if not only or src.stem in only:
            print(build_research(src))
