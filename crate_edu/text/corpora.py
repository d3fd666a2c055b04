"""Text corpora by name, and the windows a language model learns from.

    >>> from crate_edu.text import build_text_dataset, load_corpus
    >>> text = load_corpus("python-docs")                     # offline: ships with Python
    >>> train = build_text_dataset("python-docs", "train")    # characters, windows of 128
    >>> x, y = train[0]                                       # int64 (128,) each; y[t] = x[t + 1]

The corpora (:func:`list_corpora`, :func:`corpus_info`):

- ``python-docs`` (offline): the Python language reference as CPython ships it for ``help()``,
  ``pydoc_data.topics.topics``: 79 topics (``"assignment"``, ``"for"``, ``"typesnoneobject"``, ...)
  joined in sorted key order with a blank line between them. 465,126 characters on CPython 3.11.7
  (other versions differ a little), 575 of them outside the character tokenizer's ASCII set (curly
  quotes, dashes). With the character tokenizer, ``val_fraction=0.1`` and ``block_size=128``:
  418,613 training tokens in 6,539 windows (stride 64) and 46,513 validation tokens in 363 windows.
- ``tiny-shakespeare`` (download): Andrej Karpathy's char-rnn ``tinyshakespeare/input.txt``,
  1,115,394 ASCII characters of Shakespeare's plays; downloaded on request (``download=True``)
  into ``DATA_DIR/tiny-shakespeare/input.txt`` and checked by size and sha256 (the value many
  independent projects pin for this file) before it is moved into place.
- ``openwebtext`` and ``pile`` (token files you make): nanoGPT-style ``DATA_DIR/<name>/train.bin``
  and ``val.bin``, GPT-2 token ids as raw little-endian uint16 (what nanoGPT's
  ``data/openwebtext/prepare.py`` writes, and what the official CRATE-LM ``train.py`` reads for the
  Pile), read as ``np.memmap`` by :func:`token_file`. Any other folder of such files works by its
  folder name through :func:`token_file`.

``DATA_DIR`` is ``data_dir`` or :func:`crate_edu.data.default_data_dir` (``$CRATE_EDU_DATA``, else
``~/.cache/crate_edu/data``). Nothing here unpickles anything.

The split is deterministic: the last ``val_fraction`` of a text corpus's tokens is the validation
split (``"val"``, also called ``"test"``), the rest is ``"train"``. :class:`TextWindows` cuts a split
into windows of ``block_size + 1`` tokens starting every ``stride`` tokens; ``x`` is the first
``block_size`` of them and ``y`` the last ``block_size`` (``x`` shifted by one), so the model learns
to predict every next token of a window at once. Training windows overlap by half
(``stride = block_size // 2``: each token is seen at two positions per epoch); validation windows do
not (``stride = block_size``).
"""

from __future__ import annotations

import hashlib
import shutil
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from crate_edu.data.base import DatasetFileError, DatasetUnavailableError, default_data_dir
from crate_edu.errors import ConfigError
from crate_edu.text.characters import get_tokenizer
from crate_edu.text.gpt2_bpe import GPT2_VOCAB_SIZE
from crate_edu.weights.download import download_verified

__all__ = [
    "CorpusInfo",
    "TextSource",
    "TEXT_SOURCES",
    "TextWindows",
    "build_text_dataset",
    "corpus_info",
    "corpus_path",
    "fetch_corpus",
    "list_corpora",
    "load_corpus",
    "token_file",
]


@dataclass(frozen=True)
class CorpusInfo:
    """What a corpus is, without reading it.

    Attributes:
        name: the name :func:`load_corpus` and :func:`build_text_dataset` take.
        kind: ``"text"`` (a string, tokenised when a dataset is built) or ``"tokens"`` (uint16 token
            files made beforehand, GPT-2 ids).
        description: one paragraph: what it is and how big.
        source: where it comes from (a URL, or the module that holds it).
        size: characters (text) on this interpreter / in the published file; None for token files.
        license: the licence or credit.
        downloadable: whether ``download=True`` fetches it.
    """

    name: str
    kind: str
    description: str
    source: str
    size: int | None
    license: str
    downloadable: bool


