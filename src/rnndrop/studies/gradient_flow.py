"""Study: how gradients flow back through time in vanilla RNNs, GRUs and LSTMs.

``rnndrop study gradient-flow`` (or ``python -m rnndrop.studies.gradient_flow``) trains small
recurrent networks on a generated task where long memory matters and, for each network, measures

- the **decay rate** of ``‖∂L/∂h_t‖`` per time step (:func:`rnndrop.diagnostics.decay_rate` of
  :func:`rnndrop.diagnostics.grad_norms_over_time` on a fixed probe batch), at initialisation and
  after training: ``ρ < 1`` the gradient vanishes going back in time, ``ρ > 1`` it explodes;
- whether training **diverged** (a non-finite loss or gradient, or a loss above
  ``EXPLODE_FACTOR`` times the larger of the first loss and the task's baseline);
- the **loss reached** after a fixed budget of optimiser steps (on a held-out batch).

Tasks (generated on the fly, sequence length ``T`` = 100 by default):

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
``--workers`` processes in parallel.

Optimiser: plain SGD (no momentum) by default, so that the size of a step is the size of the
gradient and exploding gradients show up as they do in BPTT with SGD (Pascanu et al. 2013);
``--optimizer adam`` normalises the step per parameter and hides most of that.

Outputs in ``--out``: ``results.json`` (every measurement, loss curves, gradient norms),
``results.md`` (the tables), ``gradient-flow-init.png`` (``‖∂L/∂h_t‖`` against ``t`` on a log
scale at initialisation, one curve per network: default init; gate biases),
``gradient-flow-radius.png`` (the radius sweep at initialisation), ``gradient-flow-trained.png``
(as the first, after training) and ``gradient-flow-loss.png`` (training-loss curves).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._cli import entry_points, finish, json_safe, loadavg, run_jobs
from ._plot import figure, save

__all__ = [
    "TASKS", "Task", "make_task", "adding_problem", "copy_task", "RunSpec", "default_specs",
    "SeqModel", "build_model", "init_recurrent", "set_gate_bias", "TrainSettings", "train_one",
    "eval_baseline",
    "run_study", "markdown_table", "plot_all", "write_outputs", "add_arguments",
    "settings_from_args", "add_cli", "run", "main", "EXPLODE_FACTOR",
]

TASKS = ("adding", "copy")

#: A loss above EXPLODE_FACTOR × max(first loss, baseline) counts as a loss explosion.
EXPLODE_FACTOR = 100.0



# ================================================================================== tasks
def adding_problem(batch: int, seq_len: int, generator: Optional[torch.Generator] = None):
    """The adding problem: ``x (T, B, 2)``, ``y (B, 1)``.

    ``x[..., 0]`` uniform in [0, 1); ``x[..., 1]`` is 1 at two steps, one drawn uniformly from
    the first half ``[0, T//2)`` and one from the second half ``[T//2, T)``, 0 elsewhere;
    ``y`` is the sum of the two marked numbers."""
    if seq_len < 2:
        raise ValueError(f"the adding problem needs seq_len >= 2, got {seq_len}")
    values = torch.rand(seq_len, batch, generator=generator)
    half = seq_len // 2
    first = torch.randint(0, half, (batch,), generator=generator)
    second = torch.randint(half, seq_len, (batch,), generator=generator)
    b = torch.arange(batch)
    markers = torch.zeros(seq_len, batch)
    markers[first, b] = 1.0
    markers[second, b] = 1.0
    y = (values[first, b] + values[second, b]).unsqueeze(-1)
    return torch.stack([values, markers], dim=-1), y


def copy_task(batch: int, seq_len: int, n_symbols: int = 8, n_copy: int = 10,
              generator: Optional[torch.Generator] = None):
    """Copy task: ``x (T, B, n_symbols + 2)`` one-hot, ``y (T, B)`` int64 targets.

    Token 0 is the blank, ``1 … n_symbols`` the symbols, ``n_symbols + 1`` the "go" token. The
    input holds ``n_copy`` random symbols at steps ``0 … n_copy-1``, blanks, and "go" at step
    ``delay - 1`` with ``delay = T - n_copy``; the target is blank except
    ``y[delay + i] = x_token[i]`` for ``i < n_copy``: the input delayed by ``delay`` steps."""
    delay = seq_len - n_copy
    if n_copy < 1 or delay < n_copy + 1:
        raise ValueError(f"copy task needs seq_len >= 2 * n_copy + 1, got seq_len={seq_len}, "
                         f"n_copy={n_copy}")
    symbols = torch.randint(1, n_symbols + 1, (n_copy, batch), generator=generator)
    tokens = torch.zeros(seq_len, batch, dtype=torch.long)
    tokens[:n_copy] = symbols
    tokens[delay - 1] = n_symbols + 1
    y = torch.zeros(seq_len, batch, dtype=torch.long)
    y[delay:] = symbols
    return F.one_hot(tokens, n_symbols + 2).float(), y


@dataclass(frozen=True)
class Task:
    """A generated task: how to draw a batch, the loss of a network's outputs, the baseline."""
    name: str
    seq_len: int
    input_size: int
    output_size: int
    baseline: float            # loss of the best memoryless prediction
    n_symbols: int = 8
    n_copy: int = 10

    def batch(self, batch: int, generator: Optional[torch.Generator] = None):
        if self.name == "adding":
            return adding_problem(batch, self.seq_len, generator)
        return copy_task(batch, self.seq_len, self.n_symbols, self.n_copy, generator)

    def loss(self, readout: Callable[[Tensor], Tensor], out: Tensor, y: Tensor) -> Tensor:
        """``out``: the recurrent stack's output ``(T, B, H)``."""
        if self.name == "adding":
            return F.mse_loss(readout(out[-1]), y)
        K = self.n_copy
        logits = readout(out[-K:])
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y[-K:].reshape(-1))

    @property
    def fit_window(self) -> int:
        """Steps ``1 … fit_window`` over which the decay rate is fitted: all of them for the
        adding problem (loss on the last step only), the steps before the recall window for
        the copy task (there the gradient only travels back through time)."""
        return self.seq_len if self.name == "adding" else self.seq_len - self.n_copy


