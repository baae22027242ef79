"""Concave terms φ of the objective ``<q, s> + Σ_j c_j φ_j(q)``.

Each term is a pytree dataclass with a non-negative ``weight`` leaf ``c_j`` and declares
facts, not a solving method:

* ``value(q, ctx)`` — φ(q) per row (shape ``(...,)``), unweighted;
* ``grad(q, ctx)`` — ∂φ/∂q (shape ``(..., V)``), unweighted;
* ``separable`` — whether φ(q) = Σ_v φ_v(q_v) (then ``grad`` is the per-coordinate
  derivative and the exact separable solver applies);
* ``reference_data(ctx)`` / ``cvxpy(q, data)`` — the term as a cvxpy expression, used by
  :mod:`simplex_decode.reference` (cvxpy is imported lazily there, never here);
  ``cvxpy_constraints(q, data)`` — constraints a constraint-like term adds (:class:`Cap`).

Per-coordinate interface of separable terms (what :class:`~simplex_decode.solvers.Exact`
reads; a new separable term that implements it gets the exact solver, its certificate and
implicit derivatives for free). With ``data = coord_data(ctx)``, a dict of arrays that
broadcast against ``(..., V)`` (last axis ``V``: one entry per token; last axis 1 or
scalars: per row), for ``q`` of shape ``(..., V)`` or any subset of coordinates gathered
along the last axis together with ``data``:

* ``coord_grad(q, data)`` — ``φ_v'(q_v)``, finite on ``[0, 1]`` except for entropic terms;
* ``coord_hess(q, data)`` — ``φ_v''(q_v) ≤ 0`` (concavity);
* ``coord_grad_inverse(y, data)`` — the ``q ≥ 0`` with ``φ_v'(q) = y`` in closed form, or
  ``None`` (the solver then runs a vectorised safeguarded Newton per coordinate);
* ``entropic = True`` — ``φ_v'(q) = ℓ_v − log q − 1`` with ``ℓ = data["log_base"]``
  (Shannon entropy: ℓ = 0, −KL(q‖p): ℓ = log p). The solver folds all entropic terms into
  one closed form ``q_v ∝ exp(…/Σc)``;
* ``active_indices(ctx)`` — ``(..., M)`` token ids (static ``M``) outside which ``φ_v ≡ 0``,
  or ``None``. When the only non-entropic term has one, the exact solver sums every other
  coordinate in closed form (one log-sum-exp) and iterates on ``M`` coordinates only;
* ``bound = True`` and ``upper_bound(ctx)`` — a constraint ``q_v ≤ u_v`` (value 0 inside);
* ``dense = True`` — ``φ_v'(0) = +∞`` (entropic terms, Jensen–Shannon): with a positive
  weight every allowed token gets mass, so solvers need not look for a sparse support.

``grad(q, ctx)``, ``hess(q, ctx)`` and ``grad_inverse(y, ctx)`` are the same on the full
vocabulary.

Closed forms (see :mod:`simplex_decode.solvers.closed_form`) recognise combinations of
these types; terms themselves never name a decoder.
"""

from __future__ import annotations

from typing import Any, ClassVar

import jax.numpy as jnp

from ._numerics import xlogx as _xlogx
from ._pytree import param, per_row, pytree_dataclass, require, set_field, static_field
from ._select import topk_indices
from ._window import scatter_ids, window

__all__ = ["Term", "Entropy", "SquaredL2", "Tsallis", "KL", "Coverage", "Cap"]


def _w(x, like):
    """A per-row scalar parameter broadcast against ``(..., V)``."""
    return per_row(x, like.shape[:-1])


def _top_m_ids(x, m: int, chunk: int = 256):
    """Ids of the ``m`` largest entries per row (largest first, lowest id on ties).

    The ``m`` largest entries lie in the ``m`` blocks of ``chunk`` entries with the largest
    maxima, so they are the top ``m`` of that candidate window (:mod:`._window`): one pass
    over the row plus two small selections, exact without a certificate.
    """
    win = window(x, fill=-jnp.inf, block=chunk, n_select=m) if 2 * m * chunk <= x.shape[-1] else None
    if win is None:
        return topk_indices(x, m)
    c = win.top(m)
    return c.ids[..., :m]


