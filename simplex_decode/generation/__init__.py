"""Generation: the jitted decode loop over a model's step function, and sequence strategies.

:func:`generate` (in :mod:`.loop`) drives any Decoder; :mod:`.strategies` builds beam
search, lookahead, CoT decoding, self-consistency, best-of-n and pass@k on the same step
protocol.
"""

from .loop import GenerateResult, SecondStream, generate
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

__all__ = [
    "BeamSearchResult",
    "BestOfNResult",
    "CoTResult",
    "GenerateResult",
    "SecondStream",
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
