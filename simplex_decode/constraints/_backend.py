"""The optional library constraints are compiled with (outlines-core), imported on first use."""

from __future__ import annotations


def outlines_core():
    """The ``outlines_core`` module, or an ImportError saying how to install it."""
    try:
        import outlines_core as oc
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(
            "structured generation compiles regular expressions and JSON schemas with outlines-core: "
            "pip install 'simplex_decode[structured]' (or pip install outlines-core)"
        ) from e
    return oc
