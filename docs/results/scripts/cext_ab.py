"""What the fused C gate kernels add: rnndrop.LSTM/GRU (dropout_hidden=0.5, 2 layers, batch 20),
forward + backward, with the kernels on and off in turn inside one process (RNNDROP_FAST_CEXT is
read at every call), interleaved rounds, medians. Measures and prints; asserts nothing.

    python docs/results/scripts/cext_ab.py [--cell gru|lstm] [--repeats 9]
"""
import argparse
import os
import statistics
import time

import torch

import rnndrop

SIZES = ((200, 20), (650, 35), (1500, 35))


def measure(cell: str, H: int, T: int, repeats: int) -> None:
    torch.manual_seed(0)
    mod = getattr(rnndrop, cell.upper())(H, H, 2, dropout_hidden=0.5).train()
    x = torch.randn(T, 20, H, requires_grad=True)

    def step(flag: str) -> float:
        os.environ["RNNDROP_FAST_CEXT"] = flag
        for p in mod.parameters():
            p.grad = None
        t0 = time.perf_counter()
        mod(x)[0].sum().backward()
        return time.perf_counter() - t0

    step("1"), step("0")                       # warm-up (kernel build, oneDNN packing)
    times = {"1": [], "0": []}
    for _ in range(repeats):
        for flag in times:
            times[flag].append(step(flag))
    on, off = (statistics.median(times[f]) for f in ("1", "0"))
    print(f"{cell} H={H} T={T}: C kernels {on * 1e3:.2f} ms, torch ops {off * 1e3:.2f} ms, "
          f"speed-up {off / on:.2f}x")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cell", choices=("gru", "lstm"), default="gru")
    ap.add_argument("--repeats", type=int, default=9)
    args = ap.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    for H, T in SIZES:
        measure(args.cell, H, T, args.repeats)
