"""LSTM recurrence with per-sample recurrent dropout as one autograd Function.

Forward saves only the post-activation gates ``A = [i, f, g, o]`` (T, B, 4H), the cell states
``C`` (T, B, H) and the output ``out`` (T, B, H, returned anyway); ``h_{t-1} ∘ m`` is rebuilt from
``out`` in backward. Backward walks the steps once, writing the pre-activation gradient of every
step (which *is* the gradient of ``xp``), and computes ``dW_hh = Σ_t dpre_tᵀ (h_{t-1} ∘ m)``
as one large product after the loop (one per gate block for untied masks).

How a call runs is fixed by ``rnndrop.fast.select`` (an ``Impl``): products through oneDNN on
CPU float32 (the forward weight packed once per call, the backward weight handed over as a
transposed view, the weight gradient through oneDNN too; see ``_gemm``) or ``torch.mm``; the gate
math of a step in one fused C call (``_cext``: ``_forward_loop_c``/``_backward_loop_c``), whose
loops take the per-step products through the small-batch C kernel too where ``_common.small_gemm``
says so (``_gemm.SmallGemm``), or in torch ops (``_forward_loop``/``_backward_loop``, e.g.
float64 for gradcheck); on CUDA one fused Triton kernel per step instead, the loops replayed as
CUDA graphs (``_triton``, ``_graphs``).
"""
from __future__ import annotations

import functools
from typing import Optional

import torch
from torch import Tensor

from .._recurrence import zone_at
from . import _graphs, _triton
from ._common import (Impl, MaskMode, check, forward_steps, gate_ptrs, mask_grad, ptr_steps,
                      rec_grad, reverse_steps, weight_grad)
from ._gemm import Linear


def _forward_loop(xp: Tensor, h0: Tensor, c0: Tensor, w: Tensor, m: Optional[Tensor],
                  mode: MaskMode, packed: bool):
    """The torch-op recurrence: gates ``A`` (T, B, 4H), cells ``C`` and outputs (T, B, H); the
    zoneout loop with no zoneout (one loop body for both)."""
    A, C, _, out = _forward_loop_zoneout(xp, h0, c0, w, m, mode, packed, None, None)
    return A, C, out


def _backward_loop(dout, dhT, dcT, h0, c0, w, m, mode, A, C, out, packed, need_h0, need_w):
    T, B, G = A.shape
    H = G // 4
    dpre = A.new_empty(T, B, G)
    one = A.new_ones(B, H)
    der = A.new_empty(B, G)
    dc = dcT.clone()

    def step(t, r, r_mode):
        dh = rec_grad(r, r_mode, m) + dout[t]
        a = A[t]
        i, f, g, o = a[:, :H], a[:, H:2 * H], a[:, 2 * H:3 * H], a[:, 3 * H:]
        c_prev = C[t - 1] if t > 0 else c0
        dp = dpre[t]
        tc = torch.tanh(C[t])
        torch.mul(dh, tc, out=dp[:, 3 * H:])                   # ∂/∂o
        tmp = dh * o
        dc.addcmul_(tmp, torch.addcmul(one, tc, tc, value=-1))  # + dh o (1 - tanh² c)
        torch.mul(dc, g, out=dp[:, :H])                        # ∂/∂i
        torch.mul(dc, c_prev, out=dp[:, H:2 * H])              # ∂/∂f
        torch.mul(dc, i, out=dp[:, 2 * H:3 * H])               # ∂/∂g
        torch.addcmul(a, a, a, value=-1, out=der)              # σ' = s (1 - s)
        torch.addcmul(one, g, g, value=-1, out=der[:, 2 * H:3 * H])  # tanh' = 1 - g²
        dp.mul_(der)
        dc.mul_(f)

    dh0 = reverse_steps(step, dpre, dhT, w, m, mode, packed, need_h0)
    dw = weight_grad(dpre, h0, out, m, mode, packed) if need_w else None
    return dpre, dh0, dc, dw


