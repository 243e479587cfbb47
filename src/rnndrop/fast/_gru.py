"""GRU recurrence with per-sample recurrent dropout as one autograd Function.

Same scheme as ``_lstm``: forward saves ``S = [r, z, n, hn]`` (T, B, 4H) where
``hn = W_hn (h_{t-1} ∘ m) + b_hn`` (needed for ∂r), plus the output; backward produces the
gradient of ``xp`` and of the hidden-to-hidden pre-activations, and ``dW_hh``/``db_hh`` as one
product/sum after the loop. How a call runs is fixed by ``rnndrop.fast.select`` (an ``Impl``):
products through oneDNN or ``torch.mm``, on CPU float32 the gate math of a step in one fused C
call (``_cext``), as for the LSTM; no Triton path (on CUDA: torch ops).
"""
from __future__ import annotations

import functools
from typing import Optional

import torch
from torch import Tensor

from .._recurrence import zone_at
from ._common import (Impl, MaskMode, check, forward_steps, gate_ptrs, mask_grad, ptr_steps,
                      rec_grad, reverse_steps, weight_grad)
from ._gemm import Linear


def _forward_loop(xp, h0, w, b, m, mode, packed):
    """The torch-op recurrence: ``S`` (T, B, 4H: r, z, n and the recurrent n-term) and the
    outputs (T, B, H); the zoneout loop with no zoneout (one loop body for both)."""
    return _forward_loop_zoneout(xp, h0, w, b, m, mode, packed, None)


def _backward_loop(dout, dhT, h0, w, m, mode, S, out, packed, need_h0, need_w):
    T, B, G4 = S.shape
    H = G4 // 4
    G = 3 * H
    dxp = S.new_empty(T, B, G)
    dhh = S.new_empty(T, B, G)
    one = S.new_ones(B, H)
    der = S.new_empty(B, 2 * H)
    carry = None  # (dh_{t+1}, z_{t+1}): h_{t+1} = n + z (h_t - n) carries dh z past W_hh

    def step(t, r_next, r_mode):  # r, z, n below are the gates
        nonlocal carry
        dh = rec_grad(r_next, r_mode, m)
        if carry is not None:
            dh = torch.addcmul(dh, *carry)
        dh = dh + dout[t]
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
        carry = (dh, z)

    dh0 = reverse_steps(step, dhh, dhT, w, m, mode, packed, need_h0)
    dh0 = torch.addcmul(dh0, *carry) if need_h0 else None
    dw = weight_grad(dhh, h0, out, m, mode, packed) if need_w else None
    return dxp, dh0, dw, dhh


def _forward_loop_zoneout(xp, h0, w, b, m, mode, packed, zh):
    """``_forward_loop`` with zoneout: ``h_t = h̃_t + d_t (h_{t-1} - h̃_t)``, ``zh`` None,
    ``(B, H)`` or ``(T, B, H)`` (see ``rnndrop._recurrence``). ``S`` as without zoneout (the
    backward needs no ``h̃``: it is rebuilt from the gates and ``h_{t-1}``)."""
    T, B, G = xp.shape
    H = G // 3
    S = xp.new_empty(T, B, 4 * H)
    out = xp.new_empty(T, B, H)
    untied = mode == MaskMode.UNTIED
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
            hh = torch.baddbmm(bb, hm, wb) if bb is not None else torch.bmm(hm, wb)
            hr, hz, hn = hh[0], hh[1], hh[2]
            torch.add(x[:, :H], hr, out=s[:, :H])
            torch.add(x[:, H:2 * H], hz, out=s[:, H:2 * H])
        else:
            hh = lin(h if mode == MaskMode.NONE else h * m)
            if b is not None:
                hh.add_(b)
            hn = hh[:, 2 * H:]
            torch.add(x[:, :2 * H], hh[:, :2 * H], out=s[:, :2 * H])
        s[:, :2 * H].sigmoid_()
        n = s[:, 2 * H:3 * H]
        torch.addcmul(x[:, 2 * H:], s[:, :H], hn, out=n)
        n.tanh_()
        s[:, 3 * H:].copy_(hn)
        ht = out[t]
        torch.sub(h, n, out=ht)
        ht.mul_(s[:, H:2 * H]).add_(n)                         # h̃ = n + z (h_prev - n)
        if zh is not None:
            ht.copy_(torch.lerp(ht, h, zone_at(zh, t)))     # h = h̃ + d (h_prev - h̃), exact at d = 0, 1
        h = ht
    return S, out


