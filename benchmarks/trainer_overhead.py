"""The trainer against a bare loop: tokens/s of ``rnndrop train``'s ``LMTrainer`` beside a
training loop written like PyTorch's word_language_model example, on the same model, data and
windows.

The bare loop is the example's: forward, the loss (summed over the window where the recipe
says so) as the example computes it, the decoder's logits then ``log_softmax`` and the NLL
(``--bare-loss model``: the model's own ``loss``, which on CPU is one fused Function, so that
the ratio then isolates what the trainer adds around the step), ``backward``,
``clip_grad_norm_``, SGD by hand (``p -= lr * grad``), ``loss.item()`` once per step for its
running loss, hidden state detached. The trainer runs the real ``LMTrainer.train`` for the
same steps (``train.max_steps``), everything it reports included (step log, clipping record,
running perplexity, progress bar or log lines, the divergence checks, the signal-safe commit).
Only steps ``--warmup + 1 …`` are timed in both (the trainer's through its step hooks), so its
start (directory, lock) and its final checkpoint are not.
Interleaved: for each repeat, each scheme runs once in each form; medians; ratio bare / trainer
(≥ 1 means the trainer is as fast as the bare loop). ``--processes``: every run in a fresh
process of its own, as a user runs either (nothing a run leaves in the process, such as the
allocator's heap or oneDNN's primitive cache, reaches the next); by default all runs share this
one. Wall time and the process's CPU time
(user + system) both: on a shared machine the CPU time is the fairer of the two, since time
spent waiting for a core does not count. Measures only — asserts nothing.

    RNNDROP_DATA=../shared/data python benchmarks/trainer_overhead.py --size small
    RNNDROP_DATA=../shared/data python benchmarks/trainer_overhead.py --size medium --steps 20
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import torch
import torch.nn.functional as F

from rnndrop.config import RunConfig
from rnndrop.data.lm import load_lm_corpus
from rnndrop.data.text import batchify, bptt_windows
from rnndrop.models.lm import RNNLanguageModel
from rnndrop.train import LMTrainer

SIZES = {"small": (200, 20), "medium": (650, 35)}      # hidden size, bptt (Zaremba's recipes)
SCHEMES = {
    "none": {"scheme": "none"},
    "zaremba": {"scheme": "zaremba", "dropout": 0.5},
    "variational": {"scheme": "variational", "dropout_embedding": 0.1, "dropout_input": 0.5,
                    "dropout_hidden": 0.2, "dropout_output": 0.5, "tied_masks": False},
}


def config(size: str, scheme: str, steps: int, bptt: int | None, sync_every: int = 0) -> RunConfig:
    H, T = SIZES[size]
    cfg = RunConfig()
    cfg.model.hidden_size, cfg.model.num_layers, cfg.model.init_range = H, 2, 0.05
    for k, v in SCHEMES[scheme].items():
        setattr(cfg.model, k, v)
    t = cfg.train
    t.epochs, t.batch_size, t.bptt, t.lr, t.clip = 1, 20, bptt or T, 1.0, 5.0
    t.max_steps, t.checkpoint_every, t.seed, t.sync_every = steps, 0, 0, sync_every
    return cfg


def _now():
    return time.perf_counter(), time.process_time()


def _per_step(t0, t1, steps: int) -> tuple[float, float]:
    return (t1[0] - t0[0]) / steps, (t1[1] - t0[1]) / steps


def time_trainer(cfg, corpus, warmup: int, progress: bool) -> tuple[float, float]:
    """Seconds per step (wall, CPU) of ``LMTrainer.train`` over steps ``warmup + 1 … max_steps``."""
    marks = {}
    with tempfile.TemporaryDirectory() as out:
        trainer = LMTrainer(cfg, corpus, out, progress=progress, log=lambda *a: None)

        def hook(point):
            if point == "commit":
                marks["t0" if trainer.state.step == warmup else "t1"] = _now()
        trainer.hook = hook
        trainer.train()
    return _per_step(marks["t0"], marks["t1"], cfg.train.max_steps - warmup)


def example_loss(model, out, y):
    """The example's loss: the logits, ``log_softmax``, then the NLL (its ``nn.NLLLoss``)."""
    logits = model.decoder.logits(out.reshape(-1, out.shape[-1]))
    return F.nll_loss(F.log_softmax(logits, dim=-1), y.reshape(-1))


