"""Decoders as plain data: dicts, JSON, YAML and the CLI's call-like SPEC strings.

A decoder is data (frozen pytree dataclasses all the way down), so it has an exact,
readable written form::

    >>> import simplex_decode as sd
    >>> dec = sd.top_p(0.9, temperature=0.7)
    >>> cfg = dec.to_config()
    >>> cfg["version"], cfg["type"], cfg["objective"]["support"]
    (1, 'Decoder', [{'type': 'TopP', 'p': 0.9, 'from_model': False, 'min_keep': 1}])
    >>> print(sd.config.to_spec(dec))
    Decoder(objective=Objective(terms=[Entropy(weight=1.0)], support=[TopP(p=0.9, from_model=False, min_keep=1)], transforms=[Temperature(t=0.7)], support_at=None), solver=Auto())
    >>> same = sd.from_config(cfg)           # or from_config(to_spec(dec)), from_json(to_json(dec)), ...
    >>> sd.config.to_config(same) == cfg
    True

**The form.** A component — a :class:`~simplex_decode.Decoder`, an
:class:`~simplex_decode.Objective`, a term, support rule, score transform or solver — is a
node ``{"type": ClassName, field: value, ...}`` holding every constructor field
(``dataclasses.fields``, nothing per class); arrays (per-row parameters, weights, masks)
are ``{"type": "array", "dtype": "float32", "data": nested lists}``. Reading a node calls
the class's constructor, so a config is validated like code: a bad value raises the
constructor's ``ValueError``, prefixed with the key's path. The top-level dict carries
``"version"`` (:data:`VERSION`); a config from a newer simplex_decode is refused.

A node's ``"type"`` may also name a *decoder* — a preset (:data:`simplex_decode.PRESETS`)
or ``chain`` — with the preset's arguments (``"args"``: positional ones), which is the
short way to write a config by hand::

    {"version": 1, "type": "best_of_k", "k": 8, "lam": 0.2, "beta": 0.02}

:func:`to_config` always writes the structural form, which rebuilds the decoder exactly
(same pytree structure, same leaves, same dtypes): ``from_config(to_config(d))`` is ``d``
and ``to_config(from_config(c)) == c`` for every ``c`` it wrote.

**SPEC strings** (:func:`to_spec`, :func:`from_spec`; the ``simplex-decode`` CLI's
``--decoder``) are the same nodes as calls: ``top_p(p=0.9, temperature=0.7)``,
``chain(TopK(k=50), TopP(p=0.9), Temperature(t=0.7))``, or the structural
``Decoder(objective=Objective(...), solver=Exact(...))``; arrays as
``array([...], dtype='float32')``. They are parsed with :mod:`ast`, never evaluated.

Unknown keys and names are errors that list the valid ones (with a "did you mean"). Your
own components (a new term, say) take part once registered: :func:`register`.
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import _config
from ._config import VERSION, Call
from .chain import chain
from .decoder import Decoder
from .objective import Objective
from .presets import PRESETS
from .scores import ScoreTransform
from .solvers.base import Solver
from .supports import SupportRule
from .terms import Term

__all__ = [
    "VERSION",
    "components",
    "decoders",
    "did_you_mean",
    "from_config",
    "from_json",
    "from_spec",
    "from_yaml",
    "load",
    "register",
    "save",
    "signature",
    "to_config",
    "to_json",
    "to_spec",
    "to_yaml",
]

_REGISTERED: dict[str, Any] = {}


# --------------------------------------------------------------------------------------
# names
# --------------------------------------------------------------------------------------


def components() -> dict[str, type]:
    """``{name: class}``: the component classes a config may name.

    Every public dataclass in simplex_decode that is a :class:`~simplex_decode.Term`,
    :class:`~simplex_decode.SupportRule`, :class:`~simplex_decode.ScoreTransform` or
    :class:`~simplex_decode.Solver` (found by subclass, so new ones need no list), plus
    :class:`~simplex_decode.Objective`, :class:`~simplex_decode.Decoder` and the classes
    given to :func:`register`.
    """
    found: dict[str, type] = {"Decoder": Decoder, "Objective": Objective}
    stack = [Term, SupportRule, ScoreTransform, Solver]
    while stack:
        for sub in stack.pop().__subclasses__():
            stack.append(sub)
            if (dataclasses.is_dataclass(sub) and sub.__module__.startswith("simplex_decode.")
                    and not sub.__name__.startswith("_")):
                other = found.setdefault(sub.__name__, sub)
                if other is not sub:  # pragma: no cover - guarded by tests/test_config.py
                    raise RuntimeError(f"two components are named {sub.__name__}: {other} and {sub}")
    found.update((k, v) for k, v in _REGISTERED.items() if isinstance(v, type))
    return dict(sorted(found.items()))


def decoders() -> dict[str, Callable]:
    """``{name: function}``: the named decoders a config or SPEC may call — every preset,
    ``chain``, and the factories given to :func:`register`."""
    out = dict(PRESETS)
    out["chain"] = chain
    out.update((k, v) for k, v in _REGISTERED.items() if not isinstance(v, type))
    return out


def _names() -> dict[str, Any]:
    return {**components(), **decoders()}


def register(obj, name: str | None = None):
    """Let configs and SPECs name ``obj``: a component class (a pytree dataclass, e.g. a new
    :class:`~simplex_decode.Term`) or a function returning a Decoder. Returns ``obj``, so
    it works as a decorator. Names already taken by something else are refused."""
    if isinstance(obj, type):
        if not dataclasses.is_dataclass(obj):
            raise ValueError(f"register: {obj.__name__} must be a dataclass (use simplex_decode's pytree_dataclass)")
    elif not callable(obj):
        raise ValueError(f"register: expected a component class or a function, got {type(obj).__name__}")
    name = name or obj.__name__
    if not isinstance(name, str) or not name.isidentifier() or name == "array":
        raise ValueError(f"register: the name must be a Python identifier other than 'array', got {name!r}")
    taken = _names().get(name)
    if taken is not None and taken is not obj:
        raise ValueError(f"register: the name {name!r} is taken by {taken!r}")
    _REGISTERED[name] = obj
    return obj


def did_you_mean(name: str, options) -> str:
    """`` (did you mean 'top_p'?)`` for the options close to ``name`` (difflib), else ``""``."""
    close = difflib.get_close_matches(name, list(options), n=3, cutoff=0.6)
    if not close:
        close = [o for o in options if o.lower() == name.lower()]
    return f" (did you mean {' or '.join(repr(c) for c in close)}?)" if close else ""


# --------------------------------------------------------------------------------------
# building
# --------------------------------------------------------------------------------------


def _where(what: str, path: str) -> str:
    return f"{what} at {path!r}" if path else what


def signature(fn) -> inspect.Signature:
    """``fn``'s signature without annotations (as the messages print it)."""
    sig = inspect.signature(fn)
    params = [p.replace(annotation=inspect.Parameter.empty) for p in sig.parameters.values()]
    return sig.replace(parameters=params, return_annotation=inspect.Signature.empty)


