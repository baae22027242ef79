"""The named decoders ("presets"): each a few declarative lines returning a :class:`Decoder`.

Every preset returns a :class:`~simplex_decode.decoder.Decoder` whose ``objective`` states
the problem it solves; no preset has a code path of its own. :data:`PRESETS` is the one
registry: the package exports it and the CLI's SPEC allow-list is read from it.

Every preset declares its arguments (``@_preset(p=declared(TopP, "p"), …)``, usually the
declaration of the component field the argument becomes): what a caller passes is
validated under the preset's own name and the argument's own spelling before any
component is built, and ``preset.__params__`` lists the ranges (the CLI prints them)::

    >>> import simplex_decode as sd
    >>> sd.kl_anchored(-1)
    Traceback (most recent call last):
    ...
    ValueError: kl_anchored: `lam` must be in [0, inf), got -1.0
    >>> sd.top_p.__params__["p"].interval()
    '(0, 1]'
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

import jax.numpy as jnp

from ._pytree import Param, components, declared, is_concrete, label
from .adaptive import EDT, DynamicTemperature, EntropixTemperature
from .contrast import CFG, AmateurContrast, DoLa
from .decoder import Decoder
from .history import RepetitionPenalty
from .objective import Objective
from .scores import Temperature
from .solvers.mirror import Mirror, ProjectedGradient
from .stateful import XTC, Mirostat
from .supports import Epsilon, Eta, MinP, TopA, TopH, TopK, TopNSigma, TopP, Typical
from .terms import KL, Cap, Coverage, Entropy, JensenShannon, SquaredL2, Tsallis

#: Named decoders ("presets"), in definition order: the one list the package exports and
#: the CLI's SPEC allow-list (``simplex-decode decoders`` prints it).
PRESETS: dict[str, Callable[..., Any]] = {}


def _preset(*passed, **arguments: Param):
    """Register a preset in :data:`PRESETS` and declare its arguments.

    Each keyword gives an argument its :class:`~simplex_decode._pytree.Param`; every value a
    caller passes is validated (and stored as the component will store it) under the
    preset's name, ``"top_p: `p` must be in (0, 1], got 1.5"``, before the body runs, and
    the components it becomes keep that name for the errors raised once the logits arrive
    (a per-row array of the wrong shape). Positional names are arguments handed on to a
    component that validates them itself (a solver, a support rule). Every argument of the
    signature must be one or the other: a preset with an undeclared argument fails here,
    at import. ``@_preset`` alone registers a preset without arguments.
    """
    if len(passed) == 1 and callable(passed[0]) and not arguments:
        return _register(passed[0], (), {})
    return functools.partial(_register, passed=passed, arguments=arguments)


def _register(fn, passed, arguments):
    sig = inspect.signature(fn)
    var_kw = next((n for n, a in sig.parameters.items() if a.kind is a.VAR_KEYWORD), None)
    named = [n for n, a in sig.parameters.items() if a.kind is not a.VAR_KEYWORD]
    undeclared = [n for n in named if n not in arguments and n not in passed]
    unknown = [n for n in (*arguments, *passed) if n not in sig.parameters and var_kw is None]
    if undeclared or unknown:
        raise TypeError(
            f"preset {fn.__name__}: declare every argument in @_preset(...) "
            f"(undeclared: {undeclared}; not in its signature: {unknown})"
        )
    params = {n: a.renamed(n) for n, a in arguments.items()}

    @functools.wraps(fn)
    def preset(*args, **kwargs):
        bound = sig.bind(*args, **kwargs)
        given = {}
        for name, value in bound.arguments.items():
            if name == var_kw:
                value = {k: params[k].validate(fn.__name__, v) if k in params else v for k, v in value.items()}
                given.update(value)
            elif name in params:
                value = given[name] = params[name].validate(fn.__name__, value)
            bound.arguments[name] = value
        decoder = fn(*bound.args, **bound.kwargs)
        _name_fields(decoder, fn.__name__, params, given)
        return decoder

    preset.__params__ = params
    preset.__passed__ = tuple(passed)
    PRESETS[fn.__name__] = preset
    return preset


def _name_fields(decoder, preset, params, given):
    """Errors about a component field that holds an argument's value name the argument."""
    for name, value in given.items():
        spec = params.get(name)
        if spec is None or spec.static or spec.origin is None or value is None or isinstance(value, str):
            continue
        cls, field = spec.origin
        for comp in components(decoder):
            if type(comp) is cls and getattr(comp, field) is value:
                label(comp, field, f"{preset}: `{name}`")


