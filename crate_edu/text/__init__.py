"""Text for the image–text models: the CLIPA tokenizer.

- ``bert_wordpiece``: :class:`CLIPATokenizer`, BERT's uncased WordPiece as CRATE-α-CLIPA reads it
  (32 ids, [CLS] first, [SEP] replaced by 0), its vocabulary from a local ``vocab.txt``
  (:func:`read_vocab`) or the Hugging Face hub (:func:`download_vocab`).

``tokenizers`` and ``ftfy`` (``pip install "crate-edu[clip]"``) are imported only when a
tokenizer is built, so importing this folder costs nothing.
"""

from crate_edu.text import bert_wordpiece
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

__all__ = [
    "bert_wordpiece",
    "CONTEXT_LENGTH",
    "HUB_REPO_ID",
    "VOCAB_FILENAME",
    "CLIPATokenizer",
    "OptionalPackageError",
    "VocabularyError",
    "clean_text",
    "download_vocab",
    "read_vocab",
]
