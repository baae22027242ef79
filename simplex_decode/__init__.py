"""simplex_decode: next-token decoders as regularised optimisation over the simplex.

Every decoder solves ``q* = argmax_{q ∈ Δ, supp q ⊆ S(s)} <q, s> + Σ_j c_j φ_j(q)``
and then samples from ``q*``. See the README for the table of decoders.
"""

from ._core import Status
from .decoders import (
    Decoder,
    checked,
    entmax,
    greedy,
    kl_anchored,
    min_p,
    sparsemax,
    temperature,
    top_k,
    top_p,
)
from .generate import GenerateResult, generate
from .objective import Context, Objective, Problem
from .sampling import sample_from_probs
from .scores import LogitBias, ScoreTransform, Temperature
from .solvers import Auto, ClosedForm, Solution, Solver
from .strategies import (
    BeamSearchResult,
    BestOfNResult,
    CoTResult,
    SelfConsistencyResult,
    beam_search,
    best_of_n,
    cot_decode,
    lookahead,
    majority_vote,
    pass_at_k,
    self_consistency,
)
from .supports import Full, Mask, MinP, SupportRule, TopK, TopP
from .terms import KL, Coverage, Entropy, SquaredL2, Term, Tsallis

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
