"""One contract, every decoder: the shared decoder suite (optax's ``_OPTIMIZERS_UNDER_TEST``).

Every case of :data:`tests.decoder_cases.CASES` (all of ``sd.PRESETS`` — asserted — plus
composite Objectives) runs each contract below:

* **simplex & support**: ``q`` finite, ``≥ 0``, summing to 1 within :data:`SUM_TOL` of its
  dtype; ``q = 0`` off the decoder's own support and off an independent numpy re-implementation
  of the rule; every token the rule must keep gets mass (``test_simplex_and_support``);
* **shift invariance** of the logits (``test_shift_invariance``; not for CTRL's penalty);
* **equal to cvxpy** where the objective has a reference (``test_matches_reference``);
* **one compilation** across float-parameter values, and **jit = eager**;
* **bad rows → status**: NaN / +inf / all −inf rows give ``q = 0``, id ``−1``, a named status;
  eager ``probs`` raises ``ValueError``, ``sd.checked(jax.jit(...))`` raises; never NaN;
* **row independence, bitwise**: a row decoded alone, in a batch, at another position and
  padded with hostile neighbours gives bit-identical ``q``, status and ids (one key per row);
* **keys**: the same key gives the same ids, different keys different ids where ``q`` is not
  one-hot;
* **hostile valid inputs** (hypothesis): ±1e30, ±float max, −inf masks, all-equal rows,
  massive ties, a single outlier, V ∈ {1, 2, 3, 65, 4096, 151 936}, bf16/fp16/fp32/fp64,
  temperatures 1e-4 … 1e3, every parameter at and just inside its bounds: a valid ``q`` or a
  named non-OK status, never NaN, never OK on an invalid row.

Profiles (registered in ``tests/conftest.py``): ``ci`` (default; a few examples per case, each
hostile menu entry of :data:`CI_EXTRA` run by some cases) and ``thorough`` (every case × every
menu entry, ≥ 10 000 hostile examples per case)::

    HYPOTHESIS_PROFILE=thorough SIMPLEX_DECODE_SUITE_COUNTS=suite_counts.json \\
        python -m pytest -q tests/test_decoder_suite.py -p no:cacheprovider

Row independence runs in ci at V = 20 480 for ``top_k`` and ``top_p`` (the candidate-window
families), at V = 4096 for :data:`ROWS_MID_CASES` (the other window paths, one case per solver
family) and at V = 65 for the rest (:func:`rows_V`); every other case × V ∈ {65, 4096, 20 480}
and two cases at V = 151 936 are marked ``slow`` (deselected by default)::

    python -m pytest -q -m slow tests/test_decoder_suite.py

``SIMPLEX_DECODE_SUITE_COUNTS`` names a JSON file the suite writes its per-case example and row
counts (and the statuses it saw) to.
"""

from __future__ import annotations

import collections
import contextlib
import json
import logging
import math
import os
import re
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import Phase, given, settings
from hypothesis import strategies as st

import simplex_decode as sd

from .conftest import synthetic_logits
from .decoder_cases import (
    CASES,
    KINDS,
    OUTSIDE_THE_SUITE,
    as_logits,
    cases_for,
    history_for,
    hostile_row,
    suite_examples,
)

B = 8  # rows of the main batch
V_SMALL = 65
#: Row-independence vocabulary: long enough for every candidate-window tier (> 16 400) and
#: the exact solver's candidate set (>= 8 192), and at most 32 768, beyond which XLA's CPU
#: row reductions associate differently for one row than for several (a separate test,
#: ``test_row_independence_at_full_vocabulary``, keeps that case in view).
V_ROWS = 20_480
V_BIG = 151_936

#: |Σ q − 1| allowed, by the dtype q is computed in (float32 for bf16/fp16/fp32 logits).
SUM_TOL = {"float32": 1e-5, "float64": 1e-12}

#: Named statuses a *valid* row (finite or -inf logits, at least one finite) may get instead
#: of OK: an overflow after a transform, a solver that did not converge or whose output is
#: not a distribution, an infeasible cap. Never NONFINITE_LOGITS, INVALID_PARAMETER (the
#: parameters are in range) or EMPTY_SUPPORT (every rule keeps a token) on such a row.
VALID_ROW_STATUSES = {sd.Status.NOT_CONVERGED, sd.Status.NONFINITE_SCORES, sd.Status.INVALID_SOLUTION,
                      sd.Status.INFEASIBLE}

# --------------------------------------------------------------------------------------
# The one jitted entry point every contract calls (one compilation per case and shape)
# --------------------------------------------------------------------------------------

