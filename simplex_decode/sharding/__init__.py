"""Decoding logits that are sharded over the vocabulary (and the batch), never gathered.

A model whose LM head is split over devices (tensor parallelism) produces logits sharded
over the vocabulary axis, and over the batch across data-parallel groups. The functions
here decode such a ``jax.Array`` where it lies: inside ``jax.shard_map`` each device
works on its own entries, and the devices of a row exchange only per-row numbers (maxima
and sums by ``pmax`` / ``psum``, one count per bit of a threshold bisection, one total per
shard for a draw) — never the row. Results come back sharded like the input (``q``:
``P("batch", "vocab")``; ids: ``P("batch")``). One code path: one device is a mesh of one.

* :func:`vocab_mesh` — a ``Mesh`` with axes ``("batch", "vocab")``; :func:`shard` puts
  logits on it.
* :func:`probs`, :func:`solve`, :func:`sample` — a Decoder's ``probs`` / ``solve`` /
  ``sample`` on sharded logits, equal to the single-device ones (``q`` to rounding of the
  row sums; ids identical for the same key, barring a uniform that lands within rounding
  of a CDF boundary). Eager calls raise ``ValueError`` on bad rows like the Decoder's;
  under ``jit`` bad rows get ``q = 0`` and id ``-1``.

Covered decoders (:data:`SUPPORTED`): temperature transforms, top-k / top-p / min-p
support rules, and no term (greedy), softmax (``Entropy``), sparsemax (``SquaredL2``) or
entmax (``Tsallis``) — ``sd.greedy``, ``temperature``, ``top_k``, ``top_p``, ``min_p``,
``sparsemax``, ``entmax`` and their chains. Any other decoder raises :class:`NotSharded`
naming the component: nothing falls back to gathering the logits behind your back.

Why functions next to the Decoder rather than a sharding-aware ``Decoder.probs``: the
sharded program needs the mesh (static, like a shape), covers a subset of the decoders,
and must be *seen* to be sharded — ``sd.sharding.probs(dec, logits, mesh)`` either runs
without a gather or refuses, while ``dec.probs`` keeps its exact single-device behaviour
(any decoder; under ``jit`` on sharded input, XLA's partitioner decides what moves).

Example:
  >>> import jax, simplex_decode as sd
  >>> mesh = sd.sharding.vocab_mesh(batch=1, vocab=1)
  >>> logits = sd.sharding.shard(jax.random.normal(jax.random.key(0), (2, 64)), mesh)
  >>> dec = sd.min_p(0.1, temperature=0.7)
  >>> q = sd.sharding.probs(dec, logits, mesh)
  >>> bool(jax.numpy.allclose(q, dec.probs(logits), atol=1e-6))
  True
  >>> sd.sharding.sample(dec, jax.random.key(1), logits, mesh).shape
  (2,)
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from .._pytree import is_concrete, params_ok
from ..decoder import Decoder
from ..objective import as_logits
from ..sampling import check_sample_args, row_keys
from ..solvers.base import Solution
from ..status import Status, raise_on_bad_rows
from . import hlo
from ._decode import SUPPORTED, NotSharded, draw_gumbel, draw_inverse_cdf, gumbel_noise, plan, solve_local
from ._rows import BATCH, VOCAB, gargmax

__all__ = ["BATCH", "VOCAB", "SUPPORTED", "NotSharded", "vocab_mesh", "logits_sharding", "shard", "covers",
           "probs", "solve", "sample", "hlo"]


def vocab_mesh(batch: int = 1, vocab: int | None = None, *, devices=None) -> Mesh:
    """A ``Mesh`` of ``batch × vocab`` devices with axes ``("batch", "vocab")``.

    ``vocab=None`` takes every device left (``len(devices) // batch``); ``devices``
    defaults to ``jax.devices()`` (all processes' devices in a multi-process run).

      >>> import simplex_decode as sd
      >>> sd.sharding.vocab_mesh(1, 1).axis_names
      ('batch', 'vocab')
    """
    devices = list(jax.devices() if devices is None else devices)
    for name, n in (("batch", batch), ("vocab", vocab)):
        if n is not None and (isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1):
            raise ValueError(f"{name}: must be an integer >= 1, got {n!r}")
    vocab = len(devices) // batch if vocab is None else vocab
    if vocab < 1 or batch * vocab > len(devices):
        raise ValueError(f"batch × vocab: must be between 1 and the {len(devices)} devices, got {batch} × {vocab}")
    return Mesh(np.asarray(devices[: batch * vocab]).reshape(batch, vocab), (BATCH, VOCAB))


def logits_sharding(mesh: Mesh) -> NamedSharding:
    """Logits ``(B, V)`` split over ``"batch"`` and ``"vocab"``."""
    return NamedSharding(mesh, P(BATCH, VOCAB))


def shard(logits, mesh: Mesh):
    """``logits`` ``(B, V)`` placed on ``mesh``, sharded over the batch and the vocabulary."""
    return jax.device_put(logits, logits_sharding(_check_mesh(mesh)))


def covers(decoder) -> bool:
    """Whether ``decoder`` has a vocabulary-sharded implementation (else :func:`probs`
    raises :class:`NotSharded` naming the component)."""
    try:
        plan(decoder)
    except NotSharded:
        return False
    return True


def _check_mesh(mesh):
    if not isinstance(mesh, Mesh) or tuple(mesh.axis_names) != (BATCH, VOCAB):
        raise ValueError(f"mesh: must be a jax.sharding.Mesh with axes ('batch', 'vocab') (sd.sharding.vocab_mesh), got {mesh!r:.80}")
    return mesh


def _mesh_for(logits, mesh):
    if mesh is not None:
        return _check_mesh(mesh)
    sh = getattr(logits, "sharding", None)
    if isinstance(sh, NamedSharding) and tuple(sh.mesh.axis_names) == (BATCH, VOCAB):
        return sh.mesh
    return vocab_mesh(1, 1)


def _prepare(decoder, logits, mesh):
    """Checks; ``(kind, logits, mesh, leaves, treedef)``."""
    if not isinstance(decoder, Decoder):
        raise ValueError(f"decoder: must be a simplex_decode Decoder, got {type(decoder).__name__}")
    kind = plan(decoder).kind
    logits = as_logits(logits)
    mesh = _mesh_for(logits, mesh)
    if logits.ndim != 2:
        raise ValueError(f"logits: must have shape (B, V) to be sharded, got shape {logits.shape}")
    (B, V), (nb, nv) = logits.shape, (mesh.shape[BATCH], mesh.shape[VOCAB])
    if B % nb or V % nv:
        raise ValueError(f"logits: shape {(B, V)} must divide by the mesh's (batch, vocab) = {(nb, nv)}")
    leaves, treedef = jax.tree.flatten(decoder)
    if any(np.ndim(x) for x in leaves):
        raise NotSharded("decoder: per-row parameter arrays are not supported by sd.sharding (scalars only)")
    params_ok(decoder, (B,), V)  # values known in Python: ValueError naming them, here
    return kind, logits, mesh, leaves, treedef


def _program(kind, mesh, treedef, n_leaves, draw=None, spec=None):
    """The shard_map'd per-shard program: ``(q, status)``, or ``(ids, status)`` with
    ``draw(q, offset, extra)`` (``extra``: one more input, sharded by ``spec``)."""

    def local(leaves, x, ok, *extra):
        dec = jax.tree.unflatten(treedef, leaves)
        offset = lax.axis_index(VOCAB) * x.shape[-1]
        q, status = solve_local(dec, kind, x, ok, offset)
        if draw is None:
            return q, status
        return draw(q, offset, *extra), status

    rows = P(BATCH)
    extra = () if draw is None else (spec,)
    return jax.shard_map(
        local,
        mesh=mesh,
        in_specs=([P()] * n_leaves, P(BATCH, VOCAB), rows, *extra),
        out_specs=(P(BATCH, VOCAB) if draw is None else rows, rows),
        check_vma=False,
    )


def _raise_on_bad_rows(status, decoder):
    """As the Decoder raises; a status spread over processes is first gathered (B ints)."""
    if is_concrete(status) and isinstance(status, jax.Array) and not status.is_fully_addressable:
        from jax.experimental import multihost_utils

        status = multihost_utils.process_allgather(status, tiled=True)
    raise_on_bad_rows(status, None, decoder.objective.stage_names)


def _ok_rows(decoder, B, V):
    return jnp.broadcast_to(jnp.asarray(params_ok(decoder, (B,), V), bool), (B,))


@functools.partial(jax.jit, static_argnames=("kind", "mesh", "treedef"))
def _solve(leaves, logits, *, kind, mesh, treedef):
    B, V = logits.shape
    ok = _ok_rows(jax.tree.unflatten(treedef, leaves), B, V)
    return _program(kind, mesh, treedef, len(leaves), None)(leaves, logits, ok)


def solve(decoder, logits, mesh: Mesh | None = None) -> Solution:
    """:meth:`Decoder.solve` on logits sharded over ``mesh`` (default: the logits' own
    ``("batch", "vocab")`` mesh, else one device): ``q`` sharded like the logits, a per-row
    ``status`` (``stats["stage"]`` is ``-1``: the sharded path does not track the stage)."""
    kind, logits, mesh, leaves, treedef = _prepare(decoder, logits, mesh)
    q, status = _solve(leaves, logits, kind=kind, mesh=mesh, treedef=treedef)
    return Solution(q=q, status=status, stats={"stage": jnp.full(status.shape, -1, jnp.int32)})


def probs(decoder, logits, mesh: Mesh | None = None):
    """:meth:`Decoder.probs` on sharded logits: ``q`` ``(B, V)``, sharded like them.

    Raises ``ValueError`` on bad rows in eager calls (under ``jit``: zeros, or
    :func:`simplex_decode.checked` to raise)."""
    sol = solve(decoder, logits, mesh)
    _raise_on_bad_rows(sol.status, decoder)
    return sol.q


@functools.partial(jax.jit, static_argnames=("kind", "mesh", "treedef", "k", "method"))
def _sample(leaves, key, logits, *, kind, mesh, treedef, k, method):
    B, V = logits.shape
    ok = _ok_rows(jax.tree.unflatten(treedef, leaves), B, V)
    keys = row_keys(key, (B,))

    def ids_of(q, offset):
        return jnp.broadcast_to(gargmax(q, offset + lax.broadcasted_iota(jnp.int32, q.shape, 1)), q.shape[:-1] + (k,))

    def run(method):
        if kind == "argmax":  # the linear problem: its one-hot optimum, no draw
            draw, spec, extra = (lambda q, offset, _: ids_of(q, offset)), P(BATCH), keys
        elif method == "inverse_cdf":
            draw, spec, extra = (lambda q, offset, kk: draw_inverse_cdf(kk, q, offset, k)), P(BATCH), keys
        else:  # the single-device noise, generated where it is used (threefry is partitionable)
            spec = P(BATCH, None, VOCAB)
            noise = gumbel_noise(keys, k, V, jnp.float64 if logits.dtype == jnp.float64 else jnp.float32)
            extra = lax.with_sharding_constraint(noise, NamedSharding(mesh, spec))

            def draw(q, offset, g):
                return draw_gumbel(g, q, offset + lax.broadcasted_iota(jnp.int32, q.shape, 1))

        return _program(kind, mesh, treedef, len(leaves), draw, spec)(leaves, logits, ok, extra)

    if method == "auto" and kind != "argmax":  # as sample_from_probs: inverse CDF on CPU, Gumbel-max elsewhere
        ids, status = lax.platform_dependent(cpu=lambda: run("inverse_cdf"), default=lambda: run("gumbel"))
    else:
        ids, status = run(method)
    return jnp.where((status == Status.OK)[:, None], ids, -1), status


def sample(decoder, key, logits, mesh: Mesh | None = None, *, num_samples=None, method="auto"):
    """:meth:`Decoder.sample` on sharded logits: ids ``(B,)`` (or ``(B, num_samples)``),
    sharded over ``"batch"``; the same ids as ``decoder.sample(key, logits)`` for the same
    ``key`` and ``method`` (one key, or one per row)."""
    kind, logits, mesh, leaves, treedef = _prepare(decoder, logits, mesh)
    if decoder.stateful:
        raise NotSharded("decoder: stateful decoders are not supported by sd.sharding")
    num_samples = check_sample_args(key, logits.shape[:-1], num_samples, method)
    k = 1 if num_samples is None else num_samples
    ids, status = _sample(leaves, key, logits, kind=kind, mesh=mesh, treedef=treedef, k=k, method=method)
    _raise_on_bad_rows(status, decoder)
    return ids[:, 0] if num_samples is None else ids
