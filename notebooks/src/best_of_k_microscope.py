# %% [markdown]
# # Best-of-K under the microscope
#
# Best-of-K (Ji, Tutunov, Zimmer & Bou-Ammar, arXiv 2602.18292) chooses
#
# $$q^* = \arg\max_{q\in\Delta} \langle q, s\rangle - \lambda\,\mathrm{KL}(q\|p) + \lambda\beta \sum_v w_v\big(1-(1-q_v)^K\big)$$
#
# and the paper solves it approximately with `J = 5` steps of mirror ascent from `q₀ = p` with step `η`.
# The objective is concave and separable, so `simplex_decode` also computes its exact optimum
# (`sd.best_of_k(..., solver="exact")`, the default). This notebook measures, on real SmolLM2-135M-Instruct
# next-token distributions: how far the paper's truncated iteration is from the optimum (as a function of
# `J`, `η` and `λ`); the identity that makes most of its effect a temperature change; the frontier of
# coverage vs distance to the model for Best-of-K and the usual decoders; and what `β`, `K` and the weights do.

# %%
import os
import time

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
from IPython.display import Markdown, display
from nbutil import load_lm, save

import simplex_decode as sd
from simplex_decode import analysis

FAST = os.environ.get("NOTEBOOK_PROFILE", "fast") == "fast"  # the fast setting CI executes; "full": the committed run
PROMPTS = [
    "The best way to learn a new language is",
    "Once upon a time, in a small village,",
    "The three primary colours are",
    "def fibonacci(n):",
    "My favourite food is",
    "The most important invention of the 20th century was",
    "Question: What is 7 times 8? Answer:",
    "In the morning I usually",
]
if FAST:
    PROMPTS = PROMPTS[:2]
JS = [1, 5] if FAST else [1, 2, 3, 5, 8, 13, 20, 35, 60, 100]
ETAS = [1.0] if FAST else [0.5, 1.0, 1.5]
SETTINGS = [(0.1, 0.01), (0.5, 0.05)] if FAST else [(0.1, 0.01), (0.2, 0.02), (0.5, 0.05)]  # the paper's (λ, β)
K, TOP_M = 16, 8  # the follow-up code's K and top-m weights
t_start = time.time()
lm = load_lm(FAST)
LOGITS = jnp.stack([lm.logits(p) for p in PROMPTS])  # (P, V)
print(f"{lm.name}: {len(PROMPTS)} prompts, V = {LOGITS.shape[-1]}")

# %% [markdown]
# ## The exact optimum vs `J` steps of mirror ascent
#
# One batch: every prompt × `(λ, β)` setting × step `η` is a row (`lam`, `beta` and `step_size` are per-row
# leaves, so one compilation per `J`). Left: `‖q_J − q*‖₁`; right: the objective gap `f(q*) − f(q_J) ≥ 0`
# (`simplex_decode.analysis.objective_gap`), mean over prompts.

# %%
grid = [(lam, beta, eta) for lam, beta in SETTINGS for eta in ETAS]
R = len(grid)
rows_logits = jnp.repeat(LOGITS[None], R, axis=0).reshape(R * len(PROMPTS), -1)
lam = jnp.repeat(jnp.array([g[0] for g in grid]), len(PROMPTS))
beta = jnp.repeat(jnp.array([g[1] for g in grid]), len(PROMPTS))
eta = jnp.repeat(jnp.array([g[2] for g in grid]), len(PROMPTS))
exact = sd.best_of_k(K, lam, beta, top_m=TOP_M)
q_star = jax.jit(exact.probs)(rows_logits)
cert = jax.jit(sd.Decoder(exact.objective, solver=sd.Exact(certificate=True)).solve)(rows_logits).stats
print(f"exact solver: max KKT residual {float(cert['kkt_residual'].max()):.1e}, max duality gap "
      f"{float(cert['duality_gap'].max()):.1e}")
l1, gap = {}, {}
for J in JS:
    mirror = sd.best_of_k(K, lam, beta, top_m=TOP_M, solver="mirror", steps=J, step_size=eta)
    qJ = jax.jit(mirror.probs)(rows_logits)
    l1[J] = np.asarray(jnp.abs(qJ - q_star).sum(-1)).reshape(R, len(PROMPTS)).mean(-1)
    gap[J] = np.asarray(analysis.objective_gap(exact.objective, rows_logits, qJ)).reshape(R, len(PROMPTS)).mean(-1)
