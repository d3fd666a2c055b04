"""The GPT-2 tokenizer against transformers' pure-Python byte-level BPE, on a small vocabulary.

``tests/fixtures/gpt2_bpe_small/`` holds ``vocab.json`` and ``merges.txt`` in GPT-2's format (the
256 byte symbols in GPT-2's order, 300 merges learnt by the script beside them, ``<|endoftext|>``
last, id 556). transformers 5 has no pure-Python ``GPT2Tokenizer`` any more (it runs on the
``tokenizers`` library, as ours does); its pure-Python copy of the old one is ``ClvpTokenizer``
(GPT-2's regular expression, byte table and merge loop, the ``bpe`` method of the old
``GPT2Tokenizer``), which adds an English text normaliser: the reference below replaces that
normaliser by the identity, which leaves GPT-2's tokenizer. transformers' own ``GPT2Tokenizer``
is checked too (the same library as ours, configured by Hugging Face).
"""

from __future__ import annotations

import json
import random
import sys

import pytest
import torch

from crate_edu.errors import ConfigError
from crate_edu.text import GPT2Tokenizer, OptionalPackageError, VocabularyError, get_tokenizer
from crate_edu.text.gpt2_bpe import (
    END_OF_TEXT,
    GPT2_FILES,
    GPT2_REPO_ID,
    bytes_to_unicode,
    download_gpt2_vocab,
    read_gpt2_vocab,
)
from tests.support.paths import FIXTURES

SMALL = FIXTURES / "gpt2_bpe_small"


@pytest.fixture(scope="module")
def ours() -> GPT2Tokenizer:
    return GPT2Tokenizer(SMALL)


@pytest.fixture(scope="module")
def reference():
    """transformers' pure-Python byte-level BPE (the old GPT2Tokenizer's code) with GPT-2's settings."""
    from transformers.models.clvp.tokenization_clvp import ClvpTokenizer

    eot = END_OF_TEXT
    tok = ClvpTokenizer(
        str(SMALL / "vocab.json"),
        str(SMALL / "merges.txt"),
        unk_token=eot,
        bos_token=eot,
        eos_token=eot,
        pad_token=eot,
    )
    tok._normalizer = lambda text: text  # no English normaliser: GPT-2's tokenizer
    assert not tok.is_fast and len(tok) == 557
    return tok


def ref_ids(reference, text: str) -> list[int]:
    return reference.encode(text, add_special_tokens=False)


SENTENCES = [
    "Hello world",
    " Hello world",
    "The quick brown fox jumps over the lazy dog.",
    "It's the model's job: they're learning, we've seen it, I'm sure you'll see what I'd expect.",
    "IT'S CAPITAL'S: contractions only match lower case 'S",
    "def forward(self, x):\n    return self.lm_head(x)  # logits (B, T, V)\n",
    "Numbers: 0 1 2 3 12 123 2024 3.14159 1,000,000 and 42!",
    "Café, naïve, résumé, Zürich, São Paulo, 東京, Москва, 😀 emoji, — dashes – and “quotes”.",
    "trailing spaces   ",
    "   leading spaces",
    "tabs\tand\nnewlines\r\n\n\nand   runs  of   spaces",
    "a<|endoftext|>b",
    "first document.<|endoftext|>second document.<|endoftext|>",
    " <|endoftext|> spaced <|endoftext|>",
    "<|endoftext",  # not the special token
    "<|ENDOFTEXT|>",
    "\x00\x01\x7f\x80 controls \u200b\ufeff",
    "",
]


def test_the_byte_table_is_gpt2s():
    from transformers.models.clvp.tokenization_clvp import bytes_to_unicode as theirs

    table = bytes_to_unicode()
    assert list(table.items()) == list(theirs().items())  # same pairs, same order
    assert (
        table[32] == "Ġ" and table[10] == "Ċ" and table[ord("a")] == "a" and len(set(table.values())) == 256
    )


