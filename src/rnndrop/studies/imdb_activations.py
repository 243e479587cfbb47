"""Study: vanilla RNN activations against GRU and LSTM on IMDB sentiment classification.

``rnndrop study imdb-activations`` trains a
:class:`~rnndrop.models.classifiers.SentimentClassifier` with each encoder — Elman RNNs with tanh /
ReLU / sigmoid / leaky ReLU, a GRU and an LSTM (and, when asked, the bidirectional ``bigru``
and ``bilstm``; ``--dropout-hidden`` adds variational recurrent dropout, ``--zoneout`` /
``--zoneout-cell`` zoneout, ``--learn-dropout`` learns the recurrent rate) — on the same class-balanced subset of the IMDB
training reviews, with Adam and gradient-norm clipping, keeps the epoch with the best
validation accuracy (a held-out part of the training split), and reports for each encoder:

- test accuracy (all 25,000 test reviews unless ``--test-size``),
- wall time per training epoch,
- the gradient reaching the first time step: ``‖∂L/∂h_t‖`` for every step ``t`` on a batch of
  test reviews that fill all ``max_len`` steps, measured with
  :func:`rnndrop.diagnostics.grad_norms_over_time` (tensor hooks on the hidden states), at
  initialisation and after training; ``‖∂L/∂h_1‖ / ‖∂L/∂h_T‖`` and the per-step decay factor
  (unidirectional encoders only).

The encoder runs on each review's real tokens only (packed); ``--no-packed`` runs it over the
padding too, as the study did before 2026-12 (the same features, more work).

Outputs in ``--out`` (default ``runs/imdb-activations``): ``results.json``, ``results.md`` (a
markdown table), ``accuracy.png`` (test accuracy per encoder) and ``grad_norms.png``
(``‖∂L/∂h_t‖`` against ``t``, log scale).

Defaults are sized for a 2-core CPU (the whole study in well under 30 minutes); ``--full`` uses
all 25k training reviews (1,000 held out for validation) and all 25k test reviews, 400
tokens per review and 8 epochs (options given explicitly win).
"""
from __future__ import annotations

import copy
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .._plot import figure, save
from ..clipping import ClipMonitor
from ..data.batching import Encoded, balanced_indices, iterate_batches
from ..data.imdb import PAD, UNK, encode_reviews, load_imdb, tokenize
from ..data.text import Vocabulary
from ..diagnostics import grad_norms_over_time
from ..models.classifiers import ENCODERS, HEAD_ACTIVATIONS, SentimentClassifier, last_real_step
from ._cli import Study, environment, loadavg, option, save_progress, write_report

NAME = "imdb-activations"
UNIDIRECTIONAL = tuple(e for e in ENCODERS if not e.startswith("bi"))


