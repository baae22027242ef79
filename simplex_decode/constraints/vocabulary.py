"""The vocabulary a constraint is compiled against: the bytes each token id stands for.

A constraint restricts which *strings* may be generated; the model emits *token ids*. The
bridge is the byte string of every token: for a byte-level BPE tokenizer (GPT-2, SmolLM2,
Llama 3, Qwen 2) a token's vocabulary entry spells its bytes in GPT-2's printable
alphabet (``'Ġthe'`` is ``b' the'``; a token may hold part of a multi-byte UTF-8
character). Special tokens (``<|im_end|>``, ...) stand for no text: a constraint never
allows them, except the end-of-sequence ids, which it allows exactly in its accepting
states.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from functools import lru_cache

__all__ = ["Vocabulary"]


@lru_cache(maxsize=1)
def _byte_decoder() -> dict[str, int]:
    """GPT-2's printable character → byte map (the inverse of ``bytes_to_unicode``)."""
    from ..models.tokenizer import bytes_to_unicode

    return {c: b for b, c in bytes_to_unicode().items()}


def _backend(tokenizer):
    """The ``tokenizers.Tokenizer`` behind a GGUFTokenizer, a transformers fast tokenizer, or itself."""
    for attr in ("backend", "backend_tokenizer"):
        tk = getattr(tokenizer, attr, None)
        if tk is not None:
            return tk
    if hasattr(tokenizer, "get_added_tokens_decoder") and hasattr(tokenizer, "id_to_token"):
        return tokenizer
    raise ValueError(
        "tokenizer: must be a simplex_decode.models.GGUFTokenizer, a transformers fast tokenizer or a "
        f"tokenizers.Tokenizer, got {type(tokenizer).__name__}"
    )


def _is_byte_level(tk) -> bool:
    def has_byte_level(node):
        if isinstance(node, dict):
            return node.get("type") == "ByteLevel" or any(has_byte_level(v) for v in node.values())
        if isinstance(node, list):
            return any(has_byte_level(v) for v in node)
        return False

    return has_byte_level(json.loads(tk.to_str()).get("decoder"))


