"""Study: dropout schemes for LSTM/GRU sentiment regression (Gal & Ghahramani 2016, §5.2).

``rnndrop study sentiment-regression`` (or ``python -m rnndrop.studies.sentiment_regression``)
predicts the normalised rating in ``[0, 1]`` of Pang & Lee's "scale data" movie reviews with a
:class:`~rnndrop.models.classifiers.SentimentRegressor` (embedding → LSTM or GRU → linear →
sigmoid, MSE loss, Adam), for every (model × scheme) with the schemes

- ``none``: no dropout;
- ``naive``: Zaremba-style, ``variational=False``: fresh masks at every step on the embeddings
  entering the encoder and on its output;
- ``variational``: Gal & Ghahramani, ``variational=True``: one mask per sequence on the input,
  the recurrent state and the output, plus word-type embedding dropout,

and records the test RMSE (and the train RMSE without dropout, on a fixed subset) after every
epoch. The paper's setting (its public Keras code): every review cut into pieces of 200 words,
each piece a sequence labelled with the review's rating (``--no-chunks``: one truncated
sequence per review), the 20k most frequent words, embedding 128, one layer of 128 units, Adam,
weight decay 1e-6; dropout ``p`` on every connection. The train/test split is made by review.
The RMSE of always predicting the mean training rating is reported beside the models': a model
must beat it to have learned anything. Outputs in
``--out`` (default ``runs/sentiment-regression``): ``results.json``, ``results.md`` and
``rmse_curves.png`` (test RMSE per epoch, one panel per model).
"""
from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F

from ._cli import add_run_arguments, entry_points, loadavg, prepare
from ..models.classifiers import REGRESSION_SCHEMES, SentimentRegressor
from .imdb_activations import Encoded, environment, iterate_batches

NAME = "sentiment-regression"
DEFAULT_OUT = Path("runs") / NAME
MODELS = ("lstm", "gru")


@dataclass
class Settings:
    models: Sequence[str] = MODELS
    schemes: Sequence[str] = REGRESSION_SCHEMES
    max_len: int = 200
    chunks: bool = True             # every max_len-token piece of a review is a sequence
    keep: str = "last"              # without chunks: keep a long review's last/first max_len tokens
    vocab_size: int = 20000
    embedding_dim: int = 128
    hidden_size: int = 128
    p: float = 0.25                 # dropout of the naive / variational schemes
    p_embedding: float = 0.25       # word-type embedding dropout (variational)
    epochs: int = 10
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 1e-6
    test_fraction: float = 0.2
    train_eval_size: int = 1000     # fixed training subset for the train RMSE (no dropout)
    limit: int = 0                  # use only this many reviews (0: all; --quick: 240)
    bucket: int = 10                # batches per length-sorted pool (0: plain shuffle)
    seed: int = 0
    quick: bool = False
    device: str = "cpu"
    threads: int = field(default_factory=torch.get_num_threads)


# ============================================================================ data

def load_data(root, s: Settings, log=print):
    """Reviews and ratings → ``(train, test, vocab)`` (targets float ratings in [0, 1])."""
    from ..data import imdb as imdb_data
    from ..data import scaledata

    t0 = time.perf_counter()
    loaded = scaledata.load_scaledata(root)
    texts, ratings = _texts_ratings(loaded)
    if s.limit:
        keep = torch.randperm(len(texts), generator=torch.Generator().manual_seed(s.seed))[:s.limit]
        texts, ratings = [texts[i] for i in keep.tolist()], [ratings[i] for i in keep.tolist()]
    tr, te = scaledata.train_test_split(len(texts), test_fraction=s.test_fraction, seed=s.seed)
    tr, te = tr.tolist(), te.tolist()
    tok = imdb_data.tokenize
    train_tok = [tok(texts[i]) for i in tr]
    vocab = imdb_data.build_vocab(train_tok, max_size=s.vocab_size)

    def enc(idx, toks=None):
        toks = toks if toks is not None else [tok(texts[i]) for i in idx]
        y = [ratings[i] for i in idx]
        if s.chunks:
            # Gal & Ghahramani's code cut every review into max_len-word pieces, each labelled
            # with the review's rating. We split train/test by review first, so that no review
            # has pieces on both sides (their script shuffled and split the pieces).
            toks, owner = imdb_data.split_into_chunks(toks, s.max_len)
            y = [y[j] for j in owner]
        x, lengths = imdb_data.encode_reviews(toks, vocab, max_len=s.max_len, keep=s.keep)
        return Encoded(x, lengths, torch.tensor(y, dtype=torch.float32))

    train, test = enc(tr, train_tok), enc(te)
    unit = f"{s.max_len}-token pieces of {len(tr)} / {len(te)} reviews" if s.chunks else "reviews"
    log(f"data: {len(train)} train / {len(test)} test sequences ({unit}), vocabulary "
        f"{len(vocab)}, max_len {s.max_len} ({time.perf_counter() - t0:.1f} s)")
    train.reviews, test.reviews = len(tr), len(te)   # sequences may be pieces of reviews
    return train, test, vocab


