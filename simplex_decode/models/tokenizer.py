"""Byte-level BPE tokenizer and chat template built from GGUF metadata.

GGUF files produced by llama.cpp's ``convert_hf_to_gguf.py`` carry the whole
tokenizer in their metadata: ``tokenizer.ggml.tokens``, ``.merges``,
``.token_type``, the special-token ids and ``tokenizer.chat_template``. This
module rebuilds a :class:`tokenizers.Tokenizer` (the Rust BPE implementation
from Hugging Face) from them; no hand-written BPE.

Only ``tokenizer.ggml.model == "gpt2"`` (GPT-2 style byte-level BPE, used by
SmolLM2, Llama-3, Qwen2, ...) is supported. The pre-tokenizer follows
``tokenizer.ggml.pre``: ``"smollm"`` splits digits individually before the
GPT-2 byte-level split (exactly like SmolLM2's original ``tokenizer.json``);
``"gpt2"``/``"default"`` use the plain GPT-2 split; other values fall back to
the GPT-2 split with a warning.

Tokens whose GGUF type is CONTROL (3) are registered as special tokens and
USER_DEFINED (4) as added tokens, so e.g. ``<|im_start|>`` in text encodes to
one id.

The chat template is the GGUF's own Jinja template, rendered with
``jinja2`` in a sandbox with the same settings as ``transformers``
(``trim_blocks``, ``lstrip_blocks``, ``raise_exception``, ``tojson``). When a
file has no template, ChatML (``<|im_start|>role\\ncontent<|im_end|>\\n``) is
used.

Example::

    >>> from simplex_decode.models.gguf_loader import default_model_path
    >>> tok = GGUFTokenizer.from_gguf(default_model_path())   # doctest: +SKIP
    >>> ids = tok.encode("The capital of France is")           # doctest: +SKIP
    >>> tok.decode(ids)                                        # doctest: +SKIP
    'The capital of France is'
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any

__all__ = ["GGUFTokenizer", "CHATML_TEMPLATE", "bytes_to_unicode"]

TOKEN_TYPE_NORMAL = 1
TOKEN_TYPE_CONTROL = 3
TOKEN_TYPE_USER_DEFINED = 4

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
"""Fallback chat template (ChatML) for GGUF files without ``tokenizer.chat_template``."""


@lru_cache(maxsize=1)
def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable-unicode map (the alphabet byte-level BPE vocabularies are spelled in)."""
    bs = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs), strict=False))


def _require_tokenizers():
    try:
        import tokenizers
    except ImportError as e:  # pragma: no cover - depends on environment
        raise ImportError(
            "simplex_decode.models.tokenizer needs the `tokenizers` package: pip install tokenizers"
        ) from e
    return tokenizers


