"""Characters and bytes as tokens: the two tokenizers a small language model trains with on a CPU.

:class:`CharTokenizer` has a fixed vocabulary of 98 ids, the same for every text, so a model trained
on one corpus reads any other::

    id 0        unknown: any character not listed below (decoded as U+FFFD, the replacement character)
    id 1        '\\t'
    id 2        '\\n'
    id 3 .. 97  the 95 printable ASCII characters: ' ' (3), '!' (4), '0' (19), 'A' (36), 'a' (68), '~' (97)

so ``id = ord(c) - 29`` for the printable ones. English prose and Python code are almost all in this
set (the ``python-docs`` corpus has 575 other characters in 465,126: curly quotes, dashes, "ß"); a
character-level model trained on one corpus therefore has the same output layer as any other.

:class:`ByteTokenizer` reads the UTF-8 bytes of a text (256 ids, nothing unknown); decoding a cut
multi-byte character gives U+FFFD (``errors="replace"``).

:func:`get_tokenizer` builds any of the three by name: ``"char"``, ``"byte"`` and ``"gpt2"`` (GPT-2's
byte-level BPE, :mod:`crate_edu.text.gpt2_bpe`, which needs its vocabulary files).
"""

from __future__ import annotations

from collections.abc import Iterable
from os import PathLike
from typing import Any

import numpy as np
import torch
from torch import Tensor

from crate_edu.errors import ConfigError

__all__ = [
    "CHAR_VOCAB",
    "UNKNOWN_ID",
    "UNKNOWN_TEXT",
    "TOKENIZERS",
    "CharTokenizer",
    "ByteTokenizer",
    "get_tokenizer",
]

#: The characters of ids 1 .. 97, in id order: tab, newline, then ' ' .. '~'.
CHAR_VOCAB = "\t\n" + "".join(chr(c) for c in range(32, 127))
#: The id of every character outside :data:`CHAR_VOCAB`.
UNKNOWN_ID = 0
#: What the unknown id decodes to (U+FFFD, the replacement character).
UNKNOWN_TEXT = "\ufffd"
#: The names :func:`get_tokenizer` accepts.
TOKENIZERS = ("char", "byte", "gpt2")


class CharTokenizer:
    """Text <-> ids over a fixed vocabulary of 98: unknown (0), tab (1), newline (2), ' ' .. '~' (3 .. 97).

    ``CharTokenizer().encode("Hi\\n") == [43, 76, 2]``; ``decode`` inverts ``encode`` on every text
    made of the listed characters, and writes U+FFFD for each unknown id.
    """

    name = "char"
    vocab_size = 1 + len(CHAR_VOCAB)  # 98

    def __init__(self) -> None:
        self.chars = UNKNOWN_TEXT + CHAR_VOCAB  # id -> character
        self._table = {ord(c): i for i, c in enumerate(self.chars) if i != UNKNOWN_ID}  # code point -> id
        self._ascii_ids = np.zeros(128, dtype=np.int64)  # ASCII code -> id (0: unknown)
        for code, i in self._table.items():
            self._ascii_ids[code] = i

    def encode(self, text: str) -> list[int]:
        """The id of each character of ``text`` (unknown characters: 0)."""
        table = self._table
        return [table.get(ord(c), UNKNOWN_ID) for c in text]

    def encode_tensor(self, text: str) -> Tensor:
        """``encode(text)`` as a LongTensor ``(len(text),)``, computed on whole arrays (about 10 ms for a
        million characters): the text's code points index a table of the 128 ASCII codes."""
        codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)  # (N,) one code point each
        ascii_ = codes < 128
        ids = np.zeros(codes.shape, dtype=np.int64)  # (N,) 0 = unknown
        ids[ascii_] = self._ascii_ids[codes[ascii_]]
        return torch.from_numpy(ids)

    def decode(self, ids: Iterable[int] | Tensor) -> str:
        """The text of ``ids`` (a list or a 1-D tensor); id 0 becomes U+FFFD.

        Raises:
            ValueError: an id outside ``0 .. 97`` (one line).
        """
        ids = _id_list(ids)
        bad = [i for i in ids if not 0 <= i < self.vocab_size]
        if bad:
            raise ValueError(f"character ids are in 0..{self.vocab_size - 1}; got {bad[0]}")
        chars = self.chars
        return "".join(chars[i] for i in ids)

    def describe(self) -> str:
        """One line: what the ids are."""
        return (
            f"characters: {self.vocab_size} ids (0 unknown -> U+FFFD, 1 tab, 2 newline, 3..97 printable "
            "ASCII ' '..'~')"
        )

    def __repr__(self) -> str:
        return f"CharTokenizer(vocab_size={self.vocab_size})"


