"""Decoder = Objective + solver, and the named presets (each a few declarative lines).

Every preset returns a :class:`Decoder` whose ``objective`` states the problem it solves;
no preset has a code path of its own.
"""

from __future__ import annotations

import functools
from typing import Any

import jax.numpy as jnp
from jax.experimental import checkify

from ._core import Status, is_concrete, pytree_dataclass, set_field, status_error_message
from .objective import Objective
from .sampling import sample_from_probs
from .scores import Temperature
from .solvers.base import Auto, ClosedForm, Solution, Solver
from .supports import MinP, TopK, TopP
from .terms import KL, Entropy, SquaredL2, Tsallis

__all__ = [
    "Decoder",
    "checked",
    "greedy",
    "temperature",
    "top_k",
    "top_p",
    "min_p",
    "sparsemax",
    "entmax",
    "kl_anchored",
]

SOLVERS: dict[str, Any] = {"auto": Auto, "closed_form": ClosedForm}


def _resolve_solver(solver) -> Solver:
    if isinstance(solver, Solver):
        return solver
    if isinstance(solver, str) and solver in SOLVERS:
        return SOLVERS[solver]()
    raise ValueError(f"solver: must be one of {sorted(SOLVERS)} or a Solver object, got {solver!r}")


def _raise_on_bad_rows(status):
    if is_concrete(status):
        msg = status_error_message(status)
        if msg is not None:
            raise ValueError(msg)
    else:
        flat = status.reshape(-1)
        first = jnp.argmax(flat != Status.OK)
        checkify.debug_check(
            jnp.all(flat == Status.OK),
            "invalid logits: row {} (flattened) has status {} "
            "(1: NaN or +inf logits, 2: no allowed token, 3: solver not converged)",
            first,
            flat[first],
        )


@pytree_dataclass
class Decoder:
    """A next-token decoder: the Objective it solves and the solver that solves it.

    ``probs(logits)`` returns ``q*`` with the shape of ``logits`` (any leading batch
    dims; float32 for half-precision logits); ``sample(key, logits)`` draws token ids
    from it (``num_samples=K`` draws K per row, with replacement); ``solve(logits)``
    returns a :class:`Solution` with a per-row status instead of raising.

    Bad rows (NaN/+inf logits, nothing allowed) raise ``ValueError`` in eager calls;
    under ``jit`` wrap the jitted function with :func:`checked` to raise, otherwise the
    row's ``q`` is all zeros and its sampled id is ``-1`` (never NaN, never a fallback).

    Example:
      >>> import jax, jax.numpy as jnp, simplex_decode as sd
      >>> dec = sd.top_p(0.9, temperature=0.7)
      >>> logits = jnp.array([[2.0, 1.0, 0.5, -1.0], [0.0, 0.0, 3.0, 1.0]])
      >>> dec.probs(logits).shape
      (2, 4)
      >>> dec.sample(jax.random.key(0), logits, num_samples=3).shape
      (2, 3)
    """

    objective: Objective
    solver: Any = "auto"

    def __post_init__(self):
        if not isinstance(self.objective, Objective):
            raise ValueError(f"objective: must be an Objective, got {type(self.objective).__name__}")
        set_field(self, "solver", _resolve_solver(self.solver))

    def solve(self, logits, *, history=None, history_mask=None) -> Solution:
        problem = self.objective.prepare(logits, history=history, history_mask=history_mask)
        q, stats = self.solver(self.objective, problem)
        from .solvers.closed_form import argmax_onehot

        q = jnp.where(problem.greedy[..., None], argmax_onehot(problem.scores, problem.mask), q)
        ok = problem.status == Status.OK
        q = jnp.where(ok[..., None], q, 0.0)
        return Solution(q=q, status=problem.status, stats=stats)

    def probs(self, logits, *, history=None, history_mask=None):
        sol = self.solve(logits, history=history, history_mask=history_mask)
        _raise_on_bad_rows(sol.status)
        return sol.q

    def sample(self, key, logits, *, num_samples=None, history=None, history_mask=None, method="auto"):
        sol = self.solve(logits, history=history, history_mask=history_mask)
        _raise_on_bad_rows(sol.status)
        return sample_from_probs(
            key, sol.q, num_samples=num_samples, method=method, valid=sol.status == Status.OK
        )


def checked(fn):
    """Run ``fn`` (jitted or not) with simplex_decode's on-device checks turned on.

    Under ``jax.jit`` a NaN logit or an out-of-range traced parameter cannot raise by
    itself; ``checked(jax.jit(step))(...)`` functionalises the checks with
    ``jax.experimental.checkify`` and raises ``JaxRuntimeError`` naming the problem.
    Unchecked, the same code costs nothing extra and returns zeros / id ``-1`` on bad rows.
    """
    cf = checkify.checkify(fn, errors=checkify.user_checks)

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        err, out = cf(*args, **kwargs)
        err.throw()
        return out

    return wrapper


def _tempered(t):
    return (Temperature(t),)


def greedy() -> Decoder:
    """``argmax_q <q, logits>``: the most likely token (lowest id on ties)."""
    return Decoder(Objective())


def temperature(t=1.0) -> Decoder:
    """``argmax_q <q, logits/t> + H(q)`` = ``softmax(logits / t)``; ``t = 0`` is greedy."""
    return Decoder(Objective(terms=Entropy(), transforms=_tempered(t)))


def top_k(k, temperature=1.0, *, max_k=None) -> Decoder:
    """Softmax of ``logits/temperature`` restricted to the ``k`` highest scores."""
    return Decoder(Objective(terms=Entropy(), support=TopK(k, max_k=max_k), transforms=_tempered(temperature)))


def top_p(p, temperature=1.0, *, from_model=False) -> Decoder:
    """Softmax of ``logits/temperature`` renormalised on the nucleus of mass ``p``.

    ``from_model=True`` takes the nucleus from the untempered model distribution (the
    paper's variant); the default follows transformers (temperature first).
    """
    return Decoder(Objective(terms=Entropy(), support=TopP(p, from_model=from_model), transforms=_tempered(temperature)))


def min_p(p, temperature=1.0, *, from_model=False) -> Decoder:
    """Softmax of ``logits/temperature`` on tokens with ``prob ≥ p · max prob``."""
    return Decoder(Objective(terms=Entropy(), support=MinP(p, from_model=from_model), transforms=_tempered(temperature)))


def sparsemax(temperature=1.0) -> Decoder:
    """``argmax_q <q, logits/temperature> − ½‖q‖²`` = ``sparsemax(logits/temperature)``."""
    return Decoder(Objective(terms=SquaredL2(), transforms=_tempered(temperature)))


def entmax(alpha=1.5, temperature=1.0) -> Decoder:
    """``argmax_q <q, logits/temperature> + H_α(q)`` (Tsallis) = ``α-entmax``."""
    return Decoder(Objective(terms=Tsallis(alpha), transforms=_tempered(temperature)))


def kl_anchored(lam, reference=None, temperature=1.0) -> Decoder:
    """``argmax_q <q, s> − lam·KL(q ‖ p)`` = ``softmax(log p + s/lam)``, ``s = logits/temperature``.

    ``p`` defaults to the model's own ``softmax(logits)``; ``lam = 0`` is greedy over ``s``.
    """
    return Decoder(Objective(terms=KL(lam, reference), transforms=_tempered(temperature)))
