"""Decoder SPECs: call-like strings such as ``top_p(p=0.9, temperature=0.7)``, parsed with
:mod:`ast` (never evaluated) over the allow-list :data:`simplex_decode.presets.PRESETS`."""

from __future__ import annotations

import ast
import inspect
from typing import Any

__all__ = ["CLIError", "available_presets", "parse_spec", "build_decoder", "signature_text"]

_MAX_SPEC_CHARS = 1000


class CLIError(Exception):
    """A user error: printed as ``simplex-decode: error: …`` with exit status 2."""


def available_presets() -> dict[str, Any]:
    """``{name: preset function}``: the allow-list a SPEC may name (``decoders.PRESETS``)."""
    from ..presets import PRESETS

    return dict(PRESETS)


def _literal(node: ast.AST, what: str, spec: str):
    try:
        value = ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        src = ast.get_source_segment(spec, node) or ast.dump(node)
        raise ValueError(
            f"{what} must be a literal (a number, string, True/False/None, or a list/tuple of them), got {src!r}"
        ) from None

    def ok(v):
        if v is None or isinstance(v, (bool, int, float, str)):
            return True
        return isinstance(v, (list, tuple)) and all(ok(x) for x in v)

    if not ok(value):
        raise ValueError(f"{what} must be a number, string, True/False/None, or a list/tuple of them, got {value!r}")
    return value


def parse_spec(spec: str) -> tuple[str, tuple, dict]:
    """``"top_p(p=0.9, temperature=0.7)"`` → ``("top_p", (), {"p": 0.9, "temperature": 0.7})``.

    Only the syntax ``NAME`` or ``NAME(literal, ..., key=literal, ...)`` is accepted;
    nothing is evaluated (``ast.literal_eval`` on each argument). Raises ``ValueError``
    explaining what is wrong.

    Example:
      >>> parse_spec("top_k(5, temperature=0.5)")
      ('top_k', (5,), {'temperature': 0.5})
      >>> parse_spec("__import__('os').system('ls')")
      Traceback (most recent call last):
      ...
      ValueError: decoder spec: expected NAME or NAME(arg=value, ...), got "__import__('os').system('ls')"
    """
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError("decoder spec: must be a non-empty string such as 'greedy' or 'top_p(p=0.9)'")
    if len(spec) > _MAX_SPEC_CHARS:
        raise ValueError(f"decoder spec: longer than {_MAX_SPEC_CHARS} characters")
    spec = spec.strip()
    usage = f"decoder spec: expected NAME or NAME(arg=value, ...), got {spec!r}"
    try:
        tree = ast.parse(spec, mode="eval")
    except SyntaxError:
        raise ValueError(usage) from None
    body = tree.body
    if isinstance(body, ast.Name):
        return body.id, (), {}
    if not isinstance(body, ast.Call) or not isinstance(body.func, ast.Name):
        raise ValueError(usage)
    name = body.func.id
    args = []
    for i, a in enumerate(body.args):
        if isinstance(a, ast.Starred):
            raise ValueError(f"decoder spec: *arguments are not allowed in {spec!r}")
        args.append(_literal(a, f"argument {i + 1} of {name}", spec))
    kwargs = {}
    for kw in body.keywords:
        if kw.arg is None:
            raise ValueError(f"decoder spec: **arguments are not allowed in {spec!r}")
        if kw.arg in kwargs:
            raise ValueError(f"decoder spec: parameter {kw.arg!r} given twice in {spec!r}")
        kwargs[kw.arg] = _literal(kw.value, f"parameter {kw.arg!r} of {name}", spec)
    return name, tuple(args), kwargs


def signature_text(fn) -> str:
    try:
        return str(inspect.signature(fn))
    except (TypeError, ValueError):
        return "(...)"


def build_decoder(spec: str):
    """The :class:`simplex_decode.Decoder` a SPEC names (see :func:`parse_spec`).

    Unknown preset names and parameters raise ``ValueError`` listing the valid ones; bad
    parameter values raise the preset's own ``ValueError`` (naming parameter and range).

    Example:
      >>> build_decoder("top_p(p=0.9, temperature=0.7)").objective.support[0].__class__.__name__
      'TopP'
      >>> build_decoder("top_p(q=0.9)")
      Traceback (most recent call last):
      ...
      ValueError: decoder 'top_p' has no parameter 'q'; its parameters are: p, temperature, from_model
    """
    from ..decoder import Decoder

    name, args, kwargs = parse_spec(spec)
    presets = available_presets()
    if name not in presets:
        raise ValueError(f"unknown decoder {name!r}; valid decoders: {', '.join(presets)}")
    fn = presets[name]
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):  # pragma: no cover - every preset is a Python function
        sig = None
    if sig is not None:
        params = sig.parameters
        names = [p for p, v in params.items() if v.kind not in (v.VAR_POSITIONAL, v.VAR_KEYWORD)]
        if not any(v.kind == v.VAR_KEYWORD for v in params.values()):
            for k in kwargs:
                if k not in params:
                    raise ValueError(
                        f"decoder {name!r} has no parameter {k!r}; its parameters are: {', '.join(names) or '(none)'}"
                    )
        try:
            sig.bind(*args, **kwargs)
        except TypeError as e:
            raise ValueError(f"decoder {name!r}: {e}; signature: {name}{signature_text(fn)}") from None
    try:
        dec = fn(*args, **kwargs)
    except TypeError as e:
        raise ValueError(f"decoder {name!r}: {e}; signature: {name}{signature_text(fn)}") from None
    if not isinstance(dec, Decoder):  # pragma: no cover - presets return Decoders
        raise ValueError(f"decoder {name!r} did not return a Decoder")
    return dec