@dataclass(frozen=True)
class TextSource:
    """A downloadable text file: its URL, its size in bytes and its sha256."""

    url: str
    size: int
    sha256: str


#: The downloadable text corpora: where each file comes from and how it is checked.
TEXT_SOURCES: dict[str, TextSource] = {
    "tiny-shakespeare": TextSource(
        url="https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt",
        size=1_115_394,
        sha256="86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed",
    ),
}
#: The file name of a downloaded text corpus inside ``DATA_DIR/<name>/``.
_TEXT_FILE = "input.txt"

_NANOGPT_HOWTO = (
    "make them with nanoGPT's data/{name}/prepare.py (GPT-2 token ids as uint16, written as train.bin and "
    "val.bin) and put both in {folder}, or pass data_dir (--data-dir) to the folder that holds {name}/"
)


def _python_docs_size() -> int | None:
    try:
        return len(_python_docs_text())
    except DatasetUnavailableError:
        return None


_INFOS: dict[str, Callable[[], CorpusInfo]] = {
    "python-docs": lambda: CorpusInfo(
        "python-docs", "text",
        "The Python language reference as CPython ships it for help(): the 79 topics of the standard "
        "library's pydoc_data.topics, joined in sorted order with blank lines; about 465,000 characters "
        "(465,126 on CPython 3.11.7), nearly all ASCII. Offline.",
        "pydoc_data.topics (Python standard library)", _python_docs_size(),
        "Python documentation, PSF License Agreement / Zero-Clause BSD (docs.python.org/3/license.html)",
        False,
    ),
    "tiny-shakespeare": lambda: CorpusInfo(
        "tiny-shakespeare", "text",
        "Tiny Shakespeare: 40,000 lines from Shakespeare's plays, 1,115,394 ASCII characters, compiled by "
        "Andrej Karpathy for char-rnn. Downloaded on request (download=True) and checked by sha256.",
        TEXT_SOURCES["tiny-shakespeare"].url, TEXT_SOURCES["tiny-shakespeare"].size,
        "Shakespeare's text is in the public domain; compilation by Andrej Karpathy (char-rnn, MIT)",
        True,
    ),
    "openwebtext": lambda: CorpusInfo(
        "openwebtext", "tokens",
        "OpenWebText as nanoGPT's data/openwebtext/prepare.py writes it: GPT-2 ids (<|endoftext|> after each "
        "document) as uint16 in DATA_DIR/openwebtext/train.bin (about 9 B tokens, 17 GB) and val.bin (about "
        "4 M tokens). Made by you; not downloaded by crate_edu.",
        "https://github.com/karpathy/nanoGPT (data/openwebtext/prepare.py)", None,
        "OpenWebText corpus (Gokaslan and Cohen 2019), web text under its authors' terms",
        False,
    ),
    "pile": lambda: CorpusInfo(
        "pile", "tokens",
        "The (uncopyrighted) Pile, the corpus of the published CRATE-LM, as GPT-2 uint16 token files "
        "DATA_DIR/pile/train.bin and val.bin in nanoGPT's format (the official train.py reads them; the "
        "script that made them is not published). Made by you; not downloaded by crate_edu.",
        "https://huggingface.co/datasets/monology/pile-uncopyrighted", None,
        "The Pile (Gao et al. 2020), the uncopyrighted subset; each component under its own terms",
        False,
    ),
}  # fmt: skip


def list_corpora() -> list[str]:
    """Names accepted by :func:`corpus_info`, :func:`load_corpus` and :func:`build_text_dataset`."""
    return list(_INFOS)


def corpus_info(name: str) -> CorpusInfo:
    """The :class:`CorpusInfo` of a corpus (nothing is downloaded; ``python-docs`` is measured).

    Raises:
        ConfigError: an unknown name (one line listing the names).
    """
    return _INFOS[_check_name(name)]()


