"""From-scratch numpy (float64) implementations of issue 15's decoders, written from their
published definitions, as second opinions for the JAX code:

* mirostat v1/v2, XTC and DRY: ports of llama.cpp's ``src/llama-sampling.cpp`` (candidate
  arrays sorted by logit, loops over positions; DRY with the reverse Z-algorithm);
* CFG and DoLa: transformers' ``UnbatchedClassifierFreeGuidanceLogitsProcessor`` and
  ``_dola_select_contrast`` / ``_relative_top_filter`` (for one row at a time);
* contrastive decoding: Li et al. (2023), ``log p_e − log p_a`` on ``p_e ≥ α·max p_e``.

Ties in sorted candidate arrays follow the library's rule (lowest id first); llama.cpp's
partial sorts leave that order unspecified.
"""

from __future__ import annotations

import math

import numpy as np

LN2 = math.log(2.0)


def log_softmax(x):
    x = np.asarray(x, np.float64)
    finite = x > -np.inf
    if not finite.any():
        return np.full(x.shape, -np.inf)
    m = x[finite].max()
    return np.where(finite, (x - m) - math.log(np.exp(x[finite] - m).sum()), -np.inf)


def sorted_candidates(logits):
    """(ids, p) of the tokens with finite logits, by descending logit, ties by lowest id."""
    x = np.asarray(logits, np.float64)
    ids = np.flatnonzero(x > -np.inf)
    order = ids[np.lexsort((ids, -x[ids]))]
    p = np.exp(log_softmax(x)[order])
    return order, p


def renormalised(V, ids, p):
    q = np.zeros(V)
    q[ids] = p / p.sum()
    return q


# --- mirostat -------------------------------------------------------------------------


def mirostat_v2_keep(logits, mu):
    """llama.cpp mirostat-v2: the sorted prefix with surprise −log2 p ≤ μ (at least one)."""
    ids, p = sorted_candidates(logits)
    size = len(ids)
    for i in range(len(ids)):
        if -math.log(p[i]) / LN2 > mu:
            size = i
            break
    size = max(size, 1)
    return ids[:size], p[:size]


def mirostat_v1_keep(logits, mu, m, n_vocab):
    """llama.cpp mirostat (v1): Zipf exponent from the top m, then top-k."""
    ids, p = sorted_candidates(logits)
    n = len(ids)
    sum_ti_bi = sum_ti_sq = 0.0
    for i in range(min(m - 1, n - 1)):
        t_i = math.log((i + 2) / (i + 1))
        b_i = math.log(p[i] / p[i + 1])
        sum_ti_bi += t_i * b_i
        sum_ti_sq += t_i * t_i
    if sum_ti_sq == 0:
        k = 1  # one candidate: any k keeps it
    else:
        s_hat = sum_ti_bi / sum_ti_sq
        eps = s_hat - 1
        with np.errstate(over="ignore", divide="ignore"):
            # eps / (1 − V^−eps) → 1/ln V at eps = 0 (llama.cpp computes 0/0 there)
            ratio = 1 / math.log(n_vocab) if eps == 0 else eps / (1 - float(n_vocab) ** (-eps))
            base = ratio * 2.0**mu
            k = np.float64(base) ** (1 / s_hat) if s_hat != 0 else (np.inf if base > 1 else (1.0 if base == 1 else 0.0))
        k = int(min(k, n)) if np.isfinite(k) else n
    k = min(max(k, 1), n)
    return ids[:k], p[:k]


def mirostat_trajectory(logits_seq, chosen, tau, eta, version, m=100):
    """Run mirostat over a sequence of logits with the given sampled tokens: returns the
    μ before each step (T + 1 values), the kept ids and the renormalised q of each step."""
    mu = 2.0 * tau
    mus, keeps, qs = [mu], [], []
    for logits, tok in zip(logits_seq, chosen, strict=True):
        V = len(logits)
        if version == 2:
            ids, p = mirostat_v2_keep(logits, mu)
        else:
            ids, p = mirostat_v1_keep(logits, mu, m, V)
        q = renormalised(V, ids, p)
        keeps.append(ids)
        qs.append(q)
        if q[tok] <= 0:
            raise AssertionError(f"token {tok} is outside the reference support {sorted(ids)}")
        mu = mu - eta * (-math.log(q[tok]) / LN2 - tau)
        mus.append(mu)
    return np.array(mus), keeps, np.array(qs)


