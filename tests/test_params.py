"""Declared parameters: every component's and every preset's arguments are validated from
their declarations, errors name what the user passed, traced values never act as defaults.

The cases are generated from the declarations (``Class.__params__``, ``preset.__params__``)
and the generation is checked to cover every argument of every entry of ``PRESETS``, so a
new component or preset is tested as soon as it declares its parameters — and a preset that
does not declare them fails at import (``_preset``) and here.
"""

import inspect
import math
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import simplex_decode as sd
from simplex_decode import presets
from simplex_decode._pytree import Param, params_ok

V = 6
LOGITS = jnp.asarray(np.linspace(-2.0, 2.0, V, dtype=np.float32))
BATCH = jnp.stack([LOGITS, LOGITS[::-1]])

# --- the declarations ----------------------------------------------------------------

CLASSES = sorted(
    {obj for obj in vars(sd).values() if inspect.isclass(obj) and getattr(obj, "__params__", None)},
    key=lambda c: c.__name__,
)


def _required(params, sig_params):
    """Valid values for the arguments without a default."""
    out = {}
    for name, p in sig_params.items():
        if p.default is inspect.Parameter.empty and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL):
            out[name] = params[name].example()
    return out


#: Everything that declares its parameters: the components, then the presets.
DECLARING = CLASSES + list(sd.PRESETS.values())


def _invalid_cases():
    for owner in DECLARING:
        for name, spec in owner.__params__.items():
            for value in spec.invalid_values():
                yield pytest.param(owner, name, value, id=f"{owner.__name__}-{name}-{value!r:.20}")


INVALID_CASES = list(_invalid_cases())


def test_every_preset_argument_is_declared_and_covered():
    """Every argument of every preset has a declaration (or is handed, unvalidated here, to a
    component that validates it: only non-numeric ones may be), and the generated invalid
    cases reach every declared argument that has a range."""
    covered = {(c.values[0].__name__, c.values[1]) for c in INVALID_CASES}
    assert sd.PRESETS, "no presets registered"
    for preset, fn in sd.PRESETS.items():
        sig = inspect.signature(fn)
        for name, p in sig.parameters.items():
            if p.kind is p.VAR_KEYWORD:
                assert fn.__params__, f"{preset}: **{name} without declared keys"
                continue
            if name in fn.__passed__:
                assert p.default is None or isinstance(p.default, str), (
                    f"{preset}: numeric argument `{name}` is passed through undeclared"
                )
                continue
            assert name in fn.__params__, f"{preset}: argument `{name}` is not declared"
        for name, spec in fn.__params__.items():
            assert (preset, name) in covered, f"{preset}: `{name}` has no generated invalid value"
            assert spec.name == name


def test_a_preset_must_declare_its_arguments(monkeypatch):
    monkeypatch.setattr(presets, "PRESETS", {})
    with pytest.raises(TypeError, match=r"preset bad: declare every argument.*undeclared: \['x'\]"):

        @presets._preset
        def bad(x=1.0):  # pragma: no cover - never called
            return sd.greedy()

    assert presets.PRESETS == {}


@pytest.mark.parametrize("owner, name, value", INVALID_CASES)
def test_each_invalid_value_is_rejected_naming_the_parameter(owner, name, value):
    """``ValueError("<owner>: `<name>` must be …, got …")``: a preset names itself and its own
    argument, a component its class and field."""
    kwargs = _required(owner.__params__, inspect.signature(owner).parameters)
    kwargs[name] = value
    expected = f"{owner.__name__}: `{name}` {owner.__params__[name].requirement()}"
    with pytest.raises(ValueError, match="^" + re.escape(expected)):
        owner(**kwargs)


def test_values_at_and_just_inside_the_bounds_are_accepted():
    n = 0
    for owner in DECLARING:
        for name, spec in owner.__params__.items():
            for value in spec.boundary_values():
                kwargs = _required(owner.__params__, inspect.signature(owner).parameters)
                kwargs[name] = value
                owner(**kwargs)
                n += 1
    assert n > 60