fig, axes = plt.subplots(1, 2, figsize=(14, 4.8))
for r, (lm_, b_, e_) in enumerate(grid):
    style = ["-", "--", ":"][ETAS.index(e_)]
    color = f"C{[s[0] for s in SETTINGS].index(lm_)}"
    axes[0].plot(JS, [l1[J][r] for J in JS], style, color=color, marker="o", ms=3, label=f"λ={lm_}, β={b_}, η={e_}")
    axes[1].plot(JS, [max(gap[J][r], 1e-12) for J in JS], style, color=color, marker="o", ms=3)
axes[0].axvline(5, color="grey", lw=0.8)
axes[1].axvline(5, color="grey", lw=0.8)
axes[0].set(xscale="log", yscale="log", xlabel="mirror steps J (grey: the paper's 5)", ylabel="‖q_J − q*‖₁",
            title="Distance of the paper's iterate to the exact optimum")
axes[1].set(xscale="log", yscale="log", xlabel="mirror steps J", ylabel="f(q*) − f(q_J) (floored at 1e-12)",
            title="Objective gap of the iterate")
axes[0].legend(fontsize=7)
fig.tight_layout()
save(fig, "bok_mirror_gap", FAST)
plt.show()
J5 = 5 if 5 in l1 else JS[0]
display(Markdown("At the paper's J = 5: " + "; ".join(
    f"λ={g[0]}, β={g[1]}, η={g[2]}: ‖q₅ − q*‖₁ = {l1[J5][r]:.3f}, gap {gap[J5][r]:.2e}" for r, g in enumerate(grid))))

# %% [markdown]
# ## The effective-temperature identity
#
# With `β = 0` the coverage term vanishes and `J` mirror steps from `p` give exactly `q_J ∝ p·exp(c_J·s)`,
# `c_J = (1 − (1 − ηλ)^J)/λ` — with `s = logits` and `p = softmax(logits)`, the tempered softmax at
# `τ_J = 1/(1 + c_J)`. Left: `τ_J` from the formula (lines) and the effective temperature of the library's
# `q_J` (`analysis.effective_temperature`, dots). Right: `‖q_J − softmax(logits/τ_J)‖₁`: the iterate *is* the
# tempered softmax. The exact optimum (`J → ∞`) is `τ = λ/(1 + λ)`.

# %%
fig, axes = plt.subplots(1, 2, figsize=(14, 4.8))
lams = np.array([s_[0] for s_ in SETTINGS])
lam_rows = jnp.repeat(jnp.asarray(lams, jnp.float32), len(PROMPTS))  # one batch: λ × prompt, one compilation per J
lg_rows = jnp.tile(LOGITS, (len(lams), 1))
taus = np.array([[1 / (1 + (1 - (1 - lam_) ** J) / lam_) for J in JS] for lam_ in lams])  # (λ, J)
measured, dist = np.zeros_like(taus), np.zeros_like(taus)
for j, J in enumerate(JS):
    qJ = jax.jit(sd.best_of_k(K, lam_rows, 0.0, top_m=TOP_M, solver="mirror", steps=J, step_size=1.0).probs)(lg_rows)
    tau_rows = jnp.repeat(jnp.asarray(taus[:, j], jnp.float32), len(PROMPTS))
    measured[:, j] = np.asarray(analysis.effective_temperature(qJ, lg_rows)).reshape(len(lams), -1).mean(-1)
    d = jnp.abs(qJ - jax.jit(sd.temperature(tau_rows).probs)(lg_rows)).sum(-1)
    dist[:, j] = np.asarray(d).reshape(len(lams), -1).max(-1)
for i, lam_ in enumerate(lams):
    axes[0].plot(JS, taus[i], "-", color=f"C{i}", label=f"λ = {lam_}: τ_J = 1/(1 + c_J)")
    axes[0].plot(JS, measured[i], "o", color=f"C{i}", ms=4)
    axes[0].axhline(lam_ / (1 + lam_), color=f"C{i}", lw=0.6, ls=":")
    axes[1].plot(JS, np.maximum(dist[i], 1e-9), "-o", color=f"C{i}", ms=3, label=f"λ = {lam_}")
axes[0].set(xscale="log", xlabel="mirror steps J (η = 1)", ylabel="temperature",
            title="BoK with β = 0 after J mirror steps = softmax at τ_J (dots: measured)")
axes[1].set(xscale="log", yscale="log", xlabel="mirror steps J", ylabel="max over prompts of ‖q_J − softmax(ℓ/τ_J)‖₁",
            title="The identity holds to float32 round-off")
