"""Shared plumbing: pytree dataclasses and parameter validation.

Every component of simplex_decode (score transforms, terms, support rules, objectives,
decoders, solvers) is a frozen dataclass registered as a JAX pytree. Float parameters
are leaves (so a new temperature or a per-row array of them never recompiles); fields
declared with :func:`static_field` (structure: ``max_k``, the solver choice, flags) go
into the tree definition.

Validation follows one rule everywhere: a parameter whose value is known in Python is
checked at construction and a bad value raises ``ValueError`` naming the parameter and
its allowed range; a value only known on device (a traced array under ``jit``) is checked
with :func:`jax.experimental.checkify.debug_check`, which costs nothing unless the caller
wraps the jitted function with :func:`simplex_decode.checked` (``checkify``).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import checkify

__all__ = ["pytree_dataclass", "static_field", "require", "check_range", "is_concrete", "set_field", "per_row"]


def static_field(default: Any = dataclasses.MISSING, **kwargs) -> Any:
    """A dataclass field that is part of the pytree structure (not a leaf)."""
    metadata = dict(kwargs.pop("metadata", {}) or {})
    metadata["static"] = True
    return dataclasses.field(default=default, metadata=metadata, **kwargs)


def pytree_dataclass(cls):
    """Frozen dataclass + pytree registration.

    Leaves are the fields not marked static. Unflattening bypasses ``__init__`` (so
    validation in ``__post_init__`` runs only when a user constructs the object, never
    when JAX rebuilds it from tracers or placeholders).
    """
    cls = dataclasses.dataclass(frozen=True, eq=False)(cls)
    fields = dataclasses.fields(cls)
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


def is_concrete(x) -> bool:
    """True when ``x`` has a value known in Python (not a tracer)."""
    return not any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree_util.tree_leaves(x))


def _fmt(value) -> str:
    arr = np.asarray(value)
    if arr.ndim == 0:
        return repr(arr.item())
    return np.array2string(arr, threshold=8)


def require(ok, message: str, value=None) -> None:
    """Raise ``ValueError(message)`` if ``ok`` is concretely false somewhere.

    ``ok`` may be a Python bool, a numpy/JAX array, or a traced array. Traced
    conditions become ``checkify.debug_check`` (active under :func:`simplex_decode.checked`).
    """
    if is_concrete(ok):
        if not bool(np.all(np.asarray(ok))):
            if value is not None:
                message = f"{message}, got {_fmt(value)}"
            raise ValueError(message)
    else:
        checkify.debug_check(jnp.all(ok), message)


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
    """Validate that ``value`` (scalar or array) lies in the stated interval.

    Returns ``value`` as an array (float32 unless ``integer``) when it is concrete, so the
    stored leaf is a JAX-compatible array with a fixed dtype (a new value then never
    changes the pytree's abstract signature).
    """
    lo_s = "-inf" if lo is None else repr(lo)
    hi_s = "inf" if hi is None else repr(hi)
    interval = f"{'(' if lo_open or lo is None else '['}{lo_s}, {hi_s}{')' if hi_open or hi is None else ']'}"
    kind = "an integer " if integer else ""
    msg = f"{owner}: `{name}` must be {kind}in {interval}"
    if value is None:
        raise ValueError(f"{msg}, got None")
    if is_concrete(value):
        arr = np.asarray(value)
        if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_):
            raise ValueError(f"{msg}, got {value!r}")
        if integer and not np.issubdtype(arr.dtype, np.integer):
            if not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr)):
                raise ValueError(f"{msg}, got {_fmt(arr)}")
        ok = np.isfinite(arr) if not integer else np.ones(arr.shape, bool)
        if lo is not None:
            ok &= (arr > lo) if lo_open else (arr >= lo)
        if hi is not None:
            ok &= (arr < hi) if hi_open else (arr <= hi)
        if not np.all(ok):
            raise ValueError(f"{msg}, got {_fmt(arr)}")
        return jnp.asarray(arr, jnp.int32 if integer else jnp.float32)
    x = jnp.asarray(value)
    ok = jnp.isfinite(x) if not integer else jnp.ones(x.shape, bool)
    if lo is not None:
        ok &= (x > lo) if lo_open else (x >= lo)
    if hi is not None:
        ok &= (x < hi) if hi_open else (x <= hi)
    checkify.debug_check(jnp.all(ok), msg)
    return x


def set_field(obj, name: str, value) -> None:
    """Assign to a frozen dataclass field during ``__post_init__``."""
    object.__setattr__(obj, name, value)


def per_row(x, batch_shape, dtype=None):
    """A scalar or per-row parameter as an array of shape ``batch_shape + (1,)``.

    Per-row parameters align with the *leading* batch axes: for logits ``(B, T, V)`` a
    parameter of shape ``(B,)`` applies to every position of row ``b`` (as for
    ``(B, 1)``); a parameter of the full batch shape ``(B, T)`` is per position.
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
