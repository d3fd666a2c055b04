"""crate_edu.text.corpora: corpora by name, the verified download, token files and the windows."""

from __future__ import annotations

import hashlib
import sys

import numpy as np
import pytest
import torch

from crate_edu.data import DatasetFileError, DatasetUnavailableError
from crate_edu.errors import ConfigError
from crate_edu.text import (
    CharTokenizer,
    CorpusInfo,
    TextWindows,
    build_text_dataset,
    corpora,
    corpus_info,
    fetch_corpus,
    list_corpora,
    load_corpus,
    token_file,
)

# --------------------------------------------------------------------------------------------------
# Names and the offline corpus


def test_the_corpora_and_their_records():
    assert list_corpora() == ["python-docs", "tiny-shakespeare", "openwebtext", "pile"]
    info = corpus_info("tiny-shakespeare")
    assert isinstance(info, CorpusInfo) and info.kind == "text" and info.downloadable
    assert info.size == 1_115_394 and info.source.endswith("tinyshakespeare/input.txt")
    assert corpus_info("python-docs").downloadable is False
    assert [corpus_info(n).kind for n in ("openwebtext", "pile")] == ["tokens", "tokens"]
    with pytest.raises(ConfigError) as err:
        corpus_info("wikitext")
    assert (
        str(err.value)
        == "unknown corpus 'wikitext'; choose one of python-docs, tiny-shakespeare, openwebtext, pile"
    )


def test_python_docs_is_the_standard_librarys_topics_in_sorted_order():
    from pydoc_data.topics import topics

    text = load_corpus("python-docs")
    assert text == "\n\n".join(topics[k] for k in sorted(topics))
    assert corpus_info("python-docs").size == len(text)
    assert 400_000 < len(text) < 600_000  # 465,126 characters on CPython 3.11.7
    if sys.version_info[:2] == (3, 11):
        assert len(text) == 465_126
    unknown = (CharTokenizer().encode_tensor(text) == 0).sum().item()
    assert unknown < 0.005 * len(text)  # nearly all in the character vocabulary (575 on 3.11.7)


def test_a_python_without_pydoc_data_gets_one_line_naming_the_fix(monkeypatch):
    monkeypatch.setitem(sys.modules, "pydoc_data.topics", None)  # `from pydoc_data.topics import` fails
    with pytest.raises(DatasetUnavailableError) as err:
        load_corpus("python-docs")
    message = str(err.value)
    assert "\n" not in message and "pydoc_data" in message
    assert "--corpus tiny-shakespeare with --download" in message
    assert corpus_info("python-docs").size is None  # the record still answers


def test_token_corpora_are_not_texts():
    with pytest.raises(ConfigError, match=r"is a folder of token files, not a text: read it with token_file"):
        load_corpus("openwebtext")


# --------------------------------------------------------------------------------------------------
# The download, served from a local file through the real urllib path


FAKE = b"First Citizen:\nBefore we proceed any further, hear me speak.\n" * 20


@pytest.fixture
def fake_source(tmp_path, monkeypatch):
    """tiny-shakespeare pointing at a small local file with its true size and sha256."""
    served = tmp_path / "server" / "input.txt"
    served.parent.mkdir()
    served.write_bytes(FAKE)
    source = corpora.TextSource(served.as_uri(), len(FAKE), hashlib.sha256(FAKE).hexdigest())
    monkeypatch.setitem(corpora.TEXT_SOURCES, "tiny-shakespeare", source)
    return served


def test_a_missing_corpus_is_one_line_naming_the_fix(tmp_path):
    with pytest.raises(DatasetUnavailableError) as err:
        load_corpus("tiny-shakespeare", data_dir=tmp_path)
    message = str(err.value)
    assert "\n" not in message and not isinstance(err.value, DatasetFileError)
    assert message.startswith(f"corpus 'tiny-shakespeare' is not at {tmp_path}/tiny-shakespeare/input.txt")
    assert "download=True (on the command line: --download)" in message
    assert (
        "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt" in message
    )


