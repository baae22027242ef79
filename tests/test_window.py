"""Candidate-window fast paths (top-k, top-p, sparsemax, entmax) against sort-based numpy.

The window is used only for rows longer than WINDOW_BLOCKS + 1 blocks, so these tests
run at V in the tens of thousands. Each case records which path ran (window or full
row) and checks that the case exercises the path it was built for: peaked rows (a few
large logits, as language models produce) fit the window; flat rows fall back.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import simplex_decode as sd
import simplex_decode._select as sel
import simplex_decode.solvers.closed_form as cf
import simplex_decode.supports as sup
from simplex_decode import _window

from . import _numpy_ref as npr
from .conftest import record_choices, retrace, synthetic_logits


@pytest.fixture
def paths(monkeypatch):
    """Record, for each window decision, whether every row fitted."""
    return record_choices(monkeypatch, sel, sup, cf)


CASES = [("peaked", True), ("flat", False)]


def _full_row(monkeypatch, fn, *args):
    """``fn(*args)`` with the window switched off (the full-row algorithms)."""
    with retrace(monkeypatch) as m:
        for mod in (sel, sup, cf):
            m.setattr(mod, "window", lambda *a, **k: None)
        return np.asarray(fn(*args))


def _topp_ref(probs, p, mask):
    """numpy top-p, and the tokens whose ranked-before mass is within float32 rounding
    of p (there float32 and float64 may legitimately disagree)."""
    want = npr.topp_mask(probs, p) & mask
    amb = np.zeros_like(want)
    for b in range(probs.shape[0]):
        order = np.argsort(-probs[b], kind="stable")
        before = np.cumsum(probs[b, order]) - probs[b, order]
        amb[b, order[np.abs(before - p) < 1e-6]] = True
    return want, amb


@pytest.mark.parametrize("V", [9000, 40000])
@pytest.mark.parametrize("kind, fits", CASES)
def test_top_k_window(paths, V, kind, fits):
    x = synthetic_logits(kind, 3, V, V)
    for k in ([1, 7, 12] if fits else [5, 40, 1000]):
        got = np.asarray(sel.topk_mask(jnp.asarray(x), jnp.asarray(k), jnp.ones(x.shape, bool)))
        np.testing.assert_array_equal(got, npr.topk_mask(x, k))
    if fits:
        assert all(paths)
    # k above KCAP (or a flat row whose top-k spreads over more blocks) takes the full row
    if not fits:
        assert not all(paths)


def test_top_k_window_ties_cut_by_lowest_id(paths):
    x = synthetic_logits("ties", 2, 20000, 3)  # 300 tied at the top: any k < 300 cuts a tie
    for k in (1, 50, 256):
        got = np.asarray(sel.topk_mask(jnp.asarray(x), jnp.asarray(k), jnp.ones(x.shape, bool)))
        np.testing.assert_array_equal(got, npr.topk_mask(x, k))
    assert len(paths) == 3


@pytest.mark.parametrize("kind, fits", CASES)
def test_top_p_window(paths, monkeypatch, kind, fits):
    x = synthetic_logits(kind, 3, 30000, 11)
    mask = np.ones(x.shape, bool)
    probs = npr.softmax(x)
    first_tier = []
    for p in (0.05, 0.5, 0.9, 0.999):
        args = (jnp.asarray(x), jnp.full((3, 1), p, jnp.float32), jnp.asarray(mask))
        paths.clear()
        got = np.asarray(sup.nucleus_mask(*args))
        first_tier.append(paths[0])
        np.testing.assert_array_equal(got, _full_row(monkeypatch, sup.nucleus_mask, *args))
        want, amb = _topp_ref(probs, p, mask)
        np.testing.assert_array_equal(got[~amb], want[~amb])
    # flat rows overflow the first window for every p (the second tier may hold p = 0.05)
    assert any(first_tier) if fits else not any(first_tier)


def test_top_p_window_with_mask_and_ties(paths, monkeypatch):
    x = synthetic_logits("ties", 2, 20000, 5)
    x[x == 9.0] = 3.0
    x[:, np.random.default_rng(1).choice(20000, 40, replace=False)] = 9.0  # 40 tied at the top
    mask = np.random.default_rng(0).random(x.shape) > 0.2
    probs = npr.softmax(x, mask)
    for p in (0.01, 0.3, 0.6):
        args = (jnp.asarray(x), jnp.full((2, 1), p, jnp.float32), jnp.asarray(mask))
        got = np.asarray(sup.nucleus_mask(*args))
        np.testing.assert_array_equal(got, _full_row(monkeypatch, sup.nucleus_mask, *args))
        want, amb = _topp_ref(probs, p, mask)
        np.testing.assert_array_equal(got[~amb], want[~amb])
        assert 0 < got.sum() < 2 * 40  # the cut falls inside the tied group
    assert all(paths)


@pytest.mark.parametrize("kind", ["peaked", "flat"])
def test_sparsemax_entmax_window(paths, monkeypatch, kind):
    x = synthetic_logits(kind, 2, 30000, 21) * (1.0 if kind == "peaked" else 5.0)
    mask = np.ones(x.shape, bool)
    mask[:, ::7] = False
    args = (jnp.asarray(x), jnp.asarray(mask))
    got = np.asarray(cf.sparsemax(*args))
    want = np.zeros(x.shape)
    for b in range(2):
        want[b, mask[b]] = npr.sparsemax(x[b, mask[b]])
    np.testing.assert_allclose(got, want, atol=2e-6)
    np.testing.assert_array_equal(got > 0, want > 0)
    np.testing.assert_allclose(got, _full_row(monkeypatch, cf.sparsemax, *args), atol=1e-6)
    for alpha in (1.2, 1.5, 3.0):
        got = np.asarray(cf.entmax(args[0], alpha, args[1]))
        want = np.zeros(x.shape)
        for b in range(2):
            want[b, mask[b]] = npr.entmax_bisect(x[b, mask[b]], alpha)
        # float32 resolves x = (α−1)·z only to ulp(|x|), and entries near τ inherit
        # that error: the tolerance scales with the largest |x| (2e-6 at |x| <= 1)
        tol = 2e-6 * max(1.0, (alpha - 1) * float(np.abs(x).max()))
        np.testing.assert_allclose(got, want, atol=tol)
        np.testing.assert_allclose(got, _full_row(monkeypatch, cf.entmax, args[0], alpha, args[1]), atol=tol)
    # order: sparsemax, α = 1.2, 1.5, 3. Peaked rows fit every time; on flat rows
    # (std 1) the dense α = 1.2 solution has thousands of tokens and takes the full row.
    assert len(paths) == 4
    assert all(paths) if kind == "peaked" else not paths[1]


def test_one_flat_row_sends_the_batch_to_the_full_path_with_equal_results(paths):
    x = np.concatenate([synthetic_logits("peaked", 2, 20000, 1), synthetic_logits("flat", 1, 20000, 2)])
    dec = sd.entmax(1.2)
    q_batch = np.asarray(dec.probs(jnp.asarray(x)))
    assert paths == [False]
    for b in range(3):
        np.testing.assert_allclose(q_batch[b], np.asarray(dec.probs(jnp.asarray(x[b : b + 1])))[0], atol=1e-6)
    assert paths == [False, True, True, False]  # rows alone: peaked ones fit


@pytest.mark.slow  # ~130 s of compilations; CI: the decoder suite runs every window case under jit and eagerly
def test_window_paths_under_jit_match_eager():
    x = jnp.asarray(synthetic_logits("peaked", 4, 20000, 9))
    for dec in (sd.top_k(12, temperature=0.7), sd.top_p(0.9, temperature=0.7), sd.sparsemax(0.7), sd.entmax(1.5, 0.7)):
        np.testing.assert_allclose(np.asarray(jax.jit(dec.probs)(x)), np.asarray(dec.probs(x)), atol=1e-6)


def test_window_gathers_blocks_in_id_order_and_reports_the_outside_max():
    rng = np.random.default_rng(0)
    V = _window.BLOCK * (_window.WINDOW_BLOCKS + 20) + 5  # a partial last block
    x = rng.standard_normal((2, V)).astype(np.float32)
    win = _window.window(jnp.asarray(x), jnp.arange(V)[None].repeat(2, 0), fill=-jnp.inf)
    wx, wid = (np.asarray(a) for a in win.values)
    blocks = np.asarray(win.blocks)
    pad = np.full((2, win.n_blocks * _window.BLOCK), -np.inf)
    pad[:, :V] = x
    bmax = pad.reshape(2, win.n_blocks, -1).max(-1)
    for b in range(2):
        top = np.sort(np.argsort(-bmax[b], kind="stable")[: _window.WINDOW_BLOCKS])
        np.testing.assert_array_equal(blocks[b], top)
        ids = np.asarray(win.ids)[b]
        valid = ids < V
        np.testing.assert_array_equal(wx[b][valid], x[b, ids[valid]])
        np.testing.assert_array_equal(wid[b][valid], ids[valid])
        rest = np.delete(bmax[b], top)
        assert float(win.outside[b, 0]) == rest.max()


@pytest.mark.parametrize("kind, fits", CASES)
def test_typical_window(paths, monkeypatch, kind, fits):
    """Typical sampling searches its distance threshold among the most probable tokens
    (every other token is at least d_out from the entropy): the kept set equals the
    full-row bisection exactly, and transformers' warper."""
    from .test_catalogue_supports import typical_ref

    x = synthetic_logits(kind, 3, 30000, 17)
    mask = np.ones(x.shape, bool)
    for p in (0.2, 0.9, 0.99):
        rule = sd.Typical(p)
        args = (jnp.asarray(x), jnp.asarray(mask), None)
        got = np.asarray(rule(*args))
        np.testing.assert_array_equal(got, _full_row(monkeypatch, rule, *args))
        np.testing.assert_array_equal(got, typical_ref(x, p))
    # p = 0.2 stays among the top tokens of peaked rows; at 0.9/0.99 typical sets reach
    # into the bulk (tokens whose surprisal is near H), which the full row handles
    assert paths[0] if fits else not any(paths)


