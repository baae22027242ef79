"""Decoders as plain data: exact round trips through dicts, JSON, YAML and SPEC strings, for
every preset and for composite Objectives; bad configs name the key."""

from __future__ import annotations

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import simplex_decode as sd
from simplex_decode import config

#: Several argument sets per preset (every preset must appear: see the test below).
PRESET_CASES = {
    "greedy": [{}],
    "temperature": [{}, {"t": 0.7}, {"t": 0.0}, {"t": np.array([0.5, 1.0, 0.0], np.float32)}],
    "top_k": [{"k": 5}, {"k": 1, "temperature": 0.3}, {"k": np.array([2, 7], np.int32)}],
    "top_p": [{"p": 0.9}, {"p": 1.0, "temperature": 0.7}, {"p": 0.5, "from_model": True},
              {"p": np.array([0.2, 0.95], np.float32)}],
    "min_p": [{"p": 0.1}, {"p": 0.05, "temperature": 1.3, "from_model": True}],
    "sparsemax": [{}, {"temperature": 0.5}],
    "entmax": [{}, {"alpha": 1.2, "temperature": 0.9}, {"alpha": np.array([1.5, 2.0], np.float32)}],
    "kl_anchored": [{"lam": 0.5}, {"lam": 0.0}, {"lam": 2.0, "reference": np.array([0.5, 0.25, 0.25], np.float32),
                                                 "temperature": 0.8}],
    "typical": [{"p": 0.9}, {"p": 0.2, "temperature": 0.5, "from_model": True}],
    "epsilon": [{"eps": 3e-4}, {"eps": 0.01, "temperature": 0.7}],
    "eta": [{"eps": 3e-4}, {"eps": 0.002, "from_model": True}],
    "top_n_sigma": [{"n": 1.0}, {"n": 0.0, "temperature": 0.6}],
    "top_h": [{"h": 0.4}, {"h": 0.9, "top_n": 20, "temperature": 0.8}],
    "top_a": [{"a": 0.2}, {"a": 1.0, "temperature": 0.5}],
    "edt": [{}, {"t0": 0.8, "theta": 0.5, "n": 0.6}],
    "dynamic_temperature": [{}, {"t_min": 0.5, "t_max": 1.5, "exponent": 2.0}],
    "entropix": [{}, {"t": 0.7, "t_fork": 1.5, "high_entropy": 3.0}],
    "best_of_k": [{"k": 8, "lam": 0.2, "beta": 0.02},
                  {"k": 16, "lam": 0.1, "beta": 0.01, "temperature": 0.7, "solver": "mirror", "steps": 5},
                  {"k": 4, "lam": 0.5, "beta": 0.05, "weights": "model", "solver": "projected_gradient",
                   "step_size": 0.1},
                  {"k": 3, "lam": np.array([0.1, 0.5], np.float32), "beta": 0.5, "top_m": 2,
                   "support": sd.TopK(20)},
                  {"k": 2, "lam": 0.3, "beta": 0.4, "weights": np.array([1.0, 0.0, 0.5], np.float32),
                   "solver": sd.Exact(certificate=True, tol=1e-6)}],
    "capped": [{"c": 0.5}, {"c": np.array([0.3, 0.9], np.float32), "temperature": 0.7}],
    "js_anchored": [{"lam": 1.0}, {"lam": 0.3, "reference": np.array([0.2, 0.3, 0.5], np.float32)}],
    "tsallis_coverage": [{}, {"k": 6, "alpha": 1.8, "lam": 0.5, "beta": 0.1, "weights": "top_m", "top_m": 3}],
    "mirostat": [{}, {"tau": 3.0, "eta": 0.2, "version": 1, "m": 50, "temperature": 0.8}],
    "xtc": [{}, {"threshold": 0.2, "probability": np.array([0.0, 1.0], np.float32), "min_keep": 2}],
    "cfg": [{"guidance_scale": 1.5}, {"guidance_scale": np.array([1.0, 3.0], np.float32), "temperature": 0.7}],
    "contrastive": [{}, {"alpha": 0.2, "beta": 0.5, "temperature": 0.0, "amateur_temperature": 0.5}],
    "dola": [{}, {"alpha": 0.05, "repetition_penalty": 1.0, "temperature": 0.0}],
}