def _parameters(fn) -> tuple[list[str], bool]:
    """(the parameter names a keyword may give, whether ``fn`` takes ``**kwargs``)."""
    kinds = inspect.Parameter
    params = signature(fn).parameters
    names = [p for p, v in params.items() if v.kind not in (kinds.VAR_POSITIONAL, kinds.VAR_KEYWORD)]
    return names, any(v.kind == kinds.VAR_KEYWORD for v in params.values())


def _build(node, names: dict, what: str):
    if not isinstance(node, Call):  # (a Call is a tuple too: test it first)
        if isinstance(node, list):
            return [_build(x, names, what) for x in node]
        if isinstance(node, tuple):
            return tuple(_build(x, names, what) for x in node)
        return node
    where = _where(what, node.path)
    if node.name == "array":
        return _config.build_array(node, what)
    fn = names.get(node.name)
    if fn is None:
        decs = decoders()
        if not node.path:
            raise ValueError(
                f"{what}: unknown decoder {node.name!r}{did_you_mean(node.name, names)}; valid decoders: "
                f"{', '.join(decs)}; or a component call such as Decoder(objective=Objective(...)) "
                "(`simplex-decode decoders --components` lists them)"
            )
        raise ValueError(
            f"{where}: unknown component {node.name!r}{did_you_mean(node.name, names)}; valid components: "
            f"{', '.join(components())}; decoders: {', '.join(decs)}"
        )
    params, any_kw = _parameters(fn)
    if not any_kw:
        for k in node.kwargs:
            if k not in params:
                raise ValueError(
                    f"{where}: {node.name} has no parameter {k!r}{did_you_mean(k, params)}; "
                    f"its parameters are: {', '.join(params) or '(none)'}"
                )
    args = tuple(_build(a, names, what) for a in node.args)
    kwargs = {k: _build(v, names, what) for k, v in node.kwargs.items()}
    try:
        signature(fn).bind(*args, **kwargs)
    except TypeError as e:
        raise ValueError(f"{where}: {node.name}: {e}; signature: {node.name}{signature(fn)}") from None
    try:
        return fn(*args, **kwargs)
    except (ValueError, TypeError) as e:
        msg = str(e)
        raise ValueError(f"{where}: {msg}" if msg.startswith(f"{node.name}") else f"{where}: {node.name}: {msg}") from None


def _check_version(cfg: dict) -> None:
    if "version" not in cfg:
        raise ValueError(f"config: missing key 'version' (this simplex_decode writes version {VERSION})")
    v = cfg["version"]
    if not isinstance(v, int) or isinstance(v, bool) or v < 1:
        raise ValueError(f"config: 'version' must be a positive integer, got {v!r}")
    if v > VERSION:
        raise ValueError(
            f"config: version {v} is newer than this simplex_decode reads (up to {VERSION}); upgrade simplex_decode"
        )


