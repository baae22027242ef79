"""Adaptive temperature: score transforms whose temperature is a function of the distribution.

Each transform computes, per row, a temperature ``T(p)`` from ``p = softmax(s)`` of the
scores it receives (over the tokens whose score is finite at that point of the transform
chain) and returns ``s / T(p)``. With the entropy term this decodes
``argmax_q <q, s/T(p)> + H(q) = softmax(s / T(p))``: the objective is the ordinary
softmax objective, with a temperature chosen by the row's own uncertainty.

``T(p) = 0`` means greedy. A data-dependent temperature cannot flag greedy rows ahead of
time (``ScoreTransform.greedy_rows`` sees only the batch shape), so a zero-temperature
row keeps only its best token (the lowest id among ties) and bans the rest: every
objective then returns the one-hot argmax, exactly as ``Temperature(0)`` does.
:meth:`temperature_of` returns the per-row ``T`` for diagnostics.
"""

from __future__ import annotations

from typing import Any, ClassVar

import jax
import jax.numpy as jnp

from ._numerics import cond, row_sum, softmax_stats
from ._pytree import check_range, param, per_row, pytree_dataclass
from ._select import argmax
from .scores import ScoreTransform

__all__ = ["entropy_stats", "AdaptiveTemperature", "EDT", "DynamicTemperature", "EntropixTemperature"]

_LN2 = 0.6931471805599453


def entropy_stats(scores):
    """``(H, varentropy, n)`` of ``softmax(scores)`` over the finite scores, per row (nats).

    ``H = −Σ p log p``; varentropy ``= Σ p (log p + H)²`` (the variance of the surprisal);
    ``n`` = the number of finite scores. Shapes ``(...,)``.
    """
    finite = scores > -jnp.inf
    p, logp, ent, _, _ = softmax_stats(scores, finite)
    dev = jnp.where(p > 0, logp + ent, 0.0)
    var = row_sum(p * dev * dev, keepdims=False)
    return ent[..., 0], var, jnp.sum(finite, axis=-1)


def _apply(scores, t):
    """``s / t`` per row; rows with ``t = 0`` keep only their first argmax (computed only
    when some row of the batch has ``t = 0``)."""
    t = t[..., None].astype(scores.dtype)
    tempered = scores / jnp.where(t > 0, t, 1.0)

    def with_greedy_rows(tempered, scores):
        ids = jax.lax.broadcasted_iota(jnp.int32, scores.shape, scores.ndim - 1)
        first = ids == argmax(scores)[..., None]
        return jnp.where(t > 0, tempered, jnp.where(first, scores, -jnp.inf))

    return cond(jnp.any(t <= 0), with_greedy_rows, lambda tempered, _: tempered, tempered, scores)


class AdaptiveTemperature(ScoreTransform):
    """Base class of temperatures computed from the scores (``s ← s / T(s)``, per row).

    ``T`` reads ``softmax(s)``, which a shift does not change, so ``s / T(s)`` is
    shift-equivariant (an overflowing row is recomputed from ``s − max s``)."""

    shift_equivariant: ClassVar[bool] = True
    rescales: ClassVar[bool] = True

    def temperature_of(self, scores):  # pragma: no cover - interface
        raise NotImplementedError

    def __call__(self, scores, ctx):
        return _apply(scores, self.temperature_of(scores))


@pytree_dataclass
class EDT(AdaptiveTemperature):
    """Entropy-based dynamic temperature (Zhang et al., 2024): ``T = t0 · N^{θ / H(p)}``.

    Confident rows (small entropy ``H``, in nats) get a temperature near 0, uncertain ones
    approach ``t0``. Guard: ``H = 0`` gives ``T = 0`` (greedy) when ``θ > 0`` and ``N < 1``
    (the limit), ``T = t0`` when ``θ = 0`` or ``N = 1``. ``N ∈ (0, 1]`` (the paper uses
    0.8), ``θ ≥ 0``, ``t0 ≥ 0``; all are leaves (per-row arrays work).

    Example:
      >>> import jax.numpy as jnp, simplex_decode as sd
      >>> t = sd.EDT(t0=1.0, theta=0.5).temperature_of(jnp.array([[5.0, 0.0, 0.0], [0.0, 0.0, 0.0]]))
      >>> [round(float(v), 4) for v in t]
      [0.2474, 0.9034]
    """

    t0: Any = param(1.0, lo=0.0, doc="the temperature of uncertain rows")
    theta: Any = param(1.0, lo=0.0, doc="θ, the entropy scale")
    n: Any = param(0.8, lo=0.0, hi=1.0, lo_open=True, doc="N, the base of the exponent")

    def temperature_of(self, scores):
        ent, _, _ = entropy_stats(scores)
        batch = ent.shape
        t0 = per_row(self.t0, batch, ent.dtype)[..., 0]
        theta = per_row(self.theta, batch, ent.dtype)[..., 0]
        n = per_row(self.n, batch, ent.dtype)[..., 0]
        active = (theta > 0) & (n < 1)
        positive = ent > 0
        expo = jnp.where(active & positive, theta / jnp.where(positive, ent, 1.0), 0.0)
        return jnp.where(active & ~positive, 0.0, t0 * n**expo)


