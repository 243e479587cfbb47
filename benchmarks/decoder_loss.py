"""The output layer's training loss, forward + backward: ``fast.linear_cross_entropy`` (one
Function: softmax - onehot made in place) beside the two ways to write it with torch calls.

- ``example``: what PyTorch's word_language_model example does, ``F.linear`` then
  ``log_softmax`` then the NLL;
- ``linear+ce``: ``fast.linear`` (oneDNN products) then ``F.cross_entropy``, rnndrop's loss
  until 2026-12-03;
- ``fused``: ``fast.linear_cross_entropy``, what ``FullSoftmax.loss`` runs now in training.

Rows ``N = bptt x batch`` of hidden states, PTB's 10,000 words; gradients accumulated into
``.grad`` as in training (so the weight gradient's layout is paid for). Interleaved repeats,
medians of the process's CPU time; ratio = example / fused. Measures only.

    OMP_NUM_THREADS=1 python benchmarks/decoder_loss.py --threads 1
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

import torch
import torch.nn.functional as F

from rnndrop import fast

SHAPES = {"small": (20 * 20, 200), "medium": (35 * 20, 650), "large": (35 * 20, 1500)}


def runs(N: int, H: int, V: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    h0 = torch.randn(N, H, generator=g)
    w = (torch.randn(V, H, generator=g) * 0.05).requires_grad_()
    b = torch.zeros(V, requires_grad=True)
    y = torch.randint(0, V, (N,), generator=g)
    losses = {
        "example": lambda h: F.nll_loss(F.log_softmax(F.linear(h, w, b), -1), y),
        "linear+ce": lambda h: F.cross_entropy(fast.linear(h, w, b), y),
        "fused": lambda h: fast.linear_cross_entropy(h, w, b, y),
    }

    def make(loss):
        def run():
            w.grad = b.grad = None
            h = h0.clone().requires_grad_()
            loss(h).backward()
            return h.grad, w.grad, b.grad
        return run
    return {k: make(f) for k, f in losses.items()}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", nargs="+", default=["small", "medium"], choices=list(SHAPES))
    ap.add_argument("--vocab", type=int, default=10000)
    ap.add_argument("--repeats", type=int, default=9)
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"output layer loss fwd + bwd, V={args.vocab}, torch {torch.__version__}, threads "
          f"{torch.get_num_threads()}, {args.repeats} interleaved repeats, load "
          f"{os.getloadavg()[0]:.2f}; CPU ms, medians")
    print(f"{'size':<8}{'rows x H':>12}{'example':>10}{'linear+ce':>11}{'fused':>9}"
          f"{'example/fused':>15}{'linear+ce/fused':>17}")
    for size in args.sizes:
        N, H = SHAPES[size]
        fns = runs(N, H, args.vocab)
        ref = fns["example"]()
        for k, f in fns.items():          # the same gradients, or the timing means nothing
            for a, c in zip(f(), ref):
                torch.testing.assert_close(a, c, rtol=1e-4, atol=1e-6)
        times = {k: [] for k in fns}
        for _ in range(args.repeats):
            for k, f in fns.items():
                t0 = time.process_time()
                f()
                times[k].append(time.process_time() - t0)
        m = {k: 1e3 * statistics.median(v) for k, v in times.items()}
        print(f"{size:<8}{f'{N} x {H}':>12}{m['example']:>10.1f}{m['linear+ce']:>11.1f}"
              f"{m['fused']:>9.1f}{m['example'] / m['fused']:>15.2f}"
              f"{m['linear+ce'] / m['fused']:>17.2f}")


if __name__ == "__main__":
    main()