def make_task(name: str = "adding", seq_len: int = 100) -> Task:
    if name == "adding":
        return Task("adding", seq_len, 2, 1, 1.0 / 6.0)
    if name == "copy":
        task = Task("copy", seq_len, 8 + 2, 8 + 1, math.log(8))
        copy_task(1, seq_len, task.n_symbols, task.n_copy)  # validates seq_len
        return task
    raise ValueError(f"task must be one of {TASKS}, got {name!r}")


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
        from ..rnn import GRU, LSTM, RNN
        cls = {"rnn": RNN, "gru": GRU, "lstm": LSTM}[spec.cell]
        kw = {"activation": spec.activation} if spec.cell == "rnn" else {}
        self.rnn = cls(task.input_size, hidden_size, spec.num_layers, skip=spec.skip, **kw)
        self.readout = nn.Linear(hidden_size, task.output_size)

    def forward(self, x: Tensor) -> Tensor:
        return self.rnn(x)[0]


def init_recurrent(rnn: nn.Module, init: str = "default", radius: float = 1.0) -> None:
    """``init="orthogonal"``: every square gate block of every ``weight_hh_l{k}`` becomes
    ``radius ×`` a random orthogonal matrix (spectral radius and norm both = ``radius``).
    ``"default"``: leave torch's ``U(-1/√H, 1/√H)``. Other parameters are not touched."""
    if init == "default":
        return
    if init != "orthogonal":
        raise ValueError(f"init must be 'default' or 'orthogonal', got {init!r}")
    with torch.no_grad():
        for name, p in rnn.named_parameters():
            if "weight_hh" in name:
                H = p.shape[1]
                for block in p.view(-1, H, H):
                    nn.init.orthogonal_(block)
                    block.mul_(radius)


def set_gate_bias(rnn: nn.Module, value: float) -> None:
    """Bias of the LSTM forget gate (``f``) or GRU update gate (``z``) of every layer:
    ``bias_ih`` block = ``value``, ``bias_hh`` block = 0. A large value makes the cell keep its
    state (``c_t ≈ c_{t-1}``, ``h_t ≈ h_{t-1}``) at initialisation."""
    mode = getattr(rnn, "mode", "")
    if mode not in ("LSTM", "GRU"):
        raise ValueError(f"gate_bias applies to LSTM and GRU only, got {mode or type(rnn).__name__}")
    H = rnn.hidden_size
    with torch.no_grad():
        for k in range(rnn.num_layers):
            getattr(rnn, f"bias_ih_l{k}")[H:2 * H] = value     # f (LSTM i,f,g,o) / z (GRU r,z,n)
            getattr(rnn, f"bias_hh_l{k}")[H:2 * H] = 0.0


