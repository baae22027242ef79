"""Decoder SPECs: call-like strings such as ``top_p(p=0.9, temperature=0.7)``, parsed with
:mod:`ast` (never evaluated) and built by :mod:`simplex_decode.config`.

A SPEC names a preset (:data:`simplex_decode.PRESETS`) or ``chain`` with literal arguments,
or spells the decoder out with component calls — ``Decoder(objective=Objective(terms=[...],
support=[TopP(p=0.9)]), solver=Exact())`` is what :func:`simplex_decode.config.to_spec`
writes. A SPEC ending in ``.json``, ``.yaml`` or ``.yml`` is a config file to read instead.
"""

from __future__ import annotations

from typing import Any

__all__ = ["CLIError", "MAX_SPEC_CHARS", "available_presets", "parse_spec", "build_decoder", "check_fits",
           "signature_text"]

#: The longest SPEC the command line takes (a config file holds larger decoders).
MAX_SPEC_CHARS = 20_000


class CLIError(Exception):
    """A user error: printed as ``simplex-decode: error: …`` with exit status 2."""


def error_text(e: Exception) -> str:
    """An error's message for the terminal, without checkify's `` (`check` failed)`` tag
    (the on-device checks of :func:`simplex_decode.checked` raise with it)."""
    return str(e).removesuffix(" (`check` failed)")


def available_presets() -> dict[str, Any]:
    """``{name: preset function}``: the named decoders a SPEC may call (``PRESETS``)."""
    from ..presets import PRESETS

    return dict(PRESETS)


def parse_spec(spec: str):
    """``"top_p(p=0.9, temperature=0.7)"`` → a :class:`simplex_decode._config.Call` with
    ``name``, ``args``, ``kwargs`` (nested calls are Calls too). Nothing is evaluated.

    Example:
      >>> call = parse_spec("top_k(5, temperature=0.5)")
      >>> call.name, call.args, call.kwargs
      ('top_k', (5,), {'temperature': 0.5})
    """
    from .._config import parse_spec as parse

    return parse(spec, max_chars=MAX_SPEC_CHARS)


def signature_text(fn) -> str:
    """``fn``'s signature as the CLI prints it: ``(p, temperature=1.0, *, from_model=False)``."""
    from ..config import signature

    try:
        return str(signature(fn))
    except (TypeError, ValueError):  # pragma: no cover - every preset is a Python function
        return "(...)"


def build_decoder(spec: str):
    """The :class:`simplex_decode.Decoder` a SPEC (or a config file path) describes.

    Unknown names and parameters raise ``ValueError`` listing the valid ones (with a "did
    you mean"); bad values raise the constructor's own ``ValueError`` (naming the
    parameter and its range), prefixed with where in the SPEC it sits.

    Example:
      >>> build_decoder("top_p(p=0.9, temperature=0.7)").objective.support[0].__class__.__name__
      'TopP'
      >>> build_decoder("top_p(p=0.9, temprature=0.7)")
      Traceback (most recent call last):
      ...
      ValueError: decoder spec: top_p has no parameter 'temprature' (did you mean 'temperature'?); its parameters are: p, temperature, from_model, min_keep
    """
    from ..config import from_spec, load
    from ..decoder import Decoder
    from ..objective import Objective

    if isinstance(spec, str) and spec.strip().lower().endswith((".json", ".yaml", ".yml")):
        obj = load(spec.strip())
    else:
        obj = from_spec(spec, max_chars=MAX_SPEC_CHARS)
    if isinstance(obj, Objective):
        raise ValueError("decoder spec: describes an Objective, not a Decoder; wrap it: Decoder(objective=...)")
    if not isinstance(obj, Decoder):
        raise ValueError(f"decoder spec: describes a {type(obj).__name__}, not a Decoder")
    return obj


def check_fits(decoder, vocab_size: int, *, what: str = "decoder") -> None:
    """Raise a CLIError when ``decoder`` cannot run on ``vocab_size`` tokens (``top_k(k=50)``
    on 40 tokens, a mask of the wrong length, …).

    Under ``jit`` — inside ``generate``, a benchmark loop — such a parameter can raise only
    through ``checkify``, so the decoder is run once, jitted with its checks on
    (:func:`simplex_decode.checked`), on one row of zeros (and a one-token history, for the
    transforms that read one).
    """
    import jax
    import numpy as np

    from ..decoder import checked

    run = checked(jax.jit(lambda d, x, h: d.solve(x, history=h).status))
    try:
        run(decoder, np.zeros((1, vocab_size), np.float32), np.zeros((1, 1), np.int32))
    except ValueError as e:
        raise CLIError(f"{what} on {vocab_size} tokens: {error_text(e)}") from None
