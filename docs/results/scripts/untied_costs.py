"""Where the untied LSTM recurrence lost time on CPU before the C products (issue 16): the
measurements behind speed.md's "The recurrent products in C", in one script.

1. oneDNN's fixed cost per call: a tiny ``(20 × 16)(16 × 16)`` product through
   ``_linear_pointwise`` (packed weight) against ``torch.mm``.
2. One product a step at medium size: one gate block ``(20 × 650)(650 × 650)`` through oneDNN
   (packed), ``torch.mm`` (MKL), MKL's own packed API (``cblas_sgemm_pack`` /
   ``cblas_sgemm_compute``, exported by ``libtorch_cpu``; skipped where absent) and the C kernel
   (``SmallGemm``); the tied ``(20 × 650)(650 × 2600)`` product through oneDNN and C.
3. The backward blocks' preparation at H = 650: a transposed copy and a reorder per block.
4. The weight gradient's left operand ``dgatesᵀ`` (700 × 2600 → 2600 × 700): torch's strided
   copy against the blocked C transpose.

Wall µs (ms where said), medians of interleaved rounds, one thread unless ``--threads``.
Measures only. ``OMP_NUM_THREADS=1 python docs/results/scripts/untied_costs.py``
"""
from __future__ import annotations

import argparse
import ctypes
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..",
                                "src"))

from rnndrop.fast import _cext, _gemm  # noqa: E402


def median_us(fns: dict, rounds: int, calls: int) -> dict:
    for f in fns.values():
        f()
    times = {k: [] for k in fns}
    for _ in range(rounds):
        for k, f in fns.items():
            t0 = time.perf_counter()
            for _ in range(calls):
                f()
            times[k].append((time.perf_counter() - t0) / calls * 1e6)
    return {k: statistics.median(v) for k, v in times.items()}


def mkl_packed():
    """(pack, compute) from libtorch_cpu's MKL, or None."""
    path = os.path.join(os.path.dirname(torch.__file__), "lib", "libtorch_cpu.so")
    try:
        lib = ctypes.CDLL(path)
        pack, compute, size = lib.cblas_sgemm_pack, lib.cblas_sgemm_compute, \
            lib.cblas_sgemm_pack_get_size
    except (OSError, AttributeError):
        return None
    P, I, F = ctypes.c_void_p, ctypes.c_int, ctypes.c_float
    size.restype, size.argtypes = ctypes.c_size_t, [I] * 4
    pack.argtypes = [I, I, I, I, I, I, F, P, I, P]
    compute.argtypes = [I, I, I, I, I, I, P, I, P, I, F, P, I]
    return pack, compute, size


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=7)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    lib = _cext.kernels()
    lp, rw = _gemm._ops()
    g = torch.Generator().manual_seed(0)
    print(f"torch {torch.__version__}, {args.threads} thread(s), {args.rounds} rounds, "
          f"load {os.getloadavg()[0]:.2f}")

    x16, w16 = torch.randn(20, 16, generator=g), torch.randn(16, 16, generator=g)
    wp16 = rw(w16, 20)
    r = median_us({"oneDNN packed": lambda: lp(x16, wp16, None, "none", [], ""),
                   "torch.mm": lambda: x16.mm(w16)}, args.rounds, 2000)
    print("1. (20 x 16)(16 x 16), µs per call: " + ", ".join(f"{k} {v:.1f}" for k, v in r.items()))

    B, H = 20, 650
    x = torch.randn(B, H, generator=g)
    w = torch.randn(4 * H, H, generator=g) * 0.05
    wk = w[:H]
    wpk, wp4 = rw(wk, B), rw(w, B)
    fns = {"oneDNN packed": lambda: lp(x, wpk, None, "none", [], ""),
           "torch.mm": lambda: x.mm(wk.t())}
    out = torch.empty(B, H)
    mkl = mkl_packed()
    if mkl is not None:
        pack, compute, size = mkl
        RM, NT, TR, PK, BM = 101, 111, 112, 151, 162
        buf = torch.empty(size(BM, B, H, H) // 4 + 16)
        pack(RM, BM, TR, B, H, H, 1.0, wk.data_ptr(), H, buf.data_ptr())
        fns["MKL packed API"] = lambda: compute(RM, NT, PK, B, H, H, x.data_ptr(), H,
                                                buf.data_ptr(), H, 0.0, out.data_ptr(), H)
    c4 = torch.empty(B, 4 * H)
    if lib is not None:
        sg, sg4 = _gemm.SmallGemm(lib, wk.t()), _gemm.SmallGemm(lib, w.t())
        fns["C kernel"] = lambda: sg.into(x.data_ptr(), H, B, out.data_ptr(), H)
        fns["tied, C kernel"] = lambda: sg4.into(x.data_ptr(), H, B, c4.data_ptr(), 4 * H)
    fns["tied, oneDNN packed"] = lambda: lp(x, wp4, None, "none", [], "")
    r = median_us(fns, args.rounds, 200)
    print("2. (20 x 650)(650 x 650) per product, µs: "
          + ", ".join(f"{k} {v:.0f}" for k, v in r.items()))

    blocks = w.view(4, H, H).transpose(1, 2)
    r = median_us({"4 transposed copies + 4 reorders": lambda: [rw(b.contiguous(), B)
                                                                 for b in blocks.unbind(0)]},
                  args.rounds, 10)
    print("3. backward blocks packed, H = 650, ms per call: "
          + ", ".join(f"{k} {v / 1e3:.2f}" for k, v in r.items()))

    a = torch.randn(700, 2600, generator=g)
    r = median_us({"torch a.t().contiguous()": lambda: a.t().contiguous(),
                   "_gemm.transposed (C)": lambda: _gemm.transposed(a)}, args.rounds, 20)
    print("4. (700, 2600) transposed, ms: " + ", ".join(f"{k} {v / 1e3:.2f}" for k, v in r.items()))


if __name__ == "__main__":
    main()
