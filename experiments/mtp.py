"""Multi-token prediction (Gloeckle et al. 2024) against next-token prediction, and
self-speculative decoding with the extra heads.

Claims under test: (1) training ``n`` heads (head ``i`` predicts ``i + 1`` tokens ahead from
a shared trunk) helps on algorithmic tasks; (2) the extra heads are a free drafter for
self-speculative decoding, several tokens per forward.

Equal compute: every model has the same next-token path (a trunk of 2 blocks and one
head block) and is trained for the same number of FLOPs — a model with ``n`` heads runs
``2 + n`` blocks per token, so it gets ``3/(2 + n)`` of the next-token model's steps
(same batch). Task: 3-digit addition in plain digit order (reversed order is solved by
next-token prediction alone, see ``experiments/addition.py``). The same comparison on
path-star G(2, 5, 50) is part of ``experiments/path_star.py`` (its ``mtp2`` and ``mtp4``
models are trained by this rule), so it is not trained twice. Accuracy is greedy exact
match on held-out problems (head 0), 95 % bootstrap intervals, and the paired difference
to the next-token model.

Self-speculative decoding (:func:`simplex_decode.lab.speculative.speculative_generate`) on
each multi-token model, greedy and temperature 1: tokens committed per forward (between 1
and ``n``), the acceptance rate of the drafts, and the wall-clock time against
:func:`simplex_decode.generate` with the same decoder on the same model, both jitted and
warm, timed alternately in one process (median of 5), at batch 1 and batch 256. The
speculative output has exactly the decoder's distribution (``tests/test_lab_speculative.py``).

    python experiments/mtp.py --profile full --seed 0
    python experiments/mtp.py --profile full --seed 1
    python experiments/summarize.py mtp
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
    "fast": dict(steps=50, n_test=16, d_model=32, heads=(1, 2), n_train=5_000, timing_batches=(1,), repeats=1,
                 log_every=50, spec_decoders=("temperature 1.0",)),
    "full": dict(steps=2000, n_test=500, d_model=96, heads=(1, 2, 4), n_train=200_000, timing_batches=(1, 256),
                 repeats=5, log_every=500),
}
TRUNK = 2


def log(msg):
    print(f"[mtp {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def tasks(prof):
    return {"addition3": lab.Addition(digits=3)}


def timed(fn, repeats):
    jax.block_until_ready(fn())  # compile + warm
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - t)
    return times


def speculation(cfg, params, task, test, prof, seed):
    model = lab.Trained.for_task(cfg, params, task)
    out = {}
    for dec_name, dec in (("greedy", sd.greedy()), ("temperature 1.0", sd.temperature(1.0))):
        if dec_name not in prof.get("spec_decoders", (dec_name,)):
            continue
        key = jax.random.key(seed + 3)
        res = speculative_generate(cfg, params, test.prompts, decoder=dec, key=key, max_new_tokens=task.answer_len,
                                   eos_id=task.eos_id, pad_id=task.pad_id)
        lengths, fw = np.asarray(res.lengths), np.asarray(res.forwards)
        tpf = (lengths - 1) / np.maximum(fw, 1)
        drafts = fw * (cfg.mtp_heads - 1)
        accepted = (lengths - 1) - fw  # every forward commits its accepted drafts + one token
        entry = {"tokens_per_forward": lab.bootstrap_ci(tpf, seed=seed),
                 "acceptance_rate": float(np.clip(accepted, 0, None).sum() / max(drafts.sum(), 1)),
                 "accuracy": lab.bootstrap_ci(task.answer_codes(np.asarray(res.tokens)) == test.codes, seed=seed)}
        timing = {}
        for b in prof["timing_batches"]:
            prompts = test.prompts[:b]
            spec = lambda p=prompts, d=dec, key=key: speculative_generate(  # noqa: E731
                cfg, params, p, decoder=d, key=key, max_new_tokens=task.answer_len, eos_id=task.eos_id,
                pad_id=task.pad_id).tokens
            base = lambda p=prompts, d=dec, key=key: sd.generate(  # noqa: E731
                model.step, params, p, decoder=d, key=key, max_new_tokens=task.answer_len, eos_id=task.eos_id,
                cache=model.cache, pad_id=task.pad_id).tokens
            ts, tb = [], []
            for _ in range(prof["repeats"]):  # alternate, so both see the same machine load
                ts += timed(spec, 1)
                tb += timed(base, 1)
            timing[str(b)] = {"speculative_s": float(np.median(ts)), "generate_s": float(np.median(tb)),
                              "speedup": float(np.median(tb) / np.median(ts))}
        entry["timing"] = timing
        out[dec_name] = entry
        log(f"  speculative {dec_name}: {entry['tokens_per_forward']} tokens/forward, "
            f"speed-up {[v['speedup'] for v in timing.values()]}")
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--profile", choices=sorted(PROFILES), default="fast")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--from-results", action="store_true", help="only rebuild tables and plots from results.json")
    args = ap.parse_args(argv)
    prof = PROFILES[args.profile]
    out = args.out or Path(__file__).parent / "results" / "mtp" / f"seed{args.seed}"
    out.mkdir(parents=True, exist_ok=True)
    if args.from_results:
        results = report.load_json(out / "results.json")
        (out / "tables.md").write_text(tables(results))
        plot(results, out)
        return results
    clock = report.RunClock()
    results = {"experiment": "mtp", "profile": args.profile, "seed": args.seed, "trunk_blocks": TRUNK,
               "settings": prof, "tasks": {}}
    for tname, task in tasks(prof).items():
        test = task.test_set(prof["n_test"], seed=args.seed)
        data = task.train_set(prof["n_train"], seed=args.seed, exclude=test)
        per, right = {}, {}
        for n in prof["heads"]:
            cfg = lab.LabConfig(vocab_size=task.vocab_size, d_model=prof["d_model"], num_layers=TRUNK, num_heads=4,
                                d_ff=2 * prof["d_model"], mtp_heads=n)
            steps = int(round(prof["steps"] * (TRUNK + 1) / (TRUNK + n)))
            t0 = time.perf_counter()
            res = lab.train(cfg, data, steps=steps, batch_size=128, learning_rate=2e-3, warmup=200, seed=args.seed,
                            log_every=prof["log_every"], desc=f"{tname}-n{n}")
            train_s = time.perf_counter() - t0
            model = lab.Trained.for_task(cfg, res.params, task)
            right[n] = lab.generate_codes(model, task, test) == test.codes
            entry = {"params": lab.num_params(res.params), "steps": res.steps, "train_seconds": round(train_s, 1),
                     "final_loss_head0": res.log[-1]["loss_head0"], "train_log": res.log,
                     "greedy": lab.bootstrap_ci(right[n], seed=args.seed)}
            if n > 1:
                entry["vs_ntp"] = lab.paired_difference(right[n], right[1], seed=args.seed)
                entry["speculative"] = speculation(cfg, res.params, task, test, prof, args.seed)
            per[str(n)] = entry
            log(f"{tname} n={n}: {res.steps} steps, greedy {entry['greedy']}")
        results["tasks"][tname] = {"task": task.name, "models": per}
    results["run"] = clock.info()
    report.save_json(out / "results.json", results)
    (out / "tables.md").write_text(tables(results))
    plot(results, out)
    log(f"wrote {out} in {results['run']['wall_seconds']} s")
    return results


def tables(results):
    s = [f"# Multi-token prediction, profile {results['profile']}, seed {results['seed']}\n\n",
         "### Greedy held-out accuracy at equal training compute (%, 95 % CI)\n\n"]
    rows = []
    for v in results["tasks"].values():
        for n, m in v["models"].items():
            rows.append({"task": v["task"], "heads n": n, "steps": m["steps"], "params": m["params"], "accuracy": m["greedy"],
                         "minus NTP (paired)": m.get("vs_ntp", ""), "train s": m["train_seconds"]})
    s.append(report.markdown_table(rows, ["task", "heads n", "steps", "params", "accuracy", "minus NTP (paired)", "train s"]))
    s.append("\n### Self-speculative decoding with the extra heads\n\n")
    rows = []
    for v in results["tasks"].values():
        for n, m in v["models"].items():
            for dec, e in m.get("speculative", {}).items():
                tpf = report.as_estimate(e["tokens_per_forward"])
                row = {"task": v["task"], "heads n": n, "decoder": dec,
                       "tokens / forward": f"{tpf.mean:.2f} [{tpf.lo:.2f}, {tpf.hi:.2f}]",
                       "draft acceptance": f"{100 * e['acceptance_rate']:.1f} %"}
                for b, tm in e["timing"].items():
                    row[f"speed-up, batch {b}"] = f"{tm['speedup']:.2f}x"
                rows.append(row)
    cols = ["task", "heads n", "decoder", "tokens / forward", "draft acceptance"]
    if rows:
        cols += [k for k in rows[0] if k.startswith("speed-up")]
    s.append(report.markdown_table(rows, cols))
    return "".join(s)


def plot(results, out):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.6))
    tnames = list(results["tasks"])
    heads = list(next(iter(results["tasks"].values()))["models"])
    width = 0.8 / len(heads)
    for j, n in enumerate(heads):
        e = [results["tasks"][t]["models"][n]["greedy"] for t in tnames]
        e = [report.as_estimate(x) for x in e]
        mean = np.array([x.mean for x in e]) * 100
        err = np.array([[x.mean - x.lo, x.hi - x.mean] for x in e]).T * 100
        ax.bar(np.arange(len(tnames)) + j * width, mean, width, yerr=err, capsize=3, label=f"n = {n}")
    ax.set_xticks(np.arange(len(tnames)) + 0.4 - width / 2)
    ax.set_xticklabels(tnames)
    ax.set_ylabel("greedy accuracy (%)")
    ax.set_title("next-token (n=1) vs multi-token heads, equal training FLOPs", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "mtp.png", dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
