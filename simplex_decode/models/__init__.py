"""Model implementations: a pure-JAX Llama decoder, a GGUF loader and its tokenizer.

Example::

    >>> from simplex_decode.models import load_gguf, make_step, init_cache  # doctest: +SKIP
    >>> config, params, tokenizer = load_gguf()  # SmolLM2-135M-Instruct   # doctest: +SKIP
    >>> step = make_step(config)                                            # doctest: +SKIP
    >>> cache = init_cache(config, batch=1, max_len=256)                    # doctest: +SKIP
"""

from .gguf_loader import default_model_path, load_gguf, load_gguf_config
from .llama import (
    KVCache,
    LlamaConfig,
    Params,
    StepFn,
    decoder_layers,
    dola_layers,
    embed,
    forward,
    forward_sequence,
    init_cache,
    init_random_params,
    make_step,
    positions_from_mask,
    truncate,
    unembed,
)
from .tokenizer import CHATML_TEMPLATE, GGUFTokenizer

__all__ = [
    "CHATML_TEMPLATE",
    "GGUFTokenizer",
    "KVCache",
    "LlamaConfig",
    "Params",
    "StepFn",
    "decoder_layers",
    "default_model_path",
    "dola_layers",
    "embed",
    "forward",
    "forward_sequence",
    "init_cache",
    "init_random_params",
    "load_gguf",
    "load_gguf_config",
    "make_step",
    "positions_from_mask",
    "truncate",
    "unembed",
]
