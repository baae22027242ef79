# %% [markdown]
# # Which decoder for which goal? Consistency of decoding on models small enough to solve exactly
#
# Trauger & Tewari, *On Next-Token Prediction in LLMs: How End Goals Determine the Consistency of Decoding
# Algorithms* (arXiv 2505.11183), ask: if next-token prediction were *exact* (the model's conditionals are
# the true ones), which decoding algorithm is optimal for which end goal? Their answer: random sampling is
# consistent for *imitating* the true distribution (creative generation); for *information retrieval* goals
# (sequence-level 0-1 loss, Hamming loss) no decoding algorithm they study is optimal for every distribution.
# Their experiments use random Markov chains whose transition rows are drawn from a Dirichlet(α).
#
# Here the "language model" is such a chain — `V` states, transition rows `P[s] ~ Dirichlet(α·1)`, a fixed
# start state, sequences of `T` tokens — small enough that all `V^T` sequences are enumerated, so every risk
# below is **computed exactly**, not estimated. The decoders are the library's: per-step decoders
# (`sd.temperature`, `sd.top_p`, `sd.best_of_k`) turn the chain into another chain whose sequence
# distribution `Q` is exact; deterministic ones (`sd.generate` with `sd.greedy()`, `sd.lookahead`,
# `sd.beam_search`) return one sequence per chain.
#
# **Goals** (each a loss; the optimal decoder for it is computed by enumeration):
#
# 1. **Sequence 0-1 loss** (retrieve the single right answer): risk `1 − E_{y∼decoder} P(y)`; the optimum
#    outputs the mode `argmax_y P(y)`.
# 2. **Hamming loss** (count wrong positions): risk `Σ_t P(Y_t ≠ ŷ_t)`; the optimum outputs the per-position
#    marginal modes `ŷ_t = argmax_v P(Y_t = v)`.
# 3. **Imitation** (creative generation: the outputs should be distributed as the truth): the loss is
#    `KL(P ‖ Q)` between the true sequence distribution and the decoder's (and total variation, which is
#    finite for deterministic decoders: `TV = 1 − P(ŷ)`); the optimum is `Q = P`.

# %%
import itertools
import os
import time

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
from IPython.display import Markdown, display
from nbutil import save

import simplex_decode as sd

FAST = os.environ.get("NOTEBOOK_PROFILE", "fast") == "fast"  # the fast setting CI executes; "full": the committed run
V, T = (3, 4) if FAST else (4, 6)
ALPHAS = [0.1, 1.0] if FAST else [0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0]
CHAINS = 8 if FAST else 200  # random chains per α
t_start = time.time()
print(f"V = {V} states, T = {T} tokens ({V ** T} sequences), {CHAINS} chains per α, α ∈ {ALPHAS}")

# %% [markdown]
# ## The chains, the exact sequence distribution and the optimal decoders
#
# `logP[c]` is chain `c`'s log transition matrix. To run the library's sequence-level strategies on all
# chains in one call, chain `c`'s state `s` is token `c·V + s` of one block-diagonal "bigram model" whose
# off-block logits are −1e9 (probability 0 in float32): `step(params, tokens, cache, positions) =
# (params[tokens], cache)`.

# %%
SEQS = np.array(list(itertools.product(range(V), repeat=T)))  # (N, T)
PREV = np.concatenate([np.zeros((len(SEQS), 1), int), SEQS[:, :-1]], axis=1)  # start state 0


def chains(alpha, n, seed):
    """n chains: rows ~ Dirichlet(α), floored at 1e-6 and renormalised (so that float32 logits hold
    every probability: the floored chain *is* the true model here)."""
    rng = np.random.default_rng(seed)
    P = np.maximum(rng.dirichlet(np.full(V, alpha), size=(n, V)), 1e-6)
    return np.log(P / P.sum(-1, keepdims=True))  # (n, V, V)


def seq_logprob(logM):
    """log Q(y) of every sequence under per-chain transition matrices logM (n, V, V): (n, N)."""
    return logM[:, PREV, SEQS].sum(-1)


def block_table(logP):
    n = logP.shape[0]
    table = np.full((n * V, n * V), -1e9, np.float32)
    for c in range(n):
        table[c * V:(c + 1) * V, c * V:(c + 1) * V] = logP[c]
    return jnp.asarray(table)


