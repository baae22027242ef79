"""Independent numpy implementations (sort-based, float64) used as second opinions."""

import numpy as np


def softmax(x, mask=None):
    x = np.asarray(x, np.float64)
    if mask is None:
        mask = np.isfinite(x)
    z = np.where(mask, x, -np.inf)
    z = z - z.max(-1, keepdims=True)
    e = np.where(mask, np.exp(z), 0.0)
    return e / e.sum(-1, keepdims=True)


def topk_mask(s, k):
    """transformers/lax semantics with ties broken by the lowest index (stable sort)."""
    s = np.asarray(s, np.float64)
    out = np.zeros(s.shape, bool)
    for idx in np.ndindex(*s.shape[:-1]):
        order = np.argsort(-s[idx], kind="stable")
        kk = int(np.broadcast_to(k, s.shape[:-1])[idx])
        out[idx + (order[:kk],)] = True
    return out


def topp_mask(probs, p):
    """transformers' TopPLogitsWarper: keep a token iff the mass ranked before it is < p."""
    probs = np.asarray(probs, np.float64)
    out = np.zeros(probs.shape, bool)
    for idx in np.ndindex(*probs.shape[:-1]):
        row = probs[idx]
        order = np.argsort(-row, kind="stable")
        before = np.cumsum(row[order]) - row[order]
        pp = float(np.broadcast_to(p, probs.shape[:-1])[idx])
        out[idx + (order[before < pp],)] = True
    return out


def minp_mask(probs, p):
    probs = np.asarray(probs, np.float64)
    pp = np.broadcast_to(p, probs.shape[:-1])[..., None]
    return probs >= pp * probs.max(-1, keepdims=True)


def sparsemax(z):
    """Sort-based sparsemax (Martins & Astudillo 2016)."""
    z = np.asarray(z, np.float64)
    out = np.zeros_like(z)
    for idx in np.ndindex(*z.shape[:-1]):
        row = z[idx]
        srt = np.sort(row)[::-1]
        css = np.cumsum(srt)
        ks = np.arange(1, row.size + 1)
        cond = 1 + ks * srt > css
        k = ks[cond][-1]
        tau = (css[k - 1] - 1) / k
        out[idx] = np.maximum(row - tau, 0)
    return out


def entmax_bisect(z, alpha, iters=200):
    """α-entmax by float64 bisection on τ (entmax's entmax_bisect, many iterations)."""
    z = np.asarray(z, np.float64)
    a = np.broadcast_to(np.asarray(alpha, np.float64), z.shape[:-1])[..., None]
    x = (a - 1) * z
    mx = x.max(-1, keepdims=True)
    lo, hi = mx - 1, mx
    for _ in range(iters):
        mid = (lo + hi) / 2
        tot = (np.maximum(x - mid, 0) ** (1 / (a - 1))).sum(-1, keepdims=True)
        lo = np.where(tot >= 1, mid, lo)
        hi = np.where(tot >= 1, hi, mid)
    p = np.maximum(x - lo, 0) ** (1 / (a - 1))
    return p / p.sum(-1, keepdims=True)


def entmax15_sort(z):
    """Exact sort-based 1.5-entmax (Peters et al. 2019, Algorithm 2)."""
    z = np.asarray(z, np.float64) / 2
    out = np.zeros_like(z)
    for idx in np.ndindex(*z.shape[:-1]):
        row = z[idx]
        srt = np.sort(row)[::-1]
        ks = np.arange(1, row.size + 1)
        mean = np.cumsum(srt) / ks
        mean_sq = np.cumsum(srt**2) / ks
        ss = ks * (mean_sq - mean**2)
        delta = (1 - ss) / ks
        tau_cand = mean - np.sqrt(np.clip(delta, 0, None))
        k = (tau_cand <= srt).sum()
        tau = tau_cand[k - 1]
        out[idx] = np.maximum(row - tau, 0) ** 2
    return out
