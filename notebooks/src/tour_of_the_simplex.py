# %% [markdown]
# # A tour of the simplex
#
# Every decoder in `simplex_decode` first chooses a distribution
#
# $$q^*(s) = \arg\max_{q \in \Delta(V),\ \mathrm{supp}\,q \subseteq S(s)} \langle q, s\rangle + \sum_j c_j \varphi_j(q)$$
#
# and then draws from it. With a vocabulary of **three tokens** the simplex Δ(3) is a triangle, so `q*` can be
# drawn: each corner is one token, the centre is the uniform distribution. This notebook moves the scores `s`
# along a closed path and follows `q*(s)` of every decoder family — where its support switches, where its mass
# goes — then draws the level sets of a few objectives, and finally applies the same decoders to one real
# next-token distribution of SmolLM2-135M-Instruct.

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
from simplex_decode import analysis, reference

FAST = os.environ.get("NOTEBOOK_PROFILE", "fast") == "fast"  # the fast setting CI executes; "full": the committed run
N_PATH = 60 if FAST else 720  # points on the score path
GRID = 25 if FAST else 90  # resolution of the level-set grid
t_start = time.time()

# %% [markdown]
# ## The decoders and the path
#
# The scores rotate: `s(θ) = a·(cos θ, cos(θ − 2π/3), cos(θ + 2π/3))`, `a = 2.5`, so the leading token changes
# twice per third of a turn. Every decoder is a preset (an `Objective` plus a solver); `kl_anchored` is anchored
# to a fixed reference `p = (0.6, 0.3, 0.1)`, Best-of-K to the model's own `softmax(s)`.

# %%
theta = np.linspace(0, 2 * np.pi, N_PATH, endpoint=False)
A = 2.5
S = jnp.asarray(A * np.stack([np.cos(theta), np.cos(theta - 2 * np.pi / 3), np.cos(theta + 2 * np.pi / 3)], -1),
                jnp.float32)
P_REF = jnp.array([0.6, 0.3, 0.1])
DECODERS = {
    "softmax (τ = 1)": sd.temperature(1.0),
    "temperature τ = 0.4": sd.temperature(0.4),
    "top-k, k = 2": sd.top_k(2),
    "top-p, p = 0.8": sd.top_p(0.8),
    "min-p, p = 0.3": sd.min_p(0.3),
    "sparsemax": sd.sparsemax(),
    "1.5-entmax": sd.entmax(1.5),
    "KL-anchored, λ = 1, p = (.6,.3,.1)": sd.kl_anchored(1.0, reference=P_REF),
    "capped, c = 0.5": sd.capped(0.5),
    "Best-of-K, K = 4, λ = 0.5, β = 1": sd.best_of_k(4, lam=0.5, beta=1.0, top_m=2),
    "Best-of-K, mirror J = 5": sd.best_of_k(4, lam=0.5, beta=1.0, top_m=2, solver="mirror", steps=5),
    "greedy": sd.greedy(),
}
if FAST:  # fewer compilations: the pipeline check
    DECODERS = {k: DECODERS[k] for k in ("softmax (τ = 1)", "top-p, p = 0.8", "sparsemax", "Best-of-K, K = 4, λ = 0.5, β = 1")}
Q = {name: np.asarray(jax.jit(dec.probs)(S)) for name, dec in DECODERS.items()}
SUPPORT = {name: np.asarray(analysis.support_size(q)) for name, q in Q.items()}
# a support switch: the set of tokens with q > 0 differs from the previous point's
SWITCH = {name: np.flatnonzero(np.any((q > 0) != np.roll(q > 0, 1, axis=0), axis=-1)) for name, q in Q.items()}
print({name: f"{q.sum(-1).min():.6f}–{q.sum(-1).max():.6f}" for name, q in list(Q.items())[:3]}, "(row sums)")


def ternary(q):
    q = np.asarray(q)
    return q[..., 1] + 0.5 * q[..., 2], np.sqrt(3) / 2 * q[..., 2]


def triangle(ax):
    ax.plot([0, 1, 0.5, 0], [0, 0, np.sqrt(3) / 2, 0], "k-", lw=0.8)
    for (x, y), t in zip([(0, 0), (1, 0), (0.5, np.sqrt(3) / 2)], ["token 0", "token 1", "token 2"], strict=True):
        ax.annotate(t, (x, y), textcoords="offset points", xytext=(0, -12 if y == 0 else 5), ha="center", fontsize=8)
    ax.set_aspect("equal")
    ax.set_xlim(-0.08, 1.08)
    ax.set_ylim(-0.12, 0.95)
    ax.set_xlabel("barycentric x = q₁ + q₂/2")
    ax.set_ylabel("y = (√3/2)·q₂")


