"""Every preset over hostile valid inputs: the decoding contract at the extremes.

Not a timing benchmark: a sweep that reports every violation of the contract

* a row whose logits are finite somewhere and never NaN/+inf gets ``Status.OK`` (the
  presets have no row they may refuse, except a cap that admits no distribution);
* an OK row's ``q`` is finite, ``≥ 0``, sums to 1 (to 1e-5), is 0 on ``-inf`` logits and
  is monotone in the logits (a larger logit never gets less mass; ``typical`` excepted);
* a row that is not OK has ``q = 0``; its sampled id is ``-1``;
* the closed forms equal a float64 numpy reference (temperature, top-k, top-p, min-p,
  sparsemax, entmax, KL-anchored softmax), away from the ambiguous ties of top-p/min-p;
* a row's ``q`` is bit-identical decoded alone and inside the batch (``--rows``).

over logits of ±1e30, ±float max, −inf masks, all-equal rows, massive ties, one outlier,
near-ties, tiny values; V ∈ {1, 2, 3, 65, 4096} (and 151 936 with ``--long``); float32,
bfloat16, float16 and float64 (at V = 65); per-row temperatures 0, 1e-4, 1e-2, 1, 1e3;
each preset's parameters at and just inside their bounds.

    python benchmarks/hostile_sweep.py --rows           # float32/bfloat16/float16
    python benchmarks/hostile_sweep.py --x64            # float64 logits (x64 mode)
    python benchmarks/hostile_sweep.py --only top_p sparsemax --long --rows

Prints one line per violation class and a summary; exits 1 if any violation was found.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections import Counter

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
import simplex_decode as sd  # noqa: E402

FMAX32 = float(np.finfo(np.float32).max)
TEMPS = [0.0, 1e-4, 1e-2, 1.0, 1e3]


def inputs(V, dtype, seed=0):
    """(name, row) pairs of hostile rows of length V (in float64, cast later)."""
    rng = np.random.default_rng(seed)
    fmax = float(np.finfo(np.dtype(dtype) if dtype != "bfloat16" else np.float32).max)
    if dtype == "float16":
        fmax = 65504.0
    if dtype == "bfloat16":
        fmax = 3.3895e38
    big = min(1e30, fmax)

    def row(fill, head=()):
        r = np.full(V, fill, np.float64)
        r[: len(head)] = head[:V]
        return r

    rows = [
        ("normal", rng.standard_normal(V) * 2.0),
        ("huge_mix", np.where(rng.random(V) < 0.5, big, -big) * rng.random(V)),
        ("big_outlier", row(0.0, (big, 0.0, -big, 5.0))),
        ("fmax_first", row(0.0, (fmax, 0.0, 1.0))),
        ("fmax_both", row(-fmax, (fmax, fmax, -fmax))),
        ("neg_fmax", row(-fmax, (-fmax, -fmax * 0.5))),
        ("half_masked", np.where(np.arange(V) % 2 == 0, rng.standard_normal(V), -np.inf)),
        ("single_finite", row(-np.inf, (3.0,))),
        ("all_zero", np.zeros(V)),
        ("all_big", np.full(V, big)),
        ("ties_top", np.where(np.arange(V) < max(1, V // 3), 9.0, np.round(rng.standard_normal(V)))),
        ("outlier", row(0.0, (50.0,))),
        ("near_ties", 5.0 + 1e-6 * rng.standard_normal(V)),
        ("tiny", 1e-30 * rng.standard_normal(V)),
        ("nan_row", row(0.0, (np.nan,))),  # a bad row in the batch (padding)
        ("all_masked", np.full(V, -np.inf)),  # another bad row
    ]
    return rows


def _cast(x, dtype):
    if dtype == "bfloat16":
        return jnp.asarray(x, jnp.float32).astype(jnp.bfloat16)
    return jnp.asarray(np.asarray(x, dtype))


def presets(V):
    """(preset name, label, decoder) for every preset with parameters at/near their bounds;
    ``None`` temperature: the per-row temperature vector is passed where the preset has one."""
    sd_ = sd
    K = lambda *ks: sorted({max(1, min(k, V)) for k in ks})  # noqa: E731
    out = [("greedy", "", lambda t: sd_.greedy())]
    out += [("temperature", "", lambda t: sd_.temperature(t))]
    out += [("top_k", f"k={k}", lambda t, k=k: sd_.top_k(k, temperature=t)) for k in K(1, 2, V)]
    for p in (1e-7, 0.5, 0.9, 1.0):
        out.append(("top_p", f"p={p}", lambda t, p=p: sd_.top_p(p, temperature=t)))
    out.append(("top_p", "p=0.9 from_model", lambda t: sd_.top_p(0.9, temperature=t, from_model=True)))
    out += [("min_p", f"p={p}", lambda t, p=p: sd_.min_p(p, temperature=t)) for p in (0.0, 0.1, 1.0)]
    out += [("sparsemax", "", lambda t: sd_.sparsemax(t))]
    out += [("entmax", f"alpha={a}", lambda t, a=a: sd_.entmax(a, t)) for a in (1.001, 1.5, 3.0)]
    out += [("kl_anchored", f"lam={lam}", lambda t, lam=lam: sd_.kl_anchored(lam, temperature=t))
            for lam in (0.0, 1e-4, 1.0, 1e3)]
    out += [("typical", f"p={p}", lambda t, p=p: sd_.typical(p, temperature=t)) for p in (1e-7, 0.5, 1.0)]
    out += [("epsilon", f"eps={e}", lambda t, e=e: sd_.epsilon(e, temperature=t)) for e in (0.0, 1e-4, 0.999)]
    out += [("eta", f"eps={e}", lambda t, e=e: sd_.eta(e, temperature=t)) for e in (0.0, 1e-4, 0.999)]
    out += [("top_n_sigma", f"n={n}", lambda t, n=n: sd_.top_n_sigma(n, temperature=t)) for n in (0.0, 1.0, 1e3)]
    out += [("top_h", f"h={h}", lambda t, h=h: sd_.top_h(h, temperature=t)) for h in (1e-4, 0.5, 1.0)]
    out += [("top_a", f"a={a}", lambda t, a=a: sd_.top_a(a, temperature=t)) for a in (0.0, 0.2, 1e3)]
    out += [("edt", f"{a}", lambda t, a=a: sd_.edt(*a)) for a in ((1.0, 1.0, 0.8), (1e-4, 1.0, 0.8), (1e3, 0.0, 1.0), (1.0, 1e3, 1e-3))]
    out += [("dynamic_temperature", f"{a}", lambda t, a=a: sd_.dynamic_temperature(*a))
            for a in ((0.0, 2.0, 1.0), (1e-4, 1e3, 0.0), (0.5, 0.5, 1.0), (0.0, 1e3, 1e3))]
    out += [("entropix", "default", lambda t: sd_.entropix()),
            ("entropix", "extreme", lambda t: sd_.entropix(t=1e-4, t_fork=1e3, t_mist=0.0, low_entropy=1e3,
                                                            low_varentropy=0.0, high_entropy=0.0))]
    m = min(8, V)
    out += [("best_of_k", f"{a}", lambda t, a=a: sd_.best_of_k(a[0], a[1], a[2], top_m=min(a[3], V), temperature=t))
            for a in ((16, 0.2, 0.02, 8), (4, 1e-4, 1.0, 1), (2, 1e3, 0.0, 8), (3, 1.0, 1e3, 2))]
    out += [("best_of_k", "weights=model", lambda t: sd_.best_of_k(8, 0.5, 0.5, weights="model", temperature=t)),
            ("best_of_k", "mirror", lambda t: sd_.best_of_k(8, 0.2, 0.1, top_m=m, temperature=t, solver="mirror")),
            ("best_of_k", "projected_gradient",
             lambda t: sd_.best_of_k(8, 0.2, 0.1, top_m=m, temperature=t, solver="projected_gradient"))]
    out += [("capped", f"c={c}", lambda t, c=c: sd_.capped(c, temperature=t)) for c in (1.0, 0.5)]
    out += [("js_anchored", f"lam={lam}", lambda t, lam=lam: sd_.js_anchored(lam, temperature=t)) for lam in (1e-4, 1.0, 1e3)]
    out += [("tsallis_coverage", f"{a}", lambda t, a=a: sd_.tsallis_coverage(a[0], alpha=a[1], lam=a[2], beta=a[3], temperature=t))
            for a in ((4, 1.5, 1.0, 0.5), (2, 1.01, 1e-3, 0.0), (8, 3.0, 1e3, 10.0))]
    missing = set(sd.PRESETS) - {name for name, _, _ in out}
    assert not missing, f"presets not swept: {missing}"
    return out


# --- float64 references of the closed forms (on the compute-dtype logits) ----------------


def _shifted(x):
    fin = x > -np.inf
    m = np.max(np.where(fin, x, -np.inf)) if fin.any() else 0.0
    return np.where(fin, x - m, -np.inf)


def _softmax(s):
    e = np.exp(_shifted(s))
    return e / e.sum()


def _onehot(x):
    q = np.zeros_like(x)
    q[int(np.argmax(x))] = 1.0
    return q


def reference(name, label, x, t):
    """float64 reference q of one row, or None (no reference / an ambiguous cut)."""
    with np.errstate(all="ignore"):
        if name in ("greedy",) or (t == 0 and name not in ("edt", "dynamic_temperature", "entropix")):
            # (top-p / min-p at t = 0: the argmax within the rule's support, no reference)
            return _onehot(np.where(x > -np.inf, x, -np.inf)) if name in (
                "greedy", "temperature", "top_k", "sparsemax", "entmax") else None
        s = _shifted(x) / t
        if name == "temperature":
            return _softmax(s)
        if name == "top_k":
            k = int(label.split("=")[1])
            order = np.argsort(-s, kind="stable")[:k]
            keep = np.zeros(x.shape, bool)
            keep[order] = True
            return _softmax(np.where(keep & (s > -np.inf), s, -np.inf))
        if name == "top_p" and "from_model" not in label:
            p = float(label.split("=")[1])
            pr = _softmax(s)
            order = np.argsort(-pr, kind="stable")
            before = np.cumsum(pr[order]) - pr[order]
            if np.any(np.abs(before - p) < 1e-6) or np.any(np.abs(np.diff(pr[order])) < 1e-9 * pr[order][1:]):
                return None  # a cut within rounding of p, or ties at the cut: ambiguous
            keep = np.zeros(x.shape, bool)
            keep[order[before < p]] = True
            return _softmax(np.where(keep, s, -np.inf))
        if name == "min_p":
            p = float(label.split("=")[1])
            pr = _softmax(s)
            if np.any(np.abs(pr - p * pr.max()) < 1e-6 * pr.max()) and p > 0:
                return None
            return _softmax(np.where(pr >= p * pr.max(), s, -np.inf))
        if name == "sparsemax":
            z = s[s > -np.inf]
            srt = np.sort(z)[::-1]
            css = np.cumsum(srt)
            ks = np.arange(1, z.size + 1)
            k = ks[1 + ks * srt > css][-1]
            tau = (css[k - 1] - 1) / k
            return np.where(s > -np.inf, np.maximum(s - tau, 0.0), 0.0)
        if name == "entmax":
            a = float(label.split("=")[1])
            xx = (a - 1) * s
            lo, hi = -1.0, 0.0
            for _ in range(200):
                mid = (lo + hi) / 2
                tot = np.sum(np.maximum(xx - mid, 0) ** (1 / (a - 1)))
                lo, hi = (mid, hi) if tot >= 1 else (lo, mid)
            q = np.maximum(xx - lo, 0) ** (1 / (a - 1))
            return q / q.sum()
        if name == "kl_anchored":
            lam = float(label.split("=")[1])
            if lam == 0:
                return _onehot(s)
            logp = np.log(_softmax(_shifted(x)))
            return _softmax(np.where(x > -np.inf, logp + s / lam, -np.inf))
    return None


def _probs32(x, t):
    """float32 ``softmax(x / t)`` as the library computes it (``(x − max) / t`` first)."""
    with np.errstate(all="ignore"):
        s = np.float32(_shifted(x)) / np.float32(t) if t > 0 else np.float32(_shifted(x))
        return np.exp(s - np.max(s)).astype(np.float32)


def monotone_violation(x, q, t, tol=1e-6):
    """Largest ``q_j − q_i`` over pairs with ``x_i > x_j`` that float32 can tell apart
    (their float32 probabilities differ under both the tempered and the model softmax; the
    rules rank tokens by those, ties by lowest id). 0 when q is monotone."""
    fin = x > -np.inf
    xs, qs = x[fin], q[fin]
    if xs.size < 2:
        return 0.0
    order = np.argsort(-xs, kind="stable")
    xs, qs = xs[order], qs[order]
    keys = [xs, _probs32(xs, t), _probs32(xs, 1.0)]
    # end of each token's tie group under every key: later tokens are strictly below it
    end = np.zeros(xs.size, int)
    for k in keys:
        _, first, counts = np.unique(-k, return_index=True, return_counts=True)
        grp_end = np.repeat(first + counts, counts)
        end = np.maximum(end, grp_end)
    suffix_max = np.maximum.accumulate(np.append(qs, -np.inf)[::-1])[::-1]
    worst = float(np.max(suffix_max[end] - qs))
    return worst if worst > tol else 0.0


def run(args):
    Vs = args.V or [1, 2, 3, 65, 4096] + ([151936] if args.long else [])
    solve = jax.jit(lambda d, x: d.solve(x))
    sample = jax.jit(lambda d, k, x: d.sample(k, x))
    found = Counter()
    examples = {}
    n_rows = n_cases = 0
    t0 = time.time()

    def report(kind, key, detail):
        found[kind] += 1
        examples.setdefault((kind, key), detail)

    for V in Vs:
        if args.x64:
            dtypes = ["float64"]
        else:
            dtypes = ["float32", "bfloat16", "float16"] if V == 65 else ["float32"]
        for dtype in dtypes:
            rows = inputs(V, dtype)
            names = [n for n, _ in rows for _ in TEMPS]
            temps = np.array([t for _ in rows for t in TEMPS], np.float32)
            x64 = np.stack([r for _, r in rows for _ in TEMPS])
            x = _cast(x64, dtype)
            xc = np.asarray(x.astype(jnp.float64 if dtype == "float64" else jnp.float32), np.float64)
            for name, label, make in presets(V):
                if args.only and name not in args.only:
                    continue
                if V == 151936 and name not in args.long_presets:
                    continue
                key = f"{name}[{label}] V={V} {dtype}"
                try:
                    dec = make(jnp.asarray(temps))
                    sol = solve(dec, x)
                    q = np.asarray(sol.q, np.float64)
                    st = np.asarray(sol.status)
                    ids = np.asarray(sample(dec, jax.random.key(0), x))
                except ValueError as e:
                    report("raised", key, str(e)[:200])
                    continue
                n_cases += 1
                n_rows += len(names)
                for i, rn in enumerate(names):
                    xi = xc[i]
                    valid_in = np.all(~np.isnan(xi) & (xi < np.inf)) and np.any(xi > -np.inf)
                    tag = f"{key} row={rn} t={temps[i]:g}"
                    if not valid_in:
                        if st[i] == 0:
                            report("bad row with status OK", key, tag)
                        continue
                    if st[i] != 0:
                        report(f"status {sd.Status(int(st[i])).name} on a valid row", key,
                               f"{tag}: {sd.Status(int(st[i])).message}")
                        if np.any(q[i] != 0) or ids[i] != -1:
                            report("non-OK row with q != 0 or id != -1", key, tag)
                        continue
                    qi = q[i]
                    if not np.all(np.isfinite(qi)) or np.any(qi < 0):
                        report("q not finite / negative", key, tag)
                        continue
                    if abs(qi.sum() - 1) > 1e-5:
                        report("q does not sum to 1", key, f"{tag}: sum={qi.sum():.8g}")
                    if np.any(qi[xi == -np.inf] != 0):
                        report("mass on a -inf logit", key, tag)
                    if not (0 <= ids[i] < V) or qi[ids[i]] <= 0:
                        report("sampled id outside the support", key, f"{tag}: id={ids[i]}")
                    if name != "typical":
                        mv = monotone_violation(xi, qi, float(temps[i]))
                        if mv > 0:
                            report("q not monotone in the logits", key, f"{tag}: by {mv:.3g}")
                    ref = reference(name, label, xi, float(temps[i]))
                    if ref is not None:
                        err = np.max(np.abs(ref - qi))
                        tol = 2e-5 if dtype != "float64" else 1e-9
                        if not np.isfinite(err) or err > tol:
                            report("differs from the float64 reference", key, f"{tag}: max |dq| = {err:.3g}")
                if args.rows and dtype == "float32" and V >= 65:
                    for i in range(0, len(names), max(1, len(names) // 8)):
                        alone = np.asarray(solve(dec if np.ndim(temps) == 0 else make(jnp.asarray(temps[i:i + 1])),
                                                 x[i:i + 1]).q, np.float64)[0]
                        if not np.array_equal(alone, q[i]):
                            report("row result depends on its batch", key,
                                   f"{key} row={names[i]} t={temps[i]:g}: max |dq| = {np.max(np.abs(alone - q[i])):.3g}")
                print(f"  {key}: done ({time.time() - t0:.0f}s)", file=sys.stderr, flush=True)
    print(f"swept {n_cases} cases, {n_rows} rows, in {time.time() - t0:.0f}s")
    for (kind, _key), detail in sorted(examples.items()):
        print(f"- {kind}: {detail}")
    print("violations:", dict(found) if found else "none")
    return 1 if found else 0


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", nargs="*", help="preset names to sweep")
    ap.add_argument("--long", action="store_true", help="also V = 151936 (for --long-presets)")
    ap.add_argument("--long-presets", nargs="*", default=["temperature", "top_k", "top_p", "min_p", "sparsemax",
                                                           "entmax", "typical", "best_of_k", "tsallis_coverage"])
    ap.add_argument("--rows", action="store_true", help="also check bitwise row independence (float32)")
    ap.add_argument("--x64", action="store_true", help="float64 logits only, with jax_enable_x64")
    ap.add_argument("--V", type=int, nargs="+", help="override the vocabulary sizes")
    args = ap.parse_args(argv)
    if args.x64:
        jax.config.update("jax_enable_x64", True)
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
