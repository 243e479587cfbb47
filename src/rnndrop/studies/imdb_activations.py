"""Study: vanilla RNN activations against GRU and LSTM on IMDB sentiment classification.

``rnndrop study imdb-activations`` (or ``python -m rnndrop.studies.imdb_activations``) trains a
:class:`~rnndrop.models.classifiers.SentimentClassifier` with each encoder — Elman RNNs with
tanh / ReLU / sigmoid / leaky ReLU, a GRU and an LSTM — on the same class-balanced subset of
the IMDB training reviews, with Adam and gradient-norm clipping, keeps the epoch with the best
validation accuracy (a held-out part of the training split), and reports for each encoder:

- test accuracy (all 25,000 test reviews unless ``--test-size``),
- wall time per training epoch,
- the gradient reaching the first time step: ``‖∂L/∂h_t‖`` for every step ``t`` on a batch of
  test reviews that fill all ``max_len`` steps, measured with
  :func:`rnndrop.diagnostics.grad_norms_over_time` (tensor hooks on the hidden states), at
  initialisation and after training; ``‖∂L/∂h_1‖ / ‖∂L/∂h_T‖`` and the per-step decay factor.

Outputs in ``--out`` (default ``runs/imdb-activations``): ``results.json``, ``results.md`` (a
markdown table), ``accuracy.png`` (test accuracy per encoder) and ``grad_norms.png``
(``‖∂L/∂h_t‖`` against ``t``, log scale).

Defaults are sized for a 2-core CPU (the whole study in well under 30 minutes); ``--full`` uses
all 25k training reviews (1,000 held out for validation) and all 25k test reviews, 400
tokens per review and 8 epochs (options given explicitly win).
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import os
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from ._cli import add_run_arguments, entry_points, prepare
from ..models.classifiers import ENCODERS, SentimentClassifier, last_real_step

NAME = "imdb-activations"
DEFAULT_OUT = Path("runs") / NAME


@dataclass
class Settings:
    """Everything that defines a run (written to ``results.json``)."""
    encoders: Sequence[str] = ENCODERS
    train_size: int = 6000          # class-balanced subset of the 25k training reviews
    val_size: int = 1000            # held out from the training split (disjoint from train)
    test_size: int = 0              # 0: all 25k test reviews
    max_len: int = 200              # tokens kept per review
    vocab_size: int = 20000         # most frequent training words (+ pad and unk)
    embedding_dim: int = 64
    hidden_size: int = 128
    head_size: int = 256
    head_activation: str = "relu"
    dropout: float = 0.3            # in the head
    epochs: int = 6
    batch_size: int = 64
    lr: float = 1e-3
    clip: float = 1.0               # gradient-norm clipping
    grad_batch: int = 64            # reviews in the gradient-norm measurement
    bucket: int = 20                # batches per length-sorted pool (0: plain shuffle)
    seed: int = 0
    full: bool = False
    quick: bool = False
    device: str = "cpu"
    threads: int = field(default_factory=torch.get_num_threads)


# ============================================================================ data

@dataclass
class Encoded:
    """Padded token ids ``(N, T)``, lengths ``(N,)`` and targets ``(N,)``."""
    tokens: Tensor
    lengths: Tensor
    targets: Tensor

    def __len__(self) -> int:
        return int(self.tokens.shape[0])

    def subset(self, idx: Tensor) -> "Encoded":
        return Encoded(self.tokens[idx], self.lengths[idx], self.targets[idx])


def iterate_batches(data: Encoded, batch_size: int, shuffle: bool = False,
                    generator: Optional[torch.Generator] = None,
                    bucket: int = 0, by_length: bool = False
                    ) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
    """Batches ``(tokens, lengths, targets)``, each trimmed to its longest review (the encoders
    are causal and read the last real step, so trailing padding only costs time).

    ``shuffle``: random order (``generator``). ``bucket=k`` (with ``shuffle``): the shuffled
    reviews are cut into pools of ``k`` batches, each pool is sorted by length and cut into
    batches, and the batches are shuffled — batches of similar lengths, hence less padding."""
    n = len(data)
    order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    batches = [order[i:i + batch_size] for i in range(0, n, batch_size)]
    if shuffle and bucket > 1:
        pool = bucket * batch_size
        batches = []
        for i in range(0, n, pool):
            chunk = order[i:i + pool]
            chunk = chunk[torch.argsort(data.lengths[chunk], stable=True)]
            batches.extend(chunk[j:j + batch_size] for j in range(0, len(chunk), batch_size))
        batches = [batches[j] for j in torch.randperm(len(batches), generator=generator).tolist()]
    for idx in batches:
        lengths = data.lengths[idx]
        T = int(lengths.max())
        yield data.tokens[idx, :T], lengths, data.targets[idx]


def balanced_indices(labels: Sequence[int], n: int, generator: torch.Generator,
                     exclude: Optional[set] = None) -> list[int]:
    """``n`` indices with (as nearly as possible) equal counts per label, drawn at random."""
    labels = list(labels)
    classes = sorted(set(labels))
    per, extra = divmod(n, len(classes))
    out: list[int] = []
    for k, c in enumerate(classes):
        pool = [i for i, y in enumerate(labels) if y == c and not (exclude and i in exclude)]
        want = per + (1 if k < extra else 0)
        if want > len(pool):
            raise ValueError(f"asked for {want} reviews of class {c}, only {len(pool)} available")
        perm = torch.randperm(len(pool), generator=generator)[:want].tolist()
        out.extend(pool[j] for j in perm)
    perm = torch.randperm(len(out), generator=generator).tolist()
    return [out[j] for j in perm]


def load_data(root, s: Settings, log=print):
    """Load, subsample, tokenize and encode IMDB. Returns ``(train, val, test, vocab)``."""
    from ..data import imdb as imdb_data

    g = torch.Generator().manual_seed(s.seed)
    t0 = time.perf_counter()
    train_texts, train_labels = _texts_labels(imdb_data.load_imdb(root, "train"))
    test_texts, test_labels = _texts_labels(imdb_data.load_imdb(root, "test"))
    val_idx = balanced_indices(train_labels, s.val_size, g)
    if s.full:
        held = set(val_idx)
        tr_idx = [i for i in range(len(train_texts)) if i not in held]
        tr_idx = [tr_idx[j] for j in torch.randperm(len(tr_idx), generator=g).tolist()]
    else:
        tr_idx = balanced_indices(train_labels, s.train_size, g, exclude=set(val_idx))
    te_idx = (list(range(len(test_texts))) if s.full or not s.test_size
              else balanced_indices(test_labels, s.test_size, g))
    tok = imdb_data.tokenize
    train_tok = [tok(train_texts[i]) for i in tr_idx]
    vocab = imdb_data.build_vocab(train_tok, max_size=s.vocab_size)

    def enc(idx, texts, labels, toks=None):
        toks = toks if toks is not None else [tok(texts[i]) for i in idx]
        x, lengths = imdb_data.encode_reviews(toks, vocab, max_len=s.max_len)
        return Encoded(x, lengths, torch.tensor([labels[i] for i in idx], dtype=torch.long))

    train = enc(tr_idx, train_texts, train_labels, train_tok)
    val = enc(val_idx, train_texts, train_labels)
    test = enc(te_idx, test_texts, test_labels)
    log(f"data: {len(train)} train / {len(val)} validation / {len(test)} test reviews, "
        f"vocabulary {len(vocab)}, max_len {s.max_len} ({time.perf_counter() - t0:.1f} s)")
    return train, val, test, vocab


def _texts_labels(loaded):
    """Accept ``(texts, labels)`` or a sequence of ``(text, label)`` pairs or of objects with
    ``.text`` / ``.label``."""
    if isinstance(loaded, tuple) and len(loaded) == 2 and not isinstance(loaded[0], str):
        texts, labels = loaded
        return list(texts), [int(y) for y in labels]
    texts, labels = [], []
    for item in loaded:
        if isinstance(item, (tuple, list)):
            texts.append(item[0])
            labels.append(int(item[1]))
        else:
            texts.append(item.text)
            labels.append(int(item.label))
    return texts, labels


# ========================================================================= training

def evaluate(model, data: Encoded, batch_size: int = 256) -> tuple[float, float]:
    """``(accuracy, mean cross-entropy)`` in eval mode."""
    model.eval()
    device = next(model.parameters()).device
    correct, loss, n = 0, 0.0, 0
    with torch.no_grad():
        for x, lengths, y in iterate_batches(data, batch_size, by_length=True):
            x, lengths, y = x.to(device), lengths.to(device), y.to(device)
            logits = model(x, lengths)
            loss += float(F.cross_entropy(logits, y, reduction="sum"))
            correct += int((logits.argmax(-1) == y).sum())
            n += len(y)
    return correct / max(n, 1), loss / max(n, 1)


def grad_batch(data: Encoded, n: int, max_len: int) -> Encoded:
    """The first ``n`` reviews that fill all ``max_len`` steps (else the longest ones), so that
    ``h_T`` is every review's true last token."""
    full = torch.nonzero(data.lengths == max_len).flatten()
    if len(full) < n:
        full = torch.argsort(data.lengths, descending=True, stable=True)
    return data.subset(full[:n])


