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

from ._gemm import _ops, all_packed, mm_tn


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
    if x.dim() >= 2 and x.numel() > 0 and all_packed(x, weight, bias):
        return _Linear.apply(x, weight, bias)
    return F.linear(x, weight, bias)


class _UntiedLinear(torch.autograd.Function):
    """``untied_linear`` through oneDNN: one product per gate block forward, and per block
    ``dx_g = dxp_g W_g`` (summed with its mask) and ``dW_g = dxp_gᵀ (x ∘ z_g)`` backward. Saves
    ``x`` and the masks and rebuilds the masked copies in backward, where the einsum keeps all
    G of them. The masks get no gradient (a mask that needs one takes the einsum)."""

    @staticmethod
    def forward(ctx, x, masks, weight, bias):
        lp, _ = _ops()
        G, T, B, I = masks.shape[0], *x.shape
        H = weight.shape[0] // G
        xg = (x.unsqueeze(0) * masks).reshape(G, T * B, I)
        outs = [lp(xg[g], weight[g * H:(g + 1) * H],
                   None if bias is None else bias[g * H:(g + 1) * H], "none", [], "")
                for g in range(G)]
        ctx.save_for_backward(x, masks, weight)
        ctx.has_bias = bias is not None
        return torch.cat(outs, dim=1).view(T, B, G * H)

    @staticmethod
    def backward(ctx, gy):
        x, masks, w = ctx.saved_tensors
        lp, _ = _ops()
        G, T, B, I = masks.shape[0], *x.shape
        H = w.shape[0] // G
        g2 = gy.reshape(T * B, G * H)
        dx = dw = db = None
        if ctx.needs_input_grad[0]:
            for g in range(G):
                part = lp(g2[:, g * H:(g + 1) * H], w[g * H:(g + 1) * H].t(), None, "none", [], "")
                part = part.view(T, B, I)
                if dx is None:
                    dx = part.mul_(masks[g])
                else:
                    dx.addcmul_(part, masks[g])
        if ctx.needs_input_grad[2]:
            xg = (x.unsqueeze(0) * masks).reshape(G, T * B, I)
            dw = torch.cat([mm_tn(g2[:, g * H:(g + 1) * H], xg[g], True) for g in range(G)])
        if ctx.has_bias and ctx.needs_input_grad[3]:
            db = g2.sum(0)
        return dx, None, dw, db


def untied_linear(x: Tensor, masks: Tensor, weight: Tensor,
                  bias: Optional[Tensor] = None) -> Tensor:
    """Input projection with untied input masks: gate block ``g`` of ``xp`` is
    ``(x ∘ z_g) W_ih,gᵀ (+ its bias)``, for ``x`` ``(T, B, I)``, ``masks`` ``(G, 1, B, I)``
    (``z_g``: one mask per gate and sequence, reused at every step) and ``weight`` ``(G*H, I)``;
    returns ``(T, B, G*H)``. On CPU float32 one oneDNN product per gate block (``_UntiedLinear``);
    elsewhere, or for masks that need a gradient, one einsum over the G masked copies."""
    if (x.dim() == 3 and x.numel() > 0 and not masks.requires_grad
            and all_packed(x, masks, weight, bias)):
        return _UntiedLinear.apply(x, masks, weight, bias)
    G = masks.shape[0]
    T, B, _ = x.shape
    GH = weight.shape[0]
    xg = x.unsqueeze(0) * masks                                     # (G, T, B, I)
    xp = torch.einsum("gtbi,ghi->tbgh", xg, weight.view(G, GH // G, -1)).reshape(T, B, GH)
    return xp if bias is None else xp + bias