def _tempered(t):
    return (Temperature(t),)


_T = declared(Temperature, "t")


@_preset
def greedy() -> Decoder:
    """``argmax_q <q, logits>``: the most likely token (lowest id on ties)."""
    return Decoder(Objective())


@_preset(t=_T)
def temperature(t=1.0) -> Decoder:
    """``argmax_q <q, logits/t> + H(q)`` = ``softmax(logits / t)``; ``t = 0`` is greedy."""
    return Decoder(Objective(terms=Entropy(), transforms=_tempered(t)))


@_preset(k=declared(TopK, "k"), temperature=_T, min_keep=declared(TopK, "min_keep"))
def top_k(k, temperature=1.0, *, min_keep=1) -> Decoder:
    """Softmax of ``logits/temperature`` restricted to the ``max(k, min_keep)`` highest scores."""
    return Decoder(Objective(terms=Entropy(), support=TopK(k, min_keep=min_keep), transforms=_tempered(temperature)))


@_preset(p=declared(TopP, "p"), temperature=_T, from_model=declared(TopP, "from_model"),
         min_keep=declared(TopP, "min_keep"))
def top_p(p, temperature=1.0, *, from_model=False, min_keep=1) -> Decoder:
    """Softmax of ``logits/temperature`` renormalised on the nucleus of mass ``p``.

    ``from_model=True`` takes the nucleus from the untempered model distribution (the
    paper's variant); the default follows transformers (temperature first).
    """
    return Decoder(Objective(terms=Entropy(), support=TopP(p, from_model=from_model, min_keep=min_keep), transforms=_tempered(temperature)))


@_preset(p=declared(MinP, "p"), temperature=_T, from_model=declared(MinP, "from_model"),
         min_keep=declared(MinP, "min_keep"))
def min_p(p, temperature=1.0, *, from_model=False, min_keep=1) -> Decoder:
    """Softmax of ``logits/temperature`` on tokens with ``prob ≥ p · max prob``."""
    return Decoder(Objective(terms=Entropy(), support=MinP(p, from_model=from_model, min_keep=min_keep), transforms=_tempered(temperature)))


@_preset(temperature=_T)
def sparsemax(temperature=1.0) -> Decoder:
    """``argmax_q <q, logits/temperature> − ½‖q‖²`` = ``sparsemax(logits/temperature)``."""
    return Decoder(Objective(terms=SquaredL2(), transforms=_tempered(temperature)))


@_preset(alpha=declared(Tsallis, "alpha"), temperature=_T)
def entmax(alpha=1.5, temperature=1.0) -> Decoder:
    """``argmax_q <q, logits/temperature> + H_α(q)`` (Tsallis) = ``α-entmax``."""
    return Decoder(Objective(terms=Tsallis(alpha), transforms=_tempered(temperature)))


@_preset(lam=declared(KL, "weight"), reference=declared(KL, "reference"), temperature=_T)
def kl_anchored(lam, reference=None, temperature=1.0) -> Decoder:
    """``argmax_q <q, s> − lam·KL(q ‖ p)`` = ``softmax(log p + s/lam)``, ``s = logits/temperature``.

    ``p`` defaults to the model's own ``softmax(logits)``; ``lam = 0`` is greedy over ``s``.
    """
    return Decoder(Objective(terms=KL(lam, reference), transforms=_tempered(temperature)))


# --- The decoder catalogue: truncation rules, adaptive temperature, composition ---


@_preset(p=declared(Typical, "p"), temperature=_T, from_model=declared(Typical, "from_model"),
         min_keep=declared(Typical, "min_keep"))