COMPOSITES = {
    "chain_history": lambda: sd.chain(
        sd.TopK(50), sd.TopP(0.9), sd.MinP(0.05), sd.Temperature(0.7), sd.RepetitionPenalty(1.2, prompt_length=3),
        sd.FrequencyPenalty(0.5), sd.PresencePenalty(np.array([0.1, -0.2], np.float32)), sd.NoRepeatNGram(3)),
    "chain_vllm": lambda: sd.chain(sd.top_p(0.8), sd.MinP(0.1), order="vllm"),
    "tokens": lambda: sd.chain(sd.BanTokens(np.array([1, 4, -1], np.int32)), sd.AllowTokens(np.array([[0, 1, 2]])),
                               sd.MinNewTokens(2, eos_id=[2, 3], prompt_length=np.array([3, 4]))),
    "bias_mask": lambda: sd.Decoder(sd.Objective(
        terms=(sd.Entropy(0.5), sd.SquaredL2(0.5)),
        support=(sd.Mask(np.array([True, False, True, True])), sd.TopNSigma(2.0), sd.TopA(0.1), sd.Full()),
        transforms=(sd.LogitBias(np.array([0.0, -np.inf, 1.5, -0.25], np.float32)),))),
    "all_terms": lambda: sd.Decoder(sd.Objective(
        terms=(sd.Tsallis(1.7, weight=0.5), sd.KL(0.2), sd.Coverage(3, "top_m", weight=0.1, top_m=2), sd.Cap(0.8),
               sd.JensenShannon(0.1)),
        support=(sd.Typical(0.95), sd.Epsilon(1e-3), sd.Eta(1e-3), sd.TopH(0.5, top_n=10)),
        transforms=(sd.EDT(1.0, 0.5), sd.DynamicTemperature(0.5, 1.5), sd.EntropixTemperature())),
        solver=sd.Mirror(steps=50, step_size=None, tol=1e-7)),
    "solvers": lambda: sd.Decoder(sd.Objective(terms=sd.Entropy()), solver=sd.ClosedForm()),
    "dry": lambda: sd.chain(sd.DRY(0.8, allowed_length=3, penalty_last_n=64, sequence_breakers=[(5,), (7, 8, 9)]),
                            sd.TopK(10), sd.XTC(0.1, 0.5), sd.Mirostat(4.0, 0.1)),
    "exact_opts": lambda: sd.Decoder(sd.Objective(terms=(sd.Entropy(), sd.Cap(0.4))),
                                     solver=sd.Exact(max_steps=20, inner_steps=8)),
    "float64_bf16": lambda: sd.Decoder(sd.Objective(
        terms=sd.Coverage(2, np.array([0.25, 0.5, 0.25]), weight=1.0),
        transforms=sd.LogitBias(jnp.asarray([0.1, 0.2, 0.3], jnp.bfloat16)))),
}


def _cases():
    for name, cases in PRESET_CASES.items():
        for i, kw in enumerate(cases):
            yield pytest.param(lambda name=name, kw=kw: sd.PRESETS[name](**kw), id=f"{name}-{i}")
    for name, make in COMPOSITES.items():
        yield pytest.param(make, id=name)


def assert_same_decoder(a, b):
    """Same pytree structure (static fields included), same leaves bitwise, same dtypes."""
    assert jax.tree_util.tree_structure(a) == jax.tree_util.tree_structure(b)
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True):
        x, y = np.asarray(x), np.asarray(y)
        assert x.dtype == y.dtype and x.shape == y.shape
        np.testing.assert_array_equal(x, y)


def test_every_preset_has_cases():
    assert set(PRESET_CASES) == set(sd.PRESETS)


@pytest.mark.parametrize("make", list(_cases()))
def test_round_trips_exactly(make, tmp_path):
    dec = make()
    cfg = dec.to_config()
    assert cfg == config.to_config(dec) and cfg["version"] == config.VERSION
    json.dumps(cfg, allow_nan=False)  # plain data, standard JSON
    for back in (sd.from_config(cfg), config.from_json(config.to_json(dec)), config.from_yaml(config.to_yaml(dec)),
                 config.from_spec(config.to_spec(dec)), sd.from_config(config.to_spec(dec)),
                 config.load(config.save(dec, tmp_path / "d.yaml")), sd.from_config(config.save(dec, tmp_path / "d.json"))):
        assert_same_decoder(back, dec)
        assert config.to_config(back) == cfg
        assert config.to_spec(back) == config.to_spec(dec)


def test_round_trip_keeps_behaviour():
    rng = np.random.default_rng(0)
    history = np.array([[0, 1, 1], [2, 2, 0]])
    for make, V in ((COMPOSITES["chain_history"], 60), (COMPOSITES["bias_mask"], 4),
                    (lambda: sd.best_of_k(2, 0.3, 0.5, top_m=2), 5)):
        logits = rng.standard_normal((2, V)).astype(np.float32) * 3
        dec = make()
        back = sd.from_config(dec.to_config())
        h = history if make is COMPOSITES["chain_history"] else None
        probs = jax.jit(lambda d, x, h: d.probs(x, history=h))  # one compilation: back has dec's structure
        np.testing.assert_array_equal(np.asarray(probs(back, logits, h)), np.asarray(probs(dec, logits, h)))


