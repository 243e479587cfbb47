"""``rnndrop train``, ``rnndrop eval`` and ``rnndrop demo``."""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import sys
import warnings
from pathlib import Path

import torch

from .. import distributed
from ..config import has_dropout, load_config
from ..data.lm import load_lm_corpus, resolve_data
from ..data.text import batchify
from ..demo import run_demo
from ..evaluate import perplexity
from ..runs import SPLIT_FILE, check_split, config_of, load_run, read_checkpoint, sets_layout
from ..train import LMTrainer, default_mc_batch


def add_parsers(sub) -> None:
    p = sub.add_parser("demo", help="train a small variational LSTM on a generated task")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=demo_command)

    p = sub.add_parser("train", help="train a language model from a recipe (configs/*.toml)")
    p.add_argument("config", nargs="?", help="recipe file; optional with --resume CHECKPOINT")
    _add_set(p)
    p.add_argument("--data", help="a corpus folder (its layout is found: ptb, wikitext, "
                   "{train,valid,test}.txt, imdb-lm) or one text file (split 90/5/5); default: "
                   "data.dir, else $RNNDROP_DATA")
    p.add_argument("--encoding", help="text encoding of the corpus files (default: utf-8; "
                   "= --set data.encoding=NAME)")
    p.add_argument("--out", help="run directory (default: runs/<recipe name>)")
    p.add_argument("--resume", nargs="?", const="", metavar="CHECKPOINT",
                   help="continue a run (default: <out>/last.pt)")
    p.add_argument("--device", help="cpu or cuda (overrides train.device)")
    p.add_argument("--threads", type=int, metavar="N",
                   help="torch threads (= --set train.threads=N; default: torch's own)")
    p.add_argument("--max-vocab", type=int, metavar="N",
                   help="keep the N most frequent training words (imdb-lm; = --set data.max_vocab=N)")
    p.add_argument("--max-minutes", type=float, default=0.0,
                   help="stop (with a checkpoint) after this much wall time")
    p.add_argument("--no-progress", action="store_true",
                   help="no progress bar: a log line every minute (or train.log_every steps)")
    p.set_defaults(func=train_command)

    p = sub.add_parser("eval", help="perplexity of a checkpoint (optionally MC dropout)")
    p.add_argument("checkpoint")
    _add_set(p)
    p.add_argument("--mc", type=int, default=0, metavar="N", help="MC-dropout samples")
    p.add_argument("--mc-batch", type=int, default=0, help="samples per pass (0: automatic)")
    p.add_argument("--split", choices=["test", "valid", "train"], default="test")
    p.add_argument("--data", help="corpus folder or text file (default: the checkpoint's)")
    p.add_argument("--encoding", help="text encoding of the corpus files (default: the run's)")
    p.add_argument("--device", help="cpu or cuda (default: cpu)")
    p.add_argument("--threads", type=int, metavar="N", help="torch threads (default: torch's own)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=eval_command)


def _add_set(p: argparse.ArgumentParser) -> None:
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a recipe value, e.g. --set train.epochs=2 (repeatable)")


def demo_command(args) -> int:
    run_demo(steps=args.steps, seed=args.seed)
    return 0


def run_paths(resume_arg, out_arg, default_out: Path | None,
              command: str) -> tuple[Path | None, Path | None]:
    """``(checkpoint to resume or None, run directory)`` of a training command's ``--resume
    [CHECKPOINT]`` (``resume_arg``: None without it, "" without a path) and ``--out``:
    ``--resume`` alone continues ``<out>/last.pt``; ``--resume CHECKPOINT`` alone continues in
    the checkpoint's directory; otherwise the run directory is ``--out`` or ``default_out``
    (None: the command names it later)."""
    out = Path(out_arg) if out_arg else default_out
    resume = None
    if resume_arg is not None:
        if resume_arg:
            resume = Path(resume_arg)
        elif out is not None:
            resume = out / "last.pt"
        else:
            raise SystemExit(f"{command} --resume: give the checkpoint, or --out DIR")
    if out is None and resume is not None:
        out = resume.parent
    return resume, out


def _paths(args) -> tuple[Path | None, Path]:
    """``(checkpoint to resume or None, run directory)`` from --resume / --out / the recipe."""
    if not args.config and args.resume is None:
        raise SystemExit("rnndrop train: give a config file (configs/*.toml) or --resume CHECKPOINT")
    default_out = Path("runs") / Path(args.config).stem if args.config else None
    return run_paths(args.resume, args.out, default_out, "rnndrop train")


def train_command(args) -> int:
    resume, out = _paths(args)
    overrides = list(args.set)
    if args.max_vocab is not None:   # shortcut for --set data.max_vocab=N (large vocabularies)
        overrides.append(f"data.max_vocab={args.max_vocab}")
    if args.device:
        overrides.append(f"train.device={args.device}")
    if args.threads is not None:
        overrides.append(f"train.threads={args.threads}")
    if args.encoding:
        overrides.append(f"data.encoding={args.encoding}")
    if args.config:
        cfg = load_config(args.config, overrides)
    else:
        cfg = config_of(read_checkpoint(resume, keys=("config",)), resume, overrides)
    # The path and layout actually read go into the config, hence into every checkpoint:
    # eval, --resume and generate then find the data without --data.
    cfg.data, note = resolve_data(cfg.data, args.data, strict=sets_layout(args.set))
    # Under torchrun: the process group for the run (nothing for a single process).
    with distributed.process_group(cfg.train.device, cfg.train.dist_timeout) as world, \
            distributed.peer_errors_as_one_line(world, cfg.train.dist_timeout):
        lead = world.rank == 0          # notes, warnings and split.json once, not per rank
        if note and lead:
            print(note)
        with warnings_as_lines(show=lead):
            corpus = load_lm_corpus(cfg.data)
            if resume is not None:
                check_split(corpus, resume.parent)
        if lead:
            _large_vocab_hint(cfg, len(corpus.vocab))

        def write_split():
            # A single file: which tokens went where, of what file. Written when the run
            # starts only: a resumed run keeps its record (check_split compared it), a refused
            # one another run's.
            if lead and corpus.split is not None and resume is None \
                    and not (Path(out) / "last.pt").is_file():
                Path(out).mkdir(parents=True, exist_ok=True)
                (Path(out) / SPLIT_FILE).write_text(json.dumps(corpus.split, indent=1) + "\n")
        run_training(LMTrainer(cfg, corpus, out, progress=not args.no_progress), resume, out,
                     world, args.max_minutes, prepare=write_split)
    return 0


def run_training(trainer, resume, out, world, max_minutes: float, prepare=None) -> None:
    """The end of a training command: ``prepare()`` (the task's files), resume from ``resume``
    if given, name the run directory (rank 0), train. The trainer is closed whatever happens,
    before the process group goes (:meth:`rnndrop.train.LMTrainer.close`)."""
    try:
        if prepare is not None:
            prepare()
        if resume is not None:
            trainer.resume(resume)
        if world.rank == 0:
            print(f"run directory: {out}"
                  + (f" ({world.size} processes)" if world.distributed else ""))
        trainer.train(max_minutes=max_minutes)
    finally:
        trainer.close()


# A full softmax's (T·B, V) logits dominate a CPU step from here on: docs/results/softmax.md
# measured the whole step 5.5x (sampled, k=1024) / 3.6x (adaptive) faster at V = 10k and
# 11.1x / 10.7x at V = 49k.
LARGE_VOCAB = 20_000


def _large_vocab_hint(cfg, vocab_size: int) -> None:
    if cfg.model.output == "full" and cfg.train.device == "cpu" and vocab_size >= LARGE_VOCAB:
        print(f"note: a full softmax over {vocab_size:,} words is slow on a CPU; "
              f'--set model.output="adaptive" or "sampled" made a training step ~11x faster at '
              f"49k words (docs/results/softmax.md)")


@contextlib.contextmanager
def warnings_as_lines(show: bool = True):
    """Warnings raised in the block (identical splits, a changed file) printed as one
    ``warning: ...`` line each on stderr, not Python's file:line and source-line pair
    (``show=False``: dropped, e.g. on the ranks other than 0 of a distributed run)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)
        try:
            yield
        finally:
            for w in caught if show else ():
                print(f"warning: {w.message}", file=sys.stderr)


def set_threads(n) -> None:
    """``--threads N`` of the commands that do not go through a recipe's train.threads."""
    if n is not None:
        if n < 1:
            raise ValueError(f"--threads must be a positive integer, got {n}")
        torch.set_num_threads(n)


def eval_command(args) -> int:
    set_threads(args.threads)
    device = args.device or "cpu"
    with warnings_as_lines():
        sets = list(args.set) + ([f"data.encoding={args.encoding}"] if args.encoding else [])
        run = load_run(args.checkpoint, sets, corpus=True, data_dir=args.data, device=device)
    t = run.config.train
    data = batchify(getattr(run.corpus, args.split), t.eval_batch_size)
    ppl = perplexity(run.model, data, t.bptt, progress=not args.no_progress)
    print(f"{args.split} perplexity (dropout approximation): {ppl:.2f}{_bpc(run.config, ppl)}")
    if args.mc and not has_dropout(run.config.model):
        # every MC pass would be the deterministic one: say so rather than repeat it N times
        print(f"--mc {args.mc}: the model has no dropout (model.scheme={run.config.model.scheme!r},"
              f" no zoneout), so MC dropout equals the line above; evaluated once")
    elif args.mc:
        torch.manual_seed(args.seed)
        mc = perplexity(run.model, data, t.bptt, args.mc,
                        mc_batch=args.mc_batch or default_mc_batch(run.model, t),
                        progress=not args.no_progress)
        print(f"{args.split} perplexity (MC dropout, {args.mc} samples): {mc:.2f}"
              f"{_bpc(run.config, mc)}")
    return 0


def _bpc(cfg, ppl: float) -> str:
    """", 1.23 bits per character" for a character model (log2 of the per-token perplexity;
    a line's <eos> counts as its newline character), else ""."""
    return f", {math.log2(ppl):.3f} bits per character" if cfg.data.layout == "chars" else ""
