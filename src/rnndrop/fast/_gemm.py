"""Matrix products for the fast recurrences, with oneDNN packed weights on CPU when available.

On a small-core CPU the per-step product ``(B × H) @ (H × 4H)`` through ``torch.mm`` runs at a
fraction of the machine's rate (small M); oneDNN's linear with a weight packed once per sequence
(``torch.ops.mkldnn._reorder_linear_weight``) runs it about 2× faster here, and oneDNN's linear on
*dense* operands also beats ``torch.mm`` on the large weight-gradient products when both operands
have the reduction dimension contiguous ("NT" layout). These ops are internal to PyTorch: they are
probed once (``packed_ok()``) and every caller falls back to ``torch.mm``/``torch.addmm`` when they
are missing or fail (other torch versions, non-float32 dtypes, GPU).

Set ``RNNDROP_FAST_NO_MKLDNN=1`` to force the fallback (used by the tests to cover both paths).
"""
from __future__ import annotations

import os
from typing import Optional

import torch
from torch import Tensor

from . import _cext

_PROBE: Optional[bool] = None


def _ops():
    return torch.ops.mkldnn._linear_pointwise, torch.ops.mkldnn._reorder_linear_weight


def packed_ok() -> bool:
    """Whether oneDNN's packed linear ops exist and agree with ``torch.mm`` (probed once)."""
    global _PROBE
    if _PROBE is None:
        _PROBE = False
        try:
            if torch.backends.mkldnn.is_available():
                lp, rw = _ops()
                g = torch.Generator().manual_seed(0)
                w = torch.randn(12, 5, generator=g)
                x = torch.randn(3, 5, generator=g)
                other = torch.randn(3, 12, generator=g)
                wp = rw(w, 3)
                y1 = lp.binary(x, other, wp, None, "add")
                y2 = lp.binary(x, other, wp, None, "mul")
                y3 = lp(x, w, None, "none", [], "")
                ref = x @ w.t()
                _PROBE = bool(torch.allclose(y1, ref + other, atol=1e-5)
                              and torch.allclose(y2, ref * other, atol=1e-5)
                              and torch.allclose(y3, ref, atol=1e-5))
        except Exception:  # op missing or unusable in this build
            _PROBE = False
    return _PROBE


def use_packed(t: Tensor) -> bool:
    """Use the oneDNN path for tensors like ``t`` (CPU float32, ops available, not disabled)."""
    return (t.device.type == "cpu" and t.dtype == torch.float32
            and os.environ.get("RNNDROP_FAST_NO_MKLDNN", "") in ("", "0") and packed_ok())


def all_packed(*tensors: Optional[Tensor]) -> bool:
    """:func:`use_packed` for every operand given (``None``: an absent bias, no objection)."""
    return all(t is None or use_packed(t) for t in tensors)


class Linear:
    """``x @ w.T`` for many small ``x`` with one weight ``w`` (out × in).

    oneDNN path: ``pack=True`` reorders ``w`` once into oneDNN's blocked layout for batch
    ``batch``; ``pack=False`` hands ``w`` to oneDNN as it is, which is as fast when ``w`` is a
    transposed view of a row-major (in × out) matrix (oneDNN's own plain layout) - the case of
    the backward product ``dgates @ W_hh`` (``w = W_hh.t()``), which then needs no copy at all.
    """

    def __init__(self, w: Tensor, batch: int, packed: bool, pack: bool = True):
        self.packed = packed
        if packed:
            lp, rw = _ops()
            self._lp = lp
            self.w = rw(w, batch) if pack else w
        else:
            self.w = w.t()

    def __call__(self, x: Tensor) -> Tensor:
        if self.packed:
            return self._lp(x, self.w, None, "none", [], "")
        return x.mm(self.w)

    def add(self, x: Tensor, other: Tensor) -> Tensor:
        """``other + x @ w.T`` (a new tensor)."""
        if self.packed:
            return self._lp.binary(x, other, self.w, None, "add")
        return torch.addmm(other, x, self.w)

    def mul(self, x: Tensor, other: Optional[Tensor]) -> Tensor:
        """``(x @ w.T) * other`` (a new tensor); ``other=None`` means no product."""
        if other is None:
            return self(x)
        if self.packed:
            return self._lp.binary(x, other, self.w, None, "mul")
        return x.mm(self.w).mul_(other)


