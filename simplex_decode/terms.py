"""Concave terms φ of the objective ``<q, s> + Σ_j c_j φ_j(q)``.

Each term is a pytree dataclass with a non-negative ``weight`` leaf ``c_j`` and declares
facts, not a solving method:

* ``value(q, ctx)`` — φ(q) per row (shape ``(...,)``), unweighted;
* ``grad(q, ctx)`` — ∂φ/∂q (shape ``(..., V)``), unweighted;
* ``separable`` — whether φ(q) = Σ_v φ_v(q_v) (then ``grad`` is the per-coordinate
  derivative and the exact separable solver applies);
* ``reference_data(ctx)`` / ``cvxpy(q, data)`` — the term as a cvxpy expression, used by
  :mod:`simplex_decode.reference` (cvxpy is imported lazily there, never here).

Closed forms (see :mod:`simplex_decode.solvers.closed_form`) recognise combinations of
these types; terms themselves never name a decoder.
"""

from __future__ import annotations

from typing import Any, ClassVar

import jax
import jax.numpy as jnp

from ._core import check_range, per_row, pytree_dataclass, require, set_field, static_field

__all__ = ["Term", "Entropy", "SquaredL2", "Tsallis", "KL", "Coverage"]


def _w(x, like):
    """A per-row scalar parameter broadcast against ``(..., V)``."""
    return per_row(x, like.shape[:-1])


def _xlogx(q):
    safe = jnp.where(q > 0, q, 1.0)
    return jnp.where(q > 0, q * jnp.log(safe), 0.0)


def _check_weight(owner, weight):
    return check_range(owner, "weight", weight, lo=0.0)


class Term:
    """Base class of concave terms. Subclasses are final pytree dataclasses."""

    separable: ClassVar[bool] = True
    weight: Any

    def value(self, q, ctx):  # pragma: no cover - interface
        raise NotImplementedError

    def grad(self, q, ctx):  # pragma: no cover - interface
        raise NotImplementedError

    def reference_data(self, ctx) -> dict:
        """Arrays (batch-shaped or ``(..., V)``) the cvxpy expression needs, per row."""
        return {}

    def cvxpy(self, q, data):  # pragma: no cover - interface
        raise NotImplementedError


@pytree_dataclass
class Entropy(Term):
    """Shannon entropy ``H(q) = −Σ_v q_v log q_v``. Alone, its optimum is ``softmax(s / c)``."""

    weight: Any = 1.0

    def __post_init__(self):
        set_field(self, "weight", _check_weight("Entropy", self.weight))

    def value(self, q, ctx):
        return -jnp.sum(_xlogx(q), axis=-1)

    def grad(self, q, ctx):
        return -(jnp.log(q) + 1.0)

    def cvxpy(self, q, data):
        import cvxpy as cp

        return cp.sum(cp.entr(q))


@pytree_dataclass
class SquaredL2(Term):
    """``−½‖q‖²``. Alone, its optimum is ``sparsemax(s / c)``."""

    weight: Any = 1.0

    def __post_init__(self):
        set_field(self, "weight", _check_weight("SquaredL2", self.weight))

    def value(self, q, ctx):
        return -0.5 * jnp.sum(q * q, axis=-1)

    def grad(self, q, ctx):
        return -q

    def cvxpy(self, q, data):
        import cvxpy as cp

        return -0.5 * cp.sum_squares(q)


@pytree_dataclass
class Tsallis(Term):
    """Tsallis α-entropy ``H_α(q) = Σ_v (q_v − q_v^α) / (α(α−1))``, ``α > 1``.

    Alone, its optimum is ``α-entmax(s / c)`` (α = 2 is sparsemax, α → 1 softmax).
    ``alpha`` is a leaf: per-row values work under one compilation.
    """

    alpha: Any = 1.5
    weight: Any = 1.0

    def __post_init__(self):
        set_field(self, "alpha", check_range("Tsallis", "alpha", self.alpha, lo=1.0, lo_open=True))
        set_field(self, "weight", _check_weight("Tsallis", self.weight))

    def value(self, q, ctx):
        a = _w(self.alpha, q)
        return jnp.sum((q - q**a) / (a * (a - 1.0)), axis=-1)

    def grad(self, q, ctx):
        a = _w(self.alpha, q)
        return (1.0 - a * q ** (a - 1.0)) / (a * (a - 1.0))

    def reference_data(self, ctx):
        return {"alpha": per_row(self.alpha, ctx.logits.shape[:-1])[..., 0]}

    def cvxpy(self, q, data):
        import cvxpy as cp

        a = float(data["alpha"])
        return (cp.sum(q) - cp.sum(cp.power(q, a))) / (a * (a - 1.0))