step = lambda params, tokens, cache, positions: (params[tokens], cache)  # noqa: E731


def deterministic(logP):
    """Sequences (n, T) chosen by the library's deterministic decoders on every chain."""
    n = logP.shape[0]
    table, prompts = block_table(logP), [[c * V] for c in range(n)]
    offset = (np.arange(n) * V)[:, None]
    out = {"greedy": np.asarray(sd.generate(step, table, prompts, decoder=sd.greedy(), key=jax.random.key(0),
                                            max_new_tokens=T).tokens)}
    for d in (1,) if FAST else (1, 2):
        out[f"lookahead d={d}"] = np.asarray(sd.lookahead(step, table, prompts, depth=d, max_new_tokens=T,
                                                          num_candidates=V).tokens)
    for w in (2,) if FAST else (2, 4):
        out[f"beam W={w}"] = np.asarray(sd.beam_search(step, table, prompts, beam_width=w, max_new_tokens=T,
                                                       length_penalty=0.0).tokens[:, 0])
    return {k: v - offset for k, v in out.items()}


SAMPLERS = {
    "sampling τ=1": sd.temperature(1.0),
    "sampling τ=0.7": sd.temperature(0.7),
    "sampling τ=0.3": sd.temperature(0.3),
    "top-p 0.9": sd.top_p(0.9),
    "BoK k=4 (exact)": sd.best_of_k(4, lam=0.5, beta=0.5, top_m=2),
    "BoK k=4 (mirror J=5)": sd.best_of_k(4, lam=0.5, beta=0.5, top_m=2, solver="mirror", steps=5),
}
if FAST:  # fewer compilations
    SAMPLERS = {k: SAMPLERS[k] for k in ("sampling τ=1", "BoK k=4 (exact)")}

# %% [markdown]
# The three risks of every decoder on every chain. For a sampler, the expected losses are sums over all
# sequences weighted by `Q(y)`; for a deterministic decoder, `Q` is a point mass.

# %%
def risks(logP):
    n = logP.shape[0]
    lp = seq_logprob(logP)  # (n, N) true log P(y)
    p = np.exp(lp)
    marg = np.stack([np.stack([(p * (SEQS[:, t] == v)).sum(-1) for v in range(V)], -1) for t in range(T)], 1)  # (n, T, V)
    opt = {"0-1": 1 - p.max(-1), "Hamming": (1 - marg.max(-1)).sum(-1)}
    res = {}
    idx = {tuple(s): i for i, s in enumerate(SEQS)}
    for name, seqs in deterministic(logP).items():
        py = p[np.arange(n), [idx[tuple(s)] for s in seqs]]
        ham = (1 - marg[np.arange(n)[:, None], np.arange(T)[None], seqs]).sum(-1)
        res[name] = {"0-1": 1 - py, "Hamming": ham, "TV": 1 - py, "KL": np.full(n, np.inf)}
    for name, dec in SAMPLERS.items():
        logQ = np.log(np.maximum(np.asarray(jax.jit(dec.probs)(jnp.asarray(logP, jnp.float32)), np.float64), 1e-300))
        lq = seq_logprob(logQ)
        q = np.exp(lq)
        q_marg = np.stack([np.stack([(q * (SEQS[:, t] == v)).sum(-1) for v in range(V)], -1) for t in range(T)], 1)
        with np.errstate(invalid="ignore"):  # q = 0 where p > 0: KL = +inf
            kl = np.where(p > 0, p * (lp - np.where(q > 0, lq, -np.inf)), 0.0).sum(-1)
        res[name] = {"0-1": 1 - (q * p).sum(-1), "Hamming": (1 - (q_marg * marg).sum(-1)).sum(-1),
                     "TV": 0.5 * np.abs(p - q).sum(-1), "KL": kl}
    return res, opt


t0 = time.time()
ALL = np.concatenate([chains(a, CHAINS, seed=int(1000 * a)) for a in ALPHAS])  # one batch: one compilation per decoder
res, opt = risks(ALL)
part = lambda d, i: {k: v[i * CHAINS:(i + 1) * CHAINS] for k, v in d.items()}  # noqa: E731
RESULTS = {a: ({n: part(r, i) for n, r in res.items()}, part(opt, i)) for i, a in enumerate(ALPHAS)}
print(f"exact risks of {len(res)} decoders on {len(ALL)} chains in {time.time() - t0:.1f} s")

