"""CUDA path of the LSTM recurrence: one fused Triton kernel per step for the gate math.

Per step, forward is one cuBLAS product ``xp_t + (h ∘ m) W_hhᵀ`` and one kernel that applies the
activations, updates c and h and writes ``h ∘ m`` for the next product; backward is one kernel
(mask and sum of the recurrent gradient, the whole LSTM cell derivative, the carried ∂c) and one
product ``dpre_t W_hh``. Everything else (``dW_hh``, ``∂h_0``) is one product after the loop.

Triton is optional: ``triton_ok()`` is False when it cannot be imported, and the recurrences then
use the plain-torch loops. With ``TRITON_INTERPRET=1`` the kernels also run on CPU tensors (the
tests use that to check them without a GPU).
"""
from __future__ import annotations

import os
from typing import Optional

import torch
from torch import Tensor

from ._common import MaskMode, masked_h0, rec_grad, weight_grad

_TRITON = None
_BLOCK = 256


def triton_ok() -> bool:
    global _TRITON
    if _TRITON is None:
        _TRITON = False
        if triton is not None:
            try:
                _TRITON = {"fwd": _lstm_fwd_step, "bwd": _lstm_bwd_step, "cdiv": triton.cdiv}
            except Exception:  # pragma: no cover
                _TRITON = False
    return bool(_TRITON)


def use_triton(t: Tensor) -> bool:
    """Run the Triton loops for tensors like ``t``: CUDA (or CPU under the Triton interpreter
    when ``RNNDROP_FAST_TRITON=1``), float32/16/bfloat16, Triton importable."""
    env = os.environ.get("RNNDROP_FAST_TRITON", "")
    if env == "0":
        return False
    if t.dtype not in (torch.float32, torch.float16, torch.bfloat16):
        return False
    if t.device.type == "cuda" or (env == "1" and os.environ.get("TRITON_INTERPRET") == "1"):
        return triton_ok()
    return False


try:  # optional dependency: everything below is skipped when triton is absent or broken
    import triton
    import triton.language as tl
except Exception:  # pragma: no cover - depends on the environment
    triton = None

if triton is not None:
    @triton.jit
    def _lstm_tanh(x):
        return 2.0 * tl.sigmoid(2.0 * x) - 1.0

    @triton.jit
    def _lstm_fwd_step(pre_ptr, s_pg, s_pb, x_ptr, cp_ptr, a_ptr, c_ptr, h_ptr, m_ptr, hm_ptr,
                       n, H, MODE: tl.constexpr, HAS_X: tl.constexpr, BLOCK: tl.constexpr):
        # gate k of sample b, unit j: pre[k*s_pg + b*s_pb + j] (+ x[b*4H + k*H + j] if HAS_X)
        offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        ok = offs < n
        b = offs // H
        j = offs % H
        p = pre_ptr + b * s_pb + j
        xi = tl.load(p, mask=ok, other=0.0).to(tl.float32)
        xf = tl.load(p + s_pg, mask=ok, other=0.0).to(tl.float32)
        xg = tl.load(p + 2 * s_pg, mask=ok, other=0.0).to(tl.float32)
        xo = tl.load(p + 3 * s_pg, mask=ok, other=0.0).to(tl.float32)
        if HAS_X:
            q = x_ptr + b * 4 * H + j
            xi += tl.load(q, mask=ok, other=0.0).to(tl.float32)
            xf += tl.load(q + H, mask=ok, other=0.0).to(tl.float32)
            xg += tl.load(q + 2 * H, mask=ok, other=0.0).to(tl.float32)
            xo += tl.load(q + 3 * H, mask=ok, other=0.0).to(tl.float32)
        i = tl.sigmoid(xi)
        f = tl.sigmoid(xf)
        g = _lstm_tanh(xg)
        o = tl.sigmoid(xo)
        cp = tl.load(cp_ptr + offs, mask=ok, other=0.0).to(tl.float32)
        c = f * cp + i * g
        h = o * _lstm_tanh(c)
        a = a_ptr + b * 4 * H + j
        ty = a_ptr.dtype.element_ty
        tl.store(a, i.to(ty), mask=ok)
        tl.store(a + H, f.to(ty), mask=ok)
        tl.store(a + 2 * H, g.to(ty), mask=ok)
        tl.store(a + 3 * H, o.to(ty), mask=ok)
        tl.store(c_ptr + offs, c.to(ty), mask=ok)
        tl.store(h_ptr + offs, h.to(ty), mask=ok)
        if MODE == 1:
            m = tl.load(m_ptr + offs, mask=ok, other=0.0).to(tl.float32)
            tl.store(hm_ptr + offs, (h * m).to(ty), mask=ok)
        if MODE == 2:
            for k in tl.static_range(4):
                m = tl.load(m_ptr + k * n + offs, mask=ok, other=0.0).to(tl.float32)
                tl.store(hm_ptr + k * n + offs, (h * m).to(ty), mask=ok)

    @triton.jit
    def _lstm_bwd_step(a_ptr, c_ptr, cp_ptr, dout_ptr, r_ptr, m_ptr, dc_ptr, dp_ptr, d2_ptr, s_dg,
                       n, H, MODE: tl.constexpr, WRITE_D2: tl.constexpr, BLOCK: tl.constexpr):
        # WRITE_D2: also write gate k's gradient to d2[k*s_dg + b*4H + j] (block diagonal)
        offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        ok = offs < n
        b = offs // H
        j = offs % H
        if MODE == 0:
            r = tl.load(r_ptr + offs, mask=ok, other=0.0).to(tl.float32)
        elif MODE == 1:
            r = (tl.load(r_ptr + offs, mask=ok, other=0.0).to(tl.float32)
                 * tl.load(m_ptr + offs, mask=ok, other=0.0).to(tl.float32))
        else:
            r = tl.zeros([BLOCK], dtype=tl.float32)
            for k in tl.static_range(4):
                r += (tl.load(r_ptr + k * n + offs, mask=ok, other=0.0).to(tl.float32)
                      * tl.load(m_ptr + k * n + offs, mask=ok, other=0.0).to(tl.float32))
        dh = tl.load(dout_ptr + offs, mask=ok, other=0.0).to(tl.float32) + r
        a = a_ptr + b * 4 * H + j
        i = tl.load(a, mask=ok, other=0.0).to(tl.float32)
        f = tl.load(a + H, mask=ok, other=0.0).to(tl.float32)
        g = tl.load(a + 2 * H, mask=ok, other=0.0).to(tl.float32)
        o = tl.load(a + 3 * H, mask=ok, other=0.0).to(tl.float32)
        tc = _lstm_tanh(tl.load(c_ptr + offs, mask=ok, other=0.0).to(tl.float32))
        cp = tl.load(cp_ptr + offs, mask=ok, other=0.0).to(tl.float32)
        dc = tl.load(dc_ptr + offs, mask=ok, other=0.0).to(tl.float32) + dh * o * (1.0 - tc * tc)
        d = dp_ptr + b * 4 * H + j
        ty = dp_ptr.dtype.element_ty
        di = (dc * g * i * (1.0 - i)).to(ty)
        df = (dc * cp * f * (1.0 - f)).to(ty)
        dg = (dc * i * (1.0 - g * g)).to(ty)
        do = (dh * tc * o * (1.0 - o)).to(ty)
        tl.store(d, di, mask=ok)
        tl.store(d + H, df, mask=ok)
        tl.store(d + 2 * H, dg, mask=ok)
        tl.store(d + 3 * H, do, mask=ok)
        if WRITE_D2:
            e = d2_ptr + b * 4 * H + j
            tl.store(e, di, mask=ok)
            tl.store(e + s_dg + H, df, mask=ok)
            tl.store(e + 2 * (s_dg + H), dg, mask=ok)
            tl.store(e + 3 * (s_dg + H), do, mask=ok)
        tl.store(dc_ptr + offs, (dc * f).to(dc_ptr.dtype.element_ty), mask=ok)


