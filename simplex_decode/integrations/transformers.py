"""Any simplex_decode decoder inside Hugging Face transformers' ``generate``.

:class:`DecoderLogitsProcessor` is a ``transformers.LogitsProcessor`` that replaces the
scores of each step by ``log q``, where ``q`` is the decoder's distribution on those scores
(``−inf`` off its support). ``generate`` samples from ``softmax`` of the processed scores,
and ``softmax(log q) = q``, so with ``do_sample=True`` it samples from the decoder's
distribution — *provided transformers applies no warper of its own on top*: its
``temperature``, ``top_k`` (50 by default!), ``top_p``, ``min_p``, ``typical_p``, ε/η
cutoffs and ``top_h`` run after every user processor. :func:`generate_kwargs` returns the
processor together with the settings that switch those off::

    >>> import simplex_decode as sd                                          # doctest: +SKIP
    >>> from simplex_decode.integrations.transformers import generate_kwargs  # doctest: +SKIP
    >>> out = model.generate(**inputs, max_new_tokens=32,
    ...                      **generate_kwargs(sd.best_of_k(k=8, lam=0.2, beta=0.02)))  # doctest: +SKIP

which is ``logits_processor=LogitsProcessorList([DecoderLogitsProcessor(decoder)]),
do_sample=True, temperature=1.0, top_k=0, top_p=1.0, min_p=None, typical_p=1.0,
epsilon_cutoff=0.0, eta_cutoff=0.0, top_h=None``. (Processors transformers puts *before*
the user's — repetition penalty, bad words, forced tokens — change the scores the decoder
sees; express them as simplex_decode transforms instead to keep one objective.) With
``do_sample=False`` transformers takes the argmax of ``log q``, the mode of ``q``.

Scores cross between torch and JAX through DLPack: no copy on CPU (and on an accelerator
both frameworks share), a copy through host memory otherwise. History-reading transforms
(:class:`~simplex_decode.RepetitionPenalty`, :class:`~simplex_decode.NoRepeatNGram`, …) get
``input_ids`` — the prompt and the tokens generated so far, as transformers' own processors
read them — right-padded to a power of two ≥ 64 with a mask, so the jitted decoder compiles
once per length bucket, not once per step. Stateful decoders (mirostat) keep their state
per row across the calls of one ``generate``; rules with randomness (XTC) get a key from
torch's generator; two-source decoders (CFG, contrastive, DoLa) are refused (see
:class:`DecoderLogitsProcessor`). Needs ``pip install 'simplex_decode[transformers]'``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import torch
from transformers import LogitsProcessor, LogitsProcessorList

from ..status import status_error_message

__all__ = ["DecoderLogitsProcessor", "generate_kwargs", "WARPERS_OFF"]

#: ``generate`` settings that switch off transformers' own sampling warpers, so that
#: ``do_sample=True`` samples from the decoder's ``q`` and nothing else.
WARPERS_OFF = {
    "temperature": 1.0,
    "top_k": 0,
    "top_p": 1.0,
    "min_p": None,
    "typical_p": 1.0,
    "epsilon_cutoff": 0.0,
    "eta_cutoff": 0.0,
    "top_h": None,
}


def to_jax(t: torch.Tensor) -> jax.Array:
    """A torch tensor as a JAX array: shared memory through DLPack where the devices allow."""
    t = t.detach()
    if not t.is_contiguous():
        t = t.contiguous()
    try:
        return jnp.from_dlpack(t)
    except Exception:  # noqa: BLE001 - e.g. a CUDA tensor and a CPU-only JAX: copy through the host
        return jnp.asarray((t.float() if t.dtype == torch.bfloat16 else t).cpu().numpy())


def to_torch(a: jax.Array, like: torch.Tensor) -> torch.Tensor:
    """A JAX array as a torch tensor on ``like``'s device, with ``like``'s dtype."""
    try:
        t = torch.from_dlpack(a)
    except Exception:  # noqa: BLE001 - no shared device: copy through the host
        t = torch.from_numpy(np.asarray(a))
    return t.to(device=like.device, dtype=like.dtype)


def _bucket(n: int) -> int:
    return max(64, 1 << max(n - 1, 0).bit_length())


@jax.jit
def _log_q(decoder, logits, history, history_mask, key, state):
    sol = decoder.solve(logits, history=history, history_mask=history_mask, key=key, state=state)
    logq = jnp.where(sol.q > 0, jnp.log(jnp.where(sol.q > 0, sol.q, 1.0)), -jnp.inf)
    return logq, sol.q, sol.status


@jax.jit
def _advance(decoder, state, q, ids, src, continued):
    """Each row's state after the token it drew (``ids``), from the row ``src`` of the last
    step it continues; rows that continue no row of the last step start afresh."""
    take = lambda x: jnp.take(x, src, axis=0)  # noqa: E731
    new = decoder.update(jax.tree.map(take, state), take(q), ids)
    fresh = decoder.init(ids.shape)

    def pick(n, f):
        c = continued.reshape(continued.shape + (1,) * (n.ndim - 1))
        return jnp.where(c, n, f).astype(f.dtype)

    return jax.tree.map(pick, new, fresh)


class DecoderLogitsProcessor(LogitsProcessor):
    """A :class:`simplex_decode.Decoder` as a ``transformers.LogitsProcessor``.

    ``__call__(input_ids, scores)`` returns ``log q`` of shape ``scores.shape`` and dtype
    (``q`` computed in float32), ``−inf`` where ``q = 0``. Rows whose scores are invalid
    (NaN, +inf, nothing allowed) raise ``ValueError`` with the library's message instead of
    letting ``torch.multinomial`` fail on NaN.

    **Stateful decoders** (:func:`~simplex_decode.mirostat`): the processor keeps the
    decoder's state per row. At each call a row whose ``input_ids`` extend a row of the
    previous call by one token continues that row's state, updated with the token drawn
    (``input_ids[:, -1]``) and the previous step's ``q`` — exactly
    ``ids, state = decoder.sample(key, logits, state=state)``, with transformers drawing the
    ids (rows reordered by beam search follow their sequence). Any other row — a new
    ``generate`` call, a new prompt — starts from ``decoder.init``. **Rules that draw
    randomness** (:class:`~simplex_decode.XTC`) get a key per call, drawn from torch's
    default generator, so ``torch.manual_seed`` makes a run reproducible as it does
    transformers' own sampling. **Two-source decoders** (CFG, contrastive decoding, DoLa)
    need a second model's logits, which a ``LogitsProcessor`` never sees: they are refused
    with a ``ValueError`` (use transformers' ``guidance_scale=`` / ``dola_layers=``, or
    :func:`simplex_decode.generate` with ``second=``).

    Args:
      decoder: any Decoder (a preset, ``sd.chain(...)``, ``sd.Decoder(objective)``).
      history: whether to pass ``input_ids`` to the decoder's transforms; ``"auto"``
        (default) passes them only when the decoder cannot be evaluated without them.

    Example:
      >>> import torch, simplex_decode as sd
      >>> from simplex_decode.integrations.transformers import DecoderLogitsProcessor
      >>> proc = DecoderLogitsProcessor(sd.top_k(2))
      >>> proc(torch.tensor([[0, 1]]), torch.tensor([[1.0, 3.0, 2.0]])).exp()
      tensor([[0.0000, 0.7311, 0.2689]])
    """

    def __init__(self, decoder, *, history="auto"):
        if not hasattr(decoder, "solve") or not hasattr(decoder, "objective"):
            raise ValueError(f"decoder: must be a simplex_decode.Decoder, got {type(decoder).__name__}")
        if history not in ("auto", True, False):
            raise ValueError(f"history: must be 'auto', True or False, got {history!r}")
        self.decoder = decoder
        self.history = history
        obj = decoder.objective
        self.needs_key = any(getattr(c, "needs_key", False) for c in obj.transforms + obj.support)
        self._reads_history: dict[int, bool] = {}
        self._last = None  # stateful decoders: (input_ids, q, state) of the previous call

    def _probe(self, vocab_size: int, history: bool):
        """Trace the decoder once on abstract inputs (nothing runs); raises its ValueError."""
        x = jax.ShapeDtypeStruct((1, vocab_size), jnp.float32)
        h = jax.ShapeDtypeStruct((1, 64), jnp.int32) if history else None
        m = jax.ShapeDtypeStruct((1, 64), jnp.bool_) if history else None
        key = jax.random.key(0) if self.needs_key else None
        jax.eval_shape(lambda d, x, h, m: d.solve(x, history=h, history_mask=m, key=key, state=d.init((1,))),
                       self.decoder, x, h, m)

    def reads_history(self, vocab_size: int) -> bool:
        """Whether the decoder is given ``input_ids`` (see ``history``). Raises ``ValueError``
        for a decoder a processor cannot run (one that reads a second model's logits)."""
        if vocab_size not in self._reads_history:
            try:
                self._probe(vocab_size, history=False)
                reads = False
            except ValueError:  # e.g. "RepetitionPenalty: reads the token history; pass `history=`"
                try:
                    self._probe(vocab_size, history=True)
                except ValueError as e:
                    raise ValueError(
                        f"DecoderLogitsProcessor: this decoder cannot run as a transformers LogitsProcessor, "
                        f"which sees one model's scores and the token ids only: {e}. For guidance or DoLa use "
                        "transformers' own guidance_scale= / dola_layers=, or simplex_decode.generate(..., second=...)"
                    ) from None
                reads = True
            self._reads_history[vocab_size] = reads
        return bool(self.history) if self.history != "auto" else self._reads_history[vocab_size]

    def _state(self, input_ids: torch.Tensor):
        """The state each row of this call starts from (see the class docstring)."""
        n, L = input_ids.shape
        last = self._last
        if last is None or last[0].shape[1] != L - 1:
            return self.decoder.init((n,))
        prev_ids, q, state = last
        same = (input_ids[:, None, :-1] == prev_ids[None].to(input_ids.device)).all(-1)  # (n, previous n)
        continued = same.any(-1)
        src = same.to(torch.int8).argmax(-1)
        ids = input_ids[:, -1].to(torch.int32)
        return _advance(self.decoder, state, q, to_jax(ids.cpu()), to_jax(src.to(torch.int32).cpu()),
                        to_jax(continued.cpu()))

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        logits = to_jax(scores)
        history = mask = None
        if self.reads_history(scores.shape[-1]):
            n, L = input_ids.shape
            history = np.zeros((n, _bucket(L)), np.int32)
            history[:, :L] = input_ids.detach().cpu().numpy()
            mask = np.zeros(history.shape, bool)
            mask[:, :L] = True
        key = jax.random.key(int(torch.randint(0, 2**31 - 1, ()))) if self.needs_key else None
        state = self._state(input_ids.detach()) if self.decoder.stateful else None
        logq, q, status = _log_q(self.decoder, logits, history, mask, key, state)
        status = np.asarray(status)
        if np.any(status != 0):
            raise ValueError(f"DecoderLogitsProcessor: {status_error_message(status)}")
        if self.decoder.stateful:
            self._last = (input_ids.detach().clone(), q, state)
        return to_torch(logq, scores)


def generate_kwargs(decoder, *, history="auto") -> dict:
    """Keyword arguments for ``model.generate`` that sample from ``decoder``'s distribution:
    the processor, ``do_sample=True`` and :data:`WARPERS_OFF` (transformers' own warpers
    off). Add or override anything else (``max_new_tokens``, ``num_return_sequences``…)."""
    return {
        "logits_processor": LogitsProcessorList([DecoderLogitsProcessor(decoder, history=history)]),
        "do_sample": True,
        **WARPERS_OFF,
    }
