"""Per-row status codes: the one source of error text.

Every solver returns a :class:`~simplex_decode.solvers.Solution` whose ``status`` holds one
code per row; :func:`raise_on_bad_rows` turns codes into the errors eager calls raise (and
``checkify`` checks under :func:`simplex_decode.checked`).
"""

from __future__ import annotations

import enum

import jax.numpy as jnp
import numpy as np
from jax.experimental import checkify

from ._pytree import is_concrete

__all__ = ["Status", "status_error_message", "raise_on_bad_rows"]


class Status(enum.IntEnum):
    """Per-row status codes returned by :meth:`Decoder.solve` (``Solution.status``).

    A row with a non-zero status has ``q = 0`` (it is not a distribution) and
    :meth:`Decoder.sample` returns ``-1`` for it; :meth:`Decoder.probs` raises on it in
    eager mode, and under ``jit`` when wrapped by :func:`simplex_decode.checked`. The codes
    are plain ints (``Status.OK == 0``), so they compare with the int32 status arrays;
    ``Status(code).message`` is the one source of their error text.
    """

    OK = 0
    #: a NaN or +inf logit in the input (-inf is allowed: it bans the token)
    NONFINITE_LOGITS = 1
    #: every token is banned or masked out by the support rules
    EMPTY_SUPPORT = 2
    #: an iterative solver stopped before reaching its tolerance
    NOT_CONVERGED = 3
    #: a score transform turned finite logits into NaN or +inf (or removed every token)
    NONFINITE_SCORES = 4
    #: the solver's output is not a distribution (non-finite, negative, or off the simplex)
    INVALID_SOLUTION = 5
    #: a parameter known only on device (traced) is out of its range for this row, or a
    #: traced ``history`` id is outside ``[0, V-1]`` (values known in Python raise instead)
    INVALID_PARAMETER = 6
    #: the constraints admit no distribution (e.g. a cap ``c`` with ``c·|support| < 1``)
    INFEASIBLE = 7
    #: the row reached ``max_new_tokens`` before its constraint (regex, JSON schema) accepted
    CONSTRAINT_INCOMPLETE = 8

    @property
    def message(self) -> str:
        return _MESSAGES[self]

    @property
    def subject(self) -> str:
        """What the code is about, the prefix of its errors: ``"invalid logits"``, ``"solver"``, …"""
        return _SUBJECTS[self]


_MESSAGES = {
    Status.OK: "ok",
    Status.NONFINITE_LOGITS: "logits contain NaN or +inf (use -inf to ban a token)",
    Status.EMPTY_SUPPORT: "no token is allowed in this row (every logit is -inf or masked out by the support rules)",
    Status.NOT_CONVERGED: "the iterative solver did not converge (stopped before its tolerance); raise its "
    "step limit (`max_steps` of Exact, `steps` of Mirror/ProjectedGradient) or loosen `tol`",
    Status.NONFINITE_SCORES: "a score transform turned finite logits into NaN or +inf (or removed every token)",
    Status.INVALID_SOLUTION: "the solver returned a q that is not a distribution (non-finite or off the simplex)",
    Status.INVALID_PARAMETER: "a parameter (a value known only on device) is out of its allowed range for this "
    "row, or a `history` id is outside [0, V-1]; run the jitted function under simplex_decode.checked(...) to "
    "raise an error naming the parameter and its range",
    Status.INFEASIBLE: ("the constraints admit no distribution on this row's support (Cap: the bounds must leave "
                        "a feasible distribution, c·|support| >= 1)"),
    Status.CONSTRAINT_INCOMPLETE: "the row reached max_new_tokens before its output matched the constraint "
    "(it is an unfinished match); raise max_new_tokens",
}
_SUBJECTS = {
    Status.OK: "ok",
    Status.NONFINITE_LOGITS: "invalid logits",
    Status.EMPTY_SUPPORT: "invalid logits",
    Status.NOT_CONVERGED: "solver",
    Status.NONFINITE_SCORES: "invalid scores",
    Status.INVALID_SOLUTION: "solver",
    Status.INVALID_PARAMETER: "invalid parameter",
    Status.INFEASIBLE: "infeasible problem",
    Status.CONSTRAINT_INCOMPLETE: "constraint",
}
#: ``{code: message}`` (kept for callers that index by int).
Status.MESSAGES = {int(k): v for k, v in _MESSAGES.items()}


def status_error_message(status: np.ndarray, stage=None, stage_names=()) -> str | None:
    """Human-readable error naming the first bad rows, or None when all rows are fine.

    ``stage`` (same shape as ``status``) and ``stage_names`` (from
    :attr:`Objective.stage_names <simplex_decode.Objective.stage_names>`) say after which
    transform or rule each row went bad ("after transform 0 (Temperature)").
    """
    status = np.asarray(status)
    if not np.any(status != Status.OK):
        return None
    stage = None if stage is None else np.broadcast_to(np.asarray(stage), status.shape)

    def where(sel):
        if stage is None:
            return ""
        found = sorted({int(i) for i in np.ravel(stage[sel]) if 0 <= int(i) < len(stage_names)})
        return " after " + ", ".join(stage_names[i] for i in found) if found else ""

    if status.ndim == 0:
        code = Status(int(status))
        return f"{code.subject}{where(...)}: {code.message}"
    lines = []
    for code in np.unique(status[status != Status.OK]):
        code = Status(int(code))
        sel = status == code
        rows = [tuple(int(i) for i in r) for r in np.argwhere(sel)[:5]]
        rows_s = ", ".join(str(r[0]) if len(r) == 1 else str(r) for r in rows)
        lines.append(f"{code.subject}: logits rows [{rows_s}]{where(sel)}: {code.message}")
    return "; ".join(lines)


def raise_on_bad_rows(status, stage=None, stage_names=()) -> None:
    """Raise ``ValueError`` naming the bad rows (eager), or add a ``checkify`` check (traced).

    ``stage``/``stage_names``: where each row went bad (see :func:`status_error_message`).
    """
    if is_concrete(status) and (stage is None or is_concrete(stage)):
        msg = status_error_message(status, stage, stage_names)
        if msg is not None:
            raise ValueError(msg)
    else:
        flat = status.reshape(-1)
        first = jnp.argmax(flat != Status.OK)
        at = jnp.full(flat.shape, -1, jnp.int32) if stage is None else jnp.broadcast_to(stage, status.shape).reshape(-1)
        stages = "; ".join(f"{i}: {n}" for i, n in enumerate(stage_names))
        checkify.debug_check(
            jnp.all(flat == Status.OK),
            "invalid logits: row {} (flattened) has status {} ("
            + ", ".join(f"{int(c)}: {c.name}" for c in Status if c != Status.OK)
            + "), first failing stage {}"
            + (f" ({stages})" if stages else ""),
            first,
            flat[first],
            at[first],
        )
