"""Command-line interface: ``rnndrop <command> ...`` (also ``python -m rnndrop``).

This file only wires arguments; each command's work lives in the module that implements it and
is imported when the command runs, so errors are short and start-up stays fast.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _demo(args) -> int:
    from .demo import run_demo
    run_demo(steps=args.steps, seed=args.seed)
    return 0


def _train(args) -> int:
    from . import checkpoint as ckpt
    from .config import RunConfig, apply_overrides, load_config
    from .train import LMTrainer, load_corpus_for
    resume = None
    if args.resume is not None:
        out_guess = Path(args.out) if args.out else (Path("runs") / Path(args.config).stem if args.config else None)
        resume = Path(args.resume) if args.resume else (out_guess / "last.pt" if out_guess else None)
        if resume is None:
            raise SystemExit("--resume needs a checkpoint path when no config is given")
    if args.max_vocab is not None:   # shortcut for --set data.max_vocab=N (large vocabularies)
        args.set = (args.set or []) + [f"data.max_vocab={args.max_vocab}"]
    if args.config:
        cfg = load_config(args.config, args.set or [])
    elif resume is not None:
        saved = ckpt.require(ckpt.load(resume), ("config",), resume)["config"]
        cfg = apply_overrides(RunConfig.from_dict(saved, str(resume), validate=False),
                              args.set or [], source=str(resume))
    else:
        raise SystemExit("rnndrop train: give a config file (configs/*.toml) or --resume CHECKPOINT")
    if args.device:
        cfg.train.device = args.device
    out = Path(args.out) if args.out else (resume.parent if resume and not args.config else
                                          Path("runs") / Path(args.config).stem)
    corpus = load_corpus_for(cfg, args.data)
    trainer = LMTrainer(cfg, corpus, out, progress=not args.no_progress)
    if resume is not None:
        trainer.resume(resume)
    print(f"run directory: {out}")
    trainer.train(max_minutes=args.max_minutes)
    return 0


def _eval(args) -> int:
    import torch

    from . import checkpoint as ckpt
    from .config import RunConfig
    from .data.text import batchify, check_vocab
    from .evaluate import perplexity
    from .models.lm import RNNLanguageModel
    from .train import default_mc_batch, load_corpus_for
    st = ckpt.require(ckpt.load(args.checkpoint, map_location=args.device or "cpu"),
                      ("config", "vocab", "model"), args.checkpoint)
    cfg = RunConfig.from_dict(st["config"], str(args.checkpoint))
    corpus = load_corpus_for(cfg, args.data)
    check_vocab(st["vocab"], corpus, source=str(args.checkpoint))
    model = RNNLanguageModel.from_config(len(corpus.vocab), cfg.model,
                                         counts=getattr(corpus.vocab, "counts", None))
    ckpt.load_weights(model, st["model"], args.checkpoint)
    model.to(args.device or "cpu")
    data = batchify(getattr(corpus, args.split), cfg.train.eval_batch_size)
    ppl = perplexity(model, data, cfg.train.bptt, progress=not args.no_progress)
    print(f"{args.split} perplexity (dropout approximation): {ppl:.2f}")
    if args.mc:
        torch.manual_seed(args.seed)
        mc = perplexity(model, data, cfg.train.bptt, args.mc,
                        mc_batch=args.mc_batch or default_mc_batch(model, cfg.train),
                        progress=not args.no_progress)
        print(f"{args.split} perplexity (MC dropout, {args.mc} samples): {mc:.2f}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rnndrop", description="rnndrop: dropout done right for recurrent networks")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser("demo", help="train a small variational LSTM on a generated task")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_demo)

    p = sub.add_parser("train", help="train a language model from a recipe (configs/*.toml)")
    p.add_argument("config", nargs="?", help="recipe file; optional with --resume CHECKPOINT")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override a recipe value, e.g. --set train.epochs=2 (repeatable)")
    p.add_argument("--data", help="data directory (default: data.dir, else $RNNDROP_DATA)")
    p.add_argument("--out", help="run directory (default: runs/<recipe name>)")
    p.add_argument("--resume", nargs="?", const="", metavar="CHECKPOINT",
                   help="continue a run (default: <out>/last.pt)")
    p.add_argument("--device", help="cpu or cuda (overrides train.device)")
    p.add_argument("--max-vocab", type=int, metavar="N",
                   help="keep the N most frequent training words (imdb-lm; = --set data.max_vocab=N)")
    p.add_argument("--max-minutes", type=float, default=0.0,
                   help="stop (with a checkpoint) after this much wall time")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_train)

    p = sub.add_parser("eval", help="perplexity of a checkpoint (optionally MC dropout)")
    p.add_argument("checkpoint")
    p.add_argument("--mc", type=int, default=0, metavar="N", help="MC-dropout samples")
    p.add_argument("--mc-batch", type=int, default=0, help="samples per pass (0: automatic)")
    p.add_argument("--split", choices=["test", "valid", "train"], default="test")
    p.add_argument("--data", help="data directory (default: the checkpoint's)")
    p.add_argument("--device")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_eval)

    from .studies import add_study_cli
    add_study_cli(sub)
    try:
        from . import diagnostics
    except ImportError:
        diagnostics = None
    if diagnostics is not None and hasattr(diagnostics, "add_cli"):
        diagnostics.add_cli(sub)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from .checkpoint import CheckpointError
    known = (CheckpointError, FileNotFoundError, ValueError, RuntimeError, TypeError)
    try:
        from .data._download import DataError
        known = known + (DataError,)
    except ImportError:
        pass
    try:
        return args.func(args) or 0
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    except known as e:
        import os
        if os.environ.get("RNNDROP_DEBUG"):
            raise
        print(f"rnndrop {args.command}: error: {e}\n(set RNNDROP_DEBUG=1 for the traceback)",
              file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