def test_bounds_in_the_vocabulary_size_are_checked_at_the_logits():
    """``k ≤ V`` (top-k) and ids ``≤ V − 1`` can only be checked once the logits arrive."""
    cases = [
        ("top_k: `k`", sd.top_k.__params__["k"], lambda v: sd.top_k(v)),
        ("TopK: `k`", sd.TopK.__params__["k"], lambda v: sd.chain(sd.TopK(v))),
        ("BanTokens: `ids`", sd.BanTokens.__params__["ids"], lambda v: sd.chain(sd.BanTokens(np.array([0, v])))),
        ("AllowTokens: `ids`", sd.AllowTokens.__params__["ids"], lambda v: sd.chain(sd.AllowTokens(np.array([v])))),
        ("MinNewTokens: `eos_id`", sd.MinNewTokens.__params__["eos_id"], lambda v: sd.chain(sd.MinNewTokens(1, eos_id=v))),
    ]
    history = jnp.zeros((1,), jnp.int32)
    for who, spec, make in cases:
        hi = {"V": V, "V-1": V - 1}[spec.hi]
        assert np.max(spec.boundary_values(V)[-1]) == hi
        assert params_ok(make(hi).objective, (), V) is True  # at the bound: fine
        dec = make(hi + 1)  # constructs: only the logits tell
        with pytest.raises(ValueError, match="^" + re.escape(f"{who} {spec.requirement(V)}, got")):
            dec.probs(LOGITS, history=history)
    assert np.isfinite(np.asarray(sd.top_k(V).probs(LOGITS))).all()


# --- the examples of the issue ---------------------------------------------------------


def test_presets_name_their_own_arguments():
    with pytest.raises(ValueError, match=r"^kl_anchored: `lam` must be in \[0, inf\), got -1.0$"):
        sd.kl_anchored(-1)
    with pytest.raises(ValueError, match=r"^tsallis_coverage: `beta` must be in \[0, inf\), got -1.0$"):
        sd.tsallis_coverage(lam=2, beta=-1)
    with pytest.raises(ValueError, match=r"^tsallis_coverage: `beta` must be in \[0, inf\), got -1.0$"):
        sd.tsallis_coverage(lam=0, beta=-1)  # was accepted: lam·beta = 0
    with pytest.raises(ValueError, match=r"^min_p: `p` must be in \[0, 1\], got 1.5$"):
        sd.min_p(1.5)
    with pytest.raises(ValueError, match=r"^epsilon: `eps` must be in \[0, 1\), got 1.0$"):
        sd.epsilon(1.0)
    with pytest.raises(ValueError, match=r"^best_of_k: `lam` must be in \[0, inf\), got -0.5$"):
        sd.best_of_k(4, -0.5, 0.1)
    with pytest.raises(ValueError, match=r"^entropix: `t_fork` must be in \[0, inf\), got -1.0$"):
        sd.entropix(t_fork=-1)
    with pytest.raises(ValueError, match=r"^top_p: `from_model` must be True or False, got 'yes'$"):
        sd.top_p(0.9, from_model="yes")


def test_cli_spec_errors_name_the_preset_argument():
    from simplex_decode.cli.spec import build_decoder

    with pytest.raises(ValueError, match=r"^decoder spec: kl_anchored: `lam` must be in \[0, inf\), got -1.0$"):
        build_decoder("kl_anchored(lam=-1)")


def test_shape_errors_name_the_parameter_and_the_batch_shape():
    with pytest.raises(ValueError, match=r"^top_p: `p` of shape \(3,\) does not broadcast to the batch shape \(2,\)"):
        sd.top_p(jnp.array([0.9, 0.8, 0.7])).probs(BATCH)
    with pytest.raises(ValueError, match=r"^TopP: `p` of shape \(3,\) does not broadcast to the batch shape \(2,\)"):
        sd.chain(sd.TopP(jnp.array([0.9, 0.8, 0.7]))).probs(BATCH)
    with pytest.raises(ValueError, match=r"^kl_anchored: `lam` of shape \(3,\) does not broadcast"):
        sd.kl_anchored(np.ones(3)).probs(BATCH)
    with pytest.raises(ValueError, match=r"^best_of_k: `temperature` of shape \(2, 2\) does not broadcast"):
        sd.best_of_k(4, 0.5, 0.5, temperature=np.ones((2, 2))).probs(BATCH)
    with pytest.raises(ValueError, match=rf"^kl_anchored: `reference` must have V={V} entries in its last axis"):
        sd.kl_anchored(1.0, reference=np.ones(4) / 4).probs(BATCH)
    with pytest.raises(ValueError, match=rf"^LogitBias: `bias` must have V={V} entries in its last axis, got shape \(4,\)"):
        sd.chain(sd.LogitBias(np.zeros(4))).probs(BATCH)
    with pytest.raises(ValueError, match=r"^BanTokens: `ids` of shape \(3, 1\) does not broadcast to the batch shape \(2,\)"):
        sd.chain(sd.BanTokens(np.zeros((3, 1), np.int32))).probs(BATCH)
    # per-row values of the right shape work, and align with the leading batch axes
    t = jnp.array([0.5, 2.0])
    q = sd.temperature(t).probs(BATCH)
    np.testing.assert_allclose(np.asarray(q), np.asarray(jax.nn.softmax(BATCH / t[:, None])), rtol=1e-5)


