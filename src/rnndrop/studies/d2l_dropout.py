"""Study: dropout from scratch on Fashion-MNIST (Dive into Deep Learning §3.13) and its exercises.

``rnndrop study d2l-dropout`` trains the book's MLP (784-256-256-10, ReLU, dropout p1 = 0.2 /
p2 = 0.5 after the hidden layers, weights N(0, 0.01²), SGD lr 0.5, batch 256, cross-entropy;
:mod:`rnndrop.models.mlp`) and runs:

- **repro**: the from-scratch form (own tensors, ``p -= lr * p.grad``) and the concise form
  (``nn.Module`` + ``torch.optim.SGD``), ``--repro-epochs`` (10) epochs, same seed, next to the
  book's 0.87–0.88.
- **(a) grid** over ``(p1, p2)`` in ``--grid`` ² (default {0, 0.2, 0.5, 0.8}²), ``--epochs``.
- **(b) curves**: no dropout vs (0.2, 0.5) for ``--long-epochs`` (30): train / test accuracy,
  loss and gap per epoch.
- **(c) variance**: for one fixed test image and the trained (0.2, 0.5) network of (b), the
  variance of every hidden unit under dropout over ``--masks`` masks against the theory
  ``Var = p/(1-p) · h²`` (:func:`rnndrop.variance.measure_dropout_variance`), also for the
  Gaussian and three-value masks (their own theory) and for the next layer's pre-activation
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

Runs go to ``--jobs`` processes (default ``os.cpu_count()``), one torch thread each, the
longest first; each worker loads the data once. Default settings: 25 runs of 10 epochs and 2 of
30, 310 epochs in all (docs/results/d2l-dropout.md gives the measured wall time).

Outputs in ``--out``: ``results.json`` (every run's per-epoch history, the variance
measurements, settings, timings, load average), ``tables.md`` and the plots
``d2l-dropout-grid.png``, ``d2l-dropout-curves.png``, ``d2l-dropout-variance.png``,
``d2l-dropout-weight-decay.png``, ``d2l-dropout-variants.png`` (:mod:`.d2l_report`).
``--replot`` rewrites the tables and plots from an existing ``results.json`` without training.
"""
from __future__ import annotations

import math
import os
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from ..data import fashion_mnist
from ..models.mlp import MLP, MLPScratch
from ..variance import KINDS, measure_dropout_variance
from ._cli import Study, environment, option, run_jobs
from .d2l_report import find_run, markdown_tables, report

__all__ = ["RunSpec", "Settings", "default_specs", "load_data", "build_model", "evaluate",
           "train_run", "variance_study", "run", "report", "markdown_tables", "find_run", "STUDY"]

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
    data: Optional[str] = option(None, "data root holding fashion-mnist/ (default: $RNNDROP_DATA)")
    lr: float = option(0.5, "SGD learning rate")
    batch_size: int = option(256, "mini-batch size")
    epochs: int = option(10, "epochs of the grid, weight-decay, DropConnect, mask-kind and seed runs")
    long_epochs: int = option(30, "epochs of the with/without-dropout curves, part b")
    repro_epochs: int = option(10, "epochs of the from-scratch vs concise reproduction")
    grid: tuple[float, ...] = option((0.0, 0.2, 0.5, 0.8),
                                     "dropout probabilities of the (p1, p2) grid")
    weight_decays: tuple[float, ...] = option((1e-4, 3e-4, 1e-3, 3e-3), "weight decays of part d")
    seeds: int = option(3, "seeds of the (0.2, 0.5) network (the noise level)")
    seed: int = option(0, "seed of every run (the seed runs: seed, seed+1, ...)")
    masks: int = option(10_000, "dropout masks per unit in the variance measurement, part c")
    n_train: Optional[int] = option(None, "use only the first N training images (none: all)")
    n_test: Optional[int] = option(None, "use only the first N test images (none: all)")
    train_eval_size: int = option(10_000, "training images evaluated after each epoch")
    jobs: int = option(os.cpu_count() or 1, "parallel processes (1: in this process)")
    threads: int = option(1, "torch threads per run")

    def __post_init__(self):
        for name in ("epochs", "long_epochs", "repro_epochs", "batch_size", "jobs", "threads"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 1")
        if self.masks < 2:
            raise ValueError("--masks must be >= 2")

    @classmethod
    def quick(cls) -> "Settings":
        """tiny smoke run (1,024 training images, 1-2 epochs, 2x2 grid): checks the pipeline,
        not the science"""
        return cls(epochs=1, long_epochs=2, repro_epochs=1, grid=(0.0, 0.5),
                   weight_decays=(1e-3,), seeds=2, masks=500, n_train=1024, n_test=512,
                   train_eval_size=512)


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
    out = []
    for split, n in (("train", n_train), ("test", n_test)):
        X, y = fashion_mnist.load_fashion_mnist(root, split=split)
        X = torch.as_tensor(X)
        y = torch.as_tensor(y).long()
        if n is not None:
            X, y = X[:n], y[:n]
        out += [X.contiguous(), y.contiguous()]
    return tuple(out)


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
        logits = model(fashion_mnist.to_float(X[i:i + batch]))
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
    n_eval = min(settings.train_eval_size, len(ytr))
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
            loss = F.cross_entropy(model(fashion_mnist.to_float(Xtr[idx])), ytr[idx])
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
    _DATA = load_data(settings.data, settings.n_train, settings.n_test)


def _run_job(job) -> dict:
    spec, settings = job
    return train_run(spec, settings, _DATA)


def run(settings: Settings, out: Optional[Path] = None, progress: bool = True,
        specs: Optional[Sequence[RunSpec]] = None) -> dict:
    """Train all ``specs`` (default :func:`default_specs`) in ``settings.jobs`` processes (1: in
    this process), the longest first, then measure the variances (part c). Returns the results
    (the saved weights of the part-c network are used, not kept)."""
    s = settings
    specs = list(specs if specs is not None else default_specs(s))
    print(f"d2l-dropout study: {len(specs)} runs, {sum(sp.epochs for sp in specs)} epochs in all, "
          f"{s.jobs} job(s)")
    data = load_data(s.data, s.n_train, s.n_test)
    order = sorted(range(len(specs)), key=lambda i: -specs[i].epochs)
    tic = time.perf_counter()
    runs = run_jobs([sp.label for sp in specs], order,
                    lambda i: train_run(specs[i], s, data), s.jobs,
                    _run_job, lambda i: (specs[i], s), _worker_init, (s,), threads=s.threads,
                    desc="d2l-dropout runs", progress=progress)
    results = {"settings": asdict(s), "workers": s.jobs,
               "train_seconds": time.perf_counter() - tic, **environment(), "runs": runs}
    base = find_run(runs, p1=0.2, p2=0.5, seed=s.seed, keep=True)
    if base is not None:
        t0 = time.perf_counter()
        results["variance"] = variance_study(base, data[2][0], s.masks, seed=s.seed)
        results["variance_seconds"] = time.perf_counter() - t0
    results["runs"] = [{k: v for k, v in r.items() if k != "state"} for r in runs]
    return results


# =============================================================================== variance
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
        h1, h2 = model.hidden(fashion_mnist.to_float(image.unsqueeze(0)))
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


STUDY = Study("d2l-dropout",
              "dropout from scratch on Fashion-MNIST (D2L 3.13) and the chapter's exercises",
              __doc__, Settings, run, report)
