"""Score transforms: maps from the model's logits to the scores ``s`` of the objective.

A transform is a pytree dataclass with ``__call__(scores, ctx) -> scores``. They are applied
in order (``Objective.transforms``); ``ctx`` carries the untouched logits and, for
transforms that read it, the token history. Per-row parameters broadcast against the
logits' leading dimensions (a temperature of shape ``(B,)`` for logits ``(B, V)``).
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import jax.numpy as jnp

from ._pytree import param, per_row, pytree_dataclass

__all__ = ["ScoreTransform", "Temperature", "LogitBias"]


class ScoreTransform:
    """Base class of score transforms (``s ← T(s)``).

    Two facts a transform declares (class attributes; both False unless it says so):

    * ``shift_equivariant`` — adding a constant to a row of scores adds a constant to the
      transformed row (``T(s + c) = T(s) + c'``), so the decoded ``q`` is unchanged.
      :meth:`Objective.prepare <simplex_decode.Objective.prepare>` then recomputes a row
      that overflows (``logits / t`` near the float maximum) from its scores shifted by
      their maximum instead of reporting it;
    * ``rescales`` — the transform multiplies each row by a factor (a temperature). The
      factor amplifies the rounding of large scores (``5.000001 / 1e-4`` keeps the
      difference from ``5`` to 4 bits in float32), so where the chain is shift-equivariant
      from this transform on, ``prepare`` subtracts each row's maximum first: its output
      then starts at 0 and keeps every difference to full precision (same ``q``);
    * ``bans`` — the transform sets scores to ``-inf`` on purpose: a row it leaves with no
      finite score has an empty support (``Status.EMPTY_SUPPORT``), not an overflow
      (``Status.NONFINITE_SCORES``).
    """

    shift_equivariant: ClassVar[bool] = False
    rescales: ClassVar[bool] = False
    bans: ClassVar[bool] = False

    def __call__(self, scores, ctx):  # pragma: no cover - interface
        raise NotImplementedError

    def greedy_rows(self, batch_shape):
        """Rows this transform turns into argmax decoding (None: none)."""
        return None


@pytree_dataclass
class Temperature(ScoreTransform):
    """``s ← s / t``. ``t = 0`` means greedy (argmax of the scores within the support).

    In an Objective whose later transforms are all shift-equivariant the scores are
    shifted to a row maximum of 0 before they are divided (``(s − max s) / t``, the same
    distribution): finite logits then never overflow at any ``t > 0``, and near-ties keep
    their differences at low temperature.

    ``t`` may be a scalar or an array broadcastable to the batch shape (per-row
    temperatures); rows with ``t = 0`` are decoded greedily, the others sample.
    """

    t: Any = param(1.0, lo=0.0, doc="the temperature; 0 is greedy")
    shift_equivariant: ClassVar[bool] = True
    rescales: ClassVar[bool] = True

    def __call__(self, scores, ctx):
        t = per_row(self.t, scores.shape[:-1])
        # t = 0 rows are greedy (greedy_rows), and rows whose traced t is out of range get
        # Status.INVALID_PARAMETER (params_ok): the 1 below is never used as a temperature.
        inv = jnp.where(t > 0, 1.0 / jnp.where(t > 0, t, 1.0), 1.0)
        return scores * inv.astype(scores.dtype)

    def greedy_rows(self, batch_shape):
        return per_row(self.t, batch_shape)[..., 0] == 0


@pytree_dataclass
class LogitBias(ScoreTransform):
    """``s ← s + bias``: an additive bias of shape ``(V,)`` or ``(..., V)`` (OpenAI /
    vLLM ``logit_bias``). ``-inf`` entries ban tokens; ``+inf`` and NaN are rejected."""

    bias: Any = param(lo=-math.inf, axis="token", doc="added to the logits; -inf bans a token")
    shift_equivariant: ClassVar[bool] = True
    bans: ClassVar[bool] = True  # -inf entries

    def __call__(self, scores, ctx):
        return scores + self.bias.astype(scores.dtype)