def measure_grad_norms(model: SentimentClassifier, batch: Encoded) -> dict:
    """``‖∂L/∂h_t‖`` for every step on ``batch`` (mean cross-entropy of the head on the last
    real step), with :func:`rnndrop.diagnostics.grad_norms_over_time`; dropout off.

    Measured on a float64 copy of the model: over 200 steps a vanilla RNN's gradient falls below
    the smallest float32 (it would read as exactly 0); the model itself is not touched."""
    from .. import diagnostics

    m = copy.deepcopy(model).to(torch.float64).eval()
    T = int(batch.lengths.max())
    device = next(m.parameters()).device
    x, lengths, y = (batch.tokens[:, :T].to(device), batch.lengths.to(device),
                     batch.targets.to(device))
    with torch.no_grad():
        emb = m.embed(x)

    def loss_fn(output):
        return F.cross_entropy(m.head(last_real_step(output, lengths)), y)

    gn = diagnostics.grad_norms_over_time(m.encoder, emb, loss_fn, per_layer=False)
    norms = gn.norms
    first, last = float(norms[0]), float(norms[-1])
    return {"norms": [float(v) for v in norms], "first": first, "last": last,
            "ratio_first_last": first / last if last > 0 else float("nan"),
            "decay_per_step": gn.decay_rate(), "loss": gn.loss, "steps": T,
            "batch": len(batch)}


