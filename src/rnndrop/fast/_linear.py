"""The input projection of a recurrent layer, ``xp = x W_ihᵀ + b`` for all steps at once.

``linear(x, weight, bias)``: ``torch.nn.functional.linear`` with oneDNN products on CPU.
``untied_linear(x, masks, weight, bias)``: the same with one input mask per gate (untied dropout).

The projection is three large products per training step: forward, ``dx = dxp W_ih`` and
``dW_ih = dxpᵀ x``. On CPU float32 ``torch.mm`` (MKL) runs them well below oneDNN's matmul here,
mostly for the transposed ("TN") weight-gradient product; ``linear``'s Function routes all three
through oneDNN, handing it transposed views where it reads strides (the weight operands).
Elsewhere it is ``F.linear``.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from ._gemm import _ops, mm_tn, use_packed


class _Linear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias):
        lp, _ = _ops()
        x2 = x.reshape(-1, x.shape[-1])
        y = lp(x2, weight, bias, "none", [], "")
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return y.view(*x.shape[:-1], weight.shape[0])

    @staticmethod
    def backward(ctx, gy):
        x, w = ctx.saved_tensors
        lp, _ = _ops()
        g2 = gy.reshape(-1, gy.shape[-1])
        dx = dw = db = None
        if ctx.needs_input_grad[0]:
            dx = lp(g2, w.t(), None, "none", [], "").view(x.shape)
        if ctx.needs_input_grad[1]:
            dw = mm_tn(g2, x.reshape(-1, x.shape[-1]), True)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            db = g2.sum(0)
        return dx, dw, db


def linear(x: Tensor, weight: Tensor, bias: Optional[Tensor] = None) -> Tensor:
    """Same as ``F.linear(x, weight, bias)``; faster forward+backward on CPU float32."""
    if (x.dim() >= 2 and x.numel() > 0 and use_packed(x) and use_packed(weight)
            and (bias is None or use_packed(bias))):
        return _Linear.apply(x, weight, bias)
    return F.linear(x, weight, bias)


def untied_linear(x: Tensor, masks: Tensor, weight: Tensor,
                  bias: Optional[Tensor] = None) -> Tensor:
    """Input projection with untied input masks: gate block ``g`` of ``xp`` is
    ``(x ∘ z_g) W_ih,gᵀ (+ its bias)``, for ``x`` ``(T, B, I)``, ``masks`` ``(G, 1, B, I)``
    (``z_g``: one mask per gate and sequence, reused at every step) and ``weight`` ``(G*H, I)``;
    returns ``(T, B, G*H)``. One einsum over the G masked copies (plain torch ops)."""
    G = masks.shape[0]
    T, B, _ = x.shape
    GH = weight.shape[0]
    xg = x.unsqueeze(0) * masks                                     # (G, T, B, I)
    xp = torch.einsum("gtbi,ghi->tbgh", xg, weight.view(G, GH // G, -1)).reshape(T, B, GH)
    return xp if bias is None else xp + bias
