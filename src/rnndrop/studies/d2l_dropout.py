"""Study: dropout from scratch on Fashion-MNIST (Dive into Deep Learning §3.13) and its exercises.

``rnndrop study d2l-dropout`` (or ``python -m rnndrop.studies.d2l_dropout``) trains the book's
MLP (784-256-256-10, ReLU, dropout p1 = 0.2 / p2 = 0.5 after the hidden layers, weights
N(0, 0.01²), SGD lr 0.5, batch 256, cross-entropy; :mod:`rnndrop.models.mlp`) and runs:

- **repro**: the from-scratch form (own tensors, ``p -= lr * p.grad``) and the concise form
  (``nn.Module`` + ``torch.optim.SGD``), ``--repro-epochs`` (10) epochs, same seed, next to the
  book's 0.87–0.88.
- **(a) grid** over ``(p1, p2)`` in ``--grid`` ² (default {0, 0.2, 0.5, 0.8}²), ``--epochs``.
- **(b) curves**: no dropout vs (0.2, 0.5) for ``--long-epochs`` (30): train / test accuracy,
  loss and gap per epoch.
- **(c) variance**: for one fixed test image and the trained (0.2, 0.5) network of (b), the
  variance of every hidden unit under dropout over ``--masks`` masks against the theory
  ``Var = p/(1-p) · h²`` (:func:`measure_dropout_variance`), also for the Gaussian and
  three-value masks (their own theory) and for the next layer's pre-activation
  ``z = W · drop(h)`` (theory ``p/(1-p) · Σ_j W_kj² h_j²``).
- **(d) weight decay**: no dropout, weight decay in ``--weight-decays`` on the weights; the
  train/test gap compared with the dropout grid at matched test accuracy.
- **(e) DropConnect**: element DropConnect (one mask per mini-batch) on the weights, ``(0, 0.2,
  0.5)`` (the positions and rates of the activation dropout) and ``(0.2, 0.2, 0.5)`` (every
  linear layer), against activation dropout and none.
- **(f) noise kinds**: Gaussian ``N(1, p/(1-p))`` and three-value ``{0, γ/2, γ}`` masks against
  Bernoulli at (0.2, 0.5).
- **noise level**: the (0.2, 0.5) network with ``--seeds`` seeds (init, data order and masks all
  change), to tell real differences from seed noise.

Every run of (a), (d), (e), (f) uses the same seed (common random numbers: the same initial
weights and the same data order), ``--epochs`` epochs. Runs with the same configuration are
trained once: the 10-epoch (0, 0) and (0.2, 0.5) results are epoch 10 of the long runs of (b),
which is exact because training is deterministic and has no schedule. Measured after each epoch,
in eval mode (dropout off): test loss / accuracy on the 10,000 test images and train loss /
accuracy on the first 10,000 training images (a fixed subset, to keep it cheap); "gap" is train
minus test accuracy. The training loss reported by the book (running mean over the epoch, dropout
on) is recorded too.

Runs go to ``--workers`` processes (default ``os.cpu_count()``), one torch thread each, the
longest first; each worker loads the data once. Default settings: 25 runs of 10 epochs and 2 of
30, 310 epochs in all (docs/results/d2l-dropout.md gives the measured wall time).

Outputs in ``--out``: ``results.json`` (every run's per-epoch history, the variance
measurements, settings, timings, load average), ``tables.md`` and the plots
``d2l-dropout-grid.png``, ``d2l-dropout-curves.png``, ``d2l-dropout-variance.png``,
``d2l-dropout-weight-decay.png``, ``d2l-dropout-variants.png``. ``--replot`` rewrites the tables
and plots from an existing ``results.json`` without training.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from ._cli import entry_points, finish, json_safe, loadavg, run_jobs
from ._plot import figure, save
from ..models.mlp import KINDS, MLP, MLPScratch, dropout_fn, variance_factor

__all__ = [
    "BOOK_ACCURACY", "RunSpec", "Settings", "QUICK", "load_data", "build_model", "train_run",
    "evaluate", "default_specs", "run_study", "measure_dropout_variance", "variance_study",
    "markdown_tables", "plot_all", "write_outputs", "replot", "add_arguments", "add_cli", "run",
    "main",
]

#: Test accuracy the book reports for this network after 10 epochs.
BOOK_ACCURACY = (0.87, 0.88)

_EVAL_BATCH = 2000


# ================================================================================== specs
@dataclass(frozen=True)
class RunSpec:
    """One training run. ``form``: ``"concise"`` (:class:`MLP`) or ``"scratch"``
    (:class:`MLPScratch`). ``dropconnect``: ``None`` or one probability per linear layer."""
    form: str = "concise"
    p1: float = 0.2
    p2: float = 0.5
    kind: str = "bernoulli"
    dropconnect: Optional[tuple] = None
    weight_decay: float = 0.0
    seed: int = 0
    epochs: int = 10
    keep_state: bool = False

    def key(self) -> tuple:
        """The configuration without ``epochs``/``keep_state``: equal keys train identically."""
        return (self.form, self.p1, self.p2, self.kind, self.dropconnect, self.weight_decay,
                self.seed)

    @property
    def label(self) -> str:
        parts = [f"p=({self.p1:g},{self.p2:g})"]
        if self.kind != "bernoulli":
            parts.append(self.kind)
        if self.dropconnect is not None:
            parts.append("DropConnect(" + ",".join(f"{q:g}" for q in self.dropconnect) + ")")
        if self.weight_decay:
            parts.append(f"wd={self.weight_decay:g}")
        if self.form != "concise":
            parts.append(self.form)
        if self.seed:
            parts.append(f"seed {self.seed}")
        return " ".join(parts)


@dataclass
class Settings:
    """Everything that is not a per-run choice."""
    data: Optional[str] = None          # data root (None: $RNNDROP_DATA)
    lr: float = 0.5
    batch_size: int = 256
    epochs: int = 10                    # parts a, d, e, f and the seed runs
    long_epochs: int = 30               # part b
    repro_epochs: int = 10              # both forms, next to the book
    grid: tuple = (0.0, 0.2, 0.5, 0.8)
    weight_decays: tuple = (1e-4, 3e-4, 1e-3, 3e-3)
    seeds: int = 3                      # seeds of the (0.2, 0.5) network (noise level)
    seed: int = 0
    masks: int = 10_000                 # dropout masks per unit in part c
    n_train: Optional[int] = None       # use only the first n images (quick)
    n_test: Optional[int] = None
    n_train_eval: int = 10_000          # training images evaluated after each epoch


QUICK = dict(epochs=1, long_epochs=2, repro_epochs=1, grid=(0.0, 0.5), weight_decays=(1e-3,),
             seeds=2, masks=500, n_train=1024, n_test=512, n_train_eval=512)

BASE = dict(p1=0.2, p2=0.5)


def default_specs(s: Settings) -> list[RunSpec]:
    """All runs of the study, duplicates merged (the longest ``epochs`` wins)."""
    E, seed = s.epochs, s.seed
    specs = [RunSpec(form="scratch", seed=seed, epochs=s.repro_epochs),
             RunSpec(form="concise", seed=seed, epochs=s.repro_epochs),
             RunSpec(p1=0.0, p2=0.0, seed=seed, epochs=s.long_epochs),
             RunSpec(seed=seed, epochs=s.long_epochs, keep_state=True)]
    specs += [RunSpec(p1=a, p2=b, seed=seed, epochs=E) for a in s.grid for b in s.grid]
    specs += [RunSpec(p1=0.0, p2=0.0, weight_decay=wd, seed=seed, epochs=E)
              for wd in s.weight_decays]
    specs += [RunSpec(p1=0.0, p2=0.0, dropconnect=dc, seed=seed, epochs=E)
              for dc in ((0.0, 0.2, 0.5), (0.2, 0.2, 0.5))]
    specs += [RunSpec(kind=k, seed=seed, epochs=E) for k in KINDS if k != "bernoulli"]
    specs += [RunSpec(seed=seed + i, epochs=E) for i in range(s.seeds)]
    merged: dict = {}
    for sp in specs:
        old = merged.get(sp.key())
        if old is None:
            merged[sp.key()] = sp
        else:
            merged[sp.key()] = replace(old, epochs=max(old.epochs, sp.epochs),
                                       keep_state=old.keep_state or sp.keep_state)
    return list(merged.values())


# =================================================================================== data
def load_data(root=None, n_train: Optional[int] = None, n_test: Optional[int] = None):
    """``(X_train, y_train, X_test, y_test)``: uint8 images ``(N, 28, 28)`` and int64 labels,
    from :func:`rnndrop.data.fashion_mnist.load_fashion_mnist`; optionally the first ``n``."""
    from ..data.fashion_mnist import load_fashion_mnist
    out = []
    for split, n in (("train", n_train), ("test", n_test)):
        X, y = load_fashion_mnist(root, split=split)
        X = torch.as_tensor(X)
        y = torch.as_tensor(y).long()
        if n is not None:
            X, y = X[:n], y[:n]
        out += [X.contiguous(), y.contiguous()]
    return tuple(out)


def _float(X: Tensor) -> Tensor:
    """uint8 images → float in [0, 1] (the book's ``ToTensor``)."""
    return X.to(torch.float32).div_(255.0)


# =============================================================================== training
def build_model(spec: RunSpec):
    """The network of ``spec`` (draws its initial weights from the global RNG)."""
    cls = {"concise": MLP, "scratch": MLPScratch}[spec.form]
    return cls(p1=spec.p1, p2=spec.p2, kind=spec.kind, dropconnect=spec.dropconnect)


@torch.no_grad()
def evaluate(model, X: Tensor, y: Tensor, batch: int = _EVAL_BATCH) -> tuple[float, float]:
    """``(mean cross-entropy, accuracy)`` in eval mode (the model's mode is restored)."""
    was = model.training
    model.eval()
    loss, correct = 0.0, 0
    for i in range(0, len(y), batch):
        logits = model(_float(X[i:i + batch]))
        loss += F.cross_entropy(logits, y[i:i + batch], reduction="sum").item()
        correct += (logits.argmax(1) == y[i:i + batch]).sum().item()
    model.train(was)
    return loss / len(y), correct / len(y)


def train_run(spec: RunSpec, settings: Settings, data) -> dict:
    """Train one network; returns its spec, per-epoch history and timings (and the final
    ``state_dict`` as lists when ``spec.keep_state``).

    Seeding: ``torch.manual_seed(spec.seed)`` before the model is built (init and dropout masks
    come from the global RNG) and a separate generator with the same seed for the data order.
    """
    Xtr, ytr, Xte, yte = data
    n_eval = min(settings.n_train_eval, len(ytr))
    torch.manual_seed(spec.seed)
    model = build_model(spec)
    opt = None
    if spec.form == "concise":
        opt = torch.optim.SGD(model.param_groups(spec.weight_decay), lr=settings.lr)
    order = torch.Generator().manual_seed(spec.seed)
    N, B = len(ytr), settings.batch_size
    hist = {k: [] for k in ("train_loss", "train_eval_loss", "train_eval_acc", "test_loss",
                            "test_acc", "seconds")}
    diverged = False
    tic = time.perf_counter()
    for epoch in range(spec.epochs):
        t0 = time.perf_counter()
        model.train()
        perm = torch.randperm(N, generator=order)
        total, count = 0.0, 0
        for i in range(0, N, B):
            idx = perm[i:i + B]
            loss = F.cross_entropy(model(_float(Xtr[idx])), ytr[idx])
            if opt is None:
                loss.backward()
                model.sgd_step(settings.lr, spec.weight_decay)
            else:
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            total += loss.item() * len(idx)
            count += len(idx)
        hist["train_loss"].append(total / count)
        tl, ta = evaluate(model, Xtr[:n_eval], ytr[:n_eval])
        vl, va = evaluate(model, Xte, yte)
        hist["train_eval_loss"].append(tl)
        hist["train_eval_acc"].append(ta)
        hist["test_loss"].append(vl)
        hist["test_acc"].append(va)
        hist["seconds"].append(time.perf_counter() - t0)
        if not math.isfinite(total):
            diverged = True
            break
    out = {"spec": asdict(spec), "label": spec.label, "history": hist, "diverged": diverged,
           "seconds": time.perf_counter() - tic}
    if spec.keep_state:
        sd = model.state_dict()
        out["state"] = {k: v.tolist() for k, v in sd.items()}
    return out


_DATA = None


def _worker_init(settings: Settings) -> None:
    global _DATA
    torch.set_num_threads(1)
    _DATA = load_data(settings.data, settings.n_train, settings.n_test)


def _run_job(job) -> dict:
    spec, settings = job
    return train_run(spec, settings, _DATA)


def run_study(settings: Settings, specs: Optional[Sequence[RunSpec]] = None, workers: int = 1,
              progress: bool = True, data=None) -> dict:
    """Train all ``specs`` (default :func:`default_specs`), ``workers`` processes (1: in this
    process), then measure the variances (part c). Returns the study dict."""
    specs = list(specs if specs is not None else default_specs(settings))
    if data is None:
        data = load_data(settings.data, settings.n_train, settings.n_test)
    order = sorted(range(len(specs)), key=lambda i: -specs[i].epochs)
    tic = time.perf_counter()
    results = run_jobs([s.label for s in specs], order,
                       lambda i: train_run(specs[i], settings, data), workers,
                       _run_job, lambda i: (specs[i], settings), _worker_init, (settings,),
                       desc="d2l-dropout runs", progress=progress)
    train_seconds = time.perf_counter() - tic
    study = {
        "settings": asdict(settings),
        "workers": workers,
        "train_seconds": train_seconds,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "runs": results,
    }
    base = _find(results, p1=0.2, p2=0.5, seed=settings.seed, keep=True)
    if base is not None:
        t0 = time.perf_counter()
        study["variance"] = variance_study(base, data[2][0], settings.masks, seed=settings.seed)
        study["variance_seconds"] = time.perf_counter() - t0
    return study


# =============================================================================== variance
def measure_dropout_variance(h: Tensor, p: float, kind: str = "bernoulli",
                             n_masks: int = 10_000, weight: Optional[Tensor] = None,
                             chunk: int = 2_000) -> dict:
    """Measure the variance that dropout adds, per unit, for a fixed activation vector ``h``.

    Draws ``n_masks`` independent masks of ``kind`` (training mode) and computes, per unit, the
    unbiased sample variance of ``drop(h)`` — or, with ``weight`` ``(out, in)``, of the next
    layer's pre-activation ``drop(h) @ weight.T`` (the bias adds no variance). Theory
    (independent masks, ``f = Var[ξ]``, :func:`rnndrop.models.mlp.variance_factor`):
    ``f · h²`` (``p/(1-p) · h²`` for Bernoulli), or ``f · (h²) @ (weight²).T``.

    Returns a dict of float64 tensors: ``measured``, ``theory``, ``mean`` (sample mean; should
    be ``h``, or ``weight @ h``), ``rel_err = measured/theory - 1`` (NaN where the theory is 0,
    e.g. ReLU units that are off) and ``rel_se``, the standard error of ``rel_err`` expected from
    sampling alone, ``sqrt((m4 - s⁴ (n-3)/(n-1)) / n) / theory`` with ``m4`` the sample fourth
    central moment (the variance of the sample variance).
    """
    fn = dropout_fn(kind)
    h = h.detach().to(torch.float64).reshape(-1)
    W = None if weight is None else weight.detach().to(torch.float64)
    n_units = h.numel() if W is None else W.shape[0]
    # pass 1: mean; pass 2 would need the samples again, so keep them (n × units float64).
    samples = torch.empty(n_masks, n_units, dtype=torch.float64)
    for i in range(0, n_masks, chunk):
        m = min(chunk, n_masks - i)
        x = fn(h.expand(m, -1).contiguous(), p, True)
        samples[i:i + m] = x if W is None else x @ W.t()
    mean = samples.mean(0)
    dev = samples - mean
    measured = dev.pow(2).sum(0) / (n_masks - 1)
    m4 = dev.pow(4).mean(0)
    f = variance_factor(kind, p)
    theory = f * (h * h if W is None else (h * h) @ (W * W).t())
    pos = theory > 0
    nan = torch.full_like(theory, float("nan"))
    rel_err = torch.where(pos, measured / theory.where(pos, torch.ones_like(theory)) - 1, nan)
    n = n_masks
    var_s2 = (m4 - measured ** 2 * (n - 3) / (n - 1)).clamp_min(0) / n
    rel_se = torch.where(pos, var_s2.sqrt()
                         / theory.where(pos, torch.ones_like(theory)), nan)
    return {"measured": measured, "theory": theory, "mean": mean, "rel_err": rel_err,
            "rel_se": rel_se, "factor": f}


def _summary(m: dict) -> dict:
    ok = ~torch.isnan(m["rel_err"])
    re, se = m["rel_err"][ok], m["rel_se"][ok]
    z = re / se.clamp_min(1e-300)
    zero = (~ok)
    return {
        "units": int(m["theory"].numel()),
        "units_with_variance": int(ok.sum()),
        "zero_theory_max_measured": float(m["measured"][zero].abs().max()) if zero.any() else 0.0,
        "mean_abs_rel_err": float(re.abs().mean()) if ok.any() else float("nan"),
        "max_abs_rel_err": float(re.abs().max()) if ok.any() else float("nan"),
        "median_rel_se": float(se.median()) if ok.any() else float("nan"),
        "frac_within_2se": float((z.abs() <= 2).double().mean()) if ok.any() else float("nan"),
        "total_rel_err": float(m["measured"].sum() / m["theory"].sum() - 1)
        if m["theory"].sum() > 0 else float("nan"),
        "factor": m["factor"],
    }


def variance_study(run: dict, image: Tensor, n_masks: int, seed: int = 0) -> dict:
    """Part (c) on the trained network of ``run`` (needs its ``state``) and one image."""
    st = run["spec"]
    model = MLP(p1=st["p1"], p2=st["p2"])
    model.load_state_dict({k: torch.tensor(v) for k, v in run["state"].items()})
    model.eval()
    with torch.no_grad():
        h1, h2 = model.hidden(_float(image.unsqueeze(0)))
    h1, h2 = h1[0], h2[0]
    torch.manual_seed(seed)
    cases = [("h1", "bernoulli", st["p1"], h1, None),
             ("h1", "gaussian", st["p1"], h1, None),
             ("h1", "three_value", st["p1"], h1, None),
             ("h2", "bernoulli", st["p2"], h2, None),
             ("z2 = W2·drop(h1)", "bernoulli", st["p1"], h1, model.linear2.weight),
             ("z3 = W3·drop(h2)", "bernoulli", st["p2"], h2, model.linear3.weight)]
    out = []
    for name, kind, p, h, W in cases:
        m = measure_dropout_variance(h, p, kind, n_masks, weight=W)
        out.append({"quantity": name, "kind": kind, "p": p, "n_masks": n_masks,
                    "summary": _summary(m),
                    "measured": m["measured"].tolist(), "theory": m["theory"].tolist()})
    return {"image": "first test image", "trained_run": run["label"],
            "trained_epochs": st["epochs"], "cases": out}


# ============================================================================== reporting
def _find(runs, *, form="concise", p1=0.2, p2=0.5, kind="bernoulli", dropconnect=None,
          weight_decay=0.0, seed=0, keep=None) -> Optional[dict]:
    for r in runs:
        s = r["spec"]
        dc = tuple(s["dropconnect"]) if s["dropconnect"] is not None else None
        if (s["form"] == form and s["p1"] == p1 and s["p2"] == p2 and s["kind"] == kind
                and dc == (tuple(dropconnect) if dropconnect is not None else None)
                and s["weight_decay"] == weight_decay and s["seed"] == seed
                and (keep is None or s["keep_state"] == keep)):
            return r
    return None


def _at(run: dict, epoch: int) -> Optional[dict]:
    """Metrics after ``epoch`` (1-based) of ``run``, or None if it did not get there."""
    h = run["history"]
    if len(h["test_acc"]) < epoch:
        return None
    i = epoch - 1
    return {k: h[k][i] for k in ("train_loss", "train_eval_loss", "train_eval_acc", "test_loss",
                                 "test_acc")} | {"gap": h["train_eval_acc"][i] - h["test_acc"][i]}


def _f(v, spec=".4f") -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "—"
    return format(v, spec)


def _row(label: str, m: Optional[dict], extra: str = "") -> str:
    if m is None:
        return f"| {label} | — | — | — | — | — |{extra}"
    return (f"| {label} | {_f(m['test_acc'])} | {_f(m['train_eval_acc'])} | {_f(m['gap'], '+.4f')} "
            f"| {_f(m['test_loss'])} | {_f(m['train_loss'])} |{extra}")


_HEAD = ("| run | test acc | train acc (eval) | gap | test loss | train loss (dropout on) |",
         "|---|---|---|---|---|---|")


def markdown_tables(study: dict) -> str:
    """All tables of the study as markdown."""
    s = study["settings"]
    runs = study["runs"]
    E, seed = s["epochs"], s["seed"]
    L = []
    L.append(f"Settings: lr {s['lr']:g}, batch {s['batch_size']}, seed {seed}; "
             f"{len(runs)} runs on {study['workers']} worker process(es), training wall time "
             f"{study['train_seconds']:.0f} s (torch {study['torch']}, {study['cpu_count']} CPUs). "
             "Accuracies in eval mode after the given epoch: test = all test images, train = "
             f"the first {s['n_train_eval'] if s['n_train'] is None else min(s['n_train_eval'], s['n_train'])} "
             "training images; gap = train − test accuracy; train loss = the book's running "
             "mean over the last epoch with dropout on.")

    # ---- repro
    R = s["repro_epochs"]
    L += ["", f"### Reproduction: both forms, {R} epochs (book: test accuracy about "
          f"{BOOK_ACCURACY[0]:.2f}–{BOOK_ACCURACY[1]:.2f})", "",
          _HEAD[0] + " seconds |", _HEAD[1] + "---|"]
    sc = _find(runs, form="scratch", seed=seed)
    co = _find(runs, form="concise", seed=seed)
    for name, r in (("from scratch (`MLPScratch`, manual SGD)", sc),
                    ("concise (`MLP`, `torch.optim.SGD`)", co)):
        secs = f" {sum(r['history']['seconds'][:R]):.1f} |" if r else " — |"
        L.append(_row(name, _at(r, R) if r else None, secs))
    if sc and co:
        n = min(R, len(sc["history"]["test_acc"]), len(co["history"]["test_acc"]))
        d = max(abs(a - b) for k in ("train_loss", "test_loss")
                for a, b in zip(sc["history"][k][:n], co["history"][k][:n]))
        L += ["", f"Largest difference between the two forms' per-epoch losses over {n} "
              f"epochs: {d:.3g}."]

    # ---- a: grid
    grid = s["grid"]
    def grid_table(key: str, spec: str) -> list[str]:
        lines = ["| p1 \\ p2 | " + " | ".join(f"{b:g}" for b in grid) + " |",
                 "|---|" + "---|" * len(grid)]
        for a in grid:
            cells = []
            for b in grid:
                r = _find(runs, p1=a, p2=b, seed=seed)
                m = _at(r, E) if r else None
                cells.append(_f(m[key], spec) if m else "—")
            lines.append(f"| **{a:g}** | " + " | ".join(cells) + " |")
        return lines

    L += ["", f"### (a) Dropout grid: test accuracy after {E} epochs (rows p1, columns p2)", ""]
    L += grid_table("test_acc", ".4f")
    L += ["", f"Train − test accuracy gap after {E} epochs:", ""]
    L += grid_table("gap", "+.4f")

    # ---- seeds
    seeds = [r for r in runs if r["spec"]["form"] == "concise" and r["spec"]["p1"] == 0.2
             and r["spec"]["p2"] == 0.5 and r["spec"]["kind"] == "bernoulli"
             and r["spec"]["dropconnect"] is None and not r["spec"]["weight_decay"]]
    seeds.sort(key=lambda r: r["spec"]["seed"])
    accs = [m["test_acc"] for m in (_at(r, E) for r in seeds) if m]
    if len(accs) > 1:
        mu = sum(accs) / len(accs)
        sd = (sum((a - mu) ** 2 for a in accs) / (len(accs) - 1)) ** 0.5
        L += ["", f"### Noise level: p = (0.2, 0.5), {len(accs)} seeds, {E} epochs", "",
              _HEAD[0], _HEAD[1]]
        for r in seeds:
            L.append(_row(f"seed {r['spec']['seed']}", _at(r, E)))
        L += ["", f"Test accuracy {mu:.4f} ± {sd:.4f} (mean ± sample std over {len(accs)} "
              f"seeds; range {max(accs) - min(accs):.4f})."]

    # ---- b: long runs
    Lg = s["long_epochs"]
    L += ["", f"### (b) With and without dropout over {Lg} epochs", "",
          "| run | epoch | test acc | train acc (eval) | gap | test loss | train loss (eval) |",
          "|---|---|---|---|---|---|---|"]
    for name, (a, b) in (("no dropout", (0.0, 0.0)), ("dropout (0.2, 0.5)", (0.2, 0.5))):
        r = _find(runs, p1=a, p2=b, seed=seed)
        if r is None:
            continue
        n = len(r["history"]["test_acc"])
        for ep in sorted({e for e in (1, 5, 10, 20, n) if e <= n}):
            m = _at(r, ep)
            L.append(f"| {name} | {ep} | {_f(m['test_acc'])} | {_f(m['train_eval_acc'])} | "
                     f"{_f(m['gap'], '+.4f')} | {_f(m['test_loss'])} | "
                     f"{_f(m['train_eval_loss'])} |")
        h = r["history"]
        best = max(range(n), key=lambda i: h["test_acc"][i])
        L.append(f"| {name}: best test acc | {best + 1} | {_f(h['test_acc'][best])} | "
                 f"{_f(h['train_eval_acc'][best])} | "
                 f"{_f(h['train_eval_acc'][best] - h['test_acc'][best], '+.4f')} | "
                 f"{_f(h['test_loss'][best])} | {_f(h['train_eval_loss'][best])} |")

    # ---- c: variance
    v = study.get("variance")
    if v:
        L += ["", f"### (c) Variance of hidden units under dropout ({v['cases'][0]['n_masks']} "
              f"masks, {v['image']}, network {v['trained_run']} after {v['trained_epochs']} "
              "epochs)", "",
              "| quantity | mask | p | theory Var/h² (f) | units with Var > 0 | mean abs rel. err "
              "| max abs rel. err | expected rel. s.e. (median) | within 2 s.e. | total rel. err |",
              "|---|---|---|---|---|---|---|---|---|---|"]
        for c in v["cases"]:
            sm = c["summary"]
            L.append(f"| {c['quantity']} | {c['kind']} | {c['p']:g} | {sm['factor']:.4f} | "
                     f"{sm['units_with_variance']}/{sm['units']} | {_f(sm['mean_abs_rel_err'])} | "
                     f"{_f(sm['max_abs_rel_err'])} | {_f(sm['median_rel_se'])} | "
                     f"{_f(100 * sm['frac_within_2se'], '.1f')}% | {_f(sm['total_rel_err'], '+.4f')} |")
        L += ["", "Theory: `Var = f · h²` per unit, `f = p/(1-p)` (Bernoulli, Gaussian) or "
              "`(1-p)·5γ²/8 − 1` (three-value); for the next layer's pre-activation "
              "`Var[z_k] = f · Σ_j W_kj² h_j²`. Relative error = measured/theory − 1 over the "
              "units with non-zero theory (units with h = 0 measured exactly 0); expected s.e. "
              "from the sample fourth moment."]

    # ---- d: weight decay
    L += ["", f"### (d) Weight decay (no dropout) vs dropout, {E} epochs", "",
          _HEAD[0], _HEAD[1]]
    wd_runs = [r for r in runs if r["spec"]["p1"] == 0 and r["spec"]["p2"] == 0
               and r["spec"]["dropconnect"] is None and r["spec"]["form"] == "concise"
               and r["spec"]["seed"] == seed]
    wd_runs.sort(key=lambda r: r["spec"]["weight_decay"])
    for r in wd_runs:
        L.append(_row(f"wd = {r['spec']['weight_decay']:g}", _at(r, E)))
    drop_runs = [r for r in runs if r["spec"]["form"] == "concise" and r["spec"]["kind"] == "bernoulli"
                 and r["spec"]["dropconnect"] is None and not r["spec"]["weight_decay"]
                 and r["spec"]["seed"] == seed and (r["spec"]["p1"] or r["spec"]["p2"])]
    pairs = []
    for r in wd_runs:
        if not r["spec"]["weight_decay"]:
            continue
        m = _at(r, E)
        cands = [(abs(_at(d, E)["test_acc"] - m["test_acc"]), d) for d in drop_runs if _at(d, E)]
        if m and cands:
            _, d = min(cands, key=lambda t: t[0])
            pairs.append((r, d))
    if pairs:
        L += ["", "Matched by test accuracy (the dropout grid run of (a) closest in test "
              "accuracy to each weight-decay run):", "",
              "| weight decay | test acc | gap | matched dropout (p1, p2) | test acc | gap |",
              "|---|---|---|---|---|---|"]
        for r, d in pairs:
            m, md = _at(r, E), _at(d, E)
            L.append(f"| {r['spec']['weight_decay']:g} | {_f(m['test_acc'])} | "
                     f"{_f(m['gap'], '+.4f')} | ({d['spec']['p1']:g}, {d['spec']['p2']:g}) | "
                     f"{_f(md['test_acc'])} | {_f(md['gap'], '+.4f')} |")

    # ---- e / f
    for title, sel in (
            (f"(e) DropConnect on the weights vs dropout on the activations, {E} epochs",
             [("no dropout", dict(p1=0.0, p2=0.0)), ("dropout on activations (0.2, 0.5)", {}),
              ("DropConnect W1, W2, W3 = (0, 0.2, 0.5)",
               dict(p1=0.0, p2=0.0, dropconnect=(0.0, 0.2, 0.5))),
              ("DropConnect W1, W2, W3 = (0.2, 0.2, 0.5)",
               dict(p1=0.0, p2=0.0, dropconnect=(0.2, 0.2, 0.5)))]),
            (f"(f) Mask distributions at p = (0.2, 0.5), {E} epochs",
             [("no dropout", dict(p1=0.0, p2=0.0)), ("Bernoulli {0, 1/(1-p)}", {}),
              ("Gaussian N(1, p/(1-p))", dict(kind="gaussian")),
              ("three-value {0, γ/2, γ}", dict(kind="three_value"))])):
        L += ["", f"### {title}", "", _HEAD[0], _HEAD[1]]
        for name, kw in sel:
            r = _find(runs, seed=seed, **kw)
            if r is not None:
                L.append(_row(name, _at(r, E)))
    return "\n".join(L) + "\n"


def plot_all(study: dict, out: Path) -> list[Path]:
    """The five figures (see the module docstring); returns their paths."""
    out = Path(out)
    s, runs = study["settings"], study["runs"]
    E, seed, grid = s["epochs"], s["seed"], s["grid"]
    paths = []

    # (a) heatmaps
    fig, axes = figure(1, 2, size=(9.0, 3.8))
    for ax, key, title, cmap in ((axes[0], "test_acc", "test accuracy", "viridis"),
                                 (axes[1], "gap", "train − test accuracy", "magma")):
        M = [[(_at(r, E) or {}).get(key, float("nan")) if (r := _find(runs, p1=a, p2=b, seed=seed))
              else float("nan") for b in grid] for a in grid]
        im = ax.imshow(M, cmap=cmap, origin="upper")
        vals = [x for row in M for x in row if math.isfinite(x)]
        mid = (min(vals) + max(vals)) / 2 if vals else 0.0
        for i in range(len(grid)):
            for j in range(len(grid)):
                if math.isfinite(M[i][j]):
                    ax.text(j, i, f"{M[i][j]:.3f}", ha="center", va="center", fontsize=8,
                            color="w" if M[i][j] < mid else "k")
        ax.set_xticks(range(len(grid)), [f"{g:g}" for g in grid])
        ax.set_yticks(range(len(grid)), [f"{g:g}" for g in grid])
        ax.set_xlabel("p2 (after hidden layer 2)")
        ax.set_ylabel("p1 (after hidden layer 1)")
        ax.set_title(f"{title} after {E} epoch{'s' * (E != 1)}", fontsize="medium")
        fig.colorbar(im, ax=ax, fraction=0.046)
    paths.append(save(fig, out / "d2l-dropout-grid.png"))

    # (b) curves
    fig, axes = figure(1, 3, size=(13.0, 3.8))
    for (a, b), name, col in (((0.0, 0.0), "no dropout", "C3"), ((0.2, 0.5), "dropout (0.2, 0.5)", "C0")):
        r = _find(runs, p1=a, p2=b, seed=seed)
        if r is None:
            continue
        h = r["history"]
        ep = list(range(1, len(h["test_acc"]) + 1))
        axes[0].plot(ep, h["train_eval_acc"], color=col, label=f"{name}: train")
        axes[0].plot(ep, h["test_acc"], color=col, linestyle="--", label=f"{name}: test")
        axes[1].plot(ep, h["train_eval_loss"], color=col, label=f"{name}: train")
        axes[1].plot(ep, h["test_loss"], color=col, linestyle="--", label=f"{name}: test")
        axes[2].plot(ep, [x - y for x, y in zip(h["train_eval_acc"], h["test_acc"])], color=col,
                     label=name)
    for ax, yl in zip(axes, ("accuracy (eval mode)", "cross-entropy (eval mode)",
                             "train − test accuracy")):
        ax.set_xlabel("epoch")
        ax.set_ylabel(yl)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize="x-small")
    paths.append(save(fig, out / "d2l-dropout-curves.png"))

    # (c) variance scatter
    v = study.get("variance")
    if v:
        groups = [("h1 after dropout", [c for c in v["cases"] if c["quantity"] == "h1"]),
                  ("h2 after dropout", [c for c in v["cases"] if c["quantity"] == "h2"]),
                  ("next layer pre-activation", [c for c in v["cases"]
                                                 if c["quantity"].startswith("z")])]
        fig, axes = figure(1, 3, size=(13.0, 4.2))
        markers = {"bernoulli": "o", "gaussian": "s", "three_value": "^"}
        for ax, (title, cases) in zip(axes, groups):
            lo, hi = float("inf"), 0.0
            for k, c in enumerate(cases):
                pts = [(t, m) for t, m in zip(c["theory"], c["measured"]) if t > 0]
                if not pts:
                    continue
                t, m = zip(*pts)
                lo, hi = min(lo, min(t)), max(hi, max(t))
                sm = c["summary"]
                label = (f"{c['quantity'] if title.startswith('next') else c['kind']}, "
                         f"p={c['p']:g}: mean |rel err| {_f(sm['mean_abs_rel_err'], '.3f')}")
                ax.scatter(t, m, s=9, alpha=0.6, marker=markers.get(c["kind"], "o"),
                           color=f"C{k}", label=label)
            if hi > 0:
                ax.plot([lo, hi], [lo, hi], color="k", linewidth=0.8, label="measured = theory")
            ax.set_xscale("log")
            ax.set_yscale("log")
            from matplotlib.ticker import NullFormatter
            ax.xaxis.set_minor_formatter(NullFormatter())
            ax.yaxis.set_minor_formatter(NullFormatter())
            ax.set_xlabel("theory Var")
            ax.set_ylabel(f"measured Var ({v['cases'][0]['n_masks']} masks)")
            ax.set_title(title, fontsize="medium")
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize="x-small")
        paths.append(save(fig, out / "d2l-dropout-variance.png"))

    # (d) weight decay vs dropout: gap against test accuracy
    fig, axes = figure(1, 1, size=(6.4, 4.4))
    ax = axes[0]
    xs, ys, labels = [], [], []
    for r in runs:
        sp = r["spec"]
        if (sp["form"] == "concise" and sp["kind"] == "bernoulli" and sp["dropconnect"] is None
                and not sp["weight_decay"] and sp["seed"] == seed):
            m = _at(r, E)
            if m:
                xs.append(m["test_acc"]); ys.append(m["gap"])
                labels.append(f"({sp['p1']:g},{sp['p2']:g})")
    ax.scatter(xs, ys, color="C0", label="dropout (p1, p2), no weight decay")
    for x, y, t in zip(xs, ys, labels):
        ax.annotate(t, (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
    xs, ys, labels = [], [], []
    for r in runs:
        sp = r["spec"]
        if (sp["weight_decay"] and sp["p1"] == 0 and sp["p2"] == 0 and sp["dropconnect"] is None
                and sp["seed"] == seed):
            m = _at(r, E)
            if m:
                xs.append(m["test_acc"]); ys.append(m["gap"]); labels.append(f"wd {sp['weight_decay']:g}")
    ax.scatter(xs, ys, color="C3", marker="s", label="weight decay, no dropout")
    for x, y, t in zip(xs, ys, labels):
        ax.annotate(t, (x, y), fontsize=7, xytext=(3, -9), textcoords="offset points", color="C3")
    ax.set_xlabel(f"test accuracy after {E} epochs")
    ax.set_ylabel("train − test accuracy")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="x-small")
    paths.append(save(fig, out / "d2l-dropout-weight-decay.png"))

    # (e, f) test accuracy curves of the variants
    fig, axes = figure(1, 2, size=(11.0, 3.9))
    for ax, title, sel in (
            (axes[0], "DropConnect vs dropout", [
                ("no dropout", dict(p1=0.0, p2=0.0)), ("dropout (0.2, 0.5)", {}),
                ("DropConnect (0, 0.2, 0.5)", dict(p1=0.0, p2=0.0, dropconnect=(0.0, 0.2, 0.5))),
                ("DropConnect (0.2, 0.2, 0.5)", dict(p1=0.0, p2=0.0, dropconnect=(0.2, 0.2, 0.5)))]),
            (axes[1], "mask distributions, p = (0.2, 0.5)", [
                ("no dropout", dict(p1=0.0, p2=0.0)), ("Bernoulli", {}),
                ("Gaussian", dict(kind="gaussian")), ("three-value", dict(kind="three_value"))])):
        for k, (name, kw) in enumerate(sel):
            r = _find(runs, seed=seed, **kw)
            if r is None:
                continue
            h = r["history"]
            n = min(E, len(h["test_acc"]))
            ep = list(range(1, n + 1))
            ax.plot(ep, h["test_acc"][:n], color=f"C{k}", marker="o", markersize=3,
                    label=f"{name}: test")
            ax.plot(ep, h["train_eval_acc"][:n], color=f"C{k}", linestyle=":",
                    label=f"{name}: train")
        ax.set_xlabel("epoch")
        ax.set_ylabel("accuracy (eval mode)")
        ax.set_title(title, fontsize="medium")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize="xx-small", ncol=2)
    paths.append(save(fig, out / "d2l-dropout-variants.png"))
    return paths


