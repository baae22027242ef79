"""The codec behind :mod:`simplex_decode.config`: components ↔ plain data ↔ SPEC text.

This module knows the *syntax* only — which classes and preset names exist is the business
of :mod:`simplex_decode.config` — so :meth:`Decoder.to_config` can use it without the
decoder module depending on the presets above it.

* :func:`encode` writes any component (a dataclass of simplex_decode: a Decoder, Objective,
  term, support rule, score transform or solver) as a *node*
  ``{"type": ClassName, field: value, ...}`` with every constructor field
  (``dataclasses.fields`` with ``init=True``), recursively. Arrays become
  ``{"type": "array", "dtype": ..., "data": nested lists}`` (``"shape"`` too when empty;
  non-finite entries as the strings ``"inf"``, ``"-inf"``, ``"nan"``); 0-d float32 / int32 /
  bool arrays become plain numbers, float32 values written with the shortest decimal that
  reads back to the same float32.
* :func:`format_spec` writes a node as the call ``ClassName(field=value, ...)``
  (arrays as ``array([...], dtype='float32')``, non-finite values as ``inf`` / ``nan``).
* :func:`parse_spec` and :func:`from_plain` read SPEC text and nodes into a tree of
  :class:`Call` objects, which :mod:`simplex_decode.config` builds. Nothing is evaluated:
  SPEC text is parsed with :mod:`ast` and only calls of bare names, literals, lists,
  ``inf`` and ``nan`` are accepted.
"""

from __future__ import annotations

import ast
import dataclasses
import math
from typing import Any, NamedTuple

import jax
import numpy as np

__all__ = ["VERSION", "Call", "encode", "to_config", "format_spec", "parse_spec", "from_plain"]

#: The version every config written by this simplex_decode carries (``config["version"]``).
VERSION = 1

_NONFINITE = {"inf": math.inf, "-inf": -math.inf, "nan": math.nan}


class Call(NamedTuple):
    """A parsed node: ``name(*args, **kwargs)``; ``path`` locates it for error messages."""

    name: str
    args: tuple
    kwargs: dict
    path: str


# --------------------------------------------------------------------------------------
# components -> plain data
# --------------------------------------------------------------------------------------


def _float_text(x: float) -> str:
    return "nan" if math.isnan(x) else ("inf" if x > 0 else "-inf")


def _float32_values(a: np.ndarray) -> list:
    """float32 entries as the shortest decimals that read back to the same float32."""
    flat = a.ravel()
    out = [float(str(v)) if np.isfinite(v) else _float_text(float(v)) for v in flat]
    back = np.array([v if isinstance(v, float) else 0.0 for v in out], np.float64).astype(np.float32)
    for i in np.flatnonzero((back != flat) & np.isfinite(flat)):  # double rounding: keep the exact value
        out[i] = float(flat[i])
    return out


def _encode_array(a: np.ndarray, path: str):
    kind = a.dtype.kind
    if a.ndim == 0:
        v = a.item()
        if a.dtype == np.float32 and math.isfinite(v):
            return _float32_values(a)[0]
        if a.dtype == np.int32 or a.dtype == np.bool_:
            return v
    if kind == "f" or a.dtype.name == "bfloat16":
        if a.dtype == np.float32:
            values = _float32_values(a)
        else:
            values = [float(v) if math.isfinite(v) else _float_text(float(v)) for v in a.astype(np.float64).ravel()]
    elif kind in "iub":
        values = a.ravel().tolist()
    else:
        raise ValueError(f"{path}: arrays of dtype {a.dtype} cannot be written as plain data")
    data = np.array(values, dtype=object).reshape(a.shape).tolist() if a.ndim else values[0]
    node = {"type": "array", "dtype": a.dtype.name, "data": data}
    if a.size == 0:
        node["shape"] = list(a.shape)
    return node