axes[0].legend(fontsize=8)
axes[1].legend(fontsize=8)
fig.tight_layout()
save(fig, "bok_temperature_identity", FAST)
plt.show()
worst = dist.max()
lam0 = SETTINGS[0][0]
c5 = (1 - (1 - lam0) ** 5) / lam0
print(f"largest ‖q_J − softmax(ℓ/τ_J)‖₁ over all J, λ, prompts: {worst:.1e}; at the paper's λ = {lam0}, η = 1, J = 5: "
      f"c_5 = {c5:.2f}, τ_5 = {1 / (1 + c5):.3f}")

# %% [markdown]
# ## The frontier: coverage@K against distance to the model
#
# For each decoder family swept over its parameter: `KL(q ‖ p)` to the model (x) and the probability that
# `K = 16` draws from `q` contain all of the model's top-8 tokens (`analysis.coverage_probability`, y), mean
# over prompts. Best-of-K is swept over `β` at `λ = 0.5` (exact optimum and the paper's 5 mirror steps),
# temperature over `τ`, top-p over `p`, min-p over its threshold. A curve above and to the left of another
# covers more for the same departure from the model.

# %%
n_sweep = 5 if FAST else 14
SWEEPS = {
    "temperature τ": (np.geomspace(0.3, 3.0, n_sweep), lambda v: sd.temperature(v)),
    "top-p p": (np.linspace(0.3, 1.0, n_sweep), lambda v: sd.top_p(v)),
    "min-p p": (np.geomspace(0.005, 0.5, n_sweep), lambda v: sd.min_p(v)),
    "BoK exact, λ = 0.5, β": (np.geomspace(0.01, 30, n_sweep), lambda v: sd.best_of_k(K, 0.5, v, top_m=TOP_M)),
    "BoK mirror J = 5, λ = 0.5, β": (np.geomspace(0.01, 30, n_sweep),
                                      lambda v: sd.best_of_k(K, 0.5, v, top_m=TOP_M, solver="mirror", steps=5)),
}
if FAST:
    SWEEPS = {k: SWEEPS[k] for k in ("temperature τ", "BoK exact, λ = 0.5, β")}
P = len(PROMPTS)
frontier = {}
for name, (values, make) in SWEEPS.items():
    v_rows = jnp.repeat(jnp.asarray(values, jnp.float32), P)  # one batch: parameter × prompt
    lg = jnp.tile(LOGITS, (len(values), 1))
    q = jax.jit(make(v_rows).probs)(lg)
    kl = np.asarray(analysis.kl_to_model(q, lg)).reshape(len(values), P).mean(-1)
    cov = np.asarray(analysis.coverage_probability(q, lg, m=TOP_M, k=K)).reshape(len(values), P).mean(-1)
    frontier[name] = (values, kl, cov)
fig, ax = plt.subplots(figsize=(8, 5.5))
for name, (values, kl, cov) in frontier.items():
    ax.plot(np.maximum(kl, 1e-4), np.maximum(cov, 1e-8), "-o", ms=3, label=name)
    ax.annotate(f"{values[0]:.3g}", (max(kl[0], 1e-4), max(cov[0], 1e-8)), fontsize=7)
    ax.annotate(f"{values[-1]:.3g}", (max(kl[-1], 1e-4), max(cov[-1], 1e-8)), fontsize=7)
ax.set(xscale="log", yscale="log", xlabel="KL(q ‖ p) to the model (nats, floored at 1e-4)",
       ylabel=f"P(all top-{TOP_M} tokens in {K} draws) (floored at 1e-8)", title=f"Coverage@{K} vs distance to the model ({lm.name})")
ax.legend(fontsize=8)
fig.tight_layout()
save(fig, "bok_frontier", FAST)
plt.show()

# %% [markdown]
# ## What β, λ, K and the weights change
#
# One prompt; the probabilities the exact Best-of-K optimum gives the model's 20 most likely tokens as one
# knob moves (the others at `K = 16`, `λ = 0.5`, `β = 0.5`, `top_m = 8`).