def typical(p, temperature=1.0, *, from_model=False, min_keep=1) -> Decoder:
    """Locally typical sampling: softmax of ``logits/temperature`` on the typical set of mass ``p``
    (:class:`~simplex_decode.supports.Typical`, transformers' ``typical_p``)."""
    return Decoder(Objective(terms=Entropy(), support=Typical(p, from_model=from_model, min_keep=min_keep), transforms=_tempered(temperature)))


@_preset(eps=declared(Epsilon, "epsilon"), temperature=_T, from_model=declared(Epsilon, "from_model"),
         min_keep=declared(Epsilon, "min_keep"))
def epsilon(eps, temperature=1.0, *, from_model=False, min_keep=1) -> Decoder:
    """ε-sampling: softmax of ``logits/temperature`` on tokens with ``prob ≥ eps`` (transformers' ``epsilon_cutoff``)."""
    return Decoder(Objective(terms=Entropy(), support=Epsilon(eps, from_model=from_model, min_keep=min_keep), transforms=_tempered(temperature)))


@_preset(eps=declared(Eta, "epsilon"), temperature=_T, from_model=declared(Eta, "from_model"),
         min_keep=declared(Eta, "min_keep"))
def eta(eps, temperature=1.0, *, from_model=False, min_keep=1) -> Decoder:
    """η-sampling: softmax on tokens with ``prob ≥ min(eps, √eps·e^{−H})`` (transformers' ``eta_cutoff``)."""
    return Decoder(Objective(terms=Entropy(), support=Eta(eps, from_model=from_model, min_keep=min_keep), transforms=_tempered(temperature)))


@_preset(n=declared(TopNSigma, "n"), temperature=_T, from_model=declared(TopNSigma, "from_model"),
         min_keep=declared(TopNSigma, "min_keep"))
def top_n_sigma(n, temperature=1.0, *, from_model=False, min_keep=1) -> Decoder:
    """Top-nσ: softmax of ``logits/temperature`` on tokens with score ``≥ max − n·σ`` (temperature-invariant)."""
    return Decoder(Objective(terms=Entropy(), support=TopNSigma(n, from_model=from_model, min_keep=min_keep), transforms=_tempered(temperature)))


@_preset(
    h=declared(TopH, "h"), temperature=_T, top_n=declared(TopH, "top_n"), from_model=declared(TopH, "from_model"),
    min_keep=declared(TopH, "min_keep"),
)
def top_h(h, temperature=1.0, *, top_n=100, from_model=False, min_keep=1) -> Decoder:
    """Top-H: softmax on the longest prefix (by score, among the best ``top_n``) whose cumulative
    entropy stays ``≤ h·H`` (transformers' ``top_h``)."""
    rule = TopH(h, top_n=top_n, from_model=from_model, min_keep=min_keep)
    return Decoder(Objective(terms=Entropy(), support=rule, transforms=_tempered(temperature)))


@_preset(a=declared(TopA, "a"), temperature=_T, from_model=declared(TopA, "from_model"),
         min_keep=declared(TopA, "min_keep"))
def top_a(a, temperature=1.0, *, from_model=False, min_keep=1) -> Decoder:
    """Top-a: softmax of ``logits/temperature`` on tokens with ``prob ≥ a·(max prob)²``."""
    return Decoder(Objective(terms=Entropy(), support=TopA(a, from_model=from_model, min_keep=min_keep), transforms=_tempered(temperature)))


@_preset(**{name: declared(EDT, name) for name in ("t0", "theta", "n")})
def edt(t0=1.0, theta=1.0, n=0.8) -> Decoder:
    """Entropy-based dynamic temperature: ``softmax(logits / T)``, ``T = t0·n^{theta/H}``."""
    return Decoder(Objective(terms=Entropy(), transforms=EDT(t0, theta, n)))


@_preset(**{name: declared(DynamicTemperature, name) for name in ("t_min", "t_max", "exponent")})
def dynamic_temperature(t_min=0.0, t_max=2.0, exponent=1.0) -> Decoder:
    """llama.cpp's dynatemp: ``softmax(logits / T)``, ``T = t_min + (t_max − t_min)(H/log n)^exponent``."""
    return Decoder(Objective(terms=Entropy(), transforms=DynamicTemperature(t_min, t_max, exponent)))


