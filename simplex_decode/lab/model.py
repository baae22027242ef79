"""The lab's transformer: the bundled Llama blocks with ``n`` output heads.

A :class:`LabConfig` model is a shared *trunk* of ``num_layers`` Llama decoder blocks
followed by ``mtp_heads`` independent *heads* of ``head_layers`` blocks each, and one
shared final norm + unembedding (tied to the embedding), as in Gloeckle et al. (2024),
"Better & Faster Large Language Models via Multi-token Prediction": head ``i``
(0-based) at position ``t`` predicts token ``t + 1 + i``. ``mtp_heads = 1`` is an ordinary
next-token model (a Llama of ``num_layers + head_layers`` blocks).

Parameters are a plain pytree (a dict of arrays), built from
:func:`simplex_decode.models.init_random_params`::

    embed (V, D)   final_norm (D,)   layers: trunk blocks (L, ...)   heads: (n, head_layers, ...)

:func:`make_step` gives the step protocol of :func:`simplex_decode.generate` (head 0, i.e.
next-token prediction) so every decoder and strategy runs on a trained model;
:func:`head_logits` is the cacheless training forward of every head;
:mod:`simplex_decode.lab.speculative` uses the other heads as a drafter.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ..models.llama import (
    LlamaConfig,
    decoder_layers,
    embed,
    init_cache,
    init_random_params,
    unembed,
)

__all__ = ["LabConfig", "check_params", "head_logits", "init_params", "make_cache", "make_step", "num_params", "step_params"]


@dataclasses.dataclass(frozen=True)
class LabConfig:
    """Shape of a lab model (frozen, hashable: a static jit argument).

    Attributes:
      vocab_size: tokens of the task's vocabulary.
      d_model: width ``D``.
      num_layers: trunk blocks ``L`` (shared by every head).
      num_heads: attention heads per block (``d_model`` must be a multiple; head width ≥ 2, even).
      d_ff: SwiGLU hidden width (default ``4·d_model``).
      mtp_heads: ``n`` output heads; head ``i`` predicts the token ``i + 1`` ahead.
      head_layers: blocks per head (Gloeckle et al. use one).
      rope_theta: RoPE base.
    """

    vocab_size: int
    d_model: int = 128
    num_layers: int = 2
    num_heads: int = 4
    d_ff: int | None = None
    mtp_heads: int = 1
    head_layers: int = 1
    rope_theta: float = 10000.0

    def __post_init__(self):
        for name in ("vocab_size", "d_model", "num_layers", "num_heads", "mtp_heads", "head_layers"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < (0 if name == "num_layers" else 1):
                lo = 0 if name == "num_layers" else 1
                raise ValueError(f"LabConfig.{name}: must be an integer >= {lo}, got {v!r}")
        if self.d_model % self.num_heads or (self.d_model // self.num_heads) % 2:
            raise ValueError(f"LabConfig.d_model: must be num_heads ({self.num_heads}) times an even head width, "
                             f"got {self.d_model}")
        if self.d_ff is None:
            object.__setattr__(self, "d_ff", 4 * self.d_model)
        elif isinstance(self.d_ff, bool) or not isinstance(self.d_ff, (int, np.integer)) or self.d_ff < 1:
            raise ValueError(f"LabConfig.d_ff: must be None or an integer >= 1, got {self.d_ff!r}")
        self.llama  # noqa: B018  (validates the block shapes)

    @property
    def llama(self) -> LlamaConfig:
        """The :class:`~simplex_decode.models.LlamaConfig` of one trunk + head-0 stack."""
        return LlamaConfig(
            vocab_size=self.vocab_size, hidden_size=self.d_model, intermediate_size=self.d_ff,
            num_layers=self.num_layers + self.head_layers, num_heads=self.num_heads, num_kv_heads=self.num_heads,
            rope_theta=self.rope_theta, tie_word_embeddings=True,
        )

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def init_params(config: LabConfig, key) -> dict:
    """Random initial parameters (the Llama initialisation, one draw per head).

    Example:
      >>> import jax
      >>> cfg = LabConfig(vocab_size=16, d_model=32, num_layers=1, mtp_heads=2)
      >>> p = init_params(cfg, jax.random.key(0))
      >>> p["layers"]["wq"].shape, p["heads"]["wq"].shape
      ((1, 32, 32), (2, 1, 32, 32))
    """
    n, h, L = config.mtp_heads, config.head_layers, config.num_layers
    full = dataclasses.replace(config.llama, num_layers=L + n * h)
    p = init_random_params(full, key)
    layers = p.pop("layers")
    p["layers"] = jax.tree.map(lambda a: a[:L], layers)
    p["heads"] = jax.tree.map(lambda a: a[L:].reshape((n, h) + a.shape[1:]), layers)
    p["final_norm"] = jnp.ones_like(p["final_norm"])
    return p


def num_params(params) -> int:
    """Number of scalars in a parameter pytree."""
    return int(sum(np.prod(x.shape) for x in jax.tree.leaves(params)))


def head_logits(config: LabConfig, params: dict, tokens, positions=None) -> jax.Array:
    """Logits of every head on full sequences, no cache: float32 ``(n, B, T, V)``.

    ``head_logits(...)[i, b, t]`` scores the token at ``t + 1 + i`` (causal: it reads
    tokens ``≤ t`` only).
    """
    tokens = jnp.asarray(tokens, jnp.int32)
    if positions is None:
        positions = jnp.broadcast_to(jnp.arange(tokens.shape[1], dtype=jnp.int32), tokens.shape)
    c = config.llama
    x = embed(c, params, tokens, positions)
    h, _ = decoder_layers(c, params["layers"], x, positions)

    def one(head):
        y, _ = decoder_layers(c, head, h, positions)
        return unembed(c, params, y)

    return jax.vmap(one)(params["heads"])


def step_params(params: dict) -> dict:
    """The Llama-layout parameters of the next-token path (trunk + head 0)."""
    layers = jax.tree.map(lambda t, hd: jnp.concatenate([t, hd[0]], axis=0), params["layers"], params["heads"])
    return {"embed": params["embed"], "final_norm": params["final_norm"], "layers": layers}


def _step(config, dummy_from, dummy_id, params, tokens, cache, positions):
    tokens = jnp.asarray(tokens, jnp.int32)
    positions = jnp.asarray(positions, jnp.int32)
    if dummy_from is not None:
        # teacherless: the answer span's inputs are the dummy token, whatever was generated
        tokens = jnp.where(positions >= dummy_from, dummy_id, tokens)
    c = config.llama
    sp = step_params(params)
    x = embed(c, sp, tokens, positions)
    x, cache = decoder_layers(c, sp["layers"], x, positions, cache)
    return unembed(c, sp, x), cache


def make_step(config: LabConfig, *, dummy_from: int | None = None, dummy_id: int | None = None):
    """``step(params, tokens, cache, positions) -> (logits, cache)`` for :func:`simplex_decode.generate`.

    The logits are head 0's (next-token prediction); the cache is a
    :class:`~simplex_decode.models.KVCache` from :func:`make_cache`. A teacherless model
    (trained with dummy inputs on the answer span) is run the same way by passing
    ``dummy_from`` (the first answer position = the prompt length) and ``dummy_id``: every
    input at a position ``≥ dummy_from`` is replaced by the dummy, so each answer token is
    predicted from the prompt alone, as in training.

    Example:
      >>> import jax, simplex_decode as sd
      >>> cfg = LabConfig(vocab_size=8, d_model=16, num_layers=1)
      >>> params = init_params(cfg, jax.random.key(0))
      >>> out = sd.generate(make_step(cfg), params, [[1, 2, 3]], decoder=sd.greedy(),
      ...                   key=jax.random.key(0), max_new_tokens=4, cache=make_cache(cfg))
      >>> out.tokens.shape
      (1, 4)
    """
    if not isinstance(config, LabConfig):
        raise ValueError(f"config: must be a LabConfig, got {type(config).__name__}")
    return _make_step(config, dummy_from, dummy_id)


@functools.lru_cache(maxsize=64)
def _make_step(config, dummy_from, dummy_id):
    # one step function per (config, dummy): generate() compiles once per step identity
    if (dummy_from is None) != (dummy_id is None):
        raise ValueError("make_step: give both `dummy_from` and `dummy_id` (teacherless) or neither")
    if dummy_from is not None:
        if isinstance(dummy_from, bool) or not isinstance(dummy_from, (int, np.integer)) or dummy_from < 1:
            raise ValueError(f"dummy_from: must be an integer >= 1 (the prompt length), got {dummy_from!r}")
        if not (isinstance(dummy_id, (int, np.integer)) and 0 <= dummy_id < config.vocab_size):
            raise ValueError(f"dummy_id: must be a token id in [0, {config.vocab_size}), got {dummy_id!r}")
        dummy_from, dummy_id = int(dummy_from), int(dummy_id)
    return jax.jit(functools.partial(_step, config, dummy_from, dummy_id))


def make_cache(config: LabConfig):
    """The cache factory ``cache(batch_size, max_len)`` for :func:`make_step`'s step."""
    return functools.partial(init_cache, config.llama)


def check_params(config: LabConfig, params: Any) -> None:
    """Raise ``ValueError`` if ``params`` does not have the layout of ``config``."""
    want = jax.eval_shape(lambda: init_params(config, jax.random.key(0)))
    got = jax.tree.map(lambda x: jax.ShapeDtypeStruct(np.shape(x), jnp.result_type(x)), params)
    if jax.tree.structure(want) != jax.tree.structure(got):
        raise ValueError("params: their tree does not match the LabConfig (keys differ)")
    for (path, w), g in zip(jax.tree_util.tree_leaves_with_path(want), jax.tree.leaves(got), strict=True):
        if w.shape != g.shape:
            raise ValueError(f"params{jax.tree_util.keystr(path)}: shape {g.shape}, expected {w.shape}")