def _backward_loop_zoneout(dout, dhT, h0, w, m, mode, S, out, packed, need_h0, need_w, zh):
    """The backward of ``_forward_loop_zoneout``: ``∂h̃_t = (1 - d_t) ∂h_t`` drives the gates;
    ``∂h_{t-1}`` gets ``d_t ∂h_t + z_t ∂h̃_t`` past ``W_hh`` (the carried term)."""
    T, B, G4 = S.shape
    H = G4 // 4
    G = 3 * H
    dxp = S.new_empty(T, B, G)
    dhh = S.new_empty(T, B, G)
    one = S.new_ones(B, H)
    der = S.new_empty(B, 2 * H)
    carry = None  # the part of ∂h_t that skips W_hh at step t+1

    def step(t, r_next, r_mode):
        nonlocal carry
        dh = rec_grad(r_next, r_mode, m)
        if carry is not None:
            dh = dh + carry
        dh = dh + dout[t]
        s = S[t]
        r, z, n, hn = s[:, :H], s[:, H:2 * H], s[:, 2 * H:3 * H], s[:, 3 * H:]
        skip = None
        if zh is not None:
            skip = dh * zone_at(zh, t)
            dh = dh - skip                                     # ∂h̃
        h_prev = out[t - 1] if t > 0 else h0
        dx, dg = dxp[t], dhh[t]
        dnp = dx[:, 2 * H:]
        torch.addcmul(one, n, n, value=-1, out=dnp)
        dnp.mul_(torch.addcmul(dh, dh, z, value=-1))
        torch.sub(h_prev, n, out=dg[:, H:2 * H])
        dg[:, H:2 * H].mul_(dh)
        torch.mul(dnp, hn, out=dg[:, :H])
        torch.addcmul(s[:, :2 * H], s[:, :2 * H], s[:, :2 * H], value=-1, out=der)
        dg[:, :2 * H].mul_(der)
        torch.mul(dnp, r, out=dg[:, 2 * H:])
        dx[:, :2 * H].copy_(dg[:, :2 * H])
        carry = dh * z if skip is None else torch.addcmul(skip, dh, z)

    dh0 = reverse_steps(step, dhh, dhT, w, m, mode, packed, need_h0)
    dh0 = dh0 + carry if need_h0 else None
    dw = weight_grad(dhh, h0, out, m, mode, packed) if need_w else None
    return dxp, dh0, dw, dhh


def _zone_ptr(z):
    """``t -> address`` of step t's ``(B, H)`` zoneout weights (``z`` contiguous, ``(B, H)`` or
    ``(T, B, H)``)."""
    if z.dim() == 2:
        return lambda t: z.data_ptr()
    z0, sz = ptr_steps(z)
    return lambda t: z0 + t * sz


def _forward_loop_zoneout_c(lib, xp, h0, w, b, m, mode, packed, zh):
    """``_forward_loop_zoneout`` with each step in one fused C call (``gru_fwd_step_z``)."""
    T, B, G = xp.shape
    H = G // 3
    S = xp.new_empty(T, B, 4 * H)
    out = xp.new_empty(T, B, H)
    h0 = h0.contiguous()
    b = b.contiguous() if b is not None else None
    bptr = b.data_ptr() if b is not None else None
    s0, ss = ptr_steps(S)
    o0, so = ptr_steps(out)
    x0, sx = ptr_steps(xp)
    mp = m.data_ptr() if mode != MaskMode.NONE else None
    zp = _zone_ptr(zh)

    def step(t, pre, s_pb, hm, add_x):
        hp = o0 + (t - 1) * so if t > 0 else h0.data_ptr()
        lib.gru_fwd_step_z(pre, s_pb, bptr, x0 + t * sx, hp, zp(t), s0 + t * ss,
                           o0 + t * so, mp, hm, B, H, mode)

    forward_steps(step, out, h0, w, m, mode, packed, lib=lib)
    return S, out


