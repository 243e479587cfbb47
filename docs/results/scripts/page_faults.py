"""What a large temporary costs when the allocator hands it back at every free: a 28 MB buffer
(the logits of a PTB medium step, 700 x 10,000 floats) filled when freshly allocated each time,
against the same buffer reused, and the minor page faults per fresh allocation. ``--keep`` first
sets glibc's mmap / trim / top-pad thresholds (``mallopt``) so that freed blocks stay in the
heap: what rnndrop tried and did not keep (speed.md, "Freed memory kept in the process").
Linux with glibc only. Measures only.

    python docs/results/scripts/page_faults.py [--keep]
"""
from __future__ import annotations

import argparse
import ctypes
import resource
import time

import torch

N = 7_000_000
M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3   # malloc.h


def keep_freed_memory() -> bool:
    mallopt = ctypes.CDLL(None).mallopt
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return all(mallopt(p, v) == 1 for p, v in ((M_MMAP_THRESHOLD, 32 << 20),
                                                 (M_TRIM_THRESHOLD, 1 << 30),
                                                 (M_TOP_PAD, 64 << 20)))


def per_call_ms(fn, n: int = 20) -> float:
    fn()
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t0) / n * 1e3


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--keep", action="store_true", help="set glibc's thresholds first")
    args = ap.parse_args()
    torch.set_num_threads(1)
    kept = keep_freed_memory() if args.keep else False
    buf = torch.empty(N)
    reused = per_call_ms(lambda: buf.fill_(1))
    buf = None  # freed before the fresh allocations
    f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    fresh = per_call_ms(lambda: torch.empty(N).fill_(1))
    faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0) / 21
    print(f"freed memory kept: {kept}; 28 MB filled: reused {reused:.2f} ms, freshly allocated "
          f"{fresh:.2f} ms, {faults:.0f} minor page faults per allocation")


if __name__ == "__main__":
    main()