def _check_name(name: str) -> str:
    if name not in _INFOS:
        raise ConfigError(f"unknown corpus {name!r}; choose one of {', '.join(_INFOS)}")
    return name


def _resolve_dir(data_dir: str | PathLike | None) -> Path:
    return Path(data_dir).expanduser() if data_dir is not None else default_data_dir()


# --------------------------------------------------------------------------------------------------
# Text corpora


def _python_docs_text() -> str:
    try:
        from pydoc_data.topics import topics
    except ImportError:
        raise DatasetUnavailableError(
            "corpus 'python-docs' is read from the standard library's pydoc_data module, which this Python "
            "lacks (some distributions ship it separately); install the full standard library, or use "
            "--corpus tiny-shakespeare with --download"
        ) from None
    return "\n\n".join(topics[key] for key in sorted(topics))


def corpus_path(name: str, data_dir: str | PathLike | None = None) -> Path:
    """Where the downloaded text corpus ``name`` lives: ``DATA_DIR/<name>/input.txt``.

    Raises:
        ConfigError: ``name`` is not a downloadable text corpus.
    """
    if _check_name(name) not in TEXT_SOURCES:
        raise ConfigError(
            f"corpus {name!r} has no download; the downloadable ones are {', '.join(TEXT_SOURCES)}"
        )
    return _resolve_dir(data_dir) / name / _TEXT_FILE


def _check_text_file(path: Path, name: str, source: TextSource, downloaded_to: Path | None = None) -> None:
    """The file holds exactly the published bytes (size, then sha256), else a one-line DatasetFileError
    (``downloaded_to``: the file is a fresh download, still in its temporary folder, meant for there)."""
    size = path.stat().st_size
    if downloaded_to is None:
        what = str(path)
        fix = f"delete it and download it again (download=True, --download), or save {source.url} there"
    else:
        what = f"the file downloaded from {source.url}"
        fix = f"nothing was saved; try again later, or save a genuine copy as {downloaded_to}"
    if size != source.size:
        raise DatasetFileError(
            f"{what} has {size:,} bytes, not the {source.size:,} of corpus '{name}' (a partial or different "
            f"file); {fix}"
        )
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != source.sha256:
        raise DatasetFileError(
            f"{what} has sha256 {digest[:16]}..., not {source.sha256[:16]}... of corpus '{name}' (a damaged "
            f"or edited copy); {fix}"
        )


def fetch_corpus(name: str, data_dir: str | PathLike | None = None) -> Path:
    """Download the text corpus ``name`` into ``DATA_DIR/<name>/input.txt`` (needs the internet) and
    return that path; a copy already there is checked and kept.

    The file is fetched into a temporary folder beside its place, refused if it is an HTML page or
    its size or sha256 differ from the published file's, and only then renamed into place, so the
    data folder never holds a partial file (:func:`crate_edu.weights.download.download_verified`).

    Raises:
        DatasetUnavailableError: the download failed (one line: why, and where to save the file by hand).
        DatasetFileError: the downloaded file is not the published one.
    """
    target = corpus_path(name, data_dir)
    source = TEXT_SOURCES[name]
    if target.is_file():
        _check_text_file(target, name, source)
        return target

    def fetch(workdir: Path) -> Path:
        out = workdir / _TEXT_FILE
        with urllib.request.urlopen(source.url, timeout=60) as response, open(out, "wb") as f:
            shutil.copyfileobj(response, f)
        return out

    def unavailable(reason: str) -> DatasetUnavailableError:
        return DatasetUnavailableError(
            f"could not download corpus '{name}': {reason}; connect to the internet, or save {source.url} "
            f"as {target}"
        )

    def verify(path: Path) -> None:
        _check_text_file(path, name, source, downloaded_to=target)

    return download_verified(target, fetch, verify, unavailable)


