"""Compiled automata on the device: the allowed-token mask and the next state as gathers.

One or several :class:`~simplex_decode.constraints.Automaton` become one :class:`Tables`
(their disjoint union: the states of each in turn after the shared dead state 0, and the
coarsest token classes that refine all of theirs), so rows of one batch may follow different
constraints — each row starts in its own automaton's start state and never leaves it.

* :func:`mask` ``(tables, state) -> bool (..., V)``: ``transitions[state][token_class] != 0``,
  a gather of C entries and one of V per row;
* :func:`advance` ``(tables, state, token) -> state``: ``transitions[state, token_class[token]]``;
* :func:`accepting` ``(tables, state) -> bool``.

All three are pure jnp functions (jit, vmap, no host callback). An automaton too large for a
table (:data:`~simplex_decode.constraints.compile.MAX_TABLE_BYTES`) is served by
:class:`HostTables` instead: the same three functions computed on the host by the library
(outlines-core's ``Index``) through :func:`jax.experimental.io_callback`, one call per step
for the whole batch, with the masks of visited states cached. It gives the same masks and
states as the tables (tested), at the cost of a host round trip per step.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import io_callback

from .._pytree import pytree_dataclass, static_field
from .compile import Automaton

__all__ = ["Tables", "HostTables", "union", "mask", "advance", "accepting"]


@pytree_dataclass
class Tables:
    """Device tables of one or several automata (row 0: the dead state).

    ``token_class`` int32 ``(V,)``, ``transitions`` int32 ``(S, C)`` (0 = not allowed),
    ``accepting`` bool ``(S,)``.
    """

    token_class: Any
    transitions: Any
    accepting: Any

    @property
    def nbytes(self) -> int:
        return sum(int(np.prod(a.shape)) * a.dtype.itemsize for a in (self.token_class, self.transitions, self.accepting))


def union(automata: Sequence[Automaton]) -> tuple[Tables, np.ndarray]:
    """The disjoint union of device automata as one numpy :class:`Tables`, and each one's start row."""
    V = automata[0].vocab_size
    combined = np.zeros(V, np.int64)
    for a in automata:
        _, combined = np.unique(combined * (int(a.token_class.max()) + 1) + a.token_class, return_inverse=True)
    C = int(combined.max()) + 1
    reps = np.zeros(C, np.int64)
    reps[combined[::-1]] = np.arange(V)[::-1]  # lowest token id of each class
    S = 1 + sum(a.transitions.shape[0] - 1 for a in automata)
    table = np.zeros((S, C), np.int32)
    acc = np.zeros(S, bool)
    starts = []
    offset = 1
    for a in automata:
        n = a.transitions.shape[0] - 1
        cols = a.transitions[1:, a.token_class[reps]]  # (n, C)
        table[offset:offset + n] = np.where(cols > 0, cols + offset - 1, 0)
        acc[offset:offset + n] = a.accepting[1:]
        starts.append(offset + a.start - 1)
        offset += n
    return Tables(combined.astype(np.int32), table, acc), np.asarray(starts, np.int32)


