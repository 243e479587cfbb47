"""Padded token batches for sequence classifiers and regressors, and class-balanced subsets.

:class:`Encoded` holds a whole split as padded ids ``(N, T)`` (batch-first, right-padded with 0),
the true lengths ``(N,)`` and the targets ``(N,)``; :func:`iterate_batches` cuts it into batches
trimmed to their longest row. :func:`balanced_indices` draws a class-balanced random subset.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Optional, Sequence

import torch
from torch import Tensor


@dataclass
class Encoded:
    """Padded token ids ``(N, T)``, lengths ``(N,)`` and targets ``(N,)``."""
    tokens: Tensor
    lengths: Tensor
    targets: Tensor

    def __len__(self) -> int:
        return int(self.tokens.shape[0])

    def subset(self, idx: Tensor) -> "Encoded":
        return Encoded(self.tokens[idx], self.lengths[idx], self.targets[idx])


def iterate_batches(data: Encoded, batch_size: int, shuffle: bool = False,
                    generator: Optional[torch.Generator] = None,
                    bucket: int = 0) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
    """Batches ``(tokens, lengths, targets)``, each trimmed to its longest row (causal encoders
    that read the last real step gain nothing from trailing padding but cost).

    Without ``shuffle`` the rows come in order. ``shuffle``: random order (``generator``).
    ``bucket=k`` (with ``shuffle``): the shuffled rows are cut into pools of ``k`` batches, each
    pool is sorted by length and cut into batches, and the batches are shuffled: batches of
    similar lengths, hence less padding."""
    n = len(data)
    order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    batches = [order[i:i + batch_size] for i in range(0, n, batch_size)]
    if shuffle and bucket > 1:
        pool = bucket * batch_size
        batches = []
        for i in range(0, n, pool):
            chunk = order[i:i + pool]
            chunk = chunk[torch.argsort(data.lengths[chunk], stable=True)]
            batches.extend(chunk[j:j + batch_size] for j in range(0, len(chunk), batch_size))
        batches = [batches[j] for j in torch.randperm(len(batches), generator=generator).tolist()]
    for idx in batches:
        lengths = data.lengths[idx]
        T = int(lengths.max())
        yield data.tokens[idx, :T], lengths, data.targets[idx]


def balanced_indices(labels: Sequence[int], n: int, generator: torch.Generator,
                     exclude: Optional[set] = None) -> list[int]:
    """``n`` indices of ``labels`` with equal counts per label (the first ``n % classes``
    labels, in sorted order, get one more), drawn at random from ``generator``, outside
    ``exclude``, in random order. A ValueError when a label has too few."""
    labels = list(labels)
    classes = sorted(set(labels))
    per, extra = divmod(n, len(classes))
    out: list[int] = []
    for k, c in enumerate(classes):
        pool = [i for i, y in enumerate(labels) if y == c and not (exclude and i in exclude)]
        want = per + (1 if k < extra else 0)
        if want > len(pool):
            raise ValueError(f"asked for {want} items of class {c}, only {len(pool)} available")
        perm = torch.randperm(len(pool), generator=generator)[:want].tolist()
        out.extend(pool[j] for j in perm)
    perm = torch.randperm(len(out), generator=generator).tolist()
    return [out[j] for j in perm]