# --- the entry points --------------------------------------------------------------------

_LOGITS_ERROR = r"^logits: must be a real \(floating-point or integer\) array of shape \(\.\.\., V\) with V >= 1, got "


@pytest.mark.parametrize(
    "bad",
    ["abc", [[1, "a"]], np.zeros((2, 3), object), np.zeros((2, 3), bool), np.zeros((2, 3), np.complex64), None,
     [[1.0, 2.0], [3.0]], np.zeros((2, 0), np.float32), np.float32(1.0)],
    ids=["str", "mixed-list", "object", "bool", "complex", "None", "ragged", "V=0", "scalar"],
)
def test_bad_logits_name_logits(bad):
    for dec in (sd.top_p(0.9), sd.greedy()):
        with pytest.raises(ValueError, match=_LOGITS_ERROR):
            dec.probs(bad)
        with pytest.raises(ValueError, match=_LOGITS_ERROR):
            dec.sample(jax.random.key(0), bad)


def test_integer_logits_are_the_numbers_they_hold():
    ints = np.array([[3, 1, 0, -2]], np.int32)
    for dec in (sd.temperature(0.5), sd.greedy()):
        np.testing.assert_array_equal(np.asarray(dec.probs(ints)), np.asarray(dec.probs(ints.astype(np.float32))))
        assert dec.probs(ints).dtype == jnp.float32


def test_sample_arguments_are_checked_on_every_path():
    key = jax.random.key(0)
    for dec in (sd.greedy(), sd.temperature(0.7)):  # greedy takes the argmax path
        with pytest.raises(ValueError, match=r"^num_samples: must be None or an integer >= 1"):
            dec.sample(key, BATCH, num_samples=0)
        for bad in (True, 2.0, "3"):
            with pytest.raises(ValueError, match=r"^num_samples:"):
                dec.sample(key, BATCH, num_samples=bad)
        with pytest.raises(ValueError, match=r"^key: must be a jax.random.key.*got str 'notakey'"):
            dec.sample("notakey", BATCH)
        with pytest.raises(ValueError, match=r"^key: .*got dtype uint32 shape \(3,\)"):
            dec.sample(jnp.zeros(3, jnp.uint32), BATCH)
        with pytest.raises(ValueError, match=r"^key: must be a single key or one key per row with batch shape \(2,\)"):
            dec.sample(jax.random.split(key, 3), BATCH)
        with pytest.raises(ValueError, match=r"^method: must be one of"):
            dec.sample(key, BATCH, method="fast")
    assert sd.greedy().sample(key, BATCH, num_samples=np.int64(2)).shape == (2, 2)
    assert sd.temperature(0.7).sample(jax.random.PRNGKey(0), BATCH).shape == (2,)


def test_history_arguments_name_themselves():
    dec = sd.chain(sd.RepetitionPenalty(1.5))
    h = jnp.array([[0, 1], [2, 3]])
    with pytest.raises(ValueError, match=r"^history: must be an array of integer token ids, got dtype float32"):
        dec.probs(BATCH, history=h.astype(jnp.float32))
    with pytest.raises(ValueError, match=r"^history: must be an array of integer token ids, got str"):
        dec.probs(BATCH, history="0 1")
    with pytest.raises(ValueError, match=r"^history: must have shape batch \+ \(L,\) = \(2,\) \+ \(L,\), got \(3, 2\)"):
        dec.probs(BATCH, history=jnp.zeros((3, 2), jnp.int32))
    with pytest.raises(ValueError, match=r"^history_mask: must be an array of booleans \(or 0/1 integers\), got dtype float32"):
        dec.probs(BATCH, history=h, history_mask=jnp.ones((2, 2)))
    with pytest.raises(ValueError, match=r"^history_mask: must have the shape of history \(2, 2\), got \(2, 1\)"):
        dec.probs(BATCH, history=h, history_mask=jnp.ones((2, 1), bool))
    with pytest.raises(ValueError, match=r"^history_mask: integer entries must be 0 or 1"):
        dec.probs(BATCH, history=h, history_mask=jnp.array([[1, 2], [0, 1]]))
    with pytest.raises(ValueError, match=r"^history_mask: given without `history`"):
        dec.probs(BATCH, history_mask=jnp.ones((2, 2), bool))
    with pytest.raises(ValueError, match=rf"^history: token ids must be in \[0, V-1={V - 1}\]"):
        dec.probs(BATCH, history=h.at[1, 0].set(V))
    mask = jnp.array([[True, False], [True, True]])
    np.testing.assert_array_equal(
        np.asarray(dec.probs(BATCH, history=h, history_mask=mask.astype(jnp.int32))),
        np.asarray(dec.probs(BATCH, history=h, history_mask=mask)),
    )