def build_model(spec: RunSpec, task: Task, hidden_size: int, seed: int) -> SeqModel:
    torch.manual_seed(seed)
    model = SeqModel(spec, task, hidden_size)
    init_recurrent(model.rnn, spec.init, spec.radius)
    if spec.gate_bias is not None:
        set_gate_bias(model.rnn, spec.gate_bias)
    return model


def _recurrent_norms(rnn: nn.Module) -> dict:
    """σ_max (per gate block) and spectral radius (max |eigenvalue|, per gate block) of W_hh."""
    from ..diagnostics import spectral_norms
    sig = spectral_norms(rnn, per_gate=True)
    rad = {}
    for name, p in rnn.named_parameters():
        if "weight_hh" in name:
            H = p.shape[1]
            blocks = p.detach().double().view(-1, H, H)
            names = [name] if blocks.shape[0] == 1 else \
                [f"{name}.{g}" for g in {4: "ifgo", 3: "rzn"}[blocks.shape[0]]]
            for n, b in zip(names, blocks):
                rad[n] = float(torch.linalg.eigvals(b).abs().max()) if torch.isfinite(b).all() \
                    else float("nan")
    return {"sigma_max": sig, "spectral_radius": rad,
            "max_sigma": max(sig.values()), "max_radius": max(rad.values())}


def _grad_probe(model: SeqModel, task: Task, x: Tensor, y: Tensor) -> dict:
    """Gradient norms over time on the probe batch and their decay rate per layer."""
    from ..diagnostics import decay_rate, grad_norms_over_time, saturation_report
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
class TrainSettings:
    steps: int = 600
    hidden_size: int = 64
    batch_size: int = 32
    optimizer: str = "sgd"
    lr: float = 0.05
    seed: int = 0
    probe_batch: int = 64
    eval_batch: int = 512
    explode_factor: float = EXPLODE_FACTOR


def _eval_batch(task: Task, s: TrainSettings):
    return task.batch(s.eval_batch, torch.Generator().manual_seed(20_000 + s.seed))


def eval_baseline(task: Task, settings: TrainSettings) -> float:
    """Loss of the memoryless prediction on the held-out batch: the constant 1.0 (the mean
    of the target) for the adding problem, the uniform distribution over the symbols for the
    copy task."""
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


def train_one(spec: RunSpec, task: Task, settings: TrainSettings) -> dict:
    """Build, probe, train and probe again one network; returns a JSON-ready dict.

    Every network sees the same training batches, probe batch and evaluation batch (fixed
    seeds), so the differences come from the network alone. Training stops at the first
    divergence: a non-finite loss or gradient norm (the step is not applied), or a loss above
    ``explode_factor × max(first loss, baseline)``."""
    from ..diagnostics import ClipMonitor
    s = settings
    tic = time.perf_counter()
    model = build_model(spec, task, s.hidden_size, s.seed)
    probe_x, probe_y = task.batch(s.probe_batch, torch.Generator().manual_seed(10_000 + s.seed))
    eval_x, eval_y = _eval_batch(task, s)
    gen = torch.Generator().manual_seed(s.seed + 1)

    norms_init = _recurrent_norms(model.rnn)
    probe_init = _grad_probe(model, task, probe_x, probe_y)
    opt = _optimizer(s.optimizer, model.parameters(), s.lr)
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


def _worker_init() -> None:
    torch.set_num_threads(1)


def _run_job(args) -> dict:
    spec, task, settings = args
    return train_one(spec, task, settings)


def _cost(spec: RunSpec) -> float:
    """Rough relative cost (for scheduling the slowest first)."""
    per_layer = {"lstm": 4.0, "gru": 3.0, "rnn": 1.0}[spec.cell]
    looped = spec.cell == "rnn" and spec.activation in ("sigmoid", "leaky_relu")
    return spec.num_layers * per_layer * (6.0 if looped else 1.0)


