"""Decoder = Objective + solver: ``probs``, ``sample`` and ``solve`` on logits.

A Decoder is data (a pytree): the Objective states the problem, the solver (a
:class:`~simplex_decode.solvers.Solver`, chosen by ``"auto"`` unless forced) solves it.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
from jax.experimental import checkify

from ._numerics import row_sum
from ._pytree import params_ok, pytree_dataclass, set_field
from ._select import argmax
from .objective import Objective, as_logits, eager_logits
from .sampling import check_sample_args, sample_from_probs
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

    **State and second inputs.** Stateful decoders (:func:`~simplex_decode.mirostat`) follow
    optax: ``state = dec.init(batch_shape)``, then ``ids, state = dec.sample(key, logits,
    state=state)`` at every step (``sample`` returns the pair only when ``state`` is given;
    the update sees the sampled ids). ``solve`` / ``probs`` read the state (default: the
    initial one) but cannot advance it: the next state depends on the token drawn
    (:meth:`update`). Decoders that draw randomness inside a rule (:class:`~simplex_decode.XTC`)
    take ``key=`` in ``solve`` / ``probs``; ``second_logits=`` feeds the second source of
    contrasting decoders (CFG, contrastive decoding, DoLa). Stateless decoders ignore
    ``state`` (their state is ``()``).

    Bad rows (NaN/+inf logits, nothing allowed, a traced parameter out of its range) raise
    ``ValueError`` in eager calls; under ``jit`` wrap the jitted function with
    :func:`checked` to raise, otherwise the row's ``q`` is all zeros and its sampled id is
    ``-1`` (never NaN, never a fallback or a default value).
    The solution itself is checked too: a row whose ``q`` is not finite, has a negative
    entry, puts mass off the support or does not sum to 1 (to :func:`simplex_tolerance`)
    gets ``Status.INVALID_SOLUTION`` — it is never returned as OK.

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

    # --- state (optax-style): init → solve/sample(state=) → new state ---------------------

    @property
    def stateful(self) -> bool:
        """Whether the decoder carries per-row state between steps (e.g. mirostat's μ)."""
        return bool(self.objective.stateful)

    def init(self, batch_shape=()):
        """The initial state for logits of batch shape ``batch_shape`` (``()`` if stateless).

        A pytree (a tuple with one entry per stateful component) whose leaves have
        ``batch_shape`` as their leading axes. Pass it as ``state=`` to :meth:`sample`,
        which returns ``(ids, new_state)``; :meth:`solve` / :meth:`probs` read it (their
        ``state=None`` means this initial state).
        """
        return self.objective.init_state(tuple(batch_shape))

    def update(self, state, q, ids, valid=None):
        """The state after drawing ``ids`` (shape batch) from ``q`` (shape batch + (V,)).

        Rows with ``ids < 0`` (bad rows) or ``valid`` False keep their state. This is what
        :meth:`sample` does after its draw; call it when sampling from :meth:`probs` yourself.
        """
        stateful = self.objective.stateful
        if not stateful:
            return state
        ids = jnp.asarray(ids)
        q_ids = jnp.take_along_axis(q, jnp.clip(ids, 0, q.shape[-1] - 1)[..., None], axis=-1)[..., 0]
        keep = ids >= 0 if valid is None else (ids >= 0) & valid
        new = tuple(c.update_state(st, ids, q_ids) for c, st in zip(stateful, state, strict=True))

        def pick(n, o):
            k = keep.reshape(keep.shape + (1,) * (n.ndim - keep.ndim))
            return jnp.where(k, n, o).astype(o.dtype)

        return jax.tree.map(pick, new, tuple(state))

    # --- solving and sampling -------------------------------------------------------------

    def solve(self, logits, *, history=None, history_mask=None, second_logits=None, key=None,
              state=None) -> Solution:
        """The :class:`Solution` (``q``, per-row ``status``, ``stats``) on ``logits``.

        ``stats["stage"]`` is the index (into ``objective.stage_names``) of the transform
        or rule after which a row went bad, ``-1`` for none (or the logits themselves).

        Called eagerly (nothing traced), the decoder runs as one compiled program, cached by
        its structure and the inputs' shapes (see :func:`~simplex_decode.objective.eager_logits`);
        under a JAX transformation it is traced into the caller's program.
        """
        inputs = dict(history=history, history_mask=history_mask, second_logits=second_logits, key=key,
                      state=state)
        eager = eager_logits(self, logits, inputs)
        if eager is not None:
            return _solve_compiled(self, eager, inputs)
        return self._solve(logits, **inputs)

    def _solve(self, logits, *, history=None, history_mask=None, second_logits=None, key=None,
               state=None) -> Solution:
        problem = self.objective.prepare(logits, history=history, history_mask=history_mask,
                                         second_logits=second_logits, key=key, state=state)
        q, stats = self.solver(self.objective, problem)
        q = greedy_where(problem.greedy[..., None], q, problem.scores, problem.mask)
        status = problem.status
        # the solver's declared parameters (a traced per-row step size), as prepare does the objective's
        solver_ok = params_ok(self.solver, status.shape, problem.scores.shape[-1])
        status = jnp.where(solver_ok, status, Status.INVALID_PARAMETER)
        if "infeasible" in stats:
            # the constraints admit no distribution (a cap c with c·|support| < 1)
            status = jnp.where((status == Status.OK) & stats["infeasible"], Status.INFEASIBLE, status)
        if "converged" in stats:
            # an iterative solver that stopped short of its tolerance: reported, not used
            late = (status == Status.OK) & ~(stats["converged"] | problem.greedy)
            status = jnp.where(late, Status.NOT_CONVERGED, status).astype(status.dtype)
        status = jnp.where((status == Status.OK) & ~on_simplex(q, problem.mask), Status.INVALID_SOLUTION, status)
        status = status.astype(problem.status.dtype)
        ok = status == Status.OK
        q = jnp.where(ok[..., None], q, 0.0)
        return Solution(q=q, status=status, stats={**stats, "stage": problem.stage})

    def _raise_on_bad_rows(self, status, stage):
        raise_on_bad_rows(status, stage, self.objective.stage_names)

    def probs(self, logits, *, history=None, history_mask=None, second_logits=None, key=None, state=None):
        sol = self.solve(logits, history=history, history_mask=history_mask, second_logits=second_logits,
                         key=key, state=state)
        self._raise_on_bad_rows(sol.status, sol.stats["stage"])
        return sol.q

    def sample(self, key, logits, *, num_samples=None, history=None, history_mask=None, second_logits=None,
               state=None, method="auto"):
        logits = as_logits(logits)
        num_samples = check_sample_args(key, logits.shape[:-1], num_samples, method)
        if state is None and self.stateful:
            names = ", ".join(type(c).__name__ for c in self.objective.stateful)
            raise ValueError(
                f"state: this decoder carries state between steps ({names}); pass state=decoder.init(batch_shape) "
                "and keep the state sample returns: ids, state = decoder.sample(key, logits, state=state)"
            )
        if state is not None and num_samples is not None and self.stateful:
            raise ValueError(
                "num_samples: a decoder's state is per row, so num_samples cannot be combined with state=; "
                "repeat the rows instead (generate(..., num_samples=K) keeps one state per sample)"
            )
        inputs = dict(history=history, history_mask=history_mask, second_logits=second_logits, state=state)
        eager = eager_logits(self, logits, {**inputs, "key": key})
        if eager is not None:
            out, new_state, status, stage = _draw_compiled(self, key, eager, inputs, num_samples, method)
        else:
            out, new_state, status, stage = self._draw(key, logits, inputs, num_samples, method)
        self._raise_on_bad_rows(status, stage)
        return out if state is None else (out, new_state)

    def _draw(self, key, logits, inputs, num_samples, method):
        """Ids drawn from ``q`` (the mode of the linear problem), the state after them
        (None without ``state``), and the status and stage the caller raises on."""
        state = inputs["state"]
        if not self.objective.terms and isinstance(self.solver, (Auto, ClosedForm)):
            # The linear problem: its optimum is the argmax, no distribution to draw from.
            problem = self.objective.prepare(logits, key=key, **inputs)
            ids = argmax(jnp.where(problem.mask, problem.scores, -jnp.inf))
            ids = jnp.where(problem.status == Status.OK, ids, -1)
            out = ids if num_samples is None else jnp.repeat(ids[..., None], num_samples, axis=-1)
            if state is not None and self.stateful:  # the mode has q = 1
                state = self.update(state, jax.nn.one_hot(ids, problem.scores.shape[-1]), ids)
            return out, state, problem.status, problem.stage
        sol = self._solve(logits, key=key, **inputs)
        ids = sample_from_probs(key, sol.q, num_samples=num_samples, method=method, valid=sol.status == Status.OK)
        if state is not None:
            state = self.update(state, sol.q, ids)
        return ids, state, sol.status, sol.stats["stage"]

    def to_config(self) -> dict:
        """This decoder as plain data (``{"version": 1, "type": "Decoder", ...}``), which
        :func:`simplex_decode.from_config` turns back into the same decoder; see
        :mod:`simplex_decode.config` (JSON, YAML and SPEC strings too)."""
        from ._config import to_config

        return to_config(self)



@jax.jit
def _solve_compiled(decoder, logits, inputs):
    return decoder._solve(logits, **inputs)


@functools.partial(jax.jit, static_argnums=(4, 5))
def _draw_compiled(decoder, key, logits, inputs, num_samples, method):
    return decoder._draw(key, logits, inputs, num_samples, method)


def simplex_tolerance(dtype) -> float:
    """How far from 1 a row of ``q`` may sum and still count as a distribution: 1e-4 in
    float32 (about 840 ulps: far above the rounding of any solver, far below any real
    error), 1e-10 in float64."""
    return 1e-10 if jnp.dtype(dtype) == jnp.float64 else 1e-4


def on_simplex(q, mask):
    """Per row: ``q`` is finite, ``≥ 0``, zero off ``mask`` and sums to 1 (to
    :func:`simplex_tolerance`). One pass: every bad entry is NaN in the sum."""
    good = (q >= 0) & (mask | (q == 0))
    total = row_sum(jnp.where(good, q, jnp.nan), keepdims=False)
    return jnp.abs(total - 1.0) <= simplex_tolerance(q.dtype)


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