# %% [markdown]
# ## Goal 1 and 2: information retrieval (0-1 and Hamming loss)
#
# Left: the fraction of chains on which each decoder is *optimal* (its risk equals the optimum's up to 1e-9).
# Right: the mean excess risk (regret) over the optimum, with a 95 % interval over chains (normal
# approximation), as the Dirichlet concentration α goes from peaky (small) to flat (large).

# %%
NAMES = list(RESULTS[ALPHAS[0]][0])
plt.rcParams["axes.prop_cycle"] = plt.cycler(color=plt.cm.tab20.colors[::2] + plt.cm.tab20.colors[1::2])
ci = lambda x: 1.96 * np.std(x) / np.sqrt(len(x))  # noqa: E731
fig, axes = plt.subplots(2, 2, figsize=(13, 9))
for row, goal in enumerate(["0-1", "Hamming"]):
    for name in NAMES:
        frac = [np.mean(RESULTS[a][0][name][goal] <= RESULTS[a][1][goal] + 1e-9) for a in ALPHAS]
        reg = [RESULTS[a][0][name][goal] - RESULTS[a][1][goal] for a in ALPHAS]
        style = "-o" if name in ("greedy",) or name.startswith(("lookahead", "beam")) else "--s"
        axes[row, 0].plot(ALPHAS, frac, style, label=name, ms=4)
        axes[row, 1].errorbar(ALPHAS, [r.mean() for r in reg], yerr=[ci(r) for r in reg], fmt=style, label=name,
                              ms=4, capsize=2)
    axes[row, 0].set(xscale="log", xlabel="Dirichlet α (small: peaky transitions)", ylabel="fraction of chains optimal",
                     title=f"{goal} loss: how often each decoder is optimal", ylim=(-0.03, 1.03))
    axes[row, 1].set(xscale="log", xlabel="Dirichlet α", ylabel="excess risk over the optimum",
                     title=f"{goal} loss: regret (mean ± 95 % CI over chains)")
axes[0, 0].legend(fontsize=8, ncol=2)
fig.tight_layout()
save(fig, "which_decoder_retrieval", FAST)
plt.show()

# %%
rows = ["| decoder | " + " | ".join(f"0-1 optimal, α={a}" for a in ALPHAS) + " | Hamming optimal, α=1 |",
        "|---" * (len(ALPHAS) + 2) + "|"]
a1 = 1.0
for name in NAMES:
    f01 = [f"{100 * np.mean(RESULTS[a][0][name]['0-1'] <= RESULTS[a][1]['0-1'] + 1e-9):.0f} %" for a in ALPHAS]
    fh = f"{100 * np.mean(RESULTS[a1][0][name]['Hamming'] <= RESULTS[a1][1]['Hamming'] + 1e-9):.0f} %"
    rows.append(f"| {name} | " + " | ".join(f01) + f" | {fh} |")
display(Markdown("\n".join(rows)))

# %% [markdown]
# ## Goal 3: imitation (creative generation)
#
# `KL(P ‖ Q)` of each sampler's exact sequence distribution to the truth, and total variation for all
# decoders (a deterministic decoder's `KL` is infinite: it gives probability 0 to every other sequence).

# %%
fig, axes = plt.subplots(1, 2, figsize=(13, 4.5))
for name in NAMES:
    tv = [RESULTS[a][0][name]["TV"].mean() for a in ALPHAS]
    style = "-o" if name in ("greedy",) or name.startswith(("lookahead", "beam")) else "--s"
    axes[0].plot(ALPHAS, tv, style, label=name, ms=4)
    if name in SAMPLERS:
        kl = [RESULTS[a][0][name]["KL"].mean() for a in ALPHAS]
        axes[1].plot(ALPHAS, np.maximum(kl, 1e-9), style, label=name, ms=4)
axes[0].set(xscale="log", xlabel="Dirichlet α", ylabel="mean TV(P, Q)", title="Imitation: total variation to the truth")
axes[1].set(xscale="log", yscale="log", xlabel="Dirichlet α", ylabel="mean KL(P ‖ Q) (nats, floored at 1e-9)",
            title="Imitation: KL of the samplers' sequence distribution")
axes[0].legend(fontsize=8, ncol=2)
fig.tight_layout()
save(fig, "which_decoder_imitation", FAST)
plt.show()