# --- traced values: a status, never a default ----------------------------------------------

TRACED = [
    ("temperature", lambda v: sd.temperature(v), [-1.0, math.nan], "temperature: `t`"),
    ("top_p", lambda v: sd.top_p(v), [1.5, 0.0], "top_p: `p`"),
    ("kl_anchored", lambda v: sd.kl_anchored(v), [-1.0], "kl_anchored: `lam`"),
    ("edt", lambda v: sd.edt(n=v), [1.5], "edt: `n`"),
    ("mirror", lambda v: sd.Decoder(sd.Objective(terms=sd.KL(0.5)), solver=sd.Mirror(steps=3, step_size=v)), [-1.0],
     "Mirror: `step_size`"),
    ("dynamic", lambda v: sd.dynamic_temperature(t_min=v, t_max=1.0), [2.0], "DynamicTemperature: `t_max` must be >= `t_min`"),
]


@pytest.mark.parametrize("name, make, bad_values, who", TRACED, ids=[t[0] for t in TRACED])
def test_traced_invalid_parameters_give_the_row_a_status(name, make, bad_values, who):
    """Per row: the bad row gets INVALID_PARAMETER and q = 0 (its sample: id -1); the good
    row is decoded as in a batch of good rows; under ``sd.checked`` the error names the
    parameter. One compilation each for solve, sample and the checked probs."""
    good = {"mirror": 0.5, "dynamic": 0.5, "edt": 0.8, "top_p": 0.9, "kl_anchored": 0.5}.get(name, 0.7)
    solve = jax.jit(lambda v, x: make(v).solve(x))
    checked = sd.checked(jax.jit(lambda v, x: make(v).probs(x)))
    reference = solve(jnp.array([good, good], jnp.float32), BATCH)
    assert np.asarray(reference.status).tolist() == [sd.Status.OK, sd.Status.OK]
    for bad in bad_values:
        values = jnp.array([good, bad], jnp.float32)
        sol = solve(values, BATCH)
        assert np.asarray(sol.status).tolist() == [sd.Status.OK, sd.Status.INVALID_PARAMETER]
        q = np.asarray(sol.q)
        np.testing.assert_allclose(q[0], np.asarray(reference.q)[0], rtol=2e-6, atol=1e-7)
        assert np.all(q[1] == 0)
        with pytest.raises(Exception, match=re.escape(who)):
            checked(values, BATCH)
    if name == "temperature":
        ids = np.asarray(jax.jit(lambda k, v, x: make(v).sample(k, x))(jax.random.key(0), values, BATCH))
        assert ids[1] == -1 and 0 <= ids[0] < V


def test_traced_vocabulary_bounds_give_the_row_a_status():
    sol = jax.jit(lambda k, x: sd.top_k(k).solve(x))(jnp.array([2, V + 1]), BATCH)
    assert np.asarray(sol.status).tolist() == [sd.Status.OK, sd.Status.INVALID_PARAMETER]
    with pytest.raises(Exception, match=re.escape(f"top_k: `k` must be an integer in [1, V={V}], got {V + 1}")):
        sd.checked(jax.jit(lambda k, x: sd.top_k(k).probs(x)))(jnp.array([2, V + 1]), BATCH)
    dec = sd.chain(sd.RepetitionPenalty(1.5))
    sol = jax.jit(lambda h, x: dec.solve(x, history=h))(jnp.array([[0, 1], [2, V]]), BATCH)
    assert np.asarray(sol.status).tolist() == [sd.Status.OK, sd.Status.INVALID_PARAMETER]


