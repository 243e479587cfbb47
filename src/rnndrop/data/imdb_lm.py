"""A large-vocabulary word-level language-modelling corpus from the IMDB reviews.

The 25,000 training reviews of the Large Movie Review Dataset (Maas et al. 2011) are shuffled
with a fixed seed and split into valid (``valid_fraction`` of them, 1,000 by default) and train
(the rest); the 25,000 test reviews, in the loader's order, are the test split. Reviews are
lower-cased and tokenised as in the IMDB sentiment study (:func:`rnndrop.data.imdb.tokenize`),
one ``<eos>`` after each review. The vocabulary is built on train: every word seen at least
``min_count`` times (2: 49,240 words on the full data set, ``<eos>`` and ``<unk>`` included; 1:
about 79k), at most the ``max_vocab`` most frequent; other words become ``<unk>``. Ids are sorted by decreasing train frequency (``<eos>`` and
``<unk>`` included), the Zipfian order the log-uniform sampled-softmax proposal assumes, and
``vocab.counts`` holds the train counts (for the unigram proposal).

This is the ``imdb-lm`` data layout of ``rnndrop train`` (``--set data.max_vocab=N``,
``--set data.min_count=N``).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import torch

from ._download import DataError, data_root
from .imdb import load_imdb, tokenize
from .text import Corpus, lm_corpus_from_texts

__all__ = ["load_imdb_lm", "imdb_root"]


def imdb_root(path: Optional[os.PathLike | str] = None) -> Path:
    """The data root for :func:`rnndrop.data.imdb.load_imdb` from a path that is either the root
    (holding ``imdb/``) or the ``imdb`` folder itself; ``None``: ``$RNNDROP_DATA``."""
    if path is None:
        return data_root(None)
    p = Path(path).expanduser()
    if (p / "imdb").is_dir():
        return p
    if p.name == "imdb" and p.is_dir():
        return p.parent
    raise DataError(f"{p}: no imdb/ folder (with aclImdb_v1.tar.gz or aclImdb/) found; give the "
                    f"data root that holds imdb/")


def load_imdb_lm(root: Optional[os.PathLike | str] = None, max_vocab: Optional[int] = None,
                 min_count: int = 2, valid_fraction: float = 0.04, seed: int = 0,
                 include_test: bool = True) -> Corpus:
    """The IMDB LM corpus (see the module docstring).

    Args:
        root: data root holding ``imdb/`` (or the ``imdb`` folder); default ``$RNNDROP_DATA``.
        max_vocab: keep at most this many words (specials included); ``None``: no cap.
        min_count: words seen fewer times in train become ``<unk>``.
        valid_fraction: share of the training reviews held out as valid (at least one review).
        seed: the train/valid shuffle.
        include_test: ``False`` skips reading the test reviews (``corpus.test`` is then empty):
            a quicker way to the vocabulary and the train/valid streams.

    Returns:
        A :class:`rnndrop.data.text.Corpus` (1-D id streams and the vocabulary with ``counts``).
    """
    if not 0.0 < valid_fraction < 1.0:
        raise ValueError(f"valid_fraction must be in (0, 1), got {valid_fraction!r}")
    if max_vocab is not None and (isinstance(max_vocab, bool) or not isinstance(max_vocab, int)
                                  or max_vocab < 3):
        raise ValueError(f"max_vocab must be an int >= 3 (<eos>, <unk> and a word) or None, "
                         f"got {max_vocab!r}")
    base = imdb_root(root)
    train = load_imdb(base, "train")
    test = load_imdb(base, "test") if include_test else []
    if len(train) < 2:
        raise DataError(f"need at least 2 IMDB training reviews to split off a valid set, "
                        f"found {len(train)}")
    n_valid = min(len(train) - 1, max(1, round(valid_fraction * len(train))))
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed)).tolist()
    valid_docs = [tokenize(train[i][0]) for i in order[:n_valid]]
    train_docs = [tokenize(train[i][0]) for i in order[n_valid:]]
    test_docs = [tokenize(text) for text, _, _ in test]
    return lm_corpus_from_texts(train_docs, valid_docs, test_docs, max_vocab=max_vocab,
                                min_count=min_count)
