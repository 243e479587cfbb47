"""What the LSTM and GRU loops (``_lstm``, ``_gru``) and the Triton path (``_triton``) share.

- ``Impl``: how one call runs, fixed by ``rnndrop.fast.select`` (the only place that chooses).
- ``check``: the argument check at the entry of every fast recurrence; it returns the mask's
  ``MaskMode`` (decoded by ``rnndrop._recurrence.mask_mode``), which the loops then take as is.
- the recurrent-gradient pieces of every backward loop (``rec_product``, ``rec_grad``) and the
  weight gradient after it (``weight_grad``);
- the step loops, which differ between the cells only in what one step does: the forward loop
  around the fused C kernels (``forward_steps``) and the reverse loop of every backward pass
  (``reverse_steps``), with ``masked_h0`` and ``ptr_steps``.

Nothing here imports a cell module, so the cells and ``_triton`` import this and not each other.
"""
from __future__ import annotations

import ctypes
from typing import Any, NamedTuple, Optional, Sequence, Union

import torch
from torch import Tensor

from .._recurrence import MaskMode, mask_mode
from ._gemm import BlockLinear, Linear, SmallGemm, cgemm_enabled, mm_tn

__all__ = ["Impl", "MaskMode", "check", "forward_steps", "gate_ptrs", "mask_grad", "masked_h0",
           "ptr_steps", "rec_grad", "rec_product", "reverse_steps", "weight_grad"]


class Impl(NamedTuple):
    """How a fast recurrence runs one call (forward and its backward)."""
    triton: bool = False  # gate math in fused Triton kernels (CUDA, or the Triton interpreter)
    graphs: bool = False  # with triton: the whole loops replayed as CUDA graphs (``_graphs``)
    packed: bool = False  # products through oneDNN (``_gemm``) instead of torch.mm
    lib: Any = None       # the fused C kernels for the gate math (``_cext``); None: torch ops


def check(xp: Tensor, h0: Tensor, weight_hh: Tensor, mask_h: Optional[Tensor],
          gates: int, **zoneout: Optional[Tensor]) -> MaskMode:
    """Raise ``ValueError`` on shapes that do not fit (the zoneout weights, given by name, are
    ``(B, H)`` or ``(T, B, H)``); return the mask's ``MaskMode``."""
    if xp.dim() != 3:
        raise ValueError(f"xp must be (T, B, {gates}*H), got shape {tuple(xp.shape)}")
    B, H = h0.shape
    if xp.shape[1:] != (B, gates * H) or weight_hh.shape != (gates * H, H):
        raise ValueError(f"shape mismatch: xp {tuple(xp.shape)}, h0 {tuple(h0.shape)}, "
                         f"weight_hh {tuple(weight_hh.shape)} (expected ({gates}*H, H))")
    if mask_h is not None and mask_h.shape not in ((B, H), (gates, B, H)):
        raise ValueError(f"mask_h must be (B, H) or ({gates}, B, H), got {tuple(mask_h.shape)}")
    for name, z in zoneout.items():
        if z is not None and z.shape not in ((B, H), (xp.shape[0], B, H)):
            raise ValueError(f"{name} must be (B, H) or (T, B, H), got {tuple(z.shape)}")
    return mask_mode(mask_h)


Product = Union[Tensor, Sequence[Tensor]]


def small_gemm(lib, B: int):
    """Whether a C loop (``lib``: the fused kernels) takes its per-step products through
    ``SmallGemm`` for batch ``B``."""
    return lib is not None and 0 < B <= SmallGemm.MAX_BATCH and cgemm_enabled(lib)


def rec_product(w: Tensor, m: Optional[Tensor], mode: MaskMode, B: int, packed: bool,
                lib=None):
    """``dgates -> (r, r_mode)``: the recurrent product ``dgates @ W_hh`` of a backward step, in
    the layout ``rec_grad`` (and the backward kernels, through ``gate_ptrs``) read. Tied or no
    mask: one product with the mask applied as a post-op (oneDNN, ``SmallGemm``) or after it
    (``r`` is ``(B, H)``, ``r_mode`` NONE). Untied: one product per gate block (``r`` is the
    ``G`` products ``(B, H)``, not stacked, ``r_mode`` UNTIED: the reader sums ``r_k ∘ m_k``).
    With ``small_gemm(lib, B)`` the products are written into buffers made here and reused at
    every step (each is read by the next step before the product after it overwrites it);
    ``dgates`` is then a contiguous ``(B, G*H)``."""
    H = w.shape[1]
    G = w.shape[0] // H
    if small_gemm(lib, B):
        if mode == MaskMode.UNTIED:                                         # d_k @ W_k
            gk = SmallGemm(lib, *[w[k * H:(k + 1) * H] for k in range(G)])
            buf = w.new_empty(G, B, H)
            r = list(buf.unbind(0))

            def untied(d):
                gk.into(d.data_ptr(), G * H, B, buf.data_ptr(), H, a_gs=H, c_gs=B * H)
                return r, MaskMode.UNTIED
            return untied
        g = SmallGemm(lib, w)                                                # d @ W_hh
        buf = w.new_empty(B, H)
        mul = m.data_ptr() if mode == MaskMode.TIED else None

        def one(d):
            g.into(d.data_ptr(), G * H, B, buf.data_ptr(), H, mul=mul, ldm=H)
            return buf, MaskMode.NONE
        return one
    if mode == MaskMode.UNTIED:
        lin_k = BlockLinear(w.view(G, H, H).transpose(1, 2), B, packed,       # d_k @ W_k
                            pack=H >= BlockLinear.PACK_MIN)
        return lambda d: (lin_k.each(d.view(B, G, H).transpose(0, 1)), MaskMode.UNTIED)
    lin_t = Linear(w.t(), B, packed, pack=False)
    return lambda d: (lin_t.mul(d, m), MaskMode.NONE)


