"""Shared plumbing: pytree dataclasses and declared parameters.

Every component of simplex_decode (score transforms, terms, support rules, objectives,
decoders, solvers) is a frozen dataclass registered as a JAX pytree. Float parameters
are leaves (so a new temperature or a per-row array of them never recompiles); fields
declared static (structure: ``max_k``, the solver choice, flags) go into the tree
definition.

Parameters are *declared*, not validated by hand: a field written with :func:`param`
carries its allowed values (a :class:`Param`: bounds, integer / boolean, static,
optional, per-row / per-list / per-token layout). :func:`pytree_dataclass` validates
every declared field when a user constructs the object and stores it with a fixed
dtype. The rule is the same everywhere:

* a value known in Python that is out of range raises ``ValueError`` naming the
  parameter as the user spelled it and its allowed values (and is otherwise stored as
  int32 / float32 — float64 under x64 unless given as a narrower float array — so new
  values never recompile)::

      TopP: `p` must be in (0, 1], got 1.5

* a value only known on device (traced under ``jit``) is checked with
  :func:`jax.experimental.checkify.debug_check`, which costs nothing unless the caller
  wraps the jitted function with :func:`simplex_decode.checked`; unchecked, the rows it
  makes invalid get ``Status.INVALID_PARAMETER`` (:func:`params_ok`, read by
  ``Objective.prepare``), never a default;
* shapes and bounds that depend on the logits (a per-row array must broadcast to the
  batch, ``k <= V``) are checked by :func:`params_ok` when the logits arrive.

The declarations are data: ``Class.__params__`` maps each field to its :class:`Param`
(the CLI, the docs, configs and the shared test-suite read them), and named decoders
declare their own arguments the same way (``simplex_decode.presets``).

Example:
  >>> import simplex_decode as sd
  >>> sd.TopP.__params__["p"].interval()
  '(0, 1]'
  >>> sd.TopP(1.5)
  Traceback (most recent call last):
  ...
  ValueError: TopP: `p` must be in (0, 1], got 1.5
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import checkify

__all__ = [
    "Param",
    "param",
    "declared",
    "params_ok",
    "components",
    "pytree_dataclass",
    "static_field",
    "require",
    "check_range",
    "is_concrete",
    "set_field",
    "per_row",
]

#: Bounds that depend on the logits: the vocabulary size ``V`` and ``V − 1``.
_VOCAB_BOUNDS = {"V": 0, "V-1": -1}
_AXES = (None, "list", "token")
_INT32_LIMIT = 2**31
# Instance attributes (not dataclass fields, so not in the pytree and lost when JAX
# rebuilds an object from its leaves): "validated by its constructor", and the names a
# preset gave its fields (``{field: "top_p: `temperature`"}``).
_CHECKED = "_sd_checked"
_LABELS = "_sd_labels"


def _num(b) -> str:
    b = float(b)
    if math.isinf(b):
        return "inf" if b > 0 else "-inf"
    return str(int(b)) if b.is_integer() and abs(b) < 1e16 else repr(b)


def _is_array_like(x) -> bool:
    return isinstance(x, (jax.Array, np.ndarray, np.generic, int, float, list, tuple)) and not isinstance(x, str)


def _is_float(dtype) -> bool:
    return jnp.issubdtype(dtype, jnp.floating)  # bfloat16 too (numpy sees it as a void kind)


def _is_int(dtype) -> bool:
    return jnp.issubdtype(dtype, jnp.integer)  # not bool


def _weak(x) -> bool:
    """Python numbers and lists carry no dtype of their own (JAX's weak types)."""
    return not isinstance(x, (jax.Array, np.ndarray, np.generic))


def _show(arr) -> str:
    arr = np.asarray(arr)
    if arr.ndim == 0:
        return repr(arr.item())
    return np.array2string(arr, threshold=8)


def _escape(msg: str) -> str:
    return msg.replace("{", "{{").replace("}", "}}")


def _debug_check(ok, msg: str, x) -> None:
    """``checkify.debug_check`` that ``ok`` holds everywhere, showing the first bad entry of ``x``."""
    ok = jnp.asarray(ok)
    x = jnp.broadcast_to(jnp.asarray(x), jnp.broadcast_shapes(jnp.shape(x), ok.shape)).reshape(-1)
    first = jnp.argmin(ok.reshape(-1)) if ok.ndim else 0
    checkify.debug_check(jnp.all(ok), _escape(msg) + ", got {}", x[first] if x.size else x)


@dataclasses.dataclass(frozen=True)
class Param:
    """The declaration of one parameter: its allowed values and how it is stored.

    Attributes:
      lo, hi: bounds (numbers, ``"V"`` / ``"V-1"`` for the vocabulary size, or None: unbounded).
        An unbounded side excludes infinity (``lo=-math.inf`` admits ``-inf``); NaN is
        never allowed.
      lo_open, hi_open: exclude the bound itself.
      integer: integral values, stored as int32 (or a Python ``int`` when static).
      boolean: True/False (static) or a boolean array (a leaf).
      static: part of the tree structure (a Python scalar; never a traced value).
      optional: None is allowed (and means "off" / "default" as the class documents).
      axis: None — a scalar or a per-row array over the leading batch axes; ``"list"`` —
        ``(n,)`` or ``batch + (n,)`` (a list per row; a scalar is a list of one);
        ``"token"`` — ``(V,)`` or ``(..., V)``.
      choices: strings accepted besides numeric values (e.g. ``("model", "top_m")``).
      converter: applied to the array before it is checked and stored (equinox's
        ``field(converter=)``), e.g. a scalar id to a list of one.
      check: ``check(who, value)`` for constraints a range cannot state (a reference
        distribution sums to 1); raise or ``require`` with ``who`` in the message.
      name: the name errors use (the field's own by default).
      origin: ``(class, field)`` where it was declared (set by :func:`pytree_dataclass`).
      doc: one line for the docs and the CLI.
    """

    lo: Any = None
    hi: Any = None
    lo_open: bool = False
    hi_open: bool = False
    integer: bool = False
    boolean: bool = False
    static: bool = False
    optional: bool = False
    axis: str | None = None
    choices: tuple = ()
    converter: Callable | None = None
    check: Callable | None = None
    name: str | None = None
    origin: tuple | None = None
    doc: str = ""

    def __post_init__(self):
        if self.axis not in _AXES:
            raise ValueError(f"Param: `axis` must be one of {_AXES}, got {self.axis!r}")
        if self.integer and self.boolean:
            raise ValueError("Param: `integer` and `boolean` exclude each other")
        for b in (self.lo, self.hi):
            if isinstance(b, str) and b not in _VOCAB_BOUNDS:
                raise ValueError(f"Param: a symbolic bound must be one of {sorted(_VOCAB_BOUNDS)}, got {b!r}")

    def renamed(self, name: str) -> Param:
        """The same declaration under another name (a preset's argument for a component's field)."""
        return dataclasses.replace(self, name=name)

    # --- text --------------------------------------------------------------------------

    @property
    def depends_on_vocab(self) -> bool:
        return isinstance(self.lo, str) or isinstance(self.hi, str)

    def interval(self, vocab_size: int | None = None) -> str:
        """``"(0, 1]"``, ``"[1, V]"`` (``"[1, V=10]"`` once ``V`` is known), ``"[0, inf)"``."""

        def text(b, default):
            if b is None:
                return default
            if isinstance(b, str):
                return b if vocab_size is None else f"{b}={vocab_size + _VOCAB_BOUNDS[b]}"
            return _num(b)

        lo_br = "(" if self.lo_open or self.lo is None else "["
        hi_br = ")" if self.hi_open or self.hi is None else "]"
        return f"{lo_br}{text(self.lo, '-inf')}, {text(self.hi, 'inf')}{hi_br}"

    def requirement(self, vocab_size: int | None = None) -> str:
        """What the value must be, e.g. ``"must be an integer in [1, V]"``."""
        if self.boolean:
            core = "True or False" if self.static else "a boolean array"
        else:
            core = f"{'an integer ' if self.integer else ''}in {self.interval(vocab_size)}"
        if self.axis == "list":
            core = f"{core}, or an array of them of shape (n,) or batch + (n,)"
        elif self.axis == "token":
            if self.boolean:
                core = f"{core} of shape (V,) or (..., V)"
            else:
                kind = "integer entries" if self.integer else "entries"
                core = f"an array of shape (V,) or (..., V) with {kind} in {self.interval(vocab_size)}"
        if self.choices:
            core = ", ".join(repr(c) for c in self.choices) + " or " + core
        if self.optional:
            core = "None or " + core
        return "must be " + core

    def message(self, owner: str, vocab_size: int | None = None) -> str:
        """``"TopP: `p` must be in (0, 1]"``."""
        return f"{owner}: `{self.name}` {self.requirement(vocab_size)}"

    # --- values ------------------------------------------------------------------------

    def _bound(self, b, vocab_size):
        if isinstance(b, str):
            return None if vocab_size is None else vocab_size + _VOCAB_BOUNDS[b]
        return b

    def contains(self, x, vocab_size: int | None = None):
        """Elementwise: is ``x`` (numpy or JAX, of a valid dtype) allowed? A bound in ``V``
        is not checked while ``vocab_size`` is None."""
        xp = jnp if isinstance(x, jax.Array) else np
        x = xp.asarray(x)
        ok = xp.ones(x.shape, bool)
        if self.boolean:
            return ok
        floating = _is_float(x.dtype)
        if floating:
            ok = ok & ~xp.isnan(x)
            if x.dtype in (np.float32, np.float64):
                # the value the device holds: XLA's CPU and GPU backends flush subnormal
                # floats to zero, so 1.4e-45 fails "> 0" here as it does under jit
                x = xp.where(xp.abs(x) < np.finfo(x.dtype).tiny, xp.zeros_like(x), x)
        for b, is_lo, is_open in ((self.lo, True, self.lo_open), (self.hi, False, self.hi_open)):
            if isinstance(b, str) and vocab_size is None:
                continue
            b = self._bound(b, vocab_size)
            if b is None:
                if floating:
                    ok = ok & ((x > -np.inf) if is_lo else (x < np.inf))
            elif is_lo:
                ok = ok & ((x > b) if is_open else (x >= b))
            else:
                ok = ok & ((x < b) if is_open else (x <= b))
        if self.integer:
            if floating:
                ok = ok & (x == xp.round(x))
            if floating or np.iinfo(x.dtype).max >= _INT32_LIMIT:  # must fit the int32 it is stored in
                ok = ok & (x > -_INT32_LIMIT) & (x < _INT32_LIMIT)
        return ok

    def _dtype_ok(self, dtype) -> bool:
        if self.boolean:
            return dtype == np.bool_
        return _is_int(dtype) or _is_float(dtype)

    def validate(self, owner: str, value, vocab_size: int | None = None):
        """``value`` checked and stored as the declaration says; ``owner`` names the caller."""
        return self._validate(f"{owner}: `{self.name}`", value, vocab_size)

    def _validate(self, who: str, value, vocab_size=None):
        msg = f"{who} {self.requirement(vocab_size)}"
        if value is None:
            if self.optional:
                return None
            raise ValueError(f"{msg}, got None")
        if isinstance(value, str):
            if value in self.choices:
                return value
            raise ValueError(f"{msg}, got {value!r}")
        if self.static and self.boolean:
            if isinstance(value, (bool, np.bool_)):
                return bool(value)
            raise ValueError(f"{msg}, got {value!r}")
        if not _is_array_like(value):
            raise ValueError(f"{msg}, got {type(value).__name__} {value!r}")
        if not is_concrete(value):
            return self._traced(who, msg, value)
        try:
            arr = np.asarray(value)
        except (ValueError, TypeError):  # ragged lists
            raise ValueError(f"{msg}, got {value!r}") from None
        weak = _weak(value)
        if not self._dtype_ok(arr.dtype):
            numeric = arr.dtype == np.bool_ or _is_int(arr.dtype) or _is_float(arr.dtype) or arr.dtype.kind == "c"
            raise ValueError(f"{msg}, got {_show(arr) if numeric else repr(value)}")
        if self.converter is not None:
            arr = value = np.asarray(self.converter(arr))
        if self.axis == "list" and arr.ndim == 0:  # one id: a list of one
            arr = value = arr.reshape(1)
        self._check_ndim(who, msg, arr.ndim, value)
        shown = arr.astype(np.float64) if not (self.integer or self.boolean) and _is_int(arr.dtype) else arr
        ok = self.contains(arr, vocab_size)
        if not np.all(ok):
            raise ValueError(f"{msg}, got {_show(shown)}{_first_bad(ok, shown)}")
        if not (self.static or self.boolean or self.integer):
            dtype = self._real_dtype(weak, arr)
            with np.errstate(over="ignore"):
                ok = self.contains(arr.astype(dtype), vocab_size)  # rounding to float32: 1e39 → inf
            if not np.all(ok):
                raise ValueError(f"{msg}, got {_show(shown)}{_first_bad(ok, shown)} (out of range in {dtype.__name__}, "
                                 "where a subnormal value counts as 0)")
        stored = self._store(value, arr, weak)
        if self.check is not None:
            self.check(who, stored)
        return stored

    def _check_ndim(self, who, msg, ndim, value):
        if self.static and ndim:
            raise ValueError(f"{msg} (a static Python scalar), got an array of shape {np.shape(value)}")
        if self.axis == "token" and ndim < 1:
            raise ValueError(f"{msg}, got a scalar {value!r}")

    def _store(self, value, arr, weak):
        if self.static:
            return int(arr) if self.integer else float(arr)
        src = value if isinstance(value, jax.Array) else arr
        if self.boolean:
            return jnp.asarray(src, bool)
        if self.integer:
            return jnp.asarray(src, jnp.int32)
        return jnp.asarray(src, self._real_dtype(weak, arr))

    @staticmethod
    def _real_dtype(weak, arr):
        """float32; while x64 is on, float64 unless the value is an array of a narrower float
        dtype (Python numbers take JAX's default float dtype, as ``jnp.asarray`` does)."""
        if jax.dtypes.canonicalize_dtype(np.float64) != np.float64:
            return np.float32
        narrow = not weak and _is_float(arr.dtype) and np.dtype(arr.dtype).itemsize < 8
        return np.float32 if narrow else np.float64

    def _traced(self, who, msg, x):
        if self.static:
            raise ValueError(f"{who} is static (it sets shapes or the program): pass a Python value, not a traced one")
        x = jnp.asarray(x)
        if not self._dtype_ok(x.dtype) or (self.integer and not _is_int(x.dtype)):
            raise ValueError(f"{msg}, got a traced array of dtype {x.dtype}")
        if not (self.integer or self.boolean) and not _is_float(x.dtype):
            x = x.astype(jnp.float32)
        if self.converter is not None:
            x = self.converter(x)
        if self.axis == "list" and x.ndim == 0:
            x = x.reshape(1)
        self._check_ndim(who, msg, x.ndim, x)
        if not self.boolean:
            _debug_check(self.contains(x), msg, x)
        if self.check is not None:
            self.check(who, x)
        return x

    # --- shapes and rows (at the logits) -------------------------------------------------

    def check_shape(self, who: str, x, batch_shape, vocab_size: int) -> None:
        """Raise ``ValueError`` naming ``who`` if ``x`` cannot serve logits ``batch + (V,)``."""
        shape, batch = tuple(np.shape(x)), tuple(batch_shape)
        if self.axis == "token":
            if not shape or shape[-1] != vocab_size:
                raise ValueError(f"{who} must have V={vocab_size} entries in its last axis, got shape {shape}")
            try:
                fits = np.broadcast_shapes(shape, batch + (vocab_size,)) == batch + (vocab_size,)
            except ValueError:
                fits = False
            if not fits:
                raise ValueError(
                    f"{who} of shape {shape} does not broadcast to the logits' shape {batch + (vocab_size,)}"
                )
            return
        lead = shape[:-1] if self.axis == "list" else shape
        if len(lead) > len(batch) or any(a not in (1, b) for a, b in zip(lead, batch, strict=False)):
            if self.axis is None:
                hint = f"per-row values are a scalar or an array over the leading batch axes, shape {batch}"
            else:
                hint = f"per-row lists have shape batch + (n,) = {batch} + (n,)"
            raise ValueError(
                f"{who} of shape {shape} does not broadcast to the batch shape {batch}: {hint} "
                "(or fewer leading axes; 1 broadcasts)"
            )

    def rows_ok(self, x, batch_shape, vocab_size: int):
        """Per row of the batch: are this row's values of ``x`` allowed? (bool ``batch_shape``)."""
        ok = self.contains(jnp.asarray(x), vocab_size)
        if self.axis is not None:
            ok = jnp.all(ok, axis=-1)
        if self.axis == "token":  # numpy broadcasting: trailing axes align
            return jnp.broadcast_to(ok, tuple(batch_shape))
        return per_row(ok, batch_shape)[..., 0]

    # --- values for tests and docs -------------------------------------------------------

    def example(self, vocab_size: int = 4):
        """A valid value (the middle of a bounded range, else near the finite bound), laid
        out as ``axis`` says (``(V,)`` for ``"token"``, ``(1,)`` for ``"list"``)."""
        if self.boolean:
            return False if self.static else np.ones(vocab_size, bool)
        return self._layout(self._scalar_example(vocab_size), vocab_size)

    def _scalar_example(self, vocab_size):
        lo, hi = self._bound(self.lo, vocab_size), self._bound(self.hi, vocab_size)
        if lo is not None and hi is not None and math.isfinite(lo) and math.isfinite(hi):
            v = lo if self.integer else (lo + hi) / 2
        elif lo is not None and math.isfinite(lo):
            v = lo + 1
        elif hi is not None and math.isfinite(hi):
            v = hi - 1
        else:
            v = 0
        return int(v) if self.integer else float(v)

    def _layout(self, v, vocab_size):
        if self.axis == "token":
            return np.full(vocab_size, v)
        if self.axis == "list":
            return np.array([v])
        return v

    def boundary_values(self, vocab_size: int | None = None) -> list:
        """Valid values at and just inside each finite bound (the bound itself when closed,
        the nearest float32 — or integer — inside when open), laid out as :meth:`example`;
        none for a parameter with a ``check`` (its range alone does not make a valid value)."""
        if self.boolean:
            return [False, True] if self.static else []
        if self.check is not None:
            return []
        return [self._layout(v, vocab_size or 4) for v in self._scalar_boundaries(vocab_size)]

    def _scalar_boundaries(self, vocab_size):
        out = []
        for b, step, is_open in ((self.lo, 1, self.lo_open), (self.hi, -1, self.hi_open)):
            b = self._bound(b, vocab_size)
            if b is None or not math.isfinite(b):
                continue
            out.append(self._inside(b, step) if is_open else (int(b) if self.integer else float(b)))
        return out

    def _inside(self, b, step):
        if self.integer:
            return int(b) + step
        if b == 0:
            return step * float(np.finfo(np.float32).tiny)
        return float(np.nextafter(np.float32(b), np.float32(step * np.inf)))

    def invalid_values(self, vocab_size: int | None = None) -> list:
        """Values each of which this parameter must reject (with :meth:`message`): just
        outside each bound, NaN and infinities where excluded, a non-integer for integer
        parameters, None unless optional, a string unless there are choices. Array layouts
        (``axis``) get one bad entry among valid ones."""
        if self.boolean:
            return ["yes", 1] if self.static else [np.ones(vocab_size or 4, np.int32)]
        bad = []
        for b, step, is_open in ((self.lo, -1, self.lo_open), (self.hi, 1, self.hi_open)):
            if isinstance(b, str) and vocab_size is None:
                continue  # a bound in V: nothing beyond it is known to be invalid yet
            b = self._bound(b, vocab_size)
            if b is None:
                bad.append(step * math.inf)
                continue
            if not math.isfinite(b):
                continue
            if is_open:
                bad.append(int(b) if self.integer else float(b))
                if b == 0 and not (self.integer or self.static):  # the subnormal next to 0 is 0 on device
                    bad.append(float(np.nextafter(np.float32(0), np.float32(-step * np.inf))))
            bad.append(int(b) + step if self.integer else float(np.nextafter(np.float32(b), np.float32(step * np.inf))))
        bad.append(math.nan)
        if self.integer:
            bad.append(self._scalar_example(vocab_size or 4) + 0.5)
        if self.axis is not None:
            good = self.example(vocab_size or 4)
            bad = [np.where(np.arange(good.shape[-1]) == 0, v, good) for v in bad]
        if not self.optional:
            bad.append(None)
        if not self.choices:
            bad.append("abc")
        return bad


def _first_bad(ok, arr) -> str:
    if np.ndim(ok) == 0 or np.size(ok) <= 8:
        return ""
    idx = tuple(int(i) for i in np.argwhere(~np.asarray(ok))[0])
    return f" (first invalid entry {np.asarray(arr)[idx].item()!r} at index {idx if len(idx) > 1 else idx[0]})"


def param(
    default: Any = dataclasses.MISSING,
    *,
    lo=None,
    hi=None,
    lo_open: bool = False,
    hi_open: bool = False,
    integer: bool = False,
    boolean: bool = False,
    static: bool = False,
    optional: bool = False,
    axis: str | None = None,
    choices: tuple = (),
    converter: Callable | None = None,
    check: Callable | None = None,
    name: str | None = None,
    doc: str = "",
) -> Any:
    """A declared dataclass field (see :class:`Param` for the arguments).

    Example:
      >>> import dataclasses
      >>> @pytree_dataclass
      ... class Scale:
      ...     factor: float = param(1.0, lo=0.0, lo_open=True, doc="the scale")
      >>> Scale(2.0).factor.dtype, Scale.__params__["factor"].interval()
      (dtype('float32'), '(0, inf)')
      >>> Scale(0.0)
      Traceback (most recent call last):
      ...
      ValueError: Scale: `factor` must be in (0, inf), got 0.0
    """
    spec = Param(
        lo=lo, hi=hi, lo_open=lo_open, hi_open=hi_open, integer=integer, boolean=boolean, static=static,
        optional=optional, axis=axis, choices=tuple(choices), converter=converter, check=check, name=name, doc=doc,
    )
    return dataclasses.field(default=default, metadata={"param": spec, "static": static})


def declared(cls, field: str) -> Param:
    """The :class:`Param` declared for ``cls.field`` (e.g. to reuse it for a preset's argument)."""
    try:
        return cls.__params__[field]
    except (AttributeError, KeyError):
        raise ValueError(f"{getattr(cls, '__name__', cls)} declares no parameter {field!r}") from None


def static_field(default: Any = dataclasses.MISSING, **kwargs) -> Any:
    """A dataclass field that is part of the pytree structure (not a leaf), undeclared."""
    metadata = dict(kwargs.pop("metadata", {}) or {})
    metadata["static"] = True
    return dataclasses.field(default=default, metadata=metadata, **kwargs)


def _validate_fields(obj) -> None:
    cls = type(obj)
    for name, spec in cls.__params__.items():
        set_field(obj, name, spec.validate(cls.__name__, getattr(obj, name)))
    for rule in cls.__rules__:
        _check_rule(obj, rule)


def _check_rule(obj, rule, skip_concrete=False):
    """A cross-field rule ``(text, predicate, field names)``: raise if concretely broken,
    else (traced) add a ``checkify`` check and return the predicate."""
    text, predicate, names = rule
    good = predicate(obj)
    msg = f"{type(obj).__name__}: {text}"
    if not is_concrete(good):
        checkify.debug_check(jnp.all(good), _escape(msg))
        return good
    if not skip_concrete and not np.all(np.asarray(good)):
        got = ", ".join(f"{n}={_show(getattr(obj, n))}" for n in names)
        raise ValueError(f"{msg}, got {got}")
    return None


def pytree_dataclass(cls):
    """Frozen dataclass + pytree registration + validation of the declared fields.

    Leaves are the fields not marked static. Constructing an object validates every
    field declared with :func:`param` (then runs the class's own ``__post_init__``, kept
    for derived fields) and every cross-field rule in ``__rules__`` (a tuple of
    ``(message, predicate(obj))``). Unflattening bypasses ``__init__`` (JAX rebuilding an
    object from tracers or placeholders is not validated; :func:`params_ok` checks such
    objects when they meet the logits).
    """
    user_post = getattr(cls, "__post_init__", None)
    user_post = getattr(user_post, "__sd_user__", user_post)  # a base class's wrapper

    def __post_init__(self):
        _validate_fields(self)
        if user_post is not None:
            user_post(self)
        object.__setattr__(self, _CHECKED, True)

    __post_init__.__sd_user__ = user_post
    cls.__post_init__ = __post_init__
    cls = dataclasses.dataclass(frozen=True, eq=False)(cls)
    fields = dataclasses.fields(cls)
    params = {}
    for f in fields:
        spec = f.metadata.get("param")
        if spec is not None:
            params[f.name] = dataclasses.replace(spec, name=spec.name or f.name, origin=(cls, f.name))
    cls.__params__ = params
    cls.__rules__ = tuple(getattr(cls, "__rules__", ()))
    data_names = tuple(f.name for f in fields if not f.metadata.get("static"))
    static_names = tuple(f.name for f in fields if f.metadata.get("static"))

    def flatten_with_keys(obj):
        children = tuple((jax.tree_util.GetAttrKey(n), getattr(obj, n)) for n in data_names)
        return children, tuple(getattr(obj, n) for n in static_names)

    def flatten(obj):
        return tuple(getattr(obj, n) for n in data_names), tuple(getattr(obj, n) for n in static_names)

    def unflatten(aux, children):
        obj = object.__new__(cls)
        for n, v in zip(data_names, children, strict=False):
            object.__setattr__(obj, n, v)
        for n, v in zip(static_names, aux, strict=False):
            object.__setattr__(obj, n, v)
        return obj

    jax.tree_util.register_pytree_with_keys(cls, flatten_with_keys, unflatten, flatten)
    return cls


def components(tree):
    """Every pytree dataclass in ``tree`` (itself, its fields, tuples of them), depth first."""
    if isinstance(tree, (list, tuple)):
        for t in tree:
            yield from components(t)
    elif hasattr(type(tree), "__params__") and dataclasses.is_dataclass(tree):
        yield tree
        for f in dataclasses.fields(tree):
            if f.name not in type(tree).__params__:
                yield from components(getattr(tree, f.name))


def label(obj, field: str, who: str) -> None:
    """Name ``obj.field`` as ``who`` (e.g. ``"top_p: `temperature`"``) in errors about its
    shape or traced values (a preset naming its argument; kept while ``obj`` lives)."""
    obj.__dict__.setdefault(_LABELS, {})[field] = who


def params_ok(tree, batch_shape, vocab_size: int):
    """Per-row validity of the declared parameters of every component in ``tree``.

    For logits of shape ``batch_shape + (vocab_size,)``: raises ``ValueError`` naming the
    parameter when a shape does not fit or a value known in Python is out of range (a
    bound in ``V``, or an object JAX rebuilt without validating it); for traced values,
    adds a ``checkify`` check and returns bool ``batch_shape``, False on the rows whose
    values are out of range. Returns ``True`` when nothing is traced (no cost).
    """
    ok = True
    batch = tuple(batch_shape)
    for obj in components(tree):
        cls = type(obj)
        labels = obj.__dict__.get(_LABELS, {})
        checked = obj.__dict__.get(_CHECKED, False)
        for name, spec in cls.__params__.items():
            x = getattr(obj, name)
            if x is None or isinstance(x, str):
                continue
            who = labels.get(name, f"{cls.__name__}: `{spec.name}`")
            if spec.static or is_concrete(x):
                if not checked or spec.depends_on_vocab:
                    spec._validate(who, x, vocab_size)
                if not spec.static:
                    spec.check_shape(who, x, batch, vocab_size)
                continue
            spec.check_shape(who, x, batch, vocab_size)
            if spec.boolean:
                continue
            _debug_check(spec.contains(x, vocab_size), f"{who} {spec.requirement(vocab_size)}", x)
            ok = spec.rows_ok(x, batch, vocab_size) & ok
        for rule in cls.__rules__:
            good = _check_rule(obj, rule, skip_concrete=checked)
            if good is not None:
                ok = per_row(good, batch)[..., 0] & ok
    return ok


def is_concrete(x) -> bool:
    """True when ``x`` has a value known in Python (not a tracer)."""
    return not any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree_util.tree_leaves(x))


