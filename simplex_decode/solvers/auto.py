"""The solver registry and ``Auto``: the closed form when the term types are recognised,
else the exact separable solver, else mirror ascent."""

from __future__ import annotations

from typing import Any

from .._pytree import pytree_dataclass
from .base import Solver
from .closed_form import ClosedForm, closed_form_kind
from .exact import Exact
from .mirror import Mirror, ProjectedGradient

__all__ = ["Auto", "SOLVERS", "resolve_solver"]


@pytree_dataclass
class Auto(Solver):
    """Closed form when the term types are recognised; else :class:`~.exact.Exact` for
    separable objectives; else :class:`~.mirror.Mirror` with a tolerance stop
    (``step_size=None``: ``1/Σ_j c_j`` per row, at most 1000 steps, ``tol=1e-7``)."""

    def select(self, objective) -> Solver:
        if closed_form_kind(objective.terms) is not None:
            return ClosedForm()
        if objective.separable:
            return Exact()
        return Mirror(steps=1000, step_size=None, tol=1e-7)

    def __call__(self, objective, problem):
        return self.select(objective)(objective, problem)


#: Solver names a Decoder (or a CLI SPEC) may give instead of a Solver object.
SOLVERS: dict[str, Any] = {
    "auto": Auto,
    "closed_form": ClosedForm,
    "exact": Exact,
    "mirror": Mirror,
    "projected_gradient": ProjectedGradient,
}


def resolve_solver(solver) -> Solver:
    """A Solver object from a Solver or one of the names in :data:`SOLVERS`."""
    if isinstance(solver, Solver):
        return solver
    if isinstance(solver, str) and solver in SOLVERS:
        return SOLVERS[solver]()
    raise ValueError(f"solver: must be one of {sorted(SOLVERS)} or a Solver object, got {solver!r}")
