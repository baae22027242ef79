"""Mirror ascent (the paper's Algorithm 1) and projected gradient ascent."""

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import simplex_decode as sd
from simplex_decode._pytree import check_range, pytree_dataclass, set_field
from simplex_decode.terms import Term


def _softmax(x):
    z = np.exp(x - x.max(-1, keepdims=True))
    return z / z.sum(-1, keepdims=True)


def algorithm1(logits, *, lam, beta, k, w, eta, J, temperature=1.0, mask=None):
    """Independent numpy transcription of the paper's Algorithm 1 (probability domain).

    q₀ = p (restricted to the support and renormalised); for j < J:
    g = s − λ(log(q/p) + 1) + λβ·w·K(1 − q)^{K−1}; M = max(ηg); q̃ = q·exp(ηg − M); q = q̃/Σq̃.
    """
    logits = np.asarray(logits, np.float64)
    s = logits / temperature
    p = _softmax(logits)
    mask = np.ones_like(p, bool) if mask is None else mask
    q = np.where(mask, p, 0.0)
    q = q / q.sum(-1, keepdims=True)
    eta = np.broadcast_to(np.asarray(eta, np.float64), logits.shape[:-1])[..., None]
    for _ in range(J):
        with np.errstate(divide="ignore", invalid="ignore"):
            g = s - lam * (np.log(q / p) + 1.0) + lam * beta * w * k * (1.0 - q) ** (k - 1)
        g = np.where(mask, g, -np.inf)
        M = np.max(eta * g, axis=-1, keepdims=True)
        qt = np.where(mask, q * np.exp(eta * g - M), 0.0)
        q = qt / qt.sum(-1, keepdims=True)
    return q


@jax.jit
def _probs(dec, logits):
    return dec.solve(logits).q


def _top_m_weights(logits, m):
    w = np.zeros_like(logits)
    idx = np.argsort(-logits, axis=-1, kind="stable")[..., :m]
    np.put_along_axis(w, idx, 1.0, axis=-1)
    return w


CASES = [  # k, lam, beta, weights, eta, J, temperature, support
    (16, 0.1, 0.01, "top_m", 1.0, 5, 1.0, None),  # the paper's settings, follow-up's K and w
    (16, 0.5, 0.05, "top_m", 1.0, 5, 0.7, None),
    (4, 0.5, 2.0, "model", 0.5, 20, 1.0, None),
    (8, 0.3, 0.5, "array", 2.0, 5, 1.0, "top_k"),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(map(str, c)))
def test_mirror_equals_numpy_algorithm1(x64, case):
    k, lam, beta, weights, eta, J, t, support = case
    rng = np.random.default_rng(J * 7 + k)
    V = 64
    logits = rng.standard_normal((3, V)) * 2.5
    w = {"top_m": _top_m_weights(logits, 8), "model": _softmax(logits), "array": rng.uniform(size=(3, V))}[weights]
    rule = sd.TopK(20) if support == "top_k" else None
    dec = sd.best_of_k(k, lam, beta, weights=w if weights == "array" else weights, top_m=8, temperature=t,
                       solver="mirror", steps=J, step_size=eta, support=rule)
    q = np.asarray(_probs(dec, jnp.asarray(logits)))
    mask = None if rule is None else np.asarray(dec.objective.prepare(logits).mask)
    ref = algorithm1(logits, lam=lam, beta=beta, k=k, w=w, eta=eta, J=J, temperature=t, mask=mask)
    assert np.abs(q - ref).max() <= 1e-6
    assert np.abs(q - ref).sum(-1).max() <= 1e-6
    if mask is not None:
        assert np.all(q[~mask] == 0.0)
    sol = jax.jit(dec.solve)(jnp.asarray(logits))
    assert np.all(np.asarray(sol.stats["iterations"]) == J)