class Vocabulary:
    """Token ids → bytes, and the ids that end a sequence.

    Args:
      tokens: one entry per token id: the ``bytes`` it decodes to, or ``None`` for a token
        that stands for no text (special tokens, unused ids); a constraint never allows
        those, except ``eos_ids``.
      eos_ids: the end-of-sequence ids (at least one); a constraint allows them exactly in
        its accepting states. They must be among the ids ``generate`` stops on.

    Build one from a tokenizer with :meth:`from_tokenizer`. A Vocabulary is immutable and
    compares by content (``fingerprint``), so compiled constraints can be cached per vocabulary.

    Example:
      >>> voc = Vocabulary([b"a", b"b", b"ab", None], eos_ids=[3])
      >>> voc.size, voc.eos_ids, voc.token_bytes(2)
      (4, (3,), b'ab')
    """

    def __init__(self, tokens: Sequence[bytes | None], eos_ids: Sequence[int]):
        toks = []
        for i, t in enumerate(tokens):
            if t is not None and not isinstance(t, (bytes, bytearray)):
                raise ValueError(f"Vocabulary: `tokens[{i}]` must be bytes or None, got {type(t).__name__}")
            toks.append(None if t is None or len(t) == 0 else bytes(t))
        if not toks:
            raise ValueError("Vocabulary: `tokens` is empty")
        eos = tuple(int(e) for e in eos_ids)
        if not eos:
            raise ValueError("Vocabulary: `eos_ids` must hold at least one token id")
        bad = [e for e in eos if not 0 <= e < len(toks)]
        if bad:
            raise ValueError(f"Vocabulary: `eos_ids` must be in [0, {len(toks) - 1}], got {list(eos)}")
        self._tokens = tuple(toks)
        self._eos = tuple(dict.fromkeys(eos))
        h = hashlib.sha256()
        for t in self._tokens:
            h.update(b"\x00" if t is None else b"\x01" + len(t).to_bytes(4, "little") + t)
        h.update(repr(self._eos).encode())
        self._fingerprint = h.hexdigest()

    @classmethod
    def from_tokenizer(cls, tokenizer, *, eos_ids: Sequence[int] | int | None = None,
                       vocab_size: int | None = None) -> Vocabulary:
        """The vocabulary of a byte-level BPE tokenizer.

        Args:
          tokenizer: a :class:`simplex_decode.models.GGUFTokenizer`, a transformers fast
            tokenizer, or a ``tokenizers.Tokenizer`` with a ``ByteLevel`` decoder.
          eos_ids: the end-of-sequence id(s); default the tokenizer's ``eos_token_id``.
          vocab_size: the model's number of logits, when it exceeds the tokenizer's (padded
            embedding rows): the extra ids stand for no text and are never allowed.

        Raises ``ValueError`` for a tokenizer that is not byte-level BPE, an id whose string
        is not in the byte alphabet, or a ``vocab_size`` smaller than the tokenizer's.
        """
        tk = _backend(tokenizer)
        if not _is_byte_level(tk):
            raise ValueError(
                "tokenizer: only byte-level BPE tokenizers (a ByteLevel decoder: GPT-2, SmolLM2, Llama 3, Qwen 2) "
                "are supported; this one decodes otherwise"
            )
        n = tk.get_vocab_size(with_added_tokens=True)
        if vocab_size is not None:
            if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size < n:
                raise ValueError(f"vocab_size: must be an integer >= the tokenizer's {n} ids, got {vocab_size!r}")
            n = vocab_size
        if eos_ids is None:
            eos = getattr(tokenizer, "eos_token_id", None)
            if eos is None:
                raise ValueError("eos_ids: the tokenizer has no eos_token_id; pass the end-of-sequence id(s)")
            eos_ids = [eos]
        elif isinstance(eos_ids, int):
            eos_ids = [eos_ids]
        added = tk.get_added_tokens_decoder()
        decoder = _byte_decoder()
        tokens: list[bytes | None] = []
        for i in range(n):
            s = tk.id_to_token(i)
            if s is None:
                tokens.append(None)
            elif i in added:
                tokens.append(None if added[i].special else added[i].content.encode("utf-8"))
            else:
                try:
                    tokens.append(bytes(decoder[c] for c in s))
                except KeyError as e:
                    raise ValueError(
                        f"tokenizer: token {i} ({s!r}) is not spelled in the byte-level alphabet"
                    ) from e
        return cls(tokens, eos_ids)

    @property
    def size(self) -> int:
        """V, the number of token ids (the model's logits)."""
        return len(self._tokens)

    @property
    def eos_ids(self) -> tuple[int, ...]:
        return self._eos

    @property
    def fingerprint(self) -> str:
        """SHA-256 of the token bytes and EOS ids."""
        return self._fingerprint

    def token_bytes(self, token_id: int) -> bytes | None:
        """The bytes of ``token_id`` (None: it stands for no text)."""
        return self._tokens[token_id]

    def decode(self, ids: Sequence[int]) -> bytes:
        """The bytes of a token sequence (ids standing for no text contribute nothing)."""
        return b"".join(self._tokens[int(i)] or b"" for i in ids)

    def __len__(self) -> int:
        return len(self._tokens)

    def __eq__(self, other) -> bool:
        return isinstance(other, Vocabulary) and other._fingerprint == self._fingerprint

    def __hash__(self) -> int:
        return hash(self._fingerprint)

    def __repr__(self) -> str:
        return f"Vocabulary(size={self.size}, eos_ids={list(self._eos)})"

    def _outlines(self):
        """The ``outlines_core.Vocabulary`` of the tokens that stand for text (cached)."""
        cached = getattr(self, "_oc", None)
        if cached is None:
            from ._backend import outlines_core

            by_bytes: dict[bytes, list[int]] = {}
            for i, t in enumerate(self._tokens):
                if t is not None and i not in self._eos:
                    by_bytes.setdefault(t, []).append(i)
            cached = outlines_core().Vocabulary(self._eos[0], by_bytes)
            self._oc = cached
        return cached
