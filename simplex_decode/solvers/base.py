"""Solver objects and the solution they return.

A solver is a pytree dataclass with ``__call__(objective, problem) -> (q, stats)``. It
reads only the *structure* of the Objective (term types, separability) and never names a
decoder. :mod:`.auto` holds the registry and the automatic choice.
"""

from __future__ import annotations

from typing import Any, NamedTuple

__all__ = ["Solution", "Solver"]


class Solution(NamedTuple):
    """``q``: the distribution (``(..., V)``; zeros on rows whose status is not OK).
    ``status``: :class:`simplex_decode.Status` code per row. ``stats``: solver
    diagnostics (a dict of arrays, e.g. iteration counts, KKT residual)."""

    q: Any
    status: Any
    stats: dict


class Solver:
    """Base class of solvers."""

    def __call__(self, objective, problem):  # pragma: no cover - interface
        raise NotImplementedError
