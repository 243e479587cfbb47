"""Variable-length batches for the recurrent layers.

A batch of sequences of different lengths arrives as a ``PackedSequence`` (as for ``torch.nn``)
or as a right-padded tensor with ``lengths``. The layers work on the padded form in the batch's
own order; :class:`Lengths` carries what they need: the lengths, the order by decreasing length
(the ``PackedSequence``'s ``sorted_indices``) and, in that order, how many sequences are still
running at each step (``batch_sizes``).

How the loops skip the padding without leaking into it (``rnndrop.rnn``):

- In decreasing-length order the running sequences are a prefix of the batch, so the time axis is
  cut into :func:`segments` that each run on the first ``b`` rows only: work grows with the real
  tokens, not with ``B · T``.
- Inside a segment, a row whose sequence has ended runs on a *frozen* input projection
  (:func:`freeze`): LSTM input gate pre-activation ``-BIG``, forget gate ``+BIG``, cell input and
  output gate 0, so ``i = 0``, ``f = 1``, ``g = 0`` and ``c_t = c_{t-1}`` exactly; GRU reset ``-BIG``,
  update ``+BIG``, new gate 0, so ``h_t = h_{t-1}``. Their outputs are zeroed and their gradients
  are zero, so the final state of every sequence is the state at its last real step.
- The reverse direction reads each sequence from its own last real token
  (:func:`reverse_within`), which keeps the padding at the end.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

# |pre-activation| that saturates sigmoid to exactly 0 / 1 in float32, bfloat16 and float16 alike
# (and stays finite in float16, whose largest value is 65504).
BIG = 3.0e4


@dataclass
class Lengths:
    lengths: Tensor         # (B,) int64 on the CPU, the batch's own order
    sorted_indices: Tensor  # (B,) int64: the batch by decreasing length
    batch_sizes: Tensor     # (T,) int64 on the CPU: sequences still running at step t

    @property
    def unsorted_indices(self) -> Tensor:
        return torch.empty_like(self.sorted_indices).scatter_(
            0, self.sorted_indices, torch.arange(self.sorted_indices.numel()))

    def alive(self, T: int, device) -> Tensor:
        """``(T, B)`` bool on ``device``: step ``t`` is a real token of sequence ``b``."""
        return (torch.arange(T).unsqueeze(1) < self.lengths.unsqueeze(0)).to(device)

    def in_sorted_order(self) -> "Lengths":
        """The same batch reordered by decreasing length (its order is then the identity)."""
        return Lengths(self.lengths[self.sorted_indices], torch.arange(self.lengths.numel()),
                       self.batch_sizes)


def from_lengths(lengths, T: int, B: int) -> Lengths:
    """Check user ``lengths`` of a padded ``(T, B, ·)`` batch: ``(B,)`` integers in ``[1, T]``."""
    if not isinstance(lengths, Tensor):
        lengths = torch.as_tensor(lengths)
    if lengths.dim() != 1 or lengths.shape[0] != B:
        raise ValueError(f"lengths must have shape ({B},) (one per sequence), got "
                         f"{tuple(lengths.shape)}")
    if lengths.is_floating_point() or lengths.dtype == torch.bool:
        raise TypeError(f"lengths must be integers, got {lengths.dtype}")
    lengths = lengths.to(device="cpu", dtype=torch.long)
    if B and (int(lengths.min()) < 1 or int(lengths.max()) > T):
        raise ValueError(f"lengths must lie in [1, {T}] (the padded length), got min "
                         f"{int(lengths.min())}, max {int(lengths.max())}")
    order = torch.sort(lengths, descending=True, stable=True).indices
    steps = torch.arange(T).unsqueeze(1)
    return Lengths(lengths, order, (steps < lengths.unsqueeze(0)).sum(1))


def from_packed(seq: PackedSequence) -> tuple[Tensor, Lengths]:
    """The padded ``(T, B, F)`` batch in its own order, and its :class:`Lengths`."""
    padded, lengths = pad_packed_sequence(seq)
    B = padded.shape[1]
    order = seq.sorted_indices if seq.sorted_indices is not None else torch.arange(B)
    return padded, Lengths(lengths.cpu().long(), order.cpu().long(), seq.batch_sizes.cpu().long())


def to_packed(padded: Tensor, L: Lengths, like: PackedSequence) -> PackedSequence:
    """Pack a ``(T, B, F)`` output with the same order and batch sizes as the input ``like``."""
    order = L.sorted_indices.to(padded.device)
    data = pack_padded_sequence(padded.index_select(1, order), L.lengths[L.sorted_indices],
                                enforce_sorted=True).data
    return PackedSequence(data, like.batch_sizes, like.sorted_indices, like.unsorted_indices)


def reverse_within(x: Tensor, L: Lengths) -> Tensor:
    """Each sequence of ``x`` ``(T, B, ...)`` reversed within its own length (the padding stays
    at the end): ``y[t, b] = x[len_b - 1 - t, b]`` for ``t < len_b``. Its own inverse."""
    T, B = x.shape[:2]
    t = torch.arange(T).unsqueeze(1)
    lens = L.lengths.unsqueeze(0)
    idx = torch.where(t < lens, lens - 1 - t, t).to(x.device)          # (T, B)
    return x.gather(0, idx.view(T, B, *([1] * (x.dim() - 2))).expand_as(x))


def segments(batch_sizes: Tensor, tol: float) -> list[tuple[int, int, int]]:
    """Cut the steps into ``(t0, t1, b)``: steps ``t0 … t1-1`` run on the first ``b`` rows (in
    decreasing-length order), ``b`` the number running at ``t0``; a segment ends where fewer
    than ``tol · b`` rows are still running (``tol=1``: wherever a sequence ends)."""
    bs = batch_sizes.tolist()
    out, t0 = [], 0
    while t0 < len(bs):
        b, t1 = bs[t0], t0 + 1
        while t1 < len(bs) and bs[t1] >= tol * b and (tol < 1 or bs[t1] == b):
            t1 += 1
        out.append((t0, t1, b))
        t0 = t1
    return out


def freeze(xp: Tensor, alive: Tensor, mode: str) -> Tensor:
    """The input projection ``xp`` ``(T, B, G·H)`` with the steps after each sequence's end set
    so that the cell keeps its state (see the module docstring); LSTM and GRU only."""
    H = xp.shape[-1] // {"LSTM": 4, "GRU": 3}[mode]
    z = xp.new_zeros(H)
    const = torch.cat([-BIG + z, BIG + z, z, z] if mode == "LSTM" else [-BIG + z, BIG + z, z])
    return torch.where(alive.to(xp.device).unsqueeze(-1), xp, const)
