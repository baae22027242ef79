"""The package's import graph: arrows point down, no cycles, no private names across modules.

* no import cycles among the modules of ``simplex_decode`` (a package's ``__init__``
  re-exporting its children is not a cycle);
* a module never imports a private name (``_x``) from another *public* module; private
  modules (``_window``, ``generation._common``) exist to be shared and may be imported;
* the core (declarations, solvers, decoders) never imports cvxpy, torch, transformers or gguf
  at module level, and declarations never import solvers.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "simplex_decode"


def _modules():
    mods = {}
    for path in ROOT.rglob("*.py"):
        rel = path.relative_to(ROOT.parent).with_suffix("")
        parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
        mods[".".join(parts)] = path
    return mods


MODULES = _modules()


def _package(mod):
    return mod if MODULES[mod].name == "__init__.py" else mod.rsplit(".", 1)[0]


def _imports(mod, *, top_level_only=False):
    """[(imported module, imported name or None, line)] for each import in ``mod``."""
    tree = ast.parse(MODULES[mod].read_text())
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    out = []
    for node in nodes:
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = _package(mod).split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                if sub in MODULES:
                    out.append((sub, None, node.lineno))
                else:
                    out.append((target, alias.name, node.lineno))
        elif isinstance(node, ast.Import):
            out.extend((alias.name, None, node.lineno) for alias in node.names)
    return out


def _graph():
    g = {}
    for mod in MODULES:
        deps = set()
        for target, _, _ in _imports(mod):
            if target in MODULES and target != mod:
                # a package importing its own children is re-exporting, not depending
                if not (MODULES[mod].name == "__init__.py" and target.startswith(mod + ".")):
                    deps.add(target)
        g[mod] = deps
    return g


def test_no_import_cycles():
    g = _graph()
    state, stack, cycles = {}, [], []

    def visit(u):
        state[u] = 1
        stack.append(u)
        for v in sorted(g[u]):
            # importing a parent package is importing its re-exports, which may include u
            if u.startswith(v + "."):
                continue
            if state.get(v) == 1:
                cycles.append(stack[stack.index(v):] + [v])
            elif not state.get(v):
                visit(v)
        stack.pop()
        state[u] = 2

    for mod in sorted(g):
        if not state.get(mod):
            visit(mod)
    assert cycles == [], "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def _is_private_module(mod):
    return any(part.startswith("_") and part != "__init__" for part in mod.split("."))


def test_no_private_names_from_public_modules():
    bad = []
    for mod in MODULES:
        for target, name, line in _imports(mod):
            if target in MODULES and name and name.startswith("_") and not _is_private_module(target):
                bad.append(f"{MODULES[mod].relative_to(ROOT.parent)}:{line} imports {name} from {target}")
    assert bad == [], "\n".join(bad)


_HEAVY = ("cvxpy", "torch", "transformers", "gguf", "matplotlib", "tokenizers", "outlines_core", "llguidance",
          "jsonschema")
_CORE = ("objective", "terms", "supports", "scores", "history", "adaptive", "decoder", "presets", "chain",
         "status", "sampling", "analysis", "reference", "solvers", "generation", "_pytree", "_select", "_window",
         "constraints")


@pytest.mark.parametrize("mod", sorted(m for m in MODULES if m.split(".")[1:2] and m.split(".")[1] in _CORE))
def test_core_does_not_import_heavy_dependencies_at_module_level(mod):
    heavy = [t for t, _, _ in _imports(mod, top_level_only=True) if t.split(".")[0] in _HEAVY]
    assert heavy == [], f"{mod} imports {heavy} at module level"


@pytest.mark.parametrize("mod", ["objective", "terms", "supports", "scores", "history", "adaptive"])
def test_declarations_never_import_solvers(mod):
    name = f"simplex_decode.{mod}"
    deps = {t for t, _, _ in _imports(name)}
    assert not any(d.startswith("simplex_decode.solvers") or d.startswith("simplex_decode.generation")
                   for d in deps), deps
