"""Structured generation: regular expressions and JSON schemas as support rules with state.

    >>> import simplex_decode as sd                                          # doctest: +SKIP
    >>> from simplex_decode.constraints import Vocabulary, json_schema, regex # doctest: +SKIP
    >>> voc = Vocabulary.from_tokenizer(tokenizer)                           # doctest: +SKIP
    >>> dec = sd.constrain(sd.top_p(0.9), regex(r"\\d{4}-\\d{2}-\\d{2}", voc))   # doctest: +SKIP
    >>> sd.generate(step, params, prompts, decoder=dec, eos_id=voc.eos_ids, ...)  # doctest: +SKIP

* :mod:`.vocabulary` — :class:`Vocabulary`: the bytes of every token id, and the EOS ids;
* :mod:`.compile` — :func:`regex`, :func:`json_schema` → :class:`Automaton` (outlines-core);
* :mod:`.tables` — the automata as device tables: ``mask`` / ``advance`` / ``accepting``;
* :mod:`.rule` — :class:`Constraint`, the support rule with state, and :func:`constrain`.
"""

from .compile import MAX_TABLE_BYTES, Automaton, json_schema, regex
from .rule import Constraint, constrain
from .tables import HostTables, Tables, accepting, advance, mask, union
from .vocabulary import Vocabulary

__all__ = [
    "MAX_TABLE_BYTES",
    "Automaton",
    "Constraint",
    "HostTables",
    "Tables",
    "Vocabulary",
    "accepting",
    "advance",
    "constrain",
    "json_schema",
    "mask",
    "regex",
    "union",
]