def test_dataclasses_replace_rebuilds_every_component():
    """Configs rebuild components from their init fields; so does dataclasses.replace."""
    for make in COMPOSITES.values():
        dec = make()
        for leaf in [dec, dec.objective, dec.solver, *dec.objective.terms, *dec.objective.support,
                     *dec.objective.transforms]:
            assert_same_decoder(dataclasses.replace(leaf), leaf)


def test_float32_values_are_written_short_and_exact():
    cfg = sd.top_p(0.9, temperature=0.7).to_config()
    assert cfg["objective"]["support"][0]["p"] == 0.9 and cfg["objective"]["transforms"][0]["t"] == 0.7
    vals = (np.random.default_rng(1).standard_normal(2000) * 10.0 ** np.arange(-20, 20, 0.02)).astype(np.float32)
    node = config.to_config(sd.LogitBias(vals))["bias"]
    back = config.from_config({"version": 1, "type": "LogitBias", "bias": node}).bias
    np.testing.assert_array_equal(np.asarray(back), vals)


def test_preset_names_and_args_in_configs():
    dec = sd.from_config({"version": 1, "type": "best_of_k", "k": 8, "lam": 0.2, "beta": 0.02})
    assert_same_decoder(dec, sd.best_of_k(8, 0.2, 0.02))
    dec = sd.from_config({"version": 1, "type": "chain", "args": [{"type": "TopK", "k": 5},
                                                                  {"type": "Temperature", "t": 0.5}], "order": "given"})
    assert_same_decoder(dec, sd.chain(sd.TopK(5), sd.Temperature(0.5), order="given"))
    assert_same_decoder(config.from_spec("top_k(5, temperature=0.5)"), sd.top_k(5, temperature=0.5))
    assert_same_decoder(config.from_spec("chain(TopK(k=50), TopP(0.9), Temperature(t=0.7))"),
                        sd.chain(sd.TopK(50), sd.TopP(0.9), sd.Temperature(0.7)))
    assert_same_decoder(config.from_spec("chain(LogitBias(array([0.0, -inf, 1.0], dtype='float32')))"),
                        sd.chain(sd.LogitBias(np.array([0.0, -np.inf, 1.0], np.float32))))


@pytest.mark.parametrize("cfg, match", [
    ({"type": "Decoder"}, "missing key 'version'"),
    ({"version": 99, "type": "Decoder"}, "version 99 is newer"),
    ({"version": "1", "type": "Decoder"}, "'version' must be a positive integer"),
    ({"version": 1, "objective": {}}, "needs a 'type'"),
    ({"version": 1, "type": "Decoder", "objective": {"type": "Objective", "support": [{"type": "TopP", "q": 0.9}]}},
     r"at 'objective.support\[0\]': TopP has no parameter 'q'; its parameters are: p, from_model"),
    ({"version": 1, "type": "Decoder", "objective": {"type": "Objective", "terms": [{"type": "Entropy",
                                                                                     "wieght": 1.0}]}},
     r"'objective.terms\[0\]': Entropy has no parameter 'wieght' \(did you mean 'weight'\?\); its parameters are: "
     "weight"),
    ({"version": 1, "type": "Decoder", "objective": {"type": "Objective", "support": [{"type": "TopQ", "p": 0.9}]}},
     r"'objective.support\[0\]': unknown component 'TopQ' \(did you mean 'TopP'.*valid components: .*TopP"),
    ({"version": 1, "type": "top_pp", "p": 0.9}, r"unknown decoder 'top_pp' \(did you mean 'top_p'"),
    ({"version": 1, "type": "Decoder", "objective": {"type": "Objective", "support": [{"type": "TopP", "p": 2.0}]}},
     r"at 'objective.support\[0\]': TopP: `p` must be in \(0, 1\], got 2.0"),
    ({"version": 1, "type": "Decoder"}, r"Decoder: missing a required argument: 'objective'"),
    ({"version": 1, "type": "LogitBias", "bias": {"type": "array", "dtype": "float32", "data": ["x"]}},
     r"at 'bias': array entries must be numbers"),
    ({"version": 1, "type": "LogitBias", "bias": {"type": "array", "dtype": "float32", "data": [1], "dims": [1]}},
     r"at 'bias': array has no key 'dims'"),
    ({"version": 1, "type": "LogitBias", "bias": {"type": "array", "dtype": "float33", "data": [1]}},
     "unknown dtype 'float33'"),
    ({"version": 1, "type": "LogitBias", "bias": {"type": "array", "dtype": "float32", "data": [1], "shape": [2]}},
     r"1 entries do not fill shape \[2\]"),
    ({"version": 1, "type": "chain", "args": {"type": "TopK"}}, "'args': must be a list"),
])
def test_bad_configs_name_the_key(cfg, match):
    with pytest.raises(ValueError, match=match):
        sd.from_config(cfg)


