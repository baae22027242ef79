"""``chain``: any combination of transforms, terms and rules in one line, sorted into a
library's order (transformers, vLLM, llama.cpp) or kept as given."""

from __future__ import annotations

from .adaptive import AdaptiveTemperature
from .contrast import CFG, AmateurContrast, DoLa
from .decoder import Decoder
from .dry import DRY
from .history import (
    AllowTokens,
    BanTokens,
    FrequencyPenalty,
    MinNewTokens,
    NoRepeatNGram,
    PresencePenalty,
    RepetitionPenalty,
)
from .objective import Objective
from .scores import LogitBias, ScoreTransform, Temperature
from .stateful import XTC, Mirostat
from .supports import Epsilon, Eta, Mask, MinP, SupportRule, TopA, TopH, TopK, TopNSigma, TopP, Typical
from .terms import Entropy, Term

__all__ = ["chain", "CHAIN_ORDERS"]


# Default orders of ``chain``: the score transforms run first (processors, then the
# temperatures), then the support rules, each group sorted by the position of its class
# here (stable: equal classes keep their given order; unlisted classes go after the listed
# ones of their group, in their given order). An order with "before_temperature" places the
# rules of those classes before the temperatures (``Objective.support_at``): they read the
# scores as the processors leave them, and the temperatures act on what they kept.
_TEMPERATURES = (Temperature, AdaptiveTemperature)
# The transforms that replace the logits by a contrast of two sources come first (transformers
# runs CFG as its first processor, and DoLa's contrast precedes every processor); DRY follows
# the penalties (llama.cpp's order); XTC after the truncation rules and mirostat last
# (llama.cpp). Neither library ships those four; they are placed where llama.cpp puts them.
_CONTRASTS = (CFG, AmateurContrast, DoLa)
CHAIN_ORDERS: dict[str, dict[str, tuple]] = {
    # transformers' generate(): processors, then temperature → top-h → top-k → top-p →
    # min-p → typical → ε → η (top-nσ, from llama.cpp, first; top-a last).
    "transformers": {
        "transforms": (*_CONTRASTS, LogitBias, RepetitionPenalty, FrequencyPenalty, PresencePenalty, DRY,
                       NoRepeatNGram, BanTokens, MinNewTokens, AllowTokens),
        "support": (Mask, TopNSigma, TopH, TopK, TopP, MinP, Typical, Epsilon, Eta, TopA, XTC, Mirostat),
    },
    # vLLM's sampler: allowed / bad words → min tokens → logit bias → penalties →
    # temperature → min-p → top-k / top-p.
    "vllm": {
        "transforms": (*_CONTRASTS, AllowTokens, BanTokens, MinNewTokens, LogitBias, RepetitionPenalty,
                       FrequencyPenalty, PresencePenalty, DRY, NoRepeatNGram),
        "support": (Mask, TopNSigma, MinP, TopK, TopP, TopH, Typical, Epsilon, Eta, TopA, XTC, Mirostat),
    },
    # llama.cpp's default sampler chain (common_params_sampling.samplers, after the logit bias
    # common_sampler_init adds first): penalties → DRY → top-nσ → top-k → typical → top-p →
    # min-p → XTC → temperature → dist, each sampler reading the logits the previous ones left
    # (truncation sees the untempered scores). Mirostat reads the tempered ones (llama.cpp's
    # --mirostat chain is temperature → mirostat). Not in llama.cpp's chain: the contrasts
    # first, the hard bans after DRY, top-h / ε / η / top-a after min-p.
    "llama.cpp": {
        "transforms": (*_CONTRASTS, LogitBias, RepetitionPenalty, FrequencyPenalty, PresencePenalty, DRY,
                       NoRepeatNGram, BanTokens, MinNewTokens, AllowTokens),
        "support": (Mask, TopNSigma, TopK, Typical, TopP, MinP, TopH, Epsilon, Eta, TopA, XTC, Mirostat),
        "before_temperature": (Mask, TopNSigma, TopK, Typical, TopP, MinP, TopH, Epsilon, Eta, TopA, XTC),
    },
}


def _rank(obj, classes, temperatures_last):
    if temperatures_last and isinstance(obj, _TEMPERATURES):
        return len(classes) + 1
    for i, cls in enumerate(classes):
        if isinstance(obj, cls):
            return i
    return len(classes)


