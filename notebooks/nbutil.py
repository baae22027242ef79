"""Shared set-up of the research notebooks (sources in ``notebooks/src/``).

The setting is chosen by ``NOTEBOOK_PROFILE`` (``fast``, the default, is what CI executes;
``full`` is what the committed outputs come from), as for the reproduction notebooks.
In the fast setting the language model is a tiny random Llama over bytes — a pipeline
check whose numbers mean nothing — and figures go to a scratch folder; in the full
setting it is SmolLM2-135M-Instruct and figures are saved under ``notebooks/figures/``.
"""

from __future__ import annotations

import functools
import os
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent


def profile() -> str:
    return os.environ.get("NOTEBOOK_PROFILE", "fast")


def save(fig, name: str, fast: bool):
    """Save ``fig`` as ``<name>.png``: under ``notebooks/figures/`` in the full setting (the
    README shows them), under ``$NOTEBOOK_OUT`` (or a scratch folder) in the fast one."""
    out = Path(os.environ.get("NOTEBOOK_OUT") or tempfile.mkdtemp()) if fast else HERE / "figures"
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}.png"
    fig.savefig(path, dpi=110, bbox_inches="tight")
    return path


class LM:
    """A language model on the ``step`` protocol of :func:`simplex_decode.generate`, with a
    tokenizer: ``encode(str) -> ids``, ``decode(ids) -> str``, ``logits(ids) -> (V,)`` (the
    next-token logits after the prompt), ``cache`` (the factory ``generate`` takes)."""

    def __init__(self, name, config, params, encode, decode, eos_ids):
        from simplex_decode.models import forward_sequence, init_cache, make_step

        self.name, self.config, self.params = name, config, params
        self.encode, self.decode, self.eos_ids = encode, decode, eos_ids
        self.step = make_step(config)
        self.cache = functools.partial(init_cache, config)
        self._forward = forward_sequence

    def logits(self, prompt: str):
        import jax.numpy as jnp

        ids = jnp.asarray([self.encode(prompt)], jnp.int32)
        return self._forward(self.config, self.params, ids)[0, -1]


def load_lm(fast: bool) -> LM:
    """SmolLM2-135M-Instruct (full setting) or a tiny random byte-level Llama (fast)."""
    if not fast:
        from simplex_decode.cli.model import load_model

        m = load_model()
        return LM("SmolLM2-135M-Instruct", m.config, m.params, lambda s: list(m.tokenizer.encode(s)),
                  m.decode, m.eos_ids)
    import jax

    from simplex_decode.models import LlamaConfig, init_random_params

    config = LlamaConfig(vocab_size=256, hidden_size=32, intermediate_size=64, num_layers=2, num_heads=2,
                         num_kv_heads=1, max_position_embeddings=256)
    params = init_random_params(config, jax.random.key(0), scale=0.5)
    return LM("tiny random byte-level Llama (fast setting: numbers mean nothing)", config, params,
              lambda s: list(s.encode("utf-8")), lambda ids: bytes(int(i) % 256 for i in ids).decode("utf-8", "replace"),
              ())
