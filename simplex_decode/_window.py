"""Candidate windows: solve a threshold problem on a few blocks of the vocabulary, exactly.

Threshold rules (top-k, top-p, sparsemax, entmax) keep only tokens whose value exceeds a
per-row threshold, and in language-model logits those tokens are few. :func:`window`
cuts each row into blocks of :data:`BLOCK` entries, takes the :data:`WINDOW_BLOCKS`
blocks with the largest maxima (one pass over the row plus a selection among ~V/128 block
maxima) and returns their entries in token-id order, together with ``outside``: the
largest value of every entry *not* in the window. A threshold ``t`` computed from the
window alone is the exact threshold of the whole row whenever ``outside`` lies strictly
below the tokens it keeps (each caller states its own condition); otherwise the caller
runs its full-row algorithm. The decision is made once for the whole batch with
``lax.cond``, so a batch whose rows all fit pays only for the window (under ``vmap`` the
cond becomes a select and both paths run: still exact, just not faster).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

__all__ = ["BLOCK", "WINDOW_BLOCKS", "Window", "window", "take_blocks", "scatter", "choose"]

BLOCK = 64
WINDOW_BLOCKS = 128


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


def window(select, *others, fill, block=BLOCK, n_select=WINDOW_BLOCKS):
    """The window chosen by ``select``'s block maxima; gathers ``select`` and ``others``.

    The row is cut into blocks of ``block`` entries and the ``n_select`` blocks with the
    largest maxima are kept (so the window holds at least the ``n_select`` largest
    entries). ``select`` is float32 (XLA's CPU top-k is fast only for floats). ``fill``
    pads it to a whole number of blocks and must be below every value that matters
    (``-inf`` for scores, ``0`` for probabilities). Returns ``None`` when the row is not
    longer than the window (callers then use the full row).
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
    # Use only lax.top_k's indices, in one piece: XLA CPU keeps its fast top-k custom
    # call for that pattern and falls back to a full sort otherwise.
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
    """Full rows equal to ``values`` (``(..., WINDOW_BLOCKS·BLOCK)``) on the window, 0 elsewhere."""
    batch = values.shape[:-1]
    vb = values.reshape(batch + (win.blocks.shape[-1], win.block))
    out = jnp.zeros(batch + (win.n_blocks, win.block), values.dtype)
    idx = jnp.broadcast_to(win.blocks[..., None], vb.shape)
    out = jnp.put_along_axis(out, idx, vb, axis=-2, inplace=False)
    return out.reshape(batch + (win.n_blocks * win.block,))[..., : win.length]


def choose(ok, fast, slow, *operands):
    """``fast`` if every row's window result is exact (``ok``), else ``slow(*operands)``.

    Pass the full-row inputs as ``operands`` (not closed over derived arrays) so that
    the full-row work stays inside the branch and XLA need not materialise it.
    """
    return lax.cond(jnp.all(ok), lambda *_: fast, slow, *operands)
