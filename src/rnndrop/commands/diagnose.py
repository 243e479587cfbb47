"""``rnndrop diagnose CONFIG_OR_CHECKPOINT``: gradient flow through a language model's LSTM.

Per layer: decay of ``‖∂L/∂h_t‖`` per step back in time, its value at ``t = 1`` and ``T``,
``σ_max(W_hh)`` and the saturation of every gate, on one batch of the corpus (random tokens
when no corpus can be read), and ``grad_norms.png`` in ``--out``.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Mapping, Optional

import torch

from ..config import load_config
from ..data.lm import load_lm_corpus
from ..data.text import Vocabulary, batchify
from ..diagnostics import (decay_rate, grad_norms_over_time, plot_grad_norms, saturation_report,
                           spectral_norms)
from ..models.lm import RNNLanguageModel
from ..runs import config_of, read_checkpoint, restore_weights
from .train import set_threads


def add_parsers(subparsers) -> None:
    p = subparsers.add_parser(
        "diagnose", help="gradient flow through a language model (checkpoint or recipe)",
        description="Gradient flow through the LSTM of a language model: a trained checkpoint "
                    "(*.pt) or a freshly initialised model from a recipe (*.toml). One batch of "
                    "the corpus (random tokens when the corpus cannot be loaded), loss = the LM "
                    "loss over the window.")
    p.add_argument("source", metavar="CONFIG_OR_CHECKPOINT",
                   help="recipe (configs/*.toml) or checkpoint (last.pt / best.pt)")
    p.add_argument("--bptt", type=int, default=100, help="time steps T (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=None,
                   help="sequences in the batch (default: train.batch_size of the config)")
    p.add_argument("--data", help="data directory (default: data.dir of the config, else "
                                  "$RNNDROP_DATA/ptb); random tokens when it cannot be loaded")
    p.add_argument("--vocab-size", type=int, default=None,
                   help="vocabulary size for a recipe when no corpus is available")
    p.add_argument("--out", default="runs/diagnose",
                   help="directory for grad_norms.png (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="seed for initialisation and random tokens")
    p.add_argument("--threads", type=int, metavar="N", help="torch threads (default: torch's own)")
    p.add_argument("--loss", choices=("all", "last"), default="all",
                   help="LM loss over every step of the window (all, the training loss) or on "
                        "the last step only (last: ‖∂L/∂h_t‖ is then purely the gradient carried "
                        "back through time, T - t steps)")
    p.set_defaults(func=diagnose_command)


def _source(source: Path):
    """-> ``(cfg, checkpoint state or None, kind)`` for a recipe (``*.toml``) or a checkpoint."""
    if source.suffix.lower() == ".toml":
        return load_config(source), None, "recipe (freshly initialised)"
    state = read_checkpoint(source, keys=("model", "config"))
    return config_of(state, source), state, "checkpoint"


def _corpus(cfg, data: Optional[str]):
    """-> ``(corpus or None, why not)``: never downloads (only an existing directory is read)."""
    d = data or cfg.data.dir
    if d is None and cfg.data.layout == "ptb" and os.environ.get("RNNDROP_DATA"):
        d = str(Path(os.environ["RNNDROP_DATA"]) / "ptb")
    if d is None:
        return None, "no data directory (--data, data.dir or $RNNDROP_DATA)"
    if not Path(d).exists():        # a directory, or the one text file a run was split from
        return None, f"data directory {d} not found"
    try:
        return load_lm_corpus(cfg.data, d), ""
    except (OSError, ValueError, RuntimeError) as e:   # missing files, unreadable corpus, ...
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        return None, f"corpus in {d} could not be loaded ({msg[:200]})"


def _vocabulary(state, corpus, V: int):
    """The vocabulary to build the model with: the corpus's, else the checkpoint's, else a size
    (a unigram sampler then gets uniform counts: they matter for the sampled training loss only,
    not for this analysis)."""
    if corpus is not None:
        return corpus.vocab
    if state is not None and isinstance(state.get("vocab"), Mapping) and \
            len(state["vocab"].get("itos", ())) == V:
        return Vocabulary.from_dict(state["vocab"])
    return Vocabulary([str(i) for i in range(V)], [1.0] * V)


def diagnose_command(args) -> int:
    set_threads(args.threads)
    source = Path(args.source)
    if args.bptt < 2:
        raise ValueError(f"--bptt must be >= 2, got {args.bptt}")
    if args.batch_size is not None and args.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.vocab_size is not None and args.vocab_size < 1:
        raise ValueError(f"--vocab-size must be >= 1, got {args.vocab_size}")
    cfg, state, kind = _source(source)
    B = args.batch_size or cfg.train.batch_size
    T = args.bptt
    corpus, why = _corpus(cfg, args.data)
    if state is not None:
        if "embedding.weight" not in state["model"]:
            raise ValueError(f"{source}: no embedding.weight in the model state: not a "
                             f"language-model checkpoint")
        V = int(state["model"]["embedding.weight"].shape[0])
    elif args.vocab_size is not None:
        V = args.vocab_size
    elif corpus is not None:
        V = len(corpus.vocab)
    else:
        raise ValueError(f"{source}: the vocabulary size is unknown ({why}); give "
                         f"--vocab-size N or --data DIR")
    if corpus is not None and len(corpus.vocab) != V:
        corpus, why = None, f"the corpus has {len(corpus.vocab)} words, the model {V}"
    torch.manual_seed(args.seed)
    model = RNNLanguageModel.from_config(cfg.model, _vocabulary(state, corpus, V))
    if state is not None:
        restore_weights(model, state, source, cfg)
    model.eval()
    tokens, data_note = None, ""
    if corpus is not None:
        stream = batchify(corpus.train, B)
        if stream.shape[0] < 3:
            why = f"the training stream is too short for a batch of {B}"
        else:
            if stream.shape[0] - 1 < T:
                print(f"notice: the training stream has {stream.shape[0]} steps per sequence; "
                      f"T = {stream.shape[0] - 1} instead of {T}", file=sys.stderr)
                T = stream.shape[0] - 1
            tokens = stream[:T + 1].long()
            data_note = f"corpus training split (first {T} steps of {B} streams)"
    if tokens is None:
        print(f"notice: {why}; using random tokens instead", file=sys.stderr)
        gen = torch.Generator().manual_seed(args.seed)
        tokens = torch.randint(0, V, (T + 1, B), generator=gen)
        data_note = f"random tokens (uniform over {V} words)"
    x, y = tokens[:-1], tokens[1:]
    with torch.no_grad():
        emb = model.embedding(x)
    if args.loss == "last":
        loss_fn = lambda out: model.loss(out[-1:], y[-1:])
    else:
        loss_fn = lambda out: model.loss(out, y)
    gn = grad_norms_over_time(model.rnn, emb, loss_fn)
    sig = spectral_norms(model.rnn)
    sat = saturation_report(model.rnn, emb)

    L = gn.norms.shape[0]
    print(f"rnndrop diagnose: {source} [{kind}]")
    print(f"model: LSTM {L} layer(s) × {model.hidden_size}, vocabulary {V}; batch {B}, T = {T}, "
          f"data: {data_note}; loss = LM loss (mean NLL per token, "
          f"{'every step' if args.loss == 'all' else 'last step only'}) = {gn.loss:.4f}")
    gates = sorted({g.split(".", 1)[1] for g in sat}, key="ifgoc".find)
    header = ("layer", "decay/step", "norm t=1", "norm t=T", "t=1 / t=T", "σ_max(W_hh)") + \
        tuple(f"sat {g}" for g in gates)
    rows = []
    for k in range(L):
        n = gn.norms[k]
        first, last = float(n[0]), float(n[-1])
        ratio = first / last if last else float("inf")
        rows.append((str(k), f"{decay_rate(n):.4f}", f"{first:.3e}", f"{last:.3e}", f"{ratio:.3e}",
                     f"{sig.get(f'weight_hh_l{k}', float('nan')):.4f}")
                    + tuple(f"{sat.get(f'l{k}.{g}', float('nan')):.3f}" for g in gates))
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    fmt = lambda r: "  ".join(c.rjust(w) for c, w in zip(r, widths))
    print("\n".join([fmt(header), "  ".join("-" * w for w in widths)] + [fmt(r) for r in rows]))
    print("decay/step: factor by which ‖∂L/∂h_t‖ changes per step back in time (< 1 vanishing, "
          "> 1 exploding); sat: fraction of saturated gate pre-activations (|f'| < 0.01)")
    path = plot_grad_norms({"LSTM": gn}, Path(args.out) / "grad_norms.png",
                           title=f"{source.name}: ‖∂L/∂h_t‖, batch {B}, T = {T}")
    print(f"plot: {path}")
    return 0
