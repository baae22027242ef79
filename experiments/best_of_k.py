"""Best-of-K (arXiv 2602.18292) with the ablations the paper omits.

Question: does the Best-of-K decoder's gain come from its coverage term, or is it the
drop of temperature that its truncated mirror ascent performs anyway? With the coverage
weight at zero, J mirror steps from p give ``q_J ∝ p·exp(c_J·s)``,
``c_J = (1 − (1 − ηλ)^J)/λ``; with ``s = logits/τ`` and ``p = softmax(logits)`` (this
library's convention) that is temperature sampling at ``τ_eff = τ/(τ + c_J)``; the exact
optimum with β = 0 is temperature ``λτ/(1 + λτ)``.

Decoders, at every τ ∈ {0.1, 0.25, 0.5, 0.7, 0.9, 1.2}: temperature; top-k 50; BoK with the
paper's (β, λ) ∈ {(0.01, 0.1), (0.02, 0.2), (0.05, 0.5)} as 5-step mirror ascent (η = 1)
and as the exact optimum (coverage K = 8 draws, w = 1 on the 8 most probable tokens — the
paper states neither); the same with β = 0; and temperature sampling at each β = 0
setting's effective temperature. Metrics: single-sample accuracy, majority vote over
K = 8, pass@8, and the frontier of pass@8 ("coverage@8", the share of problems some
sample solves) against the mean per-token KL(q ‖ p) to the model.

Models:

* a small transformer trained with the lab on 3-digit addition (plain digit order) and
  stopped at mid held-out accuracy (so there is room to improve); answers are generated
  with :func:`simplex_decode.generate` (4 digits + EOS), 8 samples per problem;
* SmolLM2-135M-Instruct on its one-token-answer question sets
  (:mod:`simplex_decode.lab.questions`): the decoder acts at the answer token, so
  single-sample accuracy is ``q(answer)`` and pass@8 ``1 − (1 − q(answer))^8`` exactly.

Profiles: ``--profile fast`` (a pipeline check in well under a minute: a few training
steps, two temperatures, and a tiny random Llama with SmolLM2's tokenizer in place of
SmolLM2; its numbers mean nothing) and ``--profile full`` (the reproduction). Results go
to ``--out`` (default ``experiments/results/best_of_k/seed<seed>``): ``results.json``,
``tables.md`` and PNG plots with 95 % bootstrap intervals over problems.

    python experiments/best_of_k.py --profile full --seed 0
    python experiments/best_of_k.py --profile full --seed 1
    python experiments/summarize.py best_of_k
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import simplex_decode as sd
from simplex_decode import lab
from simplex_decode.analysis import coverage_probability, effective_temperature, kl_to_model
from simplex_decode.lab import questions, report

TAUS = (0.1, 0.25, 0.5, 0.7, 0.9, 1.2)
PAPER = ((0.01, 0.1), (0.02, 0.2), (0.05, 0.5))  # (β, λ)
J, ETA, COVER_K, TOP_M, K = 5, 1.0, 8, 8, 8

PROFILES = {
    "fast": dict(taus=(0.9,), train_steps=50, mid_target=0.5, n_test=16, n_val=32, d_model=32, layers=1,
                 smol="random", smol_sets=("add",), smol_max=8, replicates=100, log_every=50),
    "full": dict(taus=TAUS, train_steps=3000, mid_target=0.5, n_test=400, n_val=400, d_model=96, layers=2,
                 smol="smollm2", smol_sets=("add", "sub", "mul", "capital", "opposite"), smol_max=None, replicates=2000,
                 log_every=25),
}


def c_j(lam, steps=J, eta=ETA):
    """Mirror ascent with β = 0: ``log(q_J / p) = c_J · s + const``."""
    return (1.0 - (1.0 - eta * lam) ** steps) / lam


def tau_eff_mirror(tau, lam):
    return tau / (tau + c_j(lam))


def tau_eff_exact(tau, lam):
    return lam * tau / (1.0 + lam * tau)


def decoders(tau):
    """(name, family, decoder) for every setting at temperature τ."""
    out = [("temperature", "temperature", sd.temperature(tau)), ("top-k 50", "top-k 50", sd.top_k(50, temperature=tau))]
    for beta, lam in PAPER:
        tag = f"(β={beta}, λ={lam})"
        bok = lambda b, solver, lam=lam: sd.best_of_k(k=COVER_K, lam=lam, beta=b, top_m=TOP_M, temperature=tau,  # noqa: E731
                                            solver=solver, steps=J, step_size=ETA)
        out += [
            (f"BoK mirror {tag}", "BoK mirror", bok(beta, "mirror")),
            (f"BoK exact {tag}", "BoK exact", bok(beta, "exact")),
            (f"BoK mirror β=0 (λ={lam})", "BoK mirror β=0", bok(0.0, "mirror")),
            (f"temperature τ_eff mirror (λ={lam})", "τ_eff mirror", sd.temperature(tau_eff_mirror(tau, lam))),
            (f"BoK exact β=0 (λ={lam})", "BoK exact β=0", bok(0.0, "exact")),
            (f"temperature τ_eff exact (λ={lam})", "τ_eff exact", sd.temperature(tau_eff_exact(tau, lam))),
        ]
    return out


def log(msg):
    print(f"[best_of_k {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------
# the small model
# --------------------------------------------------------------------------------------


def small_model(prof, seed):
    task = lab.Addition(digits=3, reverse=False)
    test = task.test_set(prof["n_test"], seed=seed)
    val = task.test_set(prof["n_test"] + prof["n_val"], seed=seed + 1000)
    val = val.take(~np.isin(val.keys, test.keys)).first(prof["n_val"])
    held = lab.Examples(*(np.concatenate([a, b]) for a, b in zip(test, val, strict=True)))
    data = task.train_set(200_000, seed=seed, exclude=held)
    cfg = lab.LabConfig(vocab_size=task.vocab_size, d_model=prof["d_model"], num_layers=prof["layers"], num_heads=4,
                        d_ff=2 * prof["d_model"])

    def val_acc(params):
        codes = lab.generate_codes(lab.Trained.for_task(cfg, params, task), task, val)
        return {"accuracy": float(np.mean(codes == val.codes))}

    res = lab.train(cfg, data, steps=prof["train_steps"], batch_size=128, learning_rate=3e-3, warmup=100,
                    seed=seed, log_every=prof["log_every"], eval_fn=val_acc,
                    stop=lambda e: e["accuracy"] >= prof["mid_target"], desc="bok-small")
    model = lab.Trained.for_task(cfg, res.params, task)
    greedy = lab.generate_codes(model, task, test) == test.codes
    info = {"task": task.name, "config": cfg.to_dict(), "params": lab.num_params(res.params), "steps": res.steps,
            "train_log": res.log, "n_test": len(test), "greedy": lab.bootstrap_ci(greedy, seed=seed)}
    log(f"small model: {res.steps} steps, val acc {res.log[-1]['accuracy']:.3f}, test greedy {info['greedy']}")
    return task, test, model, info


def eval_small(task, test, model, taus, seed):
    rows = []
    key = jax.random.key(seed + 17)  # the same key for every decoder: common random numbers
    for tau in taus:
        for name, family, dec in decoders(tau):
            codes, kl = lab.generate_codes(model, task, test, decoder=dec, key=key, num_samples=K, diagnostics=True)
            m = lab.sample_metrics(codes, test.codes)
            rows.append(dict(model="small", tau=tau, name=name, family=family,
                             single=lab.bootstrap_ci(m.single, seed=seed), majority=lab.bootstrap_ci(m.majority, seed=seed),
                             pass8=lab.bootstrap_ci(m.pass_k, seed=seed), kl=float(np.mean(kl)),
                             per_problem={"single": m.single, "majority": m.majority, "pass8": m.pass_k}))
        log(f"small model: τ={tau} done")
    return rows


# --------------------------------------------------------------------------------------
# SmolLM2 (first-token answers)
# --------------------------------------------------------------------------------------


def smol_model(kind):
    from simplex_decode.models import (
        GGUFTokenizer,
        LlamaConfig,
        default_model_path,
        init_random_params,
        load_gguf,
    )

    if kind == "smollm2":
        config, params, tok = load_gguf()
        return config, params, tok, "SmolLM2-135M-Instruct"
    tok = GGUFTokenizer.from_gguf(default_model_path())
    config = LlamaConfig(vocab_size=tok.vocab_size, hidden_size=16, intermediate_size=32, num_layers=1, num_heads=2,
                         num_kv_heads=1)
    return config, init_random_params(config, jax.random.key(0)), tok, "random tiny Llama (pipeline check only)"


def answer_logits(config, params, prompts, batch=16):
    """Logits at each prompt's last token ``(n, V)`` (right-padded batches, no cache)."""
    from simplex_decode.models import forward_sequence

    fwd = jax.jit(lambda p, t, pos: forward_sequence(config, p, t, pos))
    out = []
    P = -(-max(len(p) for p in prompts) // 32) * 32  # one padded length per 32: few compilations
    for s in range(0, len(prompts), batch):
        chunk = prompts[s:s + batch]
        toks = np.zeros((batch, P), np.int32)
        pos = np.full((batch, P), -1, np.int32)
        for i, p in enumerate(chunk):
            toks[i, :len(p)] = p
            pos[i, :len(p)] = np.arange(len(p))
        lg = fwd(params, jnp.asarray(toks), jnp.asarray(pos))
        last = np.array([len(p) - 1 for p in chunk])
        out.append(np.asarray(lg[np.arange(len(chunk)), last]))
    return np.concatenate(out)


@jax.jit
def _step_stats(decoder, logits):
    """q, KL(q ‖ p) and P(the model's top-4 tokens all appear in K draws from q): one
    compilation per decoder structure (its parameters are traced)."""
    q = decoder.probs(logits)
    return q, kl_to_model(q, logits), coverage_probability(q, logits, m=4, k=K)


def eval_smol(prof, taus, seed):
    config, params, tok, label = smol_model(prof["smol"])
    rows, info = [], {"model": label, "sets": {}}
    for set_name in prof["smol_sets"]:
        qs = questions.build(set_name, tok)
        n = len(qs) if prof["smol_max"] is None else min(prof["smol_max"], len(qs))
        logits = answer_logits(config, params, qs.prompts[:n])
        answers = qs.answers[:n]
        greedy = (np.argmax(logits, -1) == answers).astype(float)
        info["sets"][set_name] = {"n": n, "dropped": len(qs.dropped), "chance": questions.chance(answers),
                                  "greedy": lab.bootstrap_ci(greedy, seed=seed)}
        lj = jnp.asarray(logits)
        for tau in taus:
            for name, family, dec in decoders(tau):
                q, kl, cov = (np.asarray(x) for x in _step_stats(dec, lj))
                m = lab.first_token_metrics(q, answers, k=K, replicates=prof["replicates"], seed=seed)
                row = dict(model=f"smol:{set_name}", tau=tau, name=name, family=family,
                           single=lab.bootstrap_ci(m.single, seed=seed), majority=lab.bootstrap_ci(m.majority, seed=seed),
                           pass8=lab.bootstrap_ci(m.pass_k, seed=seed), kl=float(kl.mean()),
                           top4_coverage=float(cov.mean()),
                           per_problem={"single": m.single, "majority": m.majority, "pass8": m.pass_k})
                if family == "BoK mirror β=0":
                    # the c_J identity, measured: the effective temperature of q against the logits
                    lam = float(name.split("λ=")[1].rstrip(")"))
                    te = np.asarray(effective_temperature(jnp.asarray(q), lj))
                    row["tau_eff_measured"] = float(np.median(te))
                    row["tau_eff_predicted"] = tau_eff_mirror(tau, lam)
                rows.append(row)
        log(f"SmolLM2 set {set_name}: n={n}, greedy {info['sets'][set_name]['greedy']}")
    return rows, info


# --------------------------------------------------------------------------------------
# tables and plots
# --------------------------------------------------------------------------------------

METRICS = (("single", "single-sample accuracy"), ("majority", "majority vote of 8"), ("pass8", "pass@8"))


def tables(rows, taus):
    text = []
    for model in dict.fromkeys(r["model"] for r in rows):
        mrows = [r for r in rows if r["model"] == model]
        for key, label in METRICS:
            table = []
            for name in dict.fromkeys(r["name"] for r in mrows):
                entry = {"decoder": name}
                for r in mrows:
                    if r["name"] == name:
                        entry[f"τ={r['tau']}"] = r[key]
                table.append(entry)
            text.append(f"### {model}: {label} (%, 95 % CI over problems)\n\n")
            text.append(report.markdown_table(table, ["decoder"] + [f"τ={t}" for t in taus]))
            text.append("\n")
        # the ablation that could refute the coverage claim: BoK(β) − BoK(β = 0), paired
        diff = []
        for beta, lam in PAPER:
            for solver in ("mirror", "exact"):
                entry = {"comparison": f"BoK {solver} (β={beta}, λ={lam}) − β=0"}
                for tau in taus:
                    a = next(r for r in mrows if r["tau"] == tau and r["name"] == f"BoK {solver} (β={beta}, λ={lam})")
                    b = next(r for r in mrows if r["tau"] == tau and r["name"] == f"BoK {solver} β=0 (λ={lam})")
                    entry[f"τ={tau}"] = lab.paired_difference(a["per_problem"]["majority"], b["per_problem"]["majority"])
                diff.append(entry)
        text.append(f"### {model}: majority-vote difference, BoK − its β = 0 ablation (points, paired 95 % CI)\n\n")
        text.append(report.markdown_table(diff, ["comparison"] + [f"τ={t}" for t in taus]))
        text.append("\n")
    return "".join(text)


def plots(rows, taus, out):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = list(dict.fromkeys(r["model"] for r in rows))
    show = ["temperature", "top-k 50"] + [f"BoK mirror (β={b}, λ={lam})" for b, lam in PAPER] + \
        [f"BoK exact (β={b}, λ={lam})" for b, lam in PAPER] + [f"BoK mirror β=0 (λ={lam})" for _, lam in PAPER]
    styles = {f"BoK mirror β=0 (λ={lam})": {"linestyle": ":"} for _, lam in PAPER}
    styles.update({f"BoK exact (β={b}, λ={lam})": {"linestyle": "--"} for b, lam in PAPER})
    fig, axes = plt.subplots(len(models), 3, figsize=(15, 3.6 * len(models)), squeeze=False)
    for i, model in enumerate(models):
        for j, (key, label) in enumerate(METRICS):
            series = {}
            for name in show:
                series[name] = [next(r[key] for r in rows if r["model"] == model and r["tau"] == t and r["name"] == name)
                                for t in taus]
            report.plot_ci_lines(axes[i, j], list(taus), series, xlabel="τ", ylabel=f"{label} (%)",
                                 title=f"{model}: {label}", styles=styles)
    axes[0, 0].legend(fontsize=6, loc="lower left")
    fig.tight_layout()
    fig.savefig(out / "accuracy_vs_tau.png", dpi=110)
    plt.close(fig)

    fig, axes = plt.subplots(1, len(models), figsize=(4.2 * len(models), 3.6), squeeze=False)
    fams = ["temperature", "top-k 50", "BoK mirror", "BoK exact", "BoK mirror β=0"]
    for i, model in enumerate(models):
        ax = axes[0, i]
        for fam in fams:
            pts = sorted((r["kl"], r["pass8"]["mean"] if isinstance(r["pass8"], dict) else r["pass8"].mean)
                          for r in rows if r["model"] == model and r["family"] == fam)
            if pts:
                x, y = zip(*pts, strict=True)
                ax.plot(x, 100 * np.array(y), marker="o", ms=3, linestyle="none" if fam.startswith("BoK") else "-",
                        label=fam)
        ax.set_xscale("symlog", linthresh=0.01)
        ax.set_xlabel("mean KL(q ‖ p) per token (nats)")
        ax.set_ylabel("pass@8 = coverage@8 (%)")
        ax.set_title(model, fontsize=10)
        ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "frontier_coverage_vs_kl.png", dpi=110)
    plt.close(fig)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--profile", choices=sorted(PROFILES), default="fast")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--skip-smollm", action="store_true", help="only the small model")
    ap.add_argument("--from-results", action="store_true", help="only rebuild tables and plots from results.json")
    args = ap.parse_args(argv)
    prof = PROFILES[args.profile]
    out = args.out or Path(__file__).parent / "results" / "best_of_k" / f"seed{args.seed}"
    out.mkdir(parents=True, exist_ok=True)
    if args.from_results:
        results = report.load_json(out / "results.json")
        (out / "tables.md").write_text(f"# Best-of-K, profile {results['profile']}, seed {results['seed']}\n\n"
                                       + tables(results["rows"], results["taus"]))
        plots(results["rows"], results["taus"], out)
        return results
    clock = report.RunClock()
    taus = prof["taus"]
    task, test, model, small_info = small_model(prof, args.seed)
    rows = eval_small(task, test, model, taus, args.seed)
    smol_info = None
    if not args.skip_smollm:
        srows, smol_info = eval_smol(prof, taus, args.seed)
        rows += srows
    results = {"experiment": "best_of_k", "profile": args.profile, "seed": args.seed, "taus": taus,
               "paper_settings": PAPER, "mirror_steps": J, "step_size": ETA, "coverage_k": COVER_K, "top_m": TOP_M,
               "samples": K, "small_model": small_info, "smollm": smol_info, "rows": rows}
    results["run"] = clock.info()
    report.save_json(out / "results.json", results)
    (out / "tables.md").write_text(f"# Best-of-K, profile {args.profile}, seed {args.seed}\n\n" + tables(rows, taus))
    plots(rows, taus, out)
    log(f"wrote {out} in {results['run']['wall_seconds']} s")
    return results


if __name__ == "__main__":
    main()
