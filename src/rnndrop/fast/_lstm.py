"""LSTM recurrence with per-sample recurrent dropout as one autograd Function.

Forward saves only the post-activation gates ``A = [i, f, g, o]`` (T, B, 4H), the cell states
``C`` (T, B, H) and the output ``out`` (T, B, H, returned anyway); ``h_{t-1} ∘ m`` is rebuilt from
``out`` in backward. Backward walks the steps once, writing the pre-activation gradient of every
step (which *is* the gradient of ``xp``), and computes ``dW_hh = Σ_t dpre_tᵀ (h_{t-1} ∘ m)``
as one large product after the loop (one per gate block for untied masks).

Implementations (picked per call): CPU float32 with oneDNN ("onednn": per-step products with the
forward weight packed once per call and the backward weight handed over as a transposed view,
weight gradient through oneDNN too; see ``_gemm``), with the gate math of a step in one fused C
call when the kernels build (``_cext``); CUDA with Triton ("triton": one fused kernel per step
for the gate math, the loops replayed as CUDA graphs; see ``_triton``, ``_graphs``); anything
else ("torch": the same loops with plain torch ops, e.g. float64 for gradcheck).
"""
from __future__ import annotations

import functools
from typing import Optional

import torch
from torch import Tensor

from . import _cext, _graphs, _triton
from ._gemm import Linear, mm_tn, use_packed


def _forward_loop(xp: Tensor, h0: Tensor, c0: Tensor, w: Tensor, m: Optional[Tensor],
                  packed: bool):
    T, B, G = xp.shape
    H = G // 4
    A = xp.new_empty(T, B, G)
    C = xp.new_empty(T, B, H)
    out = xp.new_empty(T, B, H)
    untied = m is not None and m.dim() == 3
    if untied:
        wb = w.view(4, H, H).transpose(1, 2)  # gate k: (h ∘ m_k) @ W_kᵀ
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
            pre = lin.add(h if m is None else h * m, xp[t])
            torch.sigmoid(pre, out=a)
            torch.tanh(pre[:, 2 * H:3 * H], out=a[:, 2 * H:3 * H])
        ct = C[t]
        torch.mul(a[:, H:2 * H], c, out=ct)
        ct.addcmul_(a[:, :H], a[:, 2 * H:3 * H])
        ht = out[t]
        torch.tanh(ct, out=ht)
        ht.mul_(a[:, 3 * H:])
        h, c = ht, ct
    return A, C, out


def _weight_grad(d: Tensor, h0: Tensor, out: Tensor, m: Optional[Tensor], gates: int,
                 packed: bool) -> Tensor:
    """``dW_hh = Σ_t d_tᵀ (h_{t-1} ∘ m)`` as one product (one per gate block if untied);
    ``d`` is ``(T, B, G*H)``, ``h_{t-1}`` is rebuilt from ``h0`` and ``out``."""
    T, B, G = d.shape
    H = G // gates
    hs = torch.cat([h0.unsqueeze(0), out[:-1]]).view(T * B, H)
    d2 = d.view(T * B, G)
    if m is None:
        return mm_tn(d2, hs, packed)
    if m.dim() == 2:
        return mm_tn(d2, (hs.view(T, B, H) * m).view(T * B, H), packed)
    blocks = [mm_tn(d2[:, k * H:(k + 1) * H], (hs.view(T, B, H) * m[k]).view(T * B, H), packed)
              for k in range(gates)]
    return torch.cat(blocks)


def _backward_loop(dout, dhT, dcT, h0, c0, w, m, A, C, out, packed, need_h0, need_w):
    T, B, G = A.shape
    H = G // 4
    untied = m is not None and m.dim() == 3
    dpre = A.new_empty(T, B, G)
    if T > 1 or need_h0:
        if untied:
            wb = w.view(4, H, H)  # (dp_k) @ W_k for each gate block k
        else:
            lin_t = Linear(w.t(), B, packed, pack=False)
    one = A.new_ones(B, H)
    der = A.new_empty(B, G)
    dh = dout[T - 1] + dhT
    dc = dcT.clone()
    dh0 = None
    for t in range(T - 1, -1, -1):
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
        if t > 0 or need_h0:
            if untied:
                rec = (torch.bmm(dp.view(B, 4, H).transpose(0, 1), wb) * m).sum(0)
            else:
                rec = lin_t.mul(dp, m)
            if t > 0:
                dh = rec.add_(dout[t - 1])
            else:
                dh0 = rec
    dw = _weight_grad(dpre, h0, out, m, 4, packed) if need_w else None
    return dpre, dh0, dc, dw


def _ptr_steps(x: Tensor):
    """(base address, bytes per time step) of a contiguous (T, ...) tensor."""
    return x.data_ptr(), x[0].numel() * x.element_size() if x.shape[0] else 0