def _sums_to_one(who, r):
    """The ``check`` of a reference distribution (its range is declared): sums to 1."""
    total = jnp.sum(r, axis=-1)
    require(jnp.abs(total - 1.0) <= 1e-3, f"{who} must sum to 1 along its last axis", total)


def _reference(doc):
    return param(None, optional=True, lo=0.0, axis="token", check=_sums_to_one, doc=doc)


def _weight(default=1.0):
    return param(default, lo=0.0, doc="the weight c ≥ 0 of the term")


def _log_reference(reference, ctx):
    """``log p`` broadcast to the logits (``-inf`` where ``p = 0``); the model's own if None.
    (Its shape was checked against the logits, naming it, by ``params_ok``.)"""
    if reference is None:
        return ctx.log_model
    r = jnp.broadcast_to(reference.astype(ctx.logits.dtype), ctx.logits.shape)
    return jnp.where(r > 0, jnp.log(jnp.where(r > 0, r, 1.0)), -jnp.inf)


class Term:
    """Base class of concave terms. Subclasses are final pytree dataclasses."""

    separable: ClassVar[bool] = True
    entropic: ClassVar[bool] = False  # φ_v'(q) = data["log_base"]_v − log q − 1
    bound: ClassVar[bool] = False  # constraint-like: q_v ≤ upper_bound(ctx), value 0 inside
    dense: ClassVar[bool] = False  # φ_v'(0) = +∞: no token of the support gets q_v = 0
    weight: Any

    def value(self, q, ctx):  # pragma: no cover - interface
        raise NotImplementedError

    def grad(self, q, ctx):
        return self.coord_grad(q, self.coord_data(ctx))

    def hess(self, q, ctx):
        """Per-coordinate second derivative ``φ_v''(q_v) ≤ 0`` (separable terms)."""
        return self.coord_hess(q, self.coord_data(ctx))

    def grad_inverse(self, y, ctx):
        """``q ≥ 0`` with ``φ_v'(q_v) = y_v`` in closed form, or None."""
        return self.coord_grad_inverse(y, self.coord_data(ctx))

    def coord_data(self, ctx) -> dict:
        """Per-coordinate data of ``φ_v`` (arrays broadcastable to ``(..., V)``)."""
        return {}

    def coord_grad(self, q, data):  # pragma: no cover - interface
        raise NotImplementedError

    def coord_hess(self, q, data):  # pragma: no cover - interface
        raise NotImplementedError

    def coord_grad_inverse(self, y, data):
        return None

    def active_indices(self, ctx):
        """``(..., M)`` ids (static ``M``) outside which ``φ_v ≡ 0``, or None (all)."""
        return None

    def active_coords(self, ctx):
        """``(ids, data)``: :meth:`active_indices` and the per-coordinate data there (the
        exact solver's fast path reads only these), or None. Override when the data at
        the active ids is cheaper than ``coord_data`` on the whole vocabulary."""
        idx = self.active_indices(ctx)
        if idx is None:
            return None
        return idx, gather_coord_data(self.coord_data(ctx), idx, ctx.logits.shape[-1])

    def cvxpy_constraints(self, q, data) -> list:
        """Constraints the term adds to the cvxpy reference problem."""
        return []

    def reference_data(self, ctx) -> dict:
        """Arrays (batch-shaped or ``(..., V)``) the cvxpy expression needs, per row."""
        return {}

    def cvxpy(self, q, data):  # pragma: no cover - interface
        raise NotImplementedError


def gather_coord_data(data: dict, idx, V: int) -> dict:
    """Per-coordinate ``data`` at token ids ``idx`` (``(..., M)``); entries that are not
    ``(..., V)``-shaped (scalars, per-row values) are kept as they are."""
    out = {}
    for name, x in data.items():
        x = jnp.asarray(x)
        if x.ndim and x.shape[-1] == V:
            x = jnp.take_along_axis(jnp.broadcast_to(x, idx.shape[:-1] + (V,)), idx, axis=-1)
        out[name] = x
    return out