def _backward_loop_zoneout_c(lib, dout, dhT, h0, w, m, mode, S, out, packed, need_h0, need_w,
                             zh):
    """``_backward_loop_zoneout`` with each step in one fused C call (``gru_bwd_step_z``)."""
    T, B, G4 = S.shape
    H = G4 // 4
    dout = dout.contiguous()
    dxp = S.new_empty(T, B, 3 * H)
    dhh = S.new_empty(T, B, 3 * H)
    dcar = S.new_zeros(B, H)
    s0, ss = ptr_steps(S)
    o0, so = ptr_steps(out)
    d0, sd = ptr_steps(dout)
    x0, sx = ptr_steps(dxp)
    g0, sg = ptr_steps(dhh)
    mp = m.data_ptr() if mode != MaskMode.NONE else None
    h0c = h0.contiguous()
    zp = _zone_ptr(zh)

    def step(t, r, r_mode):
        hp = o0 + (t - 1) * so if t > 0 else h0c.data_ptr()
        lib.gru_bwd_step_z(s0 + t * ss, hp, d0 + t * sd, gate_ptrs(r), mp, zp(t),
                           dcar.data_ptr(), x0 + t * sx, g0 + t * sg, B, H, r_mode)

    dh0 = reverse_steps(step, dhh, dhT, w, m, mode, packed, need_h0, lib=lib)
    dh0 = dh0 + dcar if need_h0 else None
    dw = weight_grad(dhh, h0, out, m, mode, packed) if need_w else None
    return dxp, dh0, dw, dhh


def _forward_loop_c(lib, xp, h0, w, b, m, mode, packed):
    """``_forward_loop`` with the gate math of each step in one fused C call (``_cext``)."""
    T, B, G = xp.shape
    H = G // 3
    S = xp.new_empty(T, B, 4 * H)
    out = xp.new_empty(T, B, H)
    h0 = h0.contiguous()
    b = b.contiguous() if b is not None else None
    bptr = b.data_ptr() if b is not None else None
    s0, ss = ptr_steps(S)
    o0, so = ptr_steps(out)
    x0, sx = ptr_steps(xp)
    mp = m.data_ptr() if mode != MaskMode.NONE else None

    def step(t, pre, s_pb, hm, add_x):  # xp and the bias are added in C
        hp = o0 + (t - 1) * so if t > 0 else h0.data_ptr()
        lib.gru_fwd_step(pre, s_pb, bptr, x0 + t * sx, hp, s0 + t * ss, o0 + t * so, mp,
                         hm, B, H, mode)

    forward_steps(step, out, h0, w, m, mode, packed, lib=lib)
    return S, out


def _backward_loop_c(lib, dout, dhT, h0, w, m, mode, S, out, packed, need_h0, need_w):
    T, B, G4 = S.shape
    H = G4 // 4
    dout = dout.contiguous()
    dxp = S.new_empty(T, B, 3 * H)
    dhh = S.new_empty(T, B, 3 * H)
    dcar = S.new_zeros(B, H)  # dh_{t+1} z_{t+1}: the gradient carried past W_hh, unmasked
    s0, ss = ptr_steps(S)
    o0, so = ptr_steps(out)
    d0, sd = ptr_steps(dout)
    x0, sx = ptr_steps(dxp)
    g0, sg = ptr_steps(dhh)
    mp = m.data_ptr() if mode != MaskMode.NONE else None
    h0c = h0.contiguous()

    def step(t, r, r_mode):
        hp = o0 + (t - 1) * so if t > 0 else h0c.data_ptr()
        lib.gru_bwd_step(s0 + t * ss, hp, d0 + t * sd, gate_ptrs(r), mp, dcar.data_ptr(),
                         x0 + t * sx, g0 + t * sg, B, H, r_mode)

    dh0 = reverse_steps(step, dhh, dhT, w, m, mode, packed, need_h0, lib=lib)
    dh0 = dh0 + dcar if need_h0 else None
    dw = weight_grad(dhh, h0, out, m, mode, packed) if need_w else None
    return dxp, dh0, dw, dhh