def test_download_puts_the_checked_file_in_place(tmp_path, fake_source):
    data = tmp_path / "data"
    text = load_corpus("tiny-shakespeare", data_dir=data, download=True)
    assert text == FAKE.decode()
    target = data / "tiny-shakespeare" / "input.txt"
    assert target.read_bytes() == FAKE
    assert sorted(p.name for p in target.parent.iterdir()) == ["input.txt"]  # no temporary folder left
    fake_source.unlink()  # the server goes away: the copy on disk is enough
    assert load_corpus("tiny-shakespeare", data_dir=data) == text
    assert fetch_corpus("tiny-shakespeare", data_dir=data) == target


def test_the_default_data_folder_follows_the_environment(tmp_path, fake_source, monkeypatch):
    monkeypatch.setenv("CRATE_EDU_DATA", str(tmp_path / "env"))
    assert fetch_corpus("tiny-shakespeare") == tmp_path / "env" / "tiny-shakespeare" / "input.txt"


@pytest.mark.parametrize(
    "served, expected",
    [
        (FAKE[:-5], "has 1,215 bytes, not the 1,220 of corpus 'tiny-shakespeare'"),
        (FAKE.replace(b"speak", b"SPEAK"), "has sha256"),
        (b"<!DOCTYPE html>" + FAKE[15:], "the server sent an HTML page instead of the file"),
    ],
)
def test_a_wrong_download_never_reaches_the_data_folder(tmp_path, fake_source, served, expected):
    fake_source.write_bytes(served)
    data = tmp_path / "data"
    with pytest.raises(DatasetUnavailableError) as err:  # DatasetFileError is one too
        load_corpus("tiny-shakespeare", data_dir=data, download=True)
    assert expected in str(err.value) and "\n" not in str(err.value) and ".part" not in str(err.value)
    assert list((data / "tiny-shakespeare").iterdir()) == []


def test_an_impossible_download_is_one_line(tmp_path, fake_source):
    fake_source.unlink()  # the URL answers nothing
    with pytest.raises(DatasetUnavailableError) as err:
        fetch_corpus("tiny-shakespeare", data_dir=tmp_path)
    message = str(err.value)
    assert message.startswith("could not download corpus 'tiny-shakespeare': download failed (URLError")
    assert message.endswith(f"save {fake_source.as_uri()} as {tmp_path}/tiny-shakespeare/input.txt")
    assert "\n" not in message


def test_a_damaged_copy_on_disk_is_one_line(tmp_path, fake_source):
    target = tmp_path / "tiny-shakespeare" / "input.txt"
    target.parent.mkdir()
    target.write_bytes(FAKE[:100])
    with pytest.raises(
        DatasetFileError, match=r"has 100 bytes, not the 1,220 .* delete it and download it again"
    ):
        load_corpus("tiny-shakespeare", data_dir=tmp_path, download=True)


def test_only_the_downloadable_corpora_have_a_download():
    with pytest.raises(
        ConfigError, match=r"corpus 'python-docs' has no download; the downloadable ones are tiny-shakespeare"
    ):
        fetch_corpus("python-docs")


# --------------------------------------------------------------------------------------------------
# Token files


def _write_tokens(folder, split, ids):
    folder.mkdir(parents=True, exist_ok=True)
    np.asarray(ids, dtype=np.uint16).tofile(folder / f"{split}.bin")  # what nanoGPT's prepare.py does


def test_token_files_are_read_as_uint16_memmaps(tmp_path):
    ids = np.array([50256, 0, 1, 65535, 464, 3290, 50256], dtype=np.uint16)
    _write_tokens(tmp_path / "openwebtext", "train", ids)
    _write_tokens(tmp_path / "openwebtext", "val", ids[::-1])
    train = token_file("openwebtext", "train", data_dir=tmp_path)
    assert isinstance(train, np.memmap) and train.dtype == np.uint16 and train.tolist() == ids.tolist()
    assert token_file("openwebtext", "test", data_dir=tmp_path).tolist() == ids[::-1].tolist()
    assert (tmp_path / "openwebtext" / "train.bin").read_bytes()[:2] == b"\x50\xc4"  # little-endian 50256
    _write_tokens(tmp_path / "mine", "train", ids)  # any folder name works
    assert token_file("mine", "train", data_dir=tmp_path).shape == (7,)


