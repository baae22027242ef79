"""Accelerator lowering: every decoder (and a ``generate`` step) exports for CUDA and TPU, and
the accelerator code paths agree with the CPU ones.

``jax.export`` lowers for a platform without its hardware. Each case of
``tests/decoder_cases.py`` exports its jitted ``probs`` and ``sample`` (B = 2, V = 20 480:
long enough for every candidate-window tier and the exact solver's candidate set), and the
bundled Llama exports one ``generate`` call; the StableHLO must hold no custom call outside
:data:`ALLOWED_CUSTOM_CALLS` (so no CPU-only kernel: LAPACK, ducc FFT, CPU callbacks) and no
host callback (``jax.debug.callback``, ``pure_callback``, ``io_callback`` lower to custom calls
named ``*callback*`` and carry effects; infeed/outfeed/send/recv are host transfers).
``jax.export`` itself refuses custom calls without a compatibility guarantee.

On CPU, the accelerator paths are forced and compared: Gumbel-max sampling against inverse-CDF
sampling (a chi-square test: same distribution, different ids), and the candidate window
(``lax.top_k`` on the blocks with the largest maxima) against the full-row path (bitwise masks).
"""

from __future__ import annotations

import collections
import functools
import re
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import export

import simplex_decode as sd
from simplex_decode import _window

from .conftest import record_choices, synthetic_logits
from .decoder_cases import cases_for, history_for

PLATFORMS = ("cuda", "tpu")
B_EXPORT, V_EXPORT = 2, 20_480

#: Custom-call targets an accelerator module may contain: partitioning annotations, which
#: every backend understands. Today's decoders emit none; a new target must be added here
#: deliberately, after checking it runs on GPU and TPU.
ALLOWED_CUSTOM_CALLS = frozenset({"Sharding", "SPMDFullToShardShape", "SPMDShardToFullShape"})
#: Ops that move data to or from the host inside a step.
HOST_OPS = ("stablehlo.infeed", "stablehlo.outfeed", "stablehlo.send", "stablehlo.recv")

_CUSTOM_CALL = re.compile(r'custom_call\s*@([\w.$-]+)|call_target_name\s*=\s*"([^"]+)"')


def custom_call_targets(text):
    return sorted({a or b for a, b in _CUSTOM_CALL.findall(text)})


def assert_accelerator_clean(exported, what):
    text = exported.mlir_module()
    targets = custom_call_targets(text)
    assert set(targets) <= ALLOWED_CUSTOM_CALLS, f"{what}: custom calls {targets}"
    assert "callback" not in text, f"{what}: a host callback in the module"
    for op in HOST_OPS:
        assert op not in text, f"{what}: {op} in the module"
    # checkify's debug checks (``require``, ``raise_on_bad_rows``) carry an ErrorEffect that
    # lowers to nothing unless the caller functionalises them with ``sd.checked``.
    effects = [e for e in tuple(exported.ordered_effects) + tuple(exported.unordered_effects)
               if type(e).__name__ != "ErrorEffect"]
    assert not effects, f"{what}: effects {effects}"


def _step(dec, logits, keys, history, history_mask):
    q = dec.probs(logits, history=history, history_mask=history_mask)
    ids = dec.sample(keys, logits, history=history, history_mask=history_mask)
    return q, ids


@pytest.mark.parametrize("case", cases_for("lowering"))
def test_decoder_exports_for_accelerators(case):
    dec = case.decoder(V_EXPORT)
    logits = jax.ShapeDtypeStruct((B_EXPORT, V_EXPORT), jnp.float32)
    keys = jax.ShapeDtypeStruct((B_EXPORT,), jax.random.key(0).dtype)
    if case.history:
        h, m = history_for(B_EXPORT, V_EXPORT)
        hist = (jax.ShapeDtypeStruct(h.shape, jnp.int32), jax.ShapeDtypeStruct(m.shape, jnp.bool_))
    else:
        hist = (None, None)
    for platform in PLATFORMS:
        exported = export.export(jax.jit(_step), platforms=(platform,))(dec, logits, keys, *hist)
        assert_accelerator_clean(exported, f"{case.id} on {platform}")


@pytest.mark.parametrize("platform", PLATFORMS)
def test_generate_step_of_the_bundled_llama_exports(platform):
    from simplex_decode.models import LlamaConfig, init_cache, init_random_params, make_step

    cfg = LlamaConfig(vocab_size=4096, hidden_size=32, intermediate_size=64, num_layers=2, num_heads=4, num_kv_heads=2)
    params = init_random_params(cfg, jax.random.key(0))
    step = make_step(cfg)
    decoder = sd.chain(sd.top_p(0.9, temperature=0.7), sd.RepetitionPenalty(1.2))

    def one_step(params, prompt, keys):
        out = sd.generate(step, params, prompt, decoder=decoder, key=keys, max_new_tokens=2,
                          cache=functools.partial(init_cache, cfg))
        return out.tokens, out.status

    prompt = jax.ShapeDtypeStruct((2, 5), jnp.int32)
    keys = jax.ShapeDtypeStruct((2,), jax.random.key(0).dtype)
    exported = export.export(jax.jit(one_step), platforms=(platform,))(params, prompt, keys)
    assert_accelerator_clean(exported, f"generate on {platform}")
    assert "stablehlo.while" in exported.mlir_module()  # the decode loop is on the device


