"""Solvers: closed forms, the exact separable solver, mirror ascent (see submodules)."""

from .base import Auto, ClosedForm, Solution, Solver
from .closed_form import argmax_onehot, closed_form_kind, entmax, sparsemax
from .exact import Exact
from .mirror import Mirror, ProjectedGradient

__all__ = [
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
    "sparsemax",
]