@_preset(**EntropixTemperature.__params__)
def entropix(**params) -> Decoder:
    """``softmax(logits / T)`` with the entropy/varentropy-gated ``T`` of
    :class:`~simplex_decode.adaptive.EntropixTemperature` (greedy when both are low)."""
    return Decoder(Objective(terms=Entropy(), transforms=EntropixTemperature(**params)))


# --- Best-of-K: KL to the model + weighted K-coverage (no closed form) ---


#: The arguments of the K-coverage term (Best-of-K and its sparse variant).
_COVERAGE = {
    "k": declared(Coverage, "k"),
    "beta": Param(lo=0.0, doc="the coverage weight is lam·beta"),
    "weights": declared(Coverage, "weights"),
    "top_m": declared(Coverage, "top_m"),
}


@_preset(
    "solver",
    "support",
    **_COVERAGE,
    lam=declared(KL, "weight"),
    temperature=_T,
    steps=declared(Mirror, "steps"),
    step_size=declared(ProjectedGradient, "step_size"),
)
def best_of_k(
    k,
    lam,
    beta,
    weights="top_m",
    top_m=8,
    temperature=1.0,
    solver="exact",
    steps=5,
    step_size=1.0,
    support=None,
) -> Decoder:
    """Best-of-K (Ji, Tutunov, Zimmer & Bou-Ammar 2026, §4.3): the distribution that keeps
    close to the model while covering its likely tokens within ``k`` draws.

    .. math::

        q^* = \\arg\\max_{q \\in \\Delta,\\ \\mathrm{supp}\\,q \\subseteq S}
              \\langle q, s\\rangle - \\lambda\\,\\mathrm{KL}(q \\| p)
              + \\lambda\\beta \\sum_v w_v \\big(1 - (1 - q_v)^k\\big)

    with ``s = logits / temperature`` and ``p = softmax(logits)`` (the model's own,
    untempered distribution). ``1 − (1 − q_v)^k`` is the probability that token ``v``
    appears in ``k`` independent draws from ``q``. The objective is concave and separable:
    the default ``solver="exact"`` returns its optimum (one multiplier per row, Newton; see
    :class:`~simplex_decode.solvers.Exact`), ``solver="mirror"`` runs the paper's
    Algorithm 1 (``steps`` steps of entropic mirror ascent with step ``step_size`` from
    ``q₀ = p``) — the truncated iteration the paper evaluates, which is *not* the optimum.

    Args:
      k: the number of draws ``K`` the coverage term rewards (integer ≥ 1; static). The
        paper does not state the value it used; its follow-up uses 16.
      lam: ``λ ≥ 0``, the weight of ``KL(q‖p)``; ``lam = 0`` is greedy decoding over ``s``
        (the objective is linear). Scalar or per-row array. The paper's settings:
        ``(β, λ) ∈ {(0.01, 0.1), (0.02, 0.2), (0.05, 0.5)}``.
      beta: ``β ≥ 0``; the coverage weight is ``λβ`` (the paper's ``β̄``). Scalar or per row.
      weights: ``w``: ``"top_m"`` (default: 1 on the ``top_m`` most probable tokens of
        ``p``, ties by lowest id — the follow-up's choice; the paper leaves ``w``
        unstated), ``"model"`` (``w = p``), or a non-negative array broadcastable to the
        logits. ``"top_m"`` is also the fast case: the exact solver iterates on ``top_m``
        coordinates and sums the rest with one log-sum-exp.
      top_m: ``m`` for ``weights="top_m"`` (default 8, the follow-up's).
      temperature: divides the logits in ``s`` only (``p`` stays the model's); ``0`` is greedy.
      solver: ``"exact"`` (default: the exact optimum is cheap), ``"mirror"``
        (Algorithm 1), ``"projected_gradient"`` (the Euclidean variant; unstable with the
        KL term's infinite slope at 0, kept for comparison), or any Solver object.
      steps: ``J`` for ``"mirror"`` / ``"projected_gradient"`` (default 5, the paper's).
      step_size: ``η`` for those solvers (default 1.0; the paper leaves it unstated, and
        ``η·λ ≤ 1`` keeps the KL part of the iteration a contraction).
      support: None (the full vocabulary, as in the paper), a support rule or a tuple of
        them (e.g. ``sd.TopK(200)``), applied after the temperature.

    With ``beta = 0`` the coverage term vanishes and both are temperature changes: the
    exact optimum is ``q ∝ p·exp(s/λ)`` (:func:`kl_anchored`), and ``J`` mirror steps from
    ``p`` give ``q_J ∝ p·exp(c_J·s)`` with ``c_J = (1 − (1 − ηλ)^J)/λ`` (→ ``1/λ`` as
    ``J → ∞`` when ``0 < ηλ < 2``). At the paper's ``λ = 0.1``, ``η = 1``, ``J = 5`` this is
    ``c_5 ≈ 4.1``: a sharpening of ``p`` comparable to temperature ``≈ 0.2`` — most of the
    effect the paper reports, independent of ``k``.

    Example:
      >>> import jax, jax.numpy as jnp, simplex_decode as sd
      >>> logits = jnp.array([[3.0, 2.5, 1.0, 0.0, -1.0]])
      >>> dec = sd.best_of_k(k=8, lam=0.5, beta=0.5, top_m=2)
      >>> q = dec.probs(logits)
      >>> bool(jnp.allclose(q.sum(-1), 1.0)), bool(q[0, 1] > sd.kl_anchored(0.5).probs(logits)[0, 1])
      (True, True)
      >>> paper = sd.best_of_k(k=8, lam=0.5, beta=0.5, top_m=2, solver="mirror", steps=5)
      >>> paper.sample(jax.random.key(0), logits, num_samples=4).shape
      (1, 4)
    """
    # (every argument was validated under its own name by @_preset)
    # λβ in the wider of the two dtypes (a weak-typed float64 λ times a float32 β would
    # otherwise round to float32 and break float64 derivatives).
    lam, beta = jnp.asarray(lam), jnp.asarray(beta)
    wide = jnp.promote_types(lam.dtype, beta.dtype)
    terms = (KL(lam), Coverage(int(k), weights, weight=lam.astype(wide) * beta.astype(wide), top_m=int(top_m)))
    if solver == "mirror":
        solver = Mirror(steps=int(steps), step_size=step_size)
    elif solver == "projected_gradient":
        solver = ProjectedGradient(steps=int(steps), step_size=step_size)
    objective = Objective(terms=terms, support=() if support is None else support, transforms=_tempered(temperature))
    return Decoder(objective, solver=solver)