_TRACES: collections.Counter = collections.Counter()
_CURRENT: list = [None]  # the case being run (a Python global read at trace time)


def _run(dec, logits, keys, history, history_mask):
    _TRACES[(_CURRENT[0], logits.shape, str(logits.dtype))] += 1
    problem = dec.objective.prepare(logits, history=history, history_mask=history_mask)
    sol = dec.solve(logits, history=history, history_mask=history_mask)
    ids = dec.sample(keys, logits, history=history, history_mask=history_mask)
    return sol.q, sol.status, ids, problem.mask


RUN = jax.jit(_run)


def _probs(dec, logits, history, history_mask):
    return dec.probs(logits, history=history, history_mask=history_mask)


CHECKED_PROBS = sd.checked(jax.jit(_probs))


def _history(case, B, V, seed=0):
    if not case.history:
        return None, None
    h, m = history_for(B, V, seed=seed)
    return jnp.asarray(h), jnp.asarray(m)


def _keys(seed, n):
    return jax.random.split(jax.random.key(seed), n)


def run(case, dec, logits, keys=None, history=None, *, seed=0):
    """``(q, status, ids, mask)`` as numpy arrays (``q`` float64 view of the result dtype)."""
    logits = jnp.asarray(logits)
    Bx, V = logits.shape
    if keys is None:
        keys = _keys(seed, Bx)
    h, m = history if history is not None else _history(case, Bx, V, seed)
    _CURRENT[0] = case.id
    q, status, ids, mask = RUN(dec, logits, keys, h, m)
    return np.asarray(q), np.asarray(status), np.asarray(ids), np.asarray(mask)


_TRACES_BEFORE: list = [collections.Counter()]


@pytest.fixture(autouse=True)
def _count_traces_per_test():
    """:func:`traces` counts the current test's traces only: ``conftest.py`` may clear
    JAX's caches between tests, after which a shape an earlier test compiled traces again."""
    _TRACES_BEFORE[0] = collections.Counter(_TRACES)


def traces(case, shape, dtype) -> int:
    """Traces of ``RUN`` for this case, shape and dtype during the current test (0 when an
    earlier test's compilation was reused; ``test_one_compilation_across_parameter_values``
    clears ``RUN``'s cache first, so there the count is exactly 1)."""
    key = (case.id, tuple(shape), str(jnp.dtype(dtype)))
    return _TRACES[key] - _TRACES_BEFORE[0][key]


@contextlib.contextmanager
def count_compilations(name="_run"):
    """Count XLA compilations of ``jit(name)`` (optax's ``log_compilations``)."""
    seen = []

    class Handler(logging.Handler):
        def emit(self, record):
            msg = record.getMessage()
            if msg.startswith(f"Compiling jit({name})"):
                seen.append(msg)

    handler = Handler()
    logger = logging.getLogger("jax")
    logger.addHandler(handler)
    try:
        with jax.log_compiles(True):
            yield seen
    finally:
        logger.removeHandler(handler)


# --------------------------------------------------------------------------------------
# Checks shared by the contracts
# --------------------------------------------------------------------------------------


def _compute_dtype(dtype):
    return "float64" if jnp.dtype(dtype) == jnp.float64 else "float32"


def assert_valid_rows(q, status, ids, mask, rows, dtype, what=""):
    """Rows ``rows`` (bool) are OK: q finite, ≥ 0, Σ = 1, 0 off the mask; ids in the support."""
    tol = SUM_TOL[_compute_dtype(dtype)]
    assert np.all(status[rows] == sd.Status.OK), f"{what}: status {status[rows]}"
    qr = np.asarray(q[rows], np.float64)
    assert np.all(np.isfinite(qr)) and np.all(qr >= 0), f"{what}: q not finite or negative"
    err = np.abs(qr.sum(-1) - 1.0)
    assert np.all(err <= tol), f"{what}: |Σq − 1| = {err.max():.3g} > {tol}"
    assert np.all(qr[~mask[rows]] == 0), f"{what}: q > 0 off the decoder's support"
    idr = ids[rows]
    assert np.all((idr >= 0) & (idr < q.shape[-1])), f"{what}: ids {idr}"
    assert np.all(np.take_along_axis(qr, idr[:, None].astype(np.int64), -1) > 0), f"{what}: sampled a q = 0 token"


def assert_status_rows(q, status, ids, rows, what=""):
    """Rows ``rows`` are not OK: q exactly 0, id -1, a named status."""
    assert np.all(status[rows] != sd.Status.OK), f"{what}: status {status[rows]}"
    assert all(int(s) in sd.Status._value2member_map_ for s in status[rows]), f"{what}: unnamed status"
    assert np.all(q[rows] == 0), f"{what}: q ≠ 0 on a row with status {status[rows]}"
    assert np.all(ids[rows] == -1), f"{what}: ids {ids[rows]} on rows with status {status[rows]}"


