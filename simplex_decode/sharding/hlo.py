"""What a compiled program communicates: the collectives of its HLO text.

:func:`collectives` lists every collective instruction (all-gather, all-reduce,
reduce-scatter, all-to-all, collective-permute, and their async ``-start`` forms) with its
operand shapes and how many times it runs per call (the known trip counts of the ``while``
loops around it); :func:`bytes_communicated` sums operand bytes × runs;
:func:`vocab_gathers` finds the all-gathers whose operand has a vocabulary-sized dimension.

  >>> import simplex_decode as sd
  >>> text = "\\n".join(["ENTRY %main {", "  %x = f32[2,2]{1,0} parameter(0)",
  ...                     "  ROOT %a = f32[2,8]{1,0} all-gather(%x), dimensions={1}", "}"])
  >>> [c.op for c in sd.sharding.hlo.collectives(text)]
  ['all-gather']
  >>> sd.sharding.hlo.bytes_communicated(text)
  16
"""

from __future__ import annotations

import math
import re
from typing import NamedTuple

__all__ = ["Collective", "collectives", "bytes_communicated", "vocab_gathers"]

_OPS = ("all-gather", "all-reduce", "reduce-scatter", "all-to-all", "collective-permute", "collective-broadcast")
_BYTES = {"pred": 1, "s8": 1, "u8": 1, "bf16": 2, "f16": 2, "s16": 2, "u16": 2, "f32": 4, "s32": 4, "u32": 4,
          "f64": 8, "s64": 8, "u64": 8}
_SHAPE = re.compile(r"\b(pred|[suf]\d+|bf16)\[([\d,]*)\]")
_INSTR = re.compile(r"=\s*(.*?)\s\b(" + "|".join(_OPS) + r")(-start)?\((.*?)\)(,|\s|$)")
_DEF = re.compile(r"^\s*(?:ROOT\s+)?%([\w.\-]+)\s*=\s*(\([^=]*?\)|\S+)\s")
_NAME = re.compile(r"%([\w.\-]+)")
_COMP = re.compile(r"^\s*(?:ENTRY\s+)?%?([\w.\-]+)\s.*\{\s*$")
_WHILE = re.compile(r"\bwhile\(.*?body=%?([\w.\-]+)")
_TRIP = re.compile(r'known_trip_count"?\s*[:=]\s*\{\s*"?n"?\s*[:=]\s*"?(\d+)')
_CALLS = re.compile(r"\b(?:to_apply|calls|true_computation|false_computation|branch_computations)=\{?([%\w.\-, ]+)\}?")


class Collective(NamedTuple):
    op: str  # "all-gather", "all-reduce", …
    operands: tuple  # ((dtype, dims), …)
    runs: int  # times per call (product of the enclosing loops' trip counts)
    line: str

    @property
    def bytes(self) -> int:
        """Operand bytes of one run (per device)."""
        return sum(_BYTES.get(d, 4) * math.prod(dims) for d, dims in self.operands)


def _shapes(text):
    return tuple((d, tuple(int(n) for n in dims.split(",") if n)) for d, dims in _SHAPE.findall(text))


def _computations(text):
    comps, name, entry = {}, None, None
    for line in text.splitlines():
        line = re.sub(r"/\*.*?\*/", "", line)  # /*index=5*/ in tuple types
        m = _COMP.match(line)
        if m and "=" not in line.split("{")[0]:
            name = m.group(1)
            comps[name] = []
            if line.lstrip().startswith("ENTRY"):
                entry = name
        elif name is not None:
            comps[name].append(line)
    return comps, entry


def collectives(text: str) -> list[Collective]:
    """Every collective of the HLO ``text`` (``compiled.as_text()``) with its run count."""
    comps, _ = _computations(text)
    calls = {}  # computation -> [(callee, trips)]
    for name, lines in comps.items():
        for line in lines:
            w = _WHILE.search(line)
            if w:
                trip = _TRIP.search(line)
                calls.setdefault(name, []).append((w.group(1), int(trip.group(1)) if trip else 1))
            for group in _CALLS.findall(line):
                calls.setdefault(name, []).extend((c.strip().lstrip("%"), 1) for c in group.split(",") if c.strip())
    # runs per call: the largest product of trip counts on a path from a root (loops multiply)
    runs = dict.fromkeys(comps, 1)
    for _ in range(len(comps)):
        changed = False
        for name, callees in calls.items():
            for callee, n in callees:
                if callee in runs and runs[name] * n > runs[callee]:
                    runs[callee], changed = runs[name] * n, True
        if not changed:
            break
    defs = {}  # instruction name -> its result type (operands are printed by name only)
    for lines in comps.values():
        for line in lines:
            d = _DEF.match(line)
            if d:
                defs[d.group(1)] = d.group(2)
    out = []
    for name, lines in comps.items():
        for line in lines:
            m = _INSTR.search(line)
            if m:
                args = m.group(4)
                operands = _shapes(args) or sum((_shapes(defs.get(n, "")) for n in _NAME.findall(args)), ())
                out.append(Collective(m.group(2), operands, runs.get(name, 1), line.strip()))
    return out


def bytes_communicated(text: str) -> int:
    """Σ operand bytes × runs over the collectives of ``text`` (per device and call)."""
    return sum(c.bytes * c.runs for c in collectives(text))


def vocab_gathers(text: str, vocab_shard: int) -> list[Collective]:
    """The all-gathers / all-to-alls whose operand has a dimension of at least
    ``vocab_shard`` entries (a shard of the vocabulary or more): gathers of the row."""
    return [c for c in collectives(text) if c.op in ("all-gather", "all-to-all")
            and any(n >= vocab_shard for _, dims in c.operands for n in dims)]
