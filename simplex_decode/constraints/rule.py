"""The :class:`Constraint` support rule: structured generation inside any decoder.

A constraint confines the support of every step's distribution to the tokens its automaton
allows in the row's current state,

.. math::

    q^*_t = \\arg\\max_{q \\in \\Delta(V),\\ \\mathrm{supp}\\,q \\subseteq A(z_t) \\cap S(s)}
            \\langle q, s \\rangle + \\sum_j c_j \\varphi_j(q),
    \\qquad z_{t+1} = \\delta(z_t, y_t),

with ``A(z)`` the tokens allowed in state ``z`` (EOS only where ``z`` is accepting) and ``δ``
the transition. It restricts the problem's *domain*: the decoder sees the logits with every
disallowed token at ``-inf`` before anything else (score transforms, the other support
rules, the terms, and the model distribution ``p`` that KL and coverage terms read), so it
solves its own problem on the allowed set — top-p's nucleus, min-p's threshold, Best-of-K's
coverage of the ``top_m`` most likely tokens are all computed among the allowed tokens, exactly
as for a model that put no mass outside them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax.numpy as jnp
import numpy as np

from .._pytree import check_range, is_concrete, per_row, pytree_dataclass, require, set_field, static_field
from ..stateful import Stateful
from ..status import Status
from ..supports import SupportRule
from .compile import Automaton
from .tables import Tables, accepting, advance, host_tables, mask, union

__all__ = ["Constraint", "constrain"]


@pytree_dataclass
class Constraint(SupportRule, Stateful):
    """Structured generation: each row's output must be a complete match of its automaton.

    Args:
      automata: one :class:`~simplex_decode.constraints.Automaton`
        (:func:`~simplex_decode.constraints.regex`, :func:`~simplex_decode.constraints.json_schema`)
        or a sequence of them, all compiled against the same vocabulary.
      which: per row, the index of the automaton it follows (a scalar or an integer array
        aligned with the leading batch axes, as every per-row parameter; default 0). A leaf:
        new values never recompile.

    The rule has state (a :class:`~simplex_decode.Stateful` component) — each row's automaton
    state, int32 — created by :meth:`init_state` and moved on by :meth:`update_state` with the
    chosen tokens (``Decoder.init`` / ``Decoder.sample(state=)`` / ``Decoder.update`` and
    :func:`simplex_decode.generate` do this for you, as for mirostat's μ). State 0 is the dead state (a token
    that was not allowed was fed in): nothing is allowed there, so the row's status becomes
    ``EMPTY_SUPPORT``.

    The tables live on the device (a few hundred KiB for the schemas in the tests; see
    :mod:`simplex_decode.constraints.tables`); automata too large for them are served from
    the host by the library through a callback, with the same result.

    Example:
      >>> import jax, jax.numpy as jnp, simplex_decode as sd
      >>> from simplex_decode.constraints import Vocabulary, regex
      >>> voc = Vocabulary([b"a", b"b", b"ab", None], eos_ids=[3])
      >>> dec = sd.constrain(sd.temperature(1.0), regex("(ab)+", voc))
      >>> state = dec.init()
      >>> dec.probs(jnp.zeros(4), state=state).tolist()   # 'a' or 'ab'; not 'b', not EOS yet
      [0.5, 0.0, 0.5, 0.0]
      >>> ids, state = dec.sample(jax.random.key(0), jnp.array([0.0, 0.0, 9.0, 0.0]), state=state)
      >>> int(ids)                                        # 'ab' (sampled: q = 0.9999)
      2
      >>> dec.probs(jnp.zeros(4), state=state).tolist()   # after 'ab': more, or the end
      [0.3333333432674408, 0.0, 0.3333333432674408, 0.3333333432674408]
    """

    tables: Any
    starts: Any
    which: Any
    eos_ids: tuple = static_field(())
    vocab_size: int = static_field(0)
    names: tuple = static_field(())

    #: applied to the logits before the rest of the objective (see the module docstring)
    restricts_domain = True
    #: a traced ``which`` out of range makes its rows INVALID_PARAMETER (a concrete one raises)
    __rules__ = (
        ("`which` must be in [0, number of automata - 1]",
         lambda self: (self.which >= 0) & (self.which < self.starts.shape[0]), ("which",)),
    )

    def __init__(self, automata: Automaton | Sequence[Automaton], which: Any = 0):
        autos = (automata,) if isinstance(automata, Automaton) else tuple(automata)
        if not autos or not all(isinstance(a, Automaton) for a in autos):
            raise ValueError(
                "Constraint: `automata` must be an Automaton (constraints.regex / constraints.json_schema) "
                "or a non-empty sequence of them"
            )
        voc = autos[0].vocabulary
        for a in autos[1:]:
            if a.vocabulary != voc:
                raise ValueError(
                    f"Constraint: every automaton must be compiled against the same vocabulary; {a.describe()} "
                    f"was compiled against {a.vocabulary}, {autos[0].describe()} against {voc}"
                )
        if all(a.on_device for a in autos):
            tables, starts = union(autos)
            tables = Tables(*(jnp.asarray(x) for x in (tables.token_class, tables.transitions, tables.accepting)))
        else:
            tables, starts = host_tables(autos)
        set_field(self, "tables", tables)
        set_field(self, "starts", jnp.asarray(starts, jnp.int32))
        set_field(self, "which", check_range("Constraint", "which", which, lo=0, hi=len(autos) - 1, integer=True))
        set_field(self, "eos_ids", voc.eos_ids)
        set_field(self, "vocab_size", voc.size)
        set_field(self, "names", tuple(a.describe() for a in autos))

    @property
    def on_device(self) -> bool:
        return isinstance(self.tables, Tables)

    def check_vocab_size(self, V):
        """Raise ValueError unless the logits have the vocabulary size the automata were compiled for."""
        if V != self.vocab_size:
            raise ValueError(
                f"Constraint: compiled for a vocabulary of V={self.vocab_size} token ids ({self.names[0]}), "
                f"but the logits have V={V}; build the Vocabulary from this model's tokenizer "
                "(Vocabulary.from_tokenizer(tok, vocab_size=V) when the model pads its vocabulary)"
            )

    def init_state(self, batch_shape=()):
        """Each row's start state: int32 of shape ``batch_shape``."""
        batch_shape = tuple(batch_shape)
        return self.starts[per_row(self.which, batch_shape, jnp.int32)[..., 0]]

    def allowed(self, state):
        """bool ``state.shape + (V,)``: the tokens allowed in each row's state."""
        return mask(self.tables, state)

    def restrict(self, x, state):
        """``x`` with the disallowed tokens of each row at ``-inf``."""
        self.check_vocab_size(x.shape[-1])
        state = jnp.asarray(state)
        if state.shape != x.shape[:-1]:
            raise ValueError(
                f"Constraint: the state must have the logits' batch shape {x.shape[:-1]}, got {state.shape} "
                "(create it with decoder.init(batch_shape))"
            )
        return jnp.where(self.allowed(state), x, -jnp.inf)

    def __call__(self, scores, mask, ctx):
        """``mask`` confined to the allowed tokens (``Objective.prepare`` applies the rule
        through :meth:`restrict` instead, to the logits, before everything else)."""
        if ctx.state is None:
            raise ValueError("Constraint: carries state; pass state= (from Decoder.init) to probs / sample / solve")
        return mask & self.allowed(ctx.state)

    def update_state(self, state, ids, q_ids=None):
        """The states after the chosen tokens ``ids`` (rows with id -1, a bad row, keep theirs;
        ``q_ids``, the drawn tokens' probabilities, is not needed)."""
        del q_ids
        ids = jnp.asarray(ids)
        if is_concrete(ids) and np.any(np.asarray(ids) >= self.vocab_size):
            raise ValueError(
                f"Constraint: token ids must be in [0, V-1={self.vocab_size - 1}] (the vocabulary it was "
                f"compiled against), got {np.asarray(ids).max()}"
            )
        require(ids < self.vocab_size, f"Constraint: token ids must be in [0, V-1={self.vocab_size - 1}]")
        safe = jnp.clip(ids, 0, self.vocab_size - 1)
        return jnp.where(ids >= 0, advance(self.tables, state, safe), state).astype(jnp.int32)

    def accepting(self, state):
        """Whether each row's output so far is a complete match (EOS is allowed)."""
        return accepting(self.tables, state)

    def end_status(self, state):
        """The status of a row that stops (without EOS) in ``state``: OK when it is a
        complete match, else ``CONSTRAINT_INCOMPLETE``."""
        return jnp.where(self.accepting(state), Status.OK, Status.CONSTRAINT_INCOMPLETE).astype(jnp.int32)


def constrain(decoder, constraint: Constraint | Automaton | Sequence[Automaton], *, which: Any = 0):
    """``decoder`` with its support confined by ``constraint`` (a :class:`Constraint`, or
    automata to build one from with ``which``).

    The decoder's own problem — its transforms, support rules, terms and solver — is
    unchanged; it is solved among the tokens the constraint allows (see :class:`Constraint`).
    """
    if not isinstance(constraint, Constraint):
        constraint = Constraint(constraint, which=which)
    obj = decoder.objective
    if any(isinstance(r, Constraint) for r in obj.support):
        raise ValueError("constrain: the decoder already has a Constraint; pass several automata to one instead")
    at = None if obj.support_at is None else (0,) + obj.support_at  # (it acts on the logits first)
    return type(decoder)(obj.replace(support=(constraint,) + tuple(obj.support), support_at=at), solver=decoder.solver)
