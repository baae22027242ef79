"""The Objective: score transforms + weighted concave terms + a chain of support rules.

.. math::

    q^*(s) = \\arg\\max_{q \\in \\Delta(V),\\ \\mathrm{supp}(q) \\subseteq S(s)}
             \\langle q, s \\rangle + \\sum_j c_j \\varphi_j(q)

with ``s = T_n(… T_1(logits))`` (``transforms``), the terms ``φ_j`` with weights ``c_j``
(``terms``; each term carries its ``weight``) and ``S`` the intersection of the support
rules applied in order (``support``). An Objective is an immutable pytree: numeric
parameters are leaves, so new values (or per-row arrays of them) reuse one compilation.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from ._pytree import per_row, pytree_dataclass, require, set_field
from .scores import ScoreTransform
from .status import Status
from .supports import SupportRule
from .terms import Term

__all__ = ["Objective", "Context", "Problem", "compute_dtype"]


class Context(NamedTuple):
    """What transforms, rules and terms may read besides the scores.

    ``logits``: the model's logits in the compute dtype (rows with NaN/+inf replaced by
    zeros; they are flagged in ``Problem.status``). ``log_model``: ``log_softmax(logits)``,
    the model's own distribution. ``history``/``history_mask``: previous token ids per
    row (``(..., L)``) and which of them are real (not padding), or None.
    """

    logits: Any
    log_model: Any
    history: Any = None
    history_mask: Any = None


class Problem(NamedTuple):
    """An Objective instantiated on logits: everything a solver needs."""

    scores: Any  # s, (..., V)
    mask: Any  # support, bool (..., V)
    greedy: Any  # rows decoded by argmax (temperature 0), bool (...,)
    status: Any  # Status code per row, int32 (...,)
    ctx: Context


def compute_dtype(dtype):
    """float32 for half-precision (and integer) logits, float64 kept when x64 is on."""
    dtype = jnp.dtype(dtype)
    return jnp.float64 if dtype == jnp.float64 else jnp.float32


def _as_tuple(x, kind, name):
    if x is None:
        return ()
    if isinstance(x, (list, tuple)):
        items = tuple(x)
    else:
        items = (x,)
    for item in items:
        if not isinstance(item, kind):
            raise ValueError(
                f"Objective: every entry of `{name}` must be a {kind.__name__}, got {type(item).__name__}"
            )
    return items


@pytree_dataclass
class Objective:
    """``argmax_{q ∈ Δ, supp q ⊆ S(s)} <q, s> + Σ_j c_j φ_j(q)``.

    Args:
      terms: concave terms (:mod:`simplex_decode.terms`), each with its weight ``c_j``.
        No terms (or all weights 0) means the linear problem: argmax of ``s``.
      support: a support rule or a tuple of them, applied in order.
      transforms: score transforms applied to the logits in order.

    Example:
      >>> import jax.numpy as jnp, simplex_decode as sd
      >>> obj = sd.Objective(terms=sd.Entropy(), support=sd.TopK(2),
      ...                    transforms=sd.Temperature(0.5))
      >>> q = sd.Decoder(obj).probs(jnp.array([1.0, 2.0, 3.0]))
      >>> [round(float(v), 4) for v in q]
      [0.0, 0.1192, 0.8808]
    """

    terms: Any = ()
    support: Any = ()
    transforms: Any = ()

    def __post_init__(self):
        set_field(self, "terms", _as_tuple(self.terms, Term, "terms"))
        set_field(self, "support", _as_tuple(self.support, SupportRule, "support"))
        set_field(self, "transforms", _as_tuple(self.transforms, ScoreTransform, "transforms"))

    @property
    def separable(self) -> bool:
        return all(t.separable for t in self.terms)

    def replace(self, **changes) -> Objective:
        """A copy with some fields replaced (validated like a new Objective)."""
        fields = {"terms": self.terms, "support": self.support, "transforms": self.transforms}
        fields.update(changes)
        return Objective(**fields)

    # --- state: support rules that carry one (a Constraint's automaton state) ---

    def _stateful(self):
        return tuple(hasattr(rule, "init_state") for rule in self.support)

    def init(self, batch_shape=()):
        """Per-row state of the support rules that carry one (None for the others)."""
        return tuple(r.init_state(tuple(batch_shape)) if st else None for r, st in zip(self.support, self._stateful(), strict=True))

    def update(self, state, ids):
        """The state after the chosen token ``ids`` (int, the batch shape; -1 keeps a row's state)."""
        self._check_state(state)
        return tuple(r.update_state(x, ids) if st else None for r, x, st in zip(self.support, state, self._stateful(), strict=True))

    def end_status(self, state, batch_shape):
        """Status of rows that stop in ``state`` without an EOS token (OK, or the first
        rule's code: a Constraint says ``CONSTRAINT_INCOMPLETE`` before its match is complete)."""
        status = jnp.zeros(tuple(batch_shape), jnp.int32)
        if any(self._stateful()):
            self._check_state(state)
            for rule, x, st in zip(self.support, state, self._stateful(), strict=True):
                if st and hasattr(rule, "end_status"):
                    status = jnp.where(status == Status.OK, rule.end_status(x), status)
        return status

    @property
    def eos_ids(self) -> tuple:
        """Token ids the support rules end a sequence with (a Constraint's EOS ids)."""
        return tuple(dict.fromkeys(i for r in self.support for i in getattr(r, "eos_ids", ())))

    def _check_state(self, state):
        if state is None:
            raise ValueError(
                "state: this decoder's support rules carry state (a Constraint); pass state=decoder.init(batch_shape) "
                "and move it on with decoder.update(state, ids), or use simplex_decode.generate"
            )
        if not isinstance(state, tuple) or len(state) != len(self.support):
            raise ValueError(
                f"state: must be the tuple decoder.init(batch_shape) returns ({len(self.support)} entries), got {type(state).__name__}"
            )

    def prepare(self, logits, *, history=None, history_mask=None, state=None) -> Problem:
        """Apply the transforms and support rules to ``logits`` (shape ``(..., V)``).

        ``state``: the decoder's state (:meth:`init`) when a support rule carries one (None:
        the initial state). A rule that restricts the domain (a Constraint) is applied first,
        to the logits themselves, so everything after it sees only the tokens it allows."""
        if any(self._stateful()) and state is None:
            state = self.init(jnp.shape(logits)[:-1])
        if state is not None:
            self._check_state(state)
        logits = jnp.asarray(logits)
        if logits.ndim < 1 or logits.shape[-1] < 1:
            raise ValueError(f"logits: must have shape (..., V) with V >= 1, got {logits.shape}")
        if not (jnp.issubdtype(logits.dtype, jnp.floating) or jnp.issubdtype(logits.dtype, jnp.integer)):
            raise ValueError(f"logits: must be a floating-point array, got dtype {logits.dtype}")
        x = logits.astype(compute_dtype(logits.dtype))
        batch = x.shape[:-1]
        nonfinite = jnp.any(jnp.isnan(x) | (x == jnp.inf), axis=-1)
        x = jnp.where(nonfinite[..., None], 0.0, x)
        domain = tuple(getattr(rule, "restricts_domain", False) for rule in self.support)
        for rule, st, d in zip(self.support, state or (None,) * len(self.support), domain, strict=True):
            if d:
                x = rule.apply(x, st)
        if history is not None:
            history = jnp.asarray(history)
            if history.ndim < 1 or history.shape[:-1] != batch:
                raise ValueError(
                    f"history: must have shape batch + (L,) = {batch} + (L,), got {history.shape}"
                )
            if not jnp.issubdtype(history.dtype, jnp.integer):
                raise ValueError(f"history: must hold integer token ids, got dtype {history.dtype}")
            if history_mask is None:
                history_mask = jnp.ones(history.shape, bool)
            else:
                history_mask = jnp.asarray(history_mask, bool)
                if history_mask.shape != history.shape:
                    raise ValueError(
                        f"history_mask: must have the shape of history {history.shape}, got {history_mask.shape}"
                    )
            require(
                ~history_mask | ((history >= 0) & (history < x.shape[-1])),
                f"history: token ids must be in [0, V-1={x.shape[-1] - 1}]",
            )
        ctx = Context(
            logits=x,
            log_model=jax.nn.log_softmax(x, axis=-1),
            history=history,
            history_mask=history_mask,
        )
        s = x
        greedy = jnp.zeros(batch, bool)
        for t in self.transforms:
            s = t(s, ctx)
            g = t.greedy_rows(batch)
            if g is not None:
                greedy = greedy | g
        mask = s > -jnp.inf
        for rule, d in zip(self.support, domain, strict=True):
            if not d:
                mask = rule(s, mask, ctx)
        for term in self.terms:
            # A KL term with weight > 0 forbids tokens its reference gives zero mass.
            if hasattr(term, "log_reference"):
                w = per_row(term.weight, batch)
                mask = mask & ((w == 0) | (term.log_reference(ctx) > -jnp.inf))
        empty = ~jnp.any(mask, axis=-1)
        status = jnp.where(
            nonfinite, Status.NONFINITE_LOGITS, jnp.where(empty, Status.EMPTY_SUPPORT, Status.OK)
        ).astype(jnp.int32)
        return Problem(scores=s, mask=mask, greedy=greedy, status=status, ctx=ctx)

    def value(self, q, problem: Problem):
        """The objective ``<q, s> + Σ c_j φ_j(q)`` per row (``-inf`` off the support)."""
        s = jnp.where(problem.mask, problem.scores, 0.0)
        val = jnp.sum(q * s, axis=-1)
        for term in self.terms:
            c = per_row(term.weight, val.shape, q.dtype)[..., 0]
            val = val + jnp.where(c > 0, c * term.value(q, problem.ctx), 0.0)
        off = jnp.any((q > 0) & ~problem.mask, axis=-1)
        return jnp.where(off, -jnp.inf, val)