def test_a_missing_or_odd_token_file_is_one_line_saying_how_to_make_it(tmp_path):
    with pytest.raises(DatasetUnavailableError) as err:
        token_file("openwebtext", "val", data_dir=tmp_path)
    message = str(err.value)
    assert message.startswith(f"no token file {tmp_path}/openwebtext/val.bin; make them with nanoGPT's")
    assert "data/openwebtext/prepare.py" in message and "\n" not in message
    folder = tmp_path / "openwebtext"
    folder.mkdir()
    for content in (b"", b"\x01\x02\x03"):
        (folder / "val.bin").write_bytes(content)
        with pytest.raises(DatasetFileError, match=r"not a whole number of uint16 tokens"):
            token_file("openwebtext", "val", data_dir=tmp_path)
    with pytest.raises(ConfigError, match="unknown split 'dev'"):
        token_file("openwebtext", "dev", data_dir=tmp_path)
    with pytest.raises(ConfigError, match="named by its folder"):
        token_file("../etc", "train", data_dir=tmp_path)


def test_a_token_corpus_builds_gpt2_windows(tmp_path):
    ids = np.arange(1000, dtype=np.uint16) * 50
    _write_tokens(tmp_path / "pile", "train", ids)
    _write_tokens(tmp_path / "pile", "val", ids[:300])
    ds = build_text_dataset("pile", "train", tokenizer="gpt2", block_size=64, data_dir=tmp_path)
    assert (ds.tokenizer, ds.vocab_size, ds.corpus, ds.split, ds.stride) == (
        "gpt2",
        50257,
        "pile",
        "train",
        32,
    )
    x, y = ds[3]
    assert x.dtype == y.dtype == torch.int64
    assert x.tolist() == (ids[96:160].astype(np.int64)).tolist() and y.tolist() == ids[97:161].tolist()
    val = build_text_dataset("pile", "val", tokenizer="gpt2", block_size=64, data_dir=tmp_path)
    assert len(val) == (300 - 65) // 64 + 1 == 4
    with pytest.raises(ConfigError, match=r"holds GPT-2 token ids, so it takes tokenizer='gpt2', not 'char'"):
        build_text_dataset("pile", "train", tokenizer="char", data_dir=tmp_path)


# --------------------------------------------------------------------------------------------------
# Windows


def test_windows_are_shifted_by_one_and_cover_the_tokens():
    tokens = torch.arange(100) * 3
    ds = TextWindows(tokens, block_size=8, stride=5, tokenizer="char", vocab_size=300)
    assert len(ds) == (100 - 9) // 5 + 1 == 19
    for i in range(len(ds)):
        x, y = ds[i]
        assert x.shape == y.shape == (8,) and x.dtype == torch.int64
        assert torch.equal(x, tokens[5 * i : 5 * i + 8]) and torch.equal(y, tokens[5 * i + 1 : 5 * i + 9])
    assert torch.equal(ds[-1][1], tokens[91:99])  # the last window; token 99 fills no window
    with pytest.raises(IndexError):
        ds[19]
    assert len(list(iter(ds))) == 19
    xb, yb = ds.batch(torch.tensor([0, 18, 3]))
    assert torch.equal(xb, torch.stack([ds[0][0], ds[18][0], ds[3][0]]))
    assert torch.equal(yb, torch.stack([ds[0][1], ds[18][1], ds[3][1]]))
    assert "19 windows of 8 tokens, stride 5" in repr(ds)


def test_windows_of_a_numpy_array_read_a_window_at_a_time():
    tokens = np.arange(50, dtype=np.uint16)
    ds = TextWindows(tokens, block_size=10, vocab_size=50)
    assert len(ds) == 4 and ds.stride == 10 and ds[2][0].dtype == torch.int64
    assert ds[2][0].tolist() == list(range(20, 30)) and ds[2][1].tolist() == list(range(21, 31))
    xb, _ = ds.batch(torch.tensor([1, 3]))
    assert xb.tolist() == [list(range(10, 20)), list(range(30, 40))]
    assert TextWindows(torch.tensor([5, 1, 7]), block_size=2).vocab_size == 8  # default: largest id + 1


