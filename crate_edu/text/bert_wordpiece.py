"""The CLIPA text tokenizer: BERT's uncased WordPiece, 32 ids, [CLS] first and no [SEP].

CRATE-α-CLIPA's text tower reads the ids of open_clip's
``HFTokenizer("bert-base-uncased", context_length=32, clean="whitespace", strip_sep_token=True)``,
which the official evaluation gets from ``open_clip.get_tokenizer("hf-hub:UCSC-VLAA/ViT-H-14-CLIPA-
datacomp1B")`` (``docs/notes/crate_alpha_official_code.md`` §2.4; open_clip v2.24.0
``tokenizer.py``). This file builds the same pipeline on the ``tokenizers`` library, one step a
line::

    text
      1. clean      ftfy.fix_text, html.unescape twice, strip, each run of whitespace -> one space
      2. normalise  BERT's: drop control characters, other whitespace -> " ", spaces around CJK
                    characters, lower-case, strip accents (NFD, then drop the combining marks)
      3. split      at whitespace, and around every punctuation character
      4. WordPiece  each word -> the longest vocabulary entry from its left end, then the longest
                    "##" continuation, and so on; a word with no such cover, or longer than 100
                    characters, is one [UNK]
      5. frame      [CLS] w_1 ... w_k [SEP], k <= 30 (longer texts are cut), then [PAD] up to 32
      6. strip      every [SEP] id -> 0 (open_clip's strip_sep_token)
    ids (B, 32) int64; with bert-base-uncased: [101, w_1 ... w_k, 0, 0, ...]

Steps 2-4 are ``tokenizers``' BertNormalizer, BertPreTokenizer and WordPiece, configured as the
``tokenizer.json`` of ``bert-base-uncased`` that open_clip's ``AutoTokenizer`` loads (the special
tokens [PAD] [UNK] [CLS] [SEP] [MASK] written literally in a text stay whole). Steps 1, 5 and 6
are written out below. Step 1 keeps ftfy because open_clip calls ``ftfy.fix_text`` unconditionally
(v2.24.0 imports ftfy at the top of ``tokenizer.py``): it changes no ASCII prompt, but it repairs
mojibake and straightens curly quotes, and those change the ids.

The vocabulary is BERT's ``vocab.txt`` (one token per line, id = line number, from 0): a local
file, or, for a connected user who asks, the ``vocab.txt`` of the Hugging Face hub repository
``bert-base-uncased`` (30,522 tokens; its ``tokenizer.json`` holds the same vocabulary) through
``huggingface_hub.hf_hub_download``, cached in the usual hub cache (``~/.cache/huggingface``).
The CLIPA text tower has 32,000 embedding rows; ids 30,522 and up are never produced.

The JAX code that trained the model tokenised without any [SEP] (ids ``[CLS] w_1 ... w_31``):
for texts of at most 30 wordpieces, every prompt of the zero-shot evaluation among them, the two
agree; for longer texts the 31st wordpiece is a 0 here, as in the official PyTorch port.

``tokenizers`` and ``ftfy`` are optional (``pip install "crate-edu[clip]"``) and imported only
when a tokenizer is built.
"""

from __future__ import annotations

import html
import re
from collections.abc import Sequence
from os import PathLike
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from crate_edu.errors import ConfigError, first_line

__all__ = [
    "CONTEXT_LENGTH",
    "HUB_REPO_ID",
    "VOCAB_FILENAME",
    "SPECIAL_TOKENS",
    "MAX_WORD_CHARS",
    "VocabularyError",
    "OptionalPackageError",
    "read_vocab",
    "download_vocab",
    "clean_text",
    "CLIPATokenizer",
]

#: Token ids per text (the CLIPA text tower's context, official 32).
CONTEXT_LENGTH = 32
#: The Hugging Face hub repository whose tokenizer open_clip's CLIPA config names.
HUB_REPO_ID = "bert-base-uncased"
#: Its vocabulary file, BERT's format.
VOCAB_FILENAME = "vocab.txt"
#: BERT's special tokens: a text that contains one verbatim gets its id, not its pieces.
SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
#: Words longer than this become one [UNK] (BERT's ``max_input_chars_per_word``).
MAX_WORD_CHARS = 100