@dataclass
class Settings:
    """Everything that defines a run (written to ``results.json``)."""
    data: Optional[str] = option(None, "data root holding imdb/ (default: $RNNDROP_DATA)")
    encoders: tuple[str, ...] = option(UNIDIRECTIONAL, "encoders to train (also: "
                                       + ", ".join(e for e in ENCODERS if e not in UNIDIRECTIONAL)
                                       + ")")
    train_size: int = option(6000, "class-balanced training subset of the 25k training reviews")
    val_size: int = option(1000, "validation reviews held out of the training split")
    test_size: int = option(0, "class-balanced test subset (0: all 25k)")
    max_len: int = option(200, "tokens kept per review")
    max_vocab: int = option(20000, "most frequent training words (with <pad> and <unk>)")
    embedding_dim: int = option(64, "embedding size")
    hidden_size: int = option(128, "recurrent units")
    head_size: int = option(256, "units of the head's hidden layer")
    head_activation: str = option("relu", "activation of the head", choices=tuple(HEAD_ACTIVATIONS))
    dropout: float = option(0.3, "dropout in the head")
    dropout_hidden: float = option(0.0, "recurrent dropout in the encoder (one mask per review "
                                   "and direction, reused at every step)")
    zoneout: float = option(0.0, "zoneout of the encoder's hidden state (Krueger et al. 2016; "
                            "fresh masks at every step)")
    zoneout_cell: float = option(0.0, "zoneout of the cell state (LSTM encoders only)")
    learn_dropout: bool = option(False, "learn the encoder's dropout rates (Concrete dropout, "
                                 "Gal, Hron & Kendall 2017), started at --dropout-hidden")
    concrete_lengthscale: float = option(1e-4, "prior length-scale l of the Concrete "
                                         "regulariser (scales l²/N and 2/N, N training reviews)")
    packed: bool = option(True, "run the encoder over the padding too, as before 2026-12 "
                          "(default: on each review's real tokens only)")
    epochs: int = option(6, "epochs per encoder")
    batch_size: int = option(64, "mini-batch size")
    lr: float = option(1e-3, "Adam learning rate")
    clip: float = option(1.0, "gradient-norm clipping")
    probe_batch: int = option(64, "reviews in the gradient-norm probe")
    bucket: int = option(20, "batches per length-sorted pool (0: plain shuffle)")
    seed: int = option(0, "seed of the subsets, the models and the batch order")
    full: bool = False              # set by --full (Settings.full_data)
    device: str = option("cpu", "cpu or cuda")
    threads: int = option(0, "torch CPU threads (0: torch's default); 1 is much faster on a "
                          "busy machine")

    def __post_init__(self):
        self.encoders = tuple(self.encoders)
        bad = [e for e in self.encoders if e not in ENCODERS]
        if bad:
            raise ValueError(f"unknown encoder(s) {bad}; choose from {', '.join(ENCODERS)}")

    @classmethod
    def quick(cls) -> "Settings":
        """tiny smoke run (a few dozen reviews, one epoch) to check the pipeline"""
        return cls(train_size=64, val_size=32, test_size=64, max_len=24, max_vocab=500,
                   embedding_dim=8, hidden_size=8, head_size=16, epochs=1, batch_size=32,
                   probe_batch=8)

    @classmethod
    def full_data(cls) -> "Settings":
        """all 25k training reviews (1,000 held out for validation) and all 25k test; max_len
        400 and 8 epochs unless given"""
        # Measured LSTM 0.866 / GRU 0.85+ test accuracy (docs/results/imdb.md); at 200 tokens
        # and 6 epochs the LSTM stayed at 0.836.
        return cls(full=True, max_len=400, epochs=8)


# ============================================================================ data
def load_data(s: Settings, log=print):
    """Load, subsample, tokenize and encode IMDB. Returns ``(train, val, test, vocab)``."""
    g = torch.Generator().manual_seed(s.seed)
    t0 = time.perf_counter()
    train_recs, test_recs = load_imdb(s.data, "train"), load_imdb(s.data, "test")
    train_labels = [r[1] for r in train_recs]
    test_labels = [r[1] for r in test_recs]
    val_idx = balanced_indices(train_labels, s.val_size, g)
    if s.full:
        held = set(val_idx)
        tr_idx = [i for i in range(len(train_recs)) if i not in held]
        tr_idx = [tr_idx[j] for j in torch.randperm(len(tr_idx), generator=g).tolist()]
    else:
        tr_idx = balanced_indices(train_labels, s.train_size, g, exclude=set(val_idx))
    te_idx = (list(range(len(test_recs))) if s.full or not s.test_size
              else balanced_indices(test_labels, s.test_size, g))
    train_tok = [tokenize(train_recs[i][0]) for i in tr_idx]
    vocab = Vocabulary.build((w for toks in train_tok for w in toks), max_size=s.max_vocab,
                             specials=(PAD, UNK))

    def enc(idx, recs, toks=None):
        toks = toks if toks is not None else [tokenize(recs[i][0]) for i in idx]
        x, lengths = encode_reviews(toks, vocab, max_len=s.max_len)
        return Encoded(x, lengths, torch.tensor([recs[i][1] for i in idx], dtype=torch.long))

    train = enc(tr_idx, train_recs, train_tok)
    val = enc(val_idx, train_recs)
    test = enc(te_idx, test_recs)
    log(f"data: {len(train)} train / {len(val)} validation / {len(test)} test reviews, "
        f"vocabulary {len(vocab)}, max_len {s.max_len} ({time.perf_counter() - t0:.1f} s)")
    return train, val, test, vocab


# ========================================================================= training

