"""Compare the full-profile runs of an experiment across seeds.

For every estimate (mean with a 95 % interval) that two runs both report at the same place
in their ``results.json``, check whether each run's mean lies inside the other's interval,
and write ``experiments/results/<experiment>/reproducibility.md``: the share of estimates
that regenerate within their intervals, and the list of those that do not.

    python experiments/summarize.py best_of_k      # or path_star, mtp
"""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

RESULTS = Path(__file__).parent / "results"


def estimates(obj, path=()):
    """(path, estimate dict) for every {mean, lo, hi, n} dict in a results tree."""
    if isinstance(obj, dict):
        if {"mean", "lo", "hi", "n"} <= set(obj):
            yield path, obj
            return
        for k, v in obj.items():
            if k in ("per_problem", "train_log", "run"):
                continue
            yield from estimates(v, path + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            label = v.get("name", i) if isinstance(v, dict) else i
            if isinstance(v, dict) and "tau" in v:
                label = f"{v.get('model', '')} {v['name']} τ={v['tau']}"
            yield from estimates(v, path + (label,))


def compare(a, b):
    ea, eb = dict(estimates(a)), dict(estimates(b))
    common = [p for p in ea if p in eb]
    rows = []
    for p in common:
        x, y = ea[p], eb[p]
        rows.append((p, x, y, x["lo"] <= y["mean"] <= x["hi"], y["lo"] <= x["mean"] <= y["hi"]))
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("experiment")
    args = ap.parse_args(argv)
    runs = {}
    for f in sorted((RESULTS / args.experiment).glob("seed*/results.json")):
        r = json.loads(f.read_text())
        if r.get("profile") == "full":
            runs[r["seed"]] = r
    if len(runs) < 2:
        raise SystemExit(f"{args.experiment}: need two full-profile runs, found seeds {sorted(runs)}")
    lines = [f"# {args.experiment}: do the full-profile numbers regenerate across seeds?\n\n"]
    for s0, s1 in itertools.combinations(sorted(runs), 2):
        rows = compare(runs[s0], runs[s1])
        both = sum(r[3] and r[4] for r in rows)
        either = sum(r[3] or r[4] for r in rows)
        lines.append(f"Seeds {s0} and {s1}: {len(rows)} estimates reported by both; "
                     f"{both} ({100 * both / len(rows):.0f} %) have each run's mean inside the other's 95 % interval, "
                     f"{either} ({100 * either / len(rows):.0f} %) at least one way. Wall / CPU time: "
                     f"{runs[s0]['run']['wall_seconds']:.0f} / {runs[s0]['run']['cpu_seconds']:.0f} s and "
                     f"{runs[s1]['run']['wall_seconds']:.0f} / {runs[s1]['run']['cpu_seconds']:.0f} s "
                     f"(load average at start {runs[s0]['run']['load_average_start'][0]} and "
                     f"{runs[s1]['run']['load_average_start'][0]} on {runs[s0]['run']['cpu_count']} cores).\n\n")
        bad = [r for r in rows if not (r[3] and r[4])]
        if bad:
            lines.append(f"| estimate | seed {s0} | seed {s1} |\n|---|---|---|\n")
            for p, x, y, _, _ in bad:
                f = lambda e: f"{100 * e['mean']:.1f} [{100 * e['lo']:.1f}, {100 * e['hi']:.1f}]"  # noqa: E731
                lines.append(f"| {' / '.join(str(q) for q in p)} | {f(x)} | {f(y)} |\n")
            lines.append("\n")
    out = RESULTS / args.experiment / "reproducibility.md"
    out.write_text("".join(lines))
    print(out.read_text())


if __name__ == "__main__":
    main()
