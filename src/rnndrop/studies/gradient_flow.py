"""Study: how gradients flow back through time in vanilla RNNs, GRUs and LSTMs.

``rnndrop study gradient-flow`` trains small recurrent networks on a generated task where long
memory matters and, for each network, measures

- the **decay rate** of ``‖∂L/∂h_t‖`` per time step (:func:`rnndrop.diagnostics.decay_rate` of
  :func:`rnndrop.diagnostics.grad_norms_over_time` on a fixed probe batch), at initialisation and
  after training: ``ρ < 1`` the gradient vanishes going back in time, ``ρ > 1`` it explodes;
- whether training **diverged** (a non-finite loss or gradient, or a loss above
  ``EXPLODE_FACTOR`` times the larger of the first loss and the task's baseline);
- the **loss reached** after a fixed budget of optimiser steps (on a held-out batch).

Tasks (:mod:`rnndrop.data.synthetic`, generated on the fly, sequence length ``T`` = 100 by
default):

- ``adding`` (default; Hochreiter & Schmidhuber 1997): input ``(T, B, 2)``, channel 0 uniform
  numbers in [0, 1), channel 1 two markers, one in each half of the sequence; the target is the
  sum of the two marked numbers, read from the last step (mean squared error). Predicting the
  mean (1.0) gives the baseline MSE 1/6 ≈ 0.167; beating it needs the first marked number, which
  lies at least T/2 steps back.
- ``copy``: ``n_copy`` = 10 random symbols (of 8) at the start, blanks, a "go" token at step
  ``T - n_copy``, and the symbols must be reproduced over the last ``n_copy`` steps (cross-entropy
  on those steps; baseline ln 8 ≈ 2.08). The target equals the input delayed by ``T - n_copy``.

Networks (23, not the full cross product; :func:`default_specs`): vanilla RNN with tanh / ReLU /
sigmoid / leaky ReLU, GRU, LSTM, and 3-layer LSTMs with and without ``skip=True``, at torch's
default initialisation; the LSTM with its forget-gate bias at 1 and 3 and the GRU with its
update-gate bias at 3 (gates open at initialisation); a sweep of ``W_hh`` = r · orthogonal (each
gate block orthogonal scaled by r) with r = 0.5, 1.0, 1.5 for the tanh RNN, the ReLU RNN and the
LSTM; and the three r = 1.5 runs again with gradient-norm clipping (``--clip``, default 1.0).
Everything else runs without clipping. Hidden size 64, batch 32, one torch thread per network,
``--jobs`` processes in parallel.

Optimiser: plain SGD (no momentum) by default, so that the size of a step is the size of the
gradient and exploding gradients show up as they do in BPTT with SGD (Pascanu et al. 2013);
``--optimizer adam`` normalises the step per parameter and hides most of that.

Outputs in ``--out``: ``results.json`` (every measurement, loss curves, gradient norms),
``results.md`` (the tables), ``gradient-flow-init.png`` (``‖∂L/∂h_t‖`` against ``t`` on a log
scale at initialisation, one curve per network: default init; gate biases),
``gradient-flow-radius.png`` (the radius sweep at initialisation), ``gradient-flow-trained.png``
(as the first, after training) and ``gradient-flow-loss.png`` (training-loss curves)
(:mod:`.gradient_flow_report`).
"""
from __future__ import annotations

import math
import os
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Optional

import torch
from torch import Tensor, nn

from ..clipping import ClipMonitor
from ..data.synthetic import TASKS, Task, make_task
from ..diagnostics import (decay_rate, gate_names, grad_norms_over_time, saturation_report,
                           spectral_norms)
from ..init import init_recurrent, set_gate_bias
from ..rnn import GRU, LSTM, RNN
from ._cli import Study, environment, option, run_jobs
from .gradient_flow_report import markdown_table, plot_all, report

__all__ = ["RunSpec", "default_specs", "SeqModel", "build_model", "Settings", "eval_baseline",
           "train_one", "run", "markdown_table", "plot_all", "report", "EXPLODE_FACTOR", "STUDY"]

#: A loss above EXPLODE_FACTOR × max(first loss, baseline) counts as a loss explosion.
EXPLODE_FACTOR = 100.0