def _forward_loop_zoneout(xp, h0, c0, w, m, mode, packed, zh, zc):
    """``_forward_loop`` with zoneout (``zh``, ``zc``: None, ``(B, H)`` or ``(T, B, H)``, see
    ``rnndrop._recurrence``). Also returns the candidate cells ``Ct`` (T, B, H) that the
    backward needs for ``tanh(c̃_t)`` (``C`` itself when there is no cell zoneout)."""
    T, B, G = xp.shape
    H = G // 4
    A = xp.new_empty(T, B, G)
    C = xp.new_empty(T, B, H)
    Ct = xp.new_empty(T, B, H) if zc is not None else C
    out = xp.new_empty(T, B, H)
    untied = mode == MaskMode.UNTIED
    if untied:
        wb = w.view(4, H, H).transpose(1, 2)
    else:
        lin = Linear(w, B, packed)
    h, c = h0, c0
    for t in range(T):
        a = A[t]
        if untied:
            pre = torch.baddbmm(xp[t].view(B, 4, H).transpose(0, 1), h.unsqueeze(0) * m, wb)
            torch.sigmoid(pre.transpose(0, 1), out=a.view(B, 4, H))
            torch.tanh(pre[2], out=a[:, 2 * H:3 * H])
        else:
            pre = lin.add(h if mode == MaskMode.NONE else h * m, xp[t])
            torch.sigmoid(pre, out=a)
            torch.tanh(pre[:, 2 * H:3 * H], out=a[:, 2 * H:3 * H])
        ct = Ct[t]                                           # c̃_t = f c_{t-1} + i g
        torch.mul(a[:, H:2 * H], c, out=ct)
        ct.addcmul_(a[:, :H], a[:, 2 * H:3 * H])
        ht = out[t]                                          # h̃_t = o tanh(c̃_t)
        torch.tanh(ct, out=ht)
        ht.mul_(a[:, 3 * H:])
        if zh is not None:   # h_t = h̃ + d (h_{t-1} - h̃); lerp is exact at d = 0 and 1
            ht.copy_(torch.lerp(ht, h, zone_at(zh, t)))
        if zc is not None:
            torch.lerp(ct, c, zone_at(zc, t), out=C[t])
        h, c = ht, C[t]
    return A, C, Ct, out


def _backward_loop_zoneout(dout, dhT, dcT, h0, c0, w, m, mode, A, C, Ct, out, packed, need_h0,
                           need_w, zh, zc):
    """The backward of ``_forward_loop_zoneout``. With ``h_t = d h_{t-1} + (1 - d) h̃_t``:
    ``∂h̃_t = (1 - d) ∂h_t`` drives the gates and ``d ∂h_t`` is carried to ``h_{t-1}`` past
    ``W_hh`` (likewise ``∂c̃_t = (1 - d^c) ∂c_t`` and ``d^c ∂c_t`` to ``c_{t-1}``)."""
    T, B, G = A.shape
    H = G // 4
    dpre = A.new_empty(T, B, G)
    one = A.new_ones(B, H)
    der = A.new_empty(B, G)
    dc = dcT.clone()
    carry = None   # d^h_{t+1} ∂h_{t+1}: the part of ∂h_t that skips step t+1

    def step(t, r, r_mode):
        nonlocal carry
        dh = rec_grad(r, r_mode, m) + dout[t]
        if carry is not None:
            dh = dh + carry
        if zh is not None:
            d = zone_at(zh, t)
            carry = dh * d
            dh = dh - carry                                    # ∂h̃ = (1 - d) ∂h
        a = A[t]
        i, f, g, o = a[:, :H], a[:, H:2 * H], a[:, 2 * H:3 * H], a[:, 3 * H:]
        c_prev = C[t - 1] if t > 0 else c0
        dp = dpre[t]
        tc = torch.tanh(Ct[t])
        dc_skip = None
        if zc is not None:
            dc_skip = dc * zone_at(zc, t)
            dc.sub_(dc_skip)                                   # ∂c̃ = (1 - d^c) ∂c
        torch.mul(dh, tc, out=dp[:, 3 * H:])                   # ∂/∂o
        tmp = dh * o
        dc.addcmul_(tmp, torch.addcmul(one, tc, tc, value=-1))
        torch.mul(dc, g, out=dp[:, :H])                        # ∂/∂i
        torch.mul(dc, c_prev, out=dp[:, H:2 * H])              # ∂/∂f
        torch.mul(dc, i, out=dp[:, 2 * H:3 * H])               # ∂/∂g
        torch.addcmul(a, a, a, value=-1, out=der)
        torch.addcmul(one, g, g, value=-1, out=der[:, 2 * H:3 * H])
        dp.mul_(der)
        dc.mul_(f)
        if dc_skip is not None:
            dc.add_(dc_skip)

    dh0 = reverse_steps(step, dpre, dhT, w, m, mode, packed, need_h0)
    if need_h0 and carry is not None:
        dh0 = dh0 + carry
    dw = weight_grad(dpre, h0, out, m, mode, packed) if need_w else None
    return dpre, dh0, dc, dw


