"""Training-step time and memory of the output layers: full vs sampled (k = 512, 1024, 4096) vs
adaptive softmax, at V = 10k (PTB) and V ≈ 100k (IMDB LM vocabulary). Measures only — asserts
nothing.

Two kinds of step, each timed (``--what``):

* ``layer``: the output layer alone, fed by an LSTM's hidden state: ``hidden`` is a leaf
  ``(T·B, H)`` tensor that requires grad (standing in for the LSTM output, whose gradient a real
  step must compute), ``loss = layer.loss(hidden, targets)``, ``backward``, SGD step on the
  layer's parameters.
* ``lm``: a whole language-model training step as ``rnndrop train`` does it:
  ``RNNLanguageModel`` (embedding → 1-layer LSTM → output layer, no dropout), forward over a
  ``(T, B)`` window with the carried state, loss summed over time, ``backward``, gradient-norm
  clipping at 5, SGD step.

Token ids (inputs and targets) are drawn from a Zipf-like (log-uniform) law over
frequency-sorted ids, like real text: this matters for the adaptive softmax, whose cost depends
on how many targets fall in the tail clusters (with uniform ids almost all would). The sampled
softmax draws ``k`` unique negatives from the log-uniform proposal (the default).

Time: all variants of one vocabulary size live in one process and are timed round-robin
(``--repeats`` rounds of ``--steps`` steps each, after warm-up), so a change in the machine's
load hits every variant alike; the median ms per step is reported, and the speed-up
``full / variant``.

Memory (CPU; ``tracemalloc`` does not see torch's allocations), two measures:

* ``saved``: bytes of the tensors autograd saves for backward during one forward, counted with
  ``torch.autograd.graph.saved_tensors_hooks`` (distinct storages, parameters excluded).
* ``peak``: the growth of the peak resident set size over three training steps, in a fresh
  subprocess per variant, measured after the model, the optimiser and the data have been built:
  activations, gradients (allocated by the first backward, e.g. the dense ``(V, H)`` decoder
  gradient) and temporaries. The peak is ``VmHWM`` of ``/proc/self/status`` (this process
  image's high-water mark). Not ``getrusage(RUSAGE_SELF).ru_maxrss``: on Linux a child started
  by fork + exec inherits the parent's peak at exec time, so with a big parent its
  ``ru_maxrss`` does not move (it is the fallback where ``/proc`` is missing, with the
  benchmark run per variant in a small parent, and then may read 0).

Both are ratios against the full softmax in the tables.

    nice python benchmarks/softmax.py                         # V = 10k and 100k, layer and lm
    nice python benchmarks/softmax.py --vocabs 100000 --what lm --repeats 7
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))

from rnndrop.models.lm import RNNLanguageModel  # noqa: E402
from rnndrop.softmax import LogUniformSampler, make_output_layer  # noqa: E402


def variants(ks, vocab):
    out = ["full"] + [f"sampled-{k}" for k in ks if k < vocab] + ["adaptive"]
    return out


def cutoffs_for(vocab):
    """[2000, 10000] (the recipes' default), the cutoffs below V; [V // 5] for tiny V."""
    return [c for c in (2000, 10000) if c < vocab] or [max(1, vocab // 5)]


def output_params(variant, vocab):
    if variant == "full":
        return "full", {}
    if variant.startswith("sampled-"):
        return "sampled", {"num_sampled": int(variant.split("-")[1]), "sampler": "log_uniform"}
    return "adaptive", {"cutoffs": cutoffs_for(vocab)}


class Case:
    """One variant's model, optimiser and data; ``step()`` runs one training step."""

    def __init__(self, what, variant, vocab, hidden, bptt, batch, device, seed=0):
        torch.manual_seed(seed)
        g = torch.Generator().manual_seed(seed)
        zipf = LogUniformSampler(vocab)
        kind, params = output_params(variant, vocab)
        self.what, self.device = what, device
        n = bptt * batch
        if what == "layer":
            self.module = make_output_layer(kind, hidden, vocab, **params).to(device)
            self.hidden = torch.randn(n, hidden, generator=g).mul_(0.5).to(device).requires_grad_()
            self.targets = zipf.sample(n, generator=g).to(device)
        else:
            self.module = RNNLanguageModel(vocab, hidden, num_layers=1, output=kind,
                                           **params).to(device)
            self.x = zipf.sample(n, generator=g).view(bptt, batch).to(device)
            self.y = zipf.sample(n, generator=g).view(bptt, batch).to(device)
            self.state = self.module.init_state(batch, device)
        self.module.train()
        self.opt = torch.optim.SGD(self.module.parameters(), lr=0.1)

    def forward_loss(self):
        if self.what == "layer":
            return self.module.loss(self.hidden, self.targets)
        out, state = self.module(self.x, self.state)
        self._next_state = tuple(s.detach() for s in state)
        return self.module.loss(out, self.y) * self.x.shape[0]

    def step(self):
        self.opt.zero_grad(set_to_none=True)
        if self.what == "layer":
            self.hidden.grad = None
        self.forward_loss().backward()
        if self.what == "lm":
            torch.nn.utils.clip_grad_norm_(self.module.parameters(), 5.0)
            self.state = self._next_state
        self.opt.step()

    def saved_bytes(self) -> int:
        params = {p.untyped_storage().data_ptr() for p in self.module.parameters()}
        seen = {}

        def pack(t):
            st = t.untyped_storage()
            ptr = st.data_ptr()
            if ptr not in params:
                seen[ptr] = st.nbytes()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            loss = self.forward_loss()
        del loss
        return sum(seen.values())


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def peak_rss_kb() -> int:
    """This process image's peak resident set size in kB (``VmHWM``; see the module docstring)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def child(spec: dict) -> None:
    """Subprocess: peak-RSS growth over 3 training steps of one variant (printed as JSON)."""
    if spec["threads"]:
        torch.set_num_threads(spec["threads"])
    case = Case(spec["what"], spec["variant"], spec["vocab"], spec["hidden"], spec["bptt"],
                spec["batch"], torch.device("cpu"))
    before = peak_rss_kb()
    for _ in range(3):
        case.step()
    after = peak_rss_kb()
    print(json.dumps({"peak_kb": after - before, "before_kb": before}))


def peak_rss_delta(args, what, variant, vocab) -> float:
    spec = {"what": what, "variant": variant, "vocab": vocab, "hidden": args.hidden,
            "bptt": args.bptt, "batch": args.batch, "threads": args.threads}
    r = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", json.dumps(spec)],
                       capture_output=True, text=True, check=True)
    return json.loads(r.stdout.strip().splitlines()[-1])["peak_kb"] * 1024


def run_vocab(args, vocab, what, device):
    names = variants(args.ks, vocab)
    cases = {v: Case(what, v, vocab, args.hidden, args.bptt, args.batch, device) for v in names}
    for c in cases.values():                           # warm-up
        for _ in range(args.warmup):
            c.step()
    sync(device)
    times = {v: [] for v in names}
    for _ in range(args.repeats):                      # interleaved rounds
        for v, c in cases.items():
            sync(device)
            t0 = time.perf_counter()
            for _ in range(args.steps):
                c.step()
            sync(device)
            times[v].append((time.perf_counter() - t0) / args.steps)
    saved = {v: c.saved_bytes() for v, c in cases.items()}
    del cases
    peak = {}
    if args.memory and device.type == "cpu":
        for v in names:
            peak[v] = peak_rss_delta(args, what, v, vocab)
    ms = {v: 1e3 * statistics.median(t) for v, t in times.items()}
    ntok = args.bptt * args.batch
    label = "output layer only (fed by a (T·B, H) hidden state)" if what == "layer" else \
        "whole LM step (embedding + 1-layer LSTM + output layer, clip, SGD)"
    print(f"\nV = {vocab}, {label}; H = {args.hidden}, T = {args.bptt}, B = {args.batch}")
    head = "| variant | ms/step | tokens/s | speed-up vs full | saved MB | saved / full |"
    sep = "|---|---|---|---|---|---|"
    if peak:
        head += " peak RSS growth MB | peak / full |"
        sep += "---|---|"
    print(head)
    print(sep)
    rows = {}
    for v in names:
        row = (f"| {v} | {ms[v]:.1f} | {ntok / ms[v] * 1e3:.0f} | {ms['full'] / ms[v]:.2f}× | "
               f"{saved[v] / 2**20:.1f} | {saved[v] / saved['full']:.3f} |")
        if peak:
            row += f" {peak[v] / 2**20:.1f} | {peak[v] / max(peak['full'], 1):.3f} |"
        print(row)
        rows[v] = {"ms": ms[v], "ms_all": [1e3 * t for t in times[v]], "saved": saved[v],
                   "peak": peak.get(v)}
    spread = {v: (min(t) * 1e3, max(t) * 1e3) for v, t in times.items()}
    print("min/max ms per round: " + ", ".join(f"{v} {a:.0f}/{b:.0f}" for v, (a, b) in spread.items()))
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--vocabs", type=int, nargs="+", default=[10_000, 100_000])
    ap.add_argument("--ks", type=int, nargs="+", default=[512, 1024, 4096])
    ap.add_argument("--what", nargs="+", choices=["layer", "lm"], default=["layer", "lm"])
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--bptt", type=int, default=35)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=2, help="timed steps per round")
    ap.add_argument("--repeats", type=int, default=5, help="interleaved rounds")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    ap.add_argument("--no-memory", dest="memory", action="store_false",
                    help="skip the peak-RSS subprocesses")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--json", help="also write the numbers to this file")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(json.loads(args.child))
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    try:
        load = os.getloadavg()
    except OSError:
        load = None
    print(f"softmax benchmark: torch {torch.__version__}, {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}, device {device}, "
          f"load average at start {load}")
    results = {}
    for what in args.what:
        for vocab in args.vocabs:
            results[f"{what}-{vocab}"] = run_vocab(args, vocab, what, device)
    try:
        print(f"load average at end {os.getloadavg()}")
    except OSError:
        pass
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "results": results}, f, indent=1)


if __name__ == "__main__":
    main()
