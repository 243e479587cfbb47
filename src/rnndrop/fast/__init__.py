"""Fast recurrences for per-sample recurrent dropout (variational LSTM/GRU).

Drop-in replacements for the autograd references in ``rnndrop._recurrence`` (same signatures,
same results up to float rounding), each one ``torch.autograd.Function`` with a hand-written
backward, and the input projections that feed them::

    lstm_recurrence(xp, h0, c0, weight_hh, mask_h=None) -> (out, h_T, c_T)
    gru_recurrence(xp, h0, weight_hh, bias_hh, mask_h=None) -> (out, h_T)
    select(cell, *args) -> the recurrence to call with args (fast or reference; see below)
    linear(x, weight, bias=None)                 # = F.linear, faster fwd+bwd on CPU float32
    untied_linear(x, masks, weight, bias=None)   # one input mask per gate (untied dropout)
    linear_cross_entropy(h, weight, bias, targets, reduction)   # the output layer's loss, fused

``xp`` is the input projection for all steps (``(T, B, G*H)``), ``mask_h`` ``None``, ``(B, H)``
(tied) or ``(G, B, H)`` (untied), already scaled by 1/(1-p); its layout (``MaskMode``) is read
once at the entry of each recurrence and passed down. A mask gets a gradient only when it
requires one (learned Concrete rates; ``_common.mask_grad``). ``available(device)`` says whether this backend runs on ``device``. Use ``linear``
for the input projection that feeds ``xp`` (``F.linear``/``x @ w.T`` leave the two large
backward products to ``torch.mm``, measurably slower on CPU).

What runs where is chosen once per call, by ``select`` only (all falling back to plain torch ops):

- CPU float32: the gate math of each step in one fused C call (``_cext``: compiled on first
  use in well under a second into ``$RNNDROP_FAST_BUILD_DIR`` or ``~/.cache/rnndrop/fast``;
  with no C compiler, one warning and torch ops); the per-step recurrent products in a
  small-batch C kernel too where it was built for AVX-512 and the batch is at most 64
  (``_gemm.SmallGemm``), else through oneDNN (``torch.ops.mkldnn``, probed once, see
  ``_gemm``); the large products (input projection, weight gradients) through oneDNN. LSTM
  and GRU alike.
- CUDA: LSTM gate math in one Triton kernel per step (``_triton``; when Triton imports), the
  whole forward and backward loops replayed as CUDA graphs (``_graphs``: one graph per loop
  shape, which keeps static copies of that loop's inputs and outputs between calls; see
  ``set_cuda_graphs``/``clear_cuda_graphs``). GRU: plain torch ops.
- anything else (float64, other devices): the same algorithm with plain torch ops.
- the reference loop of ``rnndrop._recurrence``: Elman RNN, mixed dtypes or devices (the errors
  of plain torch ops, no silent cast), devices where ``available`` is False.
- zoneout (weights after ``mask_h``, see ``rnndrop._recurrence``): on CPU the hand-written loops
  with zoneout (``_lstm``/``_gru`` ``*ZoneoutRecurrence``: C kernels ``*_step_z`` on float32,
  torch ops otherwise); on CUDA the reference loop (no Triton zoneout, and the hand-written
  loops have not been run on a GPU). A recurrent mask
  that requires grad (learned rates): on CPU the same loops, which then return its gradient
  too; elsewhere the reference loop.

Environment switches (read at every call): ``RNNDROP_FAST_NO_MKLDNN=1`` (torch.mm instead of
oneDNN), ``RNNDROP_FAST_CEXT=0`` (no C kernels), ``RNNDROP_FAST_CGEMM=0`` (the per-step products
not in C; ``=1``: in C on any build), ``RNNDROP_FAST_TRITON=0`` (no Triton),
``RNNDROP_FAST_CUDA_GRAPHS=0`` (no CUDA graphs, read at import; ``set_cuda_graphs`` after).
"""
from __future__ import annotations

import functools
from typing import Callable, Optional

import torch
from torch import Tensor

from .. import _recurrence
from . import _cext, _graphs, _gru, _lstm, _triton
from ._common import Impl
from ._gemm import packed_ok, use_packed
from ._linear import linear, untied_linear
from ._xent import linear_cross_entropy

__all__ = ["available", "select", "lstm_recurrence", "gru_recurrence", "linear", "untied_linear",
           "linear_cross_entropy",
           "packed_ok", "set_cuda_graphs", "cuda_graphs_enabled", "clear_cuda_graphs"]

_FAST = {"LSTM": _lstm, "GRU": _gru}
_CELLS = ("LSTM", "GRU", "RNN")
# the reference's positional arguments before the zoneout weights (the RNN's activation counts)
_BASE_ARGS = {"LSTM": 5, "GRU": 5, "RNN": 5}