# --- XTC ------------------------------------------------------------------------------


def xtc_keep(logits, threshold, probability, min_keep, chance):
    """llama.cpp's XTC on the finite tokens; ``chance`` is its uniform draw. Returns kept ids."""
    ids, p = sorted_candidates(logits)
    if probability <= 0 or threshold > 0.5 or len(ids) < 2 or chance > probability:
        return ids
    pos_last = 0
    for i in range(len(ids)):
        if p[i] >= threshold:
            pos_last = i
        else:
            break
    if len(ids) - pos_last >= min_keep and pos_last > 0:
        return ids[pos_last:]
    return ids


# --- DRY ------------------------------------------------------------------------------


def dry_penalised(logits, last_tokens, multiplier, base, allowed_length, penalty_last_n, breakers):
    """llama.cpp's DRY on ``logits`` after accepting ``last_tokens`` (a port of
    ``llama_sampler_dry_apply``: restart sequences, reverse Z-algorithm, max repeat per token).
    ``penalty_last_n = -1``: the whole context. ``breakers``: token-id sequences."""
    logits = np.array(logits, np.float64)
    if multiplier == 0.0 or base < 1.0 or penalty_last_n == 0:
        return logits
    ctx_size = len(last_tokens)
    eff = ctx_size if penalty_last_n == -1 else max(penalty_last_n, 0)
    buf = list(last_tokens)[-eff:] if eff > 0 else []
    last_n_repeat = min(len(buf), eff, ctx_size)
    if last_n_repeat <= allowed_length:
        return logits

    def rat(i):  # i-th token from the end
        return buf[len(buf) - 1 - i]

    heads = {}
    for b in breakers:
        heads.setdefault(int(b[0]), []).append([int(t) for t in b[1:]])
    rep_limit = last_n_repeat
    for i in range(last_n_repeat):
        tails = heads.get(rat(i))
        if tails is None:
            continue
        longest = -1
        for tail in tails:
            seq_len = len(tail)
            if seq_len > longest and seq_len <= i and all(tail[o] == rat(i - o - 1) for o in range(seq_len)):
                longest = seq_len
        if longest >= 0:
            rep_limit = i - longest
            break
    if rep_limit < allowed_length:
        return logits

    count = [0] * last_n_repeat
    last = last_n_repeat - 1
    rt = lt = 0
    for k in range(1, last_n_repeat):
        if k > rt:
            n = 0
            while n + k < last_n_repeat and rat(n) == rat(n + k):
                n += 1
            count[last - k] = min(n, rep_limit)
            if n > 0:
                lt, rt = k, k + n - 1
        else:
            p = k - lt
            right_part_len = rt - k + 1
            if count[last - p] < right_part_len:
                count[last - k] = min(count[last - p], rep_limit)
            else:
                i = rt + 1
                while i < last_n_repeat and rat(i) == rat(i - k):
                    i += 1
                count[last - k] = min(i - k, rep_limit)
                lt, rt = k, i - 1

    max_repeat = {}
    for i in range(last_n_repeat - 1):
        if count[i] >= allowed_length:
            tok = rat(last_n_repeat - 2 - i)
            if tok not in max_repeat or max_repeat[tok] < count[i]:
                max_repeat[tok] = count[i]

    max_exponent = int(88.7228391 / math.log(base)) if base > 1.000001 else 0
    singles = {int(b[0]) for b in breakers if len(b) == 1}
    for tok, rep in max_repeat.items():
        if tok in singles or not 0 <= tok < len(logits):
            continue
        exp = rep - allowed_length
        if max_exponent > 0 and exp > max_exponent:
            exp = max_exponent
        logits[tok] -= multiplier * base**exp
    return logits


# --- two sources of scores ------------------------------------------------------------