kl1 = max(RESULTS[a][0]["sampling τ=1"]["KL"].max() for a in ALPHAS)
print(f"largest KL(P‖Q) of plain sampling (τ = 1) over all chains: {kl1:.2e} nats")

# %% [markdown]
# ## What this shows

# %%
def frac(goal, name, a):
    return np.mean(RESULTS[a][0][name][goal] <= RESULTS[a][1][goal] + 1e-9)


lo, hi = ALPHAS[0], ALPHAS[-1]
DET = [n for n in NAMES if n not in SAMPLERS]
best_det = max(DET, key=lambda n: frac("0-1", n, hi))
overall = {n: np.mean([frac("0-1", n, a) for a in ALPHAS]) for n in NAMES}  # equal chains per α
best_all = max(overall, key=overall.get)
# samplers that are ever optimal for the 0-1 loss: on those chains, is q (numerically) a point mass?
samp_opt = {n: [np.mean(RESULTS[a][0][n]["0-1"] <= RESULTS[a][1]["0-1"] + 1e-9) for a in ALPHAS] for n in SAMPLERS}
samp_max = max(max(v) for v in samp_opt.values())
samp_best = max(samp_opt, key=lambda n: max(samp_opt[n]))
risk = lambda n, a: RESULTS[a][0][n]["0-1"].mean()  # noqa: E731
lines = [
    f"* **Imitation**: plain sampling (τ = 1) is the only decoder with `KL(P‖Q) = 0` (largest over all chains "
    f"{kl1:.1e} nats, float32 round-off); τ < 1, top-p and Best-of-K all move away from `P`, and every deterministic decoder "
    f"has TV = 1 − P(ŷ) (mean {RESULTS[hi][0]['greedy']['TV'].mean():.2f} for greedy at α = {hi}). The paper's "
    "consistency result for random sampling holds exactly here.",
    f"* **0-1 loss**: greedy is optimal on {100 * frac('0-1', 'greedy', lo):.0f} % of the chains at α = {lo} and "
    f"{100 * frac('0-1', 'greedy', hi):.0f} % at α = {hi}; the best deterministic rule at α = {hi} is {best_det} "
    f"({100 * frac('0-1', best_det, hi):.0f} %). No decoder here is optimal on every chain, as the paper states: "
    f"over all {len(ALL)} chains the best is {best_all}, optimal on {100 * overall[best_all]:.1f} %. Deterministic "
    f"rules fail more often as the chain gets flatter (larger α). A sampler's 0-1 risk averages over the "
    f"sequences it draws, so it is optimal only where it is nearly a point mass: at most "
    f"{100 * samp_max:.0f} % of the chains ({samp_best}, at α = {ALPHAS[int(np.argmax(samp_opt[samp_best]))]}); at α = {ALPHAS[len(ALPHAS) // 2]} "
    f"plain sampling's mean 0-1 risk is {risk('sampling τ=1', ALPHAS[len(ALPHAS) // 2]):.3f} against greedy's "
    f"{risk('greedy', ALPHAS[len(ALPHAS) // 2]):.3f}.",
    f"* **Hamming loss**: greedy is optimal on {100 * frac('Hamming', 'greedy', hi):.0f} % of the chains at α = {hi} "
    f"and {DET[-1]} on {100 * frac('Hamming', DET[-1], hi):.0f} %"
    + (f": the sequence mode (what beam search approaches) is not the sequence of marginal modes, so the better "
       f"0-1 decoder ({DET[-1]}) is optimal for the Hamming loss less often than greedy (its mean regret is in the "
       f"figure)." if frac('Hamming', DET[-1], hi) < frac('Hamming', 'greedy', hi)
       else ".")
    + f" The best decoder for it over all chains is optimal on "
    f"{100 * max(np.mean([frac('Hamming', n, a) for a in ALPHAS]) for n in NAMES):.0f} % of them: none of these "
    "decoders targets the marginal modes.",
    "* **Best-of-K** per-step coverage flattens the next-token distribution toward the top tokens: it is neither "
    "an imitation decoder (KL > 0) nor a retrieval one; its goal (coverage of good alternatives within K draws) "
    "is a third one, which this notebook does not score.",
    f"* Setting: V = {V}, T = {T}, {CHAINS} chains per α; every number above is computed in this notebook "
    f"({time.time() - t_start:.0f} s).",
]
display(Markdown("\n".join(lines)))