# %% [markdown]
# ## Where the mass goes as the scores move
#
# Each panel is one decoder's `q*(s(θ))`, coloured by θ; black dots mark the points where its support
# set changes (a token enters or leaves). Softmax and the KL-anchored decoder stay in the interior (every token
# keeps mass); top-k, top-p, min-p, sparsemax and entmax run along the edges and jump between them; the cap
# keeps `q` inside the hexagon `q_v ≤ 0.5`; Best-of-K pulls the model's top-2 tokens toward equal mass.

# %%
rows = -(-len(Q) // 4)
fig, axes = plt.subplots(rows, 4, figsize=(16, 4 * rows), squeeze=False)
for ax, (name, q) in zip(axes.flat, Q.items(), strict=True):
    triangle(ax)
    x, y = ternary(q)
    sc = ax.scatter(x, y, c=theta, cmap="twilight", s=8)
    switch = SWITCH[name]
    ax.plot(x[switch], y[switch], "k.", ms=6)
    ax.set_title(f"{name}\nsupport sizes {sorted(set(SUPPORT[name].tolist()))}, {len(switch)} switches", fontsize=9)
fig.colorbar(sc, ax=axes, shrink=0.5, label="path angle θ (rad)")
fig.suptitle("q*(s(θ)) on the simplex of three tokens, for every decoder family")
save(fig, "tour_paths", FAST)
plt.show()

# %% [markdown]
# Support size and entropy along the path: the switches are where the curves step.

# %%
fig, axes = plt.subplots(1, 2, figsize=(14, 4.5))
for name, q in Q.items():
    axes[0].plot(theta, SUPPORT[name] + 0.02 * list(Q).index(name), label=name, lw=1)
    axes[1].plot(theta, np.asarray(analysis.entropy(q)), label=name, lw=1)
axes[0].set(xlabel="path angle θ (rad)", ylabel="support size (offset slightly per decoder)",
            title="Support size of q* along the path")
axes[1].set(xlabel="path angle θ (rad)", ylabel="entropy H(q*) (nats)", title="Entropy of q* along the path")
axes[1].legend(fontsize=7, loc="upper right", ncol=2)
fig.tight_layout()
plt.show()

# %% [markdown]
# ## Level sets of the objective
#
# At one score vector `s = (1.0, 0.4, −0.5)`, the objective `f(q) = <q, s> + Σ c_j φ_j(q)` over the whole
# triangle (`simplex_decode.reference.objective_value` evaluates it), with the decoder's `q*` (star) and the
# cvxpy optimum (`simplex_decode.reference.solve`, cross) on top. Sparsemax's optimum sits on an edge: the
# level sets of −½‖q‖² are circles, and the best point of the triangle can be on its boundary.

# %%
s0 = jnp.array([1.0, 0.4, -0.5])
g = np.array([(i, j, GRID - i - j) for i in range(GRID + 1) for j in range(GRID + 1 - i)], float) / GRID
LEVEL = {"softmax: H(q)": sd.temperature(1.0), "sparsemax: −½‖q‖²": sd.sparsemax(),
         "1.5-entmax: Tsallis": sd.entmax(1.5), "Best-of-K, K = 4, λ = 0.5, β = 1": sd.best_of_k(4, lam=0.5, beta=1.0, top_m=2)}
if FAST:
    LEVEL = {k: LEVEL[k] for k in ("softmax: H(q)", "Best-of-K, K = 4, λ = 0.5, β = 1")}
fig, axes = plt.subplots(1, len(LEVEL), figsize=(4.5 * len(LEVEL), 4.6))
gaps = {}
for ax, (name, dec) in zip(axes, LEVEL.items(), strict=True):
    obj = dec.objective
    f = reference.objective_value(obj, jnp.broadcast_to(s0, g.shape), jnp.asarray(g, jnp.float32))
    triangle(ax)
    x, y = ternary(g)
    cs = ax.tricontourf(x, y, f, levels=20, cmap="viridis")
    fig.colorbar(cs, ax=ax, shrink=0.7, label="f(q)")
    q_star = np.asarray(dec.probs(s0))
    q_ref = reference.solve(obj, np.asarray(s0, np.float64))
    gaps[name] = float(np.abs(q_star - q_ref).sum())
    ax.plot(*ternary(q_star), "r*", ms=14, label="q* (library)")
    ax.plot(*ternary(q_ref), "wx", ms=9, mew=2, label="cvxpy optimum")
    ax.set_title(f"{name}\n‖q* − q_cvxpy‖₁ = {gaps[name]:.1e}", fontsize=9)
axes[0].legend(fontsize=7, loc="upper left")
fig.suptitle("Level sets of the objective at s = (1.0, 0.4, −0.5)")
fig.tight_layout()
save(fig, "tour_level_sets", FAST)
plt.show()

# %% [markdown]
# ## The same decoders on a real next-token distribution
#
# The next-token logits of SmolLM2-135M-Instruct after an open-ended prompt (in the fast setting, of a tiny
# random model: a pipeline check). Sorted probabilities, support sizes and entropies of each decoder's `q*`.

# %%
lm = load_lm(FAST)
prompt = "My favourite thing to do on a rainy afternoon is"
logits = jax.jit(lambda x: x)(lm.logits(prompt))
REAL = {
    "model p (τ = 1)": sd.temperature(1.0),
    "temperature 0.7": sd.temperature(0.7),
    "top-k 40": sd.top_k(40),
    "top-p 0.9": sd.top_p(0.9),
    "min-p 0.05": sd.min_p(0.05),
    "sparsemax": sd.sparsemax(),
    "1.5-entmax": sd.entmax(1.5),
    "KL-anchored λ = 2": sd.kl_anchored(2.0),
    "capped c = 0.05": sd.capped(0.05),
    "Best-of-K 16, λ=0.5, β=0.05": sd.best_of_k(16, lam=0.5, beta=0.05),
}
if FAST:
    REAL = {k: REAL[k] for k in ("model p (τ = 1)", "top-p 0.9", "Best-of-K 16, λ=0.5, β=0.05")}
QR = {name: np.asarray(jax.jit(dec.probs)(logits)) for name, dec in REAL.items()}
fig, axes = plt.subplots(1, 3, figsize=(18, 4.8), gridspec_kw={"width_ratios": [2, 1, 1]})
for name, q in QR.items():
    qs = np.sort(q)[::-1][:300]
    axes[0].plot(np.arange(1, len(qs) + 1), np.where(qs > 0, qs, np.nan), label=name, lw=1.2)
axes[0].set(xscale="log", yscale="log", xlabel="rank", ylabel="q (sorted, zeros not drawn)",
            title=f"{lm.name}: sorted q*, first 300 ranks")
axes[0].legend(fontsize=7)
names = list(QR)
sizes = [int(analysis.support_size(q)) for q in QR.values()]
ents = [max(float(analysis.entropy(q)), 0.0) for q in QR.values()]  # (a one-hot q's round-off −0.0 shown as 0)
axes[1].barh(names, sizes)
axes[1].set(xscale="log", xlabel="support size (tokens with q > 0)", title="Support size")
axes[2].barh(names, ents)
axes[2].set(xlabel="entropy H(q*) (nats)", title="Entropy")
axes[1].invert_yaxis()
axes[2].invert_yaxis()
fig.suptitle(f"Prompt: {prompt!r}")
fig.tight_layout()
save(fig, "tour_real_model", FAST)
plt.show()
top = np.argsort(np.asarray(QR["model p (τ = 1)"]))[::-1][:5]
display(Markdown("| decoder | support | entropy (nats) | KL(q‖p) (nats) | top-5 tokens' mass |\n|---|---|---|---|---|\n"
                 + "\n".join(f"| {n} | {s} | {e:.3f} | {float(analysis.kl_to_model(QR[n], logits)):.3f} | "
                             f"{QR[n][top].sum():.3f} |" for n, s, e in zip(names, sizes, ents, strict=True))))
print("top-5 tokens of the model:", [lm.decode([int(i)]) for i in top])

# %% [markdown]
# ## What this shows

# %%
n_switch = {n: len(SWITCH[n]) for n in Q}
never = [n for n in Q if n_switch[n] == 0]
display(Markdown("\n".join([
    f"* Decoders whose support never switches on the path (every token keeps mass): "
    f"{', '.join(never)}. Switches of the others: "
    + ", ".join(f"{n}: {k}" for n, k in n_switch.items() if k) + ".",
    f"* The library's `q*` matches the cvxpy optimum at s = (1.0, 0.4, −0.5) to "
    f"{max(gaps.values()):.1e} in L1 for the four objectives drawn.",
    f"* On the real distribution the support ranges from {min(sizes)} to {max(sizes)} tokens and the entropy from "
    f"{min(ents):.2f} to {max(ents):.2f} nats ({lm.name}).",
    f"* Run time: {time.time() - t_start:.0f} s.",
])))