class _EntropicCoords:
    """Per-coordinate form shared by the entropic terms (Shannon entropy, ``−KL(q‖p)``):
    ``φ'_v(q) = ℓ_v − log q − 1`` with ``ℓ_v = data["log_base"]`` (0, or ``log p_v``)."""

    dense: ClassVar[bool] = True

    def coord_grad(self, q, data):
        return data["log_base"] - jnp.log(q) - 1.0

    def coord_hess(self, q, data):
        return -1.0 / q

    def coord_grad_inverse(self, y, data):
        return jnp.exp(data["log_base"] - y - 1.0)


@pytree_dataclass
class Entropy(_EntropicCoords, Term):
    """Shannon entropy ``H(q) = −Σ_v q_v log q_v``. Alone, its optimum is ``softmax(s / c)``."""

    weight: Any = _weight()
    entropic: ClassVar[bool] = True

    def value(self, q, ctx):
        return -jnp.sum(_xlogx(q), axis=-1)

    def grad(self, q, ctx):
        return -(jnp.log(q) + 1.0)

    def coord_data(self, ctx):
        return {"log_base": jnp.zeros((), ctx.logits.dtype)}

    def cvxpy(self, q, data):
        import cvxpy as cp

        return cp.sum(cp.entr(q))


@pytree_dataclass
class SquaredL2(Term):
    """``−½‖q‖²``. Alone, its optimum is ``sparsemax(s / c)``."""

    weight: Any = _weight()

    def value(self, q, ctx):
        return -0.5 * jnp.sum(q * q, axis=-1)

    def grad(self, q, ctx):
        return -q

    def coord_grad(self, q, data):
        return -q

    def coord_hess(self, q, data):
        return -jnp.ones_like(q)

    def coord_grad_inverse(self, y, data):
        return -y

    def cvxpy(self, q, data):
        import cvxpy as cp

        return -0.5 * cp.sum_squares(q)


@pytree_dataclass
class Tsallis(Term):
    """Tsallis α-entropy ``H_α(q) = Σ_v (q_v − q_v^α) / (α(α−1))``, ``α > 1``.

    Alone, its optimum is ``α-entmax(s / c)`` (α = 2 is sparsemax, α → 1 softmax).
    ``alpha`` is a leaf: per-row values work under one compilation.
    """

    alpha: Any = param(1.5, lo=1.0, lo_open=True, doc="the Tsallis index α > 1 (2: sparsemax)")
    weight: Any = _weight()

    def value(self, q, ctx):
        a = _w(self.alpha, q)
        return jnp.sum((q - q**a) / (a * (a - 1.0)), axis=-1)

    def grad(self, q, ctx):
        a = _w(self.alpha, q)
        return (1.0 - a * q ** (a - 1.0)) / (a * (a - 1.0))

    def coord_data(self, ctx):
        return {"alpha": per_row(self.alpha, ctx.logits.shape[:-1], ctx.logits.dtype)}

    def coord_grad(self, q, data):
        a = data["alpha"]
        return (1.0 - a * q ** (a - 1.0)) / (a * (a - 1.0))

    def coord_hess(self, q, data):
        a = data["alpha"]
        pos = q > 0
        at_zero = jnp.where(a < 2.0, -jnp.inf, jnp.where(a == 2.0, -1.0, 0.0))
        return jnp.where(pos, -(jnp.where(pos, q, 1.0) ** (a - 2.0)), at_zero)

    def coord_grad_inverse(self, y, data):
        a = data["alpha"]
        base = jnp.maximum((1.0 - a * (a - 1.0) * y) / a, 0.0)
        return base ** (1.0 / (a - 1.0))

    def reference_data(self, ctx):
        return {"alpha": per_row(self.alpha, ctx.logits.shape[:-1])[..., 0]}

    def cvxpy(self, q, data):
        import cvxpy as cp

        a = float(data["alpha"])
        return (cp.sum(q) - cp.sum(cp.power(q, a, approx=False))) / (a * (a - 1.0))