def cfg_scores(cond, uncond, g):
    """transformers' unbatched CFG: g·(log_softmax(cond) − log_softmax(uncond)) + log_softmax(uncond)."""
    lc, lu = log_softmax(cond), log_softmax(uncond)
    with np.errstate(invalid="ignore"):
        return np.where(lc > -np.inf, g * (lc - lu) + lu, -np.inf)


def contrastive_scores(expert, amateur, alpha, beta=1.0, amateur_temperature=1.0):
    """Li et al. (2023): log p_e − β·log p_a on V_head = {p_e ≥ α·max p_e}, −inf elsewhere."""
    le = log_softmax(expert)
    la = log_softmax(np.asarray(amateur, np.float64) / amateur_temperature)
    head = le >= le.max() + math.log(alpha) if alpha > 0 else le > -np.inf
    return np.where(head, le - beta * la, -np.inf)


def relative_top_filter(final, base, relative_top=0.1, min_tokens_to_keep=1):
    """transformers' ``_relative_top_filter`` for one row."""
    sn, bn = log_softmax(final), log_softmax(base)
    min_thresh = np.sort(sn)[::-1][min_tokens_to_keep - 1]
    thresh = min(min_thresh, sn.max() + math.log(relative_top))
    bn = np.where(sn < thresh, -1e-3, bn)
    sn = np.where(sn < thresh, -np.inf, sn)
    return sn, bn


def dola_js(final, candidates):
    """transformers' JS divergences (mean over the vocabulary) of one row, shape (J,)."""
    pf = np.exp(log_softmax(final))
    out = []
    for c in candidates:
        pc = np.exp(log_softmax(c))
        m = 0.5 * (pf + pc)
        with np.errstate(divide="ignore", invalid="ignore"):
            kl1 = np.where(m > 0, m * (np.log(np.where(m > 0, m, 1)) - log_softmax(final)), 0.0).mean()
            kl2 = np.where(m > 0, m * (np.log(np.where(m > 0, m, 1)) - log_softmax(c)), 0.0).mean()
        out.append(0.5 * (kl1 + kl2))
    return np.array(out)


def dola_scores(final, candidates, relative_top=0.1):
    """transformers' ``_dola_select_contrast`` for one row: (scores, premature index)."""
    candidates = np.atleast_2d(np.asarray(candidates, np.float64))
    j = 0 if len(candidates) == 1 else int(np.argmax(dola_js(final, candidates)))
    sn, bn = relative_top_filter(final, candidates[j], relative_top)
    return sn - bn, j


def repetition_penalty(scores, history, penalty):
    """transformers' RepetitionPenaltyLogitsProcessor for one row."""
    s = np.array(scores, np.float64)
    for tok in set(int(t) for t in history):
        s[tok] = s[tok] * penalty if s[tok] < 0 else s[tok] / penalty
    return s


def softmax(x):
    return np.exp(log_softmax(x))


# --- llama.cpp's truncation samplers with min_keep, and its default chain ---------------
#
# Each takes and returns a candidate list (ids, logits) as llama.cpp's token-data array holds
# it: removed tokens leave the list, the survivors keep their logits. Sorted by descending
# logit, ties by lowest id (the library's rule; llama.cpp's partial sorts leave it open).


def candidates(logits):
    """(ids, logits) of the finite logits, sorted (llama.cpp's array after a full sort)."""
    x = np.asarray(logits, np.float64)
    ids = np.flatnonzero(x > -np.inf)
    ids = ids[np.lexsort((ids, -x[ids]))]
    return ids, x[ids]


def _probs(lg):
    return np.exp(log_softmax(lg))


def lc_top_k(ids, lg, k):
    """``llama_sampler_top_k_impl``: the first ``k`` (k <= 0: off)."""
    return (ids, lg) if k <= 0 else (ids[:k], lg[:k])


def lc_top_p(ids, lg, p, min_keep):
    """``llama_sampler_top_p_apply``: the shortest prefix with mass >= p and >= min_keep tokens."""
    if p >= 1.0:
        return ids, lg
    cum, last = 0.0, len(ids)
    for i, pi in enumerate(_probs(lg)):
        cum += pi
        if cum >= p and i + 1 >= min_keep:
            last = i + 1
            break
    return ids[:last], lg[:last]