# --- Decoders none of the peers ship: a few declarative lines each ---
#
# No closed form recognises these term combinations, so solver="auto" resolves to the
# exact separable solver (every term is separable); each is checked against cvxpy.


@_preset(c=declared(Cap, "c"), temperature=_T)
def capped(c, temperature=1.0) -> Decoder:
    """``argmax_{q ∈ Δ, q_v ≤ c} <q, logits/temperature> + H(q)``: no token gets more than ``c``.

    The capped softmax ``q_v = min(c, exp(s_v − ν − 1))`` (water-filling: the tokens the
    softmax would give more than ``c`` are held at ``c`` and the rest is spread over the
    others in softmax proportions). ``c ≥ max softmax`` is the plain softmax; ``c·|S| ≥ 1``
    is needed for a feasible problem (``c = 1/V`` gives the uniform distribution).

    Example:
      >>> import jax.numpy as jnp, simplex_decode as sd
      >>> [round(float(v), 4) for v in sd.capped(0.5).probs(jnp.array([4.0, 0.0, 0.0]))]
      [0.5, 0.25, 0.25]
    """
    return Decoder(Objective(terms=(Entropy(), Cap(c)), transforms=_tempered(temperature)))


@_preset(lam=declared(JensenShannon, "weight"), reference=declared(JensenShannon, "reference"), temperature=_T)
def js_anchored(lam, reference=None, temperature=1.0) -> Decoder:
    """``argmax_q <q, s> − lam·JS(q ‖ p)``, ``s = logits/temperature``: anchored to ``p`` by the
    bounded, symmetric Jensen–Shannon divergence instead of KL.

    ``q_v = r_v p_v / (2 − r_v)``, ``r_v = exp(2(s_v − ν)/lam)``; ``p`` defaults to the
    model's ``softmax(logits)``. ``lam → ∞`` gives ``p``, ``lam → 0`` the argmax.
    """
    return Decoder(Objective(terms=JensenShannon(lam, reference), transforms=_tempered(temperature)))


