"""Decoder = Objective + solver: ``probs``, ``sample`` and ``solve`` on logits.

A Decoder is data (a pytree): the Objective states the problem, the solver (a
:class:`~simplex_decode.solvers.Solver`, chosen by ``"auto"`` unless forced) solves it.
"""

from __future__ import annotations

import functools
from typing import Any

import jax.numpy as jnp
from jax.experimental import checkify

from ._pytree import pytree_dataclass, set_field
from ._select import argmax
from .objective import Objective
from .sampling import sample_from_probs
from .solvers.auto import Auto, resolve_solver
from .solvers.base import Solution
from .solvers.closed_form import ClosedForm, greedy_where
from .status import Status, raise_on_bad_rows

__all__ = ["Decoder", "checked"]


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
        set_field(self, "solver", resolve_solver(self.solver))

    def init(self, batch_shape=()):
        """The decoder's per-row state for logits of batch shape ``batch_shape`` (a tuple with
        an entry per support rule, None for those without state: empty for most decoders)."""
        return self.objective.init(batch_shape)

    def update(self, state, ids):
        """The state after the chosen tokens ``ids`` (batch shape; -1 leaves a row's state)."""
        return self.objective.update(state, ids)

    def solve(self, logits, *, state=None, history=None, history_mask=None) -> Solution:
        problem = self.objective.prepare(logits, history=history, history_mask=history_mask, state=state)
        q, stats = self.solver(self.objective, problem)
        q = greedy_where(problem.greedy[..., None], q, problem.scores, problem.mask)
        status = problem.status
        if "converged" in stats:
            # an iterative solver that stopped short of its tolerance: reported, not used
            late = (status == Status.OK) & ~(stats["converged"] | problem.greedy)
            status = jnp.where(late, Status.NOT_CONVERGED, status).astype(status.dtype)
        ok = status == Status.OK
        q = jnp.where(ok[..., None], q, 0.0)
        return Solution(q=q, status=status, stats=stats)

    def probs(self, logits, *, state=None, history=None, history_mask=None):
        sol = self.solve(logits, state=state, history=history, history_mask=history_mask)
        raise_on_bad_rows(sol.status)
        return sol.q

    def sample(self, key, logits, *, num_samples=None, state=None, history=None, history_mask=None, method="auto"):
        """Token ids drawn from ``q*``; with ``state=`` returns ``(ids, decoder.update(state, ids))``."""
        if state is None and any(hasattr(r, "init_state") for r in self.objective.support):
            raise ValueError(
                "state: this decoder carries state between steps (a Constraint); pass state=decoder.init(batch_shape) "
                "and keep the state sample returns: ids, state = decoder.sample(key, logits, state=state)"
            )
        if state is not None and num_samples is not None:
            raise ValueError(
                "num_samples: cannot be combined with state= (the samples would move the state apart); give each "
                "sample its own row and state (decoder.init((..., K))), or use generate(num_samples=K)"
            )
        if not self.objective.terms and isinstance(self.solver, (Auto, ClosedForm)):
            # The linear problem: its optimum is the argmax, no distribution to draw from.
            problem = self.objective.prepare(logits, history=history, history_mask=history_mask, state=state)
            raise_on_bad_rows(problem.status)
            ids = argmax(jnp.where(problem.mask, problem.scores, -jnp.inf))
            ids = jnp.where(problem.status == Status.OK, ids, -1)
            ids = ids if num_samples is None else jnp.repeat(ids[..., None], num_samples, axis=-1)
        else:
            sol = self.solve(logits, state=state, history=history, history_mask=history_mask)
            raise_on_bad_rows(sol.status)
            ids = sample_from_probs(key, sol.q, num_samples=num_samples, method=method, valid=sol.status == Status.OK)
        return ids if state is None else (ids, self.update(state, ids))


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