def test_per_row_step_size(x64):
    logits = np.random.default_rng(0).standard_normal((3, 40)) * 2
    eta = np.array([0.25, 1.0, 1.75])
    dec = sd.best_of_k(4, 0.5, 0.3, weights="model", solver="mirror", steps=6, step_size=jnp.asarray(eta))
    ref = algorithm1(logits, lam=0.5, beta=0.3, k=4, w=_softmax(logits), eta=eta, J=6)
    assert np.abs(np.asarray(_probs(dec, jnp.asarray(logits))) - ref).max() <= 1e-6


@pytest.mark.parametrize("J", [1, 5, 20])
@pytest.mark.parametrize("eta_lam", [0.1, 1.0, 1.5])
def test_c_J_identity(x64, J, eta_lam):
    """beta = 0: J mirror steps from p give q_J ∝ p·exp(c_J s), c_J = (1 − (1 − ηλ)^J)/λ."""
    # Under x64, concrete parameters are stored in float64 (declared parameters): the formula
    # uses the same values.
    lam = 0.3
    eta = eta_lam / lam
    t = 0.8
    logits = np.random.default_rng(J).standard_normal((2, 50)) * 3
    s = logits / t
    dec = sd.best_of_k(8, lam, 0.0, temperature=t, solver="mirror", steps=J, step_size=eta)
    q = np.asarray(_probs(dec, jnp.asarray(logits)))
    c_J = (1.0 - (1.0 - eta * lam) ** J) / lam
    expected = _softmax(np.log(_softmax(logits)) + c_J * s)
    assert np.abs(q - expected).max() <= 1e-10
    # ... a plain temperature change of the model distribution: softmax(logits·(1 + c_J/t)).
    assert np.abs(q - _softmax(logits + c_J * s)).max() <= 1e-10


def test_mirror_with_tolerance_reaches_the_exact_optimum(x64):
    logits = np.random.default_rng(3).standard_normal((4, 80)) * 2
    for k, lam, beta in [(16, 0.5, 0.05)]:
        exact = sd.best_of_k(k, lam, beta, top_m=6)
        # η·λ = 1/2: the KL part contracts by 1/2 per step (η·λ = 1 oscillates with coverage)
        mirror = sd.Decoder(exact.objective, solver=sd.Mirror(steps=3000, step_size=0.5 / lam, tol=1e-13))
        sol = jax.jit(mirror.solve)(jnp.asarray(logits))
        q_exact = _probs(exact, jnp.asarray(logits))
        assert float(jnp.abs(sol.q - q_exact).sum(-1).max()) <= 1e-6
        it = np.asarray(sol.stats["iterations"])
        assert np.all(np.asarray(sol.stats["converged"])) and it.max() < 3000 and it.min() >= 1
        # Rows stop on their own: a row alone takes the same steps and gives the same q.
        alone = jax.jit(mirror.solve)(jnp.asarray(logits[1:2]))
        assert int(alone.stats["iterations"][0]) == int(it[1])
        assert float(jnp.abs(alone.q[0] - sol.q[1]).max()) == 0.0


def test_projected_gradient_converges_to_closed_form_and_exact(x64):
    logits = np.random.default_rng(4).standard_normal((3, 30))
    sparse = sd.sparsemax(temperature=0.5)
    pg = sd.Decoder(sparse.objective, solver=sd.ProjectedGradient(steps=300, step_size=0.5))
    q = np.asarray(_probs(pg, jnp.asarray(logits)))
    assert np.abs(q - np.asarray(_probs(sparse, jnp.asarray(logits)))).max() <= 1e-10
    assert np.sum(q == 0.0) > 0  # exact zeros, unlike mirror ascent
    obj = sd.Objective(terms=(sd.SquaredL2(0.5), sd.Coverage(4, "top_m", weight=0.3, top_m=4)), support=sd.TopK(12))
    pgb = sd.Decoder(obj, solver=sd.ProjectedGradient(steps=5000, step_size=0.5, tol=1e-14))
    qb = np.asarray(_probs(pgb, jnp.asarray(logits)))
    assert np.abs(qb - np.asarray(_probs(sd.Decoder(obj), jnp.asarray(logits)))).sum(-1).max() <= 1e-8
    mask = np.asarray(obj.prepare(logits).mask)
    assert np.all(qb[~mask] == 0.0)


