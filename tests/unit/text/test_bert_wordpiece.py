"""The CLIPA tokenizer against an independent implementation: transformers' pure-Python BertTokenizer.

``tests/fixtures/bert_uncased_vocab_small.txt`` is a 330-token vocabulary in BERT's ``vocab.txt``
format laid out as the real one: [PAD] = 0, [unused0..98] = 1..99, [UNK] = 100, [CLS] = 101,
[SEP] = 102, [MASK] = 103, then ASCII punctuation, digits, the letters but q, x and z (so words
with those become [UNK]), a few non-ASCII characters, "##" continuations (none for j, k, v, w),
and whole words (prompt words, "cafe", "naive", "resume", and "un", "unaff", "##aff", "##able"
for the longest match).

The reference is open_clip v2.24.0's HFTokenizer transcribed: its cleaning (ftfy, html.unescape
twice, ``regex`` ``\\s+``), then BertTokenizer (the slow one: ``BertTokenizerLegacy`` from
transformers 5, ``BertTokenizer`` before) with ``max_length=32, padding="max_length",
truncation=True``, then every [SEP] id replaced by 0.
"""

from __future__ import annotations

import html
import random
import subprocess
import sys
import unicodedata

import ftfy  # the clip extra (in dev)
import pytest
import regex  # open_clip's whitespace rule (transformers needs it)
import torch

from crate_edu.errors import ConfigError
from crate_edu.text import (
    CONTEXT_LENGTH,
    HUB_REPO_ID,
    VOCAB_FILENAME,
    CLIPATokenizer,
    OptionalPackageError,
    VocabularyError,
    clean_text,
    read_vocab,
)
from tests.support.paths import FIXTURES

VOCAB = FIXTURES / "bert_uncased_vocab_small.txt"


def _slow_bert_class():
    """transformers' pure-Python BERT tokenizer (renamed BertTokenizerLegacy in transformers 5)."""
    try:
        from transformers.models.bert.tokenization_bert_legacy import BertTokenizerLegacy

        return BertTokenizerLegacy
    except ImportError:
        from transformers import BertTokenizer

        return BertTokenizer


@pytest.fixture(scope="module")
def ours() -> CLIPATokenizer:
    return CLIPATokenizer(VOCAB)


def official_clean(text: str) -> str:
    """open_clip v2.24.0 tokenizer.py: ``whitespace_clean(basic_clean(text))``."""
    text = ftfy.fix_text(text)
    text = html.unescape(html.unescape(text)).strip()
    return regex.sub(r"\s+", " ", text).strip()


@pytest.fixture(scope="module")
def reference():
    """open_clip's HFTokenizer(strip_sep_token=True) on the slow BertTokenizer, same vocabulary."""
    bert = _slow_bert_class()(str(VOCAB), do_lower_case=True)
    assert not bert.is_fast and type(bert).__module__.startswith("transformers.models.bert.tokenization_bert")

    def tokenize(texts: list[str], context_length: int = 32) -> torch.Tensor:
        ids = bert(
            [official_clean(t) for t in texts],
            max_length=context_length,
            padding="max_length",
            truncation=True,
            return_tensors="pt",
        )["input_ids"]
        return torch.where(ids == bert.sep_token_id, torch.zeros_like(ids), ids)

    return tokenize


def ids_of(vocab: dict[str, int], *tokens: str) -> list[int]:
    return [vocab[t] for t in tokens]


