"""Compile a regular expression or a JSON schema into a DFA over token ids.

The automaton comes from `outlines-core <https://github.com/dottxt-ai/outlines-core>`_:
its ``Index`` is the regex's byte-level DFA (Rust ``regex-automata``) walked through every
token of the vocabulary, i.e. a finite automaton whose alphabet is the token ids — exactly
what a table on the device can hold. This module reads that automaton state by state and
turns it into three arrays (:class:`Automaton`):

* ``token_class`` ``(V,)``: tokens that behave alike in every state share a class (the
  coarsest such partition, found by partition refinement). Classes are few — tens to a few
  hundred for the JSON schemas of the tests, against V = 49 152 tokens — because most tokens
  are either never allowed or interchangeable (any text token inside a JSON string);
* ``transitions`` ``(S, C)`` int32: the next state for every state and token class, ``0``
  where the class is not allowed (row 0 is the dead state: nothing allowed, never accepting);
* ``accepting`` ``(S,)``: the states in which the text so far is a complete match; the
  vocabulary's EOS ids are allowed there and only there (and keep the state).

so that the allowed-token mask of a state is one gather, ``transitions[state][token_class]
!= 0``, and the next state another (:mod:`simplex_decode.constraints.tables`).

Two corrections to the library, both tested:

* outlines-core 0.2.14 (the current release) drops a token whose bytes pass through a point
  where the pattern could already have ended without ending there (``1+(xy)?`` from ``1``
  never offers ``x``; a signed decimal never gets its ``.``), because its regex engine reports
  matches one byte late. Anchoring the pattern at the end of the text, ``(?:pattern)\\z``,
  makes that report impossible; the language is unchanged. (Fixed upstream after 0.2.14, by
  commit 2ba0b24; the tests check the result against llguidance, an independent engine.)
* states from which no accepting state can be reached are removed (none occur in the tests:
  the library already rejects a pattern whose automaton has such a state with no way out).

Size. A table takes ``4·(S·C + V)`` bytes. Past ``max_table_bytes`` (default
:data:`MAX_TABLE_BYTES`, 256 MiB) the automaton is kept on the host instead: the mask and the
next state are then computed by the library through a host callback each step (correct, slower;
see :mod:`simplex_decode.constraints.tables`) — never a truncated table.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections import OrderedDict
from typing import Any

import numpy as np

from ._backend import outlines_core
from .vocabulary import Vocabulary

__all__ = ["Automaton", "MAX_TABLE_BYTES", "UNSUPPORTED_KEYWORDS", "regex", "json_schema"]

#: Largest device table (bytes) before an automaton is kept on the host.
MAX_TABLE_BYTES = 256 * 2**20

_ROWS = 2**24  # states beyond this many are not tabulated (the refinement packs (class, row) in int64)
_CACHE: OrderedDict = OrderedDict()
_CACHE_SIZE = 32


@dataclasses.dataclass(frozen=True, eq=False)
class Automaton:
    """A constraint compiled against a :class:`Vocabulary`: a DFA over token ids.

    Attributes:
      kind: ``"regex"`` or ``"json_schema"``.
      source: the pattern or the schema (JSON text) as given, for messages.
      pattern: the regular expression compiled (for a schema, the one derived from it).
      vocabulary: the :class:`Vocabulary` it was compiled against.
      token_class, transitions, accepting: the tables (numpy; see the module docstring), or
        None when the automaton is kept on the host (``on_device`` is False).
      start: the start state (1).
      library_states: the outlines-core state of every row of the tables (-1 for the dead row).
      index: the outlines-core ``Index`` (the host path and the parity tests read it).
      stats: ``states``, ``classes``, ``edges`` (allowed (state, token) pairs), ``pruned``
        (states removed: no accepting state reachable), ``table_bytes``, ``index_seconds``
        (the library's compile), ``table_seconds`` (this module's).
    """

    kind: str
    source: str
    pattern: str
    vocabulary: Vocabulary
    token_class: Any
    transitions: Any
    accepting: Any
    start: int
    library_states: Any
    index: Any
    stats: dict
    pruned_library_states: frozenset = frozenset()

    @property
    def on_device(self) -> bool:
        return self.transitions is not None

    @property
    def vocab_size(self) -> int:
        return self.vocabulary.size

    @property
    def eos_ids(self) -> tuple[int, ...]:
        return self.vocabulary.eos_ids

    def describe(self) -> str:
        """``regex '...'`` / ``json_schema {...}`` (shortened), for messages."""
        text = self.source if len(self.source) <= 60 else self.source[:57] + "..."
        return f"{self.kind} {text!r}" if self.kind == "regex" else f"{self.kind} {text}"

    @property
    def max_tokens(self) -> int | None:
        """The most tokens (EOS excluded) any complete match can take, or None when the
        language is infinite (unbounded repetition). With ``max_new_tokens >= max_tokens + 1``
        every constrained row ends with EOS: in a state with no continuation only EOS is left."""
        if not self.on_device:
            return None
        cached = self.stats.get("max_tokens", -1)
        if cached != -1:
            return cached
        eos_cls = np.unique(self.token_class[list(self.eos_ids)])
        text_cls = np.setdiff1d(np.arange(self.transitions.shape[1]), eos_cls)
        succ = [np.setdiff1d(np.unique(self.transitions[r, text_cls]), [0]) for r in range(len(self.accepting))]
        seen, order, stack = {self.start}, [], [self.start]
        while stack:  # the states reachable from the start
            r = stack.pop()
            order.append(r)
            for t in succ[r].tolist():
                if t not in seen:
                    seen.add(t)
                    stack.append(t)
        indeg = dict.fromkeys(order, 0)
        for r in order:
            for t in succ[r].tolist():
                indeg[t] += 1
        ready, topo = [r for r in order if indeg[r] == 0], []
        while ready:  # Kahn: a cycle leaves states unprocessed
            r = ready.pop()
            topo.append(r)
            for t in succ[r].tolist():
                indeg[t] -= 1
                if indeg[t] == 0:
                    ready.append(t)
        result = None
        if len(topo) == len(order):
            dist = dict.fromkeys(order, -1)
            dist[self.start] = 0
            for r in topo:
                if dist[r] >= 0:
                    for t in succ[r].tolist():
                        dist[t] = max(dist[t], dist[r] + 1)
            result = max(d for r, d in dist.items() if self.accepting[r])
        self.stats["max_tokens"] = result
        return result

    def walk(self, ids) -> int:
        """The state after ``ids`` from the start (host, on the tables; 0 = a token was not allowed)."""
        if not self.on_device:
            raise ValueError(f"{self.describe()}: kept on the host (no tables); walk its index instead")
        s = self.start
        for t in ids:
            s = int(self.transitions[s, self.token_class[int(t)]])
        return s

    def __repr__(self) -> str:
        st = self.stats
        where = "device" if self.on_device else "host"
        return (f"Automaton({self.describe()}, states={st['states']}, classes={st.get('classes')}, "
                f"{where}, {st['table_bytes'] / 2**20:.2f} MiB)")


def _check_vocabulary(vocabulary):
    if not isinstance(vocabulary, Vocabulary):
        raise ValueError(
            "vocabulary: must be a simplex_decode.constraints.Vocabulary (Vocabulary.from_tokenizer(tok)), "
            f"got {type(vocabulary).__name__}"
        )


def _check_limit(max_table_bytes):
    if isinstance(max_table_bytes, bool) or not isinstance(max_table_bytes, int) or max_table_bytes < 0:
        raise ValueError(f"max_table_bytes: must be an integer >= 0, got {max_table_bytes!r}")


def regex(pattern: str, vocabulary: Vocabulary, *, max_table_bytes: int = MAX_TABLE_BYTES) -> Automaton:
    """Compile a regular expression (Rust ``regex`` syntax, matched against the whole output).

    The constrained output is a string the pattern matches *in full*; ``\\d``, ``\\w`` and
    ``.`` are Unicode-aware (``\\d`` is any Unicode digit: write ``[0-9]`` for ASCII).

    Raises ``ValueError`` naming the pattern when it is not a valid regular expression or
    when no token sequence of ``vocabulary`` spells a match (an empty language).

    Example:
      >>> voc = Vocabulary([b"1", b"2", b"-", b"12", None], eos_ids=[4])
      >>> a = regex(r"[12]+-[12]", voc)
      >>> a.walk([3, 2, 0]) > 0, bool(a.accepting[a.walk([3, 2, 0])]), a.walk([2])
      (True, True, 0)
    """
    if not isinstance(pattern, str) or not pattern:
        raise ValueError(f"regex: the pattern must be a non-empty string, got {pattern!r}")
    _check_vocabulary(vocabulary)
    _check_limit(max_table_bytes)
    return _compile("regex", pattern, pattern, vocabulary, max_table_bytes)


def _schema_text(schema) -> tuple[str, Any]:
    if isinstance(schema, (dict, bool)):
        return json.dumps(schema), schema
    if isinstance(schema, (str, bytes)):
        try:
            return (schema if isinstance(schema, str) else schema.decode()), json.loads(schema)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ValueError(f"json_schema: not valid JSON ({e})") from e
    raise ValueError(f"json_schema: must be a dict or JSON text, got {type(schema).__name__}")


#: Keywords that restrict values but that outlines-core 0.2.14 does not compile (it ignores
#: them): with ``strict=True`` a schema using one is rejected rather than silently relaxed.
UNSUPPORTED_KEYWORDS = frozenset({
    "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf", "uniqueItems", "contains",
    "minContains", "maxContains", "not", "if", "then", "else", "dependentRequired", "dependentSchemas",
    "dependencies", "patternProperties", "propertyNames", "unevaluatedProperties", "unevaluatedItems",
    "additionalItems", "oneOf",
})


_NUMBER_DIGIT_BOUNDS = ("minDigitsInteger", "maxDigitsInteger", "minDigitsFraction", "maxDigitsFraction",
                        "minDigitsExponent", "maxDigitsExponent")


def _unsupported(node, path=()):
    """(path, keyword) for every value restriction of ``node`` that outlines-core would ignore."""
    if isinstance(node, list):
        for i, x in enumerate(node):
            yield from _unsupported(x, path + (str(i),))
        return
    if not isinstance(node, dict):
        return
    for k in node:
        if k in UNSUPPORTED_KEYWORDS:
            yield path, k
    if ("minLength" in node or "maxLength" in node) and ("pattern" in node or "format" in node):
        yield path, "pattern" if "pattern" in node else "format"  # dropped when a length bound is given
    if "properties" in node and ("minProperties" in node or "maxProperties" in node):
        yield path, "minProperties" if "minProperties" in node else "maxProperties"
    for k in _NUMBER_DIGIT_BOUNDS:  # outlines-core's bounded numbers admit "1." and "1e+" (not JSON)
        if k in node:
            yield path, k
    for k in ("properties", "$defs", "definitions"):
        if isinstance(node.get(k), dict):
            for name, sub in node[k].items():
                yield from _unsupported(sub, path + (k, name))
    for k in ("items", "additionalProperties", "anyOf", "allOf", "oneOf", "prefixItems"):
        if k in node:
            yield from _unsupported(node[k], path + (k,))


def json_schema(schema, vocabulary: Vocabulary, *, whitespace: str | None = None, strict: bool = True,
                max_table_bytes: int = MAX_TABLE_BYTES) -> Automaton:
    """Compile a JSON schema: the output is a JSON document valid under it.

    The schema is turned into a regular expression by outlines-core
    (``build_regex_from_schema``; properties in their declared order, ``whitespace`` between
    tokens — default ``[ ]?`` — and the subset of JSON Schema it supports), then compiled
    like :func:`regex`. When the ``jsonschema`` package is installed the schema is first
    checked against its meta-schema.

    ``strict``: outlines-core compiles only part of JSON Schema and ignores the rest (numeric
    bounds, ``uniqueItems``, ``not``, ``if``/``then``, ``pattern`` or ``format`` next to a
    length bound, ...: :data:`UNSUPPORTED_KEYWORDS`), and its own digit bounds on numbers
    (``maxDigitsFraction``, ...) admit texts that are not JSON (``1.``, ``1e+``); the
    default rejects a schema that uses any of them, since its output would not be guaranteed
    valid. ``strict=False`` compiles the schema as the library does. (``maxDigits`` on an
    integer is sound and allowed.)

    Raises ``ValueError`` naming the schema when it is not JSON, not a valid or supported
    schema, or admits no document (e.g. ``{"enum": []}``).

    Example:
      >>> voc = Vocabulary([b"{", b"}", b'"a"', b":", b"1", b" ", None], eos_ids=[6])
      >>> a = json_schema({"type": "object", "properties": {"a": {"type": "integer"}},
      ...                  "required": ["a"]}, voc)
      >>> bool(a.accepting[a.walk([0, 2, 3, 4, 1])])
      True
    """
    _check_vocabulary(vocabulary)
    _check_limit(max_table_bytes)
    text, obj = _schema_text(schema)
    try:
        import jsonschema
    except ImportError:  # pragma: no cover - jsonschema is in the structured extra
        jsonschema = None
    if jsonschema is not None:
        try:
            jsonschema.validators.validator_for(obj).check_schema(obj)
        except jsonschema.SchemaError as e:
            where = "/".join(str(p) for p in e.path) or "(root)"
            raise ValueError(f"json_schema: not a valid JSON Schema at {where}: {e.message}") from e
    if not isinstance(strict, bool):
        raise ValueError(f"strict: must be True or False, got {strict!r}")
    bad = list(_unsupported(obj)) if strict else []
    if bad:
        where = ", ".join(f"{k!r} at {'/'.join(p) or '(root)'}" for p, k in bad[:5])
        raise ValueError(
            f"json_schema: uses keywords outlines-core does not enforce ({where}); the output would not be "
            "guaranteed valid — remove them, or pass strict=False to compile the schema without them"
        )
    oc = outlines_core()
    try:
        pattern = oc.json_schema.build_regex_from_schema(text, whitespace)
    except (ValueError, TypeError) as e:
        first = str(e).strip().splitlines()[0]
        raise ValueError(f"json_schema: outlines-core cannot compile this schema: {first}") from e
    a = _compile("json_schema", text, pattern, vocabulary, max_table_bytes)
    if a.on_device and a.accepting[a.start]:
        raise ValueError(
            f"json_schema: {a.describe()} admits no JSON document (its pattern {pattern!r} matches only the empty text)"
        )
    return a


def _compile(kind, source, pattern, vocabulary, max_table_bytes) -> Automaton:
    key = (kind, pattern, vocabulary.fingerprint, max_table_bytes)
    hit = _CACHE.get(key)
    if hit is not None:
        _CACHE.move_to_end(key)
        return hit
    what = f"{kind} {source!r}" if kind == "regex" else f"{kind} {source if len(source) < 200 else source[:197] + '...'}"
    oc = outlines_core()
    # Syntax first, on a one-token vocabulary (cheap): the anchored pattern below could
    # otherwise accept an unbalanced one such as "a)|(b".
    try:
        oc.Index(pattern, oc.Vocabulary(1, {b"\x00": [0]}))
    except ValueError as e:
        if "incompatible" not in str(e):
            raise ValueError(f"{what}: not a valid regular expression ({e})") from e
    t0 = time.perf_counter()
    try:
        index = oc.Index(f"(?:{pattern})\\z", vocabulary._outlines())
    except ValueError as e:
        raise ValueError(
            f"{what}: its language is empty for this vocabulary — no token sequence spells a match ({e})"
        ) from e
    t1 = time.perf_counter()
    a = _tabulate(kind, source, pattern, vocabulary, index, max_table_bytes, what)
    a.stats["index_seconds"] = t1 - t0
    a.stats["table_seconds"] = time.perf_counter() - t1
    _CACHE[key] = a
    if len(_CACHE) > _CACHE_SIZE:
        _CACHE.popitem(last=False)
    return a


def _tabulate(kind, source, pattern, vocabulary, index, max_table_bytes, what) -> Automaton:
    """Read the library's automaton breadth-first into (token_class, transitions, accepting)."""
    V = vocabulary.size
    eos_lib = vocabulary.eos_ids[0]
    eos = np.asarray(vocabulary.eos_ids, np.int64)
    start = index.get_initial_state()
    dense = {start: 1}  # library state -> row; row 0 is the dead state
    order = [start]
    succ: list[np.ndarray] = []
    accepting = []
    cls = np.zeros(V, np.int64)  # partition refinement of the tokens by their columns
    fresh = 1
    fits = True
    edges = 0
    i = 0
    allowed_of, next_of = index.get_allowed_tokens, index.get_next_state
    while i < len(order):
        s = order[i]
        i += 1
        toks = np.sort(np.asarray(allowed_of(s), np.int64))
        toks = toks[toks != eos_lib]
        lib_targets = np.asarray([next_of(s, t) for t in toks.tolist()], np.int64)
        uniq, inv = np.unique(lib_targets, return_inverse=True)
        rows = np.empty(len(uniq), np.int64)
        for j, nxt in enumerate(uniq.tolist()):
            row = dense.get(nxt)
            if row is None:
                row = dense[nxt] = len(order) + 1
                order.append(nxt)
            rows[j] = row
        targets = rows[inv]
        final = bool(index.is_final_state(s))
        accepting.append(final)
        if final:  # EOS keeps the state
            toks = np.concatenate([toks, eos])
            targets = np.concatenate([targets, np.full(len(eos), dense[s], np.int64)])
        edges += len(toks)
        succ.append(np.unique(targets))
        if fits and len(toks):
            _, inv = np.unique(cls[toks] * _ROWS + targets, return_inverse=True)
            cls[toks] = fresh + inv
            fresh += int(inv.max()) + 1
            if len(order) & (len(order) - 1) == 0 or i == len(order):  # now and then: does it still fit?
                n_cls = len(np.unique(cls))
                fits = 4 * ((len(order) + 1) * n_cls + V) <= max_table_bytes and len(order) < _ROWS
    S = len(order) + 1
    acc = np.zeros(S, bool)
    acc[1:] = accepting
    live = _coreachable(succ, acc)
    if not live[1]:
        raise ValueError(f"{what}: its language is empty for this vocabulary (no token sequence reaches a match)")
    pruned = frozenset(order[r - 1] for r in np.nonzero(~live[1:])[0] + 1)
    lib_states = np.asarray([-1] + order, np.int64)
    stats = {"states": S - 1, "edges": edges, "pruned": len(pruned)}
    _, token_class = np.unique(cls, return_inverse=True)
    C = int(token_class.max()) + 1
    if not fits or 4 * (S * C + V) > max_table_bytes:
        stats.update(classes=None, table_bytes=0)
        return Automaton(kind, source, pattern, vocabulary, None, None, None, 1, lib_states, index, stats, pruned)
    reps = np.zeros(C, np.int64)
    reps[token_class[::-1]] = np.arange(V)[::-1]  # the lowest token id of each class
    is_eos = np.zeros(V, bool)
    is_eos[eos] = True
    table = np.zeros((S, C), np.int32)
    for r, s in enumerate(order, start=1):
        allowed = np.zeros(V, bool)
        allowed[np.asarray(allowed_of(s), np.int64)] = True
        for c in np.nonzero(allowed[reps] & ~is_eos[reps])[0].tolist():
            table[r, c] = dense[index.get_next_state(s, int(reps[c]))]
        if acc[r]:
            table[r, token_class[eos]] = r
    table = np.where(live[table], table, 0).astype(np.int32)  # transitions into pruned states are not allowed
    stats.update(classes=C, table_bytes=4 * (S * C + V))
    return Automaton(kind, source, pattern, vocabulary, token_class.astype(np.int32), table, acc, 1,
                     lib_states, index, stats, pruned)


def _coreachable(succ, accepting) -> np.ndarray:
    """Rows from which an accepting row can be reached (row 0, the dead state, never)."""
    S = len(accepting)
    pred: list[list[int]] = [[] for _ in range(S)]
    for r, targets in enumerate(succ, start=1):
        for t in targets.tolist():
            pred[t].append(r)
    live = accepting.copy()
    stack = list(np.nonzero(accepting)[0])
    while stack:
        t = stack.pop()
        for r in pred[t]:
            if not live[r]:
                live[r] = True
                stack.append(r)
    live[0] = False
    return live


def read_schema_file(path) -> str:
    """The text of a JSON-schema file, with a clear error if it cannot be read."""
    try:
        with open(os.fspath(path), encoding="utf-8") as f:
            return f.read()
    except OSError as e:
        raise ValueError(f"json_schema: cannot read {os.fspath(path)!r} ({e.strerror})") from e