class BlockLinear:
    """``out[k] = x_k @ w_kᵀ`` for ``G`` square blocks ``w_k`` (``blocks`` is ``(G, N, K)``, any
    strides) and inputs ``x_k`` (a ``(G, B, K)`` tensor, any strides, or a sequence of ``G``
    ``(B, K)`` tensors): the per-gate products of untied masks, returned stacked as a contiguous
    ``(G, B, N)`` (``each``: as ``G`` tensors).

    oneDNN path: with ``pack=True`` each block packed once for batch ``batch``, then one packed
    product per block per step. ``torch.bmm`` goes to MKL, which re-packs every weight block at
    every call: at B = 20, H = 650 on one core that made the untied forward product 1.24 ms
    against 1.03 ms for four packed products (tied: one product, 0.86 ms) and the backward one
    1.66 against 1.17 ms. Each oneDNN call costs ~30 µs more than its share of one ``bmm``, so
    below ``BLOCKS_MIN`` units the ``bmm`` wins (fwd + bwd of one layer, B = 20, T = 35, one core
    of an AVX-512 EPYC: H = 400 bmm 46.7 / packed 52.5 ms, H = 500 91.3 / 84.0, H = 650 126.1 /
    114.8, H = 1000 370.6 / 315.0). ``pack=False`` hands the blocks over as they are, which is
    as fast as packed when each block is a transposed view of a row-major matrix (as for
    ``Linear``): the backward's ``d_k @ W_k`` below ``PACK_MIN`` units, where packing (a
    transposed copy and a reorder per block, 7.3 ms a call at H = 650:
    docs/results/scripts/untied_costs.py) costs more than it saves. The inputs are made
    contiguous first: oneDNN ran a strided ``x_k`` (a gate's columns of ``dgates``) slower.
    Fallback (no oneDNN, or smaller blocks): ``torch.bmm``.
    """

    BLOCKS_MIN = 500
    PACK_MIN = 1000

    def __init__(self, blocks: Tensor, batch: int, packed: bool, pack: bool = True):
        packed = packed and min(blocks.shape[1:]) >= self.BLOCKS_MIN
        self.packed = packed
        if packed:
            lp, rw = _ops()
            self._lp = lp
            self.w = ([rw(b.contiguous(), batch) for b in blocks.unbind(0)] if pack
                      else list(blocks.unbind(0)))
        else:
            self.w = blocks.transpose(1, 2)

    def __call__(self, xs) -> Tensor:
        if self.packed:
            return torch.stack(self.each(xs))
        return torch.bmm(xs if isinstance(xs, Tensor) else torch.stack(list(xs)), self.w)

    def each(self, xs) -> list[Tensor]:
        """The ``G`` products ``x_k @ w_kᵀ``, each a contiguous ``(B, N)``, not stacked (the
        fused kernels read them where they are: no copy; the ``bmm`` fallback's are views)."""
        if self.packed:
            if isinstance(xs, Tensor):
                xs = xs.contiguous()
            return [self._lp(x, w, None, "none", [], "") for x, w in zip(xs, self.w)]
        return list(self(xs).unbind(0))


def cgemm_enabled(lib) -> bool:
    """Whether the per-step recurrent products go through the C kernel ``SmallGemm`` of the
    loaded kernels ``lib``. By default where it was built for AVX-512 (panels of 32 floats),
    the only build measured faster than oneDNN (an AVX2 build of it, run on an AVX-512 CPU, was
    0.64-1.0x of oneDNN there: benchmarks/small_gemm.py, speed.md); ``RNNDROP_FAST_CGEMM=1``
    takes it on any build (the tests do), ``=0`` never (oneDNN or ``torch.mm`` as before)."""
    flag = os.environ.get("RNNDROP_FAST_CGEMM", "")
    if flag == "0":
        return False
    return flag == "1" or lib.gemm_nr() >= 32