# ================================================================================ networks
@dataclass(frozen=True)
class RunSpec:
    """One network of the study."""
    name: str
    cell: str                   # rnn | gru | lstm
    activation: str = "tanh"    # rnn only
    num_layers: int = 1
    skip: bool = False
    init: str = "default"       # default (torch's uniform) | orthogonal
    radius: float = 1.0         # W_hh = radius * orthogonal (init="orthogonal")
    clip: float = 0.0           # max gradient norm (0: no clipping)
    gate_bias: Optional[float] = None  # LSTM forget / GRU update gate bias (None: torch's init)
    group: str = "models"       # models | gate-bias | radius | clip (table/plot it belongs to)

    @property
    def label(self) -> str:
        s = self.name
        if self.gate_bias is not None:
            s += f" b_{'f' if self.cell == 'lstm' else 'z'}={self.gate_bias:g}"
        if self.init == "orthogonal":
            s += f" orth×{self.radius:g}"
        if self.clip:
            s += f" clip {self.clip:g}"
        return s


def default_specs(clip: float = 1.0) -> list[RunSpec]:
    """The study's 23 networks: 8 at torch's default initialisation, 3 with the LSTM forget /
    GRU update gate biased open, a 3 × 3 sweep of the spectral radius of ``W_hh`` (orthogonal ×
    r) and the 3 runs with r = 1.5 again with gradient-norm clipping at ``clip``."""
    specs = [
        RunSpec("rnn-tanh", "rnn", "tanh"),
        RunSpec("rnn-relu", "rnn", "relu"),
        RunSpec("rnn-sigmoid", "rnn", "sigmoid"),
        RunSpec("rnn-leaky_relu", "rnn", "leaky_relu"),
        RunSpec("gru", "gru"),
        RunSpec("lstm", "lstm"),
        RunSpec("lstm-3layer", "lstm", num_layers=3),
        RunSpec("lstm-3layer-skip", "lstm", num_layers=3, skip=True),
        RunSpec("lstm", "lstm", gate_bias=1.0, group="gate-bias"),
        RunSpec("lstm", "lstm", gate_bias=3.0, group="gate-bias"),
        RunSpec("gru", "gru", gate_bias=3.0, group="gate-bias"),
    ]
    for name, cell, act in (("rnn-tanh", "rnn", "tanh"), ("rnn-relu", "rnn", "relu"),
                            ("lstm", "lstm", "tanh")):
        for r in (0.5, 1.0, 1.5):
            specs.append(RunSpec(name, cell, act, init="orthogonal", radius=r, group="radius"))
    for name, cell, act in (("rnn-tanh", "rnn", "tanh"), ("rnn-relu", "rnn", "relu"),
                            ("lstm", "lstm", "tanh")):
        specs.append(RunSpec(name, cell, act, init="orthogonal", radius=1.5, clip=clip,
                             group="clip"))
    return specs


class SeqModel(nn.Module):
    """A recurrent stack (``rnndrop.rnn.RNN/GRU/LSTM``, no dropout) and a linear read-out."""

    def __init__(self, spec: RunSpec, task: Task, hidden_size: int):
        super().__init__()
        cls = {"rnn": RNN, "gru": GRU, "lstm": LSTM}[spec.cell]
        kw = {"activation": spec.activation} if spec.cell == "rnn" else {}
        self.rnn = cls(task.input_size, hidden_size, spec.num_layers, skip=spec.skip, **kw)
        self.readout = nn.Linear(hidden_size, task.output_size)

    def forward(self, x: Tensor) -> Tensor:
        return self.rnn(x)[0]


def build_model(spec: RunSpec, task: Task, hidden_size: int, seed: int) -> SeqModel:
    torch.manual_seed(seed)
    model = SeqModel(spec, task, hidden_size)
    init_recurrent(model.rnn, spec.init, spec.radius)
    if spec.gate_bias is not None:
        set_gate_bias(model.rnn, spec.gate_bias)
    return model


def _recurrent_norms(rnn: nn.Module) -> dict:
    """σ_max (per gate block) and spectral radius (max |eigenvalue|, per gate block) of W_hh."""
    sig = spectral_norms(rnn, per_gate=True)
    rad = {}
    for name, p in rnn.named_parameters():
        if "weight_hh" in name:
            H = p.shape[1]
            blocks = p.detach().double().view(-1, H, H)
            names = [name] if blocks.shape[0] == 1 else \
                [f"{name}.{g}" for g in gate_names(blocks.shape[0])]
            for n, b in zip(names, blocks):
                rad[n] = float(torch.linalg.eigvals(b).abs().max()) if torch.isfinite(b).all() \
                    else float("nan")
    return {"sigma_max": sig, "spectral_radius": rad,
            "max_sigma": max(sig.values()), "max_radius": max(rad.values())}