# %%
lg0 = LOGITS[0]
order = np.argsort(np.asarray(lg0))[::-1][:20]
KNOBS = {
    "β (coverage weight λβ)": [(f"β={b}", sd.best_of_k(K, 0.5, b, top_m=TOP_M)) for b in ([0.0, 2.0] if FAST else [0.0, 0.1, 0.5, 2.0, 10.0])],
    "λ (KL weight)": [(f"λ={v}", sd.best_of_k(K, v, 0.5, top_m=TOP_M)) for v in ([0.5] if FAST else [0.1, 0.5, 2.0])],
    "K (draws)": [(f"K={k}", sd.best_of_k(k, 0.5, 0.5, top_m=TOP_M)) for k in ([16] if FAST else [2, 4, 16, 64])],
    "weights": [("top_m=8", sd.best_of_k(K, 0.5, 0.5, top_m=8))] + ([] if FAST else [
        ("top_m=2", sd.best_of_k(K, 0.5, 0.5, top_m=2)), ("model p", sd.best_of_k(K, 0.5, 0.5, weights="model"))]),
}
fig, axes = plt.subplots(1, 4, figsize=(20, 4.5), sharey=True)
p0 = np.asarray(jax.nn.softmax(lg0))[order]
for ax, (knob, decs) in zip(axes, KNOBS.items(), strict=True):
    ax.plot(np.arange(20), p0, "k--", lw=1, label="model p")
    for label, dec in decs:
        ax.plot(np.arange(20), np.asarray(jax.jit(dec.probs)(lg0))[order], "-o", ms=3, label=label)
    ax.set(yscale="log", xlabel="model rank of the token", title=f"Best-of-K: varying {knob}")
    ax.legend(fontsize=7)
axes[0].set_ylabel("q*(token)")
fig.suptitle(f"Prompt: {PROMPTS[0]!r}")
fig.tight_layout()
plt.show()

# %% [markdown]
# ## What this shows

# %%
def at(name, i):
    v, kl, cov = frontier[name]
    return v[i], kl[i], cov[i]


r1 = next(r for r, g in enumerate(grid) if g[2] == 1.0)  # the smallest λ at η = 1
lines = [
    f"* At the paper's J = 5, ‖q₅ − q*‖₁ = {l1[J5][r1]:.3f} (objective gap {gap[J5][r1]:.1e}) at λ = {grid[r1][0]}, "
    f"β = {grid[r1][1]}, η = 1, and {l1[J5][0]:.3f} at η = {grid[0][2]} (mean over prompts); the iterate converges as J "
    f"grows (‖q_J − q*‖₁ = {l1[JS[-1]][r1]:.1e} at J = {JS[-1]}, η = 1). The paper does not state η.",
    f"* With β = 0 the iterate is the tempered softmax at τ_J = 1/(1 + c_J) to {worst:.0e} in L1; at λ = {lam0}, "
    f"η = 1, J = 5 that is τ = {1 / (1 + c5):.3f}, while the exact optimum's is λ/(1 + λ) = {lam0 / (1 + lam0):.3f}: "
    "without the coverage term, the paper's 5 steps are a change of temperature and nothing else.",
]
if "BoK exact, λ = 0.5, β" in frontier and "temperature τ" in frontier:
    tv, tk, tc = frontier["temperature τ"]
    bv, bk, bc = frontier["BoK exact, λ = 0.5, β"]

    def temp_cov(k):
        """The best coverage temperature reaches at KL k (interpolated on the cold τ < 1 and hot τ > 1
        branches, each only within its own KL range); None when k is outside both."""
        best = None
        for side in (tv < 1.0, tv >= 1.0):
            o = np.argsort(tk[side])
            ks, cs_ = tk[side][o], tc[side][o]
            if len(ks) > 1 and ks[0] <= k <= ks[-1]:
                c = float(np.interp(k, ks, cs_))
                best = c if best is None else max(best, c)
        return best

    pairs = [(b, temp_cov(k)) for b, k in zip(bc, bk, strict=True)]
    pairs = [(b, t) for b, t in pairs if t is not None]
    if pairs:
        better = np.mean([b > t for b, t in pairs])
        lines.append(f"* Frontier: at equal KL to the model, exact Best-of-K (λ = 0.5) covers more than the better "
                     f"temperature branch at {100 * better:.0f} % of its {len(pairs)} β values within temperature's KL "
                     f"range (coverage@{K} of the top-{TOP_M}: BoK reaches {bc.max():.3f} at KL {bk[np.argmax(bc)]:.2f}, "
                     f"temperature at most {tc.max():.3f}). The paper's 5-step version at the same β reaches "
                     f"{frontier.get('BoK mirror J = 5, λ = 0.5, β', (0, 0, np.array([np.nan])))[2].max():.3f}.")
lines.append(f"* Run time: {time.time() - t_start:.0f} s ({lm.name}).")
display(Markdown("\n".join(lines)))