def test_the_small_vocabulary_has_gpt2s_layout():
    vocab, merges = read_gpt2_vocab(SMALL)
    assert len(vocab) == 557 and len(merges) == 300 and vocab[END_OF_TEXT] == 556
    assert [vocab[s] for s in bytes_to_unicode().values()] == list(range(256))
    assert merges[:3] == [("Ġ", "t"), ("h", "e"), ("Ġ", "a")]
    assert read_gpt2_vocab([SMALL / "vocab.json", SMALL / "merges.txt"]) == (vocab, merges)


@pytest.mark.parametrize("text", SENTENCES)
def test_sentences_match_the_reference_and_round_trip(ours, reference, text):
    ids = ours.encode(text)
    assert ids == ref_ids(reference, text)
    assert ours.decode(ids) == text
    assert ours.encode_tensor(text).tolist() == ids and ours.encode_tensor(text).dtype == torch.int64


def test_the_special_token(ours, reference):
    assert ours.eot_id == 556 and ours.encode(END_OF_TEXT) == [556]
    assert ours.encode("a<|endoftext|>b") == [ours.encode("a")[0], 556, ours.encode("b")[0]]
    plain = ours.encode("a<|endoftext|>b", special=False)  # as text: its characters
    assert 556 not in plain and plain == reference.convert_tokens_to_ids(
        reference._tokenize("a<|endoftext|>b")
    )
    assert ours.decode(plain) == "a<|endoftext|>b" == ours.decode(ours.encode("a<|endoftext|>b"))
    docs = ["first doc.", "second <|endoftext|> doc"]
    assert ours.encode_documents(docs) == [
        *ours.encode(docs[0], special=False), 556, *ours.encode(docs[1], special=False), 556,
    ]  # fmt: skip


