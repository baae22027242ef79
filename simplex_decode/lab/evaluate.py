"""Running decoders on a trained lab model and summarising with confidence intervals.

* :func:`generate_codes` — answers (task codes) of greedy / sampled / beam / lookahead decoding;
* :func:`sample_metrics` — per-problem single-sample accuracy, majority vote and pass@k from
  ``K`` samples per problem;
* :func:`bootstrap_ci` — a percentile bootstrap over *problems* (the unit that varies
  between benchmarks), never over samples of one problem.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from .. import presets
from ..generation import beam_search, generate, lookahead, majority_vote, pass_at_k

__all__ = ["Estimate", "SampleMetrics", "bootstrap_ci", "first_token_metrics", "generate_codes", "generate_tokens", "paired_difference",
           "sample_metrics", "search_codes"]


class Estimate(NamedTuple):
    """A mean over problems and its percentile-bootstrap interval."""

    mean: float
    lo: float
    hi: float
    n: int

    def __str__(self):
        return f"{100 * self.mean:.1f} [{100 * self.lo:.1f}, {100 * self.hi:.1f}]"


def bootstrap_ci(values, *, level: float = 0.95, n_boot: int = 2000, seed: int = 0) -> Estimate:
    """Mean of per-problem ``values`` ``(n,)`` with a percentile bootstrap ``level`` interval.

    Problems are resampled with replacement (``n_boot`` times, ``seed`` fixed): the interval
    covers the variation from *which problems* were drawn, the honest unit for a benchmark.

    Example:
      >>> est = bootstrap_ci(np.array([1, 0, 1, 1, 0, 1, 1, 1.0]))
      >>> est.mean, est.lo <= est.mean <= est.hi
      (0.75, True)
    """
    v = np.asarray(values, np.float64)
    if v.ndim != 1 or v.size == 0:
        raise ValueError(f"bootstrap_ci: `values` must be a non-empty 1-D array, got shape {v.shape}")
    if not 0 < level < 1:
        raise ValueError(f"bootstrap_ci: `level` must be in (0, 1), got {level!r}")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, v.size, (n_boot, v.size))
    means = v[idx].mean(axis=1)
    a = (1 - level) / 2
    return Estimate(float(v.mean()), float(np.quantile(means, a)), float(np.quantile(means, 1 - a)), int(v.size))


def paired_difference(a, b, **kw) -> Estimate:
    """Bootstrap interval of ``mean(a − b)`` over the same problems (paired)."""
    return bootstrap_ci(np.asarray(a, np.float64) - np.asarray(b, np.float64), **kw)


def _chunks(prompts, batch):
    """(start, count, prompts) in chunks of one shape (the last padded by repeating rows),
    so a long evaluation compiles once."""
    n = len(prompts)
    size = min(batch, n)
    for s in range(0, n, size):
        chunk = prompts[s:s + size]
        count = len(chunk)
        if count < size:
            chunk = np.concatenate([chunk, np.repeat(chunk[-1:], size - count, axis=0)])
        yield s, count, chunk


def generate_tokens(model, task, examples, *, decoder=None, key=None, num_samples: int | None = None,
                    batch: int = 1024, diagnostics: bool = False):
    """Generated ids of ``decoder`` (default greedy) on ``examples``: ``(n, T)`` or ``(n, K, T)``.

    Runs :func:`simplex_decode.generate` on the prompts in batches of ``batch`` rows
    (prompts × samples; one compiled shape), ``max_new_tokens = task.answer_len``, one key
    per prompt (``fold_in(key, i)`` for problem ``i``). With ``diagnostics=True`` also
    returns the mean per-token KL(q ‖ p) of each sample along its answer (shape ``(n,)`` /
    ``(n, K)``).
    """
    decoder = presets.greedy() if decoder is None else decoder
    key = jax.random.key(0) if key is None else key
    K = 1 if num_samples is None else int(num_samples)
    per = max(1, batch // K)
    toks, kls = [], []
    for start, count, prompts in _chunks(examples.prompts, per):
        out = generate(
            model.step, model.params, prompts, decoder=decoder,
            key=jax.vmap(lambda i: jax.random.fold_in(key, i))(start + jnp.arange(len(prompts))),
            max_new_tokens=task.answer_len, eos_id=task.eos_id, cache=model.cache, num_samples=num_samples,
            pad_id=task.pad_id, return_diagnostics=diagnostics,
        )
        toks.append(np.asarray(out.tokens)[:count])
        if diagnostics:
            kl = np.asarray(out.diagnostics["kl_to_model"])[:count]
            n_gen = np.maximum(np.asarray(out.lengths)[:count], 1)
            kls.append(kl.sum(-1) / n_gen)
    toks = np.concatenate(toks)
    return (toks, np.concatenate(kls)) if diagnostics else toks


def generate_codes(model, task, examples, *, diagnostics: bool = False, **kwargs):
    """Answer codes (``task.answer_codes``) of :func:`generate_tokens`: ``(n,)`` or ``(n, K)``
    (and the per-sample KL with ``diagnostics=True``)."""
    out = generate_tokens(model, task, examples, diagnostics=diagnostics, **kwargs)
    if diagnostics:
        return task.answer_codes(out[0]), out[1]
    return task.answer_codes(out)


def search_codes(model, task, examples, *, method: str, batch: int = 512, **kwargs):
    """Answer codes of a sequence search: ``method="beam"`` (``beam_width``, best beam) or
    ``"lookahead"`` (``depth``, ``num_candidates``), ``(n,)``."""
    if method not in ("beam", "lookahead"):
        raise ValueError(f"search_codes: `method` must be 'beam' or 'lookahead', got {method!r}")
    codes = []
    common = dict(max_new_tokens=task.answer_len, eos_id=task.eos_id, cache=model.cache, pad_id=task.pad_id)
    for _, count, prompts in _chunks(examples.prompts, batch):
        if method == "beam":
            tokens = np.asarray(beam_search(model.step, model.params, prompts, **common, **kwargs).tokens)[:, 0]
        else:
            tokens = np.asarray(lookahead(model.step, model.params, prompts, **common, **kwargs).tokens)
        codes.append(task.answer_codes(tokens[:count]))
    return np.concatenate(codes)


class SampleMetrics(NamedTuple):
    """Per-problem ``(n,)`` arrays: expected single-sample accuracy (the fraction of the K
    samples that are right), majority vote (1 if the voted answer is right; malformed
    answers abstain) and pass@k (unbiased estimator from the K samples)."""

    single: np.ndarray
    majority: np.ndarray
    pass_k: np.ndarray


def sample_metrics(codes, truth, *, k: int | None = None) -> SampleMetrics:
    """Metrics of ``K`` samples per problem: ``codes`` ``(n, K)`` (``-1``: malformed), ``truth`` ``(n,)``.

    Example:
      >>> m = sample_metrics(np.array([[3, 3, 1], [2, -1, 2]]), np.array([1, 2]))
      >>> m.single.tolist(), m.majority.tolist(), m.pass_k.tolist()
      ([0.3333333333333333, 0.6666666666666666], [0.0, 1.0], [1.0, 1.0])
    """
    codes, truth = np.asarray(codes), np.asarray(truth)
    if codes.ndim != 2 or truth.shape != codes.shape[:1]:
        raise ValueError(f"sample_metrics: `codes` must be (n, K) and `truth` (n,), got {codes.shape}, {truth.shape}")
    K = codes.shape[1]
    k = K if k is None else int(k)
    right = codes == truth[:, None]
    votes = [majority_vote([int(c) if c >= 0 else None for c in row])[0] for row in codes]
    majority = np.array([v is not None and v == t for v, t in zip(votes, truth, strict=True)], np.float64)
    pk = np.asarray(pass_at_k(np.full(len(truth), K), right.sum(1), k), np.float64)
    return SampleMetrics(right.mean(1), majority, pk)


def _majority_correct(draws, answer):
    """Per replicate (rows of ``draws`` (M, K)): does the majority vote pick ``answer``?
    Ties go to the answer drawn first, as in :func:`simplex_decode.majority_vote`."""
    same = draws[:, :, None] == draws[:, None, :]
    counts = same.sum(-1)  # count of each draw's token within its replicate
    winner_pos = np.argmax(counts == counts.max(-1, keepdims=True), axis=-1)  # first draw with the top count
    return draws[np.arange(len(draws)), winner_pos] == answer


def first_token_metrics(q, answers, *, k: int = 8, replicates: int = 2000, seed: int = 0) -> SampleMetrics:
    """Metrics of ``k`` samples when the answer is the first generated token.

    ``q`` ``(n, V)``: the decoder's distribution at the answer step; ``answers`` ``(n,)``
    the correct token ids. Single-sample accuracy is exactly ``q(answer)`` and pass@k is
    exactly ``1 − (1 − q(answer))^k``; the probability that a majority vote over ``k``
    draws is right is estimated from ``replicates`` Monte Carlo votes per problem
    (standard error ≤ ``0.5/√replicates`` per problem).
    """
    q = np.asarray(q, np.float64)
    answers = np.asarray(answers)
    if q.ndim != 2 or answers.shape != q.shape[:1]:
        raise ValueError(f"first_token_metrics: `q` must be (n, V) and `answers` (n,), got {q.shape}, {answers.shape}")
    single = np.take_along_axis(q, answers[:, None], axis=1)[:, 0] / q.sum(1)
    rng = np.random.default_rng(seed)
    cdf = np.cumsum(q, axis=1)
    cdf /= cdf[:, -1:]
    majority = np.empty(len(q))
    for i in range(len(q)):
        u = rng.random((replicates, k))
        draws = np.minimum(np.searchsorted(cdf[i], u, side="right"), q.shape[1] - 1)
        majority[i] = _majority_correct(draws, answers[i]).mean()
    return SampleMetrics(single, majority, 1.0 - (1.0 - single) ** k)
