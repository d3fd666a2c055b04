"""Text: the tokenizers and corpora of the language models, and the CLIPA tokenizer of the image–text models.

- ``characters``: :class:`CharTokenizer` (a fixed vocabulary of 98 ids: unknown, tab, newline and
  printable ASCII) and :class:`ByteTokenizer` (UTF-8 bytes, 256 ids), and :func:`get_tokenizer`
  by name (``"char"``, ``"byte"``, ``"gpt2"``).
- ``gpt2_bpe``: :class:`GPT2Tokenizer`, GPT-2's byte-level BPE (50,257 ids, ``<|endoftext|>`` =
  50256) from ``vocab.json`` and ``merges.txt`` (:func:`read_gpt2_vocab`), or from the Hugging Face
  hub (:func:`download_gpt2_vocab`).
- ``corpora``: text corpora by name (:func:`list_corpora`, :func:`corpus_info`, :func:`load_corpus`:
  ``python-docs`` offline, ``tiny-shakespeare`` downloaded on request), nanoGPT-style uint16 token
  files (:func:`token_file`), and the windows a language model learns from (:class:`TextWindows`,
  :func:`build_text_dataset`).
- ``bert_wordpiece``: :class:`CLIPATokenizer`, BERT's uncased WordPiece as CRATE-α-CLIPA reads it
  (32 ids, [CLS] first, [SEP] replaced by 0), its vocabulary from a local ``vocab.txt``
  (:func:`read_vocab`) or the Hugging Face hub (:func:`download_vocab`).

``tokenizers`` (``pip install "crate-edu[language]"``, for GPT-2) and ``ftfy`` (``pip install
"crate-edu[clip]"``, for CLIPA, with ``tokenizers``) are imported only when a tokenizer that needs
them is built, so importing this folder costs nothing.
"""

from crate_edu.text import bert_wordpiece, characters, corpora, gpt2_bpe
from crate_edu.text.bert_wordpiece import (
    CONTEXT_LENGTH,
    HUB_REPO_ID,
    VOCAB_FILENAME,
    CLIPATokenizer,
    OptionalPackageError,
    VocabularyError,
    clean_text,
    download_vocab,
    read_vocab,
)
from crate_edu.text.characters import ByteTokenizer, CharTokenizer, get_tokenizer
from crate_edu.text.corpora import (
    CorpusInfo,
    TextWindows,
    build_text_dataset,
    corpus_info,
    fetch_corpus,
    list_corpora,
    load_corpus,
    token_file,
)
from crate_edu.text.gpt2_bpe import (
    END_OF_TEXT,
    GPT2_VOCAB_SIZE,
    GPT2Tokenizer,
    download_gpt2_vocab,
    read_gpt2_vocab,
)

__all__ = [
    "bert_wordpiece",
    "characters",
    "corpora",
    "gpt2_bpe",
    "CONTEXT_LENGTH",
    "HUB_REPO_ID",
    "VOCAB_FILENAME",
    "CLIPATokenizer",
    "OptionalPackageError",
    "VocabularyError",
    "clean_text",
    "download_vocab",
    "read_vocab",
    "ByteTokenizer",
    "CharTokenizer",
    "get_tokenizer",
    "CorpusInfo",
    "TextWindows",
    "build_text_dataset",
    "corpus_info",
    "fetch_corpus",
    "list_corpora",
    "load_corpus",
    "token_file",
    "END_OF_TEXT",
    "GPT2_VOCAB_SIZE",
    "GPT2Tokenizer",
    "download_gpt2_vocab",
    "read_gpt2_vocab",
]