@pytest.mark.parametrize(
    "kwargs, expected",
    [
        (
            {"tokens": torch.arange(10), "block_size": 10},
            "10 tokens are too few for windows of block_size 10",
        ),
        ({"tokens": torch.arange(10), "block_size": 0}, "block_size must be a positive integer, got 0"),
        ({"tokens": torch.arange(10), "block_size": 4, "stride": 0}, "stride must be a positive integer"),
        ({"tokens": torch.zeros(10), "block_size": 4}, "1-D integer tensor"),
        ({"tokens": np.arange(10), "block_size": 4}, "give vocab_size"),
        ({"tokens": [1, 2, 3], "block_size": 1}, "a tensor or a numpy array, got list"),
    ],
)
def test_bad_windows_are_one_line(kwargs, expected):
    with pytest.raises(ConfigError, match=expected):
        TextWindows(**kwargs)


def test_the_split_is_deterministic_and_disjoint():
    ids = CharTokenizer().encode_tensor(load_corpus("python-docs"))
    train = build_text_dataset("python-docs", "train", block_size=128)
    val = build_text_dataset("python-docs", "val", block_size=128)
    n_val = round(len(ids) * 0.1)
    assert train.num_tokens + val.num_tokens == len(ids) and val.num_tokens == n_val
    assert torch.equal(train.tokens, ids[: len(ids) - n_val]) and torch.equal(val.tokens, ids[-n_val:])
    # every window reads only its own split: the last training target precedes the first validation input
    assert train.start(len(train) - 1) + 128 < train.num_tokens
    assert (train.tokenizer, train.vocab_size, train.stride, val.stride) == ("char", 98, 64, 128)
    assert torch.equal(build_text_dataset("python-docs", "train", block_size=128)[100][0], train[100][0])
    assert torch.equal(build_text_dataset("python-docs", "test", block_size=128).tokens, val.tokens)
    if sys.version_info[:2] == (3, 11):  # the sizes in the module docstring
        assert (train.num_tokens, len(train), val.num_tokens, len(val)) == (418_613, 6_539, 46_513, 363)


def test_other_tokenizers_fractions_and_strides():
    byte = build_text_dataset(
        "python-docs", "val", tokenizer="byte", block_size=32, val_fraction=0.02, stride=7
    )
    assert (byte.tokenizer, byte.vocab_size, byte.stride) == ("byte", 256, 7)
    text = load_corpus("python-docs").encode("utf-8")
    assert byte.tokens.tolist() == list(text[len(text) - round(len(text) * 0.02) :])
    assert byte[0][0].tolist() == byte.tokens[:32].tolist()
    mine = build_text_dataset("python-docs", "train", tokenizer=CharTokenizer(), block_size=16)
    assert mine.tokenizer == "char" and mine.stride == 8


@pytest.mark.parametrize(
    "kwargs, expected",
    [
        ({"split": "dev"}, "unknown split 'dev'; choose 'train' or 'val'"),
        ({"val_fraction": 1.0}, "val_fraction must be a number strictly between 0 and 1, got 1.0"),
        ({"val_fraction": 0}, "val_fraction must be a number strictly between 0 and 1"),
        ({"block_size": -1}, "block_size must be a positive integer, got -1"),
        ({"tokenizer": "words"}, "unknown tokenizer 'words'"),
        ({"block_size": 50_000, "split": "val"}, "tokens are too few for windows of block_size 50000"),
    ],
)
def test_bad_dataset_arguments_are_one_line(kwargs, expected):
    args = {"corpus": "python-docs", "split": "train", **kwargs}
    with pytest.raises(ConfigError) as err:
        build_text_dataset(**args)
    assert expected in str(err.value) and "\n" not in str(err.value)