def _zone_ptr(z: Optional[Tensor]):
    """``t -> address`` of step t's ``(B, H)`` zoneout weights (None without zoneout); ``z``
    contiguous, ``(B, H)`` (every step the same) or ``(T, B, H)``."""
    if z is None:
        return lambda t: None
    if z.dim() == 2:
        return lambda t: z.data_ptr()
    z0, sz = ptr_steps(z)
    return lambda t: z0 + t * sz


def _forward_loop_zoneout_c(lib, xp, h0, c0, w, m, mode, packed, zh, zc):
    """``_forward_loop_zoneout`` with the gate math and zoneout of each step in one fused C
    call (``_cext``: ``lstm_fwd_step_z``)."""
    T, B, G = xp.shape
    H = G // 4
    A = xp.new_empty(T, B, G)
    C = xp.new_empty(T, B, H)
    Ct = xp.new_empty(T, B, H) if zc is not None else C
    out = xp.new_empty(T, B, H)
    h0, c0 = h0.contiguous(), c0.contiguous()
    a0, sa = ptr_steps(A)
    c_0, sc = ptr_steps(C)
    t_0, st = ptr_steps(Ct)
    o0, so = ptr_steps(out)
    x0, sx = ptr_steps(xp)
    mp = m.data_ptr() if mode != MaskMode.NONE else None
    zhp, zcp = _zone_ptr(zh), _zone_ptr(zc)

    def step(t, pre, s_pb, hm, add_x):
        x = x0 + t * sx if add_x else None
        cp = c_0 + (t - 1) * sc if t > 0 else c0.data_ptr()
        hp = o0 + (t - 1) * so if t > 0 else h0.data_ptr()
        lib.lstm_fwd_step_z(pre, s_pb, x, cp, hp, zhp(t), zcp(t), a0 + t * sa,
                            t_0 + t * st, c_0 + t * sc, o0 + t * so, mp, hm, B, H, mode)

    forward_steps(step, out, h0, w, m, mode, packed, add=xp, lib=lib)
    return A, C, Ct, out


def _backward_loop_zoneout_c(lib, dout, dhT, dcT, h0, c0, w, m, mode, A, C, Ct, out, packed,
                             need_h0, need_w, zh, zc):
    """``_backward_loop_zoneout`` with each step in one fused C call (``lstm_bwd_step_z``)."""
    T, B, G = A.shape
    H = G // 4
    dout = dout.contiguous()
    dpre = A.new_empty(T, B, G)
    dc = dcT.contiguous().clone()
    carry = A.new_zeros(B, H)   # zh_{t+1} dh_{t+1}, written by the kernel
    a0, sa = ptr_steps(A)
    c_0, sc = ptr_steps(C)
    t_0, st = ptr_steps(Ct)
    d0, sd = ptr_steps(dout)
    p0, sp = ptr_steps(dpre)
    mp = m.data_ptr() if mode != MaskMode.NONE else None
    c0p = c0.contiguous()
    zhp, zcp = _zone_ptr(zh), _zone_ptr(zc)

    def step(t, r, r_mode):
        cp = c_0 + (t - 1) * sc if t > 0 else c0p.data_ptr()
        lib.lstm_bwd_step_z(a0 + t * sa, t_0 + t * st, cp, d0 + t * sd, gate_ptrs(r), mp,
                            zhp(t), zcp(t), carry.data_ptr(), dc.data_ptr(), p0 + t * sp, B, H,
                            r_mode)

    dh0 = reverse_steps(step, dpre, dhT, w, m, mode, packed, need_h0, lib=lib)
    if need_h0 and zh is not None:
        dh0 = dh0 + carry
    dw = weight_grad(dpre, h0, out, m, mode, packed) if need_w else None
    return dpre, dh0, dc, dw