class ByteTokenizer:
    """Text <-> its UTF-8 bytes as ids ``0 .. 255``; nothing is unknown."""

    name = "byte"
    vocab_size = 256

    def encode(self, text: str) -> list[int]:
        """The UTF-8 bytes of ``text`` (a character outside ASCII takes 2 to 4 ids)."""
        return list(text.encode("utf-8"))

    def encode_tensor(self, text: str) -> Tensor:
        """``encode(text)`` as a LongTensor ``(number of bytes,)``."""
        return torch.from_numpy(np.frombuffer(text.encode("utf-8"), dtype=np.uint8).astype(np.int64))

    def decode(self, ids: Iterable[int] | Tensor) -> str:
        """The text of the bytes ``ids``; an invalid or cut UTF-8 sequence becomes U+FFFD.

        Raises:
            ValueError: an id outside ``0 .. 255`` (one line).
        """
        ids = _id_list(ids)
        bad = [i for i in ids if not 0 <= i < 256]
        if bad:
            raise ValueError(f"byte ids are in 0..255; got {bad[0]}")
        return bytes(ids).decode("utf-8", errors="replace")

    def describe(self) -> str:
        """One line: what the ids are."""
        return "bytes: 256 ids, the UTF-8 bytes of the text"

    def __repr__(self) -> str:
        return "ByteTokenizer(vocab_size=256)"


def _id_list(ids: Iterable[int] | Tensor) -> list[int]:
    if isinstance(ids, Tensor):
        if ids.dim() > 1 or ids.dtype.is_floating_point or ids.dtype == torch.bool:
            raise ValueError(f"decode takes a 1-D integer tensor, got {ids.dtype} {tuple(ids.shape)}")
        return ids.tolist()
    return [int(i) for i in ids]


def get_tokenizer(name: str, vocab: str | PathLike | None = None, download: bool = False) -> Any:
    """The tokenizer called ``name``: ``"char"`` (:class:`CharTokenizer`), ``"byte"``
    (:class:`ByteTokenizer`) or ``"gpt2"`` (:class:`crate_edu.text.gpt2_bpe.GPT2Tokenizer`, from the
    folder ``vocab`` holding ``vocab.json`` and ``merges.txt``, or, without ``vocab``, from the copy
    :func:`~crate_edu.text.gpt2_bpe.download_gpt2_vocab` keeps in the Hugging Face hub cache,
    downloaded first if ``download``).

    Raises:
        ConfigError: an unknown name (one line listing the names); for ``"gpt2"``, the vocabulary
            errors of :mod:`crate_edu.text.gpt2_bpe`.
    """
    if name == "char":
        return CharTokenizer()
    if name == "byte":
        return ByteTokenizer()
    if name == "gpt2":
        from crate_edu.text.gpt2_bpe import GPT2Tokenizer

        return GPT2Tokenizer(vocab) if vocab is not None else GPT2Tokenizer.from_hub(download=download)
    raise ConfigError(f"unknown tokenizer {name!r}; choose one of {', '.join(TOKENIZERS)}")
