"""Candidate windows: solve a threshold problem on the few largest entries of a row, exactly.

Threshold rules (top-k, top-p, typical, sparsemax, entmax, the exact solver's sparse rows,
the top-m coverage weights) keep only entries above a per-row threshold, and in
language-model logits those entries are few. This module is the one implementation of
"look at the largest entries only, and prove that it was enough":

* :func:`window` cuts each row into blocks of ``block`` entries and keeps the ``n_select``
  blocks with the largest maxima (one pass over the row plus a selection among ~V/block
  block maxima), gathered in token-id order: a :class:`Window`, with ``outside``, the
  largest entry *not* in it. Any ``n_select`` largest entries of the row lie in it.
* :meth:`Window.top` narrows a window to its ``n`` largest entries, largest first (ties:
  lowest id first): :class:`Candidates` — ``values``, their token ``ids`` and ``rest``, an
  upper bound on every entry of the row that is not a candidate (the larger of the
  window's ``outside`` and the window's ``n+1``-th largest value). :meth:`Window.all`
  takes the whole window as the candidates (``rest = outside``).
* The certificate is the caller's: a threshold ``t`` computed from the candidates alone
  is the row's threshold when every other entry provably lies on the right side of it —
  ``rest < t`` (or ``≤``, or a mass condition; each rule states its own). Rows whose
  certificate fails take the caller's full-row algorithm, row by row: :func:`choose`.

Per-row fallback and bitwise row independence: :func:`choose` runs the full-row algorithm
only on the rows that fail (gathered into bounded sub-batches, then scattered back), and
keeps the candidate result on the others, so one flat row costs a sub-batch of full rows,
not the whole batch, and a row's result never depends on which path its neighbours take.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from ._numerics import cond

__all__ = [
    "BLOCK", "WINDOW_BLOCKS", "Window", "Candidates", "window", "take_blocks", "scatter", "scatter_ids", "choose", "fallback_cap",
]

BLOCK = 64
WINDOW_BLOCKS = 128


class Candidates(NamedTuple):
    """A few entries of each row and a bound on all the others.

    ``values`` and ``ids`` are ``(..., n)`` (ids ``≥ length`` mark padding, whose value is
    the window's fill); ``rest`` is ``(..., 1)``: every entry of the row that is not a
    candidate is ``≤ rest``.
    """

    values: object
    ids: object
    rest: object
    length: int

    def scatter(self, vals, fill=0):
        """Full rows ``(..., length)`` holding ``vals`` (``(..., n)``) at the candidates' ids
        and ``fill`` elsewhere (padding candidates are dropped)."""
        base = jnp.full(vals.shape[:-1] + (self.length,), fill, vals.dtype)
        return scatter_ids(base, self.ids, vals)


class Window(NamedTuple):
    values: tuple  # each (..., n_select * block), entries in token-id order
    blocks: object  # (..., n_select) int32 block ids, ascending
    outside: object  # (..., 1) max of the selecting array outside the window
    n_blocks: int  # blocks in the row
    length: int  # the row length V
    block: int = BLOCK  # entries per block

    @property
    def ids(self):
        """Token ids of the window entries, ``(..., n_select * block)`` int32."""
        gid = self.blocks[..., None] * self.block + jnp.arange(self.block, dtype=jnp.int32)
        return gid.reshape(self.blocks.shape[:-1] + (-1,))

    def top(self, n: int) -> Candidates:
        """The ``n`` largest entries of the selecting array in the window, largest first
        (ties: lowest id first), and ``rest``: the larger of ``outside`` and the next
        largest entry of the window, a bound on every entry that is not a candidate.

        Uses only ``lax.top_k``'s indices (then gathers): XLA's CPU top-k custom call,
        never a sort.
        """
        (w,) = self.values[:1]
        n = min(n, w.shape[-1] - 1)
        pos = lax.top_k(w, n + 1)[1]
        vals = jnp.take_along_axis(w, pos, axis=-1)
        ids = jnp.take_along_axis(self.ids, pos, axis=-1)
        # the (n+1)-th is only a bound: masked out of the candidates, not sliced off
        last = lax.broadcasted_iota(jnp.int32, pos.shape, pos.ndim - 1) == n
        rest = jnp.maximum(self.outside, jnp.max(jnp.where(last, vals, -jnp.inf), axis=-1, keepdims=True))
        fill = jnp.asarray(-jnp.inf, w.dtype)
        return Candidates(jnp.where(last, fill, vals), jnp.where(last, self.length, ids), rest, self.length)

    def all(self) -> Candidates:
        """The whole window as the candidates (token-id order; ``rest = outside``)."""
        return Candidates(self.values[0], self.ids, self.outside, self.length)

    def scatter(self, values):
        """Full rows equal to ``values`` (``(..., n_select·block)``) on the window, 0 elsewhere."""
        return scatter(self, values)


def window(select, *others, fill, block=BLOCK, n_select=WINDOW_BLOCKS):
    """The window chosen by ``select``'s block maxima; gathers ``select`` and ``others``.

    The row is cut into blocks of ``block`` entries and the ``n_select`` blocks with the
    largest maxima are kept (ties: lowest block ids), so the window holds at least the
    ``n_select`` largest entries. ``select`` is float32 (XLA's CPU top-k is fast only for
    floats; callers with float64 rows use their full-row path). ``fill`` pads it to a whole
    number of blocks and must be below every value that matters (``-inf`` for scores, ``0``
    for probabilities). Returns ``None`` when the row is not longer than the window
    (callers then use the full row).
    """
    V = select.shape[-1]
    nb = -(-V // block)
    if nb <= n_select + 1:
        return None
    batch = select.shape[:-1]

    def blocks(a, pad_value):
        pad = nb * block - V
        if pad:
            a = jnp.pad(a, [(0, 0)] * (a.ndim - 1) + [(0, pad)], constant_values=pad_value)
        return a.reshape(batch + (nb, block))

    sb = blocks(select, fill)
    bmax = jnp.max(sb, axis=-1)
    # lax.top_k's indices only: XLA CPU's fast top-k custom call
    top_ids = lax.top_k(bmax, n_select)[1].astype(jnp.int32)
    rest = jnp.put_along_axis(bmax, top_ids, -jnp.inf, axis=-1, inplace=False)
    outside = jnp.max(rest, axis=-1, keepdims=True)
    ids = jnp.sort(top_ids, axis=-1)
    gathered = [take_blocks(sb, ids)]
    for a in others:
        pad_value = False if a.dtype == jnp.bool_ else 0
        gathered.append(take_blocks(blocks(a, pad_value), ids))
    flat = tuple(g.reshape(batch + (n_select * block,)) for g in gathered)
    return Window(flat, ids, outside, nb, V, block)


def take_blocks(a, ids):
    """``a[..., ids[...], :]`` as whole-block slices (a per-element gather is slow on CPU)."""
    batch = ids.shape[:-1]
    n = math.prod(batch)
    flat = a.reshape((n,) + a.shape[-2:])
    out = jax.vmap(lambda r, i: r[i])(flat, ids.reshape(n, -1))
    return out.reshape(batch + out.shape[-2:])


def scatter(win: Window, values):
    """Full rows equal to ``values`` (``(..., n_select·block)``) on the window, 0 elsewhere."""
    batch = values.shape[:-1]
    vb = values.reshape(batch + (win.blocks.shape[-1], win.block))
    out = jnp.zeros(batch + (win.n_blocks, win.block), values.dtype)
    idx = jnp.broadcast_to(win.blocks[..., None], vb.shape)
    out = jnp.put_along_axis(out, idx, vb, axis=-2, inplace=False)
    return out.reshape(batch + (win.n_blocks * win.block,))[..., : win.length]


def scatter_ids(base, ids, vals):
    """``base`` with ``base[..., ids] = vals`` row by row (``ids``, ``vals``: ``(..., n)``;
    ids outside ``[0, V)`` are dropped). One scatter, no Python loop over rows."""
    V, n = base.shape[-1], ids.shape[-1]
    n_rows = math.prod(base.shape[:-1])
    rows = jnp.arange(n_rows)[:, None]
    vals = jnp.broadcast_to(vals, ids.shape).astype(base.dtype)
    out = base.reshape(n_rows, V).at[rows, ids.reshape(n_rows, n)].set(vals.reshape(n_rows, n), mode="drop")
    return out.reshape(base.shape)


def _shared(x, n_batch_axes):
    """Whether a result leaf is shared by the batch (a count), not per row: both ways of
    merging the paths (:func:`_select_rows`, :func:`choose`) keep the fast path's value."""
    return jnp.ndim(x) < n_batch_axes


def _select_rows(ok, fast, slow):
    """Per leaf: ``fast`` where the row's ``ok`` holds, else ``slow`` (``ok``: batch + (1,))."""
    batch = ok.shape[:-1]

    def pick(f, s):
        f, s = jnp.asarray(f), jnp.asarray(s)
        if _shared(f, len(batch)):
            return f
        cond = ok.reshape(batch + (1,) * (f.ndim - len(batch)))
        return jnp.where(cond, f, s)

    return jax.tree.map(pick, fast, slow)


def fallback_cap(n_rows: int) -> int:
    """Rows of one full-row sub-batch in :func:`choose`: a quarter of the batch (at least 1)."""
    return max(1, n_rows // 4)


def _rows_of(x, B):
    """Whether a leaf of the operands is per row (leading axis = the batch of ``B`` rows)."""
    return jnp.ndim(x) >= 1 and jnp.shape(x)[0] == B


def choose(ok, fast, slow, *operands):
    """Per row: ``fast`` where the row's certificate ``ok`` holds, else ``slow(*operands)``.

    ``ok`` has shape ``batch + (1,)``; every leaf of ``fast`` (and of ``slow``'s result)
    starts with the batch axes. ``slow`` runs only for the rows that fail their
    certificate: with a batch of ``B > 1`` rows (one batch axis), those rows are gathered
    into sub-batches of :func:`fallback_cap` rows (``B // 4``), ``slow`` runs on each
    sub-batch that holds a failing row (a ``lax.scan`` of ``lax.cond``, one compiled copy
    of ``slow``), and its rows are scattered back; the certified rows keep the candidate
    result. Each row gets its own path's value, bit for bit whatever its neighbours need
    (``slow`` computes row by row). Pass the full-row inputs as ``operands`` (not closed
    over derived arrays) so that the full-row work stays inside the branch: operand leaves
    whose leading axis has the batch's length are per row (gathered), every other leaf is
    shared by the rows (a scalar, or an array that broadcasts against one row). With
    several batch axes ``slow`` runs on the whole batch (``lax.cond``) when a row fails.
    """
    ok = jnp.asarray(ok, bool)
    batch = ok.shape[:-1]
    B = math.prod(batch)
    if len(batch) != 1 or B <= 1:
        return cond(
            jnp.all(ok),
            lambda *_: fast,
            lambda *ops: _select_rows(ok, fast, slow(*ops)),
            *operands,
        )
    cap = fallback_cap(B)
    n_chunks = -(-B // cap)
    bad = ~ok[:, 0]
    n_bad = jnp.sum(bad, dtype=jnp.int32)
    # the failing rows in order, padded (to whole chunks) with the first failing row: a
    # padding row repeats work that is done anyway and its result is dropped
    (rows,) = jnp.nonzero(bad, size=n_chunks * cap, fill_value=B)
    first = rows[0]
    gather_rows = jnp.where(rows < B, rows, first).reshape(n_chunks, cap)
    scatter_rows = rows.reshape(n_chunks, cap)  # B (out of range): dropped
    fast = jax.tree.map(jnp.asarray, fast)

    def solve_chunk(out, i):
        def run(out):
            g = gather_rows[i]
            sub = jax.tree.map(lambda x: x[g] if _rows_of(x, B) else x, operands)
            res = slow(*sub)
            r = scatter_rows[i]

            def put(o, v):
                if _shared(o, 1):
                    return o
                return o.at[r].set(jnp.asarray(v).astype(o.dtype), mode="drop")

            return jax.tree.map(put, out, res)

        return lax.cond(i * cap < n_bad, run, lambda out: out, out), None

    out, _ = lax.scan(solve_chunk, fast, jnp.arange(n_chunks))
    return out