@pytree_dataclass
class KL(_EntropicCoords, Term):
    """``−KL(q ‖ p) = −Σ_v q_v log(q_v / p_v)`` to a reference distribution ``p``.

    ``reference=None`` (the default) uses the model's own distribution
    ``softmax(logits)`` of the untransformed logits; otherwise an array of probabilities
    of shape ``(V,)`` or ``(..., V)``. Tokens with ``p_v = 0`` get ``q_v = 0``.
    """

    weight: Any = _weight()
    reference: Any = _reference("the reference distribution p (None: the model's softmax)")
    entropic: ClassVar[bool] = True

    def log_reference(self, ctx):
        return _log_reference(self.reference, ctx)

    def value(self, q, ctx):
        logp = self.log_reference(ctx)
        cross = jnp.where(q > 0, q * jnp.where(q > 0, logp, 0.0), 0.0)
        return -jnp.sum(_xlogx(q) - cross, axis=-1)

    def grad(self, q, ctx):
        return -(jnp.log(q) - self.log_reference(ctx) + 1.0)

    def coord_data(self, ctx):
        return {"log_base": self.log_reference(ctx)}

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

    A rule name is static structure, not a leaf: it is kept in ``rule`` and ``weights``
    becomes None, so the fields rebuild the term (``Coverage(k, weights=None,
    rule="top_m")``, as :func:`dataclasses.replace` and :mod:`simplex_decode.config` do).
    """

    k: int = param(1, lo=1, integer=True, static=True, doc="the number of draws K")
    weights: Any = param(
        "model", lo=0.0, axis="token", choices=("model", "top_m"), optional=True,
        doc="w: a rule name or an array (None: the rule kept in `rule`)",
    )
    weight: Any = _weight()
    top_m: int = param(8, lo=1, integer=True, static=True, doc="m of weights='top_m'")
    rule: str | None = static_field(None)  # "model" / "top_m" / "array"; derived from `weights`

    def __post_init__(self):
        # A rule name is static structure, not a leaf: it moves from `weights` to `rule`.
        if self.rule not in (None, "model", "top_m", "array"):
            raise ValueError(f"Coverage: `rule` must be None, 'model', 'top_m' or 'array', got {self.rule!r}")
        if isinstance(self.weights, str):
            rule = self.weights
        elif self.weights is None:
            if self.rule not in ("model", "top_m"):
                raise ValueError("Coverage: `weights` must be 'model', 'top_m' or an array of shape (V,) or "
                                 "(..., V) with entries in [0, inf) (None only with rule='model' or 'top_m'), got None")
            rule = self.rule
        else:
            rule = "array"
        if self.rule is not None and rule != self.rule:
            raise ValueError(f"Coverage: `rule` {self.rule!r} contradicts `weights` {self.weights!r}")
        set_field(self, "rule", rule)
        if rule != "array":
            set_field(self, "weights", None)

    def coverage_weights(self, ctx):
        V = ctx.logits.shape[-1]
        if self.rule != "array":
            if self.rule == "model":
                return jnp.exp(ctx.log_model)
            if self.top_m > V:
                raise ValueError(f"Coverage: `top_m` must be an integer in [1, V={V}], got {self.top_m}")
            return scatter_ids(jnp.zeros(ctx.log_model.shape, ctx.logits.dtype), _top_m_ids(ctx.log_model, self.top_m), 1.0)
        # (its shape was checked against the logits, naming it, by params_ok)
        return jnp.broadcast_to(self.weights.astype(ctx.logits.dtype), ctx.logits.shape)

    def value(self, q, ctx):
        w = self.coverage_weights(ctx)
        return jnp.sum(w * (1.0 - (1.0 - q) ** self.k), axis=-1)

    def grad(self, q, ctx):
        w = self.coverage_weights(ctx)
        return w * self.k * (1.0 - q) ** (self.k - 1)

    def coord_data(self, ctx):
        return {"w": self.coverage_weights(ctx)}

    def coord_grad(self, q, data):
        return data["w"] * self.k * (1.0 - q) ** (self.k - 1)

    def coord_hess(self, q, data):
        if self.k == 1:
            return jnp.zeros_like(q * data["w"])
        return -data["w"] * (self.k * (self.k - 1)) * (1.0 - q) ** (self.k - 2)

    def active_indices(self, ctx):
        if self.rule != "top_m":
            return None
        if self.top_m > ctx.logits.shape[-1]:
            raise ValueError(f"Coverage: `top_m` must be an integer in [1, V={ctx.logits.shape[-1]}], got {self.top_m}")
        # lowest ids among ties, as coverage_weights does
        return _top_m_ids(ctx.log_model, self.top_m)

    def active_coords(self, ctx):
        idx = self.active_indices(ctx)
        if idx is None:
            return None
        return idx, {"w": jnp.ones(idx.shape, ctx.logits.dtype)}  # w = 1 on the top m

    def reference_data(self, ctx):
        return {"w": self.coverage_weights(ctx)}

    def cvxpy(self, q, data):
        import cvxpy as cp

        w = data["w"]
        if self.k == 1:
            return w @ q
        import numpy as np

        # Only coordinates with w > 0 need a power cone (keeps large-V references small).
        nz = np.flatnonzero(np.asarray(w) > 0)
        if nz.size == 0:
            return 0.0
        return float(np.sum(w[nz])) - w[nz] @ cp.power(1 - q[nz], self.k)


@pytree_dataclass
class Cap(Term):
    """Per-coordinate upper bound ``q_v ≤ c``: the indicator of the capped simplex.

    Its value is 0 when every ``q_v ≤ c`` (up to a few ulps) and ``−inf`` otherwise; it has
    no gradient and contributes the constraint ``q ≤ c`` to the cvxpy reference. ``c`` is a
    leaf (a scalar or per-row array, ``c > 0``); the problem is feasible only when
    ``c·|support| ≥ 1`` (checked by the solver). With :class:`Entropy` it gives the capped
    softmax ``q_v = min(c, exp((s_v − ν)/a − 1))`` (water-filling), solved by
    :class:`~simplex_decode.solvers.Exact`.

    Example:
      >>> import jax.numpy as jnp, simplex_decode as sd
      >>> obj = sd.Objective(terms=(sd.Entropy(), sd.Cap(0.5)))
      >>> q = sd.Decoder(obj, solver="exact").probs(jnp.array([4.0, 0.0, 0.0]))
      >>> [round(float(v), 4) for v in q]
      [0.5, 0.25, 0.25]
    """

    c: Any = param(1.0, lo=0.0, lo_open=True, doc="the cap c > 0 on every q_v")
    weight: ClassVar[float] = 1.0
    bound: ClassVar[bool] = True

    def upper_bound(self, ctx):
        """The bound ``u`` broadcastable to ``(..., V)`` (per row: shape ``(..., 1)``)."""
        return per_row(self.c, ctx.logits.shape[:-1], ctx.logits.dtype)

    def value(self, q, ctx):
        c = per_row(self.c, q.shape[:-1], q.dtype)
        slack = 8 * jnp.finfo(q.dtype).eps * jnp.maximum(c, 1.0)
        return jnp.where(jnp.all(q <= c + slack, axis=-1), 0.0, -jnp.inf).astype(q.dtype)

    def coord_grad(self, q, data):
        return jnp.zeros_like(q)

    def coord_hess(self, q, data):
        return jnp.zeros_like(q)

    def reference_data(self, ctx):
        return {"c": per_row(self.c, ctx.logits.shape[:-1])[..., 0]}

    def cvxpy(self, q, data):
        return 0.0

    def cvxpy_constraints(self, q, data):
        return [q <= float(data["c"])]


_LOG2 = 0.6931471805599453  # log 2


@pytree_dataclass
class JensenShannon(Term):
    """``−JS(q ‖ p)``: the Jensen–Shannon divergence to a reference ``p``, negated (concave).

    .. math::

        \\mathrm{JS}(q \\| p) = \\tfrac12 \\mathrm{KL}(q \\| m) + \\tfrac12 \\mathrm{KL}(p \\| m),
        \\quad m = \\tfrac12 (q + p)

    Separable: ``φ_v(q) = −½ [q log(2q/(q+p_v)) + p_v log(2p_v/(q+p_v))]`` with
    ``φ_v'(q) = −½ log(2q/(q+p_v))`` (``+∞`` at ``q = 0``, ``−½ log 2`` as ``q → ∞``) and
    ``φ_v''(q) = −p_v / (2q(q+p_v)) < 0``. Unlike ``−KL``, it is bounded (``0 ≤ JS ≤ log 2``)
    and symmetric. Alone, ``argmax <q, s> − c·JS(q‖p)`` has the one-multiplier form
    ``q_v = r_v p_v / (2 − r_v)``, ``r_v = exp(2(s_v − ν)/c)``, with ``ν`` set by ``Σ q = 1``
    (:class:`~simplex_decode.solvers.Exact` finds it). ``reference=None`` uses the model's
    ``softmax(logits)``; tokens with ``p_v = 0`` get ``q_v = 0``, as for :class:`KL`.

    Example:
      >>> import jax.numpy as jnp, simplex_decode as sd
      >>> q = sd.js_anchored(1.0).probs(jnp.array([2.0, 1.0, 0.0]))
      >>> [round(float(v), 4) for v in q]
      [0.9776, 0.0214, 0.001]
    """

    dense: ClassVar[bool] = True
    weight: Any = _weight()
    reference: Any = _reference("the reference distribution p (None: the model's softmax)")

    def log_reference(self, ctx):
        """``log p`` broadcast to the logits (``-inf`` where ``p = 0``)."""
        return _log_reference(self.reference, ctx)

    @staticmethod
    def _log_ratio(q, log_p):
        """``log(2q/(q+p))`` (``-inf`` at q = 0 < p; ``log 2`` where p = 0 < q; 0 at 0/0)."""
        pos = q > 0
        log_q = jnp.log(jnp.where(pos, q, 1.0))
        has_p = log_p > -jnp.inf
        ratio = jnp.where(has_p, _LOG2 + log_q - jnp.logaddexp(log_q, jnp.where(has_p, log_p, 0.0)), _LOG2)
        return jnp.where(pos, ratio, jnp.where(has_p, -jnp.inf, 0.0))

    def coord_data(self, ctx):
        return {"log_p": self.log_reference(ctx)}

    def value(self, q, ctx):
        log_p = self.log_reference(ctx)
        p = jnp.exp(log_p)
        a = jnp.where(q > 0, q * jnp.where(q > 0, self._log_ratio(q, log_p), 0.0), 0.0)
        # p·log(2p/(q+p)) = p·(log 2 + log p − log(q+p)), finite wherever p > 0
        has_p = p > 0
        log_qp = jnp.logaddexp(jnp.log(jnp.where(q > 0, q, 0.0)), jnp.where(has_p, log_p, 0.0))
        b = jnp.where(has_p, p * (_LOG2 + jnp.where(has_p, log_p, 0.0) - log_qp), 0.0)
        return -0.5 * jnp.sum(a + b, axis=-1)

    def grad(self, q, ctx):
        return self.coord_grad(q, self.coord_data(ctx))

    def coord_grad(self, q, data):
        return -0.5 * self._log_ratio(q, data["log_p"])

    def coord_hess(self, q, data):
        log_p = data["log_p"]
        pos = q > 0
        log_q = jnp.log(jnp.where(pos, q, 1.0))
        has_p = log_p > -jnp.inf
        # −p / (2q(q+p)) = −exp(log p − log q − log(q+p)) / 2
        lp = jnp.where(has_p, log_p, 0.0)
        h = -0.5 * jnp.exp(lp - log_q - jnp.logaddexp(log_q, lp))
        return jnp.where(has_p, jnp.where(pos, h, -jnp.inf), 0.0)

    def coord_grad_inverse(self, y, data):
        # −½ log(2q/(q+p)) = y  ⇔  q = r p / (2 − r),  r = exp(−2y) < 2 (else no finite q).
        log_p = data["log_p"]
        r = jnp.exp(-2.0 * y)
        finite = r < 2.0
        log_q = -2.0 * y + log_p - jnp.log(jnp.where(finite, 2.0 - r, 1.0))
        return jnp.where(finite, jnp.exp(log_q), jnp.inf)

    def reference_data(self, ctx):
        return {"p": jnp.exp(self.log_reference(ctx))}

    def cvxpy(self, q, data):
        import cvxpy as cp
        import numpy as np

        # Called on the support, where p > 0:
        # −JS = −½ Σ rel_entr(q, (q+p)/2) − ½ Σ p log(2p) + ½ Σ p log(q + p).
        p = data["p"]
        return (
            -0.5 * cp.sum(cp.rel_entr(q, (q + p) / 2))
            - 0.5 * float(np.sum(p * np.log(2 * p)))
            + 0.5 * cp.sum(cp.multiply(p, cp.log(q + p)))
        )


__all__ += ["JensenShannon"]