@_preset(**_COVERAGE, alpha=declared(Tsallis, "alpha"), lam=declared(Tsallis, "weight"), temperature=_T)
def tsallis_coverage(k=4, *, alpha=1.5, lam=1.0, beta=0.5, weights="model", top_m=8, temperature=1.0) -> Decoder:
    """``argmax_q <q, s> + lam·H_α(q) + lam·beta·U_K(q)``: a sparse Best-of-K.

    The Tsallis α-entropy (α-entmax: tokens below a threshold get exactly 0) replaces the
    paper's KL anchor, and the K-coverage ``U_K(q) = Σ w_v (1 − (1 − q_v)^K)`` rewards
    spreading mass over the tokens ``w`` marks (``weights``: ``"model"``, ``"top_m"`` or an
    array, as in :class:`~simplex_decode.terms.Coverage`). ``beta = 0`` is α-entmax of
    ``s/lam``.
    """
    terms = (Tsallis(alpha, weight=lam), Coverage(k, weights, weight=jnp.asarray(lam) * jnp.asarray(beta), top_m=top_m))
    return Decoder(Objective(terms=terms, transforms=_tempered(temperature)))


# --- Decoders with state, randomness inside a rule, or two sources of scores (issue 15) ---


@_preset(tau=declared(Mirostat, "tau"), eta=declared(Mirostat, "eta"), m=declared(Mirostat, "m"),
         version=declared(Mirostat, "version"), temperature=_T)
def mirostat(tau=5.0, eta=0.1, *, m=100, version=2, temperature=1.0) -> Decoder:
    """Mirostat (llama.cpp's ``--mirostat 1|2``): softmax of ``logits/temperature`` on the tokens
    :class:`~simplex_decode.stateful.Mirostat` keeps for the row's current ``μ`` (initialised to
    ``2·tau`` bits, updated after every token from its surprise under ``q``). Stateful:
    ``ids, state = dec.sample(key, logits, state=state)`` (``generate`` threads it)."""
    rule = Mirostat(tau, eta, m=m, version=version)
    return Decoder(Objective(terms=Entropy(), support=rule, transforms=_tempered(temperature)))


@_preset(threshold=declared(XTC, "threshold"), probability=declared(XTC, "probability"),
         min_keep=declared(XTC, "min_keep"), temperature=_T)
def xtc(threshold=0.1, probability=0.5, temperature=1.0, *, min_keep=1) -> Decoder:
    """XTC ("exclude top choices"): softmax of ``logits/temperature`` after, with probability
    ``probability`` per row, removing every token of probability ``≥ threshold`` but the least
    likely of them (:class:`~simplex_decode.stateful.XTC`; its coin comes from the row's key)."""
    rule = XTC(threshold, probability, min_keep=min_keep)
    return Decoder(Objective(terms=Entropy(), support=rule, transforms=_tempered(temperature)))


@_preset(guidance_scale=declared(CFG, "guidance_scale"), temperature=_T)
def cfg(guidance_scale, temperature=1.0) -> Decoder:
    """Classifier-free guidance: ``softmax((ℓ_u + g·(ℓ_c − ℓ_u)) / temperature)``, ``ℓ = log_softmax``
    of the logits (``ℓ_c``) and of ``second_logits`` (``ℓ_u``: the model on a negative or
    unconditional prompt; :class:`~simplex_decode.contrast.CFG`)."""
    return Decoder(Objective(terms=Entropy(), transforms=(CFG(guidance_scale), *_tempered(temperature))))


