"""The Objective: score transforms + weighted concave terms + a chain of support rules.

.. math::

    q^*(s) = \\arg\\max_{q \\in \\Delta(V),\\ \\mathrm{supp}(q) \\subseteq S(s)}
             \\langle q, s \\rangle + \\sum_j c_j \\varphi_j(q)

with ``s = T_n(… T_1(logits))`` (``transforms``), the terms ``φ_j`` with weights ``c_j``
(``terms``; each term carries its ``weight``) and ``S`` the intersection of the support
rules applied in order (``support``). An Objective is an immutable pytree: numeric
parameters are leaves, so new values (or per-row arrays of them) reuse one compilation.

By default every rule reads the final scores ``s`` (temperature before truncation, as
transformers and vLLM apply them). ``support_at`` places the rules inside the chain of
transforms instead: rule ``j`` reads the scores after the first ``support_at[j]``
transforms (non-decreasing in ``j``), on the tokens finite there and kept by the rules
before it, and the transforms after it act on what it kept — llama.cpp's sampler chain,
where truncation reads the untempered scores and temperature comes last
(``sd.chain(..., order="llama.cpp")``). The problem is still solved on the final ``s``.

Status is computed at every stage of :meth:`Objective.prepare`, per row, and the first
stage that fails is recorded (``Problem.stage``, an index into
:meth:`Objective.stage_names`) so that errors name it:

* the logits: NaN or ``+inf`` → ``NONFINITE_LOGITS``; every logit ``−inf`` → ``EMPTY_SUPPORT``;
* after each transform: NaN or ``+inf`` from finite scores, or a row with finite scores
  left with none, → ``NONFINITE_SCORES`` — unless the transform bans tokens on purpose
  (``ScoreTransform.bans``: then no allowed token is ``EMPTY_SUPPORT``);
* after each support rule (and the KL terms' references): no token left → ``EMPTY_SUPPORT``.

Every solver and rule is invariant to adding a constant to a row of scores, and prepare
uses it where the chain allows (every transform from that point on declares
``ScoreTransform.shift_equivariant``): before a transform that rescales (a temperature)
each row is shifted to a maximum of 0, so ``(s − max s) / t`` keeps every difference and
never overflows; a row on which any other transform overflows (a bias added to logits
near the float maximum) is recomputed from its scores shifted by their maximum — only
when some row needs it, and row by row. A sign-dependent transform (CTRL's
``RepetitionPenalty``) from that point on cannot be shifted, and its overflow is
reported. ``Problem.scores`` of a tempered chain are therefore the tempered logits up to
a per-row constant.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ._numerics import cond, masked_log_softmax, row_shift
from ._pytree import is_concrete, params_ok, per_row, pytree_dataclass, require, set_field, static_field
from .scores import ScoreTransform
from .stateful import Stateful, component_keys
from .status import Status
from .supports import SupportRule
from .terms import Term

__all__ = ["Objective", "Context", "Problem", "compute_dtype", "as_logits"]


class Context(NamedTuple):
    """What transforms, rules and terms may read besides the scores.

    ``logits``: the model's logits in the compute dtype (rows with NaN/+inf replaced by
    zeros; they are flagged in ``Problem.status``). ``log_model``: ``log_softmax(logits)``,
    the model's own distribution. ``history``/``history_mask``: previous token ids per
    row (``(..., L)``) and which of them are real (not padding), or None.
    ``second_logits``: a second set of logits over the same vocabulary (``(..., V)``, or
    ``(..., J, V)`` for J candidates such as DoLa's early layers) in the compute dtype, or
    None: the unconditional / negative stream of CFG, an amateur model, early layers.
    ``key``: per-row random keys of the component being called (components with
    ``needs_key``), else None. ``state``: the state of the component being called
    (:class:`~simplex_decode.stateful.Stateful` components), else None.
    """

    logits: Any
    log_model: Any
    history: Any = None
    history_mask: Any = None
    second_logits: Any = None
    key: Any = None
    state: Any = None


class Problem(NamedTuple):
    """An Objective instantiated on logits: everything a solver needs."""

    scores: Any  # s, (..., V)
    mask: Any  # support, bool (..., V)
    greedy: Any  # rows decoded by argmax (temperature 0), bool (...,)
    status: Any  # Status code per row, int32 (...,)
    ctx: Context
    stage: Any = None  # first failing stage per row (Objective.stage_names), -1: none / the logits


def compute_dtype(dtype):
    """float32 for half-precision (and integer) logits, float64 kept when x64 is on."""
    dtype = jnp.dtype(dtype)
    return jnp.float64 if dtype == jnp.float64 else jnp.float32


def as_logits(logits, name: str = "logits"):
    """``logits`` as a JAX array of shape ``(..., V)``, ``V ≥ 1``, of a real dtype.

    Floating-point logits keep their dtype (they are computed in :func:`compute_dtype`);
    integer logits are accepted as the numbers they are (and computed in float32). Strings,
    objects, booleans and complex numbers raise ``ValueError`` naming ``name``.
    """
    what = f"{name}: must be a real (floating-point or integer) array of shape (..., V) with V >= 1"
    if isinstance(logits, str) or not hasattr(logits, "dtype") and not isinstance(logits, (list, tuple, int, float)):
        raise ValueError(f"{what}, got {type(logits).__name__} {logits!r:.80}")
    if not hasattr(logits, "dtype"):
        try:
            logits = np.asarray(logits)
        except (ValueError, TypeError):  # ragged lists
            raise ValueError(f"{what}, got {logits!r:.80}") from None
    if not (jnp.issubdtype(logits.dtype, jnp.floating) or jnp.issubdtype(logits.dtype, jnp.integer)):
        raise ValueError(f"{what}, got dtype {logits.dtype}")
    logits = jnp.asarray(logits)
    if logits.ndim < 1 or logits.shape[-1] < 1:
        raise ValueError(f"{what}, got shape {logits.shape}")
    return logits


def _check_history(history, history_mask, batch, vocab_size):
    """``(history, history_mask, rows_ok)`` checked against logits ``batch + (V,)``.

    ``history``: integer ids ``batch + (L,)``; ``history_mask``: bool (or 0/1 integers) of
    the same shape, or None (all real). Shapes and dtypes raise ``ValueError`` naming the
    argument; ids outside ``[0, V-1]`` at real entries raise when known in Python, else
    (traced) are a ``checkify`` check and make the row's ``rows_ok`` False.
    """
    if history is None:
        if history_mask is not None:
            raise ValueError("history_mask: given without `history`")
        return None, None, True
    history = _int_array("history", history, "integer token ids")
    if history.ndim < 1 or history.shape[:-1] != batch:
        raise ValueError(f"history: must have shape batch + (L,) = {batch} + (L,), got {history.shape}")
    if history_mask is None:
        history_mask = jnp.ones(history.shape, bool)
    else:
        history_mask = _int_array("history_mask", history_mask, "booleans (or 0/1 integers)", boolean=True)
        if history_mask.shape != history.shape:
            raise ValueError(f"history_mask: must have the shape of history {history.shape}, got {history_mask.shape}")
        if history_mask.dtype != jnp.bool_:
            require((history_mask == 0) | (history_mask == 1), "history_mask: integer entries must be 0 or 1")
            history_mask = history_mask != 0
    valid = ~history_mask | ((history >= 0) & (history < vocab_size))
    require(valid, f"history: token ids must be in [0, V-1={vocab_size - 1}]")
    return history, history_mask, jnp.all(valid, axis=-1)


def _int_array(name, x, what, boolean=False):
    if isinstance(x, str) or not hasattr(x, "dtype") and not isinstance(x, (list, tuple, int)):
        raise ValueError(f"{name}: must be an array of {what}, got {type(x).__name__} {x!r:.80}")
    try:
        x = x if hasattr(x, "dtype") else np.asarray(x)
    except (ValueError, TypeError):
        raise ValueError(f"{name}: must be an array of {what}, got {x!r:.80}") from None
    if not (jnp.issubdtype(x.dtype, jnp.integer) or (boolean and x.dtype == jnp.bool_)):
        raise ValueError(f"{name}: must be an array of {what}, got dtype {x.dtype}")
    return jnp.asarray(x)


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


def _check_second(second, x):
    """``second_logits`` in the compute dtype (NaN/+inf rows zeroed) and its bad rows."""
    second = jnp.asarray(second)
    batch, V = x.shape[:-1], x.shape[-1]
    ok_shape = second.shape[-1:] == (V,) and second.shape[: len(batch)] == batch and second.ndim in (
        len(batch) + 1, len(batch) + 2)
    if not ok_shape:
        raise ValueError(
            f"second_logits: must have the logits' shape batch + (V,) = {batch + (V,)} or batch + (J, V), "
            f"got {second.shape}"
        )
    if not (jnp.issubdtype(second.dtype, jnp.floating) or jnp.issubdtype(second.dtype, jnp.integer)):
        raise ValueError(f"second_logits: must be a floating-point array, got dtype {second.dtype}")
    second = second.astype(x.dtype)
    bad = jnp.isnan(second) | (second == jnp.inf)
    bad = jnp.any(bad.reshape(batch + (-1,)), axis=-1)
    extra = (1,) * (second.ndim - len(batch))
    return jnp.where(bad.reshape(batch + extra), 0.0, second), bad


@pytree_dataclass
class Objective:
    """``argmax_{q ∈ Δ, supp q ⊆ S(s)} <q, s> + Σ_j c_j φ_j(q)``.

    Args:
      terms: concave terms (:mod:`simplex_decode.terms`), each with its weight ``c_j``.
        No terms (or all weights 0) means the linear problem: argmax of ``s``.
      support: a support rule or a tuple of them, applied in order.
      transforms: score transforms applied to the logits in order.
      support_at: None (every rule reads the final scores), or one integer per rule: how
        many of the transforms have been applied to the scores it reads (static;
        non-decreasing; a tuple equal to ``len(transforms)`` everywhere is stored as None).

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
    support_at: Any = static_field(None)

    def __post_init__(self):
        set_field(self, "terms", _as_tuple(self.terms, Term, "terms"))
        set_field(self, "support", _as_tuple(self.support, SupportRule, "support"))
        set_field(self, "transforms", _as_tuple(self.transforms, ScoreTransform, "transforms"))
        set_field(self, "support_at", _check_support_at(self.support_at, len(self.support), len(self.transforms)))

    @property
    def separable(self) -> bool:
        return all(t.separable for t in self.terms)

    @property
    def stage_names(self) -> tuple[str, ...]:
        """Names of the stages of :meth:`prepare`, indexed by ``Problem.stage``: the
        transforms, then the support rules, then the terms' reference supports."""
        names = [f"transform {i} ({type(t).__name__})" for i, t in enumerate(self.transforms)]
        names += [f"support rule {j} ({type(r).__name__})" for j, r in enumerate(self.support)]
        return (*names, "the KL terms' references")

    @property
    def stateful(self) -> tuple:
        """The components that carry state (transforms, then support rules), in order."""
        return tuple(c for c in self.transforms + self.support if isinstance(c, Stateful))

    def init_state(self, batch_shape=()) -> tuple:
        """The initial state: one entry per :attr:`stateful` component (``()`` if none)."""
        return tuple(c.init_state(tuple(batch_shape)) for c in self.stateful)

    def _full_state(self, batch, state):
        """``state`` checked against :attr:`stateful` (None: the initial state)."""
        stateful = self.stateful
        if state is None:
            return self.init_state(batch)
        if not isinstance(state, tuple) or len(state) != len(stateful):
            raise ValueError(
                f"state: must be this decoder's state (a tuple of {len(stateful)} entries, from "
                f"Decoder.init), got {type(state).__name__}"
                + (f" of {len(state)} entries" if isinstance(state, tuple) else "")
            )
        return state

    def _slots(self) -> dict:
        """``{position: slot}``: where each stateful component (by its position among the
        transforms followed by the support rules) keeps its entry of the state tuple."""
        positions = [i for i, c in enumerate(self.transforms + self.support) if isinstance(c, Stateful)]
        return {position: slot for slot, position in enumerate(positions)}

    def _binder(self, ctx, batch, key, state):
        """``bind(position, component)``: ``ctx`` with the component's own key and state."""
        state = self._full_state(batch, state)
        slots = self._slots()

        def bind(position, component):
            changes = {}
            if position in slots:
                changes["state"] = state[slots[position]]
            if getattr(component, "needs_key", False) and key is not None:
                changes["key"] = component_keys(key, batch, 1 + position)
            return ctx._replace(**changes) if changes else ctx

        return bind

    def _restrict_domain(self, x, batch, state):
        """``x`` with every token outside the domain of a rule that restricts it (a
        :class:`~simplex_decode.constraints.Constraint`, ``restricts_domain = True``) at
        ``-inf``: applied to the logits themselves, before the context is built, so the
        transforms, the other rules, the terms and the model distribution ``p`` all see only
        the allowed tokens (the decoder solves its own problem on the allowed set)."""
        slots, first = None, len(self.transforms)
        for i, rule in enumerate(self.support):
            if getattr(rule, "restricts_domain", False):
                if slots is None:
                    state, slots = self._full_state(batch, state), self._slots()
                x = rule.restrict(x, state[slots[first + i]])
        return x

    def end_status(self, state, batch_shape):
        """The status of rows that stop in ``state`` without an EOS token: OK, or the code of
        the first stateful component that objects (a Constraint whose match is unfinished:
        ``CONSTRAINT_INCOMPLETE``)."""
        status = jnp.zeros(tuple(batch_shape), jnp.int32)
        state = self._full_state(tuple(batch_shape), state)
        for component, st in zip(self.stateful, state, strict=True):
            if hasattr(component, "end_status"):
                status = jnp.where(status == Status.OK, component.end_status(st), status).astype(jnp.int32)
        return status

    @property
    def eos_ids(self) -> tuple:
        """Token ids a support rule ends every sequence with (a Constraint's EOS ids): the
        generation loop must stop on them."""
        return tuple(dict.fromkeys(i for r in self.support for i in getattr(r, "eos_ids", ())))

    def replace(self, **changes) -> Objective:
        """A copy with some fields replaced (validated like a new Objective)."""
        fields = {"terms": self.terms, "support": self.support, "transforms": self.transforms,
                  "support_at": self.support_at}
        fields.update(changes)
        return Objective(**fields)

    def prepare(self, logits, *, history=None, history_mask=None, second_logits=None, key=None,
                state=None) -> Problem:
        """Apply the transforms and support rules to ``logits`` (shape ``(..., V)``).

        Called eagerly it runs as one compiled program (see :func:`eager_logits`).

        ``second_logits``: a second logits array (``batch + (V,)`` or ``batch + (J, V)``)
        for components that contrast two sources (CFG, contrastive decoding, DoLa); its
        NaN/+inf rows are flagged like the logits'. ``key``: one key or one per row, for
        components that draw randomness (XTC). ``state``: the decoder's state (from
        :meth:`init_state`; None: the initial state). A rule that restricts the domain (a
        Constraint) acts first, on the logits themselves (see :meth:`_restrict_domain`).
        """
        inputs = dict(history=history, history_mask=history_mask, second_logits=second_logits, key=key,
                      state=state)
        eager = eager_logits(self, logits, inputs)
        if eager is not None:
            return _prepare_compiled(self, eager, inputs)
        return self._prepare(logits, **inputs)

    def _prepare(self, logits, *, history=None, history_mask=None, second_logits=None, key=None,
                 state=None) -> Problem:
        logits = as_logits(logits)
        batch, vocab_size = logits.shape[:-1], logits.shape[-1]
        history, history_mask, args_ok = _check_history(history, history_mask, batch, vocab_size)
        # Declared parameters: shapes against the logits (ValueError naming them), traced values per row.
        args_ok = params_ok(self, batch, vocab_size) & args_ok
        x = logits.astype(compute_dtype(logits.dtype))
        nonfinite = jnp.any(jnp.isnan(x) | (x == jnp.inf), axis=-1)
        if second_logits is not None:
            second_logits, bad_second = _check_second(second_logits, x)
            nonfinite = nonfinite | bad_second
        x = jnp.where(nonfinite[..., None], 0.0, x)
        x = self._restrict_domain(x, batch, state)
        ctx = Context(
            logits=x,
            log_model=masked_log_softmax(x, x > -jnp.inf),
            history=history,
            history_mask=history_mask,
            second_logits=second_logits,
        )
        bind = self._binder(ctx, batch, key, state)
        # The first failure of a row wins: parameters, logits, then each stage in turn.
        flags = _Flags(jnp.full(batch, Status.OK, jnp.int32), jnp.full(batch, -1, jnp.int32))
        flags = flags.set(~args_ok, Status.INVALID_PARAMETER, -1)
        flags = flags.set(nonfinite, Status.NONFINITE_LOGITS, -1)
        flags = flags.set(~jnp.any(x > -jnp.inf, axis=-1), Status.EMPTY_SUPPORT, -1)
        s = x
        greedy = jnp.zeros(batch, bool)
        n_t = len(self.transforms)
        at = self.support_at if self.support_at is not None else (n_t,) * len(self.support)
        mask = None  # the support so far, once a rule has run (None: every finite score)

        def apply_rules(s, mask, flags, position):
            """The rules that read the scores after ``position`` transforms, in order."""
            for j, rule in enumerate(self.support):
                if at[j] != position or getattr(rule, "restricts_domain", False):  # (those acted on x)
                    continue
                mask = s > -jnp.inf if mask is None else mask & (s > -jnp.inf)
                new = rule(s, mask, bind(n_t + j, rule))
                flags = flags.set(jnp.any(mask, axis=-1) & ~jnp.any(new, axis=-1), Status.EMPTY_SUPPORT, n_t + j)
                mask = new
            return mask, flags

        for i, t in enumerate(self.transforms):
            mask, flags = apply_rules(s, mask, flags, i)
            shiftable = all(u.shift_equivariant for u in self.transforms[i:])
            if shiftable and t.rescales:  # (s − max s) / t: exact differences, no overflow
                s = s - row_shift(s, s > -jnp.inf)
            s, overflow, banned = _transform(t, s, bind(i, t), shiftable)
            flags = flags.set(overflow, Status.NONFINITE_SCORES, i).set(banned, Status.EMPTY_SUPPORT, i)
            if mask is not None:  # a transform after some rules: what it bans leaves the support
                kept = mask & (s > -jnp.inf)
                flags = flags.set(jnp.any(mask, axis=-1) & ~jnp.any(kept, axis=-1), Status.EMPTY_SUPPORT, i)
                mask = kept
            g = t.greedy_rows(batch)
            if g is not None:
                greedy = greedy | g
        mask, flags = apply_rules(s, mask, flags, n_t)
        if mask is None:
            mask = s > -jnp.inf
        before = mask
        for term in self.terms:
            # A KL term with weight > 0 forbids tokens its reference gives zero mass.
            if hasattr(term, "log_reference"):
                w = per_row(term.weight, batch)
                mask = mask & ((w == 0) | (term.log_reference(ctx) > -jnp.inf))
        stage_refs = n_t + len(self.support)
        flags = flags.set(jnp.any(before, axis=-1) & ~jnp.any(mask, axis=-1), Status.EMPTY_SUPPORT, stage_refs)
        return Problem(scores=s, mask=mask, greedy=greedy, status=flags.status, ctx=ctx, stage=flags.stage)

    def value(self, q, problem: Problem):
        """The objective ``<q, s> + Σ c_j φ_j(q)`` per row (``-inf`` off the support)."""
        s = jnp.where(problem.mask, problem.scores, 0.0)
        val = jnp.sum(q * s, axis=-1)
        for term in self.terms:
            c = per_row(term.weight, val.shape, q.dtype)[..., 0]
            val = val + jnp.where(c > 0, c * term.value(q, problem.ctx), 0.0)
        off = jnp.any((q > 0) & ~problem.mask, axis=-1)
        return jnp.where(off, -jnp.inf, val)


def _check_support_at(support_at, n_rules, n_transforms):
    """``support_at`` as a tuple of ints (one per rule, non-decreasing, in ``[0, n_transforms]``),
    or None — also for the default placement (every rule after every transform)."""
    if support_at is None:
        return None
    what = (
        f"Objective: `support_at` must be None or {n_rules} integers (one per support rule), "
        f"non-decreasing, each in [0, {n_transforms}] (the number of transforms before the rule)"
    )
    try:
        at = tuple(support_at)
    except TypeError:
        raise ValueError(f"{what}, got {support_at!r}") from None
    ok = len(at) == n_rules and all(
        isinstance(a, (int, np.integer)) and not isinstance(a, bool) and 0 <= a <= n_transforms for a in at
    )
    if not ok or any(at[i + 1] < at[i] for i in range(len(at) - 1)):
        raise ValueError(f"{what}, got {support_at!r}")
    at = tuple(int(a) for a in at)
    return None if all(a == n_transforms for a in at) else at


class _Flags(NamedTuple):
    """Per-row status and the stage that set it; the first failure of a row wins."""

    status: Any
    stage: Any

    def set(self, bad, code, stage) -> _Flags:
        new = (self.status == Status.OK) & bad
        return _Flags(
            jnp.where(new, jnp.int32(code), self.status),
            jnp.where(new, jnp.int32(stage), self.stage),
        )


def _check_transform(before, after, bans):
    """Per row: ``(overflow, banned)`` — NaN/``+inf`` in the output, or a row with a finite
    score left with none (``banned`` when the transform bans on purpose, else overflow)."""
    bad = jnp.any(jnp.isnan(after) | (after == jnp.inf), axis=-1)
    dead = jnp.any(before > -jnp.inf, axis=-1) & ~jnp.any(after > -jnp.inf, axis=-1)
    return (bad | dead, jnp.zeros_like(dead)) if not bans else (bad, dead & ~bad)


def _transform(t, s, ctx, shiftable):
    """``t(s)`` and its per-row ``(overflow, banned)`` flags. When ``shiftable`` (``t`` and
    every later transform are shift-equivariant), rows that overflow are recomputed from
    ``s − max s`` — only when some row needs it, and row by row."""
    out = t(s, ctx)
    overflow, banned = _check_transform(s, out, t.bans)
    if not shiftable:
        return out, overflow, banned

    def retry(out, overflow, banned):
        again = t(s - row_shift(s, s > -jnp.inf), ctx)
        out = jnp.where(overflow[..., None], again, out)
        o2, b2 = _check_transform(s, out, t.bans)
        return out, o2, b2

    return cond(jnp.any(overflow), retry, lambda *a: a, out, overflow, banned)


_INPUT_LEAVES = (jax.Array, np.ndarray, np.generic, int, float, bool)


def eager_logits(tree, logits, inputs):
    """``logits`` as an array when ``tree`` (an Objective or a Decoder) is called eagerly
    and may run as one compiled program, else None.

    Eager means nothing is traced (no ``jit``, ``vmap``, ``grad`` around the call) and the
    other inputs are arrays, pytrees of arrays (a state, a key) or None. Op by op, every
    ``lax.while_loop`` / ``fori_loop`` of a decoder's program (built from closures) would
    compile again at every call — about 1.6 s per ``top_p(...).probs`` call on CPU. The
    compiled program is cached by the tree's structure (its static fields) and the inputs'
    shapes and dtypes; float parameters are its arguments, so new values reuse it. What a
    trace cannot check — a parameter's value against a bound in ``V``, a ``history`` id
    against ``[0, V-1]`` — is checked here first, raising ``ValueError`` naming the parameter as an
    op-by-op call would (``jax.disable_jit()`` still runs op by op).
    """
    leaves = jax.tree_util.tree_leaves((tree, inputs))
    if not is_concrete(logits) or not all(isinstance(x, _INPUT_LEAVES) for x in leaves):
        return None
    if any(isinstance(x, jax.core.Tracer) for x in leaves):
        return None
    logits = as_logits(logits)
    params_ok(tree, logits.shape[:-1], logits.shape[-1])
    history, mask = inputs.get("history"), inputs.get("history_mask")
    _check_history(history, mask, logits.shape[:-1], logits.shape[-1])  # ids in [0, V-1], 0/1 masks
    return logits


@jax.jit
def _prepare_compiled(objective, logits, inputs):
    return objective._prepare(logits, **inputs)
