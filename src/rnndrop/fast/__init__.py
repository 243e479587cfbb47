"""Fast recurrences for per-sample recurrent dropout (variational LSTM/GRU).

Drop-in replacements for the autograd references in ``rnndrop._recurrence`` (same signatures,
same results up to float rounding), each one ``torch.autograd.Function`` with a hand-written
backward::

    lstm_recurrence(xp, h0, c0, weight_hh, mask_h=None) -> (out, h_T, c_T)
    gru_recurrence(xp, h0, weight_hh, bias_hh, mask_h=None) -> (out, h_T)
    linear(x, weight, bias=None)          # = F.linear, faster fwd+bwd on CPU float32

``xp`` is the input projection for all steps (``(T, B, G*H)``), ``mask_h`` ``None``, ``(B, H)``
(tied) or ``(G, B, H)`` (untied), already scaled by 1/(1-p). Masks are treated as constants
(no gradient). ``available(device)`` says whether this backend should be used on ``device``.
Use ``linear`` for the input projection that feeds ``xp`` (``F.linear``/``x @ w.T`` leave the
two large backward products to ``torch.mm``, measurably slower on CPU).

What runs where (chosen per call, all falling back to plain torch ops):

- CPU float32: per-step products through oneDNN (``torch.ops.mkldnn``, probed once, see
  ``_gemm``), the gate math of each step in one fused C call (``_cext``: compiled on first use
  in well under a second into ``$RNNDROP_FAST_BUILD_DIR`` or ``~/.cache/rnndrop/fast``; with no
  C compiler, one warning and torch ops). LSTM and GRU alike.
- CUDA: LSTM gate math in one Triton kernel per step (``_triton``; when Triton imports), the
  whole forward and backward loops replayed as CUDA graphs (``_graphs``: one graph per loop
  shape, which keeps static copies of that loop's inputs and outputs between calls; see
  ``set_cuda_graphs``/``clear_cuda_graphs``). GRU: plain torch ops.
- anything else (float64, other devices): the same algorithm with plain torch ops.

Environment switches: ``RNNDROP_FAST_NO_MKLDNN=1`` (torch.mm instead of oneDNN),
``RNNDROP_FAST_CEXT=0`` (no C kernels), ``RNNDROP_FAST_TRITON=0`` (no Triton),
``RNNDROP_FAST_CUDA_GRAPHS=0`` (no CUDA graphs).
"""
from __future__ import annotations

import torch

from . import _graphs
from ._gemm import packed_ok
from ._gru import gru_recurrence
from ._linear import linear
from ._lstm import lstm_recurrence

__all__ = ["available", "lstm_recurrence", "gru_recurrence", "linear", "packed_ok",
           "set_cuda_graphs", "cuda_graphs_enabled", "clear_cuda_graphs"]


def set_cuda_graphs(flag: bool) -> None:
    """Replay the CUDA LSTM loops as CUDA graphs (default on; env RNNDROP_FAST_CUDA_GRAPHS=0)."""
    _graphs.set_enabled(flag)


def cuda_graphs_enabled() -> bool:
    return _graphs.enabled()


def clear_cuda_graphs() -> None:
    """Free the cached CUDA graphs (one per loop shape) and their static buffers."""
    _graphs.clear()


def available(device) -> bool:
    """True where the fast recurrences run (CPU always; CUDA when a GPU is present)."""
    dev = torch.device(device)
    if dev.type == "cpu":
        return True
    if dev.type == "cuda":
        return torch.cuda.is_available()
    return False
