"""MC-dropout evaluation speed: tokens/s of ``evaluate.perplexity(..., mc_samples=S)`` (what
``rnndrop eval --mc S`` runs) on the first windows of PTB test, beside the model's own work.

"The model's own work" is what MC dropout cannot avoid: for the same replicated windows, the
model's forward (embedding with word-type dropout, the LSTM with its masks) and the output
layer's logits ``(T, S·B, V)``, made a few thousand rows at a time (16 MB blocks, reused).
Everything else (the softmax normalisation, the gather of the targets, copies, allocations
and their page faults) is overhead; ratio = own work / evaluation (1.0: no overhead at all).
"Before" is the evaluation as it was until 2026-12-02 (the whole ``(T, S·B, V)`` log-softmax of
a window, then the targets gathered); "repeated lookups" the evaluation as it was until
2026-12-03, every replica looking up (and masking) its own copy of the window's tokens, where
the replicas now share one lookup (``model(x, state, replicas=S)``); ``--embedding`` times that
stage alone, both ways. Untrained weights (speed does not depend on them), the
recipe's model, ``eval_batch_size`` and ``mc_batch`` as ``rnndrop eval`` chooses them (or
``--mc-batch``). Interleaved repeats, medians of wall and CPU time; measures only.

    RNNDROP_DATA=../shared/data python benchmarks/mc_eval.py --recipe configs/ptb-medium-variational.toml
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

from rnndrop.config import load_config
from rnndrop.data.lm import load_lm_corpus
from rnndrop.data.text import batchify, bptt_windows
from rnndrop.evaluate import perplexity
from rnndrop.models.lm import RNNLanguageModel
from rnndrop.train import default_mc_batch


def replicated_passes(model, source, bptt: int, samples: int, chunk: int):
    """The model's forward over every window, ``chunk`` samples at a time, as the evaluation
    runs it (training mode: the masks on); yields ``(hidden (T, s·B, H), targets (T, s·B))``."""
    model.train()
    B = source.shape[1]
    for start in range(0, samples, chunk):
        s = min(chunk, samples - start)
        state = model.init_state(B * s)
        for _, x, y in bptt_windows(source, bptt):
            hidden, state = model(x, state, replicas=s)
            yield hidden, y.repeat(1, s)


class RepeatedLookups(torch.nn.Module):
    """``model`` as the evaluation ran it until 2026-12-03: the window's tokens repeated once
    per replica, each copy looked up and masked on its own."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def init_state(self, batch_size, device=None):
        return self.model.init_state(batch_size, device)

    def target_log_prob(self, hidden, targets):
        return self.model.target_log_prob(hidden, targets)

    def forward(self, x, state=None, replicas=1):
        return self.model(x.repeat(1, replicas), state)


@torch.no_grad()
def embedding_stage(model, source, bptt: int, samples: int, repeats: int) -> tuple[float, float]:
    """CPU seconds of the word-type-masked lookups of every window for ``samples`` replicas:
    (each replica its own lookup, one shared lookup); interleaved, medians."""
    model.train()
    windows = [x for _, x, _ in bptt_windows(source, bptt)]
    own, shared = [], []
    for _ in range(repeats):
        for out, fn in ((own, lambda x: model.embedding(x.repeat(1, samples))),
                        (shared, lambda x: model.embedding(x, samples))):
            t0 = time.process_time()
            for x in windows:
                fn(x)
            out.append(time.process_time() - t0)
    return statistics.median(own), statistics.median(shared)


