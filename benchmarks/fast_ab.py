"""Two versions of ``rnndrop.fast`` in one process: paired, interleaved rounds of a 2-layer
LSTM (or GRU) forward + backward, beside the fused ``torch.nn.LSTM``/``nn.GRU``.

``--base DIR`` names another source tree (a directory holding ``rnndrop/``, e.g. an extracted
``git archive <rev> src``); its ``rnndrop`` package is loaded a second time under the name
``rnndrop_base`` (the package imports its own modules relatively, so nothing of the working
tree leaks into it). Each variant builds its layers as ``benchmarks/variational_lstm.py``
does: the input projection through ``fast.linear`` (``b_ih + b_hh`` folded in for the LSTM),
then ``fast.lstm_recurrence``/``gru_recurrence`` with per-sample recurrent masks, tied
``(B, H)`` or untied ``(G, B, H)``; the same weights, input and masks in every variant.
Before timing, the gradients of each pair are compared (their largest difference printed).

Every round runs each variant once, in a fixed order; the process's CPU time and the wall time
are recorded (CPU time: on a shared machine the fairer clock at one thread; wall time: the one
that counts with more threads, whose waits CPU time also bills). Printed: medians and minima,
the ratio to the torch module, and for each pair the median and quartiles of the per-round
ratios base / new (> 1: the new tree is faster), on the clock ``--clock`` (default: CPU time at
one thread, wall time with more). Measures only; asserts nothing.

    git archive <rev> src | tar -x -C /tmp/base
    OMP_NUM_THREADS=1 python benchmarks/fast_ab.py --base /tmp/base/src --rounds 20
    OMP_NUM_THREADS=1 python benchmarks/fast_ab.py --base /tmp/base/src --cell gru
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import platform
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))

from rnndrop import fast  # noqa: E402

SIZES = {"small": (200, 20), "medium": (650, 35), "large": (1500, 35)}
BATCH, LAYERS, P_HIDDEN = 20, 2, 0.5


def load_base(src: str):
    """``rnndrop.fast`` of the tree ``src`` (holding ``rnndrop/``), as ``rnndrop_base.fast``."""
    init = os.path.join(src, "rnndrop", "__init__.py")
    if not os.path.isfile(init):
        raise SystemExit(f"--base {src}: no rnndrop/__init__.py there")
    spec = importlib.util.spec_from_file_location(
        "rnndrop_base", init, submodule_search_locations=[os.path.dirname(init)])
    mod = importlib.util.module_from_spec(spec)
    sys.modules["rnndrop_base"] = mod
    spec.loader.exec_module(mod)
    return importlib.import_module("rnndrop_base.fast")


def quartiles(xs):
    q = statistics.quantiles(xs, n=4) if len(xs) > 1 else [xs[0]] * 3
    return q[0], q[1], q[2]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--base", required=True, help="source tree holding the other rnndrop/")
    ap.add_argument("--cell", choices=("lstm", "gru"), default="lstm")
    ap.add_argument("--size", choices=SIZES, default="medium")
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--clock", choices=("cpu", "wall"), default=None)
    args = ap.parse_args()
    clock = args.clock or ("cpu" if args.threads == 1 else "wall")
    torch.set_num_threads(args.threads)
    libs = {"base": load_base(args.base), "new": fast}
    H, T = SIZES[args.size]
    G = 4 if args.cell == "lstm" else 3
    torch.manual_seed(0)
    net = (torch.nn.LSTM if args.cell == "lstm" else torch.nn.GRU)(H, H, LAYERS)
    x = torch.randn(T, BATCH, H, requires_grad=True)
    ws = [[getattr(net, f"{n}_l{k}") for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
          for k in range(LAYERS)]
    gen = torch.Generator().manual_seed(0)

    def masks(shape):
        return [torch.bernoulli(torch.full(shape, 1 - P_HIDDEN), generator=gen) / (1 - P_HIDDEN)
                for _ in range(LAYERS)]
    kinds = {"tied": masks((BATCH, H)), "untied": masks((G, BATCH, H))}
    zeros = torch.zeros(BATCH, H)

    def stacked(lib, ms):
        def run():
            inp = x
            for (w_ih, w_hh, b_ih, b_hh), m in zip(ws, ms):
                if args.cell == "lstm":
                    inp = lib.lstm_recurrence(lib.linear(inp, w_ih, b_ih + b_hh), zeros, zeros,
                                              w_hh, m)[0]
                else:
                    inp = lib.gru_recurrence(lib.linear(inp, w_ih, b_ih), zeros, w_hh, b_hh,
                                             m)[0]
            return inp
        return run

    torch_name = f"nn.{type(net).__name__}"
    variants = {torch_name: lambda: net(x)[0]}
    for kind, ms in kinds.items():
        for tree, lib in libs.items():
            variants[f"{tree} {kind}"] = stacked(lib, ms)
    params = list(net.parameters()) + [x]

    def fwd_bwd(fn):
        for p in params:
            p.grad = None
        c0, w0 = time.process_time(), time.perf_counter()
        fn().sum().backward()
        return time.process_time() - c0 if clock == "cpu" else time.perf_counter() - w0

    grads = {}
    for k, fn in variants.items():
        fwd_bwd(fn)
        grads[k] = [p.grad.clone() for p in params]
    times = {k: [] for k in variants}
    for _ in range(args.rounds):
        for k, fn in variants.items():
            times[k].append(fwd_bwd(fn))

    print(f"torch {torch.__version__}, python {platform.python_version()}, "
          f"{os.cpu_count()} cpus, {args.threads} thread(s), fast.packed_ok="
          f"{fast._gemm.packed_ok()}, load {os.getloadavg()[0]:.2f}")
    print(f"{args.cell} {args.size}: H={H} T={T} B={BATCH} layers={LAYERS}, fwd+bwd, "
          f"{args.rounds} interleaved rounds, {clock} ms; base = {args.base}")
    ref = statistics.median(times[torch_name])
    print(f"{'variant':14s} {'median':>8s} {'min':>8s} {'vs ' + torch_name:>12s}")
    for k, ts in times.items():
        med = statistics.median(ts)
        print(f"{k:14s} {med * 1e3:8.1f} {min(ts) * 1e3:8.1f} {ref / med:11.3f}x")
    print("paired, per round (median [quartiles]):")
    for kind in kinds:
        b, n = f"base {kind}", f"new {kind}"
        diff = max((u - v).abs().max().item() for u, v in zip(grads[b], grads[n]))
        q1, q2, q3 = quartiles([u / v for u, v in zip(times[b], times[n])])
        t1, t2, t3 = quartiles([u / v for u, v in zip(times[torch_name], times[n])])
        print(f"  {kind:7s} base/new {q2:.3f} [{q1:.3f}, {q3:.3f}]   "
              f"{torch_name}/new {t2:.3f} [{t1:.3f}, {t3:.3f}]   largest gradient difference "
              f"{diff:.2e}")


if __name__ == "__main__":
    main()