def _c_mask(m: Optional[Tensor]):
    """``(mode, m)`` for the C kernels: mode 0 no mask, 1 tied ``(B, H)``, 2 untied
    ``(G, B, H)``; the mask made contiguous."""
    if m is None:
        return 0, None
    return (1 if m.dim() == 2 else 2), m.contiguous()


def _c_first_input(h0: Tensor, m: Optional[Tensor], mode: int):
    """The first step's product input ``h0 ∘ m`` (``h0`` itself without a mask) and the buffer
    into which each C forward step writes the next ``h ∘ m`` (None without a mask)."""
    if not mode:
        return h0, None
    hm = h0 * m if mode == 1 else h0.unsqueeze(0) * m
    return hm, torch.empty_like(hm)


def _forward_loop_c(lib, xp, h0, c0, w, m, packed):
    """``_forward_loop`` with the gate math of each step in one fused C call (``_cext``)."""
    T, B, G = xp.shape
    H = G // 4
    n = B * H
    mode, m = _c_mask(m)
    A = xp.new_empty(T, B, G)
    C = xp.new_empty(T, B, H)
    out = xp.new_empty(T, B, H)
    h0, c0 = h0.contiguous(), c0.contiguous()
    hm, buf = _c_first_input(h0, m, mode)
    if mode == 2:
        wb = w.view(4, H, H).transpose(1, 2)
    else:
        lin = Linear(w, B, packed)
    a0, sa = _ptr_steps(A)
    c_0, sc = _ptr_steps(C)
    o0, so = _ptr_steps(out)
    x0, sx = _ptr_steps(xp)
    mp = m.data_ptr() if mode else None
    bp = buf.data_ptr() if mode else None
    cp = c0.data_ptr()
    for t in range(T):
        if mode == 2:
            pre = torch.bmm(hm, wb)                              # (4, B, H), xp added in C
            s_pg, s_pb, x = n, H, x0 + t * sx
        else:
            pre = lin.add(hm, xp[t])                             # (B, 4H), xp added by oneDNN
            s_pg, s_pb, x = H, pre.stride(0), None
        lib.lstm_fwd_step(pre.data_ptr(), s_pg, s_pb, x, cp, a0 + t * sa, c_0 + t * sc,
                          o0 + t * so, mp, bp, B, H, mode)
        cp = c_0 + t * sc
        hm = buf if mode else out[t]
    return A, C, out


def _rec_product(w: Tensor, m: Optional[Tensor], B: int, gates: int, packed: bool):
    """``dgates -> (r, r_mode)`` for the C backward loops: the recurrent gradient
    ``dgates @ W_hh``. Tied or no mask: one oneDNN product with the mask as a post-op
    (``r`` is ``(B, H)``, ``r_mode`` 0). Untied: one product per gate block (``r`` is
    ``(G, B, H)``, ``r_mode`` 2: the next C step sums ``r_k ∘ m_k``)."""
    H = w.shape[1]
    if m is not None and m.dim() == 3:
        wg = w.view(gates, H, H)
        return lambda d: (torch.bmm(d.view(B, gates, H).transpose(0, 1), wg), 2)
    lin_t = Linear(w.t(), B, packed, pack=False)
    return lambda d: (lin_t.mul(d, m), 0)


def _backward_loop_c(lib, dout, dhT, dcT, h0, c0, w, m, A, C, out, packed, need_h0, need_w):
    T, B, G = A.shape
    H = G // 4
    mode, m = _c_mask(m)
    dout = dout.contiguous()
    dpre = A.new_empty(T, B, G)
    dc = dcT.contiguous().clone()
    r, r_mode = dhT.contiguous(), 0
    rec = _rec_product(w, m, B, 4, packed)
    a0, sa = _ptr_steps(A)
    c_0, sc = _ptr_steps(C)
    d0, sd = _ptr_steps(dout)
    p0, sp = _ptr_steps(dpre)
    mp = m.data_ptr() if mode else None
    c0p = c0.contiguous()
    for t in range(T - 1, -1, -1):
        cp = c_0 + (t - 1) * sc if t > 0 else c0p.data_ptr()
        lib.lstm_bwd_step(a0 + t * sa, c_0 + t * sc, cp, d0 + t * sd, r.data_ptr(), mp,
                          dc.data_ptr(), p0 + t * sp, B, H, r_mode)
        if t > 0 or need_h0:
            r, r_mode = rec(dpre[t])
    dh0 = None
    if need_h0:
        dh0 = (r * m).sum(0) if mode == 2 else r
    dw = _weight_grad(dpre, h0, out, m, 4, packed) if need_w else None
    return dpre, dh0, dc, dw