def load_corpus(name: str, data_dir: str | PathLike | None = None, download: bool = False) -> str:
    """The text of corpus ``name`` (``python-docs`` or ``tiny-shakespeare``).

    Args:
        name: one of the text corpora of :func:`list_corpora`.
        data_dir: the folder of downloaded data (default :func:`crate_edu.data.default_data_dir`).
        download: fetch a missing downloadable corpus first (:func:`fetch_corpus`).

    Raises:
        ConfigError: an unknown name, or a token-file corpus (read those with :func:`token_file`).
        DatasetUnavailableError: the corpus is not on disk and ``download`` is False (one line naming
            the fix), or the download failed.
        DatasetFileError: the file on disk is damaged (not the published bytes).
    """
    info = corpus_info(name)
    if info.kind != "text":
        raise ConfigError(
            f"corpus {name!r} is a folder of token files, not a text: read it with "
            f"token_file({name!r}, split) or build_text_dataset({name!r}, split, tokenizer='gpt2')"
        )
    if name == "python-docs":
        return _python_docs_text()
    path = corpus_path(name, data_dir)
    if not path.is_file():
        if not download:
            raise DatasetUnavailableError(
                f"corpus '{name}' is not at {path}; download it with download=True (on the command line: "
                f"--download), save {TEXT_SOURCES[name].url} there, or pass data_dir (--data-dir)"
            )
        fetch_corpus(name, data_dir)
    _check_text_file(path, name, TEXT_SOURCES[name])
    return path.read_bytes().decode("utf-8")


# --------------------------------------------------------------------------------------------------
# Token files


def token_file(name: str, split: str, data_dir: str | PathLike | None = None) -> np.memmap:
    """The tokens of ``DATA_DIR/<name>/{train,val}.bin`` as a read-only uint16 ``np.memmap`` ``(N,)``.

    The format is nanoGPT's: the token ids as raw little-endian uint16, nothing else (no header, no
    pickle). ``name`` is any folder under ``DATA_DIR`` (``openwebtext``, ``pile``, ...); ``split`` is
    ``"train"`` or ``"val"`` (``"test"``: ``val.bin``).

    Raises:
        DatasetUnavailableError: the file is missing (one line saying how to make it).
        DatasetFileError: the file is empty or has an odd number of bytes (not uint16 tokens).
        ConfigError: an unknown split or a name that is not a plain folder name.
    """
    stem = _split_name(split)
    if not name or name in (".", "..") or "/" in name or "\\" in name:
        raise ConfigError(f"a token corpus is named by its folder under the data folder, got {name!r}")
    root = _resolve_dir(data_dir)
    folder = root / name
    path = folder / f"{stem}.bin"
    howto = _NANOGPT_HOWTO.format(name=name, folder=folder)
    if not path.is_file():
        raise DatasetUnavailableError(f"no token file {path}; {howto}")
    size = path.stat().st_size
    if size == 0 or size % 2:
        raise DatasetFileError(
            f"{path} has {size:,} bytes, which is not a whole number of uint16 tokens (truncated, or not a "
            f"token file); {howto}"
        )
    return np.memmap(path, dtype=np.dtype("<u2"), mode="r")


def _split_name(split: str) -> str:
    if split == "train":
        return "train"
    if split in ("val", "test"):
        return "val"
    raise ConfigError(f"unknown split {split!r}; choose 'train' or 'val' ('test' is another name for 'val')")


# --------------------------------------------------------------------------------------------------
# Windows


