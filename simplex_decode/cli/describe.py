"""Readable descriptions for the terminal: docstrings as plain text, objectives as one-liners.

``simplex-decode decoders`` prints, for every preset, its signature, the first paragraph
of its docstring without reST markup, the objective it solves (rendered from an example
decoder built from :data:`EXAMPLES`), and that example as a SPEC.
"""

from __future__ import annotations

import dataclasses
import inspect
import re

import numpy as np

__all__ = ["EXAMPLES", "plain_text", "summary", "declared_ranges", "describe_objective", "component_text"]

#: One example SPEC per preset (``simplex-decode decoders`` shows it and the objective it
#: solves; tests/test_cli.py checks that every preset has one and that each builds).
EXAMPLES = {
    "greedy": "greedy",
    "temperature": "temperature(t=0.7)",
    "top_k": "top_k(k=50, temperature=0.7)",
    "top_p": "top_p(p=0.9, temperature=0.7)",
    "min_p": "min_p(p=0.1, temperature=0.7)",
    "sparsemax": "sparsemax(temperature=0.7)",
    "entmax": "entmax(alpha=1.5, temperature=0.7)",
    "kl_anchored": "kl_anchored(lam=0.5, temperature=0.7)",
    "typical": "typical(p=0.9)",
    "epsilon": "epsilon(eps=0.0003)",
    "eta": "eta(eps=0.0003)",
    "top_n_sigma": "top_n_sigma(n=1.0)",
    "top_h": "top_h(h=0.4)",
    "top_a": "top_a(a=0.2)",
    "edt": "edt(t0=1.0, theta=1.0, n=0.8)",
    "dynamic_temperature": "dynamic_temperature(t_min=0.5, t_max=1.5)",
    "entropix": "entropix()",
    "best_of_k": "best_of_k(k=8, lam=0.2, beta=0.02, temperature=0.8)",
    "capped": "capped(c=0.5, temperature=0.7)",
    "js_anchored": "js_anchored(lam=1.0, temperature=0.7)",
    "tsallis_coverage": "tsallis_coverage(k=4, alpha=1.5, lam=1.0, beta=0.5)",
    "mirostat": "mirostat(tau=5.0, eta=0.1, version=2)",
    "xtc": "xtc(threshold=0.1, probability=0.5)",
    "cfg": "cfg(guidance_scale=1.5)",
    "contrastive": "contrastive(alpha=0.1, beta=0.5)",
    "dola": "dola(alpha=0.1, repetition_penalty=1.2)",
}

_ROLE = re.compile(r":[a-zA-Z:]+:`(~?)([^`<]*?)(?:\s*<([^>]*)>)?`")
_LITERAL = re.compile(r"``((?:(?!\n\n).)+?)``", re.S)  # may span lines, not paragraphs
_DEFAULT_ROLE = re.compile(r"(?<![`\w])`([^`]+)`(?!`)")


def plain_text(doc: str) -> str:
    """reST docstring text as plain text: roles and literals unwrapped, ``.. math::``
    directives reduced to their formula, other directives and doctest examples dropped."""

    def role(m):
        tilde, text, target = m.groups()
        if target:
            return text.strip()
        return text.rsplit(".", 1)[-1] if tilde else text

    out, skip_indent = [], None
    for line in inspect.cleandoc(doc or "").splitlines():
        stripped = line.strip()
        indent = len(line) - len(line.lstrip())
        if skip_indent is not None:
            if stripped and indent <= skip_indent:
                skip_indent = None
            else:
                continue
        if stripped.startswith(".. math::"):  # keep the formula (LaTeX), drop the directive
            continue
        if stripped.startswith(".. ") or stripped.startswith(">>>") or stripped in ("Example:", "Examples:"):
            skip_indent = indent
            continue
        out.append(line)
    # on the whole text: literals and roles may span lines
    text = _DEFAULT_ROLE.sub(r"\1", _LITERAL.sub(r"\1", _ROLE.sub(role, "\n".join(out))))
    text = text.replace("\\\\", "\\")
    return re.sub(r"\n{3,}", "\n\n", text).strip()


def summary(fn) -> str:
    """The first paragraph of ``fn``'s docstring as one line of plain text (never cut)."""
    text = plain_text(inspect.getdoc(fn) or "")
    first = text.split("\n\n", 1)[0]
    return " ".join(first.split())


def declared_ranges(fn) -> str:
    """What each declared argument of a preset or component must be, from its
    ``__params__`` declarations (``"p: in (0, 1]; temperature: in [0, inf)"``; "" if none)."""
    declared = getattr(fn, "__params__", None) or {}
    return "; ".join(f"{n}: {p.requirement().removeprefix('must be ')}" for n, p in declared.items())


def _number(v) -> str:
    a = np.asarray(v)
    if a.ndim:
        return f"array{list(a.shape)}"
    x = a.item()
    if isinstance(x, float):
        return str(np.float32(x)) if a.dtype == np.float32 else repr(x)
    return repr(x)


def component_text(obj, *, skip=()) -> str:
    """``Name(field=value, ...)``: every field but None ones, flags at their defaults, a
    ``min_keep`` of 1 (which changes nothing) and ``skip``; arrays shown by their shape."""
    parts = []
    for f in dataclasses.fields(obj):
        if not f.init or f.name in skip:
            continue
        v = getattr(obj, f.name)
        if v is None or (isinstance(v, bool) and f.default is not dataclasses.MISSING and v == f.default):
            continue
        if f.name == "min_keep" and np.ndim(v) == 0 and int(v) == 1:
            continue
        if dataclasses.is_dataclass(v):
            parts.append(f"{f.name}={component_text(v)}")
        elif isinstance(v, (str, bool)):
            parts.append(f"{f.name}={v!r}")
        else:
            parts.append(f"{f.name}={_number(v)}")
    return f"{type(obj).__name__}({', '.join(parts)})"


def describe_objective(decoder) -> list[str]:
    """The problem a decoder solves, as lines of plain text (label, text)."""
    from ..solvers.auto import Auto

    obj = decoder.objective
    terms = " + ".join(f"{_number(t.weight)}·{component_text(t, skip=('weight',))}" for t in obj.terms)
    lines = [("maximise", f"<q, s> + {terms}" if terms else "<q, s>   (linear: the argmax)")]
    support = " then ".join(component_text(r) for r in obj.support) if obj.support else "every token"
    lines.append(("over", f"q in the simplex with supp q in: {support}"))
    if obj.support_at is not None:
        at = ", ".join(f"{type(r).__name__} after {a} transform(s)" for r, a in zip(obj.support, obj.support_at, strict=True))
        lines.append(("rules read", f"the scores as they stand in the chain: {at}"))
    scores = "logits"
    for t in obj.transforms:
        scores = f"{component_text(t)}({scores})"
    lines.append(("scores", f"s = {scores}"))
    solver = decoder.solver
    chosen = solver.select(obj) if isinstance(solver, Auto) else None
    name = component_text(solver)
    lines.append(("solver", f"{name} -> {component_text(chosen)}" if chosen is not None else name))
    return lines