class GGUFTokenizer:
    """GPT-2 style byte-level BPE tokenizer with a chat template.

    Build it with :meth:`from_gguf` (or via
    :func:`simplex_decode.models.gguf_loader.load_gguf`); the constructor takes
    the raw GGUF metadata lists.

    Args:
        tokens: the vocabulary, id order (``tokenizer.ggml.tokens``).
        merges: BPE merges ``"a b"`` in priority order (``tokenizer.ggml.merges``).
        token_types: per-token GGUF type (``tokenizer.ggml.token_type``), or None.
        bos_token_id, eos_token_id, pad_token_id, unk_token_id: special ids or None.
        chat_template: Jinja chat template, or None for ChatML.
        pre: ``tokenizer.ggml.pre`` value selecting the pre-tokenizer.
        add_bos: prepend BOS in :meth:`encode` by default
            (``tokenizer.ggml.add_bos_token``).

    Example::

        >>> tok = GGUFTokenizer(tokens=["a", "b", "ab", "<|end|>"], merges=["a b"],
        ...                     token_types=[1, 1, 1, 3], eos_token_id=3)
        >>> tok.encode("abab<|end|>")
        [2, 2, 3]
        >>> tok.decode([2, 0, 3], skip_special_tokens=True)
        'aba'
    """

    def __init__(
        self,
        tokens: Sequence[str],
        merges: Sequence[str],
        token_types: Sequence[int] | None = None,
        *,
        bos_token_id: int | None = None,
        eos_token_id: int | None = None,
        pad_token_id: int | None = None,
        unk_token_id: int | None = None,
        chat_template: str | None = None,
        pre: str | None = "gpt2",
        add_bos: bool = False,
    ) -> None:
        tk = _require_tokenizers()
        from tokenizers import AddedToken, decoders, models, pre_tokenizers

        tokens = list(tokens)
        if not tokens:
            raise ValueError("GGUFTokenizer: the vocabulary (tokens) is empty")
        if token_types is not None and len(token_types) != len(tokens):
            raise ValueError(f"GGUFTokenizer: {len(token_types)} token_types for {len(tokens)} tokens")
        n = len(tokens)
        for name, value in (
            ("bos_token_id", bos_token_id),
            ("eos_token_id", eos_token_id),
            ("pad_token_id", pad_token_id),
            ("unk_token_id", unk_token_id),
        ):
            if value is not None and not 0 <= int(value) < n:
                raise ValueError(f"GGUFTokenizer: {name}={value} is outside the vocabulary [0, {n})")

        # Byte-level vocabularies are written in GPT-2's byte alphabet; respell any
        # token that is not (as transformers does), so BPE can produce it.
        spelling = bytes_to_unicode()
        alphabet = set(spelling.values())
        vocab: dict[str, int] = {}
        for i, tok in enumerate(tokens):
            if not set(tok) <= alphabet and not (
                token_types is not None and token_types[i] in (TOKEN_TYPE_CONTROL, TOKEN_TYPE_USER_DEFINED)
            ):
                tok = "".join(spelling[b] for b in tok.encode("utf-8"))
            vocab.setdefault(tok, i)
        merge_pairs = []
        for m in merges:
            parts = m.split(" ")
            if len(parts) != 2:
                raise ValueError(f"GGUFTokenizer: malformed merge {m!r} (expected 'left right')")
            merge_pairs.append((parts[0], parts[1]))

        self._tokens = tokens
        self._tk = tk.Tokenizer(
            models.BPE(vocab=vocab, merges=merge_pairs, fuse_unk=False, byte_fallback=False)
        )
        byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
        if pre == "smollm":
            self._tk.pre_tokenizer = pre_tokenizers.Sequence(
                [pre_tokenizers.Digits(individual_digits=True), byte_level]
            )
        else:
            if pre not in (None, "gpt2", "default"):
                warnings.warn(
                    f"GGUFTokenizer: pre-tokenizer {pre!r} is not implemented; using the GPT-2 "
                    "split, which may tokenize some text differently from llama.cpp",
                    stacklevel=2,
                )
            self._tk.pre_tokenizer = byte_level
        self._tk.decoder = decoders.ByteLevel()

        if token_types is not None:
            special = [
                AddedToken(tokens[i], special=True, normalized=False)
                for i, t in enumerate(token_types)
                if t == TOKEN_TYPE_CONTROL
            ]
            user = [
                AddedToken(tokens[i], special=False, normalized=False)
                for i, t in enumerate(token_types)
                if t == TOKEN_TYPE_USER_DEFINED
            ]
            if special:
                self._tk.add_special_tokens(special)
            if user:
                self._tk.add_tokens(user)
            self._special_ids = frozenset(i for i, t in enumerate(token_types) if t == TOKEN_TYPE_CONTROL)
        else:
            self._special_ids = frozenset()

        self.bos_token_id = None if bos_token_id is None else int(bos_token_id)
        self.eos_token_id = None if eos_token_id is None else int(eos_token_id)
        self.pad_token_id = None if pad_token_id is None else int(pad_token_id)
        self.unk_token_id = None if unk_token_id is None else int(unk_token_id)
        self.chat_template = chat_template if chat_template else CHATML_TEMPLATE
        self.has_own_chat_template = bool(chat_template)
        self.add_bos = bool(add_bos)
        self._compiled_template = None

    # ------------------------------------------------------------------ #
    # Construction from GGUF
    # ------------------------------------------------------------------ #

    @classmethod
    def from_gguf(cls, source: Any) -> GGUFTokenizer:
        """Build the tokenizer from a GGUF path or an open ``gguf.GGUFReader``.

        Raises:
            ValueError: if the file has no tokenizer or one that is not
                byte-level BPE (``tokenizer.ggml.model != "gpt2"``).
        """
        if isinstance(source, (str, os.PathLike)):
            import gguf

            source = gguf.GGUFReader(os.fspath(source))
        fields = source.fields

        def get(key: str, default: Any = None) -> Any:
            f = fields.get(key)
            return default if f is None else f.contents()

        model = get("tokenizer.ggml.model")
        if model is None:
            raise ValueError("GGUF file has no tokenizer (tokenizer.ggml.model is missing)")
        if model != "gpt2":
            raise ValueError(
                f"GGUF tokenizer model {model!r} is not supported; only byte-level BPE "
                "('gpt2') is implemented"
            )
        tokens = get("tokenizer.ggml.tokens")
        merges = get("tokenizer.ggml.merges")
        if tokens is None or merges is None:
            raise ValueError("GGUF file lacks tokenizer.ggml.tokens or tokenizer.ggml.merges")
        return cls(
            tokens,
            merges,
            get("tokenizer.ggml.token_type"),
            bos_token_id=get("tokenizer.ggml.bos_token_id"),
            eos_token_id=get("tokenizer.ggml.eos_token_id"),
            pad_token_id=get("tokenizer.ggml.padding_token_id"),
            unk_token_id=get("tokenizer.ggml.unknown_token_id"),
            chat_template=get("tokenizer.chat_template"),
            pre=get("tokenizer.ggml.pre", "gpt2"),
            add_bos=bool(get("tokenizer.ggml.add_bos_token", False)),
        )

    # ------------------------------------------------------------------ #
    # Encoding / decoding
    # ------------------------------------------------------------------ #

    @property
    def vocab_size(self) -> int:
        """Number of token ids (the model's embedding rows)."""
        return len(self._tokens)

    @property
    def backend(self):
        """The underlying :class:`tokenizers.Tokenizer`."""
        return self._tk

    @property
    def bos_token(self) -> str | None:
        return None if self.bos_token_id is None else self._tokens[self.bos_token_id]

    @property
    def eos_token(self) -> str | None:
        return None if self.eos_token_id is None else self._tokens[self.eos_token_id]

    def encode(self, text: str, *, add_bos: bool | None = None) -> list[int]:
        """Token ids of ``text``; special-token strings in it map to their ids.

        ``add_bos`` defaults to the file's ``tokenizer.ggml.add_bos_token``
        (False for SmolLM2).
        """
        if not isinstance(text, str):
            raise TypeError(f"encode expects a str, got {type(text).__name__}")
        ids = self._tk.encode(text, add_special_tokens=False).ids
        if add_bos if add_bos is not None else self.add_bos:
            if self.bos_token_id is None:
                raise ValueError("add_bos=True but the tokenizer has no bos_token_id")
            ids = [self.bos_token_id, *ids]
        return ids

    def encode_batch(self, texts: Sequence[str], *, add_bos: bool | None = None) -> list[list[int]]:
        """:meth:`encode` for several texts (parallel in the Rust backend)."""
        encs = self._tk.encode_batch(list(texts), add_special_tokens=False)
        use_bos = add_bos if add_bos is not None else self.add_bos
        if use_bos and self.bos_token_id is None:
            raise ValueError("add_bos=True but the tokenizer has no bos_token_id")
        return [([self.bos_token_id] if use_bos else []) + e.ids for e in encs]

    def decode(self, ids: Sequence[int], *, skip_special_tokens: bool = False) -> str:
        """Text of ``ids`` (invalid UTF-8 byte sequences become U+FFFD)."""
        ids = [int(i) for i in ids]
        n = len(self._tokens)
        bad = [i for i in ids if not 0 <= i < n]
        if bad:
            raise ValueError(f"decode: token ids {bad[:5]} are outside the vocabulary [0, {n})")
        return self._tk.decode(ids, skip_special_tokens=skip_special_tokens)

    def id_to_token(self, token_id: int) -> str:
        """The vocabulary string of ``token_id`` (byte-level spelling, e.g. ``'Ġthe'``)."""
        return self._tokens[token_id]

    def token_to_id(self, token: str) -> int | None:
        """Id of a vocabulary string, or None."""
        return self._tk.token_to_id(token)

    def is_special(self, token_id: int) -> bool:
        """Whether ``token_id`` is a control token (``<|im_end|>`` etc.)."""
        return int(token_id) in self._special_ids

    # ------------------------------------------------------------------ #
    # Chat template
    # ------------------------------------------------------------------ #

    def _template(self):
        if self._compiled_template is None:
            try:
                from jinja2.ext import loopcontrols
                from jinja2.sandbox import ImmutableSandboxedEnvironment
            except ImportError as e:  # pragma: no cover - depends on environment
                raise ImportError("apply_chat_template needs the `jinja2` package: pip install jinja2") from e
            import json

            def raise_exception(message):
                raise ValueError(f"chat template error: {message}")

            def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
                return json.dumps(
                    x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys
                )

            env = ImmutableSandboxedEnvironment(
                trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols]
            )
            env.filters["tojson"] = tojson
            env.globals["raise_exception"] = raise_exception
            self._compiled_template = env.from_string(self.chat_template)
        return self._compiled_template

    def apply_chat_template(
        self,
        messages: Sequence[Mapping[str, Any]],
        add_generation_prompt: bool = True,
        **template_kwargs: Any,
    ) -> str:
        """Render ``messages`` with the model's chat template (Jinja, sandboxed).

        Args:
            messages: ``[{"role": "user", "content": "Hi"}, ...]``.
            add_generation_prompt: append the header that starts the assistant's
                turn (``<|im_start|>assistant\\n`` for SmolLM2).
            **template_kwargs: extra variables for the template.

        Returns the prompt text; encode it with :meth:`encode` (special-token
        strings in it become single ids).

        Example::

            >>> tok = GGUFTokenizer(tokens=["a"], merges=[])
            >>> tok.apply_chat_template([{"role": "user", "content": "a"}])
            '<|im_start|>user\\na<|im_end|>\\n<|im_start|>assistant\\n'
        """
        if isinstance(messages, (str, bytes)) or not isinstance(messages, Sequence):
            raise TypeError("messages must be a list of {'role': ..., 'content': ...} dicts")
        for i, m in enumerate(messages):
            if not isinstance(m, Mapping) or "role" not in m or "content" not in m:
                raise ValueError(f"messages[{i}] must be a mapping with 'role' and 'content' keys, got {m!r}")
        return self._template().render(
            messages=[dict(m) for m in messages],
            add_generation_prompt=add_generation_prompt,
            bos_token=self.bos_token or "",
            eos_token=self.eos_token or "",
            **template_kwargs,
        )

    def __repr__(self) -> str:
        return (
            f"GGUFTokenizer(vocab_size={self.vocab_size}, bos_token_id={self.bos_token_id}, "
            f"eos_token_id={self.eos_token_id})"
        )
