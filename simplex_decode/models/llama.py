"""A compact, pure-JAX Llama-architecture decoder with a KV cache.

The model is a set of plain functions over a parameter pytree, so it composes
with ``jax.jit``, ``jax.vmap`` and friends. Layer parameters are stacked along
a leading ``layers`` axis and the layers run under :func:`jax.lax.scan`, which
keeps compile time independent of depth.

The one entry point a generation loop needs is the *step function*::

    step(params, tokens, cache, positions) -> (logits, cache)

* ``tokens``: int32 ``(B, T)`` token ids.
* ``positions``: int32 ``(B, T)`` absolute positions of those tokens, per row,
  so left- and right-padded batches work. **A position of ``-1`` marks a
  padding token**: it is not written to the cache, is never attended to, and
  its own logits are unspecified (finite, but meaningless).
* ``cache``: a :class:`KVCache` from :func:`init_cache`. The key/value of a
  token at position ``p`` is stored in cache slot ``p``; ``cache.pos`` records
  which slots hold a written key (``-1`` = empty), so attention never reads a
  slot that was not written. A query at position ``p`` attends to written keys
  at positions ``<= p``.
* ``logits``: float32 ``(B, T, vocab_size)``.

Prefill is a call with the whole (padded) prompt; decoding is a call with
``T == 1``.

Example (tiny random model, runs in a second on CPU)::

    >>> import jax, jax.numpy as jnp
    >>> from simplex_decode.models.llama import (
    ...     LlamaConfig, init_random_params, init_cache, make_step)
    >>> cfg = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64,
    ...                   num_layers=2, num_heads=4, num_kv_heads=2)
    >>> params = init_random_params(cfg, jax.random.PRNGKey(0))
    >>> step = make_step(cfg)
    >>> cache = init_cache(cfg, batch=1, max_len=16)
    >>> tokens = jnp.array([[1, 2, 3]], jnp.int32)
    >>> logits, cache = step(params, tokens, cache, jnp.arange(3, dtype=jnp.int32)[None])
    >>> next_tok = jnp.argmax(logits[:, -1], axis=-1)[:, None].astype(jnp.int32)
    >>> logits, cache = step(params, next_tok, cache, jnp.array([[3]], jnp.int32))
    >>> logits.shape
    (1, 1, 64)

Numerics: parameters are float32 by default (bfloat16 is supported; the
norms, RoPE, attention softmax and the returned logits are always computed in
float32). Matrix products use JAX's default precision; on GPU/TPU wrap calls in
``jax.default_matmul_precision("highest")`` if you need float32 parity with a
reference implementation.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "LlamaConfig",
    "KVCache",
    "Params",
    "StepFn",
    "init_cache",
    "init_random_params",
    "forward",
    "forward_sequence",
    "embed",
    "decoder_layers",
    "unembed",
    "make_step",
    "positions_from_mask",
    "dola_layers",
    "truncate",
]

Params = dict[str, Any]
"""Parameter pytree, see :func:`init_random_params` for the exact layout."""

PAD_POSITION = -1
"""Position value that marks a padding token (not written, not attended)."""


@dataclasses.dataclass(frozen=True)
class LlamaConfig:
    """Hyper-parameters of a Llama-architecture decoder.

    The dataclass is frozen (hashable), so it can be a static argument of
    ``jax.jit``.

    Attributes:
        vocab_size: number of rows of the embedding / columns of the LM head.
        hidden_size: model width ``D``.
        intermediate_size: SwiGLU hidden width ``F``.
        num_layers: number of transformer blocks.
        num_heads: number of query heads ``H``.
        num_kv_heads: number of key/value heads (``H`` must be a multiple of it;
            ``num_kv_heads < num_heads`` is grouped-query attention).
        head_dim: per-head width; defaults to ``hidden_size // num_heads``.
        rms_norm_eps: epsilon of RMSNorm.
        rope_theta: RoPE base frequency.
        rope_scaling_type: ``None`` or ``"linear"`` (position interpolation:
            positions are divided by ``rope_scaling_factor``). Per-frequency
            factors (Llama-3 style) are carried as the optional
            ``params["rope_freqs"]`` array instead.
        rope_scaling_factor: factor for ``rope_scaling_type="linear"``.
        max_position_embeddings: context length the model was trained for
            (informational; caches may be longer or shorter).
        tie_word_embeddings: if true the LM head is the transposed embedding and
            ``params`` has no ``"lm_head"``.
    """

    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int | None = None
    rms_norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    rope_scaling_type: str | None = None
    rope_scaling_factor: float = 1.0
    max_position_embeddings: int = 2048
    tie_word_embeddings: bool = True

    def __post_init__(self) -> None:
        for name in (
            "vocab_size",
            "hidden_size",
            "intermediate_size",
            "num_layers",
            "num_heads",
            "num_kv_heads",
        ):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or value <= 0:
                raise ValueError(f"LlamaConfig.{name} must be a positive int, got {value!r}")
        if self.num_heads % self.num_kv_heads:
            raise ValueError(
                f"LlamaConfig.num_heads ({self.num_heads}) must be a multiple of "
                f"num_kv_heads ({self.num_kv_heads})"
            )
        if self.head_dim is None:
            if self.hidden_size % self.num_heads:
                raise ValueError(
                    f"LlamaConfig.hidden_size ({self.hidden_size}) is not divisible by "
                    f"num_heads ({self.num_heads}); pass head_dim explicitly"
                )
            object.__setattr__(self, "head_dim", self.hidden_size // self.num_heads)
        if self.head_dim <= 0 or self.head_dim % 2:
            raise ValueError(f"LlamaConfig.head_dim must be a positive even int, got {self.head_dim}")
        if self.rope_scaling_type not in (None, "linear"):
            raise ValueError(
                f"LlamaConfig.rope_scaling_type must be None or 'linear', got {self.rope_scaling_type!r}"
            )
        if self.rope_scaling_factor <= 0:
            raise ValueError(f"LlamaConfig.rope_scaling_factor must be > 0, got {self.rope_scaling_factor}")

    @property
    def q_per_kv(self) -> int:
        """Number of query heads sharing one key/value head."""
        return self.num_heads // self.num_kv_heads


class KVCache(NamedTuple):
    """Key/value cache (a pytree; lives on device, no host state).

    Attributes:
        k: keys, ``(layers, B, max_len, kv_heads, head_dim)``.
        v: values, same shape as ``k``.
        pos: int32 ``(B, max_len)``; ``pos[b, s]`` is the position whose key is
            stored in slot ``s`` of row ``b`` (always ``s`` itself), or ``-1``
            when the slot has not been written.
    """

    k: jax.Array
    v: jax.Array
    pos: jax.Array

    @property
    def max_len(self) -> int:
        """Number of slots per row (static)."""
        return self.k.shape[2]

    @property
    def batch_size(self) -> int:
        """Number of rows (static)."""
        return self.k.shape[1]


StepFn = Callable[[Params, jax.Array, KVCache, jax.Array], tuple[jax.Array, KVCache]]


def init_cache(config: LlamaConfig, batch: int, max_len: int, dtype: Any = jnp.float32) -> KVCache:
    """Create an empty :class:`KVCache` for ``batch`` rows of ``max_len`` positions.

    Example::

        >>> cfg = LlamaConfig(vocab_size=8, hidden_size=8, intermediate_size=16,
        ...                   num_layers=2, num_heads=2, num_kv_heads=1)
        >>> init_cache(cfg, batch=3, max_len=10).k.shape
        (2, 3, 10, 1, 4)
    """
    if not isinstance(batch, (int, np.integer)) or batch <= 0:
        raise ValueError(f"init_cache: batch must be a positive int, got {batch!r}")
    if not isinstance(max_len, (int, np.integer)) or max_len <= 0:
        raise ValueError(f"init_cache: max_len must be a positive int, got {max_len!r}")
    shape = (config.num_layers, batch, max_len, config.num_kv_heads, config.head_dim)
    return KVCache(
        k=jnp.zeros(shape, dtype),
        v=jnp.zeros(shape, dtype),
        pos=jnp.full((batch, max_len), PAD_POSITION, jnp.int32),
    )


def init_random_params(
    config: LlamaConfig, key: jax.Array, dtype: Any = jnp.float32, scale: float | None = None
) -> Params:
    """Random parameters with the layout :func:`forward` expects (for tests).

    Matrices are drawn from ``N(0, scale**2)`` with ``scale`` defaulting to
    ``1/sqrt(fan_in)`` per matrix, embeddings from ``N(0, 1/hidden_size)``, and
    norm weights from ``1 + N(0, 0.1**2)``, so every block contributes O(1) to
    the output (a bug anywhere shows up in the logits).

    Layout (``L`` layers, ``D`` hidden, ``F`` intermediate, ``H``/``K`` query/kv
    heads of width ``hd``; matrices are ``(in, out)`` so ``y = x @ W``)::

        embed       (V, D)
        final_norm  (D,)
        lm_head     (D, V)            only if not config.tie_word_embeddings
        rope_freqs  (hd // 2,)        optional, per-frequency divisors (not created here)
        layers:
          attn_norm (L, D)     wq (L, D, H*hd)   wk (L, D, K*hd)  wv (L, D, K*hd)
          wo        (L, H*hd, D)
          mlp_norm  (L, D)     w_gate (L, D, F)  w_up (L, D, F)   w_down (L, F, D)

    Example::

        >>> cfg = LlamaConfig(vocab_size=8, hidden_size=8, intermediate_size=16,
        ...                   num_layers=2, num_heads=2, num_kv_heads=1)
        >>> init_random_params(cfg, jax.random.PRNGKey(0))["layers"]["wk"].shape
        (2, 8, 4)
    """
    c = config
    L, D, F, hd = c.num_layers, c.hidden_size, c.intermediate_size, c.head_dim
    shapes = {
        "wq": (L, D, c.num_heads * hd),
        "wk": (L, D, c.num_kv_heads * hd),
        "wv": (L, D, c.num_kv_heads * hd),
        "wo": (L, c.num_heads * hd, D),
        "w_gate": (L, D, F),
        "w_up": (L, D, F),
        "w_down": (L, F, D),
    }
    keys = jax.random.split(key, len(shapes) + 4)

    def normal(k, shape, std):
        return (std * jax.random.normal(k, shape, jnp.float32)).astype(dtype)

    layers = {
        name: normal(k, shape, scale if scale is not None else 1.0 / np.sqrt(shape[-2]))
        for k, (name, shape) in zip(keys, shapes.items(), strict=False)
    }
    layers["attn_norm"] = (1.0 + normal(keys[-4], (L, D), 0.1)).astype(dtype)
    layers["mlp_norm"] = (1.0 + normal(keys[-3], (L, D), 0.1)).astype(dtype)
    params: Params = {
        "embed": normal(keys[-2], (c.vocab_size, D), 1.0 / np.sqrt(D)),
        "final_norm": jnp.ones((D,), dtype),
        "layers": layers,
    }
    if not c.tie_word_embeddings:
        params["lm_head"] = normal(
            keys[-1], (D, c.vocab_size), scale if scale is not None else 1.0 / np.sqrt(D)
        )
    return params


def positions_from_mask(mask: jax.Array) -> jax.Array:
    """Positions for a padded batch from a ``(B, T)`` 0/1 (or bool) token mask.

    Real tokens get consecutive positions ``0, 1, ...`` within their row,
    padding gets ``-1``; works for left and right padding.

    Example::

        >>> positions_from_mask(jnp.array([[0, 0, 1, 1], [1, 1, 1, 0]])).tolist()
        [[-1, -1, 0, 1], [0, 1, 2, -1]]
    """
    mask = jnp.asarray(mask).astype(bool)
    pos = jnp.cumsum(mask.astype(jnp.int32), axis=-1) - 1
    return jnp.where(mask, pos, PAD_POSITION).astype(jnp.int32)


# --------------------------------------------------------------------------- #
# Building blocks
# --------------------------------------------------------------------------- #


def _rms_norm(x: jax.Array, weight: jax.Array, eps: float) -> jax.Array:
    """RMSNorm computed in float32, cast back, then scaled (as HF Llama)."""
    xf = x.astype(jnp.float32)
    var = jnp.mean(xf * xf, axis=-1, keepdims=True)
    normed = (xf * jax.lax.rsqrt(var + eps)).astype(x.dtype)
    return weight.astype(x.dtype) * normed


def _rope_cos_sin(
    config: LlamaConfig, positions: jax.Array, rope_freqs: jax.Array | None
) -> tuple[jax.Array, jax.Array]:
    """cos/sin tables ``(B, T, head_dim)`` for HF-style (rotate_half) RoPE."""
    hd = config.head_dim
    inv_freq = 1.0 / (config.rope_theta ** (jnp.arange(0, hd, 2, dtype=jnp.float32) / jnp.float32(hd)))
    if rope_freqs is not None:
        inv_freq = inv_freq / rope_freqs.astype(jnp.float32)
    if config.rope_scaling_type == "linear":
        inv_freq = inv_freq / jnp.float32(config.rope_scaling_factor)
    angles = positions.astype(jnp.float32)[..., None] * inv_freq  # (B, T, hd/2)
    angles = jnp.concatenate([angles, angles], axis=-1)
    return jnp.cos(angles), jnp.sin(angles)


def _apply_rope(x: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
    """Rotate ``x`` ``(B, T, heads, hd)`` with HF's rotate_half convention."""
    xf = x.astype(jnp.float32)
    half = xf.shape[-1] // 2
    rotated = jnp.concatenate([-xf[..., half:], xf[..., :half]], axis=-1)
    out = xf * cos[:, :, None, :] + rotated * sin[:, :, None, :]
    return out.astype(x.dtype)


def _attention(q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array, n_kv: int) -> jax.Array:
    """Grouped-query attention in float32.

    q ``(B, T, H, hd)``, k/v ``(B, S, K, hd)``, mask bool ``(B, T, S)``.
    Query head ``h`` uses kv head ``h // (H // K)`` (HF ``repeat_kv`` order).
    Fully masked query rows (padding) produce zeros instead of NaN.
    """
    B, T, H, hd = q.shape
    g = H // n_kv
    qf = q.astype(jnp.float32).reshape(B, T, n_kv, g, hd)
    kf = k.astype(jnp.float32)
    vf = v.astype(jnp.float32)
    scores = jnp.einsum("btkgd,bskd->bkgts", qf, kf) * (1.0 / np.sqrt(hd))
    m = mask[:, None, None, :, :]
    scores = jnp.where(m, scores, -jnp.inf)
    row_max = jnp.max(scores, axis=-1, keepdims=True)
    row_max = jnp.where(jnp.isfinite(row_max), row_max, 0.0)
    p = jnp.exp(scores - row_max)  # exactly 0 where masked
    denom = jnp.sum(p, axis=-1, keepdims=True)
    p = p / jnp.where(denom > 0, denom, 1.0)
    out = jnp.einsum("bkgts,bskd->btkgd", p, vf)
    return out.reshape(B, T, H * hd)


def _check_step_inputs(config: LlamaConfig, tokens: Any, cache: KVCache, positions: Any) -> None:
    """Static (shape/dtype) validation; runs at trace time, costs nothing per call."""
    if not isinstance(cache, KVCache):
        raise TypeError(f"cache must be a KVCache from init_cache(), got {type(cache).__name__}")
    tshape, pshape = np.shape(tokens), np.shape(positions)
    if len(tshape) != 2:
        raise ValueError(f"tokens must have shape (batch, T), got shape {tshape}")
    if pshape != tshape:
        raise ValueError(f"positions must have the same shape as tokens {tshape}, got {pshape}")
    for name, arr in (("tokens", tokens), ("positions", positions)):
        if not jnp.issubdtype(jnp.result_type(arr), jnp.integer):
            raise TypeError(f"{name} must be an integer array, got dtype {jnp.result_type(arr)}")
    B, T = tshape
    expected_k = (config.num_layers, B, cache.max_len, config.num_kv_heads, config.head_dim)
    if cache.k.shape != expected_k or cache.v.shape != expected_k:
        raise ValueError(
            f"cache.k/v shape {cache.k.shape} does not match the config and batch: expected "
            f"{expected_k} (layers, batch, max_len, kv_heads, head_dim)"
        )
    if cache.pos.shape != (B, cache.max_len):
        raise ValueError(f"cache.pos shape {cache.pos.shape} != (batch, max_len) = {(B, cache.max_len)}")
    if T > cache.max_len:
        raise ValueError(
            f"{T} tokens do not fit in a cache with max_len={cache.max_len}; "
            f"create the cache with a larger max_len"
        )


def _check_host_positions(positions: Any, max_len: int) -> None:
    """Value check for host (NumPy / list) positions; device arrays are not synced."""
    if isinstance(positions, jax.Array):
        return
    arr = np.asarray(positions)
    if arr.size == 0:
        return
    if arr.max() >= max_len:
        raise ValueError(
            f"position {int(arr.max())} does not fit in the cache: positions must be < "
            f"max_len={max_len}; create the cache with a larger max_len"
        )
    if arr.min() < PAD_POSITION:
        raise ValueError(f"positions must be >= 0, or -1 for padding; got {int(arr.min())}")


# --------------------------------------------------------------------------- #
# Forward / step
# --------------------------------------------------------------------------- #


def embed(config: LlamaConfig, params: Params, tokens: jax.Array, positions: jax.Array) -> jax.Array:
    """Token embeddings ``(B, T, D)``; padding tokens (position -1) look up id 0, whatever they hold."""
    tokens = jnp.asarray(tokens).astype(jnp.int32)
    positions = jnp.asarray(positions).astype(jnp.int32)
    return jnp.take(params["embed"], jnp.where(positions >= 0, tokens, 0), axis=0)


def decoder_layers(
    config: LlamaConfig,
    layers: Params,
    x: jax.Array,
    positions: jax.Array,
    cache: KVCache | None = None,
    *,
    rope_freqs: jax.Array | None = None,
    hidden: bool = False,
) -> tuple[jax.Array, KVCache | None] | tuple[jax.Array, KVCache | None, jax.Array]:
    """Run a stack of decoder blocks on hidden states ``x`` ``(B, T, D)`` at ``positions``.

    ``layers`` is a stacked layer pytree (``params["layers"]`` or any slice of it along
    the leading axis: the number of blocks is that axis' length). With ``cache=None``
    the tokens attend causally to each other only (a full-sequence forward, as in
    training: a query at position ``p`` sees the keys of the ``T`` tokens at positions
    ``<= p``); with a :class:`KVCache` (one slot per block on its layer axis) they also
    read, and write, the cache as in :func:`forward`. Returns the hidden states after
    the last block (before the final norm) and the updated cache (None without one);
    ``hidden=True`` adds a third output, every block's output stacked ``(L, B, T, D)``
    (transformers' ``hidden_states[1:]``).

    Example::

        >>> cfg = LlamaConfig(vocab_size=16, hidden_size=8, intermediate_size=16,
        ...                   num_layers=2, num_heads=2, num_kv_heads=1)
        >>> p = init_random_params(cfg, jax.random.PRNGKey(0))
        >>> pos = jnp.arange(3, dtype=jnp.int32)[None]
        >>> x = embed(cfg, p, jnp.array([[1, 2, 3]]), pos)
        >>> h, _ = decoder_layers(cfg, p["layers"], x, pos)
        >>> h.shape
        (1, 3, 8)
    """
    c = config
    positions = jnp.asarray(positions).astype(jnp.int32)
    B, T = positions.shape
    hd, H, K = c.head_dim, c.num_heads, c.num_kv_heads
    cos, sin = _rope_cos_sin(c, positions, rope_freqs)
    q_pos = positions[:, :, None]  # (B, T, 1)
    if cache is None:
        key_pos = positions[:, None, :]  # (B, 1, T)
    else:
        S = cache.max_len
        # Padding (-1) and out-of-range positions map to index S, which mode="drop" ignores.
        write_idx = jnp.where((positions >= 0) & (positions < S), positions, S)
        rows = jnp.arange(B, dtype=jnp.int32)[:, None]
        new_pos = cache.pos.at[rows, write_idx].set(positions, mode="drop")
        key_pos = new_pos[:, None, :]  # (B, 1, S)
    mask = (key_pos >= 0) & (key_pos <= q_pos) & (q_pos >= 0)

    def block(x, lp, kv):
        h = _rms_norm(x, lp["attn_norm"], c.rms_norm_eps)
        q = _apply_rope((h @ lp["wq"]).reshape(B, T, H, hd), cos, sin)
        k = _apply_rope((h @ lp["wk"]).reshape(B, T, K, hd), cos, sin)
        v = (h @ lp["wv"]).reshape(B, T, K, hd)
        if kv is not None:
            k_l, v_l = kv
            k = k_l.at[rows, write_idx].set(k.astype(k_l.dtype), mode="drop")
            v = v_l.at[rows, write_idx].set(v.astype(v_l.dtype), mode="drop")
        attn = _attention(q, k, v, mask, K).astype(x.dtype)
        x = x + attn @ lp["wo"]
        h = _rms_norm(x, lp["mlp_norm"], c.rms_norm_eps)
        x = x + (jax.nn.silu(h @ lp["w_gate"]) * (h @ lp["w_up"])) @ lp["w_down"]
        return x, (k, v)

    if cache is None:
        def plain(x, lp):
            x = block(x, lp, None)[0]
            return x, (x if hidden else None)

        x, states = jax.lax.scan(plain, x, layers)
        return (x, None, states) if hidden else (x, None)

    def layer(carry, xs):
        x, k_all, v_all = carry
        lp, i = xs
        k_l = jax.lax.dynamic_index_in_dim(k_all, i, axis=0, keepdims=False)
        v_l = jax.lax.dynamic_index_in_dim(v_all, i, axis=0, keepdims=False)
        x, (k_l, v_l) = block(x, lp, (k_l, v_l))
        k_all = jax.lax.dynamic_update_index_in_dim(k_all, k_l, i, axis=0)
        v_all = jax.lax.dynamic_update_index_in_dim(v_all, v_l, i, axis=0)
        return (x, k_all, v_all), (x if hidden else None)

    n_layers = jax.tree_util.tree_leaves(layers)[0].shape[0]
    layer_ids = jnp.arange(n_layers, dtype=jnp.int32)
    (x, k_all, v_all), states = jax.lax.scan(layer, (x, cache.k, cache.v), (layers, layer_ids))
    new_cache = KVCache(k_all, v_all, new_pos)
    return (x, new_cache, states) if hidden else (x, new_cache)


def unembed(config: LlamaConfig, params: Params, x: jax.Array) -> jax.Array:
    """Final RMSNorm and the LM head (the tied embedding or ``params["lm_head"]``): float32 logits."""
    return _lm_head(config, params, _rms_norm(x, params["final_norm"], config.rms_norm_eps))


def _lm_head(config: LlamaConfig, params: Params, h: jax.Array) -> jax.Array:
    if config.tie_word_embeddings:
        logits = jnp.einsum("...d,vd->...v", h, params["embed"], preferred_element_type=jnp.float32)
    else:
        logits = jnp.einsum("...d,dv->...v", h, params["lm_head"], preferred_element_type=jnp.float32)
    return logits.astype(jnp.float32)


def forward(
    config: LlamaConfig,
    params: Params,
    tokens: jax.Array,
    cache: KVCache,
    positions: jax.Array,
    early_exit_layers: tuple[int, ...] = (),
    early_exit_norm: bool = False,
) -> tuple[jax.Array, KVCache] | tuple[jax.Array, KVCache, jax.Array]:
    """Run the model on ``tokens`` at ``positions``, reading and updating ``cache``.

    This is the un-jitted step with ``config`` as first argument; most callers
    want :func:`make_step`. See the module docstring for the meaning of the
    arguments. Keys/values of non-padding tokens are scattered into cache slot
    ``positions[b, t]``; positions ``>= max_len`` are dropped (not written), so
    keep positions below ``max_len`` (:func:`make_step` checks this for host
    arrays; inside ``jit`` it cannot). It is :func:`embed`, then
    :func:`decoder_layers`, then :func:`unembed`.

    ``early_exit_layers`` (static, see :func:`make_step`): also return the LM head
    applied to those layers' hidden states, ``(B, T, J, vocab_size)`` float32, as a
    third output.

    Example::

        >>> cfg = LlamaConfig(vocab_size=16, hidden_size=8, intermediate_size=16,
        ...                   num_layers=1, num_heads=2, num_kv_heads=1)
        >>> p = init_random_params(cfg, jax.random.PRNGKey(0))
        >>> logits, _ = forward(cfg, p, jnp.zeros((1, 2), jnp.int32),
        ...                     init_cache(cfg, 1, 4), jnp.array([[0, 1]], jnp.int32))
        >>> logits.shape, logits.dtype
        ((1, 2, 16), dtype('float32'))
    """
    _check_step_inputs(config, tokens, cache, positions)
    positions = jnp.asarray(positions).astype(jnp.int32)
    x0 = embed(config, params, tokens, positions)
    out = decoder_layers(config, params["layers"], x0, positions, cache, rope_freqs=params.get("rope_freqs"),
                         hidden=bool(early_exit_layers))
    x, cache = out[:2]
    logits = unembed(config, params, x)
    if not early_exit_layers:
        return logits, cache
    # hidden state j: the embedding output (j = 0) or the output of layer j (transformers'
    # hidden_states[j]), before the final norm unless early_exit_norm
    states = jnp.concatenate([x0[None], out[2]], axis=0)[jnp.asarray(early_exit_layers)]  # (J, B, T, D)
    if early_exit_norm:
        states = _rms_norm(states, params["final_norm"], config.rms_norm_eps)
    early = jnp.moveaxis(_lm_head(config, params, states), 0, 2)  # (B, T, J, V)
    return logits, cache, early


def forward_sequence(config: LlamaConfig, params: Params, tokens: jax.Array, positions: Any = None) -> jax.Array:
    """Logits ``(B, T, V)`` of a full sequence without a cache (training, scoring).

    Causal over the ``T`` tokens; ``positions`` default to ``0 … T-1`` in every row
    (``-1`` marks padding, as in :func:`forward`). Equal to :func:`forward` with an empty
    cache of ``max_len = T``, without writing one.

    Example::

        >>> cfg = LlamaConfig(vocab_size=16, hidden_size=8, intermediate_size=16,
        ...                   num_layers=1, num_heads=2, num_kv_heads=1)
        >>> p = init_random_params(cfg, jax.random.PRNGKey(0))
        >>> toks = jnp.array([[3, 4, 5]], jnp.int32)
        >>> cached, _ = forward(cfg, p, toks, init_cache(cfg, 1, 3), jnp.arange(3)[None])
        >>> bool(jnp.allclose(forward_sequence(cfg, p, toks), cached, atol=1e-5))
        True
    """
    tokens = jnp.asarray(tokens).astype(jnp.int32)
    if tokens.ndim != 2:
        raise ValueError(f"tokens must have shape (batch, T), got shape {tokens.shape}")
    if positions is None:
        positions = jnp.broadcast_to(jnp.arange(tokens.shape[1], dtype=jnp.int32), tokens.shape)
    positions = jnp.asarray(positions).astype(jnp.int32)
    if positions.shape != tokens.shape:
        raise ValueError(f"positions must have the same shape as tokens {tokens.shape}, got {positions.shape}")
    x = embed(config, params, tokens, positions)
    x, _ = decoder_layers(config, params["layers"], x, positions, rope_freqs=params.get("rope_freqs"))
    return unembed(config, params, x)


def _check_layers(config: LlamaConfig, layers, name: str) -> tuple[int, ...]:
    layers = tuple(layers)
    n = config.num_layers
    bad = [i for i in layers if isinstance(i, bool) or not isinstance(i, (int, np.integer)) or not 0 <= i < n]
    if bad or not layers:
        raise ValueError(
            f"{name}: layer indices must be integers in [0, num_layers - 1 = {n - 1}] (0: the embedding "
            f"output, j: the output of layer j; the final layer {n} is the model's own logits), got {list(layers)}"
        )
    return tuple(int(i) for i in layers)


def dola_layers(config: LlamaConfig, layers: str | Any = "high") -> tuple[int, ...]:
    """DoLa's candidate premature layers, transformers' ``dola_layers`` rule.

    ``"low"`` / ``"high"``: every second layer of the lower / upper half of the model
    (``range(start, N // 2, 2)`` / ``range(N // 2, N, 2)``, the first / last 20 layers for
    ``N > 40``), starting at layer 2 for models with tied embeddings (the embedding layer's
    early exit would be the identity); or a list of layer indices, each in ``[0, N − 1]``
    (transformers silently drops indices ``≥ N``; here they are an error).

    Example::

        >>> cfg = LlamaConfig(vocab_size=8, hidden_size=8, intermediate_size=16,
        ...                   num_layers=30, num_heads=2, num_kv_heads=1)
        >>> dola_layers(cfg, "high"), dola_layers(cfg, "low")[:3]
        ((15, 17, 19, 21, 23, 25, 27, 29), (2, 4, 6))
    """
    n = config.num_layers
    if isinstance(layers, str):
        start = 0 if not config.tie_word_embeddings else (2 if n > 2 else (1 if n == 2 else 0))
        if layers == "low":
            if start == n // 2:
                return (start,)
            return tuple(range(start, n // 2, 2) if n <= 40 else range(start, 20, 2))
        if layers == "high":
            return tuple(range(n // 2, n, 2) if n <= 40 else range(n - 20, n, 2))
        raise ValueError(f"dola_layers: `layers` must be 'low', 'high' or a list of layer indices, got {layers!r}")
    return _check_layers(config, layers, "dola_layers")


def truncate(config: LlamaConfig, params: Params, num_layers: int) -> tuple[LlamaConfig, Params]:
    """The model cut to its first ``num_layers`` layers (same embedding, final norm and LM
    head): e.g. an "amateur" for contrastive decoding. The parameters are slices (no copy
    of the kept layers' values is made until they are used).

    Example::

        >>> cfg = LlamaConfig(vocab_size=8, hidden_size=8, intermediate_size=16,
        ...                   num_layers=4, num_heads=2, num_kv_heads=1)
        >>> small, p = truncate(cfg, init_random_params(cfg, jax.random.PRNGKey(0)), 1)
        >>> small.num_layers, p["layers"]["wq"].shape
        (1, (1, 8, 8))
    """
    if isinstance(num_layers, bool) or not isinstance(num_layers, (int, np.integer)) or not (
            1 <= num_layers <= config.num_layers):
        raise ValueError(f"truncate: `num_layers` must be an integer in [1, {config.num_layers}], got {num_layers!r}")
    small = dataclasses.replace(config, num_layers=int(num_layers))
    out = dict(params)
    out["layers"] = jax.tree.map(lambda x: x[:num_layers], params["layers"])
    return small, out


def make_step(config: LlamaConfig, *, jit: bool = True, donate_cache: bool = False,
              early_exit_layers: Any = None, early_exit_norm: bool = False) -> StepFn:
    """Return ``step(params, tokens, cache, positions) -> (logits, cache)`` for ``config``.

    Args:
        config: the model configuration (bound statically).
        jit: compile the step with ``jax.jit`` (one compilation per distinct
            ``(B, T, max_len)`` shape).
        donate_cache: donate the input cache buffers to the output (saves a
            cache-sized copy per call; the cache passed in must not be reused).
        early_exit_layers: None, or layer indices ``j`` in ``[0, num_layers − 1]``
            (:func:`dola_layers`): the step then returns ``(logits, cache, early)`` with
            ``early`` the LM head applied to those layers' hidden states, ``(B, T, J, V)``
            (j = 0: the embedding output; j: the output of layer j) — DoLa's candidate
            premature layers, which :func:`simplex_decode.generate` hands to the decoder as
            ``second_logits``.
        early_exit_norm: apply the final RMSNorm before the LM head on those layers.
            False (default) is transformers' DoLa, which applies the LM head to the
            raw hidden states (``lm_head(hidden_states[j])``).

    The returned function validates shapes (``T > max_len`` raises a
    ``ValueError`` naming ``max_len``) and, when ``positions`` is a host array
    (NumPy / list), that every position is ``< max_len``. Positions that are
    already device arrays are not inspected, to avoid a host sync per step.

    Example::

        >>> cfg = LlamaConfig(vocab_size=16, hidden_size=8, intermediate_size=16,
        ...                   num_layers=1, num_heads=2, num_kv_heads=1)
        >>> step = make_step(cfg)
        >>> p = init_random_params(cfg, jax.random.PRNGKey(0))
        >>> cache = init_cache(cfg, 1, 4)
        >>> logits, cache = step(p, np.array([[3, 4]], np.int32), cache, np.array([[0, 1]], np.int32))
        >>> cache.pos.tolist()
        [[0, 1, -1, -1]]
    """
    layers = () if early_exit_layers is None else _check_layers(config, early_exit_layers, "early_exit_layers")
    fn = functools.partial(forward, config, early_exit_layers=layers, early_exit_norm=bool(early_exit_norm))
    if jit:
        fn = jax.jit(fn, donate_argnums=(2,) if donate_cache else ())

    def step(params: Params, tokens: Any, cache: KVCache, positions: Any):
        if not isinstance(cache, KVCache):
            raise TypeError(f"cache must be a KVCache from init_cache(), got {type(cache).__name__}")
        _check_host_positions(positions, cache.max_len)
        return fn(params, tokens, cache, positions)

    step.__doc__ = (
        "step(params, tokens, cache, positions) -> (logits, cache); see simplex_decode.models.llama.forward."
    )
    return step
