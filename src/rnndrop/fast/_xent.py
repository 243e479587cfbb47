"""The output layer's loss in one Function: ``F.cross_entropy(F.linear(h, W, b), y)``.

``linear_cross_entropy(h, weight, bias, targets, reduction)``, for ``h`` ``(N, H)``, ``weight``
``(V, H)``, ``bias`` ``(V,)`` or None, ``targets`` ``(N,)`` class indices:

    loss_n = logsumexp_v z_nv - z_n,y_n,     z = h Wᵀ + b,
    ∂loss_n/∂z = softmax(z_n) - onehot(y_n).

Autograd's version keeps the ``(N, V)`` logits, writes a log-softmax of the same size, then in
backward a zero-filled ``(N, V)`` gradient of the NLL with one entry per row, and a third
``(N, V)`` block for the log-softmax's backward: at PTB's 10,000 words these are four passes
over 16-28 MB blocks that no cache holds, and fresh blocks page-fault. Training always goes on
to backward, so here the forward turns the logits in place into ``softmax - onehot`` a few rows
at a time (cache-sized: the max, exp, sum and divide of a block run while it is in cache) and
saves that one block; backward is the two products and a column sum, scaled by the incoming
gradient. On CPU float32 the products go through oneDNN (as ``fast.linear``'s do); the weight
gradient as ``(hᵀ G)ᵀ``, whose oneDNN product reads ``G`` as it lies where ``Gᵀ h`` would copy
it transposed first. Elsewhere the same algorithm with torch ops (float64 for ``gradcheck``).

Under a CPU bfloat16 autocast (``train.precision = "bf16"``) the same Function runs the three
products in bfloat16, as autocast's ``F.linear`` would, and the softmax of each block in
float32, as autocast's ``F.cross_entropy`` would (its log-softmax runs in float32); ``G`` is
kept in bfloat16, the dtype autocast's own backward hands the linear layer. What it saves over
autocast's two calls is the float32 copy of the logits, the log-softmax and its backward.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from ._gemm import _ops, all_packed, transposed
from ._linear import linear

_REDUCTIONS = ("mean", "sum", "none")

# Bytes of logits per block of rows in the in-place softmax: the block's five passes then run
# in L2 (1 MB per core on the EPYC and Xeon machines this project measures on).
_BLOCK_BYTES = 1 << 19


def _product(a: Tensor, w: Tensor, bias: Optional[Tensor]) -> Tensor:
    """``a @ w.T (+ bias)``: oneDNN on CPU float32, ``F.linear`` otherwise."""
    if all_packed(a, w, bias):
        lp, _ = _ops()
        return lp(a, w, bias, "none", [], "")
    return F.linear(a, w, bias)


class _LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, h, weight, bias, targets, reduction, low):
        ctx.dtypes = (h.dtype, weight.dtype, None if bias is None else bias.dtype)
        if low is not None:             # autocast's products: bfloat16 operands and logits
            h, weight = h.to(low), weight.to(low)
            bias = None if bias is None else bias.to(low)
            z = F.linear(h, weight, bias)
        else:
            z = _product(h, weight, bias)                              # (N, V) logits
        N, V = z.shape
        rows = torch.arange(N, device=z.device)
        picked = z[rows, targets]                                      # z_n,y_n
        if low is not None:
            picked = picked.float()
        lse = torch.empty(N, dtype=picked.dtype, device=z.device)
        # rows per block: by the bytes of the dtype the softmax runs in (float32 under autocast)
        step = max(1, _BLOCK_BYTES // ((4 if low is not None else z.element_size()) * V))
        for i in range(0, N, step):
            blk = z[i:i + step]
            work = blk.float() if low is not None else blk             # float32 softmax
            m = work.amax(1, keepdim=True)
            work.sub_(m).exp_()
            s = work.sum(1, keepdim=True)
            work.div_(s)                                               # softmax, in place
            if low is not None:
                blk.copy_(work)
            lse[i:i + step] = s.log_().add_(m).squeeze(1)
        z[rows, targets] -= 1.0                                        # G = softmax - onehot
        loss = lse - picked
        ctx.save_for_backward(z, h, weight)
        ctx.has_bias, ctx.reduction, ctx.low = bias is not None, reduction, low
        if reduction == "mean":
            return loss.mean()
        return loss.sum() if reduction == "sum" else loss

    @staticmethod
    def backward(ctx, grad):
        G, h, w = ctx.saved_tensors
        if ctx.reduction == "none":
            G, scale = G * grad.unsqueeze(1).to(G.dtype), None
        else:
            # scale the (N, H), (V, H) and (V,) results, not the (N, V) block
            scale = grad / G.shape[0] if ctx.reduction == "mean" else grad
        dh = dw = db = None
        low = ctx.low is not None
        if ctx.needs_input_grad[0]:
            dh = torch.mm(G, w) if low else _product(G, w.t(), None)
        if ctx.needs_input_grad[1]:
            # bfloat16: torch.mm reads Gᵀ as it lies; float32: (hᵀ G)ᵀ = Gᵀ h through oneDNN
            dw = torch.mm(G.t(), h) if low else _product(transposed(h), G.t(), None).t()
        if ctx.has_bias and ctx.needs_input_grad[2]:
            db = G.float().sum(0) if low else G.sum(0)
        if low:    # each gradient in its input's dtype (float32 weights: float32 gradients)
            dh, dw, db = (None if t is None else t.to(d) for t, d in zip((dh, dw, db), ctx.dtypes))
        if scale is not None:
            dh, dw, db = (None if t is None else t.mul_(scale) for t in (dh, dw, db))
        return dh, dw, db, None, None, None


def linear_cross_entropy(h: Tensor, weight: Tensor, bias: Optional[Tensor], targets: Tensor,
                         reduction: str = "mean") -> Tensor:
    """``F.cross_entropy(F.linear(h, weight, bias), targets, reduction=reduction)`` for ``h``
    ``(N, H)``, ``targets`` ``(N,)``; the fused Function on CPU when a gradient is wanted and
    autocast is off or bfloat16 (module docstring), the two torch calls otherwise. Targets outside
    ``[0, V)`` raise ``IndexError`` as ``F.cross_entropy``'s do."""
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")
    if targets.is_floating_point() or targets.is_complex() or targets.dtype == torch.bool:
        raise TypeError(f"targets must be integer class indices, got {targets.dtype}")
    targets = targets.long()                 # int32/uint8 ids, as full_loss always took them
    wants_grad = torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in (h, weight, bias))
    fused = (wants_grad and h.dim() == 2 and targets.dim() == 1 and h.shape[0] > 0
             and h.device.type == "cpu")
    low = None
    if fused and torch.is_autocast_enabled("cpu"):
        # bfloat16 autocast (train.precision = "bf16"): float32 or bfloat16 operands
        ok = (torch.float32, torch.bfloat16)
        fused = (torch.get_autocast_dtype("cpu") == torch.bfloat16 and h.dtype in ok
                 and weight.dtype in ok and (bias is None or bias.dtype in ok))
        low = torch.bfloat16
    elif fused:
        fused = (h.dtype in (torch.float32, torch.float64) and weight.dtype == h.dtype
                 and (bias is None or bias.dtype == h.dtype))
    if not fused:
        return F.cross_entropy(linear(h, weight, bias), targets, reduction=reduction)
    if targets.shape[0] != h.shape[0]:
        raise ValueError(f"hidden has {h.shape[0]} rows but targets {targets.shape[0]}")
    V = weight.shape[0]
    lo, hi = (int(v) for v in torch.aminmax(targets))         # CPU only: no device sync
    if lo < 0 or hi >= V:
        raise IndexError(f"Target {lo if lo < 0 else hi} is out of bounds.")
    if low is None:
        return _LinearCrossEntropy.apply(h, weight, bias, targets, reduction, None)
    with torch.autocast("cpu", enabled=False):      # the Function casts for itself
        return _LinearCrossEntropy.apply(h, weight, bias, targets, reduction, low)
