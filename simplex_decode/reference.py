"""Reference solver: any Objective compiled to cvxpy, one row at a time.

``solve(objective, logits)`` applies the Objective's transforms and support rules
(the same JAX code as the decoders), then solves, for every row, the convex program

    maximise  <q, s> + Σ_j c_j φ_j(q)   s.t.  q ≥ 0, Σ q = 1, q_v = 0 off the support

with each term's own cvxpy expression (``Term.cvxpy``) and constraints
(``Term.cvxpy_constraints``, e.g. ``q ≤ c`` for :class:`~simplex_decode.terms.Cap`).
It is slow, runs on the CPU in float64 and is meant for tests, :func:`verify`-style
checks and second opinions — never for the hot path. cvxpy is imported lazily
(``pip install simplex_decode[reference]``).
"""

from __future__ import annotations

import numpy as np

from ._pytree import per_row
from .objective import Objective
from .status import Status

__all__ = ["solve", "objective_value"]


def _cvxpy():
    try:
        import cvxpy as cp
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(
            "simplex_decode.reference needs cvxpy: pip install 'simplex_decode[reference]'"
        ) from e
    return cp


def _row_data(objective, problem):
    """Per-term numpy data, and each term's weight broadcast to the batch shape."""
    batch = problem.scores.shape[:-1]
    data = []
    for term in objective.terms:
        d = {k: np.asarray(v, np.float64) for k, v in term.reference_data(problem.ctx).items()}
        d["weight"] = np.asarray(per_row(term.weight, batch)[..., 0], np.float64)
        data.append(d)
    return data


def _slice(d, idx, support):
    out = {}
    for k, v in d.items():
        v = v[idx]
        out[k] = v[support] if np.ndim(v) == 1 and k != "weight" else v
    return out


def solve(objective: Objective, logits, *, history=None, history_mask=None, second_logits=None, key=None,
          state=None, solver=None, **solver_opts):
    """The cvxpy optimum of ``objective`` on ``logits`` (shape ``(..., V)``), as float64 numpy.

    ``history``, ``history_mask``, ``second_logits``, ``key`` and ``state`` reach the
    transforms and rules as in :meth:`simplex_decode.Decoder.solve`. Rows whose status is
    not OK (NaN/+inf logits, empty support) raise ``ValueError``.
    ``solver`` and ``solver_opts`` are passed to ``cvxpy.Problem.solve`` (default:
    Clarabel with tight tolerances).
    """
    cp = _cvxpy()
    problem = objective.prepare(np.asarray(logits), history=history, history_mask=history_mask,
                                second_logits=None if second_logits is None else np.asarray(second_logits),
                                key=key, state=state)
    status = np.asarray(problem.status)
    if np.any(status != Status.OK):
        from .status import status_error_message

        raise ValueError(status_error_message(status))
    s = np.asarray(problem.scores, np.float64)
    mask = np.asarray(problem.mask)
    greedy = np.asarray(problem.greedy)
    data = _row_data(objective, problem)
    if solver is None:
        solver = cp.CLARABEL
        solver_opts = {"tol_gap_abs": 1e-10, "tol_gap_rel": 1e-10, "tol_feas": 1e-10, **solver_opts}
    out = np.zeros(s.shape, np.float64)
    for idx in np.ndindex(*s.shape[:-1]):
        support = np.flatnonzero(mask[idx])
        srow = s[idx][support]
        weights = [float(d["weight"][idx]) for d in data]
        if greedy[idx] or all(w == 0 for w in weights):
            out[idx + (support[np.argmax(srow)],)] = 1.0  # the LP's optimum, lowest id on ties
            continue
        if support.size == 1:
            out[idx + (support[0],)] = 1.0
            continue
        q = cp.Variable(support.size, nonneg=True)
        expr = srow @ q
        constraints = [cp.sum(q) == 1]
        for term, d, w in zip(objective.terms, data, weights, strict=False):
            if w > 0:
                expr = expr + w * term.cvxpy(q, _slice(d, idx, support))
                constraints += term.cvxpy_constraints(q, _slice(d, idx, support))
        prob = cp.Problem(cp.Maximize(expr), constraints)
        prob.solve(solver=solver, **solver_opts)
        if prob.status not in ("optimal", "optimal_inaccurate") or q.value is None:
            raise RuntimeError(f"reference: cvxpy returned status {prob.status!r} for row {idx}")
        qv = np.clip(np.asarray(q.value, np.float64), 0.0, None)
        out[idx + (support,)] = qv / qv.sum()
    return out


def objective_value(objective: Objective, logits, q, *, history=None, history_mask=None):
    """``<q, s> + Σ c_j φ_j(q)`` per row, evaluated in JAX (float64 when x64 is on)."""
    problem = objective.prepare(np.asarray(logits), history=history, history_mask=history_mask)
    import jax.numpy as jnp

    return np.asarray(objective.value(jnp.asarray(q, problem.scores.dtype), problem))