def test_top_p_second_tier_holds_nuclei_of_hundreds(paths, monkeypatch):
    """A nucleus of a few hundred tokens overflows the first window (256 candidates) and
    fits the second tier (1024): the result still equals the full row and numpy."""
    rng = np.random.default_rng(4)
    x = (rng.standard_normal((2, 40000)) * 0.5).astype(np.float32)
    x[:, rng.choice(40000, 600, replace=False)] += 6.0  # ~600 strong tokens
    probs = npr.softmax(x)
    args = (jnp.asarray(x), jnp.full((2, 1), 0.8, jnp.float32), jnp.ones(x.shape, bool))
    got = np.asarray(sup.nucleus_mask(*args))
    assert 256 < got.sum(-1).min() and got.sum(-1).max() < 1024
    np.testing.assert_array_equal(got, _full_row(monkeypatch, sup.nucleus_mask, *args))
    want, amb = _topp_ref(probs, 0.8, np.ones(x.shape, bool))
    np.testing.assert_array_equal(got[~amb], want[~amb])
    # first tier overflows on both rows; the second tier runs on each failing row's
    # sub-batch (B = 2: one row each, see _window.choose) and certifies it
    assert paths == [False, True, True]


def test_top_p_skips_the_wider_tier_when_no_row_can_fit(paths, monkeypatch):
    """A nearly uniform row needs far more than the second tier's 16384 tokens of at most
    the first tier's bound each: the batch goes straight to the full row (one decision
    recorded, not two), with the same result."""
    x = (np.random.default_rng(6).standard_normal((2, 40000)) * 0.05).astype(np.float32)
    args = (jnp.asarray(x), jnp.full((2, 1), 0.9, jnp.float32), jnp.ones(x.shape, bool))
    got = np.asarray(sup.nucleus_mask(*args))
    assert paths == [False]
    np.testing.assert_array_equal(got, _full_row(monkeypatch, sup.nucleus_mask, *args))
    assert got.sum(-1).min() > 30000