def rec_grad(r: Product, r_mode: MaskMode, m: Optional[Tensor]) -> Tensor:
    """``∂h_{t-1}`` (through ``W_hh``) from a recurrent product ``r``: ``r`` as is (NONE),
    ``r ∘ m`` (TIED) or ``Σ_k r_k ∘ m_k`` (UNTIED: ``r`` the ``G`` products, or a tensor viewed
    as ``(G, B, H)``)."""
    if r_mode == MaskMode.NONE:
        return r
    if r_mode == MaskMode.TIED:
        return r * m
    if isinstance(r, Tensor):
        return (r.view(m.shape) * m).sum(0)
    out = r[0] * m[0]
    for k in range(1, len(r)):
        out.addcmul_(r[k], m[k])
    return out


def gate_ptrs(r: Product):
    """The addresses of a recurrent product's blocks as the backward kernels read them
    (``const float *const *r``): one for a ``(B, H)`` tensor, one per gate for untied masks."""
    if isinstance(r, Tensor):
        return (ctypes.c_void_p * 1)(r.data_ptr())
    return (ctypes.c_void_p * len(r))(*[x.data_ptr() for x in r])


def weight_grad(d: Tensor, h0: Tensor, out: Tensor, m: Optional[Tensor], mode: MaskMode,
                packed: bool) -> Tensor:
    """``dW_hh = Σ_t d_tᵀ (h_{t-1} ∘ m)`` as one product (one per gate block if untied);
    ``d`` is ``(T, B, G*H)``, ``h_{t-1}`` is rebuilt from ``h0`` and ``out`` (T, B, H)."""
    T, B, G = d.shape
    H = out.shape[2]
    hs = torch.cat([h0.unsqueeze(0), out[:-1]]).view(T * B, H)
    d2 = d.view(T * B, G)
    if mode == MaskMode.NONE:
        return mm_tn(d2, hs, packed)
    if mode == MaskMode.TIED:
        return mm_tn(d2, (hs.view(T, B, H) * m).view(T * B, H), packed)
    blocks = [mm_tn(d2[:, k * H:(k + 1) * H], (hs.view(T, B, H) * m[k]).view(T * B, H), packed)
              for k in range(G // H)]
    return torch.cat(blocks)


def mask_grad(d: Tensor, h0: Tensor, out: Tensor, w: Tensor, mode: MaskMode) -> Tensor:
    """``∂L/∂m`` of the recurrent mask, for learned rates (a mask that requires grad): with
    ``pre_t = W_hh (h_{t-1} ∘ m)``, ``∂m = Σ_t h_{t-1} ∘ (d_t W_hh)`` (tied, ``(B, H)``) or per
    gate block ``∂m_k = Σ_t h_{t-1} ∘ (d_{t,k} W_k)`` (untied, ``(G, B, H)``), ``d`` ``(T, B, G*H)``
    the gradient of the recurrent pre-activations, ``h_{t-1}`` rebuilt from ``h0`` and ``out``.
    One product after the loop, the size of the weight gradient's."""
    T, B, G = d.shape
    H = out.shape[2]
    hs = torch.cat([h0.unsqueeze(0), out[:-1]])                        # (T, B, H)
    if mode == MaskMode.TIED:
        return ((d.reshape(T * B, G) @ w).view(T, B, H) * hs).sum(0)
    blocks = [((d[..., k * H:(k + 1) * H].reshape(T * B, H) @ w[k * H:(k + 1) * H]).view(T, B, H)
               * hs).sum(0) for k in range(G // H)]
    return torch.stack(blocks)


def masked_h0(h0: Tensor, m: Optional[Tensor], mode: MaskMode) -> Tensor:
    """The first step's product input ``h0 ∘ m`` (``(B, H)`` tied, ``(G, B, H)`` untied; ``h0``
    itself without a mask). The fused forward kernels then write each next ``h ∘ m`` into this
    same buffer, after the step's product has read it."""
    if mode == MaskMode.NONE:
        return h0
    return (h0 * m if mode == MaskMode.TIED else h0.unsqueeze(0) * m).contiguous()


def ptr_steps(x: Tensor):
    """(base address, bytes per time step) of a contiguous (T, ...) tensor."""
    return x.data_ptr(), x[0].numel() * x.element_size() if x.shape[0] else 0


def forward_steps(step, out: Tensor, h0: Tensor, w: Tensor, m: Optional[Tensor],
                  mode: MaskMode, packed: bool, add: Optional[Tensor] = None, lib=None) -> None:
    """The forward loop around a fused C step kernel. For t = 0 … T-1: the recurrent product
    ``pre = (h_{t-1} ∘ m) W_hhᵀ`` (plus ``add[t]``, fused by oneDNN, when the mask is tied or
    absent and the product goes through oneDNN), then ``step(t, pre, s_pb, hm, add_x)``:
    ``pre`` is an array of ``G`` addresses, and the kernel reads gate k of sample b, unit j at
    ``pre[k][b*s_pb + j]`` (one product's output, the gates side by side; or one product per
    gate for untied masks, not stacked), adds ``add[t]`` itself when ``add_x``, writes ``h_t``
    to ``out[t]`` and, with a mask, ``h_t ∘ m`` to the address ``hm`` (None without a mask), the
    next step's product input. With ``small_gemm(lib, B)`` the products go through
    ``SmallGemm`` into one buffer reused at every step."""
    T, B, H = out.shape
    G = w.shape[0] // H
    untied = mode == MaskMode.UNTIED
    hm = masked_h0(h0, m, mode)
    hm_ptr = None if mode == MaskMode.NONE else hm.data_ptr()
    ptrs = ctypes.c_void_p * G
    with_x = add is not None
    if lib is not None:       # the step kernels' threads: as many as torch's
        lib.set_threads(torch.get_num_threads())
    # one (B, H) x (H, G*H) product a step: the C kernel up to FWD_MAX_H units, oneDNN above
    if small_gemm(lib, B) and (untied or H < SmallGemm.FWD_MAX_H):
        es = w.element_size()
        if untied:      # gate k: (h ∘ m_k) @ W_kᵀ, h ∘ m_k at hm[k]
            gk = SmallGemm(lib, *[w[k * H:(k + 1) * H].t() for k in range(G)])
            buf = out.new_empty(G, B, H)
            pre = ptrs(*[buf[k].data_ptr() for k in range(G)])
            for t in range(T):
                gk.into(hm_ptr, H, B, buf.data_ptr(), H, a_gs=B * H, c_gs=B * H)
                step(t, pre, H, hm_ptr, with_x)
            return
        g = SmallGemm(lib, w.t())
        buf = out.new_empty(B, G * H)
        b0 = buf.data_ptr()
        pre = ptrs(*[b0 + k * H * es for k in range(G)])
        a = hm.data_ptr()
        for t in range(T):
            g.into(a, H, B, b0, G * H)
            step(t, pre, G * H, hm_ptr, with_x)
            if hm_ptr is None:
                a = out[t].data_ptr()
        return
    if untied:
        lin_k = BlockLinear(w.view(G, H, H), B, packed)  # gate k: (h ∘ m_k) @ W_kᵀ
    else:
        lin = Linear(w, B, packed)
        gate = H * w.element_size()                      # bytes from one gate to the next
    for t in range(T):
        if untied:
            pre = lin_k.each(hm)                                         # G × (B, H)
            step(t, ptrs(*[p.data_ptr() for p in pre]), H, hm_ptr, with_x)
        else:
            pre = lin(hm) if add is None else lin.add(hm, add[t])        # (B, G*H)
            p0 = pre.data_ptr()
            step(t, ptrs(*[p0 + k * gate for k in range(G)]), pre.stride(0), hm_ptr, False)
        if hm_ptr is None:
            hm = out[t]


def reverse_steps(step, d: Tensor, dhT: Tensor, w: Tensor, m: Optional[Tensor],
                  mode: MaskMode, packed: bool, need_h0: bool, lib=None) -> Optional[Tensor]:
    """The reverse loop of every backward pass (a step is one fused C call or the torch ops
    of ``_lstm._backward_loop``/``_gru._backward_loop``). For t = T-1 … 0:
    ``step(t, r, r_mode)`` runs step t given the recurrent product ``r`` from step t+1
    (``dhT`` at the last step, not to be written to) in the layout ``r_mode`` (see
    ``rec_product``), and writes ``d[t]``, the step's gradient through ``W_hh``; then
    ``r = d[t] @ W_hh`` (through ``SmallGemm`` with ``small_gemm(lib, B)``, ``d`` contiguous).
    Returns ``∂h_0`` through ``W_hh`` when ``need_h0`` (else None)."""
    T, B = d.shape[:2]
    r, r_mode = dhT.contiguous(), MaskMode.NONE
    rec = rec_product(w, m, mode, B, packed, lib)
    if lib is not None:
        lib.set_threads(torch.get_num_threads())
    for t in range(T - 1, -1, -1):
        step(t, r, r_mode)
        if t > 0 or need_h0:
            r, r_mode = rec(d[t])
    return rec_grad(r, r_mode, m) if need_h0 else None
