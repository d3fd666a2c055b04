"""GPT-2's tokenizer: byte-level byte-pair encoding, 50,257 ids, ``<|endoftext|>`` = 50256.

The published CRATE-LM was trained on GPT-2 token ids (the official code encodes with
``tiktoken.get_encoding("gpt2")`` and ``allowed_special={"<|endoftext|>"}``,
``docs/notes/crate_lm_official_code.md`` §5). This file builds the same tokenizer on the
``tokenizers`` library from GPT-2's two vocabulary files, one step a line::

    text
      1. special   each "<|endoftext|>" written in the text is its own id (50256), not its characters
      2. split     GPT-2's regular expression cuts the rest into pieces: "'s", "'t", ..., " word",
                   " 123", " ?!", runs of whitespace (a space stays at the front of the next word)
      3. bytes     each piece -> its UTF-8 bytes, each byte written as one printable character
                   (GPT-2's bytes_to_unicode: space -> "Ġ", newline -> "Ċ")
      4. merge     the pair of adjacent symbols with the lowest rank in merges.txt is merged, again and
                   again, until no listed pair is left; each symbol is then an id of vocab.json
    ids

Decoding maps the ids back to their characters, those to bytes, and the bytes to text (an
incomplete UTF-8 sequence becomes U+FFFD).

The files (``read_gpt2_vocab``): ``vocab.json``, one JSON object ``{token: id}`` (50,257 entries:
the 256 single bytes, 50,000 merged tokens, ``<|endoftext|>`` last), and ``merges.txt``, a
``#version: 0.2`` line, then one merge ``left right`` a line in rank order (50,000 lines). OpenAI
published them as ``encoder.json`` and ``vocab.bpe``; those names are read too. For a connected
user who asks, :func:`download_gpt2_vocab` fetches the two files of the Hugging Face hub repository
``openai-community/gpt2`` (about 1.5 MB, nothing else) into the hub cache and checks them: the
format, 50,257 ids numbered 0..50256, the 256 byte symbols, 50,000 merges and ``<|endoftext|>`` =
50256 (the hub gives no checksum for these small files, so the check is by content). The
published CRATE-LM's embedding has 50,304 rows (50,257 padded to a multiple of 64); ids 50257 and up
are never produced.

``tokenizers`` is optional (``pip install "crate-edu[language]"``) and imported only when a
tokenizer is built.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Iterable, Sequence
from os import PathLike
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from crate_edu.errors import ConfigError, first_line
from crate_edu.text.bert_wordpiece import OptionalPackageError, VocabularyError

__all__ = [
    "END_OF_TEXT",
    "GPT2_FILES",
    "GPT2_MERGES",
    "GPT2_REPO_ID",
    "GPT2_VOCAB_SIZE",
    "GPT2Tokenizer",
    "bytes_to_unicode",
    "download_gpt2_vocab",
    "read_gpt2_vocab",
]

#: The Hugging Face hub repository of GPT-2 (its tokenizer files).
GPT2_REPO_ID = "openai-community/gpt2"
#: The two files of the vocabulary, Hugging Face's names (OpenAI's: encoder.json, vocab.bpe).
GPT2_FILES = ("vocab.json", "merges.txt")
#: The special token that ends each document; GPT-2's last id.
END_OF_TEXT = "<|endoftext|>"
#: Ids of the real GPT-2 vocabulary (256 bytes + 50,000 merges + <|endoftext|>).
GPT2_VOCAB_SIZE = 50257
#: Merges of the real GPT-2 vocabulary.
GPT2_MERGES = 50000

_OPENAI_FILES = ("encoder.json", "vocab.bpe")
_FIX = (
    "give the folder holding GPT-2's vocab.json and merges.txt (or OpenAI's encoder.json and vocab.bpe), "
    f"or download them from the Hugging Face hub ({GPT2_REPO_ID}): download_gpt2_vocab(), or --download"
)


def _require_tokenizers() -> Any:
    try:
        return importlib.import_module("tokenizers")
    except ImportError:
        raise OptionalPackageError(
            "the GPT-2 tokenizer needs the 'tokenizers' package, which is not installed: "
            'pip install "crate-edu[language]"'
        ) from None


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's table: each of the 256 bytes -> one printable character (openai/gpt-2 ``encoder.py``).

    The 188 printable bytes of Latin-1 ("!".."~", "¡".."¬", "®".."ÿ") stand for themselves; the other
    68 (controls, space, soft hyphen, ...) take the characters from U+0100 on, in byte order, so
    space (32) is "Ġ" (U+0120) and newline (10) is "Ċ" (U+010A).
    """
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    others = [b for b in range(256) if b not in printable]
    return {**{b: chr(b) for b in printable}, **{b: chr(256 + n) for n, b in enumerate(others)}}