class GRUZoneoutRecurrence(torch.autograd.Function):
    """``GRURecurrence`` with zoneout: the gate math in the fused C kernels with zoneout
    (``impl.lib``) or in torch ops."""
    @staticmethod
    def forward(ctx, xp, h0, weight_hh, bias_hh, mask_h, zh, mode, impl):
        xp = xp.contiguous()
        m = None if mask_h is None else mask_h.contiguous()
        loop = (_forward_loop_zoneout if impl.lib is None
                else functools.partial(_forward_loop_zoneout_c, impl.lib))
        S, out = loop(xp, h0, weight_hh, bias_hh, m, mode, impl.packed, zh)
        ctx.impl, ctx.mode = impl, mode
        ctx.save_for_backward(h0, weight_hh, m, zh, S, out)
        return out, (out[-1] if xp.shape[0] else h0).clone()

    @staticmethod
    def backward(ctx, dout, dhT):
        h0, w, m, zh, S, out = ctx.saved_tensors
        need_xp, need_h0, need_w, need_b = ctx.needs_input_grad[:4]
        T, B = S.shape[:2]
        H = w.shape[1]
        if T == 0:
            return (S.new_zeros(0, B, 3 * H) if need_xp else None, dhT,
                    torch.zeros_like(w) if need_w else None,
                    w.new_zeros(3 * H) if need_b else None, None, None, None, None)
        loop = (_backward_loop_zoneout if ctx.impl.lib is None
                else functools.partial(_backward_loop_zoneout_c, ctx.impl.lib))
        dxp, dh0, dw, dhh = loop(dout, dhT, h0, w, m, ctx.mode, S, out, ctx.impl.packed,
                                 need_h0, need_w, zh)
        db = dhh.sum((0, 1)) if need_b else None
        dm = mask_grad(dhh, h0, out, w, ctx.mode) if ctx.needs_input_grad[4] else None
        return (dxp if need_xp else None, dh0, dw, db, dm, None, None, None)


class GRURecurrence(torch.autograd.Function):
    @staticmethod
    def forward(ctx, xp, h0, weight_hh, bias_hh, mask_h, mode, impl):
        xp = xp.contiguous()
        m = None if mask_h is None else mask_h.contiguous()  # the kernels read it flat
        loop = _forward_loop if impl.lib is None else functools.partial(_forward_loop_c, impl.lib)
        S, out = loop(xp, h0, weight_hh, bias_hh, m, mode, impl.packed)
        ctx.impl, ctx.mode = impl, mode
        ctx.save_for_backward(h0, weight_hh, m, S, out)
        return out, (out[-1] if xp.shape[0] else h0).clone()

    @staticmethod
    def backward(ctx, dout, dhT):
        h0, w, m, S, out = ctx.saved_tensors
        impl = ctx.impl
        need_xp, need_h0, need_w, need_b = ctx.needs_input_grad[:4]
        T, B = S.shape[:2]
        H = w.shape[1]
        if T == 0:
            return (S.new_zeros(0, B, 3 * H) if need_xp else None, dhT,
                    torch.zeros_like(w) if need_w else None,
                    w.new_zeros(3 * H) if need_b else None, None, None, None)
        loop = (_backward_loop if impl.lib is None
                else functools.partial(_backward_loop_c, impl.lib))
        dxp, dh0, dw, dhh = loop(dout, dhT, h0, w, m, ctx.mode, S, out, impl.packed, need_h0,
                                 need_w)
        db = dhh.sum((0, 1)) if need_b else None
        dm = mask_grad(dhh, h0, out, w, ctx.mode) if ctx.needs_input_grad[4] else None
        return (dxp if need_xp else None, dh0, dw, db, dm, None, None)


def recurrence(impl: Impl, xp: Tensor, h0: Tensor, weight_hh: Tensor, bias_hh: Optional[Tensor],
               mask_h: Optional[Tensor] = None,
               zoneout_h: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
    """The contract of ``rnndrop._recurrence.gru_recurrence`` (the mask and the zoneout weights
    get no gradient), run as ``impl`` says (``rnndrop.fast.select`` binds it)."""
    mode = check(xp, h0, weight_hh, mask_h, 3, zoneout_h=zoneout_h)
    if zoneout_h is not None:
        return GRUZoneoutRecurrence.apply(xp, h0, weight_hh, bias_hh, mask_h,
                                          zoneout_h.detach().contiguous(), mode, impl)
    return GRURecurrence.apply(xp, h0, weight_hh, bias_hh, mask_h, mode, impl)
