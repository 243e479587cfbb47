"""Generated sequence tasks where memory matters, drawn on the fly (time-major, ``(T, B, ...)``).

- :func:`adding_problem` (Hochreiter & Schmidhuber 1997): sum the two marked numbers.
- :func:`copy_task`: reproduce ``n_copy`` symbols after a long blank stretch.
- :func:`delayed_recall`: the target at step ``t`` is the token seen ``delay`` steps earlier.

:class:`Task` (made by :func:`make_task`) ties a generator to its loss and to the loss of the
best memoryless prediction (the baseline a network must beat).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import Tensor

TASKS = ("adding", "copy")


def adding_problem(batch: int, seq_len: int, generator: Optional[torch.Generator] = None):
    """The adding problem: ``x (T, B, 2)``, ``y (B, 1)``.

    ``x[..., 0]`` uniform in [0, 1); ``x[..., 1]`` is 1 at two steps, one drawn uniformly from
    the first half ``[0, T//2)`` and one from the second half ``[T//2, T)``, 0 elsewhere;
    ``y`` is the sum of the two marked numbers."""
    if seq_len < 2:
        raise ValueError(f"the adding problem needs seq_len >= 2, got {seq_len}")
    values = torch.rand(seq_len, batch, generator=generator)
    half = seq_len // 2
    first = torch.randint(0, half, (batch,), generator=generator)
    second = torch.randint(half, seq_len, (batch,), generator=generator)
    b = torch.arange(batch)
    markers = torch.zeros(seq_len, batch)
    markers[first, b] = 1.0
    markers[second, b] = 1.0
    y = (values[first, b] + values[second, b]).unsqueeze(-1)
    return torch.stack([values, markers], dim=-1), y


def copy_task(batch: int, seq_len: int, n_symbols: int = 8, n_copy: int = 10,
              generator: Optional[torch.Generator] = None):
    """Copy task: ``x (T, B, n_symbols + 2)`` one-hot, ``y (T, B)`` int64 targets.

    Token 0 is the blank, ``1 … n_symbols`` the symbols, ``n_symbols + 1`` the "go" token. The
    input holds ``n_copy`` random symbols at steps ``0 … n_copy-1``, blanks, and "go" at step
    ``delay - 1`` with ``delay = T - n_copy``; the target is blank except
    ``y[delay + i] = x_token[i]`` for ``i < n_copy``: the input delayed by ``delay`` steps."""
    delay = seq_len - n_copy
    if n_copy < 1 or delay < n_copy + 1:
        raise ValueError(f"copy task needs seq_len >= 2 * n_copy + 1, got seq_len={seq_len}, "
                         f"n_copy={n_copy}")
    symbols = torch.randint(1, n_symbols + 1, (n_copy, batch), generator=generator)
    tokens = torch.zeros(seq_len, batch, dtype=torch.long)
    tokens[:n_copy] = symbols
    tokens[delay - 1] = n_symbols + 1
    y = torch.zeros(seq_len, batch, dtype=torch.long)
    y[delay:] = symbols
    return F.one_hot(tokens, n_symbols + 2).float(), y


def delayed_recall(batch: int, seq_len: int, vocab: int, delay: int,
                   generator: Optional[torch.Generator] = None):
    """Delayed recall: random tokens ``x (T, B)`` in ``[0, vocab)`` and targets ``y (T, B)``
    with ``y[t] = x[t - delay]``; the first ``delay`` steps have nothing to recall and are
    ``-100`` (``cross_entropy``'s ``ignore_index``)."""
    x = torch.randint(0, vocab, (seq_len, batch), generator=generator)
    y = torch.full_like(x, -100)
    y[delay:] = x[:-delay]
    return x, y


@dataclass(frozen=True)
class Task:
    """A generated task: how to draw a batch, the loss of a network's outputs, the baseline."""
    name: str
    seq_len: int
    input_size: int
    output_size: int
    baseline: float            # loss of the best memoryless prediction
    n_symbols: int = 8
    n_copy: int = 10

    def batch(self, batch: int, generator: Optional[torch.Generator] = None):
        if self.name == "adding":
            return adding_problem(batch, self.seq_len, generator)
        return copy_task(batch, self.seq_len, self.n_symbols, self.n_copy, generator)

    def loss(self, readout: Callable[[Tensor], Tensor], out: Tensor, y: Tensor) -> Tensor:
        """``out``: the recurrent stack's output ``(T, B, H)``; ``readout`` maps the hidden
        states to the task's outputs."""
        if self.name == "adding":
            return F.mse_loss(readout(out[-1]), y)
        K = self.n_copy
        logits = readout(out[-K:])
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y[-K:].reshape(-1))

    @property
    def fit_window(self) -> int:
        """Steps ``1 … fit_window`` over which a gradient's decay rate is fitted: all of them
        for the adding problem (loss on the last step only), the steps before the recall window
        for the copy task (there the gradient only travels back through time)."""
        return self.seq_len if self.name == "adding" else self.seq_len - self.n_copy


def make_task(name: str = "adding", seq_len: int = 100) -> Task:
    """The :class:`Task` ``name`` (one of :data:`TASKS`) with sequences of ``seq_len`` steps.
    Baselines: predicting the mean 1.0 gives MSE 1/6 on the adding problem; the uniform
    distribution over the 8 symbols gives ln 8 on the copy task."""
    if name == "adding":
        return Task("adding", seq_len, 2, 1, 1.0 / 6.0)
    if name == "copy":
        task = Task("copy", seq_len, 8 + 2, 8 + 1, math.log(8))
        copy_task(1, seq_len, task.n_symbols, task.n_copy)  # validates seq_len
        return task
    raise ValueError(f"task must be one of {TASKS}, got {name!r}")
