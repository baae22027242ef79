"""The small-model lab: train tiny transformers on tasks with checkable answers, then run
every decoder and strategy of :mod:`simplex_decode` on them.

* :mod:`~simplex_decode.lab.model` — :class:`LabConfig`: the bundled Llama blocks as a
  shared trunk with ``n`` output heads (``n = 1``: next-token prediction; ``n > 1``:
  multi-token prediction, Gloeckle et al. 2024), and the ``step`` for
  :func:`simplex_decode.generate`;
* :mod:`~simplex_decode.lab.tasks` — :class:`Addition`, :class:`PathStar` (fixed seeds,
  held-out splits, answer codes);
* :mod:`~simplex_decode.lab.train` — optax training (teacher-forced, teacherless, reversed
  via the task, multi-token), ``.npz`` checkpoints;
* :mod:`~simplex_decode.lab.evaluate` — decoding on a model, per-problem metrics,
  bootstrap confidence intervals over problems;
* :mod:`~simplex_decode.lab.speculative` — self-speculative decoding with the extra heads
  as drafter, exact for any decoder's ``q``;
* :mod:`~simplex_decode.lab.questions` — the SmolLM2-135M-Instruct question sets.
"""

from .evaluate import (
    Estimate,
    SampleMetrics,
    bootstrap_ci,
    first_token_metrics,
    generate_codes,
    generate_tokens,
    paired_difference,
    sample_metrics,
    search_codes,
)
from .model import (
    LabConfig,
    check_params,
    head_logits,
    init_params,
    make_cache,
    make_step,
    num_params,
    step_params,
)
from .tasks import Addition, Examples, PathStar
from .train import Trained, TrainResult, load_checkpoint, save_checkpoint, sequence_loss, train

__all__ = [
    "Addition",
    "Estimate",
    "Examples",
    "LabConfig",
    "PathStar",
    "SampleMetrics",
    "TrainResult",
    "Trained",
    "bootstrap_ci",
    "check_params",
    "first_token_metrics",
    "generate_codes",
    "generate_tokens",
    "head_logits",
    "init_params",
    "load_checkpoint",
    "make_cache",
    "make_step",
    "num_params",
    "paired_difference",
    "sample_metrics",
    "save_checkpoint",
    "search_codes",
    "sequence_loss",
    "step_params",
    "train",
]