def random_strings(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    pieces = (
        list("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
        + list("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~")
        + [" ", "  ", "   ", "\t", "\n", "\r\n", "\u3000", "\xa0", "\u2009", "\x00", "\x1c", "\u200b"]
        + ["'s", "'t", "'re", "'ve", "'m", "'ll", "'d", "'S", "’s"]
        + list("éèüñçåøßđ") + ["e\u0301", "中", "文", "😀", "Ω", "ﬁ", "①", "٣", "—"]
        + ["the", " the", "fox", " fox", "token", " transformer", "123", " 2024", END_OF_TEXT]
    )  # fmt: skip
    return ["".join(rng.choice(pieces) for _ in range(rng.choice([1, 2, 5, 10, 30, 80]))) for _ in range(n)]


def test_random_strings_match_the_reference(ours, reference):
    texts = random_strings(1500)
    wrong = [t for t in texts if ours.encode(t) != ref_ids(reference, t)]
    assert not wrong, f"{len(wrong)} of {len(texts)} differ, e.g. {wrong[:3]}"
    assert all(ours.decode(ours.encode(t)) == t for t in texts)
    assert sum(END_OF_TEXT in t for t in texts) > 50  # the special token is exercised


def test_hugging_faces_gpt2_tokenizer_agrees(ours):
    import transformers

    theirs = transformers.GPT2Tokenizer.from_pretrained(str(SMALL))
    for text in SENTENCES + random_strings(300, seed=1):
        assert ours.encode(text) == theirs.encode(text, add_special_tokens=False), text


def test_decoding(ours):
    cut = ours.encode("中")  # one character, three bytes, three ids in this small vocabulary
    assert len(cut) == 3 and ours.decode(cut[:2]) == "\ufffd"  # an incomplete character: U+FFFD
    assert ours.decode(torch.tensor(ours.encode("the fox"))) == "the fox"
    with pytest.raises(ValueError, match=r"GPT-2 ids are in 0\.\.556; got 557"):
        ours.decode([1, 557])
    with pytest.raises(ValueError, match="1-D integer tensor"):
        ours.decode(torch.zeros(2, 2, dtype=torch.long))
    with pytest.raises(TypeError, match="takes a string"):
        ours.encode(b"bytes")


def test_names_and_the_tokenizer_by_name(ours):
    assert (ours.name, ours.vocab_size) == ("gpt2", 557)
    assert repr(ours) == "GPT2Tokenizer(vocab_size=557, merges=300, eot_id=556)"
    assert ours.describe() == "GPT-2 byte-level BPE: 557 ids (300 merges), <|endoftext|> = 556"
    tok = get_tokenizer("gpt2", vocab=SMALL)
    assert isinstance(tok, GPT2Tokenizer) and tok.encode(SENTENCES[2]) == ours.encode(SENTENCES[2])
    vocab, merges = read_gpt2_vocab(SMALL)
    assert GPT2Tokenizer(vocab, merges).encode(SENTENCES[7]) == ours.encode(SENTENCES[7])
    with pytest.raises(ConfigError, match="give the merges"):
        GPT2Tokenizer(vocab)


def test_a_text_corpus_with_the_gpt2_tokenizer(ours):
    from crate_edu.text import build_text_dataset, load_corpus

    ids = ours.encode(load_corpus("python-docs"))
    val = build_text_dataset("python-docs", "val", tokenizer="gpt2", vocab=SMALL, block_size=64)
    n_val = round(len(ids) * 0.1)
    assert (val.tokenizer, val.vocab_size) == ("gpt2", 557) and val.tokens.tolist() == ids[-n_val:]


# --------------------------------------------------------------------------------------------
# Bad files: one line naming the file and the fix.
# --------------------------------------------------------------------------------------------


def _folder(tmp_path, vocab: str | bytes | None = None, merges: str | bytes | None = None):
    folder = tmp_path / "gpt2"
    folder.mkdir(exist_ok=True)
    for name, content, default in (
        ("vocab.json", vocab, SMALL / "vocab.json"),
        ("merges.txt", merges, SMALL / "merges.txt"),
    ):
        data = default.read_bytes() if content is None else content
        (folder / name).write_bytes(data if isinstance(data, bytes) else data.encode("utf-8"))
    return folder


def _vocab_without(token: str) -> str:
    vocab = json.loads((SMALL / "vocab.json").read_text(encoding="utf-8"))
    del vocab[token]
    return json.dumps({t: i for i, t in enumerate(vocab)})


@pytest.mark.parametrize(
    "vocab, merges, expected",
    [
        ("<!DOCTYPE html>", None, "vocab.json is not JSON"),
        (b"\xff\xfe{}", None, "vocab.json is not UTF-8 text"),
        ('["a", "b"]', None, "is not a JSON object of token -> integer id"),
        ('{"a": 0, "b": "1"}', None, "is not a JSON object of token -> integer id"),
        ('{"a": 0, "b": 2}', None, "the ids should be 0..1, each once, but id 1 is listed twice or missing"),
        ('{"a": 0, "<|endoftext|>": 1}', None, "lacks 255 of the 256 byte symbols"),
        (_vocab_without(END_OF_TEXT), None, "has no <|endoftext|> token"),
        (None, "#version: 0.2\nĠ t\nh e x\n", "merges.txt line 3 is 'h e x', not one merge"),
        (None, "#version: 0.2\nĠt\n", "merges.txt line 2 is 'Ġt', not one merge"),
        (None, "#version: 0.2\nq z\n", "line 2 merges 'q' and 'z', but 'qz' is not in vocab.json"),
    ],
)
def test_a_damaged_vocabulary_is_one_line(tmp_path, vocab, merges, expected):
    folder = _folder(tmp_path, vocab, merges)
    with pytest.raises(VocabularyError) as err:
        GPT2Tokenizer(folder)
    message = str(err.value)
    assert "\n" not in message and expected in message and str(folder) in message
    assert "download_gpt2_vocab()" in message


def test_missing_files_are_one_line(tmp_path):
    with pytest.raises(
        VocabularyError, match=r"no folder at .*nowhere; give the folder holding GPT-2's vocab"
    ):
        read_gpt2_vocab(tmp_path / "nowhere")
    with pytest.raises(VocabularyError, match=r"holds no vocab\.json and merges\.txt"):
        read_gpt2_vocab(tmp_path)
    with pytest.raises(VocabularyError, match=r"no file at .*merges\.txt"):
        read_gpt2_vocab([SMALL / "vocab.json", tmp_path / "merges.txt"])
    openai = tmp_path / "openai"  # OpenAI's names for the same files
    openai.mkdir()
    (openai / "encoder.json").write_bytes((SMALL / "vocab.json").read_bytes())
    (openai / "vocab.bpe").write_bytes((SMALL / "merges.txt").read_bytes())
    assert read_gpt2_vocab(openai) == read_gpt2_vocab(SMALL)


def test_a_missing_tokenizers_package_is_one_line_naming_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "tokenizers", None)
    with pytest.raises(OptionalPackageError) as err:
        GPT2Tokenizer(SMALL)
    assert str(err.value) == (
        "the GPT-2 tokenizer needs the 'tokenizers' package, which is not installed: "
        'pip install "crate-edu[language]"'
    )


# --------------------------------------------------------------------------------------------
# The download from the hub, with fake files in the hub cache's layout.
# --------------------------------------------------------------------------------------------


def write_full_size_vocabulary(folder) -> None:
    """A vocabulary of GPT-2's size and format: 256 byte symbols, 50,000 two-symbol merges, <|endoftext|>."""
    symbols = list(bytes_to_unicode().values())
    merges = [(a, b) for a in symbols for b in symbols][:50000]
    vocab = {s: i for i, s in enumerate(symbols)}
    vocab.update({a + b: 256 + i for i, (a, b) in enumerate(merges)})
    vocab[END_OF_TEXT] = 50256
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (folder / "merges.txt").write_text(
        "#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges), encoding="utf-8"
    )


@pytest.fixture
def fake_hub(tmp_path, monkeypatch):
    import huggingface_hub

    snapshot = tmp_path / "models--openai-community--gpt2" / "snapshots" / "607a30d"
    calls = []

    def fake_download(repo_id, filename, cache_dir=None, local_files_only=False, **kw):
        calls.append((repo_id, filename, cache_dir, local_files_only))
        return str(snapshot / filename)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    return snapshot, calls


def test_the_download_fetches_the_two_files_and_checks_them(fake_hub, tmp_path):
    snapshot, calls = fake_hub
    write_full_size_vocabulary(snapshot)
    assert download_gpt2_vocab() == snapshot
    assert calls == [(GPT2_REPO_ID, name, None, False) for name in GPT2_FILES]
    assert GPT2_REPO_ID == "openai-community/gpt2" and GPT2_FILES == ("vocab.json", "merges.txt")
    tok = GPT2Tokenizer.from_hub(cache_dir=tmp_path)
    assert (tok.vocab_size, tok.eot_id, len(tok.merges)) == (50257, 50256, 50000)
    assert calls[-1] == (GPT2_REPO_ID, "merges.txt", tmp_path, False)
    assert tok.decode(tok.encode("a mixed text, 中文 <|endoftext|>")) == "a mixed text, 中文 <|endoftext|>"
    get_tokenizer("gpt2")  # offline: the copy in the cache
    assert calls[-1][3] is True


def test_files_that_are_not_gpt2s_are_refused(fake_hub):
    snapshot, _ = fake_hub
    snapshot.mkdir(parents=True)
    for name in GPT2_FILES:
        (snapshot / name).write_bytes((SMALL / name).read_bytes())
    with pytest.raises(VocabularyError) as err:
        download_gpt2_vocab()
    assert "hold 557 ids, 300 merges and <|endoftext|> = 556, not GPT-2's 50,257, 50,000 and 50256" in str(
        err.value
    )


def test_an_impossible_download_is_one_line(monkeypatch):
    import huggingface_hub
    from huggingface_hub.utils import LocalEntryNotFoundError

    def offline(*a, **kw):
        raise LocalEntryNotFoundError(
            "An error happened while trying to locate the file on the Hub.\nCheck it."
        )

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", offline)
    with pytest.raises(VocabularyError) as err:
        download_gpt2_vocab()
    message = str(err.value)
    assert "\n" not in message and "could not download vocab.json of 'openai-community/gpt2'" in message
    with pytest.raises(VocabularyError) as err:
        get_tokenizer("gpt2")  # without download: the cache only
    assert str(err.value).startswith(
        "GPT-2's vocab.json is not in the Hugging Face hub cache; download it once"
    )
