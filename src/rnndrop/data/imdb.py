"""IMDB Large Movie Review Dataset (Maas et al. 2011), aclImdb layout.

Read from an extracted ``<root>/imdb/aclImdb/{train,test}/{pos,neg}/<id>_<rating>.txt`` or straight
from ``<root>/imdb/aclImdb_v1.tar.gz`` (streamed, nothing extracted). Reviews longer than the
length limit are truncated, never dropped.
"""
from __future__ import annotations

import os
import re
import tarfile
from pathlib import Path
from typing import Optional, Sequence

import torch
from torch import Tensor

from ._download import DataError, data_root, ensure_file
from .batching import balanced_indices
from .text import Vocabulary

PAD, UNK = "<pad>", "<unk>"
_TOKEN = re.compile(r"[a-z0-9]+(?:'[a-z]+)?|[^\sa-z0-9]")
_NAME = re.compile(r"aclImdb/(train|test)/(pos|neg)/(\d+)_(\d+)\.txt$")


def tokenize(text: str) -> list[str]:
    """Lower-case, ``<br />`` → space, words (with inner apostrophes) and punctuation marks."""
    return _TOKEN.findall(text.lower().replace("<br />", " "))


def _records_from_dir(base: Path, split: str):
    for label, sub in ((1, "pos"), (0, "neg")):
        d = base / split / sub
        if not d.is_dir():
            raise DataError(f"IMDB folder {d} not found")
        for f in sorted(d.glob("*.txt")):
            m = _NAME.search(f.as_posix())
            if not m:
                raise DataError(f"{f}: unexpected file name (expected <id>_<rating>.txt)")
            yield f.read_text(encoding="utf-8", errors="replace"), label, int(m.group(4))


def _records_from_tar(path: Path, splits: Sequence[str]):
    out = {s: [] for s in splits}
    try:
        with tarfile.open(path, "r:gz") as tar:
            for member in tar:
                m = _NAME.search(member.name)
                if not m or m.group(1) not in out:
                    continue
                text = tar.extractfile(member).read().decode("utf-8", errors="replace")
                out[m.group(1)].append((text, 1 if m.group(2) == "pos" else 0, int(m.group(4)),
                                        int(m.group(3))))
    except (tarfile.TarError, EOFError, OSError) as e:
        raise DataError(f"{path}: cannot read the archive ({e})") from None
    for s in splits:  # archive order is arbitrary: sort like the directory reader (label, id)
        out[s].sort(key=lambda r: (-r[1], r[3]))
        out[s] = [r[:3] for r in out[s]]
    return out


def load_imdb(root: Optional[os.PathLike | str] = None, split: str = "train",
              limit: Optional[int] = None, seed: int = 0) -> list[tuple[str, int, int]]:
    """``[(text, label 1=pos/0=neg, rating 1-10), ...]`` for ``split``; ``limit`` takes a seeded,
    class-balanced random subset (:func:`rnndrop.data.batching.balanced_indices`)."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    base = data_root(root) / "imdb"
    if (base / "aclImdb" / split).is_dir():
        recs = list(_records_from_dir(base / "aclImdb", split))
    else:
        tar = ensure_file(data_root(root), "imdb/aclImdb_v1.tar.gz", "imdb", "IMDB")
        recs = _records_from_tar(tar, [split])[split]
    if not recs:
        raise DataError(f"no IMDB {split} reviews found under {base}")
    if not limit:
        return recs
    idx = balanced_indices([r[1] for r in recs], limit, torch.Generator().manual_seed(seed))
    return [recs[i] for i in idx]


def encode_reviews(token_lists: Sequence[Sequence[str]], vocab: Vocabulary,
                   max_len: int, keep: str = "first") -> tuple[Tensor, Tensor]:
    """Padded ids ``(N, max_len)`` (batch-first, right-padded with 0) and true lengths ``(N,)``;
    words not in ``vocab`` become ``<unk>``. The vocabulary of a training split:
    ``Vocabulary.build(words, max_size, specials=(PAD, UNK))`` (``<pad>`` = 0, ``<unk>`` = 1).

    Longer reviews are truncated, never dropped: ``keep="first"`` keeps their first ``max_len``
    tokens, ``keep="last"`` their last ones (what Keras' ``pad_sequences`` does by default, and
    so what Gal & Ghahramani's sentiment code fed its LSTM)."""
    if max_len <= 0:
        raise ValueError(f"max_len must be positive, got {max_len}")
    if keep not in ("first", "last"):
        raise ValueError(f"keep must be 'first' or 'last', got {keep!r}")
    ids = torch.zeros(len(token_lists), max_len, dtype=torch.long)
    lengths = torch.zeros(len(token_lists), dtype=torch.long)
    stoi = vocab.stoi
    unk = stoi[UNK]
    for i, toks in enumerate(token_lists):
        toks = toks[:max_len] if keep == "first" else toks[-max_len:]
        row = [stoi.get(w, unk) for w in toks] or [unk]  # an empty review: one <unk>
        ids[i, : len(row)] = torch.tensor(row)
        lengths[i] = len(row)
    return ids, lengths


def split_into_chunks(token_lists: Sequence[Sequence[str]], max_len: int
                      ) -> tuple[list[list[str]], list[int]]:
    """Cut each token list into consecutive pieces of at most ``max_len`` tokens.

    Returns the pieces and, for each piece, the index of the review it came from (so that the
    review's label can follow it). An empty review gives one empty piece."""
    if max_len <= 0:
        raise ValueError(f"max_len must be positive, got {max_len}")
    pieces, owner = [], []
    for i, toks in enumerate(token_lists):
        toks = list(toks)
        for j in range(0, max(len(toks), 1), max_len):
            pieces.append(toks[j:j + max_len])
            owner.append(i)
    return pieces, owner
