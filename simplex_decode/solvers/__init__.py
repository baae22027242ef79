"""Solvers: closed forms, the exact separable solver, mirror ascent (see submodules)."""

from .auto import SOLVERS, Auto, resolve_solver
from .base import Solution, Solver
from .closed_form import ClosedForm, argmax_onehot, closed_form_kind, entmax, sparsemax
from .exact import Exact
from .mirror import Mirror, ProjectedGradient

__all__ = [
    "SOLVERS",
    "Auto",
    "ClosedForm",
    "Exact",
    "Mirror",
    "ProjectedGradient",
    "Solution",
    "Solver",
    "argmax_onehot",
    "closed_form_kind",
    "entmax",
    "resolve_solver",
    "sparsemax",
]