def _texts_ratings(loaded):
    """``load_scaledata`` returns ``(texts, ratings, critics)``."""
    texts, ratings = loaded[0], loaded[1]
    return list(texts), [float(r) for r in ratings]


# ========================================================================= training

def rmse(model, data: Encoded, batch_size: int = 256) -> float:
    """Root-mean-square error of the predicted ratings (eval mode: dropout off)."""
    model.eval()
    device = next(model.parameters()).device
    se, n = 0.0, 0
    with torch.no_grad():
        for x, lengths, y in iterate_batches(data, batch_size, by_length=True):
            x, lengths, y = x.to(device), lengths.to(device), y.to(device)
            se += float(((model(x, lengths) - y) ** 2).sum())
            n += len(y)
    return math.sqrt(se / max(n, 1))


def train_one(cell: str, scheme: str, vocab_size: int, train: Encoded, test: Encoded,
              s: Settings, progress: bool = True, log=print) -> dict:
    from tqdm.auto import tqdm

    torch.manual_seed(s.seed)
    model = SentimentRegressor(vocab_size, cell, scheme, p=s.p, p_embedding=s.p_embedding,
                               embedding_dim=s.embedding_dim, hidden_size=s.hidden_size,
                               padding_idx=0).to(s.device)
    opt = torch.optim.Adam(model.parameters(), lr=s.lr, weight_decay=s.weight_decay)
    g = torch.Generator().manual_seed(s.seed + 1)
    sub = train.subset(torch.randperm(len(train), generator=torch.Generator().manual_seed(s.seed))
                       [:s.train_eval_size])
    const = float(train.targets.mean())          # predicting the mean training rating
    history = [{"epoch": 0, "train_mse_dropout": float("nan"), "train_rmse": rmse(model, sub),
                "test_rmse": rmse(model, test), "epoch_time_s": 0.0}]
    label = f"{cell}/{scheme}"
    bar = tqdm(total=s.epochs * math.ceil(len(train) / s.batch_size), disable=not progress,
               desc=label, leave=False, dynamic_ncols=True)
    for epoch in range(1, s.epochs + 1):
        model.train()
        t0 = time.perf_counter()
        tot, n = 0.0, 0
        for x, lengths, y in iterate_batches(train, s.batch_size, shuffle=True, generator=g,
                                                  bucket=s.bucket):
            x, lengths, y = x.to(s.device), lengths.to(s.device), y.to(s.device)
            loss = F.mse_loss(model(x, lengths), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            tot += float(loss.detach()) * len(y)
            n += len(y)
            bar.update(1)
            bar.set_postfix(epoch=epoch, mse=f"{tot / n:.4f}")
        dt = time.perf_counter() - t0
        rec = {"epoch": epoch, "train_mse_dropout": tot / max(n, 1), "train_rmse": rmse(model, sub),
               "test_rmse": rmse(model, test), "epoch_time_s": dt}
        history.append(rec)
        log(f"  {label:18s} epoch {epoch:3d}: train RMSE {rec['train_rmse']:.4f} | "
            f"test RMSE {rec['test_rmse']:.4f} | {dt:.1f} s")
    bar.close()
    best = min(history[1:], key=lambda r: r["test_rmse"]) if len(history) > 1 else history[0]
    return {"model": cell, "scheme": scheme, "p": 0.0 if scheme == "none" else s.p,
            "final_test_rmse": history[-1]["test_rmse"], "min_test_rmse": best["test_rmse"],
            "min_test_rmse_epoch": best["epoch"], "final_train_rmse": history[-1]["train_rmse"],
            "epoch_time_s": sum(r["epoch_time_s"] for r in history[1:]) / max(len(history) - 1, 1),
            "mean_predictor_test_rmse": math.sqrt(float(((test.targets - const) ** 2).mean())),
            "history": history}


# ========================================================================= reporting

def markdown_table(results: Sequence[dict]) -> str:
    head = ("| model | scheme | p | test RMSE (last epoch) | lowest test RMSE (epoch) | "
            "train RMSE (last) | s / epoch |\n|---|---|---|---|---|---|---|\n")
    rows = [f"| {r['model']} | {r['scheme']} | {r['p']} | {r['final_test_rmse']:.4f} | "
            f"{r['min_test_rmse']:.4f} ({r['min_test_rmse_epoch']}) | {r['final_train_rmse']:.4f} | "
            f"{r['epoch_time_s']:.1f} |" for r in results]
    return head + "\n".join(rows) + "\n"


def plot_curves(results: Sequence[dict], path: Path, dpi: int = 90) -> Path:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    models = list(dict.fromkeys(r["model"] for r in results))
    fig = Figure(figsize=(4.8 * len(models), 3.8))
    FigureCanvasAgg(fig)
    colors = {"none": "tab:red", "naive": "tab:orange", "variational": "tab:blue"}
    for k, m in enumerate(models):
        ax = fig.add_subplot(1, len(models), k + 1)
        for r in results:
            if r["model"] != m:
                continue
            h = r["history"][1:]
            c = colors.get(r["scheme"])
            ax.plot([e["epoch"] for e in h], [e["test_rmse"] for e in h], color=c,
                    label=f"{r['scheme']} (test)")
            ax.plot([e["epoch"] for e in h], [e["train_rmse"] for e in h], color=c, ls=":",
                    lw=1, label=f"{r['scheme']} (train)")
        ax.set_xlabel("epoch")
        ax.set_ylabel("RMSE")
        ax.set_title(f"{m.upper()}: RMSE per epoch")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    return path


# ========================================================================= entry points

def settings_from_args(args) -> Settings:
    s = Settings(seed=args.seed, quick=args.quick, device=getattr(args, "device", None) or "cpu")
    if args.quick:
        s.max_len, s.vocab_size, s.embedding_dim, s.hidden_size = 24, 500, 8, 8
        s.epochs, s.batch_size, s.train_eval_size, s.limit = 2, 32, 32, 240
    for name in ("epochs", "max_len", "chunks", "keep", "vocab_size", "embedding_dim", "hidden_size", "p",
                 "p_embedding", "batch_size", "lr", "weight_decay"):
        v = getattr(args, name, None)
        if v is not None:
            setattr(s, name, v)
    for name, allowed in (("models", MODELS), ("schemes", REGRESSION_SCHEMES)):
        v = getattr(args, name, None)
        if v:
            items = [e.strip() for e in v.split(",") if e.strip()]
            bad = [e for e in items if e not in allowed]
            if bad:
                raise ValueError(f"unknown {name} {bad}; choose from {', '.join(allowed)}")
            setattr(s, name, items)
    s.models, s.schemes = list(s.models), list(s.schemes)
    return s


def run(args) -> int:
    s, out, progress = prepare(args, settings_from_args)
    print(f"{NAME}: models {', '.join(s.models)} x schemes {', '.join(s.schemes)}; "
          f"{s.epochs} epochs; p={s.p}; out {out}")
    train, test, vocab = load_data(args.data, s)
    results, t_all = [], time.perf_counter()
    for cell in s.models:
        for scheme in s.schemes:
            load0 = loadavg()
            r = train_one(cell, scheme, len(vocab), train, test, s, progress=progress)
            load1 = loadavg()
            r["loadavg_1min"] = [load[0] if load else float("nan") for load in (load0, load1)]
            results.append(r)
            print(f"{cell}/{scheme:12s} test RMSE last {r['final_test_rmse']:.4f}, lowest "
                  f"{r['min_test_rmse']:.4f} (epoch {r['min_test_rmse_epoch']}) | "
                  f"{r['epoch_time_s']:.1f} s/epoch")
            doc = {"study": NAME, "settings": asdict(s), "environment": environment(),
                   "data": {"train": len(train), "test": len(test), "vocab": len(vocab),
                            "train_reviews": train.reviews, "test_reviews": test.reviews},
                   "total_time_s": time.perf_counter() - t_all, "results": results}
            (out / "results.json.tmp").write_text(json.dumps(doc, indent=1))
            (out / "results.json.tmp").replace(out / "results.json")
            (out / "results.md").write_text(markdown_table(results))
            plot_curves(results, out / "rmse_curves.png")
    print("\n" + markdown_table(results))
    print(f"wrote {out / 'results.json'}, {out / 'results.md'}, {out / 'rmse_curves.png'}")
    return 0


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", help="data root holding scaledata/ (default: $RNNDROP_DATA)")
    p.add_argument("--out", default=str(DEFAULT_OUT), help=f"output folder (default {DEFAULT_OUT})")
    p.add_argument("--epochs", type=int, help="epochs per run (default 10)")
    p.add_argument("--models", help="comma-separated subset of lstm,gru")
    p.add_argument("--schemes", help=f"comma-separated subset of {','.join(REGRESSION_SCHEMES)}")
    p.add_argument("--p", type=float, help="dropout probability of naive/variational (0.25)")
    p.add_argument("--p-embedding", type=float, help="word-type embedding dropout (0.25)")
    p.add_argument("--max-len", type=int, help="tokens per sequence (200)")
    p.add_argument("--no-chunks", dest="chunks", action="store_false", default=None,
                   help="one sequence per review (truncated) instead of every max_len piece")
    p.add_argument("--keep", choices=("first", "last"),
                   help="with --no-chunks: keep a long review's first or last tokens (last)")
    p.add_argument("--vocab-size", type=int, help="most frequent words kept (20000)")
    p.add_argument("--embedding-dim", type=int, help="default 128")
    p.add_argument("--hidden-size", type=int, help="default 128")
    p.add_argument("--batch-size", type=int, help="default 128")
    p.add_argument("--lr", type=float, help="Adam learning rate (1e-3)")
    p.add_argument("--weight-decay", type=float, help="Adam weight decay (1e-6)")
    add_run_arguments(p, quick_help="tiny smoke run to check the pipeline")


add_cli, main = entry_points(
    NAME, __name__,
    "LSTM/GRU rating regression: none / naive / variational dropout",
    __doc__, add_arguments, run)


if __name__ == "__main__":
    raise SystemExit(main())
