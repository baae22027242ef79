"""Declare a decoder, verify it against cvxpy, sample from it, write it down.

Run: python examples/quickstart.py          (needs `pip install -e '.[reference]'` for cvxpy)
"""

import jax
import jax.numpy as jnp
import numpy as np

import simplex_decode as sd
from simplex_decode import reference

# A decoder none of the usual samplers ship, declared in one line: maximise
#   <q, logits/0.8> + 0.5·H(q) − 0.25·‖q‖²   on the top-20 tokens.
objective = sd.Objective(
    terms=(sd.Entropy(0.5), sd.SquaredL2(0.5)),
    support=sd.TopK(20),
    transforms=sd.Temperature(0.8),
)
dec = sd.Decoder(objective)  # solver="auto": no closed form -> the exact separable solver
print("solver:", type(dec.solver.select(objective)).__name__)

logits = jax.random.normal(jax.random.key(0), (4, 1000)) * 3.0
q = dec.probs(logits)
print("q on the simplex:", np.allclose(np.asarray(q).sum(-1), 1.0, atol=1e-5), "support sizes:", (q > 0).sum(-1))

# Verify against the cvxpy reference (the same Objective compiled to a convex program).
q_ref = reference.solve(objective, np.asarray(logits))
print("L1 distance to the cvxpy optimum per row:", np.abs(np.asarray(q) - q_ref).sum(-1))

# Presets are Decoders built the same way: top-p is entropy + a nucleus support rule.
top_p = sd.top_p(0.9, temperature=0.7)
print("top_p's objective:", top_p.objective)

# Sample: one key, K = 5 draws per row, jitted.
ids = jax.jit(lambda k, x: dec.sample(k, x, num_samples=5))(jax.random.key(1), logits)
print("samples:", ids)
assert bool(jnp.all(jnp.take_along_axis(q, ids, -1) > 0))

# A decoder is data: an exact, readable config (JSON / YAML / the CLI's SPEC string).
print("as a SPEC:", sd.config.to_spec(dec))
assert sd.config.to_config(sd.from_config(dec.to_config())) == dec.to_config()
