"""The language-model corpus a recipe's ``[data]`` table names, and finding the layout of a
user's folder or file (:func:`resolve_data`)."""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Optional

from ..config import LAYOUTS, DataConfig
from . import text
from ._download import DataError
from .imdb_lm import load_imdb_lm

# What each directory layout's train split is called (the one file that identifies it); a
# bare train.txt is word-level ("words") unless the config asks for chars.
_TRAIN_FILES = {"ptb": "ptb.train.txt", "wikitext": "wiki.train.tokens", "words": "train.txt",
                "chars": "train.txt"}
_LOOKED_FOR = ("ptb.{train,valid,test}.txt (ptb), wiki.{train,valid,test}.tokens (wikitext), "
               "{train,valid,test}.txt (words or chars), imdb/ with the aclImdb reviews (imdb-lm)")


def _fits(d: Path, layout: str) -> Optional[Path]:
    """The directory ``layout`` reads in ``d`` (``d`` itself, or a ``ptb/``/``imdb/`` folder in
    it), or None when its files are not there."""
    if layout == "imdb-lm":          # the data root holding imdb/, or that folder itself
        own = d.name == "imdb" and ((d / "aclImdb").is_dir() or (d / "aclImdb_v1.tar.gz").is_file())
        return d if (d / "imdb").is_dir() or own else None
    for base in (d, d / "ptb") if layout == "ptb" else (d,):
        if (base / _TRAIN_FILES[layout]).is_file():
            return base
    return None


def find_layout(path: str | os.PathLike, preferred: Optional[str] = None) -> tuple[str, Path]:
    """``(layout, directory to read)`` of the corpus in directory ``path``: ``preferred`` when
    its files are there, else the first of ptb, wikitext, words, imdb-lm that fits. None fits:
    a DataError that lists what was looked for and the ``data.layout`` choices."""
    d = Path(path).expanduser()
    if not d.is_dir():
        raise DataError(f"--data {d}: no such file or directory")
    order = ([preferred] if preferred else []) + ["ptb", "wikitext", "words", "imdb-lm"]
    for layout in order:
        found = _fits(d, layout)
        if found is not None:
            return layout, found
    raise DataError(f"--data {d}: no language-model corpus found; looked for {_LOOKED_FOR}; "
                    f"give a folder with one of these, one text file, or --set data.layout="
                    f"{'|'.join(LAYOUTS)}")


def resolve_data(data: DataConfig, data_dir: Optional[str | os.PathLike] = None,
                 strict: bool = False) -> tuple[DataConfig, str]:
    """``(data config, note)``: ``data`` with ``dir`` set to the absolute path to read
    (``data_dir``, else ``data.dir``) and ``layout`` to the one found there (a note says when
    it differs from the configured one). ``strict``: keep ``data.layout`` as given (the user
    chose it), so a folder without its files is the loader's "missing split" error. No path at
    all (the data root, ``$RNNDROP_DATA``) leaves the config as it is.

    A file is one text corpus: ``chars`` keeps character tokens, any other layout reads words.
    """
    d = data_dir or data.dir
    if d is None:
        return data, ""
    p = Path(d).expanduser().resolve()
    if p.is_file():
        layout = "chars" if data.layout == "chars" else "words"
        note = "" if layout == data.layout or strict else \
            f"data: {p} is one text file, read as word tokens (data.layout=words)"
        return dataclasses.replace(data, dir=str(p), layout=layout), note
    if strict:
        return dataclasses.replace(data, dir=str(p)), ""
    layout, found = find_layout(p, data.layout)
    note = "" if layout == data.layout else \
        f"data: {p} has the {layout} layout, not {data.layout} (data.layout={layout})"
    return dataclasses.replace(data, dir=str(found), layout=layout), note


def load_lm_corpus(data: DataConfig, data_dir: Optional[str | os.PathLike] = None) -> text.Corpus:
    """``data_dir`` (else ``data.dir``) read with ``data.layout``; with neither, the data root
    (``$RNNDROP_DATA``): PTB from ``<root>/ptb`` (verified, downloaded when absent), IMDB from
    ``<root>/imdb``. A file (not a directory) is split by :func:`rnndrop.data.text.load_text_file`
    with ``data.valid_fraction``, ``data.test_fraction`` and ``data.split_seed``."""
    d = data_dir or data.dir
    if data.layout == "imdb-lm":          # the data root (holding imdb/), else $RNNDROP_DATA
        return load_imdb_lm(d, max_vocab=data.max_vocab, min_count=data.min_count)
    if data.layout == "ptb" and d is None:
        return text.load_ptb()
    if d is None:
        raise ValueError(f"data.dir must be set for layout {data.layout!r} (--data DIR)")
    if Path(d).is_file():
        return text.load_text_file(d, chars=data.layout == "chars",
                                   valid_fraction=data.valid_fraction,
                                   test_fraction=data.test_fraction, seed=data.split_seed,
                                   unk=data.unk, encoding=data.encoding)
    if data.layout == "ptb" and not (Path(d) / "ptb.train.txt").exists() \
            and (Path(d) / "ptb" / "ptb.train.txt").exists():
        d = Path(d) / "ptb"
    return text.load_corpus(d, layout=data.layout, unk=data.unk, encoding=data.encoding)