@_preset(alpha=declared(MinP, "p"), beta=declared(AmateurContrast, "beta"), temperature=_T,
         amateur_temperature=declared(AmateurContrast, "amateur_temperature"))
def contrastive(alpha=0.1, beta=1.0, temperature=1.0, *, amateur_temperature=1.0) -> Decoder:
    """Contrastive decoding (Li et al., 2023) as an Objective over the simplex:

    .. math::

        q^* = \\arg\\max_{q \\in \\Delta,\\ \\mathrm{supp}\\,q \\subseteq V_\\alpha}
              \\tfrac{1}{t}\\langle q, \\log p_e - \\beta \\log p_a\\rangle + H(q),
        \\qquad V_\\alpha = \\{v : p_e(v) \\ge \\alpha \\max_u p_e(u)\\},

    with ``p_e = softmax(logits)`` (the expert), ``p_a = softmax(second_logits /
    amateur_temperature)`` (the amateur). ``temperature = 0`` is the paper's greedy search
    (the argmax of the contrast over the plausible head ``V_α``); ``t > 0`` samples from
    ``softmax`` of the contrast on ``V_α``. Solved by the closed form like any softmax.

    Example:
      >>> import jax.numpy as jnp, simplex_decode as sd
      >>> expert = jnp.log(jnp.array([0.5, 0.3, 0.15, 0.05]))
      >>> amateur = jnp.log(jnp.array([0.7, 0.1, 0.1, 0.1]))   # p_e ≥ 0.2·0.5 keeps tokens 0–2
      >>> [round(float(v), 4) for v in sd.contrastive(alpha=0.2).probs(expert, second_logits=amateur)]
      [0.137, 0.5753, 0.2877, 0.0]
    """
    transforms = (AmateurContrast(beta, amateur_temperature), *_tempered(temperature))
    return Decoder(Objective(terms=Entropy(), support=MinP(alpha, from_model=True), transforms=transforms))


@_preset(alpha=declared(MinP, "p"), repetition_penalty=declared(RepetitionPenalty, "penalty"), temperature=_T)
def dola(alpha=0.1, repetition_penalty=1.2, temperature=1.0) -> Decoder:
    """DoLa (Chuang et al., 2024), transformers' ``generate(dola_layers=...)``: softmax of
    ``(log p_final − log p_premature)/temperature`` on the tokens with ``p_final ≥ alpha·max
    p_final`` (transformers' ``relative_top``), after a repetition penalty (transformers
    recommends 1.2; ``1.0`` drops it). ``second_logits`` holds the candidate early layers'
    logits ``batch + (J, V)`` — with the bundled Llama, a step from
    ``make_step(config, early_exit_layers=dola_layers(config, "high"))``; each row contrasts
    the candidate of largest Jensen–Shannon divergence (:class:`~simplex_decode.contrast.DoLa`).
    ``temperature = 0`` is transformers' default greedy DoLa.

    Example:
      >>> import jax.numpy as jnp, simplex_decode as sd
      >>> final = jnp.log(jnp.array([0.5, 0.3, 0.15, 0.05]))
      >>> early = jnp.log(jnp.array([[0.45, 0.3, 0.15, 0.1], [0.1, 0.6, 0.2, 0.1]]))  # J = 2 layers
      >>> int(sd.DoLa().premature(final, early))        # the layer farther from the final one
      1
      >>> q = sd.dola(alpha=0.2, repetition_penalty=1.0).probs(final, second_logits=early)
      >>> [round(float(v), 4) for v in q]               # ∝ p_final / p_layer1 on p_final ≥ 0.1
      [0.8, 0.08, 0.12, 0.0]
    """
    penalty = () if is_concrete(repetition_penalty) and float(repetition_penalty) == 1.0 else (
        RepetitionPenalty(repetition_penalty),)
    transforms = (DoLa(), *penalty, *_tempered(temperature))
    return Decoder(Objective(terms=Entropy(), support=MinP(alpha, from_model=True), transforms=transforms))


__all__ = ["PRESETS", *PRESETS]