# --------------------------------------------------------------------------------------------
# The vocabulary.
# --------------------------------------------------------------------------------------------


def _locate(path: str | PathLike | Sequence[str | PathLike]) -> tuple[Path, Path]:
    """(vocab file, merges file) of a folder or a pair of files."""
    if isinstance(path, (str, PathLike)):
        folder = Path(path).expanduser()
        if not folder.is_dir():
            raise VocabularyError(f"no folder at {folder}; {_FIX}")
        for names in (GPT2_FILES, _OPENAI_FILES):
            if all((folder / n).is_file() for n in names):
                return folder / names[0], folder / names[1]
        raise VocabularyError(f"{folder} holds no vocab.json and merges.txt; {_FIX}")
    files = [Path(p).expanduser() for p in path]
    if len(files) != 2:
        raise VocabularyError(
            f"give a folder or the two files (vocab.json, merges.txt), got {len(files)} paths"
        )
    for f in files:
        if not f.is_file():
            raise VocabularyError(f"no file at {f}; {_FIX}")
    return files[0], files[1]


def _read_text(path: Path) -> str:
    try:
        return path.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        raise VocabularyError(f"{path} is not UTF-8 text, so not a GPT-2 vocabulary file; {_FIX}") from None


def read_gpt2_vocab(
    path: str | PathLike | Sequence[str | PathLike],
) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """``({token: id}, [(left, right), ...])`` of GPT-2's vocabulary files, checked.

    Args:
        path: a folder holding ``vocab.json`` and ``merges.txt`` (or ``encoder.json`` and
            ``vocab.bpe``), or the two files ``(vocab.json, merges.txt)``.

    Raises:
        VocabularyError: a file is missing or not in this format (one line naming the file and the
            fix): ``vocab.json`` is not a JSON object of token -> integer id, its ids are not
            0 .. n-1 each once, a byte symbol or ``<|endoftext|>`` is missing; a line of
            ``merges.txt`` is not two symbols, or a merge's parts or result are not in the vocabulary.
    """
    vocab_path, merges_path = _locate(path)
    try:
        vocab = json.loads(_read_text(vocab_path))
    except json.JSONDecodeError as e:
        raise VocabularyError(f"{vocab_path} is not JSON ({first_line(e)}); {_FIX}") from None
    if not isinstance(vocab, dict) or not all(
        isinstance(t, str) and isinstance(i, int) and not isinstance(i, bool) for t, i in vocab.items()
    ):
        raise VocabularyError(f"{vocab_path} is not a JSON object of token -> integer id; {_FIX}")
    ids = sorted(vocab.values())
    if ids != list(range(len(ids))):
        wrong = next(i for i, got in enumerate(ids) if got != i) if ids else 0
        raise VocabularyError(
            f"{vocab_path}: the ids should be 0..{len(ids) - 1}, each once, but id {wrong} is "
            f"{'listed twice or missing' if wrong < len(ids) else 'missing'}; {_FIX}"
        )
    missing = [repr(s) for s in bytes_to_unicode().values() if s not in vocab]
    if missing:
        raise VocabularyError(
            f"{vocab_path} lacks {len(missing)} of the 256 byte symbols (e.g. {missing[0]}), so it is not a "
            f"byte-level BPE vocabulary; {_FIX}"
        )
    if END_OF_TEXT not in vocab:
        raise VocabularyError(f"{vocab_path} has no {END_OF_TEXT} token; {_FIX}")

    lines = _read_text(merges_path).split("\n")
    start = 1 if lines and lines[0].startswith("#version") else 0
    if lines and lines[-1] == "":  # the newline that ends the last line
        lines.pop()
    merges: list[tuple[str, str]] = []
    for number, line in enumerate(lines[start:], start + 1):
        parts = line.split(" ")
        if len(parts) != 2 or not all(parts):
            raise VocabularyError(
                f"{merges_path} line {number} is {line[:30]!r}, not one merge: a GPT-2 merges.txt has "
                f"'#version: 0.2', then two symbols a line, separated by one space; {_FIX}"
            )
        left, right = parts
        unknown = [s for s in (left, right, left + right) if s not in vocab]
        if unknown:
            raise VocabularyError(
                f"{merges_path} line {number} merges {left!r} and {right!r}, but {unknown[0]!r} is not in "
                f"{vocab_path.name}: the two files do not belong together; {_FIX}"
            )
        merges.append((left, right))
    return vocab, merges