@pytree_dataclass
class DynamicTemperature(AdaptiveTemperature):
    """llama.cpp's dynamic temperature (``temp_ext``, "dynatemp"):
    ``T = t_min + (t_max − t_min) · (H / H_max)^exponent`` with ``H_max = log n`` over the
    ``n`` tokens with a finite score. A row with fewer than two such tokens is left
    unscaled (as llama.cpp does). :meth:`from_llama_cpp` maps llama.cpp's
    ``(temp, dynatemp_range, dynatemp_exponent)`` to ``t_min = max(0, temp − range)``,
    ``t_max = temp + range``.
    """

    t_min: Any = param(0.0, lo=0.0, doc="the temperature at zero entropy")
    t_max: Any = param(2.0, lo=0.0, doc="the temperature at maximal entropy")
    exponent: Any = param(1.0, lo=0.0, doc="the exponent on the normalised entropy")
    __rules__ = (("`t_max` must be >= `t_min`", lambda self: self.t_max >= self.t_min, ("t_min", "t_max")),)

    @classmethod
    def from_llama_cpp(cls, temp, dynatemp_range, exponent=1.0) -> DynamicTemperature:
        """The transform llama.cpp applies for ``--temp``, ``--dynatemp-range``, ``--dynatemp-exp``."""
        temp = check_range("DynamicTemperature", "temp", temp, lo=0.0)
        rng = check_range("DynamicTemperature", "dynatemp_range", dynatemp_range, lo=0.0)
        return cls(t_min=jnp.maximum(temp - rng, 0.0), t_max=temp + rng, exponent=exponent)

    def temperature_of(self, scores):
        ent, _, count = entropy_stats(scores)
        batch = ent.shape
        t_min = per_row(self.t_min, batch, ent.dtype)[..., 0]
        t_max = per_row(self.t_max, batch, ent.dtype)[..., 0]
        expo = per_row(self.exponent, batch, ent.dtype)[..., 0]
        several = count > 1
        h_max = jnp.log(jnp.where(several, count, 2).astype(ent.dtype))
        ratio = jnp.clip(ent / h_max, 0.0, 1.0)
        return jnp.where(several, t_min + (t_max - t_min) * ratio**expo, 1.0)


@pytree_dataclass
class EntropixTemperature(AdaptiveTemperature):
    """An entropy/varentropy-gated temperature in the spirit of entropix's sampler.

    With the entropy ``H`` and varentropy ``V`` of ``p`` in bits (as entropix measures
    them), the rules are checked in entropix's order:

    * ``H < low_entropy`` and ``V < low_varentropy`` ("flowing"): greedy (``T = 0``);
    * ``H < high_entropy`` and ``V > high_varentropy`` ("exploring forks"): ``t_fork``;
    * ``H > high_entropy`` and ``V > high_varentropy`` ("resampling in the mist"): ``t_mist``;
    * otherwise: ``t``.

    Defaults are entropix's thresholds (0.1, 0.1, 5.0, 5.0) and base temperatures (1.2, 2.0)
    without its attention-based adjustments; its "insert a clarifying token" branch has no
    per-token counterpart and falls to ``t``. All parameters are leaves.
    """

    t: Any = param(1.0, lo=0.0, doc="the temperature when no rule applies")
    t_fork: Any = param(1.2, lo=0.0, doc="the temperature of exploring forks")
    t_mist: Any = param(2.0, lo=0.0, doc="the temperature of resampling in the mist")
    low_entropy: Any = param(0.1, lo=0.0, doc="bits")
    low_varentropy: Any = param(0.1, lo=0.0, doc="bits²")
    high_entropy: Any = param(5.0, lo=0.0, doc="bits")
    high_varentropy: Any = param(5.0, lo=0.0, doc="bits²")

    def temperature_of(self, scores):
        ent, var, _ = entropy_stats(scores)
        h, v = ent / _LN2, var / (_LN2 * _LN2)
        batch = ent.shape

        def row(x):
            return per_row(x, batch, ent.dtype)[..., 0]

        hi_v = v > row(self.high_varentropy)
        return jnp.select(
            [
                (h < row(self.low_entropy)) & (v < row(self.low_varentropy)),
                (h < row(self.high_entropy)) & hi_v,
                (h > row(self.high_entropy)) & hi_v,
            ],
            [jnp.zeros_like(h), row(self.t_fork), row(self.t_mist)],
            row(self.t),
        )
