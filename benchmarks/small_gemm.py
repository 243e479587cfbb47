"""The per-step recurrent products: ``rnndrop.fast``'s C kernel (``_gemm.SmallGemm``) beside
oneDNN's packed linear (what the C loops used before) and ``torch.mm`` (MKL), at the shapes
of a training step (batch ``M`` rows).

- ``fwd``: ``(h ∘ m) W_hhᵀ``, K = H, N = 4H (LSTM) or 3H (GRU), tied masks: one product;
- ``fwd untied``: the same per gate block (G products of N = H);
- ``bwd``: ``dgates W_hh``, K = G·H, N = H;
- ``bwd untied``: per gate block, K = N = H, ``A`` the gate's columns of ``dgates``.

Each weight is packed once (as the loops pack it once per call), then the product repeated;
interleaved rounds, medians of wall time per product (µs). Ratio = oneDNN / C (> 1: the C
kernel is faster). Measures only; asserts nothing.

    OMP_NUM_THREADS=1 python benchmarks/small_gemm.py --threads 1
    python benchmarks/small_gemm.py --threads 2
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))

from rnndrop.fast import _cext, _gemm  # noqa: E402


def per_call(fn, n: int) -> float:
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t0) / n


def cases(M: int, H: int, G: int, lib):
    """name -> (C kernel, oneDNN, torch.mm) callables for one shape."""
    g = torch.Generator().manual_seed(0)
    w = torch.randn(G * H, H, generator=g) * 0.05
    lp, rw = _gemm._ops()
    out = {}
    # forward, tied: x (M, H) @ W^T (H, G*H)
    x = torch.randn(M, H, generator=g)
    c = torch.empty(M, G * H)
    sg = _gemm.SmallGemm(lib, w.t())
    wp = rw(w, M)
    wt = w.t()
    out["fwd"] = (lambda: sg.into(x.data_ptr(), H, M, c.data_ptr(), G * H),
                  lambda: lp(x, wp, None, "none", [], ""), lambda: x.mm(wt))
    # forward, untied: G products x_k (M, H) @ W_k^T
    xs = torch.randn(G, M, H, generator=g)
    cs = torch.empty(G, M, H)
    sgk = _gemm.SmallGemm(lib, *[w[k * H:(k + 1) * H].t() for k in range(G)])
    wpk = [rw(w[k * H:(k + 1) * H], M) for k in range(G)]
    wtk = [w[k * H:(k + 1) * H].t() for k in range(G)]
    out["fwd untied"] = (
        lambda: sgk.into(xs.data_ptr(), H, M, cs.data_ptr(), H, a_gs=M * H, c_gs=M * H),
        lambda: [lp(xs[k], wpk[k], None, "none", [], "") for k in range(G)],
        lambda: [xs[k].mm(wtk[k]) for k in range(G)])
    # backward, tied: d (M, G*H) @ W (G*H, H)
    d = torch.randn(M, G * H, generator=g)
    r = torch.empty(M, H)
    sb = _gemm.SmallGemm(lib, w)
    out["bwd"] = (lambda: sb.into(d.data_ptr(), G * H, M, r.data_ptr(), H),
                  lambda: lp(d, wt, None, "none", [], ""), lambda: d.mm(w))
    # backward, untied: d_k (M, H) columns of d @ W_k
    rs = torch.empty(G, M, H)
    sbk = _gemm.SmallGemm(lib, *[w[k * H:(k + 1) * H] for k in range(G)])
    blocks = [w[k * H:(k + 1) * H].t() for k in range(G)]   # oneDNN: (N, K) transposed views

    def onednn_bwd_untied():
        dg = d.view(M, G, H).transpose(0, 1).contiguous()
        return [lp(dg[k], blocks[k], None, "none", [], "") for k in range(G)]
    out["bwd untied"] = (
        lambda: sbk.into(d.data_ptr(), G * H, M, rs.data_ptr(), H, a_gs=H, c_gs=M * H),
        onednn_bwd_untied,
        lambda: [d[:, k * H:(k + 1) * H].mm(w[k * H:(k + 1) * H]) for k in range(G)])
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--calls", type=int, default=100, help="products per round and variant")
    ap.add_argument("--shapes", default="20x200x4,20x650x4,20x650x3,20x1500x4,64x256x4",
                    help="comma-separated MxHxG (batch, hidden size, gates)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    lib = _cext.kernels()
    if lib is None or not _gemm.packed_ok():
        raise SystemExit("needs the C kernels (a C compiler) and oneDNN's packed linear ops")
    print(f"torch {torch.__version__}, {os.cpu_count()} cpus, {args.threads} thread(s), "
          f"C panel width {lib.gemm_nr()}, {args.rounds} rounds x {args.calls} calls, "
          f"load {os.getloadavg()[0]:.2f}; wall µs per product (untied: all G)")
    print(f"{'M x H x G':12s} {'product':12s} {'C kernel':>9s} {'oneDNN':>9s} {'torch.mm':>9s}"
          f" {'oneDNN/C':>9s}")
    for shape in args.shapes.split(","):
        M, H, G = (int(v) for v in shape.split("x"))
        for name, fns in cases(M, H, G, lib).items():
            for fn in fns:
                fn()
            times = [[], [], []]
            for _ in range(args.rounds):
                for i, fn in enumerate(fns):
                    times[i].append(per_call(fn, args.calls))
            c, o, t = (statistics.median(ts) * 1e6 for ts in times)
            print(f"{shape:12s} {name:12s} {c:9.1f} {o:9.1f} {t:9.1f} {o / c:9.2f}")


if __name__ == "__main__":
    main()
