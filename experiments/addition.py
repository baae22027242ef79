"""The lab's training check: 3-digit addition to ≥ 95 % held-out exact match, on CPU.

A model of two trunk blocks and one head block (d = 96) is trained on reversed-digit
answers (least significant digit first, the known trick that puts each carry before the
digit that needs it) until its greedy accuracy on a validation split reaches 98 %, then
scored on a disjoint held-out test split. The ablation trains the same model for the
same number of steps on plain (most significant first) answers. Wall time, CPU time and
the machine's load average are recorded (the machine is shared).

    time python experiments/addition.py --profile full --seed 0
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from simplex_decode import lab
from simplex_decode.lab import report

PROFILES = {
    "fast": dict(max_steps=100, n_test=64, n_val=64, d_model=32, target=0.98, log_every=50),
    "full": dict(max_steps=4000, n_test=2000, n_val=500, d_model=96, target=0.98, log_every=100),
}


def log(msg):
    print(f"[addition {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def run(task, prof, seed, steps, stop):
    test = task.test_set(prof["n_test"], seed=seed)
    val = task.test_set(prof["n_test"] + prof["n_val"], seed=seed + 1000)
    val = val.take(~np.isin(val.keys, test.keys)).first(prof["n_val"])
    held = lab.Examples(*(np.concatenate([a, b]) for a, b in zip(test, val, strict=True)))
    data = task.train_set(200_000, seed=seed, exclude=held)
    cfg = lab.LabConfig(vocab_size=task.vocab_size, d_model=prof["d_model"], num_layers=2, num_heads=4,
                        d_ff=2 * prof["d_model"])

    def val_acc(params):
        codes = lab.generate_codes(lab.Trained.for_task(cfg, params, task), task, val)
        return {"accuracy": float(np.mean(codes == val.codes))}

    clock = report.RunClock()
    res = lab.train(cfg, data, steps=steps, batch_size=128, learning_rate=3e-3, warmup=100, seed=seed,
                    log_every=prof["log_every"], eval_fn=val_acc,
                    stop=(lambda e: e["accuracy"] >= prof["target"]) if stop else None, desc=task.name)
    run_info = clock.info()
    model = lab.Trained.for_task(cfg, res.params, task)
    right = lab.generate_codes(model, task, test) == test.codes
    return {"task": task.name, "config": cfg.to_dict(), "params": lab.num_params(res.params), "steps": res.steps,
            "test": lab.bootstrap_ci(right, seed=seed), "n_test": len(test), "train_log": res.log,
            "train_run": run_info}, res.params, cfg


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--profile", choices=sorted(PROFILES), default="fast")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--no-ablation", action="store_true")
    args = ap.parse_args(argv)
    prof = PROFILES[args.profile]
    out = args.out or Path(__file__).parent / "results" / "addition" / f"seed{args.seed}"
    out.mkdir(parents=True, exist_ok=True)
    clock = report.RunClock()
    rev, params, cfg = run(lab.Addition(digits=3, reverse=True), prof, args.seed, prof["max_steps"], stop=True)
    log(f"reversed: {rev['steps']} steps, test {rev['test']}, train {rev['train_run']['cpu_seconds']} CPU-s")
    lab.save_checkpoint(out / "addition3-rev.npz", cfg, params, meta={"task": rev["task"], "steps": rev["steps"]})
    results = {"experiment": "addition", "profile": args.profile, "seed": args.seed, "reversed": rev}
    if not args.no_ablation:
        plain, _, _ = run(lab.Addition(digits=3, reverse=False), prof, args.seed, rev["steps"], stop=False)
        log(f"plain (same steps): test {plain['test']}")
        results["plain"] = plain
    results["run"] = clock.info()
    report.save_json(out / "results.json", results)
    rows = [{"answer order": r["task"], "steps": r["steps"], "params": r["params"], "held-out exact match": r["test"],
             "train wall s": r["train_run"]["wall_seconds"], "train CPU s": r["train_run"]["cpu_seconds"],
             "load avg (1 min) at start": r["train_run"]["load_average_start"][0]}
            for r in (results["reversed"], results.get("plain")) if r]
    (out / "tables.md").write_text(
        f"# 3-digit addition, profile {args.profile}, seed {args.seed}\n\n" + report.markdown_table(
            rows, ["answer order", "steps", "params", "held-out exact match", "train wall s", "train CPU s",
                   "load avg (1 min) at start"]))
    log(f"wrote {out} in {results['run']['wall_seconds']} s")
    return results


if __name__ == "__main__":
    main()