# --------------------------------------------------------------------------------------------
# Each rule, with its expected tokens written out.
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, tokens",
    [
        ("A PHOTO of The Tench", ["a", "photo", "of", "the", "tench"]),  # lower-casing
        ("Café naïve RÉSUMÉ crème brûlée", ["cafe", "naive", "resume", "creme", "brulee"]),  # accents
        ("Cafe\u0301", ["cafe"]),  # a combining accent (NFD) is stripped too
        ("dog,cat.(bird)!?", ["dog", ",", "cat", ".", "(", "bird", ")", "!", "?"]),  # punctuation
        ("san-jose's st.", ["san", "-", "jose", "'", "s", "st", "."]),
        ("¿photo? «dog» a—b…", ["¿", "photo", "?", "«", "dog", "»", "a", "—", "b", "…"]),  # Unicode P*
        ("$5+3=8 ^_^ `~|", ["$", "5", "+", "3", "=", "8", "^", "_", "^", "`", "~", "|"]),  # BERT's ASCII set
        ("  a \t\n photo\u3000of\xa0a   dog  ", ["a", "photo", "of", "a", "dog"]),  # whitespace
        ("fish &amp; chips &lt;b&gt;", ["fish", "&", "c", "##h", "##i", "##p", "##s", "<", "b", ">"]),
        ("dog &amp;amp; cat", ["dog", "&", "cat"]),  # unescaped twice
        ("a\x00b\x07c\ufffd d", ["a", "##b", "##c", "d"]),  # controls dropped
        ("unaffable", ["unaff", "##able"]),  # the longest match, not un ##aff ##able
        ("playing played plays", ["playing", "play", "##ed", "play", "##s"]),
        ("photography", ["photo", "##graph", "##y"]),
        ("qat zebra box", ["[UNK]", "[UNK]", "[UNK]"]),  # no cover: the whole word is [UNK]
        ("jujitsu", ["[UNK]"]),  # no ##j: [UNK], not a partial cover
        ("中文 日本", ["中", "[UNK]", "日", "[UNK]"]),  # CJK characters are words of their own
        ("a [MASK] dog [SEP] [cls]", ["a", "[MASK]", "dog", "[SEP]", "[", "c", "##l", "##s", "]"]),
        ("cafÃ© ‘dog’ “cat”", ["cafe", "'", "dog", "'", '"', "cat", '"']),  # ftfy: mojibake, quotes
        ("", []),
    ],
)
def test_each_rule_gives_the_expected_wordpieces(ours, reference, text, tokens):
    assert ours.tokens(text) == tokens
    pieces = [0 if i == 102 else i for i in ids_of(ours.vocab, *tokens)]  # a [SEP] in the text -> 0 too
    assert ours(text).tolist() == [[101, *pieces, 0] + [0] * (30 - len(tokens))]  # [CLS], [SEP] -> 0, [PAD]
    assert torch.equal(ours([text]), reference([text]))


def test_a_word_of_more_than_100_characters_is_one_unk(ours, reference):
    assert ours.tokens("a" * 100) == ["a"] + ["##a"] * 99  # 100 characters: still pieces
    assert ours.tokens("a" * 101) == ["[UNK]"]
    texts = ["a" * 100, "a" * 101, "photo " + "b" * 150 + " dog"]
    assert torch.equal(ours(texts), reference(texts))


def test_framing_truncation_padding_and_the_stripped_sep(ours, reference):
    vocab = ours.vocab
    long_text = " ".join(f"dog{i % 10}" for i in range(40))  # 80 wordpieces: dog ##0 dog ##1 ...
    ids = ours([long_text, "a dog", ""])
    assert ids.dtype == torch.int64 and ids.shape == (3, CONTEXT_LENGTH)
    pieces = ours.tokens(long_text)
    assert len(pieces) == 80
    assert ids[0].tolist() == [101, *ids_of(vocab, *pieces[:30]), 0]  # 30 pieces, then the [SEP] slot
    assert ids[1].tolist() == [101, vocab["a"], vocab["dog"]] + [0] * 29
    assert ids[2].tolist() == [101] + [0] * 31
    assert not (ids == vocab["[SEP]"]).any()  # strip_sep_token
    assert torch.equal(ids, reference([long_text, "a dog", ""]))
    # 30 pieces fit exactly; 31 lose the last one
    for n in (29, 30, 31):
        text = " ".join(["dog"] * n)
        assert ours(text)[0, 1 : 1 + min(n, 30)].tolist() == [vocab["dog"]] * min(n, 30)
        assert torch.equal(ours(text), reference([text]))


def test_context_length_and_batches(ours, reference):
    texts = ["a photo of a dog", "the cat", "jpeg corrupted photo of the big fish"]
    assert ours("a dog").shape == (1, 32)  # one string is a batch of one
    assert ours([]).shape == (0, 32)
    short = ours(texts, context_length=5)
    assert short.shape == (3, 5) and short.dtype == torch.int64
    assert torch.equal(short, reference(texts, context_length=5))
    assert torch.equal(CLIPATokenizer(VOCAB, context_length=8)(texts), reference(texts, context_length=8))
    with pytest.raises(ConfigError, match="at least 2"):
        ours(texts, context_length=1)
    with pytest.raises(ConfigError, match="at least 2"):
        CLIPATokenizer(VOCAB, context_length=0)
    with pytest.raises(TypeError, match="strings"):
        ours([b"bytes"])


