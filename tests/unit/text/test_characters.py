"""crate_edu.text.characters: the fixed character vocabulary, bytes, and tokenizers by name."""

from __future__ import annotations

import random
import string

import pytest
import torch

from crate_edu.errors import ConfigError
from crate_edu.text import ByteTokenizer, CharTokenizer, get_tokenizer
from crate_edu.text.characters import CHAR_VOCAB, UNKNOWN_ID, UNKNOWN_TEXT


@pytest.fixture(scope="module")
def char() -> CharTokenizer:
    return CharTokenizer()


def test_the_vocabulary_is_fixed_and_written_out(char):
    assert char.vocab_size == 98 == CharTokenizer.vocab_size  # the model presets assume 98
    assert char.encode("\t\n ") == [1, 2, 3]
    assert char.encode("!09AZaz~") == [4, 19, 28, 36, 61, 68, 93, 97]
    assert all(char.encode(c) == [ord(c) - 29] for c in map(chr, range(32, 127)))  # printable ASCII
    assert sorted(char.encode(CHAR_VOCAB)) == list(range(1, 98))  # each id once
    assert UNKNOWN_ID == 0 and char.decode([0]) == UNKNOWN_TEXT == "\ufffd"


def test_round_trip_of_every_listed_character(char):
    rng = random.Random(0)
    text = "".join(rng.choice(CHAR_VOCAB) for _ in range(5000))
    assert char.decode(char.encode(text)) == text
    assert char.decode(torch.tensor(char.encode(text))) == text  # a tensor decodes too
    assert char.encode("") == [] and char.decode([]) == ""


def test_unknown_characters_are_id_0_and_decode_to_a_visible_placeholder(char):
    text = "café “quoted” \r\x00\x7f\u2028😀 ß"
    ids = char.encode(text)
    unknown = [c for c in text if c not in CHAR_VOCAB]
    assert len(ids) == len(text) and ids.count(0) == len(unknown) == 9
    assert char.decode(ids) == "".join(c if c in CHAR_VOCAB else "\ufffd" for c in text)


def test_encode_tensor_equals_encode(char):
    rng = random.Random(1)
    pieces = list(string.printable) + ["é", "—", "😀", "\x00", "\x7f", "\x80", "中"]
    text = "".join(rng.choice(pieces) for _ in range(20000))
    ids = char.encode_tensor(text)
    assert ids.dtype == torch.int64 and ids.shape == (len(text),)
    assert ids.tolist() == char.encode(text)
    assert char.encode_tensor("").shape == (0,)


def test_decode_refuses_ids_outside_the_vocabulary(char):
    with pytest.raises(ValueError, match=r"character ids are in 0\.\.97; got 98"):
        char.decode([3, 98])
    with pytest.raises(ValueError, match="1-D integer tensor"):
        char.decode(torch.zeros(2, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="1-D integer tensor"):
        char.decode(torch.tensor([1.0]))


def test_bytes_round_trip_any_text_and_replace_cut_sequences():
    byte = ByteTokenizer()
    text = "naïve café 😀 中文 \x00\n"
    ids = byte.encode(text)
    assert byte.vocab_size == 256 and ids == list(text.encode("utf-8")) and len(ids) == 27
    assert byte.decode(ids) == text
    assert byte.encode_tensor(text).tolist() == ids and byte.encode_tensor(text).dtype == torch.int64
    cut = byte.encode("a中文")[:-1]  # 文 is 3 bytes: the last one is missing
    assert byte.decode(cut) == "a中\ufffd"  # replaced, not an error
    with pytest.raises(ValueError, match=r"byte ids are in 0\.\.255; got 256"):
        byte.decode([256])


def test_names_and_descriptions():
    assert (CharTokenizer.name, ByteTokenizer.name) == ("char", "byte")
    assert repr(CharTokenizer()) == "CharTokenizer(vocab_size=98)"
    assert repr(ByteTokenizer()) == "ByteTokenizer(vocab_size=256)"
    assert "98 ids" in CharTokenizer().describe() and "\n" not in CharTokenizer().describe()
    assert "256 ids" in ByteTokenizer().describe()


def test_get_tokenizer_by_name():
    assert isinstance(get_tokenizer("char"), CharTokenizer)
    assert isinstance(get_tokenizer("byte"), ByteTokenizer)
    with pytest.raises(ConfigError) as info:
        get_tokenizer("words")
    assert str(info.value) == "unknown tokenizer 'words'; choose one of char, byte, gpt2"
    assert isinstance(info.value, ValueError)