def encode(obj: Any, path: str = "config") -> Any:
    """``obj`` (a component, or a value one holds) as plain data: dicts, lists, numbers,
    strings, booleans and None (see the module docstring)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        node = {"type": type(obj).__name__}
        for f in dataclasses.fields(obj):
            if f.init:
                node[f.name] = encode(getattr(obj, f.name), f"{path}.{f.name}")
        return node
    if obj is None or isinstance(obj, (bool, str, int)):
        return obj
    if isinstance(obj, float):
        if not math.isfinite(obj):
            raise ValueError(f"{path}: the non-finite float {obj!r} cannot be written as plain data")
        return obj
    if isinstance(obj, (list, tuple)):
        return [encode(x, f"{path}[{i}]") for i, x in enumerate(obj)]
    if isinstance(obj, jax.core.Tracer):
        raise ValueError(f"{path}: a traced value (inside jit/vmap) cannot be written as plain data")
    if isinstance(obj, (np.ndarray, np.generic, jax.Array)):
        return _encode_array(np.asarray(obj), path)
    raise ValueError(f"{path}: a {type(obj).__name__} cannot be written as plain data")


def to_config(obj: Any) -> dict:
    """``{"version": VERSION, **encode(obj)}`` for a component ``obj``."""
    if not dataclasses.is_dataclass(obj) or isinstance(obj, type):
        raise ValueError(f"to_config: expected a simplex_decode component (e.g. a Decoder), got {type(obj).__name__}")
    return {"version": VERSION, **encode(obj)}


# --------------------------------------------------------------------------------------
# plain data -> SPEC text
# --------------------------------------------------------------------------------------


def _spec_value(v: Any) -> str:
    if isinstance(v, dict):
        kind = v.get("type")
        if kind == "array":
            return _spec_array(v)
        args = ", ".join(f"{k}={_spec_value(x)}" for k, x in v.items() if k != "type")
        return f"{kind}({args})"
    if isinstance(v, list):
        return "[" + ", ".join(_spec_value(x) for x in v) + "]"
    if isinstance(v, float):
        return repr(v) if math.isfinite(v) else ("nan" if math.isnan(v) else ("inf" if v > 0 else "-inf"))
    return repr(v)


def _spec_array(node: dict) -> str:
    def data(x):
        if isinstance(x, list):
            return "[" + ", ".join(data(y) for y in x) + "]"
        if isinstance(x, str) and x in _NONFINITE:
            return x
        return repr(x)

    extra = f", shape={node['shape']!r}" if "shape" in node else ""
    return f"array({data(node['data'])}, dtype={node['dtype']!r}{extra})"


def format_spec(node: Any) -> str:
    """The SPEC text (a call expression) of an encoded node (``encode(obj)``)."""
    return _spec_value(node)


# --------------------------------------------------------------------------------------
# SPEC text -> Call tree
# --------------------------------------------------------------------------------------


def _join(path: str, part: str) -> str:
    return f"{path}{part}" if part.startswith("[") else (f"{path}.{part}" if path else part)


_LITERALS = "a number, string, True/False/None, inf, nan, a list of them, or a call NAME(...)"


def _spec_node(node: ast.AST, spec: str, path: str, what: str):
    if isinstance(node, ast.Constant):
        if node.value is None or isinstance(node.value, (bool, int, float, str)):
            return node.value
    elif isinstance(node, ast.Name) and node.id in ("inf", "nan"):
        return math.inf if node.id == "inf" else math.nan
    elif isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        v = _spec_node(node.operand, spec, path, what)
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            return -v if isinstance(node.op, ast.USub) else v
    elif isinstance(node, (ast.List, ast.Tuple)):
        items = [_spec_node(x, spec, _join(path, f"[{i}]"), what) for i, x in enumerate(node.elts)]
        return items if isinstance(node, ast.List) else tuple(items)
    elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
        name = node.func.id
        args = []
        for i, a in enumerate(node.args):
            if isinstance(a, ast.Starred):
                raise ValueError(f"{what}: *arguments are not allowed in {spec!r}")
            args.append(_spec_node(a, spec, _join(path, f"args[{i}]"), what))
        kwargs = {}
        for kw in node.keywords:
            if kw.arg is None:
                raise ValueError(f"{what}: **arguments are not allowed in {spec!r}")
            if kw.arg in kwargs:
                raise ValueError(f"{what}: parameter {kw.arg!r} given twice in {spec!r}")
            kwargs[kw.arg] = _spec_node(kw.value, spec, _join(path, kw.arg), what)
        return Call(name, tuple(args), kwargs, path)
    src = ast.get_source_segment(spec, node) or ast.dump(node)
    where = f" ({path})" if path else ""
    raise ValueError(f"{what}{where}: expected {_LITERALS}, got {src!r}")


def parse_spec(spec: str, *, what: str = "decoder spec", max_chars: int | None = None) -> Call:
    """SPEC text → a :class:`Call` tree; nothing is evaluated (see the module docstring).

    Example:
      >>> parse_spec("top_k(5, temperature=0.5)")[:3]
      ('top_k', (5,), {'temperature': 0.5})
      >>> parse_spec("__import__('os').system('ls')")
      Traceback (most recent call last):
      ...
      ValueError: decoder spec: expected NAME or NAME(arg=value, ...), got "__import__('os').system('ls')"
    """
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"{what}: must be a non-empty string such as 'greedy' or 'top_p(p=0.9)'")
    if max_chars is not None and len(spec) > max_chars:
        raise ValueError(f"{what}: longer than {max_chars} characters (use a config file for large arrays)")
    spec = spec.strip()
    usage = f"{what}: expected NAME or NAME(arg=value, ...), got {spec!r}"
    try:
        tree = ast.parse(spec, mode="eval")
    except (SyntaxError, ValueError):
        raise ValueError(usage) from None
    except (RecursionError, MemoryError):
        raise ValueError(f"{what}: nested too deeply") from None
    body = tree.body
    if isinstance(body, ast.Name):
        return Call(body.id, (), {}, "")
    if not isinstance(body, ast.Call) or not isinstance(body.func, ast.Name):
        raise ValueError(usage)
    try:
        return _spec_node(body, spec, "", what)
    except RecursionError:
        raise ValueError(f"{what}: nested too deeply") from None


# --------------------------------------------------------------------------------------
# plain data -> Call tree
# --------------------------------------------------------------------------------------


def from_plain(node: Any, path: str = "", *, what: str = "config") -> Any:
    """Plain data (``encode``'s output, or JSON / YAML read by hand) → a :class:`Call` tree.

    Every dict must have a string ``"type"``; its other keys are keyword arguments, except
    ``"args"``, a list of positional ones (for ``chain`` and the presets).
    """
    if isinstance(node, dict):
        kind = node.get("type")
        if not isinstance(kind, str):
            where = f" at {path!r}" if path else ""
            raise ValueError(
                f"{what}{where}: every component needs a 'type' (a class such as 'TopP' or a decoder such as "
                f"'top_p'), got keys {sorted(map(str, node))}"
            )
        if kind == "array":
            unknown = sorted(set(node) - {"type", "dtype", "data", "shape"})
            if unknown:
                raise ValueError(f"{what} at {path or 'the top'!r}: array has no key {unknown[0]!r}; its keys are: "
                                 "dtype, data, shape")
            if "dtype" not in node or "data" not in node:
                raise ValueError(f"{what} at {path or 'the top'!r}: an array needs 'dtype' and 'data'")
            kwargs = {k: node[k] for k in ("dtype", "shape") if k in node}
            return Call("array", (node["data"],), kwargs, path)
        args = node.get("args", [])
        if not isinstance(args, list):
            raise ValueError(f"{what} at {_join(path, 'args')!r}: must be a list of positional arguments")
        args = tuple(from_plain(a, _join(path, f"args[{i}]"), what=what) for i, a in enumerate(args))
        kwargs = {k: from_plain(v, _join(path, str(k)), what=what) for k, v in node.items() if k not in ("type", "args")}
        return Call(kind, args, kwargs, path)
    if isinstance(node, list):
        return [from_plain(x, _join(path, f"[{i}]"), what=what) for i, x in enumerate(node)]
    if node is None or isinstance(node, (bool, int, float, str)):
        return node
    raise ValueError(f"{what} at {path or 'the top'!r}: a {type(node).__name__} is not plain data")


def build_array(call: Call, what: str) -> np.ndarray:
    """The numpy array an ``array(data, dtype=..., shape=...)`` node describes."""
    where = f"{what} at {call.path!r}" if call.path else what
    unknown = sorted(set(call.kwargs) - {"dtype", "shape"})
    if len(call.args) != 1 or unknown:
        raise ValueError(f"{where}: expected array(data, dtype='float32'[, shape=[...]])")
    try:
        import jax.numpy as jnp

        dtype = jnp.dtype(call.kwargs.get("dtype", "float32"))
    except TypeError:
        raise ValueError(f"{where}: unknown dtype {call.kwargs.get('dtype')!r}") from None

    def conv(x):
        if isinstance(x, (list, tuple)) and not isinstance(x, Call):
            return [conv(y) for y in x]
        if isinstance(x, str):
            if x in _NONFINITE and (dtype.kind == "f" or dtype.name == "bfloat16"):
                return _NONFINITE[x]
            raise ValueError(f"{where}: array entries must be numbers (or 'inf', '-inf', 'nan'), got {x!r}")
        if isinstance(x, Call) or x is None or isinstance(x, dict):
            raise ValueError(f"{where}: array entries must be numbers, got {x!r}")
        return x

    try:
        a = np.asarray(conv(call.args[0]), dtype=dtype)
    except (TypeError, ValueError, OverflowError) as e:
        raise ValueError(f"{where}: {e}") from None
    if "shape" in call.kwargs:
        shape = call.kwargs["shape"]
        if not isinstance(shape, (list, tuple)) or not all(isinstance(n, int) and n >= 0 for n in shape):
            raise ValueError(f"{where}: shape must be a list of non-negative integers, got {shape!r}")
        if a.size != math.prod(shape):
            raise ValueError(f"{where}: {a.size} entries do not fill shape {list(shape)}")
        a = a.reshape(shape)
    return a
