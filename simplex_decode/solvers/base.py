"""Solver objects and the solution they return.

A solver is a pytree dataclass with ``__call__(objective, problem) -> (q, stats)``. It
reads only the *structure* of the Objective (term types, separability) and never names a
decoder. ``Auto`` picks the closed form when the term types are recognised, else the
exact separable solver when every term is separable, else mirror ascent.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from .._core import pytree_dataclass
from .closed_form import closed_form_kind, solve_closed_form

__all__ = ["Solution", "Solver", "ClosedForm", "Auto"]


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


@pytree_dataclass
class ClosedForm(Solver):
    """Closed-form solution of a recognised objective (see ``closed_form``)."""

    def __call__(self, objective, problem):
        kind = closed_form_kind(objective.terms)
        if kind is None:
            names = ", ".join(type(t).__name__ for t in objective.terms)
            raise ValueError(
                f"solver: no closed form for the terms ({names}); use solver='auto' or 'exact'"
            )
        return solve_closed_form(kind, objective.terms, problem), {}


@pytree_dataclass
class Auto(Solver):
    """Closed form when the term types are recognised; else :class:`~.exact.Exact` for
    separable objectives; else :class:`~.mirror.Mirror` with a tolerance stop
    (``step_size=None``: ``1/Σ_j c_j`` per row, at most 1000 steps, ``tol=1e-7``)."""

    def select(self, objective) -> Solver:
        if closed_form_kind(objective.terms) is not None:
            return ClosedForm()
        if objective.separable:
            from .exact import Exact

            return Exact()
        from .mirror import Mirror

        return Mirror(steps=1000, step_size=None, tol=1e-7)

    def __call__(self, objective, problem):
        return self.select(objective)(objective, problem)