def _grad_probe(model: SeqModel, task: Task, x: Tensor, y: Tensor) -> dict:
    """Gradient norms over time on the probe batch and their decay rate per layer."""
    if not all(torch.isfinite(p).all() for p in model.parameters()):
        return {"norms": None, "decay": None, "decay_top": float("nan"), "loss": float("nan"),
                "saturation": {}}
    gn = grad_norms_over_time(model.rnn, x, lambda out: task.loss(model.readout, out, y))
    W = task.fit_window
    decay = [decay_rate(gn.norms[k, :W]) for k in range(gn.norms.shape[0])]
    norms = [[(float(v) if math.isfinite(float(v)) else None) for v in row] for row in gn.norms]
    return {"norms": norms, "decay": decay, "decay_top": decay[-1], "loss": gn.loss,
            "saturation": saturation_report(model.rnn, x)}


# ================================================================================ training
@dataclass
class Settings:
    """The task, the training budget and what every network shares."""
    task: str = option("adding", "generated task", choices=TASKS)
    seq_len: int = option(100, "sequence length T")
    steps: int = option(600, "training steps per network")
    hidden_size: int = option(64, "hidden size")
    batch_size: int = option(32, "batch size")
    optimizer: str = option("sgd", "optimiser", choices=("sgd", "adam"))
    lr: Optional[float] = option(None, "learning rate (default: 0.05 with SGD, 0.01 with Adam)")
    clip: float = option(1.0, "max gradient norm of the clipped runs")
    seed: int = option(0, "seed of the models and the batches")
    probe_batch: int = option(64, "sequences in the gradient-norm probe")
    eval_batch: int = option(512, "held-out sequences for the loss reached")
    explode_factor: float = option(EXPLODE_FACTOR, "a loss above this × max(first loss, "
                                   "baseline) is a divergence")
    jobs: int = option(min(2, os.cpu_count() or 1), "parallel processes (1: in this process)")
    threads: int = option(1, "torch threads per network")

    def __post_init__(self):
        make_task(self.task, self.seq_len)          # checks the task and its length

    @classmethod
    def quick(cls) -> "Settings":
        """tiny smoke run (T=16, 8 steps, hidden 8, in this process): checks the pipeline, not
        the science"""
        return cls(seq_len=16, steps=8, hidden_size=8, batch_size=8, probe_batch=8,
                   eval_batch=16, jobs=1)

    def make_task(self) -> Task:
        return make_task(self.task, self.seq_len)

    @property
    def learning_rate(self) -> float:
        return self.lr if self.lr is not None else (0.05 if self.optimizer == "sgd" else 0.01)


def _eval_batch(task: Task, s: Settings):
    return task.batch(s.eval_batch, torch.Generator().manual_seed(20_000 + s.seed))


def eval_baseline(settings: Settings) -> float:
    """Loss of the memoryless prediction on the held-out batch: the constant 1.0 (the mean
    of the target) for the adding problem, the uniform distribution over the symbols for the
    copy task."""
    task = settings.make_task()
    x, y = _eval_batch(task, settings)
    if task.name == "adding":
        return float(((y - 1.0) ** 2).mean())
    return math.log(task.n_symbols)


def _optimizer(name: str, params, lr: float):
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr)
    raise ValueError(f"optimizer must be 'sgd' or 'adam', got {name!r}")