def run_study(task: Task, settings: TrainSettings, specs: Optional[list[RunSpec]] = None,
              workers: int = 1, progress: bool = True) -> dict:
    """Train every spec and collect the results in the order of ``specs``: in this process
    (``workers <= 1``) or in ``workers`` spawned processes, always one torch thread per network."""
    specs = list(specs if specs is not None else default_specs())
    jobs = sorted(range(len(specs)), key=lambda i: -_cost(specs[i]))
    tic = time.perf_counter()
    results = run_jobs([s.label for s in specs], jobs,
                       lambda i: train_one(specs[i], task, settings), workers,
                       _run_job, lambda i: (specs[i], task, settings), _worker_init,
                       desc="gradient-flow configs", unit="cfg", progress=progress)
    return {
        "task": asdict(task),
        "settings": asdict(settings),
        "eval_baseline": eval_baseline(task, settings),
        "workers": workers,
        "wall_seconds": time.perf_counter() - tic,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "runs": results,
    }


# ============================================================================== reporting
def _fmt(v, spec: str = ".3g") -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "—"
    return format(v, spec)


_GROUP_TITLES = {
    "models": "Default initialisation (torch's U(-1/√H, 1/√H)), no clipping",
    "gate-bias": "Gates biased open (LSTM forget gate b_f / GRU update gate b_z), no clipping",
    "radius": "W_hh = r × orthogonal (every gate block), no clipping",
    "clip": "W_hh = 1.5 × orthogonal with gradient-norm clipping",
}


def markdown_table(study: dict) -> str:
    """Markdown: one table per group, one row per network: σ_max and spectral radius of W_hh,
    decay per step at init and after training (top layer; layer 0 in brackets for stacks),
    ``‖∂L/∂h_1‖ / ‖∂L/∂h_T‖`` at init, divergence, largest pre-clip gradient norm, loss reached,
    clipped steps."""
    task, st = study["task"], study["settings"]
    head = ("| network | σ_max(W_hh) | ρ(W_hh) | decay/step init | ‖g_1‖/‖g_T‖ init | "
            "decay/step trained | diverged | max ‖∇θ‖ | loss reached | clipped |")
    sep = "|" + "|".join(["---"] * 10) + "|"
    lines = [f"Task `{task['name']}`, T = {task['seq_len']}, baseline loss {task['baseline']:.4f} "
             f"(best memoryless prediction); {st['steps']} steps of {st['optimizer']} "
             f"(lr {st['lr']:g}), hidden {st['hidden_size']}, batch {st['batch_size']}, seed "
             f"{st['seed']}. Wall time {study.get('wall_seconds', float('nan')):.0f} s with "
             f"{study.get('workers', 1)} worker process(es) (torch {study.get('torch', '?')}, "
             f"{study.get('cpu_count', '?')} CPUs). Memoryless prediction on the held-out batch: "
             f"loss {_fmt(study.get('eval_baseline'), '.4f')}.", "",
             "σ_max / ρ: largest singular value / spectral radius of W_hh at init (max over "
             "layers and gate blocks). decay/step: `diagnostics.decay_rate` of ‖∂L/∂h_t‖ on a "
             "fixed probe batch (top layer; layer 0 in brackets), < 1 vanishing, > 1 exploding; "
             "'trained' is after the training budget, or at the step where training diverged. "
             "max ‖∇θ‖: largest pre-clip gradient norm during training. loss reached: loss on "
             f"{st['eval_batch']} held-out sequences after training (— when diverged). "
             "clipped: steps where clipping acted / steps."]

    def decay(p):
        if not p.get("decay"):
            return "—"
        d = p["decay"]
        return _fmt(d[-1], ".3f") + (f" [{_fmt(d[0], '.3f')}]" if len(d) > 1 else "")

    groups = []
    for r in study["runs"]:
        if r["spec"]["group"] not in groups:
            groups.append(r["spec"]["group"])
    for g in groups:
        lines += ["", f"**{_GROUP_TITLES.get(g, g)}**", "", head, sep]
        for r in study["runs"]:
            if r["spec"]["group"] != g:
                continue
            ini, tr = r["init"], r["trained"]
            ratio = "—"
            if ini.get("norms"):
                top = ini["norms"][-1]
                if top[0] is not None and top[-1]:
                    ratio = _fmt(top[0] / top[-1], ".2e")
            div = (f"**yes**, step {r['diverged_at']} ({r['divergence_reason'].split(' (')[0]})"
                   if r["diverged"] else "no")
            c = r["clip"]
            clipped = f"{c['clipped']}/{c['steps']}" if r["spec"]["clip"] else "off"
            gmax = max((v for v in r["grad_norm_total"] if v is not None), default=None)
            lines.append(
                f"| {r['label']} | {_fmt(ini['weights']['max_sigma'], '.3f')} | "
                f"{_fmt(ini['weights']['max_radius'], '.3f')} | {decay(ini)} | {ratio} | "
                f"{decay(tr)} | {div} | {_fmt(gmax, '.3g')} | {_fmt(r['eval_loss'], '.4f')} | "
                f"{clipped} |")
    return "\n".join(lines) + "\n"