def bits(a):
    a = np.ascontiguousarray(a)
    return a.view(np.uint64 if a.dtype.itemsize == 8 else np.uint32 if a.dtype.itemsize == 4 else np.uint16)


# --------------------------------------------------------------------------------------
# Counts recorded for the thorough profile (SIMPLEX_DECODE_SUITE_COUNTS=path)
# --------------------------------------------------------------------------------------

COUNTS: dict = collections.defaultdict(lambda: collections.defaultdict(collections.Counter))


@pytest.fixture(scope="module", autouse=True)
def _write_counts():
    yield
    path = os.environ.get("SIMPLEX_DECODE_SUITE_COUNTS")
    if path and COUNTS:
        out = {
            case: {test: dict(sorted(c.items())) for test, c in sorted(tests.items())}
            for case, tests in sorted(COUNTS.items())
        }
        out["_settings"] = {"max_examples": settings.default.max_examples}
        with open(path, "w") as f:
            json.dump(out, f, indent=1, sort_keys=False)


def _count(case, test, status, entry=None):
    c = COUNTS[case.id][test if entry is None else f"{test}@{entry}"]
    c["examples"] += 1
    c["rows"] += int(status.size)
    for s, n in zip(*np.unique(status, return_counts=True), strict=True):
        name = sd.Status(int(s)).name if int(s) in sd.Status._value2member_map_ else f"code_{int(s)}"
        c[f"status_{name}"] += int(n)


# --------------------------------------------------------------------------------------
# Strategies
# --------------------------------------------------------------------------------------

_CI_PHASES = (Phase.explicit, Phase.reuse, Phase.generate)  # no shrinking in CI (xfail'd cases fail fast)
THOROUGH = suite_examples(1) != 1


def suite_settings(ci_examples, thorough_fraction=1.0, entries=1):
    """Settings of a suite search: ``ci_examples`` under the ci profile; under thorough, the
    profile's ``max_examples`` × ``thorough_fraction``, split over ``entries`` tests."""
    n = ci_examples if not THOROUGH else math.ceil(suite_examples(ci_examples) * thorough_fraction / entries)
    return settings(max_examples=n, phases=tuple(Phase) if THOROUGH else _CI_PHASES)


class Violations:
    """Under the thorough profile a search does not stop at its first violation: each kind
    (the message with its numbers masked) is counted with its first example, the search runs
    all its examples, and the test fails at the end with the summary. Under ci the first
    violation fails the test at once."""

    def __init__(self, case, test):
        self.case, self.test, self.kinds = case, test, {}

    @contextlib.contextmanager
    def check(self, example):
        if not THOROUGH:
            yield
            return
        try:
            yield
        except AssertionError as e:
            first = str(e).splitlines()[0]
            kind = re.sub(r"-?\d+(\.\d+)?(e[-+]?\d+)?", "#", first)[:160]
            n, ex = self.kinds.get(kind, (0, None))
            self.kinds[kind] = (n + 1, ex or f"{first[:300]} | {example()[:600]}")

    def raise_if_any(self):
        if self.kinds:
            COUNTS[self.case.id][f"{self.test}:violations"] = {k: n for k, (n, _) in self.kinds.items()}
            lines = [f"{n} × {k}\n    first: {ex}" for k, (n, ex) in sorted(self.kinds.items(), key=lambda t: -t[1][0])]
            pytest.fail(f"{self.case.id}: {sum(n for n, _ in self.kinds.values())} violating examples:\n" + "\n".join(lines))


def _values(case):
    return st.sampled_from(range(len(case.values))).map(lambda i: dict(case.values[i]))


def _moderate_rows(V):
    """Ordinary rows: normal at scales 0.1–10, LM-like peaks, ties, −inf masks."""
    kinds = st.sampled_from(["normal", "lm", "ties", "masked"])
    return st.tuples(kinds, st.integers(0, 2**31 - 1), st.floats(0.4, 0.8), st.floats(0, 1)).map(
        lambda r: hostile_row(r[0], V, "float32", r[1], r[2], r[3])
    )


# --------------------------------------------------------------------------------------
# The registry covers every preset
# --------------------------------------------------------------------------------------


