"""Score transforms: maps from the model's logits to the scores ``s`` of the objective.

A transform is a pytree dataclass with ``__call__(scores, ctx) -> scores``. They are applied
in order (``Objective.transforms``); ``ctx`` carries the untouched logits and, for
transforms that read it, the token history. Per-row parameters broadcast against the
logits' leading dimensions (a temperature of shape ``(B,)`` for logits ``(B, V)``).
"""

from __future__ import annotations

import math
from typing import Any

import jax.numpy as jnp

from ._pytree import param, per_row, pytree_dataclass

__all__ = ["ScoreTransform", "Temperature", "LogitBias"]


class ScoreTransform:
    """Base class of score transforms (``s ← T(s)``)."""

    def __call__(self, scores, ctx):  # pragma: no cover - interface
        raise NotImplementedError

    def greedy_rows(self, batch_shape):
        """Rows this transform turns into argmax decoding (None: none)."""
        return None


@pytree_dataclass
class Temperature(ScoreTransform):
    """``s ← s / t``. ``t = 0`` means greedy (argmax of the scores within the support).

    ``t`` may be a scalar or an array broadcastable to the batch shape (per-row
    temperatures); rows with ``t = 0`` are decoded greedily, the others sample.
    """

    t: Any = param(1.0, lo=0.0, doc="the temperature; 0 is greedy")

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

    def __call__(self, scores, ctx):
        return scores + self.bias.astype(scores.dtype)
