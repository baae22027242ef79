"""A griffe extension for the API reference: the package's docstrings use a few reST
constructs (``literal``, :role:`target`, ``.. math::`` blocks); turn them into the
Markdown mkdocstrings renders. Nothing else is changed."""

from __future__ import annotations

import re

import griffe

_ROLE = re.compile(r":(?:py:)?(class|func|meth|mod|data|attr|obj|exc):`(~?)([^`<]*?)(?:\s*<([^>]*)>)?`")
_MATH_ROLE = re.compile(r":math:`([^`]*)`")


def _role(m: re.Match) -> str:
    _, tilde, text, target = m.groups()
    if target:
        return f"`{text.strip()}`"
    text = text.strip()
    return f"`{text.rsplit('.', 1)[-1] if tilde else text}`"


def convert(text: str) -> str:
    """reST roles → code spans, ``.. math::`` blocks → ``$$…$$``, ``:math:`` → ``$…$``."""
    out, lines, i = [], text.splitlines(), 0
    while i < len(lines):
        line = lines[i]
        if line.strip().startswith(".. math::"):
            indent = len(line) - len(line.lstrip())
            body, i = [], i + 1
            while i < len(lines) and (not lines[i].strip() or len(lines[i]) - len(lines[i].lstrip()) > indent):
                body.append(lines[i].strip())
                i += 1
            formula = " ".join(b for b in body if b)
            out += [" " * indent + "$$", " " * indent + formula, " " * indent + "$$", ""]
            continue
        if line.strip() == "Example:":  # Google style's section is "Examples:" (doctests as code)
            line = line.replace("Example:", "Examples:")
        line = _MATH_ROLE.sub(r"$\1$", line)
        out.append(_ROLE.sub(_role, line))
        i += 1
    return "\n".join(out)


class RestToMarkdown(griffe.Extension):
    def on_instance(self, *, obj, **kwargs) -> None:
        if obj.docstring is not None:
            obj.docstring.value = convert(obj.docstring.value)