class TextWindows(Dataset):
    """Windows of a token sequence: ``ds[i] = (x, y)``, both int64 ``(block_size,)``, ``y`` = ``x`` shifted.

    Window ``i`` covers tokens ``s .. s + block_size`` (``block_size + 1`` of them) with
    ``s = i * stride``: ``x = tokens[s : s + T]`` and ``y = tokens[s + 1 : s + T + 1]``. There are
    ``(N - T - 1) // stride + 1`` windows of ``N`` tokens; the last few tokens that fill no window
    are left out.

    Args:
        tokens: the ids, an integer tensor ``(N,)`` (kept as int64) or a numpy array / ``np.memmap``
            (read a window at a time, so a 17 GB token file costs no memory).
        block_size: ``T``, the tokens a model sees at once.
        stride: tokens between window starts (default ``block_size``: windows do not overlap).
        tokenizer: the name of the tokenizer the ids come from (``"char"``, ``"byte"``, ``"gpt2"``).
        vocab_size: the size of its vocabulary: a model for this data needs at least this many
            embedding rows (default: one more than the largest id of a tensor; required for arrays).

    Raises:
        ConfigError: a bad ``block_size`` or ``stride``, or fewer than ``block_size + 1`` tokens
            (one line).
    """

    def __init__(
        self,
        tokens: Tensor | np.ndarray,
        block_size: int,
        stride: int | None = None,
        *,
        tokenizer: str | None = None,
        vocab_size: int | None = None,
    ) -> None:
        for what, value in (("block_size", block_size), ("stride", block_size if stride is None else stride)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{what} must be a positive integer, got {value!r}")
        if isinstance(tokens, Tensor):
            if (
                tokens.dim() != 1
                or tokens.dtype.is_floating_point
                or tokens.dtype.is_complex
                or tokens.dtype == torch.bool
            ):
                raise ConfigError(
                    f"tokens must be a 1-D integer tensor, got {tokens.dtype} {tuple(tokens.shape)}"
                )
            tokens = tokens.to(torch.int64)
            if vocab_size is None:
                vocab_size = int(tokens.max()) + 1 if tokens.numel() else 0
        elif isinstance(tokens, np.ndarray):
            if tokens.ndim != 1 or tokens.dtype.kind not in "iu":
                raise ConfigError(f"tokens must be a 1-D integer array, got {tokens.dtype} {tokens.shape}")
            if vocab_size is None:
                raise ConfigError(
                    "give vocab_size for tokens held in a numpy array (e.g. 50257 for GPT-2 ids)"
                )
        else:
            raise ConfigError(f"tokens must be a tensor or a numpy array, got {type(tokens).__name__}")
        n = int(tokens.shape[0])
        if n < block_size + 1:
            raise ConfigError(
                f"{n:,} tokens are too few for windows of block_size {block_size} (a window needs "
                f"{block_size + 1}); use a smaller block_size or a longer text"
            )
        self.tokens = tokens  # (N,)
        self.block_size = block_size
        self.stride = block_size if stride is None else stride
        self.tokenizer = tokenizer
        self.vocab_size = vocab_size
        self.num_tokens = n
        self.corpus: str | None = None  # set by build_text_dataset
        self.split: str | None = None
        self._len = (n - block_size - 1) // self.stride + 1

    def __len__(self) -> int:
        return self._len

    def start(self, i: int) -> int:
        """The position of the first token of window ``i``."""
        return i * self.stride

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        if i < 0:
            i += self._len
        if not 0 <= i < self._len:
            raise IndexError(f"window {i} of {self._len}")
        s, T = i * self.stride, self.block_size
        chunk = self.tokens[s : s + T + 1]  # (T + 1,)
        if isinstance(chunk, np.ndarray):
            chunk = torch.from_numpy(chunk.astype(np.int64))
        return chunk[:-1], chunk[1:]  # x (T,), y (T,)

    def batch(self, indices: Tensor) -> tuple[Tensor, Tensor]:
        """Windows ``indices`` ``(B,)`` at once: ``x, y`` int64 ``(B, T)``; equal to stacking ``ds[i]``
        (on the device of ``indices`` when the tokens are a tensor there)."""
        starts = indices.to(torch.int64) * self.stride  # (B,)
        offsets = torch.arange(self.block_size + 1, device=starts.device)  # (T + 1,)
        where = starts[:, None] + offsets[None, :]  # (B, T + 1)
        if isinstance(self.tokens, Tensor):
            chunk = self.tokens.to(where.device)[where]
        else:
            chunk = torch.from_numpy(self.tokens[where.cpu().numpy()].astype(np.int64)).to(where.device)
        return chunk[:, :-1], chunk[:, 1:]

    def __repr__(self) -> str:
        return (
            f"TextWindows({self._len:,} windows of {self.block_size} tokens, stride {self.stride}, "
            f"{self.num_tokens:,} tokens, tokenizer={self.tokenizer!r}, vocab_size={self.vocab_size})"
        )


def build_text_dataset(
    corpus: str,
    split: str,
    tokenizer: str | Any = "char",
    block_size: int = 128,
    data_dir: str | PathLike | None = None,
    download: bool = False,
    val_fraction: float = 0.1,
    stride: int | None = None,
    vocab: str | PathLike | None = None,
) -> TextWindows:
    """The windows of one split of a corpus, ready for a language model.

    Args:
        corpus: a name of :func:`list_corpora`.
        split: ``"train"`` or ``"val"`` (``"test"`` is another name for ``"val"``).
        tokenizer: ``"char"``, ``"byte"`` or ``"gpt2"`` (:func:`~crate_edu.text.characters.get_tokenizer`),
            or a tokenizer object with ``encode``, ``name`` and ``vocab_size``. Token-file corpora hold
            GPT-2 ids and take only ``"gpt2"``.
        block_size: tokens per window (``x`` and ``y`` are ``(block_size,)``).
        data_dir: the folder of downloaded data (default :func:`crate_edu.data.default_data_dir`).
        download: fetch a missing downloadable corpus (and, for ``"gpt2"`` without ``vocab``, its
            vocabulary) first.
        val_fraction: the share of a text corpus's tokens, taken from its end, that is the validation
            split (token-file corpora have their own ``val.bin``).
        stride: tokens between window starts; default ``block_size // 2`` for train (windows overlap
            by half) and ``block_size`` for validation (each token predicted once).
        vocab: the folder of GPT-2's ``vocab.json`` and ``merges.txt`` for ``tokenizer="gpt2"``.

    Returns:
        :class:`TextWindows` with ``tokenizer`` (the name) and ``vocab_size`` set, and ``corpus``,
        ``split``.

    Raises:
        ConfigError: an unknown corpus, split or tokenizer, a bad ``val_fraction``, ``block_size`` or
            ``stride``, or a split too short for one window.
        DatasetUnavailableError, DatasetFileError: the corpus is missing or damaged (one line).
    """
    info = corpus_info(corpus)
    stem = _split_name(split)
    if (
        isinstance(val_fraction, bool)
        or not isinstance(val_fraction, (int, float))
        or not 0 < val_fraction < 1
    ):
        raise ConfigError(f"val_fraction must be a number strictly between 0 and 1, got {val_fraction!r}")
    if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 1:
        raise ConfigError(f"block_size must be a positive integer, got {block_size!r}")
    if stride is None:
        stride = max(1, block_size // 2) if stem == "train" else block_size

    if info.kind == "tokens":
        name = tokenizer if isinstance(tokenizer, str) else getattr(tokenizer, "name", None)
        if name != "gpt2":
            raise ConfigError(
                f"corpus {corpus!r} holds GPT-2 token ids, so it takes tokenizer='gpt2', not {name!r}"
            )
        tokens = token_file(corpus, stem, data_dir)
        ds = TextWindows(tokens, block_size, stride, tokenizer="gpt2", vocab_size=GPT2_VOCAB_SIZE)
    else:
        tok = (
            get_tokenizer(tokenizer, vocab=vocab, download=download)
            if isinstance(tokenizer, str)
            else tokenizer
        )
        text = load_corpus(corpus, data_dir, download)
        ids = tok.encode_tensor(text) if hasattr(tok, "encode_tensor") else torch.tensor(tok.encode(text))
        n_val = int(round(len(ids) * val_fraction))
        n_train = len(ids) - n_val
        part = ids[:n_train] if stem == "train" else ids[n_train:]  # the last val_fraction is validation
        ds = TextWindows(part, block_size, stride, tokenizer=tok.name, vocab_size=tok.vocab_size)
    ds.corpus, ds.split = corpus, stem
    return ds
