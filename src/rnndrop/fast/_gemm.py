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


def mm_tn(a: Tensor, b: Tensor, packed: bool) -> Tensor:
    """``a.T @ b`` for ``a`` (M × N1), ``b`` (M × N2) with any strides: a weight gradient
    ``Σ_rows dgatesᵀ h``. oneDNN reads the right operand's transposed view as it is and copies
    the left one to row-major itself; still faster here than MKL's transposed sgemm."""
    if packed:
        lp, _ = _ops()
        return lp(a.t(), b.t(), None, "none", [], "")
    return a.t().mm(b)
