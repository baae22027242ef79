"""Tasks with checkable answers: multi-digit addition and the path-star graph task.

Every task is a frozen dataclass with a fixed-length prompt (``prompt_len`` tokens) and a
fixed-length answer (``answer_len`` tokens, the last one EOS), vectorised numpy generators
with explicit seeds, and a disjoint held-out split:

* :meth:`Task.test_set` ``(n, seed)`` — the held-out problems;
* :meth:`Task.train_set` ``(n, seed, exclude=test)`` — training problems, none of which
  is in ``exclude``;
* :meth:`Task.answer_codes` — the answer of generated ids as an ``int64`` code (``-1``:
  malformed), comparable with :attr:`Examples.codes` (so accuracy is ``codes == truth``
  and majority voting is over codes).

Token ids: each task documents its vocabulary; ``eos_id``, ``pad_id`` and ``dummy_id``
(the teacherless input token) are always the last three ids.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import numpy as np

__all__ = ["Examples", "Addition", "PathStar"]


class Examples(NamedTuple):
    """A batch of problems: ``prompts`` int32 ``(n, P)``, ``answers`` int32 ``(n, A)`` (the
    target tokens, EOS last), ``codes`` int64 ``(n,)`` (the true answers' codes) and
    ``keys`` int64 ``(n,)`` (a problem identity used to keep splits disjoint)."""

    prompts: np.ndarray
    answers: np.ndarray
    codes: np.ndarray
    keys: np.ndarray

    def __len__(self):
        return len(self.codes)

    def take(self, idx) -> Examples:
        return Examples(*(x[idx] for x in self))

    def first(self, n: int) -> Examples:
        """The first ``n`` problems."""
        return self.take(np.arange(min(int(n), len(self))))

    @property
    def sequences(self) -> np.ndarray:
        """Prompt followed by answer: int32 ``(n, P + A)``."""
        return np.concatenate([self.prompts, self.answers], axis=1)


def _check_int(owner, name, value, lo, hi=None):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < lo or (hi is not None and value > hi):
        rng = f"[{lo}, {hi}]" if hi is not None else f">= {lo}"
        raise ValueError(f"{owner}: `{name}` must be an integer {rng}, got {value!r}")
    return int(value)


class _Task:
    """Shared split logic (subclasses define ``_sample``, ``prompt_len``, ``answer_len``)."""

    def _sample(self, rng: np.random.Generator, n: int) -> Examples:  # pragma: no cover - abstract
        raise NotImplementedError

    def test_set(self, n: int, seed: int = 0) -> Examples:
        """``n`` distinct held-out problems drawn with ``seed``."""
        n = _check_int(type(self).__name__, "n", n, 1)
        return self._distinct(np.random.default_rng([seed, 0x7E57]), n, exclude=None)

    def train_set(self, n: int, seed: int = 0, *, exclude: Examples | None = None) -> Examples:
        """``n`` training problems drawn with ``seed`` (repeats allowed), none in ``exclude``."""
        n = _check_int(type(self).__name__, "n", n, 1)
        rng = np.random.default_rng([seed, 0x7A1])
        banned = np.unique(exclude.keys) if exclude is not None else np.zeros(0, np.int64)
        parts, have = [], 0
        while have < n:
            ex = self._sample(rng, max(2 * (n - have), 64))
            ex = ex.take(~np.isin(ex.keys, banned))
            parts.append(ex)
            have += len(ex)
        return _concat(parts).take(np.arange(n))

    def _distinct(self, rng, n, exclude):
        parts, seen = [], np.zeros(0, np.int64)
        for _ in range(1000):
            ex = self._sample(rng, 2 * n)
            _, first = np.unique(ex.keys, return_index=True)
            ex = ex.take(np.sort(first))
            ex = ex.take(~np.isin(ex.keys, seen))
            parts.append(ex)
            seen = np.concatenate([seen, ex.keys])
            if len(seen) >= n:
                return _concat(parts).take(np.arange(n))
        raise ValueError(f"{type(self).__name__}: cannot draw {n} distinct problems (the task has fewer)")

    @property
    def sequence_len(self) -> int:
        return self.prompt_len + self.answer_len


def _concat(parts):
    return Examples(*(np.concatenate(xs) for xs in zip(*parts, strict=True)))


@dataclasses.dataclass(frozen=True)
class Addition(_Task):
    """``a + b`` with ``digits``-digit operands (zero-padded), exact-match answers.

    Prompt: the digits of ``a``, ``+``, the digits of ``b``, ``=`` (``2·digits + 2`` tokens);
    answer: the ``digits + 1`` digits of ``a + b`` (zero-padded) then EOS. With
    ``reverse=True`` the answer's digits come least significant first — the known trick
    that lets a left-to-right model produce each digit after the carry it depends on.

    Vocabulary: ``0``–``9`` are ids 0–9, ``+`` 10, ``=`` 11, EOS 12, PAD 13, dummy 14.

    Example:
      >>> task = Addition(digits=3)
      >>> ex = task.test_set(2, seed=0)
      >>> ex.prompts.shape, ex.answers.shape
      ((2, 8), (2, 5))
      >>> task.render(ex.sequences[0])[:8] == task.render(ex.prompts[0])
      True
    """

    digits: int = 3
    reverse: bool = False

    def __post_init__(self):
        _check_int("Addition", "digits", self.digits, 1, 17)
        if not isinstance(self.reverse, bool):
            raise ValueError(f"Addition: `reverse` must be True or False, got {self.reverse!r}")

    plus_id = 10
    equals_id = 11
    eos_id = 12
    pad_id = 13
    dummy_id = 14
    vocab_size = 15

    @property
    def name(self) -> str:
        return f"addition{self.digits}{'-rev' if self.reverse else ''}"

    @property
    def prompt_len(self) -> int:
        return 2 * self.digits + 2

    @property
    def answer_len(self) -> int:
        return self.digits + 2

    def _digits(self, x, width):
        powers = 10 ** np.arange(width - 1, -1, -1, dtype=np.int64)
        return ((x[:, None] // powers) % 10).astype(np.int32)

    def make(self, a, b) -> Examples:
        """The problems ``a[i] + b[i]`` (integer arrays in ``[0, 10^digits)``)."""
        a, b = np.asarray(a, np.int64), np.asarray(b, np.int64)
        hi = 10**self.digits
        if a.shape != b.shape or a.ndim != 1 or a.min(initial=0) < 0 or b.min(initial=0) < 0 or \
                a.max(initial=0) >= hi or b.max(initial=0) >= hi:
            raise ValueError(f"Addition.make: `a`, `b` must be 1-D integer arrays of one shape in [0, {hi})")
        n, d = len(a), self.digits
        prompts = np.concatenate(
            [self._digits(a, d), np.full((n, 1), self.plus_id, np.int32), self._digits(b, d),
             np.full((n, 1), self.equals_id, np.int32)], axis=1)
        s = self._digits(a + b, d + 1)
        if self.reverse:
            s = s[:, ::-1]
        answers = np.concatenate([s, np.full((n, 1), self.eos_id, np.int32)], axis=1)
        return Examples(prompts, answers.astype(np.int32), a + b, a * hi + b)

    def _sample(self, rng, n):
        hi = 10**self.digits
        return self.make(rng.integers(0, hi, n), rng.integers(0, hi, n))

    def answer_codes(self, tokens) -> np.ndarray:
        """The sums that generated ids spell (int64, ``-1`` if not ``digits + 1`` digits then EOS)."""
        t = np.asarray(tokens)
        d = self.digits + 1
        if t.shape[-1] < d + 1:
            raise ValueError(f"answer_codes: need at least {d + 1} generated tokens, got {t.shape[-1]}")
        body = t[..., :d]
        ok = np.all((body >= 0) & (body <= 9), axis=-1) & (t[..., d] == self.eos_id)
        if self.reverse:
            body = body[..., ::-1]
        value = np.sum(np.clip(body, 0, 9).astype(np.int64) * 10 ** np.arange(d - 1, -1, -1, dtype=np.int64), axis=-1)
        return np.where(ok, value, -1)

    def render(self, ids) -> str:
        chars = "0123456789+=$"  # EOS shown as '$'
        return "".join(chars[int(i)] if i < 12 else ("$" if i == self.eos_id else "_") for i in ids)


@dataclasses.dataclass(frozen=True)
class PathStar(_Task):
    """The path-star graph task of Bachmann & Nagarajan (2024), "The Pitfalls of Next-Token
    Prediction" (arXiv 2403.06963).

    A source node has ``degree`` arms, each a path of ``path_len`` nodes counting the
    source (so ``path_len − 1`` further nodes); node labels are distinct, drawn from
    ``0 … num_nodes − 1``. The goal is the leaf of one arm. The prompt is the paper's
    format: the ``degree·(path_len − 1)`` edges ``u v`` in random order separated by
    ``|``, then ``/``, the source, the goal and ``=``; the answer is the path from source
    to goal (``path_len`` nodes, the source first) then EOS. With ``reverse=True`` the
    answer is the same path from goal to source (the paper's reversed targets);
    :meth:`answer_codes` reads either direction as the forward path.

    Vocabulary: nodes are ids ``0 … num_nodes − 1``; then ``|``, ``/``, ``=``, EOS, PAD, dummy.

    Example:
      >>> task = PathStar(degree=2, path_len=4, num_nodes=20)
      >>> ex = task.test_set(1, seed=0)
      >>> ex.prompts.shape, ex.answers.shape   # 6 edges: 6*2 + 5 separators + 4
      ((1, 21), (1, 5))
      >>> bool(task.answer_codes(ex.answers)[0] == ex.codes[0])
      True
    """

    degree: int = 2
    path_len: int = 5
    num_nodes: int = 50
    reverse: bool = False

    def __post_init__(self):
        _check_int("PathStar", "degree", self.degree, 1)
        _check_int("PathStar", "path_len", self.path_len, 2)
        _check_int("PathStar", "num_nodes", self.num_nodes, 2)
        need = 1 + self.degree * (self.path_len - 1)
        if self.num_nodes < need:
            raise ValueError(f"PathStar: `num_nodes` must be >= 1 + degree*(path_len-1) = {need}, got {self.num_nodes}")
        if float(self.num_nodes) ** self.path_len >= 2.0**62:
            raise ValueError("PathStar: num_nodes**path_len must be < 2**62 (answers are int64 codes)")
        if not isinstance(self.reverse, bool):
            raise ValueError(f"PathStar: `reverse` must be True or False, got {self.reverse!r}")

    @property
    def name(self) -> str:
        return f"pathstar-d{self.degree}-l{self.path_len}-n{self.num_nodes}{'-rev' if self.reverse else ''}"

    @property
    def bar_id(self) -> int:
        return self.num_nodes

    @property
    def slash_id(self) -> int:
        return self.num_nodes + 1

    @property
    def equals_id(self) -> int:
        return self.num_nodes + 2

    @property
    def eos_id(self) -> int:
        return self.num_nodes + 3

    @property
    def pad_id(self) -> int:
        return self.num_nodes + 4

    @property
    def dummy_id(self) -> int:
        return self.num_nodes + 5

    @property
    def vocab_size(self) -> int:
        return self.num_nodes + 6

    @property
    def num_edges(self) -> int:
        return self.degree * (self.path_len - 1)

    @property
    def prompt_len(self) -> int:
        return 3 * self.num_edges + 3

    @property
    def answer_len(self) -> int:
        return self.path_len + 1

    def _sample(self, rng, n):
        d, ln, N, E = self.degree, self.path_len, self.num_nodes, self.num_edges
        nodes = rng.permuted(np.broadcast_to(np.arange(N, dtype=np.int32), (n, N)), axis=1)[:, : 1 + d * (ln - 1)]
        source = nodes[:, 0]
        arms = nodes[:, 1:].reshape(n, d, ln - 1)  # arm 0 leads to the goal
        heads = np.concatenate([np.broadcast_to(source[:, None, None], (n, d, 1)), arms[:, :, :-1]], axis=2)
        edges = np.stack([heads, arms], axis=-1).reshape(n, E, 2)
        order = np.argsort(rng.random((n, E)), axis=1)
        edges = np.take_along_axis(edges, order[:, :, None], axis=1)
        sep = np.full((n, E, 1), self.bar_id, np.int32)
        edge_tokens = np.concatenate([edges, sep], axis=2).reshape(n, 3 * E)[:, :-1]
        goal = arms[:, 0, -1]
        prompts = np.concatenate(
            [edge_tokens, np.full((n, 1), self.slash_id, np.int32), source[:, None], goal[:, None],
             np.full((n, 1), self.equals_id, np.int32)], axis=1).astype(np.int32)
        path = np.concatenate([source[:, None], arms[:, 0]], axis=1)
        codes = self._code(path)
        target = path[:, ::-1] if self.reverse else path
        answers = np.concatenate([target, np.full((n, 1), self.eos_id, np.int32)], axis=1).astype(np.int32)
        # a problem's identity: its edge set and goal (the edge order is presentation)
        keys = self._graph_key(edges, goal)
        return Examples(prompts, answers, codes, keys)

    def _code(self, path):
        w = self.num_nodes ** np.arange(self.path_len, dtype=np.int64)
        return np.sum(path.astype(np.int64) * w, axis=-1)

    def _graph_key(self, edges, goal):
        N = np.int64(self.num_nodes)
        e = edges[..., 0].astype(np.int64) * N + edges[..., 1]
        e = np.sort(e, axis=1)
        h = goal.astype(np.int64)
        for j in range(e.shape[1]):  # a polynomial hash over the sorted edges (E is small)
            h = (h * np.int64(1_000_003) + e[:, j]) % np.int64(2**61 - 1)
        return h

    def answer_codes(self, tokens) -> np.ndarray:
        """The forward path the generated ids spell (int64 code, ``-1`` if not ``path_len``
        nodes then EOS)."""
        t = np.asarray(tokens)
        ln = self.path_len
        if t.shape[-1] < ln + 1:
            raise ValueError(f"answer_codes: need at least {ln + 1} generated tokens, got {t.shape[-1]}")
        body = t[..., :ln]
        ok = np.all((body >= 0) & (body < self.num_nodes), axis=-1) & (t[..., ln] == self.eos_id)
        if self.reverse:
            body = body[..., ::-1]
        return np.where(ok, self._code(np.clip(body, 0, self.num_nodes - 1)), -1)

    def neighbours(self, prompts) -> np.ndarray:
        """``(n, degree)`` the source's neighbours (the first decision's options), in edge order."""
        p = np.asarray(prompts)
        E = self.num_edges
        edges = p[:, : 3 * E - 1]
        edges = np.concatenate([edges, np.full((len(p), 1), self.bar_id)], axis=1).reshape(len(p), E, 3)[:, :, :2]
        source = p[:, 3 * E]
        is_out = edges[:, :, 0] == source[:, None]
        order = np.argsort(~is_out, axis=1, kind="stable")[:, : self.degree]
        return np.take_along_axis(edges[:, :, 1], order, axis=1)

    def follows_edges(self, prompts, tokens) -> np.ndarray:
        """Whether generated ids form a path of the graph from its source to a leaf (any arm),
        read in the task's direction: the "valid but maybe wrong arm" diagnostic."""
        p, t = np.asarray(prompts), np.asarray(tokens)
        E, ln, N = self.num_edges, self.path_len, self.num_nodes
        edges = np.concatenate([p[:, : 3 * E - 1], np.full((len(p), 1), self.bar_id)], axis=1)
        edges = edges.reshape(len(p), E, 3)[:, :, :2].astype(np.int64)
        body = t[:, :ln].astype(np.int64)
        ok = np.all((body >= 0) & (body < N), axis=1) & (t[:, ln] == self.eos_id)
        if self.reverse:
            body = body[:, ::-1]
        ok &= body[:, 0] == p[:, 3 * E]
        pairs = body[:, :-1] * N + body[:, 1:]  # (n, path_len-1)
        have = edges[:, :, 0] * N + edges[:, :, 1]  # (n, E)
        ok &= np.all(np.any(pairs[:, :, None] == have[:, None, :], axis=2), axis=1)
        return ok

    def render(self, ids) -> str:
        names = {self.bar_id: "|", self.slash_id: "/", self.equals_id: "=", self.eos_id: "<eos>",
                 self.pad_id: "_", self.dummy_id: "$"}
        return " ".join(names.get(int(i), str(int(i))) for i in ids)
