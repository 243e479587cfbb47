"""Data sets: PTB and other LM corpora, Fashion-MNIST, IMDB, Pang & Lee scale data.

Every loader takes a ``root`` (else ``$RNNDROP_DATA``, else ``~/.cache/rnndrop``), verifies known
files by SHA-256, downloads from the canonical source only when a file is absent, and raises
:class:`DataError` with one clear line (naming the file) otherwise.
"""
from ._download import DataError, data_root
from .text import Corpus, Vocabulary, batchify, check_vocab, load_corpus, load_ptb

__all__ = ["DataError", "data_root", "Corpus", "Vocabulary", "batchify", "check_vocab",
           "load_corpus", "load_ptb"]
