"""The path-star task (Bachmann & Nagarajan 2024, "The Pitfalls of Next-Token Prediction").

Claim under test: a transformer trained by next-token prediction with teacher forcing
fails on path-star graphs — it learns the "Clever Hans" shortcut (after the right first
step, each next node is the one the previous node points to, so every later token is easy
under teacher forcing) and is left at chance, ``1/degree``, on the first decision; no
decoding strategy rescues it, because the model's distribution at the first decision is
itself uninformed. Teacherless training (dummy inputs on the answer span) and reversed
targets (goal to source: every step is a lookup) are the paper's remedies. We add
multi-token prediction (Gloeckle et al. 2024).

Models (same graphs, same next-token architecture — a trunk of 2 blocks and one head block —
and the same training FLOPs): ``ntp`` (teacher-forced next-token), ``teacherless``,
``reversed`` (next-token on reversed paths), ``mtp2`` and ``mtp4`` (2 and 4 heads,
teacher-forced; a model with ``n`` heads runs ``2 + n`` blocks per token, so it gets
``3/(2 + n)`` of the steps). Decoders on each: greedy, beam search (4 beams), lookahead (depth 4, 4
candidates), temperature (τ = 1 and 0.5), top-p 0.9, Best-of-K (the paper's (β, λ) = (0.02,
0.2), 5 mirror steps, τ = 0.9): single-sample accuracy (8 samples for the sampling
decoders) and pass@8. Diagnostics (the paper's): the accuracy of the first decision (the
node after the source) against chance ``1/degree``; teacher-forced per-position accuracy
of the answer (the shortcut shows as ≈100 % after the first decision); the share of
greedy answers that are a path of the graph from the source to a leaf (an arm followed
correctly, maybe the wrong one). For the multi-token models, also the tokens committed per
forward by self-speculative decoding with their extra heads (greedy and temperature 1).

    python experiments/path_star.py --profile full --seed 0
    python experiments/path_star.py --profile full --seed 1
    python experiments/summarize.py path_star
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import jax
import numpy as np

import simplex_decode as sd
from simplex_decode import lab
from simplex_decode.lab import report
from simplex_decode.lab.speculative import speculative_generate

PROFILES = {
    "fast": dict(degree=2, path_len=4, num_nodes=20, steps=50, batch=32, n_train=5_000, n_test=16, d_model=32,
                 mtp=(2,), log_every=50, samplers=("BoK mirror (β=0.02, λ=0.2), τ=0.9",)),
    "full": dict(degree=2, path_len=5, num_nodes=50, steps=2000, batch=64, n_train=200_000, n_test=400, d_model=64,
                 mtp=(2, 4), log_every=250),
}
K = 8


def log(msg):
    print(f"[path_star {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


TRUNK = 2


def variants(prof):
    """name -> (task, heads n, teacherless, steps): equal training FLOPs (2 + n blocks per token)."""
    base = dict(degree=prof["degree"], path_len=prof["path_len"], num_nodes=prof["num_nodes"])
    fwd, rev = lab.PathStar(**base), lab.PathStar(**base, reverse=True)
    S = prof["steps"]
    out = {"ntp": (fwd, 1, False, S), "teacherless": (fwd, 1, True, S), "reversed": (rev, 1, False, S)}
    for n in prof["mtp"]:
        out[f"mtp{n}"] = (fwd, n, False, int(round(S * (TRUNK + 1) / (TRUNK + n))))
    return out


def sampling_decoders():
    return {
        "temperature 1.0": sd.temperature(1.0),
        "temperature 0.5": sd.temperature(0.5),
        "top-p 0.9": sd.top_p(0.9),
        "BoK mirror (β=0.02, λ=0.2), τ=0.9": sd.best_of_k(k=8, lam=0.2, beta=0.02, temperature=0.9, solver="mirror",
                                                          steps=5, step_size=1.0),
    }


def teacher_forced_accuracy(model, task, test):
    """Argmax accuracy of each answer position given the true prefix (or dummies)."""
    seqs = test.sequences
    inputs = seqs[:, :-1]
    if model.teacherless:
        inputs = np.where(np.arange(inputs.shape[1])[None] >= task.prompt_len, task.dummy_id, inputs)
    logits = lab.head_logits(model.config, model.params, inputs)[0]
    pred = np.asarray(logits.argmax(-1))[:, task.prompt_len - 1:]
    return (pred == seqs[:, task.prompt_len:]).mean(0)  # (answer_len,)


def first_decision_index(task):
    """Index, in the generated answer, of the node chosen at the source (forward: 1;
    reversed: the second-to-last node)."""
    return task.path_len - 2 if task.reverse else 1


def evaluate(name, task, model, test, seed, samplers=None):
    rows = {}
    key = jax.random.key(seed + 5)
    gt = lab.generate_tokens(model, task, test)
    right = task.answer_codes(gt) == test.codes
    rows["greedy"] = {"single": lab.bootstrap_ci(right, seed=seed)}
    for label, kw in (("beam 4", dict(method="beam", beam_width=4)),
                      ("lookahead d=4", dict(method="lookahead", depth=4, num_candidates=4))):
        codes = lab.search_codes(model, task, test, **kw)
        rows[label] = {"single": lab.bootstrap_ci(codes == test.codes, seed=seed)}
    for label, dec in sampling_decoders().items():
        if samplers is not None and label not in samplers:
            continue
        codes = lab.generate_codes(model, task, test, decoder=dec, key=key, num_samples=K)
        m = lab.sample_metrics(codes, test.codes)
        rows[label] = {"single": lab.bootstrap_ci(m.single, seed=seed), "pass8": lab.bootstrap_ci(m.pass_k, seed=seed),
                       "majority": lab.bootstrap_ci(m.majority, seed=seed)}
    # diagnostics
    i = first_decision_index(task)
    true_ans = test.answers
    first = gt[:, i] == true_ans[:, i]
    valid = task.follows_edges(test.prompts, gt)
    tf = teacher_forced_accuracy(model, task, test)
    diag = {"first_decision": lab.bootstrap_ci(first, seed=seed), "chance": 1.0 / task.degree,
            "valid_path": lab.bootstrap_ci(valid, seed=seed),
            "valid_but_wrong": lab.bootstrap_ci(valid & ~right, seed=seed),
            "teacher_forced_by_position": [float(x) for x in tf]}
    log(f"{name}: greedy {rows['greedy']['single']}, first decision {diag['first_decision']}, "
        f"valid path {diag['valid_path']}")
    return rows, diag


def speculative_stats(cfg, params, task, test, seed):
    """Tokens committed per forward by self-speculative decoding with the extra heads."""
    out = {}
    for label, dec in (("greedy", sd.greedy()), ("temperature 1.0", sd.temperature(1.0))):
        res = speculative_generate(cfg, params, test.prompts, decoder=dec, key=jax.random.key(seed + 9),
                                   max_new_tokens=task.answer_len, eos_id=task.eos_id, pad_id=task.pad_id)
        lengths, fw = np.asarray(res.lengths), np.asarray(res.forwards)
        out[label] = {"tokens_per_forward": lab.bootstrap_ci((lengths - 1) / np.maximum(fw, 1), seed=seed),
                      "accuracy": lab.bootstrap_ci(task.answer_codes(np.asarray(res.tokens)) == test.codes, seed=seed)}
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--profile", choices=sorted(PROFILES), default="fast")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--only", nargs="*", default=None, help="train only these variants")
    ap.add_argument("--from-results", action="store_true", help="only rebuild tables and plots from results.json")
    args = ap.parse_args(argv)
    prof = PROFILES[args.profile]
    out = args.out or Path(__file__).parent / "results" / "path_star" / f"seed{args.seed}"
    out.mkdir(parents=True, exist_ok=True)
    if args.from_results:
        results = report.load_json(out / "results.json")
        (out / "tables.md").write_text(tables(results))
        plot(results, out)
        return results
    clock = report.RunClock()
    results = {"experiment": "path_star", "profile": args.profile, "seed": args.seed, "settings": prof, "models": {}}
    for name, (task, heads, teacherless, steps) in variants(prof).items():
        if args.only and name not in args.only:
            continue
        test = task.test_set(prof["n_test"], seed=args.seed)
        data = task.train_set(prof["n_train"], seed=args.seed, exclude=test)
        cfg = lab.LabConfig(vocab_size=task.vocab_size, d_model=prof["d_model"], num_layers=TRUNK, num_heads=4,
                            d_ff=2 * prof["d_model"], mtp_heads=heads)
        clock_m = report.RunClock()
        res = lab.train(cfg, data, steps=steps, batch_size=prof["batch"], learning_rate=2e-3, warmup=200,
                        seed=args.seed, teacherless=teacherless, dummy_id=task.dummy_id, log_every=prof["log_every"],
                        desc=name)
        train = clock_m.info()
        model = lab.Trained.for_task(cfg, res.params, task, teacherless=teacherless)
        rows, diag = evaluate(name, task, model, test, args.seed, prof.get("samplers"))
        entry = {"task": task.name, "config": cfg.to_dict(), "params": lab.num_params(res.params), "steps": res.steps,
                 "train_seconds": train["wall_seconds"], "train_cpu_seconds": train["cpu_seconds"],
                 "final_loss_head0": res.log[-1]["loss_head0"], "train_log": res.log, "decoders": rows,
                 "diagnostics": diag}
        if heads > 1:
            entry["speculative"] = speculative_stats(cfg, res.params, task, test, args.seed)
        results["models"][name] = entry
    results["run"] = clock.info()
    report.save_json(out / "results.json", results)
    (out / "tables.md").write_text(tables(results))
    plot(results, out)
    log(f"wrote {out} in {results['run']['wall_seconds']} s")
    return results


def tables(results):
    models = results["models"]
    decs = list(dict.fromkeys(d for m in models.values() for d in m["decoders"]))
    s = [f"# Path-star, profile {results['profile']}, seed {results['seed']}\n\n",
         "### Accuracy (single sample; %, 95 % CI over graphs)\n\n"]
    rows = [{"decoder": d, **{m: models[m]["decoders"][d]["single"] for m in models}} for d in decs]
    s.append(report.markdown_table(rows, ["decoder"] + list(models)))
    s.append("\n### pass@8 of the sampling decoders (%)\n\n")
    rows = [{"decoder": d, **{m: models[m]["decoders"][d]["pass8"] for m in models}} for d in decs
            if "pass8" in next(iter(models.values()))["decoders"][d]]
    s.append(report.markdown_table(rows, ["decoder"] + list(models)))
    s.append("\n### Diagnostics (greedy; %)\n\n")
    rows = []
    for key, label in (("first_decision", "first decision correct"), ("valid_path", "answer is a source-to-leaf path"),
                       ("valid_but_wrong", "valid path, wrong arm")):
        rows.append({"diagnostic": label, **{m: models[m]["diagnostics"][key] for m in models}})
    rows.append({"diagnostic": "chance (1/degree)", **{m: f"{100 * models[m]['diagnostics']['chance']:.1f}" for m in models}})
    s.append(report.markdown_table(rows, ["diagnostic"] + list(models)))
    s.append("\n### Teacher-forced accuracy by answer position (%; position 0 = first answer token)\n\n")
    rows = []
    for m in models:
        tf = models[m]["diagnostics"]["teacher_forced_by_position"]
        rows.append({"model": m, **{f"pos {i}": f"{100 * v:.1f}" for i, v in enumerate(tf)}})
    s.append(report.markdown_table(rows, ["model"] + [f"pos {i}" for i in range(len(tf))]))
    spec = [(m, d, e) for m, v in models.items() for d, e in v.get("speculative", {}).items()]
    if spec:
        s.append("\n### Self-speculative decoding with the extra heads (tokens per forward, 95 % CI)\n\n")
        rows = [{"model": m, "decoder": d, "tokens / forward": _num(e["tokens_per_forward"]), "accuracy": e["accuracy"]}
                for m, d, e in spec]
        s.append(report.markdown_table(rows, ["model", "decoder", "tokens / forward", "accuracy"]))
    s.append("\n### Training (equal FLOPs: a model with n heads runs 2 + n blocks per token)\n\n")
    rows = [{"model": m, "task": v["task"], "params": v["params"], "steps": v["steps"],
             "final loss (head 0, per answer token)": v["final_loss_head0"], "train wall s": v["train_seconds"],
             "train CPU s": v["train_cpu_seconds"]} for m, v in models.items()]
    s.append(report.markdown_table(rows, ["model", "task", "params", "steps", "final loss (head 0, per answer token)",
                                          "train wall s", "train CPU s"]))
    return "".join(s)


def _num(e):
    e = report.as_estimate(e)
    return f"{e.mean:.2f} [{e.lo:.2f}, {e.hi:.2f}]"


def plot(results, out):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = results["models"]
    decs = list(dict.fromkeys(d for m in models.values() for d in m["decoders"]))
    fig, axes = plt.subplots(1, 2, figsize=(13, 4))
    ax = axes[0]
    width = 0.8 / len(models)
    for j, m in enumerate(models):
        e = [report.as_estimate(models[m]["decoders"][d]["single"]) for d in decs]
        mean = np.array([x.mean for x in e]) * 100
        err = np.array([[x.mean - x.lo, x.hi - x.mean] for x in e]).T * 100
        ax.bar(np.arange(len(decs)) + j * width, mean, width, yerr=err, capsize=2, label=m)
    chance = 100 * next(iter(models.values()))["diagnostics"]["chance"]
    ax.axhline(chance, color="k", linestyle=":", linewidth=1, label="chance 1/degree")
    ax.set_xticks(np.arange(len(decs)) + 0.4 - width / 2)
    ax.set_xticklabels(decs, rotation=30, ha="right", fontsize=7)
    ax.set_ylabel("accuracy (%)")
    ax.set_title("path-star: accuracy by model and decoder (95 % CI)", fontsize=10)
    ax.legend(fontsize=7)
    ax = axes[1]
    for m in models:
        tf = models[m]["diagnostics"]["teacher_forced_by_position"]
        ax.plot(range(len(tf)), 100 * np.array(tf), marker="o", label=m)
    ax.set_xlabel("answer position")
    ax.set_ylabel("teacher-forced accuracy (%)")
    ax.set_title("per-position accuracy given the true prefix", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "path_star.png", dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