def test_registry_covers_every_preset():
    covered = {c.preset for c in CASES if c.preset is not None}
    assert not covered & set(OUTSIDE_THE_SUITE), "a preset with a case is not outside the suite"
    for preset, path in OUTSIDE_THE_SUITE.items():
        assert f"sd.{preset}(" in (Path(__file__).parents[1] / path).read_text(), (preset, path)
    missing = set(sd.PRESETS) - covered - set(OUTSIDE_THE_SUITE)
    assert not missing and covered <= set(sd.PRESETS), f"presets without a case: {sorted(missing)}"
    for case in CASES:
        assert len(case.values) >= 3, case.id
        for values in case.values:
            assert set(values) == set(case.params), (case.id, "values and declared params differ")
        dec = case.decoder(V_SMALL)
        assert isinstance(dec, sd.Decoder), case.id


@pytest.mark.parametrize(
    "case,name",
    [
        pytest.param(c, n, id=f"{c.id}-{n}", marks=c.marks(f"bounds:{n}"))
        for c in CASES
        for n, p in c.params.items()
        if p.checked
    ],
)
def test_declared_bounds_match_the_library(case, name):
    """Every edge value of the table is accepted, every value just outside it is rejected
    with a ValueError naming the parameter as the user spelled it."""
    param = case.params[name]
    V = V_SMALL
    fix = case.fix or (lambda values: values)
    for v in param.edges(V):
        case.decoder(V, fix({**case.values[0], name: v}))
    spelled = param.spelled or name
    for v in param.outside(V):
        with pytest.raises(ValueError, match=rf"`{re.escape(spelled)}`"):
            dec = case.decoder(V, {**case.values[0], name: v})
            # a range that depends on V (top-k's k <= V) is checked when the decoder runs
            dec.probs(jnp.zeros((1, V)), **({"history": jnp.zeros((1, 4), jnp.int32)} if case.history else {}))


# --------------------------------------------------------------------------------------
# q on the simplex, support respected (independently), shift invariance
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", cases_for("simplex"))
def test_simplex_and_support(case):
    violations = Violations(case, "simplex")

    @suite_settings(8, thorough_fraction=0.1)
    @given(st.lists(_moderate_rows(V_SMALL), min_size=B, max_size=B), _values(case))
    def check(rows, values):
        with violations.check(lambda: f"values {values}"):
            _simplex_example(case, rows, values)

    check()
    violations.raise_if_any()


def _simplex_example(case, rows, values):
    x = np.stack(rows).astype(np.float32)
    q, status, ids, mask = run(case, case.decoder(V_SMALL, values), x)
    _count(case, "simplex", status)
    ok = np.ones(B, bool)
    if case.can_empty:
        ok = status != sd.Status.EMPTY_SUPPORT
        assert_status_rows(q, status, ids, ~ok, "emptied rows")
    assert_valid_rows(q, status, ids, mask, ok, "float32", case.id)
    if case.ref is not None:
        x64 = x.astype(np.float64)
        loose = case.ref(x64, values, 1e-4)
        strict = case.ref(x64, values, -1e-4)
        kept = q > 0
        assert not np.any(kept & ~loose), f"kept tokens the rule removes: {np.argwhere(kept & ~loose)[:5]}"
        t = float(values.get("temperature", 1.0))
        s = x64 / t
        top = np.max(np.where(strict, s, -np.inf), -1, keepdims=True)
        representable = s - top > -80.0  # exp(s − max) does not underflow in float32
        missed = strict & representable & ~kept
        assert not np.any(missed), f"dropped tokens the rule keeps: {np.argwhere(missed)[:5]}"
        if "k" in values:
            assert np.all(kept.sum(-1) <= int(values["k"]))


def _exact_shift_values(case):
    """values[0] with temperature-like leaves set to 0.5: dividing by a power of two is exact,
    so ``(x + c)/t`` is exactly ``x/t + c/t`` on grid logits."""
    out = dict(case.values[0])
    for name in ("temperature", "t"):
        if name in out:
            out[name] = 0.5
    return out


@pytest.mark.parametrize("case", cases_for("shift", lambda c: c.shift is not None))
def test_shift_invariance(case):
    """q(x + c) = q(x) on logits on a 1/64 grid with integer shifts |c| ≤ 64 (every sum is
    exact in float32): within ``case.shift`` (the solver's own rounding on continuous maps;
    threshold rules see identical max-subtracted scores)."""
    values = _exact_shift_values(case)
    dec = case.decoder(V_SMALL, values)

    violations = Violations(case, "shift")

    @suite_settings(6, thorough_fraction=0.1)
    @given(st.integers(0, 2**31 - 1), st.integers(-64, 64), st.floats(0, 0.9))
    def check(seed, c, masked):
        with violations.check(lambda: f"seed {seed}, c {c}, masked {masked}"):
            _shift_example(case, dec, seed, c, masked)

    check()
    violations.raise_if_any()