def _colours(ax, n: int) -> None:
    """Distinct colours for up to 20 curves (matplotlib's default cycle repeats after 10)."""
    if n > 10:
        from matplotlib import colormaps
        ax.set_prop_cycle(color=[colormaps["tab20"](i % 20) for i in range(n)])


def _plot_norms(ax, runs: list[dict], which: str, title: str, layers: str = "top") -> None:
    _colours(ax, sum(1 + (layers == "all" and len(r[which].get("norms") or []) > 1) for r in runs))
    for r in runs:
        norms = r[which].get("norms")
        if not norms:
            continue
        rows = [(len(norms) - 1, "")]
        if layers == "all" and len(norms) > 1:
            rows = [(len(norms) - 1, " (top)"), (0, " (layer 0)")]
        for k, suffix in rows:
            y = [v if (v is not None and v > 0) else float("nan") for v in norms[k]]
            ax.plot(range(1, len(y) + 1), y, label=r["label"] + suffix,
                    linestyle="--" if suffix == " (layer 0)" else "-")
    ax.set_yscale("log")
    ax.set_xlabel("time step t")
    ax.set_ylabel(r"$\|\partial L/\partial h_t\|$")
    ax.set_title(title, fontsize="medium")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize="x-small")


def plot_all(study: dict, out: Path) -> list[Path]:
    """The four figures (see the module docstring); returns their paths."""
    runs = study["runs"]
    T = study["task"]["seq_len"]
    by = lambda g: [r for r in runs if r["spec"]["group"] == g]
    models, gates = by("models"), by("gate-bias")
    gated_ref = [r for r in models if r["spec"]["name"] in ("lstm", "gru")]
    paths = []
    for which, when in (("init", "at initialisation"), ("trained", "after training")):
        panels = [(models, f"default init, {when} (T = {T})", "all")]
        if gates:
            panels.append((gated_ref + gates, f"gate bias, {when}", "top"))
        fig, axes = figure(1, len(panels), size=(6.0 * len(panels), 4.6))
        for ax, (sel, title, layers) in zip(axes, panels):
            _plot_norms(ax, sel, which, title, layers=layers)
        paths.append(save(fig, out / f"gradient-flow-{which}.png"))

    names = []
    for r in by("radius"):
        if r["spec"]["name"] not in names:
            names.append(r["spec"]["name"])
    if names:
        fig, axes = figure(1, len(names), size=(4.2 * len(names), 4.0))
        for ax, name in zip(axes, names):
            sel = [r for r in by("radius") if r["spec"]["name"] == name]
            _plot_norms(ax, sel, "init", f"{name}: W_hh = r·orthogonal, at init")
        paths.append(save(fig, out / "gradient-flow-radius.png"))

    groups = [("default init / gate bias", models + gates),
              ("radius sweep (no clipping)", by("radius")),
              ("r = 1.5: clipping off / on", [r for r in by("radius") + by("clip")
                                              if r["spec"]["radius"] == 1.5])]
    groups = [g for g in groups if g[1]]
    fig, axes = figure(1, len(groups), size=(4.8 * len(groups), 4.2))
    for ax, (title, sel) in zip(axes, groups):
        _colours(ax, len(sel))
        for r in sel:
            l = r["losses"]
            if not l:
                continue
            w = max(1, len(l) // 50)
            xs = [min(len(l), i + w) for i in range(0, len(l), w)]
            ys = [sum(l[i:i + w]) / len(l[i:i + w]) for i in range(0, len(l), w)]
            ax.plot(xs, ys, label=r["label"] + (" (diverged)" if r["diverged"] else ""),
                    linestyle=":" if r["spec"]["clip"] else "-",
                    marker="x" if r["diverged"] else None, markevery=[len(xs) - 1])
        ax.axhline(study["task"]["baseline"], color="k", linewidth=0.8, linestyle="--",
                   label="baseline")
        ax.set_yscale("log")
        ax.set_xlabel("training step")
        ax.set_ylabel("training loss (mean over windows)")
        ax.set_title(title, fontsize="medium")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize="xx-small")
    paths.append(save(fig, out / "gradient-flow-loss.png"))
    return paths