def download_gpt2_vocab(cache_dir: str | PathLike | None = None, *, local_only: bool = False) -> Path:
    """The folder holding GPT-2's ``vocab.json`` and ``merges.txt`` from the Hugging Face hub
    (``openai-community/gpt2``), downloaded once into the hub cache (``cache_dir``: another folder)
    and checked: the format (:func:`read_gpt2_vocab`), 50,257 ids, 50,000 merges, ``<|endoftext|>``
    = 50256. Only these two files are fetched.

    Args:
        cache_dir: the hub cache folder (default: the hub's, ``~/.cache/huggingface``).
        local_only: do not connect; use a copy already in the cache.

    Raises:
        VocabularyError: the download failed (offline, ...), or with ``local_only`` there is no copy
            in the cache, or the files are not GPT-2's (one line naming the fix).
    """
    from huggingface_hub import hf_hub_download

    paths = []
    for filename in GPT2_FILES:
        try:
            got = hf_hub_download(
                repo_id=GPT2_REPO_ID, filename=filename, cache_dir=cache_dir, local_files_only=local_only
            )
        except (OSError, ValueError) as e:  # no connection, not in the cache, no such file
            if local_only:
                raise VocabularyError(
                    f"GPT-2's {filename} is not in the Hugging Face hub cache; download it once with "
                    f"download_gpt2_vocab() (on the command line: --download) on a connected machine, or "
                    f"give the folder holding vocab.json and merges.txt"
                ) from None
            raise VocabularyError(
                f"could not download {filename} of {GPT2_REPO_ID!r} from the Hugging Face hub "
                f"({first_line(e)}); connect to the internet, or give a local folder holding GPT-2's "
                f"vocab.json and merges.txt"
            ) from None
        paths.append(Path(got))
    vocab, merges = read_gpt2_vocab(paths)
    if (len(vocab), len(merges), vocab[END_OF_TEXT]) != (GPT2_VOCAB_SIZE, GPT2_MERGES, GPT2_VOCAB_SIZE - 1):
        raise VocabularyError(
            f"the files in {paths[0].parent} hold {len(vocab):,} ids, {len(merges):,} merges and "
            f"{END_OF_TEXT} = {vocab[END_OF_TEXT]}, not GPT-2's {GPT2_VOCAB_SIZE:,}, {GPT2_MERGES:,} and "
            f"{GPT2_VOCAB_SIZE - 1}; delete them from the hub cache and download again"
        )
    if paths[0].parent != paths[1].parent:  # the hub keeps one snapshot folder per revision
        raise VocabularyError(f"the hub cache put vocab.json and merges.txt in different folders: {paths}")
    return paths[0].parent


# --------------------------------------------------------------------------------------------
# The tokenizer.
# --------------------------------------------------------------------------------------------