def test_the_whitespace_rule_is_open_clips_regex():
    """open_clip collapses ``regex``'s ``\\s`` (Unicode White_Space), not Python ``re``'s (which also
    takes U+001C-U+001F)."""
    for cp in range(0x3001):
        c = chr(cp)
        text = f"a{c}{c}b"
        assert clean_text(text) == regex.sub(r"\s+", " ", ftfy.fix_text(text)).strip(), hex(cp)


# --------------------------------------------------------------------------------------------
# Many strings against the reference.
# --------------------------------------------------------------------------------------------

HAND_PICKED = [
    "a bad photo of a {}.",
    "a photo of many tench.",
    "itap of the goldfish.",
    "a low resolution photo of the kite (bird of prey).",
    "a black and white photo of a crane bird.",
    "art of the Great White Shark",
    "a 3D rendering of the T-shirt!",
    "NEW YORK's café — “naïve” résumé…",
    "Ünïcödé ÀÉÎÕÜ àéîõü ÇÑ çñ Åå Øø Ææ ß đ",
    "tab\tnewline\ncarriage\rform\ffeed\vvertical",
    "&quot;quoted&quot; &#39;single&#39; &amp;lt; &nbsp;nbsp",
    "[CLS] [SEP] [PAD] [UNK] [MASK] [cls] [sep] [Mask]",
    "x[SEP]y[MASK]z",
    "中文字符和日本語のテキスト",
    "emoji 😀 and symbols ™ © ® ° ± × ÷",
    "İstanbul ΣΊΣΥΦΟΣ ǅemal ﬁsh Ⅻ ①",
    "\x00\x01\x1c\x1d\x1e\x1f\x7f\x85\u200b\u200d\ufeff\ufffd",
    "   ",
    "a" * 99 + " " + "b" * 101,
    " ".join(["photo"] * 31),
]


