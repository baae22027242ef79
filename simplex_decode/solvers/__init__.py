"""Solvers: closed forms, the exact separable solver, mirror ascent (see submodules)."""

from .base import Auto, ClosedForm, Solution, Solver
from .closed_form import argmax_onehot, closed_form_kind, entmax, sparsemax

__all__ = [
    "Auto",
    "ClosedForm",
    "Solution",
    "Solver",
    "argmax_onehot",
    "closed_form_kind",
    "entmax",
    "sparsemax",
]