def _forward_loop_c(lib, xp, h0, c0, w, m, mode, packed):
    """``_forward_loop`` with the gate math of each step in one fused C call (``_cext``)."""
    T, B, G = xp.shape
    H = G // 4
    A = xp.new_empty(T, B, G)
    C = xp.new_empty(T, B, H)
    out = xp.new_empty(T, B, H)
    h0, c0 = h0.contiguous(), c0.contiguous()
    a0, sa = ptr_steps(A)
    c_0, sc = ptr_steps(C)
    o0, so = ptr_steps(out)
    x0, sx = ptr_steps(xp)
    mp = m.data_ptr() if mode != MaskMode.NONE else None

    def step(t, pre, s_pb, hm, add_x):
        x = x0 + t * sx if add_x else None  # else added to the product by oneDNN already
        cp = c_0 + (t - 1) * sc if t > 0 else c0.data_ptr()
        lib.lstm_fwd_step(pre, s_pb, x, cp, a0 + t * sa, c_0 + t * sc, o0 + t * so, mp, hm,
                          B, H, mode)

    forward_steps(step, out, h0, w, m, mode, packed, add=xp, lib=lib)
    return A, C, out


def _backward_loop_c(lib, dout, dhT, dcT, h0, c0, w, m, mode, A, C, out, packed, need_h0,
                     need_w):
    T, B, G = A.shape
    H = G // 4
    dout = dout.contiguous()
    dpre = A.new_empty(T, B, G)
    dc = dcT.contiguous().clone()
    a0, sa = ptr_steps(A)
    c_0, sc = ptr_steps(C)
    d0, sd = ptr_steps(dout)
    p0, sp = ptr_steps(dpre)
    mp = m.data_ptr() if mode != MaskMode.NONE else None
    c0p = c0.contiguous()

    def step(t, r, r_mode):
        cp = c_0 + (t - 1) * sc if t > 0 else c0p.data_ptr()
        lib.lstm_bwd_step(a0 + t * sa, c_0 + t * sc, cp, d0 + t * sd, gate_ptrs(r), mp,
                          dc.data_ptr(), p0 + t * sp, B, H, r_mode)

    dh0 = reverse_steps(step, dpre, dhT, w, m, mode, packed, need_h0, lib=lib)
    dw = weight_grad(dpre, h0, out, m, mode, packed) if need_w else None
    return dpre, dh0, dc, dw


class LSTMZoneoutRecurrence(torch.autograd.Function):
    """``LSTMRecurrence`` with zoneout: the gate math in the fused C kernels with zoneout
    (``impl.lib``) or in torch ops, products through oneDNN or ``torch.mm``; no Triton."""
    @staticmethod
    def forward(ctx, xp, h0, c0, weight_hh, mask_h, zh, zc, mode, impl):
        xp = xp.contiguous()
        m = None if mask_h is None else mask_h.contiguous()
        loop = (_forward_loop_zoneout if impl.lib is None
                else functools.partial(_forward_loop_zoneout_c, impl.lib))
        A, C, Ct, out = loop(xp, h0, c0, weight_hh, m, mode, impl.packed, zh, zc)
        ctx.impl, ctx.mode = impl, mode
        ctx.has_ct = zc is not None
        ctx.save_for_backward(h0, c0, weight_hh, m, zh, zc, A, C, Ct if zc is not None else None,
                              out)
        if xp.shape[0] == 0:
            return out, h0.clone(), c0.clone()
        return out, out[-1].clone(), C[-1].clone()

    @staticmethod
    def backward(ctx, dout, dhT, dcT):
        h0, c0, w, m, zh, zc, A, C, Ct, out = ctx.saved_tensors
        need_xp, need_h0, need_c0, need_w = ctx.needs_input_grad[:4]
        nones = (None,) * 5
        if A.shape[0] == 0:
            return (A.new_zeros(A.shape) if need_xp else None, dhT, dcT,
                    torch.zeros_like(w) if need_w else None) + nones
        loop = (_backward_loop_zoneout if ctx.impl.lib is None
                else functools.partial(_backward_loop_zoneout_c, ctx.impl.lib))
        dpre, dh0, dc0, dw = loop(dout, dhT, dcT, h0, c0, w, m, ctx.mode, A, C,
                                  Ct if ctx.has_ct else C, out, ctx.impl.packed, need_h0, need_w,
                                  zh, zc)
        dm = mask_grad(dpre, h0, out, w, ctx.mode) if ctx.needs_input_grad[4] else None
        return (dpre if need_xp else None, dh0, dc0 if need_c0 else None, dw, dm) + nones[1:]