def train_encoder(encoder: str, vocab_size: int, train: Encoded, val: Encoded, test: Encoded,
                  s: Settings, progress: bool = True, log=print) -> dict:
    """Train one classifier; returns its record (metrics, history, gradient norms)."""
    from tqdm.auto import tqdm

    from ..diagnostics import ClipMonitor

    torch.manual_seed(s.seed)
    model = SentimentClassifier(vocab_size, encoder, embedding_dim=s.embedding_dim,
                                hidden_size=s.hidden_size, head_size=s.head_size,
                                head_activation=s.head_activation, dropout=s.dropout,
                                padding_idx=0).to(s.device)
    n_params = sum(p.numel() for p in model.parameters())
    gb = grad_batch(test, s.grad_batch, s.max_len)
    grad_init = measure_grad_norms(model, gb)
    opt = torch.optim.Adam(model.parameters(), lr=s.lr)
    clip = ClipMonitor()
    g = torch.Generator().manual_seed(s.seed + 1)
    history, best, best_state = [], -1.0, None
    load_start = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    for epoch in range(1, s.epochs + 1):
        model.train()
        t0 = time.perf_counter()
        tot_loss, tot_correct, n, nonfinite = 0.0, 0, 0, 0
        bar = tqdm(iterate_batches(train, s.batch_size, shuffle=True, generator=g, bucket=s.bucket),
                   total=math.ceil(len(train) / s.batch_size), disable=not progress,
                   desc=f"{encoder} epoch {epoch}/{s.epochs}", leave=False, dynamic_ncols=True)
        for x, lengths, y in bar:
            x, lengths, y = x.to(s.device), lengths.to(s.device), y.to(s.device)
            logits = model(x, lengths)
            loss = F.cross_entropy(logits, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            st = clip.clip_grad_norm(model.parameters(), s.clip)
            if not st.finite:          # skip a step whose gradient overflowed
                nonfinite += 1
                continue
            opt.step()
            tot_loss += float(loss.detach()) * len(y)
            tot_correct += int((logits.argmax(-1) == y).sum())
            n += len(y)
            bar.set_postfix(loss=f"{tot_loss / max(n, 1):.3f}", acc=f"{tot_correct / max(n, 1):.3f}")
        bar.close()
        epoch_time = time.perf_counter() - t0
        val_acc, val_loss = evaluate(model, val)
        rec = {"epoch": epoch, "train_loss": tot_loss / max(n, 1),
               "train_acc": tot_correct / max(n, 1), "val_acc": val_acc, "val_loss": val_loss,
               "epoch_time_s": epoch_time, "skipped_nonfinite_steps": nonfinite}
        history.append(rec)
        log(f"  {encoder:15s} epoch {epoch}: train loss {rec['train_loss']:.4f} "
            f"acc {rec['train_acc']:.3f} | val acc {val_acc:.3f} | {epoch_time:.1f} s")
        if val_acc > best:
            best = val_acc
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    model.load_state_dict(best_state)
    best_epoch = max(history, key=lambda r: r["val_acc"])["epoch"]
    t0 = time.perf_counter()
    test_acc, test_loss = evaluate(model, test)
    eval_time = time.perf_counter() - t0
    grad_trained = measure_grad_norms(model, gb)
    load_end = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return {"encoder": encoder, "params": n_params, "test_acc": test_acc, "test_loss": test_loss,
            "best_epoch": best_epoch, "best_val_acc": best,
            "epoch_time_s": sum(r["epoch_time_s"] for r in history) / len(history),
            "test_eval_time_s": eval_time, "clipping": clip.summary(), "history": history,
            "grad_norms_init": grad_init, "grad_norms_trained": grad_trained,
            "loadavg_1min": [load_start, load_end]}


# ========================================================================= reporting

def markdown_table(results: Sequence[dict]) -> str:
    head = ("| encoder | test acc | best val acc (epoch) | s / epoch | ‖∂L/∂h₁‖ / ‖∂L/∂h_T‖ "
            "init | trained | decay / step (trained) | clipped steps |\n"
            "|---|---|---|---|---|---|---|---|\n")
    rows = []
    for r in results:
        gi, gt = r["grad_norms_init"], r["grad_norms_trained"]
        rows.append(f"| {r['encoder']} | {r['test_acc']:.4f} | {r['best_val_acc']:.4f} "
                    f"({r['best_epoch']}) | {r['epoch_time_s']:.1f} | {gi['ratio_first_last']:.2e} | "
                    f"{gt['ratio_first_last']:.2e} | {gt['decay_per_step']:.4f} | "
                    f"{r['clipping']['fraction_clipped']:.0%} |")
    return head + "\n".join(rows) + "\n"


def plot_results(results: Sequence[dict], out: Path, dpi: int = 90) -> list[Path]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    paths = []
    fig = Figure(figsize=(6.4, 3.6))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    names = [r["encoder"] for r in results]
    accs = [r["test_acc"] for r in results]
    bars = ax.bar(range(len(names)), accs, color=["tab:blue" if n.startswith("rnn") else "tab:green"
                                                  for n in names])
    for b, a in zip(bars, accs):
        ax.text(b.get_x() + b.get_width() / 2, a + 0.005, f"{a:.3f}", ha="center", fontsize=8)
    ax.axhline(0.5, color="gray", ls=":", lw=1)
    ax.set_xticks(range(len(names)), names, rotation=20, fontsize=8)
    ax.set_ylim(0.4, 1.0)
    ax.set_ylabel("test accuracy")
    ax.set_title("IMDB test accuracy per encoder")
    fig.tight_layout()
    paths.append(out / "accuracy.png")
    fig.savefig(paths[-1], dpi=dpi)

    fig = Figure(figsize=(9.6, 3.8))
    FigureCanvasAgg(fig)
    for k, (key, title) in enumerate((("grad_norms_init", "at initialisation"),
                                      ("grad_norms_trained", "after training"))):
        ax = fig.add_subplot(1, 2, k + 1)
        for r in results:
            y = [v if (v > 0 and math.isfinite(v)) else float("nan") for v in r[key]["norms"]]
            ax.plot(range(1, len(y) + 1), y, label=r["encoder"], lw=1.2)
        ax.set_yscale("log")
        ax.set_xlabel("time step t")
        ax.set_ylabel(r"$\|\partial L/\partial h_t\|$")
        ax.set_title(title)
        ax.grid(True, which="major", alpha=0.3)
        if k == 1:
            ax.legend(fontsize=7)
    fig.tight_layout()
    paths.append(out / "grad_norms.png")
    fig.savefig(paths[-1], dpi=dpi)
    return paths


def environment() -> dict:
    return {"python": platform.python_version(), "torch": torch.__version__,
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "machine": platform.machine(), "processor": platform.processor() or None}


# ========================================================================= entry points

def settings_from_args(args) -> Settings:
    s = Settings(seed=args.seed, full=args.full, quick=args.quick,
                 device=getattr(args, "device", None) or "cpu")
    if args.quick:
        s.train_size, s.val_size, s.test_size = 64, 32, 64
        s.max_len, s.vocab_size, s.embedding_dim, s.hidden_size, s.head_size = 24, 500, 8, 8, 16
        s.epochs, s.batch_size, s.grad_batch = 1, 32, 8
    if args.full:
        # All 25k/25k reviews, 400 tokens, 8 epochs: measured LSTM 0.866 / GRU 0.85+ test
        # accuracy (docs/results/imdb.md); at 200 tokens and 6 epochs the LSTM stayed at 0.836.
        s.max_len, s.epochs = 400, 8
    for name in ("train_size", "val_size", "test_size", "max_len", "epochs", "hidden_size",
                 "batch_size", "lr", "clip", "vocab_size", "embedding_dim", "dropout"):
        v = getattr(args, name, None)
        if v is not None:
            setattr(s, name, v)
    if args.encoders:
        enc = [e.strip() for e in args.encoders.split(",") if e.strip()]
        bad = [e for e in enc if e not in ENCODERS]
        if bad:
            raise ValueError(f"unknown encoder(s) {bad}; choose from {', '.join(ENCODERS)}")
        s.encoders = enc
    s.encoders = list(s.encoders)
    return s


def run(args) -> int:
    s, out, progress = prepare(args, settings_from_args)
    print(f"{NAME}: encoders {', '.join(s.encoders)}; {s.epochs} epochs; out {out}")
    train, val, test, vocab = load_data(args.data, s)
    results = []
    t_all = time.perf_counter()
    for enc in s.encoders:
        r = train_encoder(enc, len(vocab), train, val, test, s, progress=progress)
        results.append(r)
        gt = r["grad_norms_trained"]
        print(f"{enc:15s} test acc {r['test_acc']:.4f} | {r['epoch_time_s']:.1f} s/epoch | "
              f"|dL/dh_1|/|dL/dh_T| {gt['ratio_first_last']:.2e} (decay {gt['decay_per_step']:.4f}/step)")
        _write(out, s, results, time.perf_counter() - t_all, len(train), len(val), len(test), len(vocab))
    table = markdown_table(results)
    print("\n" + table)
    print(f"wrote {out / 'results.json'}, {out / 'results.md'}, {out / 'accuracy.png'}, "
          f"{out / 'grad_norms.png'}")
    return 0


def _write(out: Path, s: Settings, results, total_s, n_train, n_val, n_test, n_vocab) -> None:
    doc = {"study": NAME, "settings": asdict(s), "environment": environment(),
           "data": {"train": n_train, "val": n_val, "test": n_test, "vocab": n_vocab},
           "total_time_s": total_s, "results": results}
    tmp = out / "results.json.tmp"
    tmp.write_text(json.dumps(doc, indent=1))
    tmp.replace(out / "results.json")
    (out / "results.md").write_text(markdown_table(results))
    plot_results(results, out)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", help="data root holding imdb/ (default: $RNNDROP_DATA)")
    p.add_argument("--out", default=str(DEFAULT_OUT), help=f"output folder (default {DEFAULT_OUT})")
    p.add_argument("--full", action="store_true",
                   help="all 25k training reviews (1,000 held out for validation) and all 25k test; "
                        "max_len 400 and 8 epochs unless given")
    p.add_argument("--train-size", type=int, help="class-balanced training subset (default 6000)")
    p.add_argument("--val-size", type=int, help="validation reviews held out of the training split (1000)")
    p.add_argument("--test-size", type=int, help="class-balanced test subset; 0 = all 25k (default)")
    p.add_argument("--epochs", type=int, help="epochs per encoder (default 6)")
    p.add_argument("--encoders", help=f"comma-separated subset of {','.join(ENCODERS)}")
    p.add_argument("--max-len", type=int, help="tokens kept per review (default 200)")
    p.add_argument("--hidden-size", type=int, help="recurrent units (default 128)")
    p.add_argument("--embedding-dim", type=int, help="embedding size (default 64)")
    p.add_argument("--vocab-size", type=int, help="vocabulary size (default 20000)")
    p.add_argument("--batch-size", type=int, help="default 64")
    p.add_argument("--lr", type=float, help="Adam learning rate (default 1e-3)")
    p.add_argument("--clip", type=float, help="gradient-norm clipping (default 1.0)")
    p.add_argument("--dropout", type=float, help="dropout in the head (default 0.3)")
    add_run_arguments(p, quick_help="tiny smoke run (a few dozen reviews, one epoch) to check "
                                    "the pipeline")


add_cli, main = entry_points(
    NAME, __name__,
    "vanilla RNN activations vs GRU/LSTM on IMDB",
    __doc__, add_arguments, run)


if __name__ == "__main__":
    raise SystemExit(main())