def _shift_example(case, dec, seed, c, masked):
    rng = np.random.default_rng(seed)
    x = np.round(rng.standard_normal((B, V_SMALL)) * 3 * 64) / 64
    x[rng.random(x.shape) < masked] = -np.inf
    x[:, 0] = np.maximum(x[:, 0], -8.0)  # at least one finite token
    x = x.astype(np.float32)
    q1, s1, _, m1 = run(case, dec, x)
    q2, s2, _, m2 = run(case, dec, (x + np.float32(c)).astype(np.float32))
    np.testing.assert_array_equal(s1, s2)
    ok = s1 == sd.Status.OK
    diff = np.abs(q1 - q2)[ok].max(initial=0.0)
    assert diff <= case.shift, f"max |q(x + {c}) − q(x)| = {diff:.3g} > {case.shift}"


# --------------------------------------------------------------------------------------
# Equal to cvxpy where the objective has a reference
# --------------------------------------------------------------------------------------


def _reference_logits(V, seed):
    rng = np.random.default_rng(seed)
    rows = [hostile_row(k, V, "float32", seed + i, 0.5, 0.3) for i, k in enumerate(["normal", "lm", "ties", "masked"])]
    rows += [rng.standard_normal(V) * 2.0 for _ in range(B - len(rows))]
    return np.stack(rows).astype(np.float32)


@pytest.mark.parametrize("case", cases_for("reference", lambda c: c.reference))
def test_matches_reference(case):
    pytest.importorskip("cvxpy")
    from simplex_decode import reference

    for i, values in enumerate(case.values[:2]):
        dec = case.decoder(V_SMALL, values)
        x = _reference_logits(V_SMALL, seed=10 + i)
        h, m = _history(case, B, V_SMALL)
        q, status, _, _ = run(case, dec, x, history=(h, m))
        ok = status == sd.Status.OK
        if case.can_empty:
            assert np.all(ok | (status == sd.Status.EMPTY_SUPPORT)), status
        else:
            assert np.all(ok), status
        ref = reference.solve(dec.objective, x[ok], history=None if h is None else h[ok],
                              history_mask=None if m is None else m[ok])
        l1 = np.abs(q[ok].astype(np.float64) - ref).sum(-1)
        assert l1.max() <= case.reference_tol, f"values {values}: L1 to cvxpy {l1.max():.3g} > {case.reference_tol}"


# --------------------------------------------------------------------------------------
# One compilation across parameter values; jit = eager
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", cases_for("compile"))
def test_one_compilation_across_parameter_values(case):
    x = _reference_logits(V_SMALL, seed=3)
    RUN.clear_cache()  # this test's first value must trace: the count below is then exact
    with count_compilations() as compiled:
        for values in case.values:
            run(case, case.decoder(V_SMALL, values), x)
    assert len(compiled) <= 1, f"{len(compiled)} compilations for {len(case.values)} parameter values"
    assert traces(case, x.shape, x.dtype) == 1, "traced more than once for new parameter values"


def _bad_batch(V, seed=0):
    """Rows 1, 2, 6 have NaN / +inf logits, row 3 is all −inf; rows 0, 4, 5, 7 are valid
    (row 5 has a single finite token)."""
    x = synthetic_logits("peaked", B, V, seed).astype(np.float32)
    x[1, 3] = np.nan
    x[2, 0] = np.inf
    x[3] = -np.inf
    x[5] = -np.inf
    x[5, 1] = 0.5
    x[6] = np.nan
    x[7] = np.round(x[7])  # ties
    return x


_BAD = np.array([False, True, True, True, False, False, True, False])