def chain(*components, solver=None, order="transformers") -> Decoder:
    """One line for any combination: sorts components into an Objective and returns a Decoder.

    ``components`` are score transforms, terms, support rules (or lists of them) and at
    most one *base* preset (a :class:`Decoder` or :class:`Objective`) whose parts are
    merged with them. Without a base and without any term, the term is ``Entropy()``
    (sample from the softmax of the scores, as every sampler chain does); an explicit
    term or a base states the problem instead.

    ``order``: ``"transformers"`` (default) or ``"vllm"`` sort the transforms (processors
    before temperatures) and the support rules into that library's order (see
    ``CHAIN_ORDERS``), the rules reading the tempered scores; ``"llama.cpp"`` sorts them into
    llama.cpp's default sampler chain (penalties → DRY → top-nσ → top-k → typical → top-p →
    min-p → XTC → temperature → dist) and has the truncation rules read the scores before
    the temperatures (``Objective.support_at``): ``q = softmax(s/T)`` on the set they keep
    from ``s``. ``"given"`` keeps the order of the arguments (temperature before every rule).
    ``solver``: as for :class:`Decoder`; None takes the base's solver (else ``"auto"``).

    Example:
      >>> import jax.numpy as jnp, simplex_decode as sd
      >>> dec = sd.chain(sd.MinP(0.05), sd.TopP(0.9), sd.TopK(50), sd.Temperature(0.7),
      ...                sd.RepetitionPenalty(1.2))
      >>> [type(r).__name__ for r in dec.objective.support]
      ['TopK', 'TopP', 'MinP']
      >>> q = sd.chain(sd.typical(0.9), sd.NoRepeatNGram(3)).probs(
      ...     jnp.zeros(8), history=jnp.array([1, 2, 3, 1, 2]))
      >>> float(q[3])
      0.0
      >>> # llama.cpp: min-p reads the untempered scores, the temperature comes after it
      >>> x = jnp.log(jnp.array([0.5, 0.3, 0.2]))
      >>> (sd.chain(sd.MinP(0.5), sd.Temperature(3.0)).probs(x) > 0).tolist()
      [True, True, True]
      >>> (sd.chain(sd.MinP(0.5), sd.Temperature(3.0), order="llama.cpp").probs(x) > 0).tolist()
      [True, True, False]
    """
    if order not in CHAIN_ORDERS and order != "given":
        raise ValueError(f"chain: `order` must be one of {sorted(CHAIN_ORDERS) + ['given']}, got {order!r}")
    transforms, terms, rules, bases = [], [], [], []

    def add(c):
        if isinstance(c, (list, tuple)):
            for x in c:
                add(x)
        elif isinstance(c, (Decoder, Objective)):
            bases.append(c)
            obj = c.objective if isinstance(c, Decoder) else c
            transforms.extend(obj.transforms)
            terms.extend(obj.terms)
            rules.extend(obj.support)
        elif isinstance(c, ScoreTransform):
            transforms.append(c)
        elif isinstance(c, Term):
            terms.append(c)
        elif isinstance(c, SupportRule):
            rules.append(c)
        else:
            raise ValueError(
                "chain: components must be score transforms, terms, support rules, or one Decoder / "
                f"Objective, got {type(c).__name__}"
            )

    add(components)
    if len(bases) > 1:
        raise ValueError(
            f"chain: at most one Decoder or Objective may be given (got {len(bases)}); "
            "add the other rules as components, e.g. sd.chain(sd.top_p(0.9), sd.MinP(0.1))"
        )
    if not bases and not terms:
        terms = [Entropy()]
    support_at = None
    if order != "given":
        spec = CHAIN_ORDERS[order]
        transforms.sort(key=lambda t: _rank(t, spec["transforms"], True))
        rules.sort(key=lambda r: _rank(r, spec["support"], False))
        if "before_temperature" in spec:
            n_pre = sum(not isinstance(t, _TEMPERATURES) for t in transforms)
            early = spec["before_temperature"]
            support_at = tuple(n_pre if isinstance(r, early) else len(transforms) for r in rules)
    if solver is None:
        solver = bases[0].solver if bases and isinstance(bases[0], Decoder) else "auto"
    objective = Objective(terms=tuple(terms), support=tuple(rules), transforms=tuple(transforms), support_at=support_at)
    return Decoder(objective, solver=solver)