# --------------------------------------------------------------------------------------
# method="auto" follows the platform the code is lowered for
# --------------------------------------------------------------------------------------


def _op_counts(method, platform):
    q = jax.ShapeDtypeStruct((2, 1000), jnp.float32)
    keys = jax.ShapeDtypeStruct((2,), jax.random.key(0).dtype)
    fn = jax.jit(lambda k, q: sd.sample_from_probs(k, q, method=method))
    text = export.export(fn, platforms=(platform,))(keys, q).mlir_module()
    ops = collections.Counter(re.findall(r"\bstablehlo\.\w+", text))
    for wrapper in ("stablehlo.case", "stablehlo.return", "stablehlo.constant"):
        ops.pop(wrapper, None)
    return ops


@pytest.mark.parametrize("platform,method", [("cuda", "gumbel"), ("tpu", "gumbel"), ("cpu", "inverse_cdf")])
def test_auto_sampling_is_chosen_for_the_target_platform(platform, method):
    """``method="auto"`` lowers to the same operations as ``method`` on ``platform``: an
    accelerator module exported from this CPU host samples by Gumbel-max."""
    assert _op_counts("auto", platform) == _op_counts(method, platform)


# --------------------------------------------------------------------------------------
# Gumbel-max and inverse CDF draw from the same distribution
# --------------------------------------------------------------------------------------

SIGNIFICANCE = 1e-3  # the chi-square tests reject at p < 1e-3 (fixed seeds: deterministic)
N_DRAWS = 20_000


def _bins(q, individual=15, n_rest=5):
    """Bins for a chi-square test: the ``individual`` most probable tokens one each, the rest
    of the positive-probability tokens in ``n_rest`` groups of about equal mass."""
    order = np.argsort(-q, kind="stable")
    pos = order[q[order] > 0]
    head, tail = pos[:individual], pos[individual:]
    labels = np.full(q.shape, -1)
    labels[head] = np.arange(len(head))
    if len(tail):
        cum = np.cumsum(q[tail]) / q[tail].sum()
        labels[tail] = len(head) + np.minimum((cum * n_rest).astype(int), n_rest - 1)
    return labels, labels.max() + 1