def test_bad_text_and_values():
    with pytest.raises(ValueError, match="not valid JSON"):
        config.from_json("{")
    with pytest.raises(ValueError, match="NaN is not standard JSON"):
        config.from_json('{"version": 1, "type": "Temperature", "t": NaN}')
    with pytest.raises(ValueError, match="not valid YAML"):
        config.from_yaml("a: [")
    with pytest.raises(ValueError, match="expected a dict"):
        sd.from_config(3)
    with pytest.raises(ValueError, match="cannot read"):
        config.load("/nonexistent/d.json")
    with pytest.raises(ValueError, match="must end in .json"):
        config.save(sd.greedy(), "d.txt")
    with pytest.raises(ValueError, match="traced value"):
        jax.jit(lambda t: config.to_config(sd.temperature(t)) and t)(0.5)
    with pytest.raises(ValueError, match="expected a simplex_decode component"):
        config.to_config({"a": 1})


@pytest.mark.parametrize("spec, match", [
    ("top_p(p=0.9", "expected NAME"),
    ("os.system('ls')", "expected NAME"),
    ("__import__('os').system('ls')", "expected NAME"),
    ("top_p(p=x)", "expected a number, string"),
    ("top_p(p=1 + 1)", "expected a number, string"),
    ("top_p(p={'a': 1})", "expected a number, string"),
    ("top_p(*[0.9])", r"\*arguments"),
    ("top_p(**{'p': 0.9})", r"\*\*arguments"),
    ("top_p(p=0.9, p=0.8)", "given twice"),
    ("top_p(p=__import__('os'))", "unknown component '__import__'"),
    ("chain(TopK(k=os.getcwd()))", "expected a number, string"),
    ("Decoder(objective=Objective(support=[TopP(p=2)]))", r"at 'objective.support\[0\]': TopP: `p` must be in"),
])
def test_bad_specs(spec, match):
    with pytest.raises(ValueError, match=match):
        config.from_spec(spec)


def test_specs_are_never_evaluated(tmp_path):
    target = tmp_path / "pwned"
    for spec in (f"top_p(p=open({str(target)!r}, 'w'))", f"open({str(target)!r}, 'w')",
                 f"__import__('pathlib').Path({str(target)!r}).touch()", "exec('1')", "eval('1')"):
        with pytest.raises(ValueError):
            config.from_spec(spec)
    assert not target.exists()


def test_components_are_discovered_by_class():
    names = config.components()
    for cls in (sd.Decoder, sd.Objective, sd.Entropy, sd.Coverage, sd.TopP, sd.Mask, sd.Temperature, sd.LogitBias,
                sd.RepetitionPenalty, sd.EDT, sd.Exact, sd.Mirror, sd.Auto, sd.ClosedForm, sd.ProjectedGradient):
        assert names[cls.__name__] is cls
    assert not any(n.startswith("_") for n in names)
    assert "chain" in config.decoders() and set(sd.PRESETS) <= set(config.decoders())


def test_register_a_new_term():
    from simplex_decode._pytree import pytree_dataclass

    @pytree_dataclass
    class NegSquare(sd.SquaredL2):  # a user's term, defined outside simplex_decode
        pass

    dec = sd.Decoder(sd.Objective(terms=NegSquare(0.5)))
    with pytest.raises(ValueError, match="NegSquare is not a component a config can name; register it"):
        config.to_config(dec)
    config.register(NegSquare)
    try:
        assert_same_decoder(sd.from_config(config.to_config(dec)), dec)
        with pytest.raises(ValueError, match="the name 'NegSquare' is taken"):
            config.register(sd.SquaredL2, name="NegSquare")
    finally:
        config._REGISTERED.pop("NegSquare")
    with pytest.raises(ValueError, match="must be a dataclass"):
        config.register(int)
    with pytest.raises(ValueError, match="the name must be a Python identifier"):
        config.register(sd.greedy, name="array")