def _impl(xp: Tensor, w: Tensor) -> str:
    if _triton.use_triton(xp) and w.dtype == xp.dtype:
        return "triton"
    return "onednn" if use_packed(xp) and use_packed(w) else "torch"


def _graph_key(kind, *tensors, **flags):
    return (kind,) + tuple(None if t is None else (tuple(t.shape), t.dtype, t.device)
                           for t in tensors) + tuple(sorted(flags.items()))


class LSTMRecurrence(torch.autograd.Function):
    @staticmethod
    def forward(ctx, xp, h0, c0, weight_hh, mask_h):
        xp = xp.contiguous()
        impl = _impl(xp, weight_hh)
        if impl == "triton":
            res = None
            if xp.is_cuda and _graphs.enabled():
                args = (xp, h0, c0, weight_hh, mask_h)
                res = _graphs.run(_graph_key("lstm_fwd", *args), _triton.forward_loop, args)
            if res is None:
                res = _triton.forward_loop(xp, h0, c0, weight_hh, mask_h)
            A, C, out = res
        else:
            lib = _cext.kernels() if xp.dtype == torch.float32 and xp.device.type == "cpu" else None
            loop = _forward_loop if lib is None else functools.partial(_forward_loop_c, lib)
            A, C, out = loop(xp, h0, c0, weight_hh, mask_h, impl == "onednn")
            ctx.lib = lib
        ctx.impl = impl
        ctx.save_for_backward(h0, c0, weight_hh, mask_h, A, C, out)
        if xp.shape[0] == 0:
            return out, h0.clone(), c0.clone()
        return out, out[-1].clone(), C[-1].clone()

    @staticmethod
    def backward(ctx, dout, dhT, dcT):
        h0, c0, w, m, A, C, out = ctx.saved_tensors
        need_xp, need_h0, need_c0, need_w = ctx.needs_input_grad[:4]
        if A.shape[0] == 0:
            return (A.new_zeros(A.shape) if need_xp else None, dhT, dcT,
                    torch.zeros_like(w) if need_w else None, None)
        if ctx.impl == "triton":
            res = None
            if A.is_cuda and _graphs.enabled():
                args = (dout, dhT, dcT, h0, c0, w, m, A, C, out)
                key = _graph_key("lstm_bwd", *args, need_h0=need_h0, need_w=need_w)

                def fn(*a):
                    return _triton.backward_loop(*a, need_h0, need_w)
                res = _graphs.run(key, fn, args)
            if res is None:
                res = _triton.backward_loop(dout, dhT, dcT, h0, c0, w, m, A, C, out,
                                            need_h0, need_w)
            dpre, dh0, dc0, dw = res
        else:
            loop = (_backward_loop if ctx.lib is None
                    else functools.partial(_backward_loop_c, ctx.lib))
            dpre, dh0, dc0, dw = loop(dout, dhT, dcT, h0, c0, w, m, A, C, out,
                                      ctx.impl == "onednn", need_h0, need_w)
        return (dpre if need_xp else None, dh0, dc0 if need_c0 else None, dw, None)


def lstm_recurrence(xp: Tensor, h0: Tensor, c0: Tensor, weight_hh: Tensor,
                    mask_h: Optional[Tensor] = None) -> tuple[Tensor, Tensor, Tensor]:
    """Same contract as ``rnndrop._recurrence.lstm_recurrence`` (the mask gets no gradient)."""
    _check(xp, h0, weight_hh, mask_h, 4)
    if not _same_kind(xp, h0, c0, weight_hh, mask_h):  # mixed dtypes/devices: the reference
        from .._recurrence import lstm_recurrence as ref
        return ref(xp, h0, c0, weight_hh, mask_h)
    return LSTMRecurrence.apply(xp, h0, c0, weight_hh, mask_h)


def _same_kind(*tensors) -> bool:
    ts = [t for t in tensors if t is not None]
    return all(t.dtype == ts[0].dtype and t.device == ts[0].device for t in ts)


def _check(xp: Tensor, h0: Tensor, weight_hh: Tensor, mask_h: Optional[Tensor], gates: int):
    if xp.dim() != 3:
        raise ValueError(f"xp must be (T, B, {gates}*H), got shape {tuple(xp.shape)}")
    B, H = h0.shape
    if xp.shape[1:] != (B, gates * H) or weight_hh.shape != (gates * H, H):
        raise ValueError(f"shape mismatch: xp {tuple(xp.shape)}, h0 {tuple(h0.shape)}, "
                         f"weight_hh {tuple(weight_hh.shape)} (expected ({gates}*H, H))")
    if mask_h is not None and mask_h.shape not in ((B, H), (gates, B, H)):
        raise ValueError(f"mask_h must be (B, H) or ({gates}, B, H), got {tuple(mask_h.shape)}")
