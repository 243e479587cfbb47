"""GRU recurrence with per-sample recurrent dropout as one autograd Function.

Same scheme as ``_lstm``: forward saves ``S = [r, z, n, hn]`` (T, B, 4H) where
``hn = W_hn (h_{t-1} ∘ m) + b_hn`` (needed for ∂r), plus the output; backward produces the
gradient of ``xp`` and of the hidden-to-hidden pre-activations, and ``dW_hh``/``db_hh`` as one
product/sum after the loop. On CPU float32 the gate math of a step is one fused C call
(``_cext``), as for the LSTM.
"""
from __future__ import annotations

import functools
from typing import Optional

import torch
from torch import Tensor

from . import _cext
from ._gemm import Linear, use_packed
from ._lstm import (_c_first_input, _c_mask, _check, _ptr_steps, _rec_product, _same_kind,
                    _weight_grad)


def _forward_loop(xp, h0, w, b, m, packed):
    T, B, G = xp.shape
    H = G // 3
    S = xp.new_empty(T, B, 4 * H)
    out = xp.new_empty(T, B, H)
    untied = m is not None and m.dim() == 3
    if untied:
        wb = w.view(3, H, H).transpose(1, 2)
        bb = b.view(3, 1, H) if b is not None else None
    else:
        lin = Linear(w, B, packed)
    h = h0
    for t in range(T):
        s, x = S[t], xp[t]
        if untied:
            hm = h.unsqueeze(0) * m
            hh = torch.baddbmm(bb, hm, wb) if bb is not None else torch.bmm(hm, wb)  # (3, B, H)
            hr, hz, hn = hh[0], hh[1], hh[2]
            torch.add(x[:, :H], hr, out=s[:, :H])
            torch.add(x[:, H:2 * H], hz, out=s[:, H:2 * H])
        else:
            hh = lin(h if m is None else h * m)
            if b is not None:
                hh.add_(b)
            hn = hh[:, 2 * H:]
            torch.add(x[:, :2 * H], hh[:, :2 * H], out=s[:, :2 * H])
        rz = s[:, :2 * H]
        rz.sigmoid_()
        n = s[:, 2 * H:3 * H]
        torch.addcmul(x[:, 2 * H:], s[:, :H], hn, out=n)
        n.tanh_()
        s[:, 3 * H:].copy_(hn)
        ht = out[t]
        torch.sub(h, n, out=ht)
        ht.mul_(s[:, H:2 * H]).add_(n)  # h = n + z (h_prev - n)
        h = ht
    return S, out


def _backward_loop(dout, dhT, h0, w, m, S, out, packed, need_h0, need_w):
    T, B, G4 = S.shape
    H = G4 // 4
    G = 3 * H
    untied = m is not None and m.dim() == 3
    dxp = S.new_empty(T, B, G)
    dhh = S.new_empty(T, B, G)
    if T > 1 or need_h0:
        if untied:
            wb = w.view(3, H, H)
        else:
            lin_t = Linear(w.t(), B, packed, pack=False)
    one = S.new_ones(B, H)
    der = S.new_empty(B, 2 * H)
    dh = dout[T - 1] + dhT
    dh0 = None
    for t in range(T - 1, -1, -1):
        s = S[t]
        r, z, n, hn = s[:, :H], s[:, H:2 * H], s[:, 2 * H:3 * H], s[:, 3 * H:]
        h_prev = out[t - 1] if t > 0 else h0
        dx, dg = dxp[t], dhh[t]
        dnp = dx[:, 2 * H:]
        torch.addcmul(one, n, n, value=-1, out=dnp)
        dnp.mul_(torch.addcmul(dh, dh, z, value=-1))          # ∂/∂n_pre = dh (1-z) (1-n²)
        torch.sub(h_prev, n, out=dg[:, H:2 * H])
        dg[:, H:2 * H].mul_(dh)                               # ∂/∂z = dh (h_prev - n)
        torch.mul(dnp, hn, out=dg[:, :H])                     # ∂/∂r = ∂n_pre hn
        torch.addcmul(s[:, :2 * H], s[:, :2 * H], s[:, :2 * H], value=-1, out=der)
        dg[:, :2 * H].mul_(der)
        torch.mul(dnp, r, out=dg[:, 2 * H:])                  # ∂/∂hn = ∂n_pre r
        dx[:, :2 * H].copy_(dg[:, :2 * H])
        if t > 0 or need_h0:
            if untied:
                rec = (torch.bmm(dg.view(B, 3, H).transpose(0, 1), wb) * m).sum(0)
            else:
                rec = lin_t.mul(dg, m)
            rec.addcmul_(dh, z)                               # carried h: dh z
            if t > 0:
                dh = rec.add_(dout[t - 1])
            else:
                dh0 = rec
    dw = _weight_grad(dhh, h0, out, m, 3, packed) if need_w else None
    return dxp, dh0, dw, dhh