def random_strings(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    pieces = (
        list("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
        + list("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~")
        + [" ", "  ", "\t", "\n", "\r\n", "\u3000", "\xa0", "\u2009", "\x1c", "\x00", "\x07", "\u200b"]
        + list("éèêëÉÜüñÑçÇåÅøØæÆßđ") + ["e\u0301", "\u0308", "İ", "Σ", "ﬁ", "①"]
        + list("中文日本語") + ["—", "…", "¿", "¡", "«", "»", "‘", "’", "“", "”", "Ã©", "â€™"]
        + ["&amp;", "&amp;amp;", "&lt;", "&gt;", "&#39;", "&quot;", "&nbsp;", "&"]
        + ["[SEP]", "[MASK]", "[CLS]", "[UNK]", "[PAD]", "[sep]"]
        + ["photo", "dog", "cat", "unaffable", "playing", "tench", "jujitsu", "qat", "a", "the", "of"]
    )  # fmt: skip
    out = []
    for _ in range(n):
        length = rng.choice([0, 1, 2, 5, 10, 20, 40, 80])
        out.append("".join(rng.choice(pieces) for _ in range(length)))
    return out


def test_hand_picked_strings_match_the_reference(ours, reference):
    assert torch.equal(ours(HAND_PICKED), reference(HAND_PICKED))


def unassigned(text: str) -> bool:
    return any(unicodedata.category(c) == "Cn" for c in official_clean(text))


def test_random_strings_match_the_reference(ours, reference):
    generated = random_strings(3000)
    texts = [t for t in generated if not unassigned(t)]  # see the next test
    assert len(generated) - len(texts) <= 10  # ftfy sometimes decodes the mojibake pieces into one
    got, want = ours(texts), reference(texts)
    wrong = [(t, ours.tokens(t)) for t, a, b in zip(texts, got, want, strict=True) if not torch.equal(a, b)]
    assert not wrong, f"{len(wrong)} of {len(texts)} differ, e.g. {wrong[:3]}"
    assert (got == 100).any() and (got[:, 30] != 0).any() and not got[:, 31].any()  # [UNK]s, cut texts


def test_unassigned_characters_are_the_one_difference(ours, reference):
    """Unassigned code points (Unicode category Cn): the tokenizers library, which the official
    AutoTokenizer runs on, deletes control, format and private-use characters (Cc, Cf, Co) but keeps
    unassigned ones inside their word; the pure-Python tokenizer deletes every C* category. Real text
    has none; the random strings above skip the few that ftfy's repairs turn into one."""
    vocab = ours.vocab
    assert ours.tokens("a\u0378b") == ["[UNK]"]  # U+0378 kept: "a?b" has no cover
    assert reference(["a\u0378b"])[0, :3].tolist() == [101, vocab["a"], vocab["##b"]]  # deleted
    for deleted in ("\x07", "\u00ad", "\ue000"):  # Cc, Cf, Co: deleted by both
        assert ours.tokens(f"a{deleted}b") == ["a", "##b"]
        assert torch.equal(ours(f"a{deleted}b"), reference([f"a{deleted}b"]))


def test_the_imagenet_prompts_match_the_reference(ours, reference):
    from crate_edu.evaluation import imagenet_classnames, imagenet_templates

    names = imagenet_classnames()[::10]  # 100 classes
    prompts = [t.format(c) for c in names for t in imagenet_templates()]
    assert torch.equal(ours(prompts), reference(prompts))


# --------------------------------------------------------------------------------------------
# The vocabulary: local files, the hub, and the one-line errors.
# --------------------------------------------------------------------------------------------


def test_read_vocab_gives_each_token_its_line_number():
    vocab = read_vocab(VOCAB)
    lines = VOCAB.read_text(encoding="utf-8").splitlines()
    assert len(vocab) == len(lines) == 330
    assert all(vocab[t] == i for i, t in enumerate(lines))
    assert ids_of(vocab, "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]") == [0, 100, 101, 102, 103]
    tok = CLIPATokenizer(vocab)  # a dict works as well as the file
    assert tok.vocab_size == 330 and "330 tokens" in repr(tok)
    assert torch.equal(tok(HAND_PICKED), CLIPATokenizer(VOCAB)(HAND_PICKED))


def _write(path, content: str | bytes):
    path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    return path


GOOD = "[PAD]\n[UNK]\n[CLS]\n[SEP]\na\n"


@pytest.mark.parametrize(
    "content, expected",
    [
        ('{\n  "version": "1.0",\n}\n', 'line 2 is \'  "version": "1.0",\', not one token'),
        (GOOD.replace("\n", "\r\n"), "line 1 is '[PAD]\\r', not one token"),
        ("[PAD]\n\n[UNK]\n[CLS]\n[SEP]\n", "line 2 is '', not one token"),
        ("<!DOCTYPE html>\n<html>\n", "line 1 is '<!DOCTYPE html>'"),
        (GOOD + "b\na\n", "lists 'a' twice (lines 5 and 7)"),
        ("[PAD]\n[UNK]\n[SEP]\na\n", "has no [CLS] token"),
        (b"[PAD]\n\xff\xfe\n", "is not UTF-8 text"),
    ],
)
def test_an_ill_formed_vocabulary_is_one_line_naming_the_file_and_the_fix(tmp_path, content, expected):
    path = _write(tmp_path / "vocab.txt", content)
    with pytest.raises(VocabularyError) as info:
        CLIPATokenizer(path)
    message = str(info.value)
    assert "\n" not in message and str(path) in message and expected in message
    assert "CLIPATokenizer.from_hub()" in message and "one token per line" in message


def test_a_missing_vocabulary_file_is_one_line(tmp_path):
    with pytest.raises(VocabularyError, match=r"no vocabulary file at .*nothing\.txt; give the vocab\.txt"):
        read_vocab(tmp_path / "nothing.txt")
    assert issubclass(VocabularyError, ConfigError)  # the command line prints it as one line


def test_the_hub_vocabulary_is_bert_base_uncased_in_the_hub_cache(monkeypatch, tmp_path, ours):
    import huggingface_hub

    calls = []

    def fake_download(repo_id, filename, cache_dir=None, **kw):  # the hub's cache layout
        calls.append((repo_id, filename, cache_dir))
        target = tmp_path / "models--bert-base-uncased" / "snapshots" / "0123abc" / filename
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(VOCAB.read_bytes())
        return str(target)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    tok = CLIPATokenizer.from_hub()
    assert calls == [(HUB_REPO_ID, VOCAB_FILENAME, None)] == [("bert-base-uncased", "vocab.txt", None)]
    assert torch.equal(tok(HAND_PICKED), ours(HAND_PICKED))
    CLIPATokenizer.from_hub("google-bert/bert-base-uncased", cache_dir=tmp_path, context_length=16)
    assert calls[-1] == ("google-bert/bert-base-uncased", "vocab.txt", tmp_path)


def test_an_impossible_download_is_one_line(monkeypatch):
    import huggingface_hub
    from huggingface_hub.utils import LocalEntryNotFoundError

    def offline(*a, **kw):
        raise LocalEntryNotFoundError(
            "An error happened while trying to locate the file on the Hub and we cannot find the "
            "requested files in the local cache.\nPlease check your connection and try again."
        )

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", offline)
    with pytest.raises(VocabularyError) as info:
        CLIPATokenizer.from_hub()
    message = str(info.value)
    assert "\n" not in message
    assert "could not download vocab.txt of 'bert-base-uncased' from the Hugging Face hub" in message
    assert "give a local BERT uncased vocab.txt" in message


@pytest.mark.parametrize("package", ["tokenizers", "ftfy"])
def test_a_missing_optional_package_is_one_line_naming_the_extra(monkeypatch, package):
    monkeypatch.setitem(sys.modules, package, None)  # `import package` now raises ImportError
    with pytest.raises(OptionalPackageError) as info:
        CLIPATokenizer(VOCAB)
    message = str(info.value)
    assert message == (
        f"the CLIPA tokenizer needs the '{package}' package, which is not installed: "
        'pip install "crate-edu[clip]"'
    )
    assert isinstance(info.value, ImportError) and isinstance(info.value, ConfigError)


def test_importing_the_package_does_not_import_tokenizers():
    code = (
        "import sys, crate_edu, crate_edu.text, crate_edu.evaluation\n"
        "assert 'tokenizers' not in sys.modules and 'ftfy' not in sys.modules, 'imported eagerly'\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


# --------------------------------------------------------------------------------------------
# Into the model.
# --------------------------------------------------------------------------------------------


def test_the_tokenizer_feeds_class_embeddings_and_a_tiny_clipa(ours):
    from crate_edu.evaluation import class_embeddings
    from crate_edu.models.crate_alpha_clipa import CRATEAlphaCLIPA

    torch.manual_seed(0)
    model = CRATEAlphaCLIPA(
        image_size=28, patch_size=14, vision_width=16, vision_depth=1, vision_heads=2, context_length=32,
        vocab_size=ours.vocab_size, text_width=16, text_depth=1, text_heads=2, embed_dim=8,
    ).eval()  # fmt: skip
    names, templates = ["tench", "goldfish", "great white shark"], ["a photo of a {}.", "art of the {}."]
    W = class_embeddings(model.encode_text, ours, names, templates, batch_size=4, progress=False)
    assert W.shape == (8, 3)
    # the same columns by hand: each prompt's features normalised (+1e-8), averaged, renormalised
    with torch.no_grad():
        f = model.encode_text(ours([t.format(c) for c in names for t in templates])).view(3, 2, 8)
    f = f / (f.norm(dim=-1, keepdim=True) + 1e-8)
    mean = f.mean(dim=1)
    torch.testing.assert_close(W, (mean / mean.norm(dim=-1, keepdim=True)).T, rtol=0, atol=1e-6)
    small = CRATEAlphaCLIPA(
        image_size=28, patch_size=14, vision_width=16, vision_depth=1, vision_heads=2, vocab_size=200,
        text_width=16, text_depth=1, text_heads=2, embed_dim=8,
    )  # fmt: skip
    with pytest.raises(ValueError, match=r"token ids must be in \[0, 200\)"):
        small.encode_text(ours(["tench"]))  # a vocabulary larger than the embedding is caught