def write_outputs(study: dict, out) -> dict[str, Path]:
    """``results.json``, ``results.md`` and the plots in ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "results.json", "markdown": out / "results.md"}
    paths["json"].write_text(json.dumps(json_safe(study), indent=1))
    paths["markdown"].write_text(markdown_table(study))
    for p in plot_all(study, out):
        paths[p.stem] = p
    return paths


# ==================================================================================== CLI
QUICK = dict(seq_len=16, steps=8, hidden_size=8, batch_size=8, probe_batch=8, eval_batch=16)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="runs/gradient-flow", help="output folder (default: %(default)s)")
    p.add_argument("--task", choices=TASKS, default="adding", help="generated task (default: adding)")
    p.add_argument("--steps", type=int, default=None, help="training steps per network (default 600)")
    p.add_argument("--seq-len", type=int, default=None, help="sequence length T (default 100)")
    p.add_argument("--hidden", type=int, default=None, help="hidden size (default 64)")
    p.add_argument("--batch", type=int, default=None, help="batch size (default 32)")
    p.add_argument("--optimizer", choices=("sgd", "adam"), default="sgd")
    p.add_argument("--lr", type=float, default=None, help="learning rate (default: 0.05 SGD, 0.01 Adam)")
    p.add_argument("--clip", type=float, default=1.0, help="max gradient norm of the clipped runs")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=None,
                   help="parallel processes, one thread each (default: min(2, CPUs); 1 = in-process)")
    p.add_argument("--quick", action="store_true",
                   help="tiny smoke run (T=16, 8 steps, hidden 8): checks the pipeline, not the science")
    p.add_argument("--no-progress", action="store_true")


def settings_from_args(args) -> tuple[Task, TrainSettings, int]:
    q = QUICK if args.quick else {}
    seq_len = args.seq_len or q.get("seq_len", 100)
    task = make_task(args.task, seq_len)
    lr = args.lr if args.lr is not None else (0.05 if args.optimizer == "sgd" else 0.01)
    s = TrainSettings(steps=args.steps or q.get("steps", TrainSettings.steps),
                      hidden_size=args.hidden or q.get("hidden_size", TrainSettings.hidden_size),
                      batch_size=args.batch or q.get("batch_size", TrainSettings.batch_size),
                      optimizer=args.optimizer, lr=lr, seed=args.seed,
                      probe_batch=q.get("probe_batch", TrainSettings.probe_batch),
                      eval_batch=q.get("eval_batch", TrainSettings.eval_batch))
    workers = args.workers if args.workers is not None else (1 if args.quick else min(2, os.cpu_count() or 1))
    return task, s, workers


def run(args) -> int:
    """Run the study with parsed arguments; prints the table and where the outputs are."""
    task, settings, workers = settings_from_args(args)
    specs = default_specs(args.clip)
    print(f"gradient-flow study: task {task.name}, T = {task.seq_len}, {len(specs)} networks, "
          f"{settings.steps} steps each ({settings.optimizer}, lr {settings.lr:g}), hidden "
          f"{settings.hidden_size}, batch {settings.batch_size}, {workers} worker(s)")
    load0 = loadavg()
    study = run_study(task, settings, specs, workers=workers, progress=not args.no_progress)
    return finish(study, args, load0, write_outputs, markdown_table)


add_cli, main = entry_points(
    "gradient-flow", __name__,
    "vanishing/exploding gradients: RNN, GRU, LSTM, initialisation, clipping on a long-memory task",
    __doc__, add_arguments, run)


if __name__ == "__main__":
    raise SystemExit(main())