def write_outputs(study: dict, out) -> dict:
    """``results.json`` (without the saved weights), ``tables.md`` and the plots in ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "results.json", "tables": out / "tables.md"}
    slim = dict(study, runs=[{k: v for k, v in r.items() if k != "state"} for r in study["runs"]])
    paths["json"].write_text(json.dumps(json_safe(slim), indent=1))
    paths["tables"].write_text(markdown_tables(study))
    for p in plot_all(study, out):
        paths[p.stem] = p
    return paths


# ==================================================================================== CLI
def _floats(text: str) -> tuple:
    return tuple(float(x) for x in text.split(",") if x.strip())


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", default=None,
                   help="data root holding fashion-mnist/ (default: $RNNDROP_DATA)")
    p.add_argument("--out", default="runs/d2l-dropout", help="output folder (default: %(default)s)")
    p.add_argument("--epochs", type=int, default=None,
                   help="epochs of the grid, weight-decay, DropConnect, mask-kind and seed runs (default 10)")
    p.add_argument("--long-epochs", type=int, default=None,
                   help="epochs of the with/without-dropout curves, part b (default 30)")
    p.add_argument("--repro-epochs", type=int, default=None,
                   help="epochs of the from-scratch vs concise reproduction (default 10)")
    p.add_argument("--grid", type=_floats, default=None,
                   help="comma-separated dropout probabilities for the (p1, p2) grid (default 0,0.2,0.5,0.8)")
    p.add_argument("--weight-decays", type=_floats, default=None,
                   help="comma-separated weight decays (default 1e-4,3e-4,1e-3,3e-3)")
    p.add_argument("--seeds", type=int, default=None,
                   help="seeds of the (0.2, 0.5) network for the noise level (default 3)")
    p.add_argument("--masks", type=int, default=None,
                   help="dropout masks per unit in the variance measurement (default 10000)")
    p.add_argument("--lr", type=float, default=0.5)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=None,
                   help="parallel processes, one torch thread each (default: os.cpu_count(); 1 = in-process)")
    p.add_argument("--quick", action="store_true",
                   help="tiny smoke run (1,024 training images, 1-2 epochs, 2x2 grid): checks the "
                        "pipeline, not the science")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--replot", action="store_true",
                   help="no training: rewrite tables.md and the plots from --out/results.json")


def settings_from_args(args) -> tuple[Settings, int]:
    q = QUICK if args.quick else {}
    d = Settings()
    pick = lambda name: (getattr(args, name) if getattr(args, name) is not None
                         else q.get(name, getattr(d, name)))
    s = Settings(data=args.data, lr=args.lr, batch_size=args.batch_size, seed=args.seed,
                 epochs=pick("epochs"), long_epochs=pick("long_epochs"),
                 repro_epochs=pick("repro_epochs"), grid=tuple(pick("grid")),
                 weight_decays=tuple(pick("weight_decays")), seeds=pick("seeds"),
                 masks=pick("masks"), n_train=q.get("n_train"), n_test=q.get("n_test"),
                 n_train_eval=q.get("n_train_eval", d.n_train_eval))
    for name in ("epochs", "long_epochs", "repro_epochs", "masks", "batch_size"):
        if getattr(s, name) < 1:
            raise SystemExit(f"--{name.replace('_', '-')} must be >= 1")
    if s.masks < 2:
        raise SystemExit("--masks must be >= 2")
    workers = args.workers if args.workers is not None else (os.cpu_count() or 1)
    return s, max(1, workers)


def replot(out) -> dict:
    """Rewrite ``tables.md`` and the plots from ``out/results.json`` (no training)."""
    out = Path(out)
    study = json.loads((out / "results.json").read_text())
    (out / "tables.md").write_text(markdown_tables(study))
    paths = {"tables": out / "tables.md"}
    for p in plot_all(study, out):
        paths[p.stem] = p
    return paths


def run(args) -> int:
    """Run the study with parsed arguments; prints the tables and where the outputs are."""
    if getattr(args, "replot", False):
        paths = replot(args.out)
        print((Path(args.out) / "tables.md").read_text())
        print(f"rewritten from {Path(args.out) / 'results.json'}: "
              + ", ".join(p.name for p in paths.values()))
        return 0
    settings, workers = settings_from_args(args)
    specs = default_specs(settings)
    print(f"d2l-dropout study: {len(specs)} runs, {sum(sp.epochs for sp in specs)} epochs in all, "
          f"{workers} worker(s){' (quick)' if args.quick else ''}")
    load0 = loadavg()
    tic = time.perf_counter()
    study = run_study(settings, specs, workers=workers, progress=not args.no_progress)
    study["wall_seconds"] = time.perf_counter() - tic
    return finish(study, args, load0, write_outputs, markdown_tables)


add_cli, main = entry_points(
    "d2l-dropout", __name__,
    "dropout from scratch on Fashion-MNIST (D2L 3.13) and the chapter's exercises",
    __doc__, add_arguments, run)


if __name__ == "__main__":
    raise SystemExit(main())
