"""Structured generation with SmolLM2-135M-Instruct: do constrained outputs parse and validate?

For 3 JSON schemas (a flat object with typed fields, a nested object with an enum and an
array, a list of objects), the list with unbounded numbers (``points_number``), and 3 patterns
(an ISO date, an e-mail address, a signed decimal) — :mod:`simplex_decode.constraints.examples`
— it generates ``--n`` completions per case with each decoder (``top_p`` and ``best_of_k``),
the cases of a group (``GROUPS``) as rows of one batch (per-row constraints), and checks each
completion:

* schemas: ``json.loads`` then ``jsonschema.validate`` (Draft 2020-12);
* ``iso_date``: ``re.fullmatch`` and ``datetime.date.fromisoformat``; ``email``: ``re.fullmatch``
  and ``email.utils.parseaddr`` giving it back; ``signed_decimal``: ``re.fullmatch`` and ``float``.

A completion counts only if the row ended with EOS (status OK) and passes. The unconstrained
``top_p`` (same prompts, same keys) is the ablation: how often the same model gets it right
without the constraint — strictly (the whole output) and leniently (the first JSON value or
pattern match found inside its text). Results: ``experiments/results/structured.{json,md}``.

    nice -n 10 python experiments/structured.py               # the full run (n = 50)
    python experiments/structured.py --n 4 --out /tmp/smoke   # a smoke run
    nice -n 10 python experiments/structured.py --merge --cases iso_date email signed_decimal
        # add (or redo) some cases in the committed results, keeping the others' runs
"""

from __future__ import annotations

import argparse
import datetime
import email.utils
import functools
import json
import math
import re
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import simplex_decode as sd
from simplex_decode.constraints import Vocabulary, json_schema, regex
from simplex_decode.constraints.examples import PATTERNS, PROMPTS, SCHEMAS
from simplex_decode.models import init_cache, load_gguf, make_step

DECODERS = {
    "top_p": lambda: sd.top_p(0.9, temperature=0.8),
    "best_of_k": lambda: sd.best_of_k(k=8, lam=1.0, beta=0.5),
}
#: Cases decoded together (one batch, a constraint per row); the batches are kept small enough
#: for a KV cache under ~1.5 GB on CPU.
GROUPS = {"objects": ["person", "order"], "lists": ["points", "points_number"],
          "patterns": ["iso_date", "email", "signed_decimal"]}
#: max_new_tokens is the longest complete match + 1 over a group (every row then ends with EOS),
#: and at least this (the only bound for an infinite language)
MIN_NEW = 192


def check(name, text):
    """(parses, validates) for one completion (without its EOS)."""
    import jsonschema

    if name in SCHEMAS:
        try:
            doc = json.loads(text)
        except json.JSONDecodeError:
            return False, False
        try:
            jsonschema.validate(doc, SCHEMAS[name])
            return True, True
        except jsonschema.ValidationError:
            return True, False
    if re.fullmatch(PATTERNS[name], text) is None:
        return False, False
    try:
        if name == "iso_date":
            datetime.date.fromisoformat(text)
        elif name == "email":
            assert email.utils.parseaddr(text)[1] == text
        else:
            float(text)
    except (ValueError, AssertionError):
        return True, False
    return True, True


def extract(name, text):
    """The first candidate inside free text (the lenient reading of an unconstrained output):
    the first JSON value that parses from a '{' or '[' on, or the first match of the pattern."""
    if name in SCHEMAS:
        dec = json.JSONDecoder()
        for i, c in enumerate(text):
            if c in "{[":
                try:
                    return json.dumps(dec.raw_decode(text[i:])[0])
                except json.JSONDecodeError:
                    continue
        return None
    m = re.search(PATTERNS[name], text)
    return None if m is None else m.group(0)