@functools.partial(jax.jit, static_argnames=("method",))
def _sample(keys, q, method):
    return sd.sample_from_probs(keys, q, num_samples=N_DRAWS // keys.shape[0], method=method)


def _draws(q, method, seed, rows=20):
    """N_DRAWS ids from q (V,), drawn as ``rows`` rows of samples with one key per row."""
    keys = jax.random.split(jax.random.key(seed), rows)
    qq = jnp.broadcast_to(jnp.asarray(q, jnp.float32), (rows, q.shape[-1]))
    return np.asarray(_sample(keys, qq, method)).reshape(-1)


def _distributions():
    small = np.array([0.4, 0.25, 0.15, 0.1, 0.06, 0.03, 0.01, 0.0, 0.0], np.float32)
    x = synthetic_logits("peaked", 1, 1200, seed=4)[0] / 3.0
    lm = np.asarray(jax.nn.softmax(jnp.asarray(x)))
    return {"small": small / small.sum(), "lm-1200": lm}


@pytest.mark.parametrize("name", ["small", "lm-1200"])
def test_gumbel_and_inverse_cdf_sample_the_same_distribution(name):
    from scipy import stats

    q = _distributions()[name]
    labels, n_bins = _bins(q.astype(np.float64))
    expected = np.bincount(labels[labels >= 0], weights=q[labels >= 0].astype(np.float64), minlength=n_bins)
    expected = expected / expected.sum() * N_DRAWS
    counts, ids = {}, {}
    for method in ("gumbel", "inverse_cdf"):
        ids[method] = _draws(q, method, seed=1)
        assert np.all(q[ids[method]] > 0), f"{method} drew a token of probability 0"
        counts[method] = np.bincount(labels[ids[method]], minlength=n_bins)
        p = stats.chisquare(counts[method], expected).pvalue
        assert p > SIGNIFICANCE, f"{method} vs q: chi-square p = {p:.2g}"
    table = np.stack([counts["gumbel"], counts["inverse_cdf"]])
    p = stats.chi2_contingency(table[:, table.sum(0) > 0]).pvalue
    assert p > SIGNIFICANCE, f"gumbel vs inverse_cdf: chi-square p = {p:.2g}"
    # same distribution, not the same draws: the two methods use the key differently
    assert np.mean(ids["gumbel"] == ids["inverse_cdf"]) < 0.9


def test_decoder_sample_forwards_the_method():
    """``Decoder.sample(method=...)`` reaches the sampler: a decoder's Gumbel draws follow its q."""
    from scipy import stats

    dec = sd.top_p(0.95, temperature=0.8)
    logits = np.repeat(synthetic_logits("peaked", 1, 1200, seed=6), 20, 0)
    keys = jax.random.split(jax.random.key(3), 20)

    @jax.jit
    def run(dec, logits, keys):
        return dec.probs(logits)[0], dec.sample(keys, logits, num_samples=N_DRAWS // 20, method="gumbel")

    q, ids = run(dec, logits, keys)
    q, ids = np.asarray(q, np.float64), np.asarray(ids).reshape(-1)
    assert np.all(q[ids] > 0)
    labels, n_bins = _bins(q)
    expected = np.bincount(labels[labels >= 0], weights=q[labels >= 0], minlength=n_bins)
    p = stats.chisquare(np.bincount(labels[ids], minlength=n_bins), expected / expected.sum() * N_DRAWS).pvalue
    assert p > SIGNIFICANCE, f"chi-square p = {p:.2g}"


# --------------------------------------------------------------------------------------
# The candidate window (lax.top_k) against the full-row path
# --------------------------------------------------------------------------------------


def _modules_using_window():
    return [m for name, m in sorted(sys.modules.items())
            if name.startswith("simplex_decode") and getattr(m, "window", None) is _window.window]


def _force_full_rows(monkeypatch):
    """Every caller of ``_window.window`` takes its full-row path (``window`` returns None,
    as it does for rows too short for a window)."""
    modules = _modules_using_window()
    assert {m.__name__ for m in modules} >= {"simplex_decode._select", "simplex_decode.supports",
                                             "simplex_decode.solvers.closed_form"}
    for m in modules:
        monkeypatch.setattr(m, "window", lambda *a, **k: None)


def _wide_rows(B, V, seed):
    """Rows whose nucleus holds about a thousand tokens (1500 near 0 over a bulk near −12):
    too many for the first top-p tier (256 candidates), few enough for the second."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((B, V)) - 12.0
    for b in range(B):
        x[b, rng.choice(V, 1500, replace=False)] = rng.standard_normal(1500)
    return x.astype(np.float32)


#: decoder → the rows its window certifies (asserted: the test is not vacuous)
WINDOWED = {
    "top_k(1)": (lambda: sd.top_k(1), "peaked"),
    "top_k(50)": (lambda: sd.top_k(50, temperature=0.8), "peaked"),
    # k = 256 over a std-2 bulk of 151 936 is never certified by 128 blocks of 64 (the 256th largest
    # score lies below the 129th block maximum): such rows take the full-row path
    "top_k(100)": (lambda: sd.top_k(100), "peaked"),
    "top_p(0.5)": (lambda: sd.top_p(0.5), "peaked"),
    "top_p(0.99)": (lambda: sd.top_p(0.99, temperature=0.5), "peaked"),
    "top_p(0.9)-second-tier": (lambda: sd.top_p(0.9, temperature=1.2), "wide"),
    # at temperature 1 the bulk holds about half the mass and the typical set reaches into it (full row)
    "typical(0.9)": (lambda: sd.typical(0.9, temperature=0.5), "peaked"),
    "sparsemax": (lambda: sd.sparsemax(), "peaked"),
    "entmax(1.5)": (lambda: sd.entmax(1.5), "peaked"),
}


@pytest.mark.parametrize("name", sorted(WINDOWED))
def test_window_path_equals_full_row_path(name, monkeypatch):
    """On rows the window certifies (asserted) the support mask is bit-identical whichever
    path ran; q agrees to float32 rounding (sparsemax / entmax find their threshold by a
    different search on the two paths)."""
    from simplex_decode import _select, supports
    from simplex_decode.solvers import closed_form

    build, rows = WINDOWED[name]
    V = 151_936
    x = synthetic_logits("peaked", 4, V, seed=8) if rows == "peaked" else _wide_rows(4, V, seed=8)
    dec = build()

    def solve(dec, x):
        sol = dec.solve(x)
        return dec.objective.prepare(x).mask, sol.q > 0, sol.q

    decisions = record_choices(monkeypatch, _select, supports, closed_form)
    mask_w, supp_w, q_w = jax.jit(solve)(dec, x)
    jax.effects_barrier()  # the recording callbacks run asynchronously: wait for them before reading
    assert any(decisions), f"no window decided the batch ({decisions}): the test would be vacuous"
    monkeypatch.undo()
    _force_full_rows(monkeypatch)
    mask_f, supp_f, q_f = jax.jit(lambda d, x: solve(d, x))(dec, x)  # a new function: a new trace
    np.testing.assert_array_equal(np.asarray(mask_w), np.asarray(mask_f))
    np.testing.assert_array_equal(np.asarray(supp_w), np.asarray(supp_f))
    np.testing.assert_allclose(np.asarray(q_w), np.asarray(q_f), rtol=2e-6, atol=1e-9)