_REQUIRED = ("[PAD]", "[UNK]", "[CLS]", "[SEP]")
_VOCAB_FIX = (
    "give the vocab.txt of BERT uncased (one token per line, id = line number; bert-base-uncased's "
    "has 30,522 lines), or download that one from the Hugging Face hub: CLIPATokenizer.from_hub(), "
    "or crate-edu eval --vocab-from-hub"
)
#: Unicode's White_Space characters: what open_clip's ``regex`` ``\s+`` collapses (Python's ``re``
#: ``\s`` would also take the separators U+001C-U+001F, which BERT's cleaning deletes instead).
_WHITESPACE_RUN = re.compile("[\t\n\v\f\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]+")


class VocabularyError(ConfigError):
    """A vocabulary file that is missing, unreadable or not in BERT's ``vocab.txt`` format
    (``str(err)`` is one line naming the file and the fix)."""


class OptionalPackageError(ConfigError, ImportError):
    """An optional package that this feature needs is not installed (one line naming the extra)."""


def _require(module: str) -> Any:
    """Import an optional package of the ``clip`` extra, or say in one line how to install it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise OptionalPackageError(
            f"the CLIPA tokenizer needs the {module!r} package, which is not installed: "
            'pip install "crate-edu[clip]"'
        ) from None


# --------------------------------------------------------------------------------------------
# The vocabulary.
# --------------------------------------------------------------------------------------------


def read_vocab(path: str | PathLike) -> dict[str, int]:
    """``{token: id}`` of a BERT ``vocab.txt``: one token per line, the id is the line number (from 0).

    Raises:
        VocabularyError: no such file, not UTF-8, an empty line or a token with a space or tab in it
            (not this format: a tokenizer.json, a web page, Windows line endings), a token listed twice,
            or one of [PAD] [UNK] [CLS] [SEP] missing.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise VocabularyError(f"no vocabulary file at {path}; {_VOCAB_FIX}")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        raise VocabularyError(f"{path} is not UTF-8 text, so not a BERT vocab.txt; {_VOCAB_FIX}") from None
    lines = text.split("\n")
    if lines[-1] == "":  # the newline that ends the last line
        lines.pop()
    vocab: dict[str, int] = {}
    for i, token in enumerate(lines):
        if token == "" or any(c in token for c in " \t\r"):
            raise VocabularyError(
                f"{path} line {i + 1} is {token[:30]!r}, not one token: a BERT vocab.txt has one token "
                f"per line, without spaces; {_VOCAB_FIX}"
            )
        if token in vocab:
            raise VocabularyError(
                f"{path} lists {token!r} twice (lines {vocab[token] + 1} and {i + 1}); {_VOCAB_FIX}"
            )
        vocab[token] = i
    missing = [t for t in _REQUIRED if t not in vocab]
    if missing:
        raise VocabularyError(f"{path} has no {', '.join(missing)} token, so it is not BERT's; {_VOCAB_FIX}")
    return vocab


def download_vocab(repo_id: str = HUB_REPO_ID, *, cache_dir: str | PathLike | None = None) -> Path:
    """The ``vocab.txt`` of a Hugging Face hub repository (default ``bert-base-uncased``), downloaded
    once into the hub cache (``cache_dir``: another folder); needs the internet the first time.

    Raises:
        VocabularyError: the download failed (offline, an unknown repository, ...).
    """
    from huggingface_hub import hf_hub_download

    try:
        return Path(hf_hub_download(repo_id=repo_id, filename=VOCAB_FILENAME, cache_dir=cache_dir))
    except (OSError, ValueError) as e:  # no connection, no such repository or file, a bad repo id
        raise VocabularyError(
            f"could not download {VOCAB_FILENAME} of {repo_id!r} from the Hugging Face hub "
            f"({first_line(e)}); connect to the internet, or give a local BERT uncased vocab.txt"
        ) from None


# --------------------------------------------------------------------------------------------
# The tokenizer.
# --------------------------------------------------------------------------------------------


def clean_text(text: str) -> str:
    """Step 1, open_clip's ``clean="whitespace"``: ftfy, HTML entities, stripped, one space per gap."""
    ftfy = _require("ftfy")
    text = ftfy.fix_text(text)  # mojibake repaired, curly quotes straightened, ...
    text = html.unescape(html.unescape(text)).strip()  # "&amp;amp;" -> "&amp;" -> "&"
    return _WHITESPACE_RUN.sub(" ", text).strip()