# --------------------------------------------------------------------------------------
# public API
# --------------------------------------------------------------------------------------


def to_config(obj) -> dict:
    """``obj`` (a Decoder, or any component) as plain data with ``"version"``.

    Raises ``ValueError`` naming the path of anything that has no plain form (a traced
    value, or a class no config could name: :func:`register` it).
    """
    cfg = _config.to_config(obj)
    names = components()

    def check(node, path):
        if isinstance(node, dict):
            kind = node.get("type")
            if kind != "array" and kind is not None:
                cls = names.get(kind)
                if cls is None:
                    raise ValueError(
                        f"to_config: {path}: {kind} is not a component a config can name; register it with "
                        "simplex_decode.config.register"
                    )
            for k, v in node.items():
                check(v, f"{path}.{k}")
        elif isinstance(node, list):
            for i, v in enumerate(node):
                check(v, f"{path}[{i}]")

    check(cfg, "config")
    return cfg


def from_config(config) -> Any:
    """The object a config describes (usually a :class:`~simplex_decode.Decoder`).

    ``config`` is a dict with ``"version"`` (plain data, e.g. from :func:`to_config` or a
    JSON/YAML file), a JSON string (starting with ``{``), a SPEC string, or a path to a
    ``.json`` / ``.yaml`` / ``.yml`` file (a :class:`pathlib.Path`, or a string ending so).
    """
    if isinstance(config, os.PathLike) or (
        isinstance(config, str) and config.strip().lower().endswith((".json", ".yaml", ".yml"))
    ):
        return load(config)
    if isinstance(config, str):
        return from_json(config) if config.lstrip().startswith("{") else from_spec(config)
    if not isinstance(config, dict):
        raise ValueError(f"config: expected a dict, a JSON or SPEC string, or a file path, got {type(config).__name__}")
    _check_version(config)
    body = {k: v for k, v in config.items() if k != "version"}
    return _build(_config.from_plain(body), _names(), "config")


def to_json(obj, *, indent: int | None = 2) -> str:
    """:func:`to_config` as JSON text (standard JSON: non-finite values are strings)."""
    return json.dumps(to_config(obj), indent=indent, allow_nan=False)


def from_json(text: str) -> Any:
    """The object a JSON config describes."""
    try:
        cfg = json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as e:
        raise ValueError(f"config: not valid JSON: {e}") from None
    return from_config(cfg)


def _reject_constant(name):
    raise ValueError(f"config: {name} is not standard JSON; write non-finite array entries as \"{name.lower()}\"")


def _yaml():
    try:
        import yaml
    except ImportError:  # pragma: no cover - depends on the environment
        raise ImportError("YAML configs need PyYAML: pip install pyyaml") from None
    return yaml


def to_yaml(obj) -> str:
    """:func:`to_config` as YAML text (needs PyYAML)."""
    return _yaml().safe_dump(to_config(obj), sort_keys=False, default_flow_style=None, width=100)


def from_yaml(text: str) -> Any:
    """The object a YAML config describes (needs PyYAML; read with ``yaml.safe_load``)."""
    yaml = _yaml()
    try:
        cfg = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ValueError(f"config: not valid YAML: {e}") from None
    return from_config(cfg)


def to_spec(obj) -> str:
    """``obj`` as a SPEC string: the call ``ClassName(field=value, ...)`` that rebuilds it."""
    cfg = to_config(obj)
    cfg.pop("version")
    return _config.format_spec(cfg)


def from_spec(spec: str, *, max_chars: int | None = None) -> Any:
    """The object a SPEC string describes: a preset call (``top_p(p=0.9)``), ``chain(...)``
    or component calls (``Decoder(objective=Objective(...))``); parsed, never evaluated."""
    return _build(_config.parse_spec(spec, max_chars=max_chars), _names(), "decoder spec")


def save(obj, path) -> Path:
    """Write :func:`to_config` of ``obj`` to ``path`` (``.json``, ``.yaml`` or ``.yml``)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".json", ".yaml", ".yml"):
        raise ValueError(f"save: the file name must end in .json, .yaml or .yml, got {str(path)!r}")
    text = to_json(obj) + "\n" if suffix == ".json" else to_yaml(obj)
    path.write_text(text)
    return path


def load(path) -> Any:
    """The object the config file ``path`` (``.json``, ``.yaml`` or ``.yml``) describes."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".json", ".yaml", ".yml"):
        raise ValueError(f"load: the file name must end in .json, .yaml or .yml, got {str(path)!r}")
    try:
        text = path.read_text()
    except OSError as e:
        raise ValueError(f"config: cannot read {str(path)!r}: {e.strerror or e}") from None
    return from_json(text) if suffix == ".json" else from_yaml(text)
