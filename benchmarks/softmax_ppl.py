"""Perplexity cost of the sampled softmax: full vs sampled (vs adaptive) softmax training of the
same small LSTM language model on the IMDB LM corpus (``imdb-lm`` layout), under the same
wall-clock budget and after the same number of optimiser steps. Measures only — asserts nothing.

Each variant is trained with ``rnndrop.train.LMTrainer`` (the code ``rnndrop train`` runs):
1 layer of 256 units, no dropout, BPTT 35, batch 32, SGD lr 1 on the loss summed over the window,
clipping at 5 — the variants differ only in ``model.output``. The reference (the first variant,
``full`` by default) trains for ``--minutes`` of wall-clock time and makes ``N`` steps. Every
other variant first trains for exactly ``N`` steps (same seed, so this is the start of its own
run), is evaluated ("same steps"), then continues for the rest of the same wall-clock budget
and is evaluated again ("same time"). The wall clock of a variant includes everything its
``train`` calls do (a checkpoint write at each stop included), not the evaluations.

Evaluation: perplexity with the *full* softmax (``eval()`` mode; a sampled-softmax model is
evaluated exactly like a full one) on the first ``--eval-tokens`` tokens of the valid split
(batchified in 10 streams, BPTT 35): the whole split would take tens of minutes per model on a
2-core CPU. The sampled model's checkpoint is also loaded into an ``output="full"`` model and
re-evaluated, to show that the state dicts interchange.

    nice python benchmarks/softmax_ppl.py --minutes 7 --out runs/softmax-ppl
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))

from rnndrop.config import RunConfig  # noqa: E402
from rnndrop.data.text import batchify  # noqa: E402
from rnndrop.evaluate import perplexity  # noqa: E402
from rnndrop.data.lm import load_lm_corpus  # noqa: E402
from rnndrop.runs import load_run  # noqa: E402
from rnndrop.train import LMTrainer  # noqa: E402


def default_root():
    env = os.environ.get("RNNDROP_DATA")
    return env or str(Path(__file__).resolve().parents[1].parent / "shared" / "data")


def make_cfg(args, output: str) -> RunConfig:
    cfg = RunConfig()
    cfg.data.layout, cfg.data.dir = "imdb-lm", args.data
    cfg.data.max_vocab = args.max_vocab
    m = cfg.model
    m.hidden_size, m.num_layers, m.scheme, m.init_range = args.hidden, 1, "none", 0.1
    m.output, m.num_sampled, m.sampler = output, args.num_sampled, args.sampler
    m.cutoffs = list(args.cutoffs)
    t = cfg.train
    t.seed, t.epochs, t.batch_size, t.bptt = args.seed, 1, args.batch, args.bptt
    t.eval_batch_size, t.lr, t.clip, t.checkpoint_every = 10, args.lr, 5.0, 0
    t.threads = args.threads
    return cfg


def load():
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def evaluate(model, data, bptt):
    t0 = time.perf_counter()
    ppl = perplexity(model, data, bptt)
    return ppl, time.perf_counter() - t0


def mean_train_loss(out: Path, last: int = 20):
    f = out / "steps.jsonl"
    if not f.is_file():
        return None
    losses = [json.loads(l)["loss"] for l in f.read_text().splitlines() if l.strip()]
    return sum(losses[-last:]) / len(losses[-last:]) if losses else None


def run(args, corpus, valid, output, ref_steps, log):
    cfg = make_cfg(args, output)
    out = Path(args.out) / output
    if out.exists():
        for f in out.iterdir():
            f.unlink()
    trainer = LMTrainer(cfg, corpus, out, progress=False, log=log)
    rec = {"output": output, "load_start": load()}
    budget = 60.0 * args.minutes
    spent = 0.0
    if ref_steps:
        cfg.train.max_steps = ref_steps
        t0 = time.monotonic()
        trainer.train(max_minutes=args.minutes)
        spent = time.monotonic() - t0
        rec["same_steps"] = {"steps": trainer.state.step, "seconds": spent}
        rec["same_steps"]["valid_ppl"], rec["same_steps"]["eval_seconds"] = \
            evaluate(trainer.model, valid, args.bptt)
        rec["same_steps"]["train_loss_last20"] = mean_train_loss(out)
        log(f"{output}: {trainer.state.step} steps in {spent:.0f} s, valid ppl "
            f"{rec['same_steps']['valid_ppl']:.1f}")
        cfg.train.max_steps = 0
    t0 = time.monotonic()
    if budget - spent > 0:
        trainer.train(max_minutes=(budget - spent) / 60.0)
    spent += time.monotonic() - t0
    rec["same_time"] = {"steps": trainer.state.step, "seconds": spent,
                        "tokens_per_s": trainer.state.step * args.batch * args.bptt / spent}
    rec["same_time"]["valid_ppl"], rec["same_time"]["eval_seconds"] = \
        evaluate(trainer.model, valid, args.bptt)
    rec["same_time"]["train_loss_last20"] = mean_train_loss(out)
    rec["load_end"] = load()
    log(f"{output}: {trainer.state.step} steps in {spent:.0f} s, valid ppl "
        f"{rec['same_time']['valid_ppl']:.1f}, load {rec['load_start']} -> {rec['load_end']}")
    if output != "full":    # the checkpoint interchanges with a full-softmax model
        if output == "sampled":
            full = load_run(out / "last.pt", ["model.output=full"]).model
            small = batchify(corpus.valid[: 5001], 10)
            a = perplexity(trainer.model, small, args.bptt)
            b = perplexity(full, small, args.bptt)
            rec["checkpoint_into_full"] = {"sampled_model_ppl": a, "full_model_ppl": b}
            log(f"sampled checkpoint loaded into a full-softmax model: ppl {b:.3f} vs {a:.3f} "
                f"(first 5000 valid tokens)")
    return rec


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=default_root(), help="data root holding imdb/")
    ap.add_argument("--max-vocab", type=int, default=None)
    ap.add_argument("--variants", nargs="+", default=["full", "sampled", "adaptive"],
                    choices=["full", "sampled", "adaptive"])
    ap.add_argument("--minutes", type=float, default=7.0, help="wall-clock budget per variant")
    ap.add_argument("--ref-steps", type=int, default=0,
                    help="steps for the 'same steps' comparison (default: what the first "
                         "variant reaches in its budget)")
    ap.add_argument("--num-sampled", type=int, default=1024)
    ap.add_argument("--sampler", default="log_uniform")
    ap.add_argument("--cutoffs", type=int, nargs="+", default=[2000, 10000])
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--bptt", type=int, default=35)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--eval-tokens", type=int, default=50_000)
    ap.add_argument("--out", default="runs/softmax-ppl")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    logf = open(Path(args.out) / "log.txt", "a")

    def log(msg):
        print(msg, flush=True)
        logf.write(msg + "\n")
        logf.flush()

    log(f"softmax_ppl: {vars(args)}; torch {torch.__version__}, {os.cpu_count()} CPUs, "
        f"threads {torch.get_num_threads()}, load {load()}")
    t0 = time.perf_counter()
    corpus = load_lm_corpus(make_cfg(args, "full").data)
    log(f"imdb-lm corpus: V = {len(corpus.vocab)}, train {corpus.train.numel()}, valid "
        f"{corpus.valid.numel()}, test {corpus.test.numel()} tokens ({time.perf_counter() - t0:.0f} s)")
    valid = batchify(corpus.valid[: args.eval_tokens + 1], 10)
    results = {"args": vars(args), "vocab": len(corpus.vocab), "runs": []}
    ref_steps = args.ref_steps
    for i, output in enumerate(args.variants):
        rec = run(args, corpus, valid, output, ref_steps, log)
        results["runs"].append(rec)
        if not ref_steps:
            ref_steps = rec["same_time"]["steps"]
        with open(Path(args.out) / "results.json", "w") as f:
            json.dump(results, f, indent=1)
    ref = results["runs"][0]
    log(f"\nV = {results['vocab']}, budget {args.minutes} min per variant, reference steps "
        f"{ref_steps}; valid ppl on the first {valid.numel()} valid tokens")
    log("| variant | same steps: steps | valid ppl | vs ref | same time: steps | tokens/s | "
        "valid ppl | vs ref |")
    log("|---|---|---|---|---|---|---|---|")
    r0 = ref["same_time"]["valid_ppl"]
    for r in results["runs"]:
        ss = r.get("same_steps", r["same_time"] if r is ref else None)
        st = r["same_time"]
        log(f"| {r['output']} | {ss['steps']} | {ss['valid_ppl']:.1f} | "
            f"{ss['valid_ppl'] / r0 - 1:+.1%} | {st['steps']} | {st['tokens_per_s']:.0f} | "
            f"{st['valid_ppl']:.1f} | {st['valid_ppl'] / r0 - 1:+.1%} |")


if __name__ == "__main__":
    main()