def available(device) -> bool:
    """True where the fast recurrences run (CPU always; CUDA when a GPU is present)."""
    dev = torch.device(device)
    if dev.type == "cpu":
        return True
    if dev.type == "cuda":
        return torch.cuda.is_available()
    return False


def select(cell: str, *args) -> Callable:
    """The recurrence for one call of a ``cell`` ("LSTM", "GRU" or "RNN") layer; call it with
    ``args``, which are the arguments of the reference in ``rnndrop._recurrence``
    (``(xp, h0, c0, weight_hh, mask_h)``, ``(xp, h0, weight_hh, bias_hh, mask_h)``,
    ``(xp, h0, weight_hh, activation, mask_h)``). The one place that picks an implementation:

    - the reference loop for the Elman RNN (no fast loop), for mixed dtypes or devices among the
      tensors of ``args``, and where ``available(device)`` is False;
    - LSTM with Triton usable for these tensors (``_triton.use_triton``): the Triton loops,
      replayed as CUDA graphs on CUDA when enabled;
    - otherwise (LSTM, GRU) the hand-written loops, with products through oneDNN where it serves
      (``_gemm.use_packed``: CPU float32) and the gate math in the fused C kernels on CPU
      float32 when they build (``_cext.kernels``), in torch ops elsewhere.
    - a recurrent mask that requires grad (learned Concrete rates): on CPU the loops below,
      whose backward then also gives the mask its gradient (one product after the loop,
      ``_common.mask_grad``); elsewhere the reference loop (untested on a GPU);
    - with zoneout weights among ``args`` (after ``mask_h``): on CPU the hand-written loops
      with zoneout (C kernels on float32 when they build, else torch ops; products as above);
      on CUDA and elsewhere the reference loop (the Triton kernels have no zoneout, and the
      hand-written loops have not been run on a GPU here).
    """
    if cell not in _CELLS:
        raise ValueError(f"cell must be one of {_CELLS}, got {cell!r}")
    tensors = [a for a in args if isinstance(a, Tensor)]
    xp = tensors[0]
    same_kind = all(t.dtype == xp.dtype and t.device == xp.device for t in tensors)
    zoneout = any(a is not None for a in args[_BASE_ARGS[cell]:])
    mask = args[_BASE_ARGS[cell] - 1]
    mask_grad = isinstance(mask, Tensor) and mask.requires_grad
    if (cell == "RNN" or not same_kind or not available(xp.device)
            or ((zoneout or mask_grad) and xp.device.type != "cpu")):
        # looked up at each call, so that a patched reference is the one that runs
        return getattr(_recurrence, f"{cell.lower()}_recurrence")
    if zoneout:   # no Triton kernel has zoneout; the C kernels do (CPU float32)
        cpu32 = xp.dtype == torch.float32 and xp.device.type == "cpu"
        return functools.partial(_FAST[cell].recurrence,
                                 Impl(packed=use_packed(xp), lib=_cext.kernels() if cpu32 else None))
    if cell == "LSTM" and _triton.use_triton(xp):
        impl = Impl(triton=True, graphs=xp.is_cuda and _graphs.enabled())
    else:
        cpu32 = xp.dtype == torch.float32 and xp.device.type == "cpu"
        impl = Impl(packed=use_packed(xp), lib=_cext.kernels() if cpu32 else None)
    return functools.partial(_FAST[cell].recurrence, impl)


def lstm_recurrence(xp: Tensor, h0: Tensor, c0: Tensor, weight_hh: Tensor,
                    mask_h: Optional[Tensor] = None, zoneout_h: Optional[Tensor] = None,
                    zoneout_c: Optional[Tensor] = None) -> tuple[Tensor, Tensor, Tensor]:
    """Same contract as ``rnndrop._recurrence.lstm_recurrence`` (the masks get no gradient)."""
    args = (xp, h0, c0, weight_hh, mask_h)
    if zoneout_h is not None or zoneout_c is not None:
        args += (zoneout_h, zoneout_c)
    return select("LSTM", *args)(*args)


def gru_recurrence(xp: Tensor, h0: Tensor, weight_hh: Tensor, bias_hh: Optional[Tensor],
                   mask_h: Optional[Tensor] = None,
                   zoneout_h: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
    """Same contract as ``rnndrop._recurrence.gru_recurrence`` (the masks get no gradient)."""
    args = (xp, h0, weight_hh, bias_hh, mask_h)
    if zoneout_h is not None:
        args += (zoneout_h,)
    return select("GRU", *args)(*args)


def set_cuda_graphs(flag: bool) -> None:
    """Replay the CUDA LSTM loops as CUDA graphs (default on; env RNNDROP_FAST_CUDA_GRAPHS=0)."""
    _graphs.set_enabled(flag)


def cuda_graphs_enabled() -> bool:
    return _graphs.enabled()


def clear_cuda_graphs() -> None:
    """Free the cached CUDA graphs (one per loop shape) and their static buffers."""
    _graphs.clear()
