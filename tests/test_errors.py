"""Bad input: a ValueError naming the parameter and its range; bad values under jit."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import simplex_decode as sd

V = 10
LOGITS = np.linspace(-2, 2, V, dtype=np.float32)


@pytest.mark.parametrize(
    "make, pattern",
    [
        (lambda: sd.top_k(0), r"top_k: `k` must be an integer in \[1, V\], got 0"),
        (lambda: sd.top_k(2.5), r"`k` must be an integer"),
        (lambda: sd.top_p(0.0), r"top_p: `p` must be in \(0, 1\], got 0.0"),
        (lambda: sd.top_p(1.2), r"top_p: `p` must be in \(0, 1\]"),
        (lambda: sd.top_p(np.array([0.5, 1.5])), r"`p` must be in \(0, 1\].*1.5"),
        (lambda: sd.TopP(1.2), r"TopP: `p` must be in \(0, 1\], got 1.2"),
        # the preset's own argument names (these asserted MinP's / KL's / Temperature's before)
        (lambda: sd.min_p(-0.1), r"min_p: `p` must be in \[0, 1\]"),
        (lambda: sd.min_p(1.1), r"min_p: `p` must be in \[0, 1\]"),
        (lambda: sd.temperature(-1.0), r"temperature: `t` must be in \[0, inf\), got -1.0"),
        (lambda: sd.temperature(float("nan")), r"temperature: `t` must be in"),
        (lambda: sd.top_p(0.9, temperature=-0.5), r"top_p: `temperature` must be in \[0, inf\)"),
        (lambda: sd.Temperature(-1.0), r"Temperature: `t` must be in \[0, inf\)"),
        (lambda: sd.entmax(1.0), r"entmax: `alpha` must be in \(1, inf\)"),
        (lambda: sd.entmax(0.5), r"`alpha`"),
        (lambda: sd.kl_anchored(-0.1), r"kl_anchored: `lam` must be in \[0, inf\), got -0.1"),
        (lambda: sd.KL(-0.1), r"KL: `weight` must be in \[0, inf\)"),
        (lambda: sd.Entropy(-1.0), r"Entropy: `weight`"),
        (lambda: sd.SquaredL2(-1.0), r"SquaredL2: `weight`"),
        (lambda: sd.Coverage(k=0), r"Coverage: `k`"),
        (lambda: sd.Coverage(k=2, weights=-np.ones(3)), r"Coverage: `weights` must be .* with entries in \[0, inf\)"),
        (lambda: sd.Coverage(k=2, weights="uniform"), r"Coverage: `weights` must be"),
        (lambda: sd.KL(1.0, reference=np.array([0.5, 0.6])), r"KL: `reference` must sum to 1"),
        (lambda: sd.Mask(np.ones(3)), r"Mask: `allowed` must be a boolean array"),
        (lambda: sd.Mask.from_ids(5, deny=[7]), r"Mask: `deny` token ids must be in \[0, 4\]"),
        (lambda: sd.Objective(terms=sd.TopK(3)), r"`terms` must be a Term"),
        (lambda: sd.Decoder(sd.Objective(), solver="newton"), r"solver: must be one of"),
    ],
)
def test_static_parameters_are_validated(make, pattern):
    with pytest.raises(ValueError, match=pattern):
        make()


def test_shape_errors():
    sd.TopK(11)  # V is not known yet
    with pytest.raises(ValueError, match=r"TopK: `k` must be an integer in \[1, V=10\], got 11"):
        sd.Decoder(sd.Objective(terms=sd.Entropy(), support=sd.TopK(11))).probs(LOGITS)
    with pytest.raises(ValueError, match=r"top_k: `k` must be an integer in \[1, V=10\], got 11"):
        sd.top_k(11).probs(LOGITS)
    with pytest.raises(ValueError, match=r"logits: must be a real .* array of shape \(\.\.\., V\) with V >= 1, got shape \(\)"):
        sd.temperature().probs(jnp.float32(1.0))
    with pytest.raises(ValueError, match=r"temperature: `t` of shape \(3,\) does not broadcast to the batch shape \(2,\)"):
        sd.temperature(np.ones(3, np.float32)).probs(np.zeros((2, V), np.float32))
    with pytest.raises(ValueError, match=r"LogitBias: `bias` must have V=10"):
        sd.Decoder(sd.Objective(terms=sd.Entropy(), transforms=sd.LogitBias(np.zeros(4)))).probs(LOGITS)
    with pytest.raises(ValueError, match=r"Mask: `allowed` must have V=10"):
        sd.Decoder(sd.Objective(terms=sd.Entropy(), support=sd.Mask(np.ones(4, bool)))).probs(LOGITS)
    with pytest.raises(ValueError, match=r"key: must be a single key or one key per row"):
        sd.temperature().sample(jax.random.split(jax.random.key(0), 3), np.zeros((2, V), np.float32))
    with pytest.raises(ValueError, match=r"num_samples: must be None or an integer >= 1"):
        sd.temperature().sample(jax.random.key(0), LOGITS, num_samples=0)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nonfinite_logits_raise_eagerly(bad):
    x = np.stack([LOGITS, LOGITS])
    x[1, 3] = bad
    with pytest.raises(ValueError, match=r"rows \[1\]: logits contain NaN or \+inf"):
        sd.top_p(0.9).probs(x)
    with pytest.raises(ValueError, match=r"NaN or \+inf"):
        sd.temperature().sample(jax.random.key(0), x)


def test_empty_support_raises():
    x = np.full((2, V), -np.inf, np.float32)
    x[0] = LOGITS
    with pytest.raises(ValueError, match=r"rows \[1\]: no token is allowed"):
        sd.temperature().probs(x)
    deny_all = sd.Objective(terms=sd.Entropy(), support=sd.Mask(np.zeros(V, bool)))
    with pytest.raises(ValueError, match=r"no token is allowed"):
        sd.Decoder(deny_all).probs(LOGITS)


def test_under_jit_bad_rows_are_zero_and_minus_one_never_nan():
    x = np.stack([LOGITS, LOGITS, LOGITS])
    x[1, 2] = np.nan
    x[2] = -np.inf
    dec = sd.top_p(0.9, temperature=0.7)
    q = np.asarray(jax.jit(dec.probs)(x))
    assert np.all(np.isfinite(q))
    np.testing.assert_allclose(q[0].sum(), 1.0, atol=1e-6)
    assert np.all(q[1:] == 0)
    ids = np.asarray(jax.jit(lambda k, x: dec.sample(k, x, num_samples=2))(jax.random.key(0), x))
    assert np.all(ids[1:] == -1) and np.all(ids[0] >= 0)
    sol = jax.jit(dec.solve)(x)
    np.testing.assert_array_equal(np.asarray(sol.status), [sd.Status.OK, sd.Status.NONFINITE_LOGITS, sd.Status.EMPTY_SUPPORT])


def test_checked_raises_under_jit():
    x = np.stack([LOGITS, LOGITS])
    x[1, 2] = np.inf
    f = sd.checked(jax.jit(lambda x: sd.temperature(0.5).probs(x)))
    with pytest.raises(Exception, match=r"invalid logits: row 1 .* status 1"):
        f(x)
    np.testing.assert_allclose(np.asarray(f(np.stack([LOGITS, LOGITS]))).sum(-1), 1.0, atol=1e-6)


def test_checked_catches_traced_parameter_out_of_range():
    @jax.jit
    def run(p, x):
        return sd.top_p(p).probs(x)

    # unchecked: no error, and the row is not a distribution (zeros), never a default p
    assert np.all(np.asarray(run(jnp.float32(1.5), LOGITS)) == 0)
    with pytest.raises(Exception, match=r"top_p: `p` must be in \(0, 1\], got 1.5"):
        sd.checked(run)(jnp.float32(1.5), LOGITS)


def test_solver_that_stops_short_reports_not_converged_per_row():
    """A row whose iterative solver stops before its tolerance is NOT_CONVERGED: q is
    zeros and its sample is -1 (never a silently unconverged distribution), eager
    probs() raises naming the status, and rows that did converge are untouched."""
    obj = sd.Objective(terms=[sd.Entropy(1.0), sd.Coverage(k=4, weights="model")])
    rng = np.random.default_rng(0)
    logits = jnp.asarray(rng.standard_normal((3, 40)) * 3, jnp.float32)
    logits = logits.at[1].set(0.0)  # uniform row: q0 = p is already optimal, converges at once
    short = sd.Decoder(obj, solver=sd.Mirror(steps=2, step_size=0.5, tol=1e-7))
    sol = short.solve(logits)
    conv = np.asarray(sol.stats["converged"])
    assert conv.tolist() == [False, True, False]
    assert np.asarray(sol.status).tolist() == [sd.Status.NOT_CONVERGED, sd.Status.OK, sd.Status.NOT_CONVERGED]
    q = np.asarray(sol.q)
    assert np.all(q[[0, 2]] == 0) and abs(q[1].sum() - 1) < 1e-6
    with pytest.raises(ValueError, match=r"solver: logits rows \[0, 2\]: the iterative solver did not converge"):
        short.probs(logits)
    ids = np.asarray(jax.jit(short.sample)(jax.random.key(0), logits))
    assert ids[0] == -1 and ids[2] == -1 and 0 <= ids[1] < 40
    full = sd.Decoder(obj, solver=sd.Mirror(steps=2000, step_size=0.5, tol=1e-7)).solve(logits)
    assert np.all(np.asarray(full.status) == sd.Status.OK)