def evaluate(model, data: Encoded, batch_size: int = 256) -> tuple[float, float]:
    """``(accuracy, mean cross-entropy)`` in eval mode."""
    model.eval()
    device = next(model.parameters()).device
    correct, loss, n = 0, 0.0, 0
    with torch.no_grad():
        for x, lengths, y in iterate_batches(data, batch_size):
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
    real step), with :func:`rnndrop.diagnostics.grad_norms_over_time`; dropout off. None for a
    bidirectional encoder (its steps have two states, one per direction: no single curve), and
    for one with zoneout (the re-run's cells have none, so its curve would be another model's).

    Measured on a float64 copy of the model: over 200 steps a vanilla RNN's gradient falls below
    the smallest float32 (it would read as exactly 0); the model itself is not touched."""
    enc = model.encoder.rnn if hasattr(model.encoder, "rnn") else model.encoder
    if model.encoder.num_directions > 1 or getattr(enc, "zoneout_hidden", 0) \
            or getattr(enc, "zoneout_cell", 0):
        return None
    m = copy.deepcopy(model).to(torch.float64).eval()
    T = int(batch.lengths.max())
    device = next(m.parameters()).device
    x, lengths, y = (batch.tokens[:, :T].to(device), batch.lengths.to(device),
                     batch.targets.to(device))
    with torch.no_grad():
        emb = m.embed(x)

    def loss_fn(output):
        return F.cross_entropy(m.head(last_real_step(output, lengths)), y)

    gn = grad_norms_over_time(m.encoder, emb, loss_fn, per_layer=False)
    norms = gn.norms
    first, last = float(norms[0]), float(norms[-1])
    return {"norms": [float(v) for v in norms], "first": first, "last": last,
            "ratio_first_last": first / last if last > 0 else float("nan"),
            "decay_per_step": gn.decay_rate(), "loss": gn.loss, "steps": T,
            "batch": len(batch)}


def encoder_options(encoder: str, s: Settings) -> dict:
    """The recurrent layer's options for ``encoder`` (cell zoneout for the LSTMs only)."""
    opts = dict(dropout_hidden=s.dropout_hidden, variational=True)
    if s.zoneout:
        opts["zoneout"] = s.zoneout
    if s.zoneout_cell and encoder in ("lstm", "bilstm"):
        opts["zoneout_cell"] = s.zoneout_cell
    if s.learn_dropout:
        opts["learn_dropout"] = True
    return opts


def train_encoder(encoder: str, vocab_size: int, train: Encoded, val: Encoded, test: Encoded,
                  s: Settings, progress: bool = True, log=print) -> dict:
    """Train one classifier; returns its record (metrics, history, gradient norms)."""
    torch.manual_seed(s.seed)
    model = SentimentClassifier(vocab_size, encoder, embedding_dim=s.embedding_dim,
                                hidden_size=s.hidden_size, head_size=s.head_size,
                                head_activation=s.head_activation, dropout=s.dropout,
                                padding_idx=0, packed=s.packed,
                                encoder_options=encoder_options(encoder, s)).to(s.device)
    n_params = sum(p.numel() for p in model.parameters())
    gb = grad_batch(test, s.probe_batch, s.max_len)
    grad_init = measure_grad_norms(model, gb)
    opt = torch.optim.Adam(model.parameters(), lr=s.lr)
    clip = ClipMonitor()
    g = torch.Generator().manual_seed(s.seed + 1)
    history, best, best_state = [], -1.0, None
    load_start = loadavg()
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
            objective = loss
            if s.learn_dropout:   # per review, as the mean loss: the paper's scales over N
                N = len(train)
                objective = loss + model.regularizer(s.concrete_lengthscale ** 2 / N, 2.0 / N)
            objective.backward()
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
        if s.learn_dropout:
            rec["dropout_rates"] = model.dropout_rates()
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
    load_end = loadavg()
    return {"encoder": encoder, "params": n_params, "test_acc": test_acc, "test_loss": test_loss,
            "best_epoch": best_epoch, "best_val_acc": best,
            "epoch_time_s": sum(r["epoch_time_s"] for r in history) / len(history),
            "test_eval_time_s": eval_time, "clipping": clip.summary(), "history": history,
            "grad_norms_init": grad_init, "grad_norms_trained": grad_trained,
            "loadavg_1min": [load[0] if load else float("nan")
                             for load in (load_start, load_end)]}


