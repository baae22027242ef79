"""Every closed form equals the cvxpy optimum of its Objective (L1 <= 1e-4)."""

import numpy as np
import pytest

import simplex_decode as sd
from simplex_decode import reference

pytest.importorskip("cvxpy")

DECODERS = {
    "temperature": lambda t, V: sd.temperature(t),
    "top_k": lambda t, V: sd.top_k(min(7, V - 1), temperature=t),
    "top_p": lambda t, V: sd.top_p(0.8, temperature=t),
    "top_p_model": lambda t, V: sd.top_p(0.7, temperature=t, from_model=True),
    "min_p": lambda t, V: sd.min_p(0.05, temperature=t),
    "sparsemax": lambda t, V: sd.sparsemax(temperature=t),
    "entmax15": lambda t, V: sd.entmax(1.5, temperature=t),
    "entmax13": lambda t, V: sd.entmax(1.3, temperature=t),
    "entmax2": lambda t, V: sd.entmax(2.0, temperature=t),
    "kl_anchored": lambda t, V: sd.kl_anchored(0.5, temperature=t),
}


def _logits(V, rows, seed):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((rows, V)) * 2.0).astype(np.float32)


@pytest.mark.parametrize("name", sorted(DECODERS))
@pytest.mark.parametrize("V,rows", [(3, 4), (50, 3), (1200, 1)])
@pytest.mark.parametrize("t", [0.5, 1.0, 2.0])
def test_closed_form_equals_cvxpy(name, V, rows, t):
    if V == 1200 and t != 1.0:
        pytest.skip("large V checked at one temperature to keep CI short")
    dec = DECODERS[name](t, V)
    logits = _logits(V, rows, seed=V * 7 + int(t * 10))
    q = np.asarray(dec.probs(logits), np.float64)
    ref = reference.solve(dec.objective, logits)
    l1 = np.abs(q - ref).sum(-1)
    assert l1.max() <= 1e-4, (name, V, t, l1)


def test_mixture_of_entropy_and_kl_to_given_reference():
    """Entropy + KL to a user reference: the geometric-mixture closed form."""
    rng = np.random.default_rng(3)
    logits = _logits(40, 3, seed=5)
    ref_p = rng.dirichlet(np.ones(40), size=3).astype(np.float32)
    obj = sd.Objective(terms=(sd.Entropy(0.3), sd.KL(0.7, reference=ref_p)), support=sd.TopK(25))
    q = np.asarray(sd.Decoder(obj).probs(logits), np.float64)
    assert np.abs(q - reference.solve(obj, logits)).sum(-1).max() <= 1e-4


def test_weights_scale_the_regulariser():
    """<q,s> + c·H(q) is softmax(s/c): weight c acts like a temperature."""
    logits = _logits(30, 2, seed=11)
    obj = sd.Objective(terms=sd.Entropy(0.4))
    q = np.asarray(sd.Decoder(obj).probs(logits), np.float64)
    assert np.abs(q - reference.solve(obj, logits)).sum(-1).max() <= 1e-4
    assert np.abs(q - np.asarray(sd.temperature(0.4).probs(logits))).max() <= 1e-6


def test_chained_support_and_bias_and_mask():
    V = 60
    logits = _logits(V, 3, seed=2)
    bias = np.zeros(V, np.float32)
    bias[[1, 5, 9]] = 2.5
    allowed = sd.Mask.from_ids(V, deny=[0, 3, 4])
    obj = sd.Objective(
        terms=sd.Entropy(),
        support=(allowed, sd.TopK(20), sd.TopP(0.9), sd.MinP(0.02)),
        transforms=(sd.LogitBias(bias), sd.Temperature(0.8)),
    )
    q = np.asarray(sd.Decoder(obj).probs(logits), np.float64)
    assert np.all(q[:, [0, 3, 4]] == 0)
    assert np.abs(q - reference.solve(obj, logits)).sum(-1).max() <= 1e-4
