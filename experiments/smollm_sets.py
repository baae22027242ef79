"""What SmolLM2-135M-Instruct can answer: greedy accuracy on candidate question sets.

Before relying on the one real model here, measure it. Each set of
:mod:`simplex_decode.lab.questions` is a few-shot completion prompt with a one-token
answer; we report greedy (argmax) accuracy of the answer token with a 95 % bootstrap
interval over questions, the set's chance levels (the most frequent answer; a uniform
guess among the set's answers), and whether the model's greedy continuation *ends* after
the answer token (the next token is not a letter or a digit), which checks that reading
the first token is reading the whole answer. A set is kept for the Best-of-K experiment
when the lower end of its interval is above both chance levels.

    python experiments/smollm_sets.py --profile full
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import jax
import numpy as np

import simplex_decode as sd
from simplex_decode import lab
from simplex_decode.lab import questions, report

PROFILES = {"fast": dict(model="random", max_questions=6), "full": dict(model="smollm2", max_questions=None)}


def main(argv=None):
    sys.path.insert(0, str(Path(__file__).parent))
    from best_of_k import answer_logits, smol_model

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--profile", choices=sorted(PROFILES), default="fast")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    prof = PROFILES[args.profile]
    out = args.out or Path(__file__).parent / "results" / "smollm_sets"
    out.mkdir(parents=True, exist_ok=True)
    clock = report.RunClock()
    config, params, tok, label = smol_model(prof["model"])
    from simplex_decode.models import init_cache, make_step

    step = make_step(config)
    cache = lambda b, n: init_cache(config, b, n)  # noqa: E731
    rows = []
    for name in questions.SETS:
        qs = questions.build(name, tok)
        n = len(qs) if prof["max_questions"] is None else min(prof["max_questions"], len(qs))
        logits = answer_logits(config, params, qs.prompts[:n])
        answers = qs.answers[:n]
        right = np.argmax(logits, -1) == answers
        ch = questions.chance(answers)
        est = lab.bootstrap_ci(right.astype(float), seed=args.seed)
        # the greedy continuation: does the answer end after its first token?
        gen = sd.generate(step, params, qs.prompts[:n], decoder=sd.greedy(), key=jax.random.key(0), max_new_tokens=2,
                          cache=cache, pad_id=0)
        toks = np.asarray(gen.tokens)
        assert np.array_equal(toks[:, 0], np.argmax(logits, -1)), "generate's first greedy token is the argmax"
        nxt = [tok.decode([int(t)]) for t in toks[:, 1]]
        ends = np.array([not (s[:1].isalnum()) for s in nxt])
        keep = est.lo > max(ch["most_frequent"], ch["uniform"])
        rows.append({"set": name, "n": n, "dropped (answer not one token)": len(qs.dropped), "greedy accuracy": est,
                     "chance: most frequent": f"{100 * ch['most_frequent']:.1f}",
                     "chance: uniform": f"{100 * ch['uniform']:.1f}",
                     "answer ends after one token": f"{100 * ends.mean():.0f}",
                     "kept": "yes" if keep else "no",
                     "examples": [f"{qs.texts[i]} -> {tok.decode([int(np.argmax(logits[i]))])!r} (want {qs.answer_texts[i]!r})"
                                  for i in range(min(3, n))]})
        print(f"{name}: {est} chance {ch} kept={keep}", file=sys.stderr, flush=True)
    results = {"experiment": "smollm_sets", "profile": args.profile, "model": label, "rows": rows, "run": clock.info()}
    report.save_json(out / "results.json", results)
    cols = ["set", "n", "dropped (answer not one token)", "greedy accuracy", "chance: most frequent", "chance: uniform",
            "answer ends after one token", "kept"]
    text = f"# SmolLM2 question sets ({label}), profile {args.profile}\n\n" + report.markdown_table(rows, cols)
    text += "\nExamples (question -> greedy answer token):\n\n" + "".join(
        f"* {r['set']}: " + "; ".join(r["examples"]) + "\n" for r in rows)
    (out / "tables.md").write_text(text)
    return results


if __name__ == "__main__":
    main()