def wilson(k, n, z=1.96):
    """95 % Wilson score interval of a proportion k/n."""
    if n == 0:
        return (0.0, 1.0)
    p = k / n
    d = 1 + z * z / n
    c = (p + z * z / (2 * n)) / d
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return (max(0.0, c - h), min(1.0, c + h))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=50, help="completions per case and decoder")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "structured"))
    ap.add_argument("--ablation", nargs="*", default=["top_p"],
                    help="decoders also run unconstrained, as the ablation (default: top_p; none: skip)")
    ap.add_argument("--cases", nargs="+", default=[*SCHEMAS, *PATTERNS], help="a subset of the cases")
    ap.add_argument("--decoders", nargs="+", default=list(DECODERS), help=f"a subset of {list(DECODERS)}")
    ap.add_argument("--merge", action="store_true",
                    help="keep the runs already in --out (same --n and --seed) and add or replace these")
    args = ap.parse_args()
    old = None
    if args.merge and Path(args.out).with_suffix(".json").exists():
        old = json.loads(Path(args.out).with_suffix(".json").read_text())
        if (old["n"], old["seed"]) != (args.n, args.seed):
            ap.error(f"--merge: {args.out}.json has n={old['n']}, seed={old['seed']}; run with the same")

    config, params, tok = load_gguf()
    step = make_step(config)
    voc = Vocabulary.from_tokenizer(tok)
    cache = functools.partial(init_cache, config)
    groups = {g: [n for n in names if n in args.cases] for g, names in GROUPS.items()}
    groups = {g: names for g, names in groups.items() if names}
    compile_s, automata = {}, {}
    for name in [n for names in groups.values() for n in names]:
        t0 = time.perf_counter()
        automata[name] = json_schema(SCHEMAS[name], voc) if name in SCHEMAS else regex(PATTERNS[name], voc)
        compile_s[name] = time.perf_counter() - t0
        print(f"compiled {name}: {automata[name]} in {compile_s[name]:.2f} s", flush=True)

    max_new = {}
    for gname, names in groups.items():
        longest = [automata[n].max_tokens for n in names]
        finite = [m + 1 for m in longest if m is not None]
        max_new[gname] = max(finite) if None not in longest else max([MIN_NEW, *finite])
    results = {"n": args.n, "seed": args.seed, "cases": [n for ns in groups.values() for n in ns],
               "decoders": {k: repr(DECODERS[k]()) for k in args.decoders},
               "max_new_tokens": max_new, "compile_seconds": compile_s,
               "automata": {k: a.stats for k, a in automata.items()}, "runs": {}}
    if old is not None:  # the other cases' runs and compile records stay; these cases' are redone
        results["runs"] = {k: v for k, v in old["runs"].items()
                           if not (k.split("/")[0] in args.decoders and k.split("/")[2] in results["cases"])}
        results["cases"] = [n for n in [*SCHEMAS, *PATTERNS] if n in results["cases"] or n in old["cases"]]
        results["decoders"] = {**old["decoders"], **results["decoders"]}
        for field in ("max_new_tokens", "compile_seconds", "automata"):
            results[field] = {**old[field], **results[field]}
    for dname in args.decoders:
        make = DECODERS[dname]
        for constrained in (True, False) if dname in args.ablation else (True,):
            for gname, names in groups.items():
                prompts = [tok.encode(tok.apply_chat_template([{"role": "user", "content": PROMPTS[n]}]))
                           for n in names]
                dec = make()
                if constrained:
                    dec = sd.constrain(dec, [automata[n] for n in names], which=jnp.arange(len(names)))
                keys = jax.vmap(lambda i: jax.random.fold_in(jax.random.key(args.seed), i))(
                    jnp.arange(len(names), dtype=jnp.uint32))
                t0 = time.perf_counter()
                out = sd.generate(step, params, prompts, decoder=dec, key=keys, max_new_tokens=max_new[gname],
                                  eos_id=tok.eos_token_id, num_samples=args.n, cache=cache)
                out = jax.device_get(out)
                secs = time.perf_counter() - t0
                for i, name in enumerate(names):
                    rows = []
                    for k in range(args.n):
                        n_tok = int(out.lengths[i, k])
                        ids = out.tokens[i, k, :n_tok].tolist()
                        ended = bool(out.finished[i, k])
                        text = tok.decode(ids[:-1] if ended else ids)
                        parses, valid = check(name, text) if ended else (False, False)
                        found = extract(name, text)
                        rows.append({"text": text, "tokens": n_tok, "ended": ended, "status": int(out.status[i, k]),
                                     "parses": parses, "valid": valid,
                                     "lenient_valid": found is not None and check(name, found)[1]})
                    key = f"{dname}/{'constrained' if constrained else 'unconstrained'}/{name}"
                    results["runs"][key] = {"seconds_for_group": secs, "samples": rows}
                    ok = sum(r["valid"] for r in rows)
                    print(f"{key}: {ok}/{args.n} valid ({secs:.0f} s for the {gname} group)", flush=True)
                write(results, Path(args.out), quiet=True)  # after every group: a partial result survives
    write(results, Path(args.out))