@torch.no_grad()
def own_work(model, source, bptt: int, samples: int, chunk: int) -> None:
    """Forward and logits only (16 MB row blocks of logits, reused)."""
    rows = max(1, (1 << 22) // model.vocab_size)
    for hidden, _ in replicated_passes(model, source, bptt, samples, chunk):
        h = hidden.reshape(-1, hidden.shape[-1])
        for i in range(0, h.shape[0], rows):
            model.decoder.logits(h[i:i + rows])


@torch.no_grad()
def full_block_eval(model, source, bptt: int, samples: int, chunk: int) -> None:
    """The evaluation as it was before 2026-12-02: the whole ``(T, S·B, V)`` log-softmax per
    window, then the targets gathered from it (kept here as the "before" of speed.md)."""
    for hidden, y in replicated_passes(model, source, bptt, samples, chunk):
        model.log_prob(hidden).gather(-1, y.unsqueeze(-1))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recipe", default="configs/ptb-medium-variational.toml")
    ap.add_argument("--mc", type=int, default=100, help="MC samples S")
    ap.add_argument("--windows", type=int, default=2, help="test windows timed (bptt tokens each)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--mc-batch", type=int, default=0,
                    help="samples per pass (0: as rnndrop eval chooses)")
    ap.add_argument("--runs", nargs="+", default=["eval", "repeated", "before", "own"],
                    choices=["eval", "repeated", "before", "own"])
    ap.add_argument("--embedding", action="store_true",
                    help="also time the masked embedding lookups alone, shared and per replica")
    ap.add_argument("--profile", action="store_true", help="also print torch.profiler's top ops")
    ap.add_argument("--data", default=None, help="data root holding ptb/ (default $RNNDROP_DATA)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = load_config(args.recipe)
    root = args.data or os.environ.get("RNNDROP_DATA")
    corpus = load_lm_corpus(cfg.data, os.path.join(root, "ptb") if root else None)
    t = cfg.train
    torch.manual_seed(0)
    model = RNNLanguageModel.from_config(cfg.model, corpus.vocab)
    test = batchify(corpus.test, t.eval_batch_size)[: args.windows * t.bptt + 1]
    chunk = args.mc_batch or default_mc_batch(model, t)
    tokens = (test.shape[0] - 1) * test.shape[1]
    every = {"eval": lambda: perplexity(model, test, t.bptt, args.mc, mc_batch=chunk),
             "repeated": lambda: perplexity(RepeatedLookups(model), test, t.bptt, args.mc,
                                            mc_batch=chunk),
             "before": lambda: full_block_eval(model, test, t.bptt, args.mc, chunk),
             "own": lambda: own_work(model, test, t.bptt, args.mc, chunk)}
    runs = {k: every[k] for k in args.runs}
    times = {k: [] for k in runs}
    cpu = {k: [] for k in runs}             # the process's CPU time (user + system)
    sys_share = {k: [] for k in runs}       # kernel time (page faults) / CPU time
    for _ in range(args.repeats):
        for name, fn in runs.items():
            c0, t0 = os.times(), time.perf_counter()
            fn()
            wall, c1 = time.perf_counter() - t0, os.times()
            used = (c1.user - c0.user) + (c1.system - c0.system)
            times[name].append(wall)
            cpu[name].append(used)
            sys_share[name].append((c1.system - c0.system) / max(used, 1e-9))
    med = {k: statistics.median(v) for k, v in times.items()}
    c = {k: statistics.median(v) for k, v in cpu.items()}
    print(f"MC-dropout evaluation, {args.recipe}, S={args.mc} in passes of {chunk} samples, "
          f"eval batch {t.eval_batch_size}, {tokens} test tokens ({args.windows} windows of "
          f"{t.bptt}), torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"{args.repeats} interleaved repeats, load {os.getloadavg()[0]:.2f}")
    print(f"{'':<28}{'wall s':>9}{'tokens/s':>11}{'token-samples/s':>17}{'CPU s':>9}"
          f"{'of it kernel':>14}")
    names = {"eval": "evaluation (now)", "repeated": "repeated lookups (12-02)",
             "before": "before: (T,SB,V) block", "own": "own work (fwd+logits)"}
    for key in runs:
        v = med[key]
        print(f"{names[key]:<28}{v:>9.2f}{tokens / v:>11.1f}{tokens * args.mc / v:>17.0f}"
              f"{c[key]:>9.2f}{100 * statistics.median(sys_share[key]):>13.0f}%")
    for a, b in (("own", "eval"), ("repeated", "eval"), ("before", "eval")):
        if a in runs and b in runs:
            print(f"ratio {a} / {b}: {med[a] / med[b]:.3f} wall, {c[a] / c[b]:.3f} CPU time")
    if args.embedding:
        own_l, shared_l = embedding_stage(model, test, t.bptt, chunk, max(args.repeats, 5))
        print(f"masked embedding lookups of {args.windows} windows x {chunk} replicas: "
              f"per replica {1e3 * own_l:.2f} ms, shared {1e3 * shared_l:.2f} ms CPU "
              f"({own_l / max(shared_l, 1e-9):.2f}x)")
    if args.profile:
        from torch.profiler import ProfilerActivity, profile
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            perplexity(model, test, t.bptt, args.mc, mc_batch=chunk)
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))


if __name__ == "__main__":
    main()