def test_traced_parameters_of_a_decoder_passed_to_jit():
    """A decoder whose leaves were replaced without its constructor (tree_map, vmap): its
    values are checked where they meet the logits — eagerly a ValueError, traced a status."""
    t = jax.tree.map(lambda t: jnp.array([0.5, -1.0]), sd.Temperature(0.5))
    bad = sd.Decoder(sd.Objective(terms=sd.Entropy(), transforms=t))
    with pytest.raises(ValueError, match=r"Temperature: `t` must be in \[0, inf\), got \[ 0.5 -1. \]"):
        bad.probs(BATCH)
    status = jax.jit(lambda d, x: d.solve(x).status)(bad, BATCH)
    assert np.asarray(status).tolist() == [sd.Status.OK, sd.Status.INVALID_PARAMETER]


def test_params_ok_costs_nothing_when_nothing_is_traced():
    assert params_ok(sd.top_p(0.9, temperature=0.5).objective, (2,), V) is True


def test_status_messages():
    for code in sd.Status:
        assert code.message and code.subject
    msg = sd.status.status_error_message(np.array([0, 6]))
    assert msg.startswith("invalid parameter: logits rows [1]: a parameter")
    assert "simplex_decode.checked" in msg


# --- storage ------------------------------------------------------------------------------


def test_values_are_stored_with_fixed_dtypes_and_never_recompile():
    assert sd.Temperature(1).t.dtype == jnp.float32 and sd.TopK(3).k.dtype == jnp.int32
    assert sd.TopK(3.0).k.dtype == jnp.int32 and type(sd.Coverage(k=3.0).k) is int
    assert type(sd.Exact(tol=1e-6).tol) is float and sd.Exact().tol is None
    assert sd.Mask(np.ones(3, bool)).allowed.dtype == jnp.bool_
    traces = []

    @jax.jit
    def run(dec, x):
        traces.append(1)
        return dec.probs(x)

    for t in (0.5, 0.7, np.float32(2.0), np.float64(3.0), jnp.float32(0.1), 1):
        run(sd.temperature(t), BATCH)
    assert len(traces) == 1


def test_float64_is_kept_under_x64(x64):
    assert sd.Temperature(np.float64(0.5)).t.dtype == jnp.float64
    assert sd.Temperature(0.5).t.dtype == jnp.float64  # JAX's default float dtype, as jnp.asarray
    assert sd.Temperature(np.float32(0.5)).t.dtype == jnp.float32  # a narrower float array stays
    assert sd.KL(1.0, reference=np.full(4, 0.25)).reference.dtype == jnp.float64


def test_param_text_and_values():
    p = Param(lo=0.0, hi=1.0, lo_open=True, name="p")
    assert p.interval() == "(0, 1]" and p.message("top_p") == "top_p: `p` must be in (0, 1]"
    assert p.boundary_values() == [float(np.finfo(np.float32).tiny), 1.0]
    k = Param(lo=1, hi="V", integer=True, name="k")
    assert k.interval() == "[1, V]" and k.interval(10) == "[1, V=10]"
    assert k.boundary_values(10) == [1, 10] and 11 in k.invalid_values(10)
    assert Param(lo=-math.inf, name="b").interval() == "[-inf, inf)"
    opt = Param(lo=0, integer=True, optional=True, name="n")
    assert opt.requirement() == "must be None or an integer in [0, inf)"
    assert opt.validate("X", None) is None


def test_cli_lists_the_declared_ranges(capsys):
    from simplex_decode.cli.main import main

    assert main(["decoders"]) == 0
    out = capsys.readouterr().out
    assert "    params   p: in (0, 1]; temperature: in [0, inf); from_model: True or False; min_keep: an integer" in out
    assert "k: an integer in [1, V]" in out


def test_a_converter_runs_before_the_checks_and_its_result_is_stored():
    spec = Param(lo=0.0, converter=lambda x: x * 2, name="x")
    assert float(spec.validate("X", jnp.float32(1.5))) == 3.0
    with pytest.raises(ValueError, match=r"^X: `x` must be in \[0, inf\), got -2.0"):
        spec.validate("X", -1.0)
    assert sd.BanTokens(3).ids.shape == (1,)  # a list of one