def require(ok, message: str, value=None) -> None:
    """Raise ``ValueError(message)`` if ``ok`` is concretely false somewhere.

    ``ok`` may be a Python bool, a numpy/JAX array, or a traced array. Traced
    conditions become ``checkify.debug_check`` (active under :func:`simplex_decode.checked`).
    """
    if is_concrete(ok):
        if not bool(np.all(np.asarray(ok))):
            if value is not None:
                message = f"{message}, got {_show(value)}"
            raise ValueError(message)
    else:
        checkify.debug_check(jnp.all(ok), _escape(message))


def check_range(
    owner: str,
    name: str,
    value,
    *,
    lo=None,
    hi=None,
    lo_open: bool = False,
    hi_open: bool = False,
    integer: bool = False,
):
    """Validate a function argument (``owner``'s ``name``) against an interval; returns it
    stored like a declared parameter (int32 / float32 array, float64 kept under x64)."""
    spec = Param(lo=lo, hi=hi, lo_open=lo_open, hi_open=hi_open, integer=integer, name=name)
    return spec.validate(owner, value)


def set_field(obj, name: str, value) -> None:
    """Assign to a frozen dataclass field during ``__post_init__``."""
    object.__setattr__(obj, name, value)


def per_row(x, batch_shape, dtype=None):
    """A scalar or per-row parameter as an array of shape ``batch_shape + (1,)``.

    Per-row parameters align with the *leading* batch axes: for logits ``(B, T, V)`` a
    parameter of shape ``(B,)`` applies to every position of row ``b`` (as for
    ``(B, 1)``); a parameter of the full batch shape ``(B, T)`` is per position.
    (Declared parameters have their shapes checked, naming them, by :func:`params_ok`.)
    """
    x = jnp.asarray(x) if dtype is None else jnp.asarray(x, dtype)
    batch_shape = tuple(batch_shape)
    if x.ndim > len(batch_shape):
        raise ValueError(
            f"a per-row parameter of shape {x.shape} has more axes than the batch shape {batch_shape}"
        )
    x = x.reshape(x.shape + (1,) * (len(batch_shape) - x.ndim))
    try:
        x = jnp.broadcast_to(x, batch_shape)
    except ValueError as e:
        raise ValueError(
            f"a per-row parameter of shape {x.shape} does not broadcast to the batch shape {batch_shape}"
        ) from e
    return x[..., None]