class _Host:
    """Host-side automata (outlines-core Index objects) behind :class:`HostTables`.

    Rows are numbered as they are first visited (row 0 is the dead state), so the device
    only ever sees int32 states; masks of visited rows are cached (LRU).
    """

    def __init__(self, automata: Sequence[Automaton], cache_size: int = 4096):
        self.automata = tuple(automata)
        self.V = automata[0].vocab_size
        self.eos = np.asarray(automata[0].eos_ids, np.int64)
        self.rows: list[tuple[int, int]] = [(-1, -1)]
        self.row_of: dict[tuple[int, int], int] = {}
        self.cache: OrderedDict = OrderedDict()
        self.cache_size = cache_size
        self.lock = threading.Lock()
        self.starts = np.asarray([self._row(k, a.index.get_initial_state()) for k, a in enumerate(automata)], np.int32)

    def _row(self, k, lib_state):
        key = (k, lib_state)
        r = self.row_of.get(key)
        if r is None:
            r = self.row_of[key] = len(self.rows)
            self.rows.append(key)
        return r

    def _next(self, k, lib_state, token):
        a = self.automata[k]
        nxt = a.index.get_next_state(lib_state, int(token))
        if nxt is None or nxt in a.pruned_library_states:
            return 0
        return self._row(k, nxt)

    def _mask(self, r):
        m = self.cache.get(r)
        if m is not None:
            self.cache.move_to_end(r)
            return m
        m = np.zeros(self.V, bool)
        if r:
            k, s = self.rows[r]
            a = self.automata[k]
            toks = np.asarray(a.index.get_allowed_tokens(s), np.int64)
            toks = toks[~np.isin(toks, self.eos)]
            if a.pruned_library_states:
                toks = np.asarray([t for t in toks.tolist() if a.index.get_next_state(s, t) not in a.pruned_library_states], np.int64)
            m[toks] = True
            m[self.eos] = bool(a.index.is_final_state(s))
        self.cache[r] = m
        if len(self.cache) > self.cache_size:
            self.cache.popitem(last=False)
        return m

    def masks(self, states):
        with self.lock:
            states = np.asarray(states)
            return np.stack([self._mask(int(r)) for r in states.reshape(-1)]).reshape(states.shape + (self.V,))

    def advance(self, states, tokens):
        with self.lock:
            states, tokens = np.asarray(states), np.asarray(tokens)
            out = np.zeros(states.shape, np.int32)
            for i, (r, t) in enumerate(zip(states.reshape(-1).tolist(), tokens.reshape(-1).tolist(), strict=True)):
                if r == 0:
                    continue
                k, s = self.rows[r]
                if t in self.eos:
                    out.flat[i] = r if self.automata[k].index.is_final_state(s) else 0
                else:
                    out.flat[i] = self._next(k, s, t)
            return out

    def accepting(self, states):
        with self.lock:
            states = np.asarray(states)
            flat = [r != 0 and bool(self.automata[self.rows[r][0]].index.is_final_state(self.rows[r][1]))
                    for r in states.reshape(-1).tolist()]
            return np.asarray(flat, bool).reshape(states.shape)


@pytree_dataclass
class HostTables:
    """The host-side stand-in for :class:`Tables` (no arrays; the automata stay in the library)."""

    host: Any = static_field()

    @property
    def nbytes(self) -> int:
        return 0


def _shape_dtype(shape, dtype):
    return jax.ShapeDtypeStruct(tuple(shape), dtype)


def mask(tables, state):
    """The allowed tokens of each row's state: bool ``state.shape + (V,)``."""
    state = jnp.asarray(state, jnp.int32)
    if isinstance(tables, HostTables):
        h = tables.host
        return io_callback(h.masks, _shape_dtype(state.shape + (h.V,), jnp.bool_), state, ordered=False)
    rows = tables.transitions[state]  # (..., C)
    return jnp.take(rows, tables.token_class, axis=-1) != 0


def advance(tables, state, token):
    """The state after ``token`` (0, the dead state, if ``token`` was not allowed)."""
    state = jnp.asarray(state, jnp.int32)
    token = jnp.asarray(token, jnp.int32)
    if isinstance(tables, HostTables):
        shape = jnp.broadcast_shapes(state.shape, token.shape)
        state, token = jnp.broadcast_to(state, shape), jnp.broadcast_to(token, shape)
        return io_callback(tables.host.advance, _shape_dtype(shape, jnp.int32), state, token, ordered=False)
    return tables.transitions[state, tables.token_class[token]]


def accepting(tables, state):
    """Whether each row's text so far is a complete match."""
    state = jnp.asarray(state, jnp.int32)
    if isinstance(tables, HostTables):
        return io_callback(tables.host.accepting, _shape_dtype(state.shape, jnp.bool_), state, ordered=False)
    return tables.accepting[state]


def host_tables(automata: Sequence[Automaton]) -> tuple[HostTables, np.ndarray]:
    """Host-side tables of the automata, and each one's start row."""
    h = _Host(automata)
    return HostTables(h), h.starts