class GPT2Tokenizer:
    """Text <-> GPT-2 ids: ``GPT2Tokenizer("folder").encode("Hello world") == [15496, 995]`` with
    GPT-2's files.

    Args:
        vocab: a folder with ``vocab.json`` and ``merges.txt``, the two files, or a ``{token: id}``
            dict (then ``merges`` too).
        merges: the merges in rank order, when ``vocab`` is a dict.

    Raises:
        VocabularyError: the files are missing or not in GPT-2's format.
        OptionalPackageError: ``tokenizers`` is not installed.
    """

    name = "gpt2"

    def __init__(
        self,
        vocab: str | PathLike | Sequence[str | PathLike] | dict[str, int],
        merges: Sequence[tuple[str, str]] | None = None,
    ) -> None:
        if isinstance(vocab, dict):
            if merges is None:
                raise ConfigError("give the merges with a vocabulary dict: GPT2Tokenizer(vocab, merges)")
            self.vocab, self.merges = dict(vocab), [tuple(m) for m in merges]
            if END_OF_TEXT not in self.vocab:
                raise VocabularyError(f"the vocabulary has no {END_OF_TEXT} token; {_FIX}")
        else:
            self.vocab, self.merges = read_gpt2_vocab(vocab)
        self.eot_id = self.vocab[END_OF_TEXT]
        self.vocab_size = max(self.vocab.values()) + 1
        self._with_special = _byte_level_bpe(self.vocab, self.merges, special=True)
        self._plain = _byte_level_bpe(self.vocab, self.merges, special=False)

    @classmethod
    def from_hub(cls, cache_dir: str | PathLike | None = None, *, download: bool = True) -> GPT2Tokenizer:
        """GPT-2's tokenizer from the Hugging Face hub cache (:func:`download_gpt2_vocab`); with
        ``download=False`` only a copy already in the cache is used (no connection)."""
        return cls(download_gpt2_vocab(cache_dir, local_only=not download))

    def encode(self, text: str, special: bool = True) -> list[int]:
        """The ids of ``text``. With ``special`` (the default, as the official code's
        ``allowed_special={"<|endoftext|>"}``) each ``<|endoftext|>`` written in the text is the one id
        :attr:`eot_id`; without, it is encoded as its 13 characters."""
        if not isinstance(text, str):
            raise TypeError(f"GPT2Tokenizer.encode takes a string, got {type(text).__name__}")
        tokenizer = self._with_special if special else self._plain
        return tokenizer.encode(text, add_special_tokens=False).ids

    def encode_tensor(self, text: str, special: bool = True) -> Tensor:
        """``encode(text)`` as a LongTensor ``(number of tokens,)``."""
        return torch.tensor(self.encode(text, special), dtype=torch.int64)

    def encode_documents(self, documents: Iterable[str]) -> list[int]:
        """The ids of each document followed by ``<|endoftext|>``, concatenated (how nanoGPT's
        ``prepare.py`` writes its token files)."""
        docs = list(documents)
        out: list[int] = []
        for encoding in self._plain.encode_batch(docs, add_special_tokens=False):
            out += [*encoding.ids, self.eot_id]
        return out

    def decode(self, ids: Iterable[int] | Tensor) -> str:
        """The text of ``ids`` (a list or a 1-D tensor); ``<|endoftext|>`` is written out.

        Raises:
            ValueError: an id outside the vocabulary (one line).
        """
        if isinstance(ids, Tensor):
            if ids.dim() > 1 or ids.dtype.is_floating_point or ids.dtype == torch.bool:
                raise ValueError(f"decode takes a 1-D integer tensor, got {ids.dtype} {tuple(ids.shape)}")
            ids = ids.tolist()
        ids = [int(i) for i in ids]
        bad = [i for i in ids if not 0 <= i < self.vocab_size]
        if bad:
            raise ValueError(f"GPT-2 ids are in 0..{self.vocab_size - 1}; got {bad[0]}")
        return self._with_special.decode(ids, skip_special_tokens=False)

    def tokens(self, text: str) -> list[str]:
        """The tokens of ``text`` as vocabulary strings (step 4's symbols): ``['Hello', 'Ġworld']``."""
        return self._with_special.encode(text, add_special_tokens=False).tokens

    def describe(self) -> str:
        """One line: what the ids are."""
        return (
            f"GPT-2 byte-level BPE: {self.vocab_size:,} ids ({len(self.merges):,} merges), "
            f"{END_OF_TEXT} = {self.eot_id}"
        )

    def __repr__(self) -> str:
        return f"GPT2Tokenizer(vocab_size={self.vocab_size}, merges={len(self.merges)}, eot_id={self.eot_id})"


def _byte_level_bpe(vocab: dict[str, int], merges: list[tuple[str, str]], special: bool) -> Any:
    """Steps 1-4 as a ``tokenizers.Tokenizer``, configured as the ``tokenizer.json`` of GPT-2."""
    tokenizers = _require_tokenizers()
    from tokenizers import decoders, pre_tokenizers
    from tokenizers.models import BPE

    model = BPE(
        vocab, merges, dropout=None, continuing_subword_prefix="", end_of_word_suffix="", fuse_unk=False
    )
    tokenizer = tokenizers.Tokenizer(model)
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)  # steps 2-3
    tokenizer.decoder = decoders.ByteLevel()
    if special:
        tokenizer.add_special_tokens(
            [tokenizers.AddedToken(END_OF_TEXT, special=True, normalized=False)]
        )  # 1
    return tokenizer