@pytest.mark.parametrize("case", cases_for("jit_eager"))
def test_jit_equals_eager(case):
    dec = case.decoder(V_SMALL)
    x = _bad_batch(V_SMALL)
    h, m = _history(case, B, V_SMALL)
    q, status, _, _ = run(case, dec, x, history=(h, m))
    # op by op: an eager call of a decoder runs its own compiled program (see Decoder.solve),
    # so disable_jit is what shows a Python branch on a concrete value
    with jax.disable_jit():
        sol = dec.solve(jnp.asarray(x), history=h, history_mask=m)
    np.testing.assert_array_equal(np.asarray(sol.status), status)
    np.testing.assert_allclose(np.asarray(sol.q), q, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("case", cases_for("bad_rows"))
def test_bad_rows_get_a_status(case):
    dec = case.decoder(V_SMALL)
    x = _bad_batch(V_SMALL)
    h, m = _history(case, B, V_SMALL)
    q, status, ids, mask = run(case, dec, x, history=(h, m))
    assert not np.any(np.isnan(q)), "NaN in q"
    assert_status_rows(q, status, ids, _BAD, "bad rows")
    np.testing.assert_array_equal(status[[1, 2, 6]], sd.Status.NONFINITE_LOGITS)
    assert status[3] == sd.Status.EMPTY_SUPPORT
    good = ~_BAD
    if case.can_empty:  # a banned single token empties row 5
        good &= status != sd.Status.EMPTY_SUPPORT
    # row 5 has one finite token: a cap c < 1 makes it infeasible (a named status, not an error)
    infeasible = good & (status == sd.Status.INFEASIBLE) & (np.arange(B) == 5)
    assert_status_rows(q, status, ids, infeasible, "infeasible row")
    assert_valid_rows(q, status, ids, mask, good & ~infeasible, "float32", "valid rows beside bad ones")
    with pytest.raises(ValueError, match="invalid logits"):
        dec.probs(jnp.asarray(x), history=h, history_mask=m)
    with pytest.raises(Exception, match="invalid logits"):
        CHECKED_PROBS(dec, jnp.asarray(x), h, m)


# --------------------------------------------------------------------------------------
# Row independence, bitwise (one key per row)
# --------------------------------------------------------------------------------------


def _rows_big(V=V_ROWS, seed=0):
    """Targets (LM-like rows) and neighbours: benign LM rows, and hostile ones that send a
    batch to a fallback path (flat rows, ties) or get a status (NaN, all −inf), or 1e30."""
    peaked = synthetic_logits("peaked", 10, V, seed)
    flat = synthetic_logits("flat", 1, V, seed + 1)[0]
    ties = synthetic_logits("ties", 1, V, seed + 2)[0]
    nan = peaked[9].copy()
    nan[17] = np.nan
    allinf = np.full(V, -np.inf, np.float32)
    huge = (np.random.default_rng(seed).standard_normal(V) * 1e30).astype(np.float32)
    return peaked, {"flat": flat, "ties": ties, "nan": nan, "allinf": allinf, "huge": huge}


def _independence(case, batches, V=V_ROWS):
    """Decode targets 0 and 1 alone and inside each batch; compare bitwise."""
    peaked, _ = _rows_big(V)
    dec = case.decoder(V)
    target_keys = _keys(100, 2)
    hist = history_for(10, V, seed=5) if case.history else None
    alone = []
    for t in (0, 1):
        h = None if hist is None else (jnp.asarray(hist[0][t : t + 1]), jnp.asarray(hist[1][t : t + 1]))
        alone.append(run(case, dec, peaked[t : t + 1], target_keys[t : t + 1], h))
    for name, (rows, where, row_hist) in batches.items():
        x = np.stack(rows)
        keys = _keys(7, B)
        keys = keys.at[where[0]].set(target_keys[0]).at[where[1]].set(target_keys[1])
        h = None if hist is None else (jnp.asarray(hist[0][row_hist]), jnp.asarray(hist[1][row_hist]))
        q, status, ids, _ = run(case, dec, x, keys, h)
        for t in (0, 1):
            qa, sa, ia, _ = alone[t]
            i = where[t]
            assert sa[0] == sd.Status.OK, f"target {t} alone: status {sa[0]}"
            assert status[i] == sa[0], f"{name}: target {t} at row {i}: status {status[i]} vs {sa[0]} alone"
            diff = np.flatnonzero(bits(q[i]) != bits(qa[0]))
            assert diff.size == 0, (
                f"{name}: target {t} at row {i}: q differs from alone at {diff.size} tokens "
                f"(max |Δq| = {np.abs(q[i] - qa[0]).max():.3g})"
            )
            assert ids[i] == ia[0], f"{name}: target {t} at row {i}: id {ids[i]} vs {ia[0]} alone"


#: Cases whose row independence runs at V_ROWS in the ci profile (one per candidate-window
#: family: the top-k window and the tiered top-p window) ...
ROWS_CI_CASES = ("top_k", "top_p")
#: ... at V_CI_ROWS (the other window paths — sparsemax / entmax's τ window, min-p, typical —
#: and one case per solver family: softmax, the exact solver, its caps, mirror ascent, a
#: history-reading chain) ...
ROWS_MID_CASES = ("temperature", "min_p", "sparsemax", "entmax", "typical", "best_of_k", "best_of_k-mirror",
                  "capped", "chain-vllm")
V_CI_ROWS = 4096
#: ... and every other case at V_SMALL. Each other (case, V) pair is marked ``slow``: the
#: compilations of a case at V = 4096 (about 20 s on CI's 2 cores) made this contract the
#: largest part of CI's time.
ROWS_VS = (V_SMALL, V_CI_ROWS, V_ROWS)


def rows_V(case) -> int:
    """The vocabulary size ``case`` runs the row-independence contracts at in ci."""
    return V_ROWS if case.id in ROWS_CI_CASES else V_CI_ROWS if case.id in ROWS_MID_CASES else V_SMALL


def _rows_params(contract):
    out = []
    for c in CASES:
        for V in ROWS_VS:
            marks = c.marks(f"{contract}@V{V}") or c.marks(contract)
            if V != rows_V(c):
                marks = [*marks, pytest.mark.slow]
            out.append(pytest.param(c, V, id=f"{c.id}-V{V}", marks=marks))
    return out


@pytest.mark.parametrize("case,V", _rows_params("rows_benign"))
def test_row_independence_benign_batch(case, V):
    """Alone (B = 1) vs inside a batch of 8 ordinary rows, at two positions."""
    _benign(case, V)


def _benign(case, V):
    peaked, _ = _rows_big(V)
    order = [2, 3, 0, 4, 1, 5, 6, 7]  # targets 0, 1 at rows 2 and 4
    order2 = [1, 5, 6, 7, 8, 2, 3, 0]  # ... and at rows 7 and 0
    _independence(case, {
        "benign": ([peaked[i] for i in order], (2, 4), order),
        "benign-permuted": ([peaked[i] for i in order2], (7, 0), order2),
    }, V)


@pytest.mark.slow
@pytest.mark.parametrize("case", cases_for("rows_full_vocabulary", lambda c: c.id in ("temperature", "top_p")))
def test_row_independence_at_full_vocabulary(case):
    """As ``test_row_independence_benign_batch`` at V = 151 936 (Qwen's vocabulary), for two
    representative cases: every decoder reduces over the row, so one case per path family
    shows whether reductions longer than 32 768 entries keep a row's bits."""
    _benign(case, V_BIG)


@pytest.mark.parametrize("case,V", _rows_params("rows_hostile"))
def test_row_independence_hostile_neighbours(case, V):
    """Alone vs padded with rows that take another path (flat, ties: the full-row fallback;
    NaN, all −inf: a status; 1e30), at two positions."""
    peaked, n = _rows_big(V)
    rows = [peaked[0], n["flat"], peaked[1], n["nan"], n["allinf"], n["ties"], peaked[5], n["huge"]]
    hist_rows = [0, 2, 1, 3, 4, 5, 6, 7]
    perm = [5, 2, 7, 0, 3, 6, 1, 4]  # target 0 → row 3, target 1 → row 1
    _independence(case, {
        "hostile": (rows, (0, 2), hist_rows),
        "hostile-permuted": ([rows[i] for i in perm], (3, 1), [hist_rows[i] for i in perm]),
    }, V)


# --------------------------------------------------------------------------------------
# Keys
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", cases_for("keys"))
def test_same_key_same_ids_different_keys_different_ids(case):
    dec = case.decoder(V_SMALL)
    row = (np.random.default_rng(1).standard_normal(V_SMALL) * 0.5).astype(np.float32)
    x = np.tile(row, (B, 1))
    h = _history(case, 1, V_SMALL)
    h = (None, None) if h[0] is None else (jnp.tile(h[0], (B, 1)), jnp.tile(h[1], (B, 1)))
    q, status, ids1, _ = run(case, dec, x, _keys(11, B), h)
    _, _, again, _ = run(case, dec, x, _keys(11, B), h)
    _, _, ids2, _ = run(case, dec, x, _keys(12, B), h)
    np.testing.assert_array_equal(ids1, again)
    assert np.all(status == sd.Status.OK)
    draws = np.concatenate([ids1, ids2])
    qr = q[0].astype(np.float64)
    p_same = float(np.sum(qr ** len(draws)))  # P(all draws equal) under q
    if qr.max() == 1.0:
        assert np.all(draws == np.argmax(qr)), "a one-hot q must give its token"
    elif p_same < 1e-6:
        assert len(set(draws.tolist())) > 1, f"{len(draws)} keys gave the same id (P = {p_same:.2g})"
    assert np.all(qr[draws] > 0)


# --------------------------------------------------------------------------------------
# Hostile valid inputs (hypothesis)
# --------------------------------------------------------------------------------------


def _entry(V, dtype, Bx=None):
    return (Bx if Bx is not None else (B if V <= 4096 else 1), V, dtype)


def ci_free(case):
    """Menu entries ``case`` runs in CI: the shapes its other contracts compile anyway (the
    main batch at V_SMALL, the row-independence shapes at ``min(rows_V(case), V_CI_ROWS)``)."""
    V = min(rows_V(case), V_CI_ROWS)
    return tuple(dict.fromkeys((_entry(V_SMALL, "float32"), _entry(V, "float32", B), _entry(V, "float32", 1))))


#: One more entry per case in CI, rotating over the cases so that every entry runs somewhere.
CI_EXTRA = (
    _entry(1, "float32"), _entry(2, "bfloat16"), _entry(3, "float16"), _entry(V_SMALL, "bfloat16"),
    _entry(V_SMALL, "float16"), _entry(V_SMALL, "float64"), _entry(V_ROWS, "float16", 1), _entry(4096, "bfloat16"),
    _entry(V_BIG, "float16"), _entry(3, "float64"), _entry(2, "float32"), _entry(V_BIG, "bfloat16"),
    _entry(V_BIG, "float32"), _entry(1, "bfloat16"), _entry(2, "float64"), _entry(3, "float32"),
    _entry(4096, "float16"), _entry(1, "float64"), _entry(2, "float16"), _entry(V_ROWS, "float32", B),
    _entry(V_ROWS, "bfloat16", 1),
)
#: Every V × dtype of the issue (the thorough profile runs them all for every case).
FULL = tuple(_entry(V, d) for V in (1, 2, 3, V_SMALL, 4096, V_BIG) for d in ("bfloat16", "float16", "float32", "float64"))


def _menu(case, index):
    if suite_examples(1) != 1:  # thorough
        return tuple(dict.fromkeys(ci_free(case) + FULL + (_entry(V_CI_ROWS, "float32", B), _entry(V_CI_ROWS, "float32", 1),
                                                          _entry(V_ROWS, "float32", B), _entry(V_ROWS, "float32", 1))))
    return tuple(dict.fromkeys(ci_free(case) + (CI_EXTRA[index % len(CI_EXTRA)],)))


def _entry_id(entry):
    Bx, V, dtype = entry
    return f"{Bx}x{V}-{dtype}"


def _hostile_params():
    out = []
    for i, case in enumerate(CASES):
        menu = _menu(case, i)
        for entry in menu:
            eid = _entry_id(entry)
            marks = case.marks(f"hostile@{eid}") or case.marks("hostile")
            out.append(pytest.param(case, entry, len(menu), id=f"{case.id}-{eid}", marks=marks))
    return out


def _row_recipe():
    return st.tuples(st.sampled_from(KINDS), st.integers(0, 2**31 - 1), st.floats(0, 1), st.floats(0, 1))


@pytest.mark.parametrize("case,entry,n_entries", _hostile_params())
def test_hostile_valid_inputs(case, entry, n_entries):
    Bx, V, dtype = entry
    params = st.fixed_dictionaries({name: p.strategy(V) for name, p in case.params.items()})
    violations = Violations(case, f"hostile@{_entry_id(entry)}")

    # thorough: >= 10 000 examples per case, split over its menu entries
    @suite_settings(2, entries=n_entries)
    @given(st.lists(_row_recipe(), min_size=Bx, max_size=Bx), params)
    def check(recipes, values):
        if case.fix is not None:
            values = case.fix(values)
        with violations.check(lambda: f"recipes {recipes}, values {values}"):
            _hostile_example(case, entry, recipes, values)

    check()
    violations.raise_if_any()


def _hostile_example(case, entry, recipes, values):
    Bx, V, dtype = entry
    x64 = dtype == "float64"
    with jax.enable_x64(x64):
        rows = [hostile_row(k, V, dtype, s, a, b) for k, s, a, b in recipes]
        x = as_logits(rows, dtype)
        dec = case.decoder(V, values)
        q, status, ids, mask = run(case, dec, x)
        assert traces(case, x.shape, x.dtype) <= 1, "a parameter value recompiled"
    _count(case, "hostile", status, _entry_id(entry))
    assert not np.any(np.isnan(q)), "NaN in q"
    ok = status == sd.Status.OK
    assert_valid_rows(q, status, ids, mask, ok, dtype, f"OK rows, values {values}")
    assert_status_rows(q, status, ids, ~ok, f"non-OK rows, values {values}")
    for i in np.flatnonzero(~ok):
        code = sd.Status(int(status[i]))
        if code == sd.Status.EMPTY_SUPPORT and case.can_empty:
            continue
        assert code in VALID_ROW_STATUSES, (
            f"valid row {i} ({recipes[i][0]}) got status {code.name}: {code.message} (values {values})"
        )
