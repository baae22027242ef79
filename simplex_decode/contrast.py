"""Score transforms that contrast two sources of scores: CFG, contrastive decoding, DoLa.

Each reads a second logits array over the same vocabulary from ``ctx.second_logits``
(``Decoder.probs(logits, second_logits=...)``; :func:`simplex_decode.generate` computes it in
the same jitted loop, see :class:`simplex_decode.SecondStream`):

* :class:`CFG` — classifier-free guidance: the second stream is the model on an
  unconditional or negative prompt (transformers' ``UnbatchedClassifierFreeGuidanceLogitsProcessor``,
  llama.cpp's guidance);
* :class:`AmateurContrast` — contrastive decoding's ``−β·log p_amateur`` (Li et al., 2023);
  with the plausibility rule ``MinP(alpha, from_model=True)`` (``p_expert ≥ α·max p_expert``)
  the decoder is an Objective like any other (:func:`simplex_decode.contrastive`);
* :class:`DoLa` — decoding by contrasting layers (Chuang et al., 2024): the second source
  holds the logits of J candidate early layers, ``batch + (J, V)``, and each row contrasts
  the final layer with the candidate of largest Jensen–Shannon divergence
  (:func:`simplex_decode.dola`).

A token the second source rules out (log-probability ``-inf``) while the first allows it
would get an infinite contrast; its log-probability under the second source is taken as
``-1e20`` instead, so it gets a finite contrast of that order (it wins wherever the limit
of the objective says it should, e.g. CFG with ``g > 1``), never NaN. Finite
log-probabilities are used as they are, and tokens the first source bans (``-inf``) stay
banned.
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp

from ._numerics import masked_log_softmax
from ._pytree import param, per_row, pytree_dataclass
from .scores import ScoreTransform

__all__ = ["CFG", "AmateurContrast", "DoLa", "second_log_probs", "js_divergence"]


def _second(owner, ctx, scores, *, candidates=False):
    second = ctx.second_logits
    if second is None:
        raise ValueError(
            f"{owner}: reads a second logits array; pass second_logits= to probs / sample / solve "
            "(generate: second=sd.SecondStream(...), or a step that returns early-layer logits)"
        )
    ok = second.shape == scores.shape or (candidates and second.shape[:-2] + second.shape[-1:] == scores.shape)
    if not ok:
        want = f"{scores.shape}" + (f" or batch + (J, V) = {scores.shape[:-1]} + (J, {scores.shape[-1]})"
                                    if candidates else "")
        raise ValueError(f"{owner}: `second_logits` must have shape {want}, got {second.shape}")
    return second


def _log_probs(x):
    return masked_log_softmax(x, x > -jnp.inf)


#: the log-probability a second source's banned token is given (see the module docstring)
RULED_OUT = -1e20


def second_log_probs(x):
    """``log softmax(x)`` with ``-inf`` replaced by :data:`RULED_OUT` (see the module docstring)."""
    lp = _log_probs(x)
    return jnp.where(lp > -jnp.inf, lp, RULED_OUT)


@pytree_dataclass
class CFG(ScoreTransform):
    """Classifier-free guidance: ``s ← ℓ_u + g·(ℓ_c − ℓ_u)`` with ``ℓ = log_softmax``.

    ``ℓ_c`` from the current scores (the model on the prompt), ``ℓ_u`` from
    ``second_logits`` (the model on an unconditional or negative prompt), ``g =
    guidance_scale ≥ 0``: ``g = 1`` is the conditional model, ``g > 1`` pushes away from the
    second prompt, ``g = 0`` samples from it (transformers' unbatched CFG and llama.cpp's
    guidance; transformers' batched MusicGen variant mixes the raw logits, which differs by
    a per-row constant: the same distribution). Usually the first transform.

    Example:
      >>> import jax.numpy as jnp, simplex_decode as sd
      >>> cond, neg = jnp.log(jnp.array([0.5, 0.3, 0.2])), jnp.log(jnp.array([0.6, 0.2, 0.2]))
      >>> q = sd.cfg(2.0).probs(cond, second_logits=neg)   # ∝ cond² / neg
      >>> [round(float(v), 4) for v in q]
      [0.3906, 0.4219, 0.1875]
    """

    guidance_scale: Any = param(lo=0.0, doc="g: 1 = the conditional model, > 1 pushes away from the second prompt")

    def __call__(self, scores, ctx):
        uncond = second_log_probs(_second("CFG", ctx, scores))
        cond = _log_probs(scores)
        g = per_row(self.guidance_scale, scores.shape[:-1], scores.dtype)
        # g·ℓ_c + (1 − g)·ℓ_u: transformers' g·(ℓ_c − ℓ_u) + ℓ_u, exact at g = 1 even for ruled-out tokens
        return jnp.where(cond > -jnp.inf, g * cond + (1.0 - g) * uncond, -jnp.inf)


@pytree_dataclass
class AmateurContrast(ScoreTransform):
    """Contrastive decoding's score (Li et al., 2023): ``s ← log p_expert − β·log p_amateur``.

    ``p_expert = softmax`` of the current scores, ``p_amateur = softmax(second_logits /
    amateur_temperature)``. ``beta ≥ 0`` (1 in the paper; 0 is the expert alone) and
    ``amateur_temperature > 0`` (the paper tunes it in [0.5, 1.5]) are leaves. Combine with
    the plausibility rule ``MinP(alpha, from_model=True)`` (keep ``p_expert ≥ α·max
    p_expert``): :func:`simplex_decode.contrastive`.
    """

    beta: Any = param(1.0, lo=0.0, doc="the weight of the amateur's log-probability")
    amateur_temperature: Any = param(1.0, lo=0.0, lo_open=True, doc="the amateur's temperature")

    def __call__(self, scores, ctx):
        amateur = _second("AmateurContrast", ctx, scores)
        batch, dtype = scores.shape[:-1], scores.dtype
        la = second_log_probs(amateur / per_row(self.amateur_temperature, batch, dtype))
        le = _log_probs(scores)
        return jnp.where(le > -jnp.inf, le - per_row(self.beta, batch, dtype) * la, -jnp.inf)


def js_divergence(final, candidates):
    """transformers' DoLa divergence between ``softmax(final)`` ``(..., V)`` and each
    candidate's softmax ``(..., J, V)``: ``½(KL(p_f‖m) + KL(p_j‖m))`` with ``m = ½(p_f + p_j)``,
    each KL averaged (not summed) over the vocabulary as ``F.kl_div(..).mean(-1)`` does;
    shape ``(..., J)``."""
    lf = _log_probs(final)[..., None, :]
    lj = _log_probs(candidates)
    pf, pj = jnp.exp(lf), jnp.exp(lj)
    m = 0.5 * (pf + pj)
    logm = jnp.log(jnp.where(m > 0, m, 1.0))

    def kl_mean(logp):
        return jnp.mean(jnp.where(m > 0, m * (logm - logp), 0.0), axis=-1)

    return 0.5 * (kl_mean(lf) + kl_mean(lj))


@pytree_dataclass
class DoLa(ScoreTransform):
    """DoLa's contrast (Chuang et al., 2024; transformers' ``_dola_select_contrast``):
    ``s ← log p_final − log p_premature``.

    ``second_logits`` holds the logits of J candidate early layers, ``batch + (J, V)`` (or
    ``batch + (V,)`` for one); the premature layer of each row is the candidate with the
    largest Jensen–Shannon divergence from the final layer (:func:`js_divergence`; ties:
    the first candidate). transformers averages the divergence over the batch and picks
    one layer for all rows; here each row picks its own (the paper's per-token rule, and
    transformers' at batch size 1), so a row's result never depends on its neighbours.
    With the plausibility rule ``MinP(alpha, from_model=True)`` (transformers'
    ``relative_top = 0.1``) and a repetition penalty (1.2 recommended):
    :func:`simplex_decode.dola`.
    """

    def premature(self, final, candidates):
        """Index ``(...,)`` of each row's premature layer among the candidates."""
        js = js_divergence(final, candidates)
        best = jnp.max(js, axis=-1, keepdims=True)
        J = js.shape[-1]
        return jnp.min(jnp.where(js == best, jnp.arange(J), J), axis=-1).clip(0, J - 1)

    def __call__(self, scores, ctx):
        cand = _second("DoLa", ctx, scores, candidates=True)
        if cand.ndim == scores.ndim:
            cand = cand[..., None, :]
        j = self.premature(scores, cand)
        base = jnp.take_along_axis(cand, j[..., None, None], axis=-2)[..., 0, :]
        lf = _log_probs(scores)
        return jnp.where(lf > -jnp.inf, lf - second_log_probs(base), -jnp.inf)
