"""simplex_decode: next-token decoders as regularised optimisation over the simplex.

Every decoder solves ``q* = argmax_{q ∈ Δ, supp q ⊆ S(s)} <q, s> + Σ_j c_j φ_j(q)``
and then samples from ``q*``. See the README for the table of decoders.
"""

from . import analysis, config, constraints
from .adaptive import EDT, AdaptiveTemperature, DynamicTemperature, EntropixTemperature, entropy_stats
from .chain import chain
from .config import from_config
from .constraints import Constraint, constrain
from .decoder import Decoder, checked
from .generation import (
    BeamSearchResult,
    BestOfNResult,
    CoTResult,
    GenerateResult,
    SelfConsistencyResult,
    beam_search,
    best_of_n,
    cot_decode,
    generate,
    lookahead,
    majority_vote,
    pass_at_k,
    self_consistency,
)
from .history import (
    AllowTokens,
    BanTokens,
    FrequencyPenalty,
    MinNewTokens,
    NoRepeatNGram,
    PresencePenalty,
    RepetitionPenalty,
    token_counts,
)
from .objective import Context, Objective, Problem
from .presets import (
    PRESETS,
    best_of_k,
    capped,
    dynamic_temperature,
    edt,
    entmax,
    entropix,
    epsilon,
    eta,
    greedy,
    js_anchored,
    kl_anchored,
    min_p,
    sparsemax,
    temperature,
    top_a,
    top_h,
    top_k,
    top_n_sigma,
    top_p,
    tsallis_coverage,
    typical,
)
from .sampling import sample_from_probs
from .scores import LogitBias, ScoreTransform, Temperature
from .solvers import Auto, ClosedForm, Exact, Mirror, ProjectedGradient, Solution, Solver
from .status import Status
from .supports import Epsilon, Eta, Full, Mask, MinP, SupportRule, TopA, TopH, TopK, TopNSigma, TopP, Typical
from .terms import KL, Cap, Coverage, Entropy, JensenShannon, SquaredL2, Term, Tsallis

__version__ = "0.1.0"

__all__ = [
    "Auto",
    "ClosedForm",
    "Context",
    "Coverage",
    "Decoder",
    "Entropy",
    "Full",
    "KL",
    "LogitBias",
    "Mask",
    "MinP",
    "Objective",
    "Problem",
    "ScoreTransform",
    "Solution",
    "Solver",
    "SquaredL2",
    "Status",
    "SupportRule",
    "Temperature",
    "Term",
    "TopK",
    "TopP",
    "Tsallis",
    "checked",
    "entmax",
    "greedy",
    "kl_anchored",
    "min_p",
    "sample_from_probs",
    "sparsemax",
    "temperature",
    "top_k",
    "top_p",
]

__all__ += [
    "BeamSearchResult",
    "BestOfNResult",
    "CoTResult",
    "GenerateResult",
    "SelfConsistencyResult",
    "beam_search",
    "best_of_n",
    "cot_decode",
    "generate",
    "lookahead",
    "majority_vote",
    "pass_at_k",
    "self_consistency",
]

__all__ += [
    "EDT",
    "AllowTokens",
    "BanTokens",
    "DynamicTemperature",
    "EntropixTemperature",
    "Epsilon",
    "Eta",
    "FrequencyPenalty",
    "MinNewTokens",
    "NoRepeatNGram",
    "PresencePenalty",
    "RepetitionPenalty",
    "TopA",
    "TopH",
    "TopNSigma",
    "Typical",
    "chain",
    "dynamic_temperature",
    "edt",
    "entropix",
    "entropy_stats",
    "epsilon",
    "eta",
    "token_counts",
    "top_a",
    "top_h",
    "top_n_sigma",
    "typical",
]

__all__ += ["PRESETS", "AdaptiveTemperature", "Cap", "Exact", "Mirror", "ProjectedGradient", "analysis", "best_of_k"]

__all__ += ["JensenShannon", "capped", "js_anchored", "tsallis_coverage"]

# Decoders with state, randomness inside a rule, or two sources of scores (issue 15).
from .contrast import CFG, AmateurContrast, DoLa  # noqa: E402
from .dry import DRY, dry_sequence_breakers  # noqa: E402
from .generation import SecondStream  # noqa: E402
from .presets import cfg, contrastive, dola, mirostat, xtc  # noqa: E402
from .stateful import XTC, Mirostat, Stateful  # noqa: E402

__all__ += ["CFG", "DRY", "XTC", "AmateurContrast", "DoLa", "Mirostat", "SecondStream", "Stateful", "cfg", "contrastive", "dola",
            "dry_sequence_breakers", "mirostat", "xtc"]

__all__ += ["config", "from_config"]
__all__ += ["Constraint", "constrain", "constraints", "sharding"]
# A row sum with the same bits in any batch (XLA's jnp.sum may differ in its last bit between
# a batch of one and a batch of eight): for user terms that want bitwise row independence.
from ._numerics import row_sum  # noqa: E402

__all__ += ["row_sum"]

from . import sharding  # noqa: E402  (after Decoder and the presets it reads)
