"""Variational LSTM speed: ``rnndrop.fast`` vs the fused ``torch.nn.LSTM`` vs the autograd loop.

Forward + backward of a 2-layer LSTM (T × B × H, input size H) at PTB sizes:
small H=200 T=20, medium H=650 T=35, large H=1500 T=35, batch 20. Variants, interleaved in one
process (round-robin, one call of each per round), medians reported with ratio to ``nn.LSTM``:

- ``nn.LSTM``     fused kernel (oneDNN on CPU, cuDNN on GPU), no recurrent dropout;
- ``reference``   input projection (one GEMM per layer) + ``rnndrop._recurrence.lstm_recurrence``
                  with per-sample tied masks on h_{t-1} (the plain autograd loop);
- ``fast tied``   same projection + ``rnndrop.fast.lstm_recurrence``, tied (B, H) masks;
- ``fast untied`` same with untied (4, B, H) masks;
- ``... +lin``    (CPU) same, with the projection through ``rnndrop.fast.linear``, not ``F.linear``;
- ``... eager``   (CUDA) same as ``fast tied/untied`` with CUDA-graph replay turned off;
- ``rnndrop.LSTM`` the library module with ``dropout_hidden=0.5`` (whatever backend it picks).

``--cell gru``: the same variants for a GRU (``nn.GRU``, ``gru_recurrence``, untied masks
``(3, B, H)``, ``rnndrop.GRU``).

``--bidirectional --packed``: a text classifier's encoder instead. A bidirectional layer (1 and 2
layers, H=256, input 256) over a ``PackedSequence`` of B=64 reviews whose lengths are drawn from
the IMDB training reviews (tokenised as the IMDB study does, capped at 400; ``--data`` or
``$RNNDROP_DATA``), forward + backward: ``nn.LSTM(bidirectional=True)`` without dropout against
``rnndrop.LSTM(bidirectional=True)`` with per-sample recurrent dropout (``dropout_hidden=0.25``,
tied and untied), without dropout, and on the padded batch with ``lengths=``; also
``nn.LSTM`` on the padded batch, which ignores the lengths (on CPU torch's packed kernels are
far slower than its padded one). The same batches for every variant, interleaved.

Memory: bytes of the tensors autograd saves for backward during one forward (counted once per
storage, parameters and the input excluded) via ``torch.autograd.graph.saved_tensors_hooks``, as
a ratio to ``nn.LSTM``; on CUDA also the peak ``torch.cuda.max_memory_allocated`` above the
memory held before the call. Measures and prints; asserts nothing.

    python benchmarks/variational_lstm.py [--device cuda] [--cell lstm|gru]
                                          [--sizes small,medium,large] [--repeats 7] [--threads N]
    python benchmarks/variational_lstm.py --bidirectional --packed [--cell gru] [--repeats 7]
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))

from rnndrop import _recurrence, fast  # noqa: E402

SIZES = {"small": (200, 20), "medium": (650, 35), "large": (1500, 35)}
BATCH = 20
P_HIDDEN = 0.5


def _masks(shape, n, device, gen):
    return [torch.bernoulli(torch.full(shape, 1 - P_HIDDEN, device=device), generator=gen)
            / (1 - P_HIDDEN) for _ in range(n)]


def make_variants(H, T, device, layers=2, cell="lstm"):
    torch.manual_seed(0)
    gen = torch.Generator(device=device).manual_seed(0)
    G = 4 if cell == "lstm" else 3
    net = (torch.nn.LSTM if cell == "lstm" else torch.nn.GRU)(H, H, layers).to(device)
    x = torch.randn(T, BATCH, H, device=device, requires_grad=True)
    ws = [[getattr(net, f"{n}_l{k}") for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
          for k in range(layers)]
    tied = _masks((BATCH, H), layers, device, gen)
    untied = _masks((G, BATCH, H), layers, device, gen)
    zeros = torch.zeros(BATCH, H, device=device)

    def stacked(lib, masks, proj=F.linear):
        def run():
            inp = x
            for (w_ih, w_hh, b_ih, b_hh), m in zip(ws, masks):
                if cell == "lstm":
                    xp = proj(inp, w_ih, b_ih + b_hh)            # one GEMM for all steps
                    inp, _, _ = lib.lstm_recurrence(xp, zeros, zeros, w_hh, m)
                else:  # GRU: b_hh stays inside the recurrence (it is gated by r)
                    xp = proj(inp, w_ih, b_ih)
                    inp, _ = lib.gru_recurrence(xp, zeros, w_hh, b_hh, m)
            return inp
        return run

    base = "nn.LSTM" if cell == "lstm" else "nn.GRU"
    variants = {
        base: lambda: net(x)[0],
        "reference": stacked(_recurrence, tied),
        "fast tied": stacked(fast, tied),
        "fast untied": stacked(fast, untied),
    }
    if device.type == "cpu":  # fast.linear is F.linear off-CPU
        variants["fast tied+lin"] = stacked(fast, tied, fast.linear)
        variants["fast untied+lin"] = stacked(fast, untied, fast.linear)
    else:  # the CUDA loops with and without CUDA-graph replay
        def eager(fn):
            def run():
                prev = fast.cuda_graphs_enabled()
                fast.set_cuda_graphs(False)
                try:
                    return fn()
                finally:
                    fast.set_cuda_graphs(prev)
            return run
        variants["fast tied eager"] = eager(stacked(fast, tied))
        variants["fast untied eager"] = eager(stacked(fast, untied))
    import rnndrop
    Module = rnndrop.LSTM if cell == "lstm" else rnndrop.GRU
    mod = Module(H, H, layers, dropout_hidden=P_HIDDEN).to(device)
    mod.load_state_dict(net.state_dict())
    mod.train()
    variants[f"rnndrop.{Module.__name__}"] = lambda: mod(x)[0]
    params = list(net.parameters()) + [x] + list(mod.parameters())
    return variants, params, net, x


PACKED_B, PACKED_H, MAX_LEN = 64, 256, 400


def imdb_lengths(data=None) -> list[int]:
    """Token counts of the IMDB training reviews, capped at ``MAX_LEN``."""
    from rnndrop.data.imdb import load_imdb, tokenize
    return [min(len(tokenize(text)), MAX_LEN) for text, _, _ in load_imdb(data, "train")]


def make_packed_variants(layers, device, cell, lengths_pool, batches=8):
    """Bidirectional encoders over ``batches`` PackedSequences of B reviews each."""
    import rnndrop
    from torch.nn.utils.rnn import pack_padded_sequence
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    pool = torch.tensor(lengths_pool)
    data = []
    for _ in range(batches):
        lens = pool[torch.randint(0, len(pool), (PACKED_B,), generator=g)]
        x = torch.randn(int(lens.max()), PACKED_B, PACKED_H, device=device, requires_grad=True)
        data.append((x, lens))
    Ref = torch.nn.LSTM if cell == "lstm" else torch.nn.GRU
    Ours = rnndrop.LSTM if cell == "lstm" else rnndrop.GRU
    net = Ref(PACKED_H, PACKED_H, layers, bidirectional=True).to(device)
    mods = {"tied": Ours.from_torch(net, dropout_hidden=0.25),
            "untied": Ours.from_torch(net, dropout_hidden=0.25, tied=False),
            "p=0": Ours.from_torch(net)}
    for m in mods.values():
        m.train()
    it = {"i": 0}

    def batch():
        x, lens = data[it["i"] % batches]
        return x, lens

    def packed(module):
        def run():
            x, lens = batch()
            return module(pack_padded_sequence(x, lens, enforce_sorted=False))[0].data
        return run

    def padded(module):
        def run():
            x, lens = batch()
            return module(x, lengths=lens)[0]
        return run

    name = Ref.__name__
    def padded_torch(module):   # torch on the padded batch: runs over the padding, no lengths
        def run():
            x, _ = batch()
            return module(x)[0]
        return run

    variants = {f"nn.{name} packed": packed(net),
                f"nn.{name} padded (ignores lengths)": padded_torch(net),
                "ours packed, recurrent dropout tied": packed(mods["tied"]),
                "ours packed, recurrent dropout untied": packed(mods["untied"]),
                "ours packed, no dropout": packed(mods["p=0"]),
                "ours padded+lengths, tied": padded(mods["tied"])}
    params = [p for m in (net, *mods.values()) for p in m.parameters()] + [x for x, _ in data]
    tokens = [int(lens.sum()) for _, lens in data]
    return variants, params, it, tokens


def main_packed(args, device, sync):
    try:
        pool = imdb_lengths(args.data)
    except Exception as e:   # no data set here: say so, measure nothing
        raise SystemExit(f"--packed needs the IMDB reviews (--data or $RNNDROP_DATA): {e}")
    print(f"IMDB train reviews: {len(pool)}, length capped at {MAX_LEN}: mean "
          f"{statistics.mean(pool):.0f}, median {statistics.median(pool):.0f}; B={PACKED_B}, "
          f"H={PACKED_H}, bidirectional, cell {args.cell}")
    for layers in (1, 2):
        variants, params, it, tokens = make_packed_variants(layers, device, args.cell, pool)
        base_name = next(iter(variants))
        for fn in variants.values():
            fwd_bwd(fn, params, sync)
        times = {k: [] for k in variants}
        for r in range(args.repeats):
            it["i"] = r          # every variant sees the same batch in a round
            for k, fn in variants.items():
                times[k].append(fwd_bwd(fn, params, sync))
        base = statistics.median(times[base_name])
        print(f"\n{layers} layer(s): fwd+bwd, {args.repeats} interleaved rounds, real tokens "
              f"per batch {statistics.mean(tokens):.0f}"
              + (", load %.2f" % os.getloadavg()[0] if hasattr(os, "getloadavg") else ""))
        print(f"{'variant':40s} {'median ms':>10s} {'min ms':>8s} {'max ms':>8s} "
              f"{'speed vs ' + base_name:>22s}")
        for k, ts in times.items():
            med = statistics.median(ts)
            print(f"{k:40s} {med * 1e3:10.2f} {min(ts) * 1e3:8.2f} {max(ts) * 1e3:8.2f} "
                  f"{base / med:21.2f}x")


def saved_bytes(fn, exclude):
    """Bytes of distinct storages autograd saves during ``fn()`` (excluding ``exclude``)."""
    skip = {t.untyped_storage().data_ptr() for t in exclude}
    seen = {}

    def pack(t):
        st = t.untyped_storage()
        if st.data_ptr() not in skip:
            seen[st.data_ptr()] = st.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    del out
    return sum(seen.values())


def fwd_bwd(fn, params, sync, cpu=None):
    """Wall seconds of one forward + backward; the process's CPU seconds appended to ``cpu``
    (on a shared machine the fairer clock: waits for a core do not count)."""
    for p in params:
        p.grad = None
    sync()
    t0, c0 = time.perf_counter(), time.process_time()
    fn().sum().backward()
    sync()
    if cpu is not None:
        cpu.append(time.process_time() - c0)
    return time.perf_counter() - t0


def peak_cuda(fn, params):
    for p in params:
        p.grad = None
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    fn().sum().backward()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() - base


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--cell", choices=("lstm", "gru"), default="lstm",
                    help="LSTM (default) or GRU, against nn.LSTM / nn.GRU")
    ap.add_argument("--sizes", default="small,medium,large")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: default)")
    ap.add_argument("--skip", default="", help="comma-separated variants to leave out")
    ap.add_argument("--tf32", action="store_true",
                    help="CUDA: allow TF32 in torch matmuls too (cuDNN's LSTM uses TF32 by default)")
    ap.add_argument("--bidirectional", action="store_true",
                    help="with --packed: bidirectional encoders over IMDB-like packed batches")
    ap.add_argument("--packed", action="store_true", help="see --bidirectional")
    ap.add_argument("--data", default=None, help="data root holding imdb/ (default $RNNDROP_DATA)")
    args = ap.parse_args(argv)
    if args.bidirectional != args.packed:
        ap.error("--bidirectional and --packed go together (the classifier-encoder benchmark)")
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.tf32:
        torch.backends.cuda.matmul.allow_tf32 = True
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    print(f"torch {torch.__version__}, python {platform.python_version()}, device {device}"
          + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else
             f" ({os.cpu_count()} cpus, {torch.get_num_threads()} threads)")
          + f", fast.packed_ok={fast.packed_ok()}")
    if device.type == "cuda":
        from rnndrop.fast import _triton
        print(f"triton ok: {_triton.triton_ok()}, cuda graphs: {fast.cuda_graphs_enabled()}, "
              f"matmul tf32: {torch.backends.cuda.matmul.allow_tf32}, "
              f"cudnn tf32: {torch.backends.cudnn.allow_tf32}")
    if hasattr(os, "getloadavg"):
        print("load average at start: %.2f %.2f %.2f" % os.getloadavg())
    if args.packed:
        return main_packed(args, device, sync)
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    for name in args.sizes.split(","):
        H, T = SIZES[name.strip()]
        variants, params, net, x = make_variants(H, T, device, cell=args.cell)
        base_name = next(iter(variants))
        variants = {k: v for k, v in variants.items() if k not in skip}
        for fn in variants.values():  # warm-up (packing, allocator, cuDNN plans)
            fwd_bwd(fn, params, sync)
        times = {k: [] for k in variants}
        cpu = {k: [] for k in variants}
        for _ in range(args.repeats):
            for k, fn in variants.items():
                times[k].append(fwd_bwd(fn, params, sync, cpu[k]))
        excl = params  # every parameter (nn.LSTM's and the module's copy) and the input
        mem = {k: saved_bytes(fn, excl) for k, fn in variants.items()}
        peak = {k: peak_cuda(fn, params) for k, fn in variants.items()} if device.type == "cuda" else {}
        base = statistics.median(times[base_name])
        print(f"\n{name}: H={H} T={T} B={BATCH} layers=2, fwd+bwd, {args.repeats} interleaved rounds"
              + (", load %.2f" % os.getloadavg()[0] if hasattr(os, "getloadavg") else ""))
        hdr = f"{'variant':16s} {'median ms':>10s} {'min ms':>8s} {'max ms':>8s} {'speed vs ' + base_name:>17s} {'saved MB':>9s} {'saved ratio':>11s}"
        if peak:
            hdr += f" {'peak MB':>8s} {'peak ratio':>10s}"
        else:
            hdr += f" {'CPU ms':>9s} {'CPU speed':>10s}"
        print(hdr)
        cbase = statistics.median(cpu[base_name])
        for k, ts in times.items():
            med = statistics.median(ts)
            line = (f"{k:16s} {med * 1e3:10.2f} {min(ts) * 1e3:8.2f} {max(ts) * 1e3:8.2f} "
                    f"{base / med:16.2f}x {mem[k] / 2**20:9.2f} {mem[k] / mem[base_name]:11.2f}")
            if peak:
                line += f" {peak[k] / 2**20:8.2f} {peak[k] / peak[base_name]:10.2f}"
            else:
                c = statistics.median(cpu[k])
                line += f" {c * 1e3:9.2f} {cbase / c:9.2f}x"
            print(line)
    if device.type == "cuda":
        from rnndrop.fast import _graphs
        print(f"\nCUDA-graph cache: {len(_graphs._CACHE)} graphs, static buffers "
              f"{_graphs.cache_bytes() / 2**20:.1f} MB (held between calls, not in the peaks above)")
    if hasattr(os, "getloadavg"):
        print("\nload average at end: %.2f %.2f %.2f" % os.getloadavg())


if __name__ == "__main__":
    main()