def test_projection_is_per_row():
    """optax's projection_simplex flattens its input; the solver vmaps it per row."""
    logits = jnp.asarray(np.random.default_rng(5).standard_normal((2, 3, 10)), jnp.float32)
    pg = sd.Decoder(sd.sparsemax().objective, solver=sd.ProjectedGradient(steps=50, step_size=0.5))
    q = _probs(pg, logits)
    assert np.allclose(np.asarray(q.sum(-1)), 1.0, atol=1e-6)
    assert float(jnp.abs(q[1, 2] - _probs(pg, logits[1, 2])).max()) <= 1e-7


@pytree_dataclass
class _Coupling(Term):
    """A non-separable concave term, −½(a·q)² (test only), with its cvxpy expression."""

    separable = False
    a: Any = None
    weight: Any = 1.0

    def __post_init__(self):
        set_field(self, "a", jnp.asarray(self.a))
        set_field(self, "weight", check_range("_Coupling", "weight", self.weight, lo=0.0))

    def value(self, q, ctx):
        return -0.5 * jnp.sum(self.a * q, axis=-1) ** 2

    def grad(self, q, ctx):
        return -jnp.sum(self.a * q, axis=-1, keepdims=True) * self.a

    def reference_data(self, ctx):
        return {"a": jnp.broadcast_to(self.a, ctx.logits.shape)}

    def cvxpy(self, q, data):
        import cvxpy as cp

        return -0.5 * cp.square(data["a"] @ q)


def test_non_separable_term_uses_mirror_ascent(x64):
    pytest.importorskip("cvxpy")
    from simplex_decode import reference

    rng = np.random.default_rng(6)
    logits = rng.standard_normal((2, 25)) * 2
    a = rng.standard_normal(25)
    obj = sd.Objective(terms=(sd.Entropy(0.5), _Coupling(a, weight=0.3)), support=sd.TopK(15))
    assert type(sd.Auto().select(obj)).__name__ == "Mirror"
    with pytest.raises(ValueError, match="separable"):
        sd.Decoder(obj, solver="exact").probs(logits)
    q = np.asarray(_probs(sd.Decoder(obj), jnp.asarray(logits)))
    assert np.abs(q - reference.solve(obj, logits)).sum(-1).max() <= 1e-5
    # The Euclidean variant on a Euclidean objective (it reaches the exact zeros).
    obj2 = sd.Objective(terms=(sd.SquaredL2(0.5), _Coupling(a, weight=0.3)))
    q2 = np.asarray(_probs(sd.Decoder(obj2, solver=sd.ProjectedGradient(steps=4000, step_size=0.5, tol=1e-13)),
                           jnp.asarray(logits)))
    assert np.abs(q2 - reference.solve(obj2, logits)).sum(-1).max() <= 1e-5


def test_lam_zero_is_greedy_and_errors():
    logits = jnp.array([[0.0, 2.0, 2.0, -1.0]])
    for solver in ("mirror", "projected_gradient"):
        q = _probs(sd.best_of_k(2, 0.0, 1.0, top_m=2, solver=solver), logits)
        assert np.array_equal(np.asarray(q), [[0.0, 1.0, 0.0, 0.0]])
    with pytest.raises(ValueError, match="steps"):
        sd.Mirror(steps=0)
    with pytest.raises(ValueError, match="step_size"):
        sd.Mirror(step_size=0.0)
    with pytest.raises(ValueError, match="tol"):
        sd.Mirror(tol=0.0)
    with pytest.raises(ValueError, match="step_size"):
        sd.ProjectedGradient(step_size=-1.0)
    with pytest.raises(ValueError, match="Cap"):
        sd.Decoder(sd.Objective(terms=(sd.Entropy(), sd.Cap(0.5))), solver="mirror").probs(jnp.zeros(4))