@pytest.mark.parametrize("failing", [[5], [0, 3, 4, 6, 7]])
def test_choose_runs_the_full_row_path_on_the_failing_rows_only(failing):
    """Per-row fallback: the full-row function sees sub-batches of B // 4 rows gathered
    from the failing rows (here 1 of 8, then 5 of 8: three sub-batches), per-row operands
    gathered and shared ones passed through; the result equals, bit for bit, a per-row
    choice between the fast result and the full-row function run on the whole batch."""
    B, V = 8, 50
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((B, V)), jnp.float32)
    k = jnp.asarray(rng.standard_normal((B, 1)), jnp.float32)
    shared = jnp.asarray(rng.standard_normal(V), jnp.float32)
    ok = jnp.asarray(~np.isin(np.arange(B), failing))[:, None]
    seen = []

    def slow(x, k, shared):
        seen.append(x.shape)
        return jnp.exp(x * k) + shared, jnp.sum(x, axis=-1, keepdims=True)

    fast = (x * 2.0, jnp.zeros((B, 1), jnp.float32))
    got = jax.jit(lambda ok, fast, *ops: _window.choose(ok, fast, slow, *ops))(ok, fast, x, k, shared)
    assert seen == [(_window.fallback_cap(B), V)]  # traced once, on a sub-batch of 2 rows
    want = jax.tree.map(lambda f, s: np.where(np.asarray(ok), f, s), fast, slow(x, k, shared))
    for g, w in zip(got, want, strict=True):
        np.testing.assert_array_equal(np.asarray(g), w)


@pytest.mark.slow  # ~110 s; CI: the decoder suite's bitwise row independence at V = 20 480 for top_k / top_p
def test_one_flat_row_among_peaked_keeps_every_row_bitwise():
    """top-p at B = 8 with one flat row: every row equals the same row decoded alone."""
    x = synthetic_logits("peaked", 8, 20000, 12)
    x[3] = synthetic_logits("flat", 1, 20000, 13)[0]
    dec = sd.top_p(0.95, temperature=0.8)
    q = np.asarray(jax.jit(dec.probs)(jnp.asarray(x)))
    for b in range(8):
        np.testing.assert_array_equal(q[b], np.asarray(jax.jit(dec.probs)(jnp.asarray(x[b : b + 1])))[0])