def time_bare(cfg, corpus, warmup: int, loss_of=example_loss) -> tuple[float, float]:
    """Seconds per step (wall, CPU) of the example-style loop on the same model and windows."""
    t = cfg.train
    torch.manual_seed(t.seed)
    model = RNNLanguageModel.from_config(cfg.model, corpus.vocab).train()
    data = batchify(corpus.train, t.batch_size)
    hidden, total = None, 0.0
    for i, (_, x, y) in enumerate(bptt_windows(data, t.bptt)):
        if i == warmup:
            t0 = _now()
        if i == t.max_steps:
            break
        hidden = None if hidden is None else tuple(h.detach() for h in hidden)
        model.zero_grad(set_to_none=True)
        out, hidden = model(x, hidden)
        loss = loss_of(model, out, y)
        (loss * x.shape[0] if t.loss_reduction == "sum_over_time" else loss).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), t.clip)
        with torch.no_grad():
            for p in model.parameters():
                p.add_(p.grad, alpha=-t.lr)
        total += loss.item()
    return _per_step(t0, _now(), t.max_steps - warmup)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", choices=SIZES, default="small")
    ap.add_argument("--schemes", nargs="+", default=list(SCHEMES), choices=list(SCHEMES))
    ap.add_argument("--steps", type=int, default=60, help="steps per run (the first --warmup untimed)")
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--bptt", type=int, default=None, help="window length (default: the recipe's)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--no-bar", action="store_true", help="the trainer without a progress bar")
    ap.add_argument("--sync-every", type=int, default=0,
                    help="the trainer's train.sync_every (0: its default, 1 on CPU)")
    ap.add_argument("--bare-loss", choices=("example", "model"), default="example",
                    help="the bare loop's loss: the example's log_softmax + NLL, or model.loss")
    ap.add_argument("--data", default=None, help="data root holding ptb/ (default $RNNDROP_DATA)")
    ap.add_argument("--processes", action="store_true",
                    help="each run in a fresh process (as a user runs the example or the trainer)")
    ap.add_argument("--one", nargs=2, metavar=("SCHEME", "FORM"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    root = args.data or os.environ.get("RNNDROP_DATA")
    cfg0 = config(args.size, "none", args.steps, args.bptt)
    corpus = load_lm_corpus(cfg0.data, os.path.join(root, "ptb") if root else None)
    loss_of = example_loss if args.bare_loss == "example" else (
        lambda model, out, y: model.loss(out, y))
    def measure(s, form):
        cfg = config(args.size, s, args.steps, args.bptt, args.sync_every)
        if form == "bare":
            return time_bare(cfg, corpus, args.warmup, loss_of)
        return time_trainer(cfg, corpus, args.warmup, not args.no_bar)

    if args.one:   # a child of --processes: one run, its (wall, CPU) per step as JSON
        print(json.dumps(measure(*args.one)))
        return

    def in_process(s, form):
        argv = [a for a in sys.argv[1:] if a != "--processes"]
        out = subprocess.run([sys.executable, os.path.abspath(__file__), *argv, "--one", s,
                              form], capture_output=True, text=True, check=True).stdout
        return tuple(json.loads(out.strip().splitlines()[-1]))

    run = in_process if args.processes else measure
    times = {(s, k): [] for s in args.schemes for k in ("bare", "trainer")}
    for _ in range(args.repeats):
        for s in args.schemes:
            times[s, "bare"].append(run(s, "bare"))
            times[s, "trainer"].append(run(s, "trainer"))
    H, T = SIZES[args.size]
    T = args.bptt or T
    tok = 20 * T
    print(f"trainer vs bare loop, size={args.size} (2 x {H} LSTM, bptt {T}, batch 20, PTB), "
          f"torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"{args.steps - args.warmup} timed steps x {args.repeats} interleaved repeats, "
          f"progress bar {'off' if args.no_bar else 'on'}, bare loss {args.bare_loss}, "
          f"sync_every {args.sync_every or 'default'}, "
          f"{'a fresh process per run' if args.processes else 'one process'}, "
          f"load {os.getloadavg()[0]:.2f}")
    print(f"{'scheme':<13}{'bare ms/step':>14}{'trainer ms/step':>17}{'bare tok/s':>12}"
          f"{'trainer tok/s':>15}{'ratio':>8}{'bare CPU ms':>13}{'trainer CPU ms':>16}"
          f"{'CPU ratio':>11}")
    for s in args.schemes:
        b, tr = (statistics.median(w for w, _ in times[s, k]) for k in ("bare", "trainer"))
        bc, trc = (statistics.median(c for _, c in times[s, k]) for k in ("bare", "trainer"))
        print(f"{s:<13}{1e3 * b:>14.2f}{1e3 * tr:>17.2f}{tok / b:>12.0f}{tok / tr:>15.0f}"
              f"{b / tr:>8.3f}{1e3 * bc:>13.2f}{1e3 * trc:>16.2f}{bc / trc:>11.3f}")


if __name__ == "__main__":
    main()
