"""The ``simplex-decode`` command line (see :mod:`.main`): SPEC parsing (:mod:`.spec`), model
loading (:mod:`.model`), the demo (:mod:`.demo`), ``verify`` / ``bench`` / ``plot``
(:mod:`.verify`, :mod:`.bench`, :mod:`.plot`) and what they print or write
(:mod:`.describe`, :mod:`.output`)."""

from .main import build_parser, main
from .model import Model, check_context, load_model
from .spec import CLIError, available_presets, build_decoder, parse_spec

__all__ = [
    "CLIError",
    "Model",
    "available_presets",
    "build_decoder",
    "build_parser",
    "check_context",
    "load_model",
    "main",
    "parse_spec",
]