def lc_min_p(ids, lg, p, min_keep):
    """``llama_sampler_min_p_apply`` (sorted path): logit >= max + log p, or i < min_keep."""
    if p <= 0.0 or not len(ids):
        return ids, lg
    cut = lg[0] + math.log(p)
    i = 1
    while i < len(ids) and not (lg[i] < cut and i >= min_keep):
        i += 1
    return ids[:i], lg[:i]


def lc_typical(ids, lg, p, min_keep):
    """``llama_sampler_typical_apply``: by |−log p − H| ascending (stable), the shortest prefix
    with mass > p and >= min_keep tokens; the survivors are re-sorted by logit."""
    if p >= 1.0:
        return ids, lg
    pr = _probs(lg)
    with np.errstate(divide="ignore", invalid="ignore"):
        ent = -np.sum(np.where(pr > 0, pr * np.log(np.where(pr > 0, pr, 1.0)), 0.0))
        shifted = np.abs(-log_softmax(lg) - ent)
    order = np.argsort(shifted, kind="stable")
    cum, last = 0.0, len(order)
    for i, j in enumerate(order):
        cum += pr[j]
        if cum > p and (min_keep == 0 or i >= min_keep - 1):
            last = i + 1
            break
    keep = np.sort(order[:last])  # back to logit order (positions in the sorted list)
    return ids[keep], lg[keep]


def lc_top_n_sigma(ids, lg, n):
    """``llama_sampler_top_n_sigma_apply`` (n <= 0: off): logit >= max − n·σ."""
    if n <= 0 or len(ids) <= 1:
        return ids, lg
    std = np.sqrt(np.mean((lg - lg.mean()) ** 2))
    keep = ~(lg < lg.max() - n * std)
    return ids[keep], lg[keep]


def lc_xtc(ids, lg, threshold, probability, min_keep, chance):
    """``llama_sample_xtc_apply`` on the candidate list (``chance``: its uniform draw)."""
    kept = set(xtc_keep(_scatter(ids, lg), threshold, probability, min_keep, chance).tolist())
    sel = np.array([i in kept for i in ids], bool)
    return ids[sel], lg[sel]


def _scatter(ids, lg):
    out = np.full(ids.max() + 1, -np.inf)
    out[ids] = lg
    return out


def lc_penalties(logits, history, repeat, freq, present):
    """``llama_sampler_penalties_apply`` over the whole history: ``logit <= 0 ? ·repeat : /repeat``,
    then ``− count·freq − (count > 0)·present``."""
    x = np.array(logits, np.float64)
    for tok, count in zip(*np.unique(np.asarray(history, int), return_counts=True), strict=True):
        x[tok] = x[tok] * repeat if x[tok] <= 0 else x[tok] / repeat
        x[tok] -= count * freq + (count > 0) * present
    return x


def llama_chain(logits, history, *, repeat=1.0, freq=0.0, present=0.0, top_n_sigma=-1.0, top_k=40,
                typical=1.0, top_p=0.95, min_p=0.05, xtc=(0.1, 0.0, 1, 1.0), temp=0.8, min_keep=0):
    """llama.cpp's default chain (penalties → top-nσ → top-k → typical → top-p → min-p → XTC →
    temperature → dist) for one row; returns the distribution ``dist`` samples from."""
    x = lc_penalties(logits, history, repeat, freq, present)
    ids, lg = candidates(x)
    ids, lg = lc_top_n_sigma(ids, lg, top_n_sigma)
    ids, lg = lc_top_k(ids, lg, top_k)
    ids, lg = lc_typical(ids, lg, typical, min_keep)
    ids, lg = lc_top_p(ids, lg, top_p, min_keep)
    ids, lg = lc_min_p(ids, lg, min_p, min_keep)
    ids, lg = lc_xtc(ids, lg, *xtc)
    q = np.zeros(len(logits))
    if temp <= 0:  # llama_sampler_temp_impl: only the (first) maximum survives
        q[ids[np.argmax(lg)]] = 1.0
        return q
    q[ids] = _probs(lg / temp)
    return q