def forward_loop(xp: Tensor, h0: Tensor, c0: Tensor, w: Tensor, m: Optional[Tensor], *,
                 mode: MaskMode):
    k = _TRITON
    T, B, G = xp.shape
    H = G // 4
    n = B * H
    A = xp.new_empty(T, B, G)
    C = xp.new_empty(T, B, H)
    out = xp.new_empty(T, B, H)
    h0, c0 = h0.contiguous(), c0.contiguous()
    hm = masked_h0(h0, m, mode)
    mm = h0 if mode == MaskMode.NONE else m  # no mask: any valid pointer, never read
    wt = w.t()
    grid = (k["cdiv"](n, _BLOCK),)
    c_prev = c0
    for t in range(T):
        if mode == MaskMode.UNTIED:
            # Untied: one product of the 4 masked copies stacked along the batch,
            # (4B, H) @ (H, 4H), of which the kernel reads the diagonal blocks (gate k from
            # copy k). 4x the FLOPs of the tied product but one GEMM with the weight read once,
            # much faster on a GPU than a (4, B, H) @ (4, H, H) bmm at these sizes.
            pre = torch.mm(hm.view(4 * B, H), wt)
            s_pg, s_pb = B * G + H, G
        else:
            pre = torch.addmm(xp[t], hm, wt)
            s_pg, s_pb = H, G
        k["fwd"][grid](pre, s_pg, s_pb, xp[t], c_prev, A[t], C[t], out[t], mm, hm, n, H,
                       MODE=int(mode), HAS_X=mode == MaskMode.UNTIED, BLOCK=_BLOCK)
        c_prev = C[t]
        if mode == MaskMode.NONE:
            hm = out[t]
    return A, C, out


def backward_loop(dout, dhT, dcT, h0, c0, w, m, A, C, out, *, mode: MaskMode, need_h0: bool,
                  need_w: bool):
    k = _TRITON
    T, B, G = A.shape
    H = G // 4
    n = B * H
    untied = mode == MaskMode.UNTIED
    mm = dhT if mode == MaskMode.NONE else m  # no mask: any valid pointer, never read
    dout = dout.contiguous()
    dpre = A.new_empty(T, B, G)
    dc = dcT.contiguous().clone()
    # r: the recurrent product as the next kernel reads it (rec_grad's layouts): dhT as is at
    # the last step, then dpre_t @ W_hh masked by the kernel (tied), or summed over gates.
    r, r_mode = dhT.contiguous(), MaskMode.NONE
    # Untied: the gate-k gradient goes to block (k, k) of a zero (4B, 4H) matrix, so that one
    # product with W_hh (4H, H) gives the 4 per-gate recurrent gradients stacked, (4B, H).
    d2 = A.new_zeros(4 * B, G) if untied else dpre
    grid = (k["cdiv"](n, _BLOCK),)
    for t in range(T - 1, -1, -1):
        c_prev = C[t - 1] if t > 0 else c0.contiguous()
        dp = dpre[t]
        k["bwd"][grid](A[t], C[t], c_prev, dout[t], r, mm, dc, dp, d2, B * G, n, H,
                       MODE=int(r_mode), WRITE_D2=untied, BLOCK=_BLOCK)
        if t > 0 or need_h0:
            r = torch.mm(d2 if untied else dp, w)
            r_mode = mode
    dh0 = rec_grad(r, r_mode, m) if need_h0 else None
    dw = weight_grad(dpre, h0, out, m, mode, False) if need_w else None
    return dpre, dh0, dc, dw