class LSTMRecurrence(torch.autograd.Function):
    @staticmethod
    def forward(ctx, xp, h0, c0, weight_hh, mask_h, mode, impl):
        xp = xp.contiguous()
        m = None if mask_h is None else mask_h.contiguous()  # the kernels read it flat
        if impl.triton:
            A, C, out = _graphs.call("lstm_fwd", _triton.forward_loop, (xp, h0, c0, weight_hh, m),
                                     impl.graphs, mode=mode)
        else:
            loop = (_forward_loop if impl.lib is None
                    else functools.partial(_forward_loop_c, impl.lib))
            A, C, out = loop(xp, h0, c0, weight_hh, m, mode, impl.packed)
        ctx.impl, ctx.mode = impl, mode
        ctx.save_for_backward(h0, c0, weight_hh, m, A, C, out)
        if xp.shape[0] == 0:
            return out, h0.clone(), c0.clone()
        return out, out[-1].clone(), C[-1].clone()

    @staticmethod
    def backward(ctx, dout, dhT, dcT):
        h0, c0, w, m, A, C, out = ctx.saved_tensors
        impl, mode = ctx.impl, ctx.mode
        need_xp, need_h0, need_c0, need_w = ctx.needs_input_grad[:4]
        if A.shape[0] == 0:
            return (A.new_zeros(A.shape) if need_xp else None, dhT, dcT,
                    torch.zeros_like(w) if need_w else None, None, None, None)
        if impl.triton:
            dpre, dh0, dc0, dw = _graphs.call(
                "lstm_bwd", _triton.backward_loop, (dout, dhT, dcT, h0, c0, w, m, A, C, out),
                impl.graphs, mode=mode, need_h0=need_h0, need_w=need_w)
        else:
            loop = (_backward_loop if impl.lib is None
                    else functools.partial(_backward_loop_c, impl.lib))
            dpre, dh0, dc0, dw = loop(dout, dhT, dcT, h0, c0, w, m, mode, A, C, out,
                                      impl.packed, need_h0, need_w)
        dm = mask_grad(dpre, h0, out, w, mode) if ctx.needs_input_grad[4] else None
        return (dpre if need_xp else None, dh0, dc0 if need_c0 else None, dw, dm, None, None)


def recurrence(impl: Impl, xp: Tensor, h0: Tensor, c0: Tensor, weight_hh: Tensor,
               mask_h: Optional[Tensor] = None, zoneout_h: Optional[Tensor] = None,
               zoneout_c: Optional[Tensor] = None) -> tuple[Tensor, Tensor, Tensor]:
    """The contract of ``rnndrop._recurrence.lstm_recurrence`` (the masks and the zoneout
    weights get no gradient), run as ``impl`` says (``rnndrop.fast.select`` binds it)."""
    mode = check(xp, h0, weight_hh, mask_h, 4, zoneout_h=zoneout_h, zoneout_c=zoneout_c)
    if zoneout_h is not None or zoneout_c is not None:
        if impl.triton:
            raise ValueError("zoneout has no Triton kernel (Impl(triton=False))")
        zh = None if zoneout_h is None else zoneout_h.detach().contiguous()
        zc = None if zoneout_c is None else zoneout_c.detach().contiguous()
        return LSTMZoneoutRecurrence.apply(xp, h0, c0, weight_hh, mask_h, zh, zc, mode, impl)
    return LSTMRecurrence.apply(xp, h0, c0, weight_hh, mask_h, mode, impl)
