"""The language-model corpus a recipe's ``[data]`` table names."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

from ..config import DataConfig
from . import text
from .imdb_lm import load_imdb_lm


def load_lm_corpus(data: DataConfig, data_dir: Optional[str | os.PathLike] = None) -> text.Corpus:
    """``data_dir`` (else ``data.dir``) read with ``data.layout``; with neither, the data root
    (``$RNNDROP_DATA``): PTB from ``<root>/ptb`` (verified, downloaded when absent), IMDB from
    ``<root>/imdb``."""
    d = data_dir or data.dir
    if data.layout == "imdb-lm":          # the data root (holding imdb/), else $RNNDROP_DATA
        return load_imdb_lm(d, max_vocab=data.max_vocab, min_count=data.min_count)
    if data.layout == "ptb" and d is None:
        return text.load_ptb()
    if d is None:
        raise ValueError(f"data.dir must be set for layout {data.layout!r} (--data DIR)")
    if data.layout == "ptb" and not (Path(d) / "ptb.train.txt").exists() \
            and (Path(d) / "ptb" / "ptb.train.txt").exists():
        d = Path(d) / "ptb"
    return text.load_corpus(d, layout=data.layout, unk=data.unk)