@pytree_dataclass
class KL(Term):
    """``−KL(q ‖ p) = −Σ_v q_v log(q_v / p_v)`` to a reference distribution ``p``.

    ``reference=None`` (the default) uses the model's own distribution
    ``softmax(logits)`` of the untransformed logits; otherwise an array of probabilities
    of shape ``(V,)`` or ``(..., V)``. Tokens with ``p_v = 0`` get ``q_v = 0``.
    """

    weight: Any = 1.0
    reference: Any = None

    def __post_init__(self):
        set_field(self, "weight", _check_weight("KL", self.weight))
        if self.reference is not None:
            r = jnp.asarray(self.reference, jnp.float32)
            require(r.ndim >= 1, "KL: `reference` must have shape (V,) or (..., V)", r.shape)
            require((r >= 0) & jnp.isfinite(r), "KL: `reference` probabilities must be finite and >= 0")
            s = jnp.sum(r, axis=-1)
            require(jnp.abs(s - 1.0) <= 1e-3, "KL: `reference` must sum to 1 along its last axis", s)
            set_field(self, "reference", r)

    def log_reference(self, ctx):
        if self.reference is None:
            return ctx.log_model
        r = self.reference.astype(ctx.logits.dtype)
        require(
            r.shape[-1] == ctx.logits.shape[-1],
            f"KL: `reference` must have V={ctx.logits.shape[-1]} entries in its last axis",
            r.shape,
        )
        r = jnp.broadcast_to(r, ctx.logits.shape)
        return jnp.where(r > 0, jnp.log(jnp.where(r > 0, r, 1.0)), -jnp.inf)

    def value(self, q, ctx):
        logp = self.log_reference(ctx)
        cross = jnp.where(q > 0, q * jnp.where(q > 0, logp, 0.0), 0.0)
        return -jnp.sum(_xlogx(q) - cross, axis=-1)

    def grad(self, q, ctx):
        return -(jnp.log(q) - self.log_reference(ctx) + 1.0)

    def reference_data(self, ctx):
        return {"log_ref": self.log_reference(ctx)}

    def cvxpy(self, q, data):
        import cvxpy as cp

        # −KL(q‖p) = H(q) + <q, log p>; tokens with p = 0 are removed from q by the caller.
        return cp.sum(cp.entr(q)) + data["log_ref"] @ q


@pytree_dataclass
class Coverage(Term):
    """Weighted K-coverage ``U_K(q) = Σ_v w_v (1 − (1 − q_v)^K)`` (the paper's Eq. 15).

    ``1 − (1 − q_v)^K`` is the probability that token ``v`` appears at least once in
    ``K`` independent draws from ``q``. ``k`` is static (an integer ≥ 1); ``weights`` is a
    non-negative array ``(V,)`` or ``(..., V)``, or one of the rules
    ``"model"`` (``w = softmax(logits)``) and ``"top_m"`` (``w = 1`` on the ``top_m``
    most probable tokens of the model, 0 elsewhere; ties by lowest id).
    """

    k: int = static_field(1)
    weights: Any = "model"
    weight: Any = 1.0
    top_m: int = static_field(8)
    rule: str = static_field("array", init=False)  # derived from `weights`

    def __post_init__(self):
        check_range("Coverage", "k", self.k, lo=1, integer=True)
        set_field(self, "k", int(self.k))
        set_field(self, "weight", _check_weight("Coverage", self.weight))
        if isinstance(self.weights, str):
            if self.weights not in ("model", "top_m"):
                raise ValueError(
                    f"Coverage: `weights` must be 'model', 'top_m' or a non-negative array, got {self.weights!r}"
                )
            check_range("Coverage", "top_m", self.top_m, lo=1, integer=True)
            set_field(self, "top_m", int(self.top_m))
            # A rule name is static structure, not a leaf.
            set_field(self, "rule", self.weights)
            set_field(self, "weights", None)
        else:
            set_field(self, "rule", "array")
            w = jnp.asarray(self.weights, jnp.float32)
            require(w.ndim >= 1, "Coverage: `weights` must have shape (V,) or (..., V)", w.shape)
            require(jnp.isfinite(w) & (w >= 0), "Coverage: `weights` must be finite and >= 0")
            set_field(self, "weights", w)

    def coverage_weights(self, ctx):
        V = ctx.logits.shape[-1]
        if self.rule != "array":
            if self.rule == "model":
                return jnp.exp(ctx.log_model)
            if self.top_m > V:
                raise ValueError(f"Coverage: `top_m` must be in [1, V={V}], got {self.top_m}")
            vals, _ = jax.lax.top_k(ctx.log_model, self.top_m)
            thr = vals[..., -1:]
            above = ctx.log_model > thr
            tie = ctx.log_model == thr
            rank = jnp.cumsum(tie, axis=-1, dtype=jnp.int32)
            n_above = jnp.sum(above, axis=-1, keepdims=True, dtype=jnp.int32)
            return (above | (tie & (rank <= self.top_m - n_above))).astype(ctx.logits.dtype)
        require(
            self.weights.shape[-1] == V,
            f"Coverage: `weights` must have V={V} entries in its last axis",
            self.weights.shape,
        )
        return jnp.broadcast_to(self.weights.astype(ctx.logits.dtype), ctx.logits.shape)

    def value(self, q, ctx):
        w = self.coverage_weights(ctx)
        return jnp.sum(w * (1.0 - (1.0 - q) ** self.k), axis=-1)

    def grad(self, q, ctx):
        w = self.coverage_weights(ctx)
        return w * self.k * (1.0 - q) ** (self.k - 1)

    def reference_data(self, ctx):
        return {"w": self.coverage_weights(ctx)}

    def cvxpy(self, q, data):
        import cvxpy as cp

        w = data["w"]
        if self.k == 1:
            return w @ q
        return cp.sum(w) - w @ cp.power(1 - q, self.k)
