"""Pang & Lee "scale data" v1.0: 5,006 movie reviews by four critics with ratings in [0, 1].

Layout: ``<root>/scaledata/scaledata/<critic>/{subj,rating}.<critic>`` (also accepted:
``<root>/scaledata/<critic>/...``), one review per line of ``subj``, its rating on the same line of
``rating``. This is the sentiment-regression set of Gal & Ghahramani (2016).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import torch

from ._download import DataError, data_root, ensure_file

CRITICS = ("Dennis+Schwartz", "James+Berardinelli", "Scott+Renshaw", "Steve+Rhodes")


def _critic_dir(root: Path) -> Path:
    for cand in (root / "scaledata" / "scaledata", root / "scaledata", root):
        if all((cand / c).is_dir() for c in CRITICS):
            return cand
    ensure_file(root, "scaledata/scaledata/Dennis+Schwartz/subj.Dennis+Schwartz", "scaledata",
                "Pang & Lee scale data")
    return root / "scaledata" / "scaledata"


def _lines(path: Path) -> list[str]:
    if not path.is_file():
        raise DataError(f"scale data file {path} not found")
    try:
        return path.read_bytes().decode("utf-8", errors="strict").splitlines()
    except UnicodeDecodeError:
        return path.read_bytes().decode("latin-1").splitlines()


def load_scaledata(root: Optional[os.PathLike | str] = None):
    """Return ``(texts: list[str], ratings: float32 tensor (N,), critics: list[str])``."""
    d = _critic_dir(data_root(root))
    texts, ratings, critics = [], [], []
    for c in CRITICS:
        subj, rate = d / c / f"subj.{c}", d / c / f"rating.{c}"
        s, r = _lines(subj), _lines(rate)
        if len(s) != len(r):
            raise DataError(f"{subj} has {len(s)} reviews but {rate} has {len(r)} ratings")
        try:
            vals = [float(x) for x in r]
        except ValueError as e:
            raise DataError(f"{rate}: not a number ({e})") from None
        if any(not 0.0 <= v <= 1.0 for v in vals):
            raise DataError(f"{rate}: ratings must lie in [0, 1]")
        texts += s
        ratings += vals
        critics += [c] * len(s)
    return texts, torch.tensor(ratings, dtype=torch.float32), critics


def train_test_split(n: int, test_fraction: float = 0.1, seed: int = 0):
    """Fixed, seeded split of ``range(n)``: ``(train_idx, test_idx)`` LongTensors."""
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    k = int(round(n * test_fraction))
    return perm[k:].sort().values, perm[:k].sort().values