def write(results, out: Path, quiet=False):
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(results, indent=1, ensure_ascii=False))
    n = results["n"]
    lines = [
        "# Structured generation with SmolLM2-135M-Instruct",
        "",
        f"{n} completions per case and decoder; a completion counts when it ends with EOS and passes the "
        "check (schemas: `json.loads` + `jsonschema.validate`; `iso_date`: `date.fromisoformat`; `email`: "
        "`email.utils.parseaddr`; `signed_decimal`: `float`, each after `re.fullmatch`). 95 % Wilson intervals. "
        "Decoders: " + ", ".join(f"`{k}` = `{v}`" for k, v in results["decoders"].items()) + ".",
        "",
        "Reproduce: `nice -n 10 python experiments/structured.py` (CPU; see the script's docstring).",
        "",
        "| case | decoder | constrained: valid | ended | unconstrained: valid | unconstrained: valid inside "
        "the text | mean tokens (constrained) |",
        "|---|---|---|---|---|---|---|",
    ]
    names = results["cases"]
    for name in names:
        for dname in results["decoders"]:
            if f"{dname}/constrained/{name}" not in results["runs"]:
                continue
            c = results["runs"][f"{dname}/constrained/{name}"]["samples"]
            u = results["runs"].get(f"{dname}/unconstrained/{name}", {}).get("samples")
            kc = sum(r["valid"] for r in c)
            lo, hi = wilson(kc, n)
            cell_u = cell_l = "–"
            if u is not None:
                ku, kl = sum(r["valid"] for r in u), sum(r["lenient_valid"] for r in u)
                cell_u = "{}/{} [{:.2f}, {:.2f}]".format(ku, n, *wilson(ku, n))
                cell_l = "{}/{} [{:.2f}, {:.2f}]".format(kl, n, *wilson(kl, n))
            mean_tok = np.mean([r["tokens"] for r in c])
            lines.append(f"| {name} | {dname} | {kc}/{n} [{lo:.2f}, {hi:.2f}] | {sum(r['ended'] for r in c)}/{n} | "
                         f"{cell_u} | {cell_l} | {mean_tok:.1f} |")
    lines += ["", "Compile time per constraint (outlines-core index + device tables, one CPU core of a shared "
              "2-core machine):", "", "| case | states | token classes | table | seconds |", "|---|---|---|---|---|"]
    for name in names:
        st = results["automata"][name]
        lines.append(f"| {name} | {st['states']} | {st['classes']} | {st['table_bytes'] / 2**10:.0f} KiB | "
                     f"{results['compile_seconds'][name]:.2f} |")
    lines += ["", f"max_new_tokens per batch: {results['max_new_tokens']} (the longest complete match + 1 when "
              f"every language of the batch is finite, else at least {MIN_NEW}).", "",
              "First three constrained completions per case:", ""]
    for name in names:
        for dname in results["decoders"]:
            run = results["runs"].get(f"{dname}/constrained/{name}")
            if run is not None:
                lines.append(f"* **{name}**, {dname}")
                lines += [f"  * `{r['text']}`" for r in run["samples"][:3]]
    failed = [(k, r) for k, run in results["runs"].items() if "/constrained/" in k
              for r in run["samples"] if not r["valid"]]
    if failed:
        lines += ["", "Constrained completions that did not pass:", ""]
        lines += [f"* {k} (status {r['status']}, {r['tokens']} tokens): `{r['text']}`" for k, r in failed]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    if not quiet:
        print("\n".join(lines))


if __name__ == "__main__":
    main()