# ========================================================================= reporting

def markdown_table(results: Sequence[dict]) -> str:
    head = ("| encoder | test acc | best val acc (epoch) | s / epoch | ‖∂L/∂h₁‖ / ‖∂L/∂h_T‖ "
            "init | trained | decay / step (trained) | clipped steps |\n"
            "|---|---|---|---|---|---|---|---|\n")
    rows = []
    for r in results:
        gi, gt = r["grad_norms_init"], r["grad_norms_trained"]
        grads = (f"{gi['ratio_first_last']:.2e} | {gt['ratio_first_last']:.2e} | "
                 f"{gt['decay_per_step']:.4f}" if gi and gt else "— | — | —")
        rows.append(f"| {r['encoder']} | {r['test_acc']:.4f} | {r['best_val_acc']:.4f} "
                    f"({r['best_epoch']}) | {r['epoch_time_s']:.1f} | {grads} | "
                    f"{r['clipping']['fraction_clipped']:.0%} |")
    return head + "\n".join(rows) + "\n"


def plot_results(results: Sequence[dict], out: Path) -> list[Path]:
    """``accuracy.png`` (test accuracy per encoder) and ``grad_norms.png``."""
    fig, (ax,) = figure(size=(6.4, 3.6))
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
    paths = [save(fig, out / "accuracy.png")]

    fig, axes = figure(1, 2, size=(9.6, 3.8))
    for k, (ax, key, title) in enumerate(zip(axes, ("grad_norms_init", "grad_norms_trained"),
                                             ("at initialisation", "after training"))):
        for r in results:
            if not r[key]:          # bidirectional: no single curve
                continue
            y = [v if (v > 0 and math.isfinite(v)) else float("nan") for v in r[key]["norms"]]
            ax.plot(range(1, len(y) + 1), y, label=r["encoder"], lw=1.2)
        ax.set_yscale("log")
        ax.set_xlabel("time step t")
        ax.set_ylabel(r"$\|\partial L/\partial h_t\|$")
        ax.set_title(title)
        ax.grid(True, which="major", alpha=0.3)
        if k == 1 and ax.get_lines():
            ax.legend(fontsize=7)
    paths.append(save(fig, out / "grad_norms.png"))
    return paths


def report(results: dict, out) -> dict[str, Path]:
    """``results.md`` (key ``"markdown"``), ``accuracy.png`` and ``grad_norms.png`` in ``out``."""
    return write_report(out, "results.md", markdown_table(results["results"]),
                        plot_results(results["results"], Path(out)))


# ============================================================================== run
def run(settings: Settings, out: Path, progress: bool = True) -> dict:
    """Train every encoder in turn; after each, the results so far are written to ``out``."""
    s = settings
    if s.threads:
        torch.set_num_threads(s.threads)
    print(f"{NAME}: encoders {', '.join(s.encoders)}; {s.epochs} epochs; out {out}")
    train, val, test, vocab = load_data(s)
    doc = {"study": NAME, "settings": asdict(s), "environment": environment(),
           "data": {"train": len(train), "val": len(val), "test": len(test), "vocab": len(vocab)},
           "total_time_s": 0.0, "results": []}
    t_all = time.perf_counter()
    for enc in s.encoders:
        r = train_encoder(enc, len(vocab), train, val, test, s, progress=progress)
        doc["results"].append(r)
        gt = r["grad_norms_trained"]
        grads = (f" | |dL/dh_1|/|dL/dh_T| {gt['ratio_first_last']:.2e} "
                 f"(decay {gt['decay_per_step']:.4f}/step)" if gt else "")
        print(f"{enc:15s} test acc {r['test_acc']:.4f} | {r['epoch_time_s']:.1f} s/epoch{grads}")
        save_progress(doc, out, report, t_all)
    return doc


STUDY = Study(NAME, "vanilla RNN activations vs GRU/LSTM on IMDB", __doc__, Settings, run,
              report, presets={"quick": Settings.quick, "full": Settings.full_data})
