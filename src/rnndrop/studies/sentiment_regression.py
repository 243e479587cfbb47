"""Study: dropout schemes for LSTM/GRU sentiment regression (Gal & Ghahramani 2016, §5.2).

``rnndrop study sentiment-regression`` predicts the normalised rating in ``[0, 1]`` of Pang &
Lee's "scale data" movie reviews with a :class:`~rnndrop.models.classifiers.SentimentRegressor`
(embedding → LSTM or GRU → linear → sigmoid, MSE loss, Adam), for every (model × scheme) with
the schemes

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
must beat it to have learned anything. Outputs in ``--out`` (default
``runs/sentiment-regression``): ``results.json``, ``results.md`` and ``rmse_curves.png`` (test
RMSE per epoch, one panel per model).
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .._plot import figure, save
from ..data.batching import Encoded, iterate_batches
from ..data.imdb import PAD, UNK, encode_reviews, split_into_chunks, tokenize
from ..data.scaledata import load_scaledata, train_test_split
from ..data.text import Vocabulary
from ..models.classifiers import REGRESSION_SCHEMES, SentimentRegressor
from ._cli import Study, environment, loadavg, option, save_progress, write_report

NAME = "sentiment-regression"
MODELS = ("lstm", "gru")


@dataclass
class Settings:
    """Everything that defines a run (written to ``results.json``)."""
    data: Optional[str] = option(None, "data root holding scaledata/ (default: $RNNDROP_DATA)")
    models: tuple[str, ...] = option(MODELS, "recurrent layers to train")
    schemes: tuple[str, ...] = option(REGRESSION_SCHEMES, "dropout schemes")
    max_len: int = option(200, "tokens per sequence")
    chunks: bool = option(True, "one sequence per review (truncated) instead of every "
                          "max_len-token piece")
    keep: str = option("last", "without chunks: keep a long review's first or last tokens",
                       choices=("first", "last"))
    max_vocab: int = option(20000, "most frequent words kept (with <pad> and <unk>)")
    embedding_dim: int = option(128, "embedding size")
    hidden_size: int = option(128, "recurrent units")
    p: float = option(0.25, "dropout probability of the naive / variational schemes")
    p_embedding: float = option(0.25, "word-type embedding dropout (variational)")
    epochs: int = option(10, "epochs per run")
    batch_size: int = option(128, "mini-batch size")
    lr: float = option(1e-3, "Adam learning rate")
    weight_decay: float = option(1e-6, "Adam weight decay")
    test_fraction: float = option(0.2, "reviews held out for the test RMSE")
    train_eval_size: int = option(1000, "fixed training subset for the train RMSE (no dropout)")
    limit: int = option(0, "use only this many reviews (0: all)")
    bucket: int = option(10, "batches per length-sorted pool (0: plain shuffle)")
    seed: int = option(0, "seed of the split, the models and the batch order")
    device: str = option("cpu", "cpu or cuda")
    threads: int = option(0, "torch CPU threads (0: torch's default); 1 is much faster on a "
                          "busy machine")

    def __post_init__(self):
        self.models, self.schemes = tuple(self.models), tuple(self.schemes)
        for name, allowed in (("models", MODELS), ("schemes", REGRESSION_SCHEMES)):
            bad = [e for e in getattr(self, name) if e not in allowed]
            if bad:
                raise ValueError(f"unknown {name} {bad}; choose from {', '.join(allowed)}")

    @classmethod
    def quick(cls) -> "Settings":
        """tiny smoke run (240 reviews, 2 epochs) to check the pipeline"""
        return cls(max_len=24, max_vocab=500, embedding_dim=8, hidden_size=8, epochs=2,
                   batch_size=32, train_eval_size=32, limit=240)


# ============================================================================ data
def load_data(s: Settings, log=print):
    """Reviews and ratings → ``(train, test, vocab, reviews)``: targets are float ratings in
    [0, 1]; ``reviews`` counts the reviews on each side (``{"train": n, "test": m}``: with
    chunks a sequence is a piece of a review)."""
    t0 = time.perf_counter()
    texts, ratings, _ = load_scaledata(s.data)
    ratings = ratings.tolist()
    if s.limit:
        keep = torch.randperm(len(texts), generator=torch.Generator().manual_seed(s.seed))[:s.limit]
        texts, ratings = [texts[i] for i in keep.tolist()], [ratings[i] for i in keep.tolist()]
    tr, te = train_test_split(len(texts), test_fraction=s.test_fraction, seed=s.seed)
    tr, te = tr.tolist(), te.tolist()
    train_tok = [tokenize(texts[i]) for i in tr]
    vocab = Vocabulary.build((w for toks in train_tok for w in toks), max_size=s.max_vocab,
                             specials=(PAD, UNK))

    def enc(idx, toks=None):
        toks = toks if toks is not None else [tokenize(texts[i]) for i in idx]
        y = [ratings[i] for i in idx]
        if s.chunks:
            # Gal & Ghahramani's code cut every review into max_len-word pieces, each labelled
            # with the review's rating. We split train/test by review first, so that no review
            # has pieces on both sides (their script shuffled and split the pieces).
            toks, owner = split_into_chunks(toks, s.max_len)
            y = [y[j] for j in owner]
        x, lengths = encode_reviews(toks, vocab, max_len=s.max_len, keep=s.keep)
        return Encoded(x, lengths, torch.tensor(y, dtype=torch.float32))

    train, test = enc(tr, train_tok), enc(te)
    unit = f"{s.max_len}-token pieces of {len(tr)} / {len(te)} reviews" if s.chunks else "reviews"
    log(f"data: {len(train)} train / {len(test)} test sequences ({unit}), vocabulary "
        f"{len(vocab)}, max_len {s.max_len} ({time.perf_counter() - t0:.1f} s)")
    return train, test, vocab, {"train": len(tr), "test": len(te)}


# ========================================================================= training

def rmse(model, data: Encoded, batch_size: int = 256) -> float:
    """Root-mean-square error of the predicted ratings (eval mode: dropout off)."""
    model.eval()
    device = next(model.parameters()).device
    se, n = 0.0, 0
    with torch.no_grad():
        for x, lengths, y in iterate_batches(data, batch_size):
            x, lengths, y = x.to(device), lengths.to(device), y.to(device)
            se += float(((model(x, lengths) - y) ** 2).sum())
            n += len(y)
    return math.sqrt(se / max(n, 1))


def train_one(cell: str, scheme: str, vocab_size: int, train: Encoded, test: Encoded,
              s: Settings, progress: bool = True, log=print) -> dict:
    """Train one (model, scheme); returns its record (RMSE per epoch, the mean predictor's)."""
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


def plot_curves(results: Sequence[dict], path: Path) -> Path:
    """Test and train RMSE per epoch, one panel per model."""
    models = list(dict.fromkeys(r["model"] for r in results))
    fig, axes = figure(1, len(models), size=(4.8 * len(models), 3.8))
    colors = {"none": "tab:red", "naive": "tab:orange", "variational": "tab:blue"}
    for ax, m in zip(axes, models):
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
    return save(fig, path)


def report(results: dict, out) -> dict[str, Path]:
    """``results.md`` (key ``"markdown"``) and ``rmse_curves.png`` in ``out``."""
    return write_report(out, "results.md", markdown_table(results["results"]),
                        [plot_curves(results["results"], Path(out) / "rmse_curves.png")])


# ============================================================================== run
def run(settings: Settings, out: Path, progress: bool = True) -> dict:
    """Train every (model, scheme) in turn; after each, the results so far are written to
    ``out``."""
    s = settings
    if s.threads:
        torch.set_num_threads(s.threads)
    print(f"{NAME}: models {', '.join(s.models)} x schemes {', '.join(s.schemes)}; "
          f"{s.epochs} epochs; p={s.p}; out {out}")
    train, test, vocab, reviews = load_data(s)
    doc = {"study": NAME, "settings": asdict(s), "environment": environment(),
           "data": {"train": len(train), "test": len(test), "vocab": len(vocab),
                    "train_reviews": reviews["train"], "test_reviews": reviews["test"]},
           "total_time_s": 0.0, "results": []}
    t_all = time.perf_counter()
    for cell in s.models:
        for scheme in s.schemes:
            load0 = loadavg()
            r = train_one(cell, scheme, len(vocab), train, test, s, progress=progress)
            load1 = loadavg()
            r["loadavg_1min"] = [load[0] if load else float("nan") for load in (load0, load1)]
            doc["results"].append(r)
            print(f"{cell}/{scheme:12s} test RMSE last {r['final_test_rmse']:.4f}, lowest "
                  f"{r['min_test_rmse']:.4f} (epoch {r['min_test_rmse_epoch']}) | "
                  f"{r['epoch_time_s']:.1f} s/epoch")
            save_progress(doc, out, report, t_all)
    return doc


STUDY = Study(NAME, "LSTM/GRU rating regression: none / naive / variational dropout", __doc__,
              Settings, run, report)