class SmallGemm:
    """``C_g = A_g B_g`` for ``G`` products at once (the gate blocks of untied masks; ``G = 1``
    otherwise), each of a small-batch ``A_g`` (``M`` rows, ``M`` at most ``MAX_BATCH``) and one
    ``B_g`` (``K × N``, any strides: a transposed view of ``W_hh``, ``W_hh`` itself or a gate
    block), through the C kernel ``gemm`` of ``_cext`` with every ``B_g`` packed once into
    panels (``gemm_pack``). The recurrent products of the C loops when ``lib`` is there and
    ``cgemm_enabled(lib)``: one ctypes call per step and no torch dispatch, outputs written into
    buffers the loop owns, and faster than oneDNN's packed linear at these shapes here
    (``_cext``'s comment; speed.md, "The recurrent products in C"). Threads:
    ``torch.get_num_threads()`` at construction, as OpenMP threads over the panels."""

    MAX_BATCH = 64   # measured up to B = 64 (parity with oneDNN there at two threads)
    # The tied forward product (N = G*H) from this many units goes to oneDNN: at H = 1500 the
    # C kernel ran it at 0.80-0.92x of oneDNN's packed linear (H = 650: 1.05-1.16x), while
    # every other product there stayed ahead (benchmarks/small_gemm.py, 2026-12-03).
    FWD_MAX_H = 1000

    def __init__(self, lib, *bs: Tensor):
        K, N = bs[0].shape
        nr = lib.gemm_nr()
        self.lib, self.G, self.K, self.N = lib, len(bs), K, N
        size = ((N + nr - 1) // nr) * K * nr
        self.bp = bs[0].new_empty(len(bs) * size)
        es = self.bp.element_size()
        for g, b in enumerate(bs):
            assert b.shape == (K, N)
            lib.gemm_pack(b.data_ptr(), b.stride(0), b.stride(1), K, N,
                          self.bp.data_ptr() + g * size * es)
        self.threads = torch.get_num_threads()

    def into(self, a: int, lda: int, M: int, c: int, ldc: int, a_gs: int = 0, c_gs: int = 0,
             mul: Optional[int] = None, ldm: int = 0) -> None:
        """Rows ``[0, M)`` of each ``A_g`` at address ``a`` + ``g * a_gs`` floats (row stride
        ``lda`` floats) times ``B_g`` into ``C_g`` at ``c`` + ``g * c_gs`` (row stride ``ldc``),
        times ``mul`` (row stride ``ldm``; ``G = 1`` only) if given."""
        self.lib.gemm(a, lda, a_gs, self.bp.data_ptr(), self.G, M, self.K, self.N, c, ldc, c_gs,
                      mul, ldm, self.threads)


# Below this many elements the C call's set-up is not worth it; torch's copy is quick enough.
TRANSPOSE_MIN = 1 << 16


def transposed(a: Tensor) -> Tensor:
    """``a.t().contiguous()`` for a 2-D ``a``: through the blocked C kernel (``_cext``) for a large
    CPU float32 ``a`` with unit column stride, else torch's copy. A weight gradient's left
    operand: at (700, 2600) torch's strided copy took 2.48 ms against 1.18 ms for the kernel,
    one thread of an AVX-512 EPYC (docs/results/scripts/untied_costs.py; speed.md, "The
    recurrent products in C")."""
    lib = _cext.kernels() if a.numel() >= TRANSPOSE_MIN else None
    if (lib is None or a.dim() != 2 or a.dtype != torch.float32 or a.device.type != "cpu"
            or a.stride(1) != 1 or a.stride(0) < a.shape[1]):
        return a.t().contiguous()
    R, C = a.shape
    out = a.new_empty(C, R)
    lib.set_threads(torch.get_num_threads())
    lib.transpose(a.data_ptr(), R, C, a.stride(0), out.data_ptr())
    return out


def mm_tn(a: Tensor, b: Tensor, packed: bool) -> Tensor:
    """``a.T @ b`` for ``a`` (M × N1), ``b`` (M × N2) with any strides: a weight gradient
    ``Σ_rows dgatesᵀ h``. oneDNN reads the right operand's transposed view as it is; the left
    one must be row-major, which ``transposed`` makes it; still faster here than MKL's
    transposed sgemm."""
    if packed:
        lp, _ = _ops()
        return lp(transposed(a), b.t(), None, "none", [], "")
    return a.t().mm(b)