def _forward_loop_c(lib, xp, h0, w, b, m, packed):
    """``_forward_loop`` with the gate math of each step in one fused C call (``_cext``)."""
    T, B, G = xp.shape
    H = G // 3
    n = B * H
    mode, m = _c_mask(m)
    S = xp.new_empty(T, B, 4 * H)
    out = xp.new_empty(T, B, H)
    h0 = h0.contiguous()
    hm, buf = _c_first_input(h0, m, mode)
    if mode == 2:
        wb = w.view(3, H, H).transpose(1, 2)
    else:
        lin = Linear(w, B, packed)
    b = b.contiguous() if b is not None else None
    bptr = b.data_ptr() if b is not None else None
    s0, ss = _ptr_steps(S)
    o0, so = _ptr_steps(out)
    x0, sx = _ptr_steps(xp)
    mp = m.data_ptr() if mode else None
    bp = buf.data_ptr() if mode else None
    hp = h0.data_ptr()
    for t in range(T):
        if mode == 2:
            pre = torch.bmm(hm, wb)                              # (3, B, H); bias added in C
            s_pg, s_pb = n, H
        else:
            pre = lin(hm)                                        # (B, 3H); bias added in C
            s_pg, s_pb = H, pre.stride(0)
        lib.gru_fwd_step(pre.data_ptr(), s_pg, s_pb, bptr, x0 + t * sx, hp, s0 + t * ss,
                         o0 + t * so, mp, bp, B, H, mode)
        hp = o0 + t * so
        hm = buf if mode else out[t]
    return S, out


def _backward_loop_c(lib, dout, dhT, h0, w, m, S, out, packed, need_h0, need_w):
    T, B, G4 = S.shape
    H = G4 // 4
    mode, m = _c_mask(m)
    dout = dout.contiguous()
    dxp = S.new_empty(T, B, 3 * H)
    dhh = S.new_empty(T, B, 3 * H)
    dcar = S.new_zeros(B, H)
    r, r_mode = dhT.contiguous(), 0
    rec = _rec_product(w, m, B, 3, packed)
    s0, ss = _ptr_steps(S)
    o0, so = _ptr_steps(out)
    d0, sd = _ptr_steps(dout)
    x0, sx = _ptr_steps(dxp)
    g0, sg = _ptr_steps(dhh)
    mp = m.data_ptr() if mode else None
    h0c = h0.contiguous()
    for t in range(T - 1, -1, -1):
        hp = o0 + (t - 1) * so if t > 0 else h0c.data_ptr()
        lib.gru_bwd_step(s0 + t * ss, hp, d0 + t * sd, r.data_ptr(), mp, dcar.data_ptr(),
                         x0 + t * sx, g0 + t * sg, B, H, r_mode)
        if t > 0 or need_h0:
            r, r_mode = rec(dhh[t])
    dh0 = None
    if need_h0:
        dh0 = ((r * m).sum(0) if mode == 2 else r) + dcar
    dw = _weight_grad(dhh, h0, out, m, 3, packed) if need_w else None
    return dxp, dh0, dw, dhh


class GRURecurrence(torch.autograd.Function):
    @staticmethod
    def forward(ctx, xp, h0, weight_hh, bias_hh, mask_h):
        xp = xp.contiguous()
        packed = use_packed(xp) and use_packed(weight_hh)
        lib = _cext.kernels() if xp.dtype == torch.float32 and xp.device.type == "cpu" else None
        loop = _forward_loop if lib is None else functools.partial(_forward_loop_c, lib)
        S, out = loop(xp, h0, weight_hh, bias_hh, mask_h, packed)
        ctx.packed, ctx.lib = packed, lib
        ctx.has_bias = bias_hh is not None
        ctx.save_for_backward(h0, weight_hh, mask_h, S, out)
        return out, (out[-1] if xp.shape[0] else h0).clone()

    @staticmethod
    def backward(ctx, dout, dhT):
        h0, w, m, S, out = ctx.saved_tensors
        need_xp, need_h0, need_w, need_b = ctx.needs_input_grad[:4]
        T, B = S.shape[:2]
        H = w.shape[1]
        if T == 0:
            return (S.new_zeros(0, B, 3 * H) if need_xp else None, dhT,
                    torch.zeros_like(w) if need_w else None,
                    w.new_zeros(3 * H) if need_b else None, None)
        loop = (_backward_loop if ctx.lib is None
                else functools.partial(_backward_loop_c, ctx.lib))
        dxp, dh0, dw, dhh = loop(dout, dhT, h0, w, m, S, out, ctx.packed, need_h0, need_w)
        db = dhh.sum((0, 1)) if need_b else None
        return (dxp if need_xp else None, dh0, dw, db, None)


def gru_recurrence(xp: Tensor, h0: Tensor, weight_hh: Tensor, bias_hh: Optional[Tensor],
                   mask_h: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
    """Same contract as ``rnndrop._recurrence.gru_recurrence`` (the mask gets no gradient)."""
    _check(xp, h0, weight_hh, mask_h, 3)
    if not _same_kind(xp, h0, weight_hh, bias_hh, mask_h):
        from .._recurrence import gru_recurrence as ref
        return ref(xp, h0, weight_hh, bias_hh, mask_h)
    return GRURecurrence.apply(xp, h0, weight_hh, bias_hh, mask_h)