class CLIPATokenizer:
    """Texts -> CLIPA token ids ``(B, context_length)``: ``CLIPATokenizer("vocab.txt")(["a photo."])``.

    Args:
        vocab: a BERT ``vocab.txt`` (path) or its ``{token: id}``.
        context_length: ids per text (official 32), at least 2.

    Raises:
        VocabularyError: the vocabulary is missing or not BERT's format.
        OptionalPackageError: ``tokenizers`` or ``ftfy`` is not installed.
    """

    def __init__(self, vocab: str | PathLike | dict[str, int], context_length: int = CONTEXT_LENGTH):
        if isinstance(context_length, bool) or not isinstance(context_length, int) or context_length < 2:
            raise ConfigError(
                f"context_length must be an integer of at least 2 ([CLS] and [SEP]), got {context_length!r}"
            )
        self.vocab = dict(vocab) if isinstance(vocab, dict) else read_vocab(vocab)
        missing = [t for t in _REQUIRED if t not in self.vocab]
        if missing:
            raise VocabularyError(f"the vocabulary has no {', '.join(missing)} token; {_VOCAB_FIX}")
        self.context_length = context_length
        self.pad_id, self.unk_id = self.vocab["[PAD]"], self.vocab["[UNK]"]
        self.cls_id, self.sep_id = self.vocab["[CLS]"], self.vocab["[SEP]"]
        self._wordpiece = _bert_wordpiece(self.vocab)
        _require("ftfy")  # fail now, not at the first text

    @classmethod
    def from_hub(
        cls,
        repo_id: str = HUB_REPO_ID,
        *,
        cache_dir: str | PathLike | None = None,
        context_length: int = CONTEXT_LENGTH,
    ) -> CLIPATokenizer:
        """The tokenizer with the ``vocab.txt`` of ``repo_id`` on the Hugging Face hub (default
        ``bert-base-uncased``, open_clip's), downloaded once into the hub cache (:func:`download_vocab`)."""
        return cls(download_vocab(repo_id, cache_dir=cache_dir), context_length=context_length)

    @property
    def vocab_size(self) -> int:
        """One more than the largest id (the text tower needs at least this many embedding rows)."""
        return max(self.vocab.values()) + 1

    def wordpieces(self, texts: Sequence[str]) -> list[list[int]]:
        """Steps 2-4 on cleaned texts: the ids of each text's wordpieces, no [CLS], [SEP] or padding."""
        encodings = self._wordpiece.encode_batch(list(texts), add_special_tokens=False)
        return [encoding.ids for encoding in encodings]

    def tokens(self, text: str) -> list[str]:
        """The wordpieces of one text as strings (steps 1-4): ``['a', 'photo', 'of', 'a', 'tin', '##ca']``."""
        return self._wordpiece.encode(clean_text(text), add_special_tokens=False).tokens

    def __call__(self, texts: str | Sequence[str], context_length: int | None = None) -> Tensor:
        """Token ids ``(B, L)`` int64 of ``texts`` (one string: B = 1); ``L`` is ``context_length``
        (default: the tokenizer's)."""
        if isinstance(texts, str):
            texts = [texts]
        L = self.context_length if context_length is None else context_length
        if isinstance(L, bool) or not isinstance(L, int) or L < 2:
            raise ConfigError(f"context_length must be an integer of at least 2, got {L!r}")
        if not all(isinstance(t, str) for t in texts):
            raise TypeError("CLIPATokenizer takes a string or a sequence of strings")
        pieces = self.wordpieces([clean_text(t) for t in texts])  # steps 1-4
        rows = []
        for p in pieces:
            framed = [self.cls_id, *p[: L - 2], self.sep_id]  # [CLS] w_1 ... w_k [SEP], k <= L - 2
            rows.append(framed + [self.pad_id] * (L - len(framed)))  # padded to L
        ids = torch.tensor(rows, dtype=torch.int64).view(len(rows), L)  # (B, L)
        ids[ids == self.sep_id] = 0  # strip_sep_token: every [SEP] -> 0, as the official tokenizer
        return ids

    def __repr__(self) -> str:
        return f"CLIPATokenizer(vocab of {len(self.vocab)} tokens, context_length={self.context_length})"


def _bert_wordpiece(vocab: dict[str, int]) -> Any:
    """Steps 2-4 as a ``tokenizers.Tokenizer``: bert-base-uncased's normaliser, pre-tokenizer and model."""
    tokenizers = _require("tokenizers")
    from tokenizers import normalizers, pre_tokenizers
    from tokenizers.models import WordPiece

    model = WordPiece(
        vocab, unk_token="[UNK]", continuing_subword_prefix="##", max_input_chars_per_word=MAX_WORD_CHARS
    )
    tokenizer = tokenizers.Tokenizer(model)
    tokenizer.normalizer = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=True, strip_accents=True, lowercase=True
    )
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.add_special_tokens([t for t in SPECIAL_TOKENS if t in vocab])  # matched whole, before step 2
    return tokenizer