def train_one(spec: RunSpec, settings: Settings) -> dict:
    """Build, probe, train and probe again one network; returns a JSON-ready dict.

    Every network sees the same training batches, probe batch and evaluation batch (fixed
    seeds), so the differences come from the network alone. Training stops at the first
    divergence: a non-finite loss or gradient norm (the step is not applied), or a loss above
    ``explode_factor × max(first loss, baseline)``."""
    s = settings
    task = s.make_task()
    tic = time.perf_counter()
    model = build_model(spec, task, s.hidden_size, s.seed)
    probe_x, probe_y = task.batch(s.probe_batch, torch.Generator().manual_seed(10_000 + s.seed))
    eval_x, eval_y = _eval_batch(task, s)
    gen = torch.Generator().manual_seed(s.seed + 1)

    norms_init = _recurrent_norms(model.rnn)
    probe_init = _grad_probe(model, task, probe_x, probe_y)
    opt = _optimizer(s.optimizer, model.parameters(), s.learning_rate)
    tic_train = time.perf_counter()
    mon = ClipMonitor()
    max_norm = spec.clip if spec.clip > 0 else math.inf
    losses: list[float] = []
    grad_norms: list[float] = []
    diverged, diverged_at, reason = False, None, ""
    first = None
    for step in range(1, s.steps + 1):
        x, y = task.batch(s.batch_size, gen)
        loss = task.loss(model.readout, model(x), y)
        lv = float(loss.detach())
        if first is None:
            first = lv
        if not math.isfinite(lv):
            diverged, diverged_at, reason = True, step, f"non-finite loss ({lv})"
            break
        limit = s.explode_factor * max(first, task.baseline)
        if lv > limit:
            losses.append(lv)
            diverged, diverged_at, reason = True, step, \
                f"loss explosion ({lv:.3g} > {s.explode_factor:g} × {max(first, task.baseline):.3g})"
            break
        opt.zero_grad(set_to_none=True)
        loss.backward()
        st = mon.clip_grad_norm(model.parameters(), max_norm)
        losses.append(lv)
        grad_norms.append(st.total_norm if st.finite else None)
        if not st.finite:
            diverged, diverged_at, reason = True, step, "non-finite gradient norm"
            break
        opt.step()
    train_seconds = time.perf_counter() - tic_train

    model.eval()
    finite = all(bool(torch.isfinite(p).all()) for p in model.parameters())
    with torch.no_grad():
        ev = float(task.loss(model.readout, model(eval_x), eval_y)) if finite else float("nan")
    tail = losses[-max(1, len(losses) // 10):] if losses else [float("nan")]
    result = {
        "spec": asdict(spec),
        "label": spec.label,
        "diverged": diverged,
        "diverged_at": diverged_at,
        "divergence_reason": reason,
        "steps_done": len(losses),
        "first_loss": first,
        "final_train_loss": (float(sum(tail) / len(tail)) if not diverged else float("nan")),
        "eval_loss": ev if (math.isfinite(ev) and not diverged) else float("nan"),
        "eval_loss_at_stop": ev,
        "losses": losses,
        "grad_norm_total": grad_norms,
        "clip": mon.summary(),
        "init": {"weights": norms_init, **probe_init},
        "trained": {"weights": _recurrent_norms(model.rnn) if finite else None,
                    **_grad_probe(model, task, probe_x, probe_y)},
        "seconds": time.perf_counter() - tic,
        "train_seconds": train_seconds,
    }
    return result


def _run_job(args) -> dict:
    spec, settings = args
    return train_one(spec, settings)


def _cost(spec: RunSpec) -> float:
    """Rough relative cost (for scheduling the slowest first)."""
    per_layer = {"lstm": 4.0, "gru": 3.0, "rnn": 1.0}[spec.cell]
    looped = spec.cell == "rnn" and spec.activation in ("sigmoid", "leaky_relu")
    return spec.num_layers * per_layer * (6.0 if looped else 1.0)


def run(settings: Settings, out: Optional[Path] = None, progress: bool = True,
        specs: Optional[list[RunSpec]] = None) -> dict:
    """Train every spec (default :func:`default_specs`) and collect the results in the order of
    ``specs``: in this process (``jobs`` 1) or in ``jobs`` spawned processes, always
    ``threads`` torch threads per network."""
    s = settings
    task = s.make_task()
    specs = list(specs if specs is not None else default_specs(s.clip))
    print(f"gradient-flow study: task {task.name}, T = {task.seq_len}, {len(specs)} networks, "
          f"{s.steps} steps each ({s.optimizer}, lr {s.learning_rate:g}), hidden "
          f"{s.hidden_size}, batch {s.batch_size}, {s.jobs} job(s)")
    order = sorted(range(len(specs)), key=lambda i: -_cost(specs[i]))
    tic = time.perf_counter()
    runs = run_jobs([sp.label for sp in specs], order, lambda i: train_one(specs[i], s), s.jobs,
                    _run_job, lambda i: (specs[i], s), threads=s.threads,
                    desc="gradient-flow configs", unit="cfg", progress=progress)
    return {"task": asdict(task), "settings": asdict(replace(s, lr=s.learning_rate)),
            "eval_baseline": eval_baseline(s), "workers": s.jobs,
            "wall_seconds": time.perf_counter() - tic, **environment(), "runs": runs}


STUDY = Study("gradient-flow",
              "vanishing/exploding gradients: RNN, GRU, LSTM, initialisation, clipping on a "
              "long-memory task", __doc__, Settings, run, report)
