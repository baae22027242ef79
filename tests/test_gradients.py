"""Derivatives of q* (closed forms and the exact solver) against central finite
differences in float64, and reverse mode against forward mode.

Parameters enter the decoders as traced values inside ``jax.jit`` (concrete parameters
are stored in float32, which would make finite differences meaningless).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import simplex_decode as sd

H = 1e-6


def _check(f, x, *, seed=0, rtol=1e-6, atol=1e-9, one_sided=False):
    """JVP = central finite difference along a random direction; VJP is its transpose.
    ``one_sided``: forward difference (at the boundary of a parameter's domain)."""
    rng = np.random.default_rng(seed)
    x = jnp.asarray(x, jnp.float64)
    t = jnp.asarray(rng.standard_normal(x.shape))
    if one_sided:
        t = jnp.abs(t)
    fj = jax.jit(f)
    y, jv = jax.jit(lambda x, t: jax.jvp(f, (x,), (t,)))(x, t)
    if one_sided:
        fd = (-fj(x + 2 * H * t) + 4 * fj(x + H * t) - 3 * fj(x)) / (2 * H)  # second order
    else:
        fd = (fj(x + H * t) - fj(x - H * t)) / (2 * H)
    scale = float(jnp.abs(fd).max())
    assert float(jnp.abs(jv - fd).max()) <= atol + rtol * max(scale, 1.0), (float(jnp.abs(jv - fd).max()), scale)
    ct = jnp.asarray(rng.standard_normal(y.shape))
    (g,) = jax.jit(lambda x, ct: jax.vjp(f, x)[1](ct))(x, ct)
    lhs, rhs = float(jnp.vdot(g, t)), float(jnp.vdot(ct, jv))
    assert abs(lhs - rhs) <= 1e-10 * (1.0 + abs(rhs))
    return scale, y


def _logits(shape=(2, 12), seed=0, scale=2.0):
    return jnp.asarray(np.random.default_rng(seed).standard_normal(shape) * scale)


# --- closed forms -------------------------------------------------------------------


CLOSED = {
    "temperature": lambda lg, a: sd.temperature(a).probs(lg),
    "top_k": lambda lg, a: sd.top_k(5, temperature=a).probs(lg),
    "kl_anchored": lambda lg, a: sd.kl_anchored(a, temperature=0.7).probs(lg),
    "sparsemax": lambda lg, a: sd.sparsemax(temperature=a).probs(lg),
    "entmax_alpha": lambda lg, a: sd.entmax(a, temperature=0.5).probs(lg),
    "entmax_temperature": lambda lg, a: sd.entmax(1.5, temperature=a).probs(lg),
}


@pytest.mark.parametrize("name", sorted(CLOSED))
def test_closed_form_gradients(x64, name):
    f = CLOSED[name]
    logits = _logits(seed=1)
    a = 1.3 if name == "entmax_alpha" else 0.6
    assert _check(lambda x: f(x, a), logits)[0] > 0
    assert _check(lambda a: f(logits, a), jnp.asarray(a))[0] > 0


# --- the exact solver ---------------------------------------------------------------


def test_best_of_k_exact_gradients(x64):
    """All float inputs at once — logits, lam, beta, temperature, coverage weights — along
    a random direction (and the full gradient by reverse mode)."""
    V = 12
    logits = _logits(seed=2)
    w0 = jnp.asarray(np.random.default_rng(3).uniform(size=V))

    def f(theta):
        x = theta[: 2 * V].reshape(2, V)
        lam, beta, t = theta[2 * V], theta[2 * V + 1], theta[2 * V + 2]
        return sd.best_of_k(4, lam, beta, weights=theta[2 * V + 3 :], temperature=t).probs(x)

    theta = jnp.concatenate([logits.ravel(), jnp.array([0.5, 0.3, 0.8]), w0])
    assert _check(f, theta, seed=4)[0] > 1e-6


def test_gradient_at_beta_zero_on_the_top_m_fast_path(x64):
    """d q*/d beta at beta = 0 is not lost (one-sided differences: beta ≥ 0), and the
    top-m fast path differentiates like the dense one."""
    logits = _logits((3, 40), seed=5)

    def f(theta):
        return sd.best_of_k(8, 0.5, theta[-1], top_m=5).probs(theta[:-1].reshape(3, 40))

    theta = jnp.concatenate([logits.ravel(), jnp.zeros(1)])
    assert _check(f, theta, one_sided=True)[0] > 1e-4


def test_kl_reference_gradient(x64):
    logits = _logits(seed=6)
    p0 = jax.nn.softmax(_logits(seed=7))

    def f(p):
        obj = sd.Objective(terms=(sd.KL(0.4, reference=p), sd.Coverage(3, "model", weight=0.5), sd.Entropy(0.2)))
        return sd.Decoder(obj, solver="exact").probs(logits)

    assert _check(f, p0)[0] > 1e-6


MIXTURES = {
    # name: (objective from a parameter x, x0); x is differentiated together with the logits
    "entropy+l2+tsallis (alpha)": (lambda x: (sd.Entropy(0.3), sd.SquaredL2(0.7), sd.Tsallis(x, 0.5)), 1.4),
    "l2+coverage (no entropic term)": (lambda x: (sd.SquaredL2(0.5), sd.Coverage(3, "model", weight=x)), 0.4),
    "entropy+cap (c)": (lambda x: (sd.Entropy(0.5), sd.Cap(x)), 0.23),
    "l2+cap (c)": (lambda x: (sd.SquaredL2(2.0), sd.Cap(x)), 0.21),
}


@pytest.mark.parametrize("name", sorted(MIXTURES))
def test_mixture_gradients(x64, name):
    make, x0 = MIXTURES[name]
    logits = _logits(seed=8)

    def f(theta):
        obj = sd.Objective(terms=make(theta[-1]))
        return sd.Decoder(obj, solver="exact").probs(theta[:-1].reshape(logits.shape))

    scale, q = _check(f, jnp.concatenate([logits.ravel(), jnp.array([x0])]), seed=9)
    assert scale > 1e-6
    if "cap" in name:  # the cap is active (capped coordinates move with c)
        assert int(jnp.sum(q == x0)) > 0


def test_grad_of_a_loss_under_jit_and_vmap(x64):
    """Reverse mode through the solver: impossible through a lax.while_loop, so this also
    shows the derivative comes from the KKT conditions, not from the iterations."""
    logits = _logits((4, 30), seed=11)
    target = jnp.zeros(30).at[3].set(1.0)

    def loss(lam, x):
        q = sd.best_of_k(8, lam, 0.5, top_m=4).probs(x)
        return -jnp.sum(target * jnp.log(q + 1e-30))

    g = jax.jit(jax.grad(loss, argnums=(0, 1)))(jnp.asarray(0.5), logits)
    assert np.all(np.isfinite(np.asarray(g[1]))) and np.isfinite(float(g[0]))
    gv = jax.jit(jax.vmap(jax.grad(loss), in_axes=(None, 0)))(jnp.asarray(0.5), logits)
    assert gv.shape == (4,)
    assert abs(float(gv.sum()) - float(g[0])) <= 1e-10 * (1.0 + abs(float(g[0])))


def test_gradients_are_finite_with_masked_and_bad_rows(x64):
    """Masked tokens, a NaN row and a greedy row: no NaN leaks into shared parameters."""
    logits = _logits((3, 10), seed=12).at[0, 2].set(-jnp.inf).at[1, 0].set(jnp.nan)
    temps = jnp.array([1.0, 1.0, 0.0])

    def loss(lam):
        sol = sd.best_of_k(3, lam, 0.5, top_m=3, temperature=temps, support=sd.TopK(6)).solve(logits)
        return jnp.sum(sol.q**2)

    g = jax.jit(jax.grad(loss))(jnp.asarray(0.7))
    assert np.isfinite(float(g)) and float(g) != 0.0
