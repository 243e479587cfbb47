"""A log-y plot of ``‖∂L/∂h_t‖`` against the time step, and a plain-text summary table."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, Optional, Union

import torch
from torch import Tensor

from .gradients import GradNorms, decay_rate


def _curves(label: str, norms) -> list[tuple[str, Tensor]]:
    if isinstance(norms, GradNorms):
        norms = norms.norms
    n = torch.as_tensor(norms, dtype=torch.float64).detach().cpu()
    if n.dim() == 1:
        return [(label, n)]
    if n.dim() == 2:
        return [(f"{label} (layer {k})", n[k]) for k in range(n.shape[0])]
    raise ValueError(f"norms for {label!r} must be 1-D (T,) or 2-D (layers, T), got {tuple(n.shape)}")


def plot_grad_norms(results: Mapping[str, object], path: Union[str, os.PathLike],
                    title: Optional[str] = None) -> Path:
    """Plot ``‖∂L/∂h_t‖`` against the time step ``t = 1 … T`` on a log y-axis, one line per label
    (a :class:`GradNorms` or 2-D ``(layers, T)`` tensor gives one line per layer). Uses
    matplotlib's Agg canvas directly (no pyplot, no global backend change). Zero norms are not
    drawn. Creates the parent folder; returns the path."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig = Figure(figsize=(6.4, 4.2))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    for label, norms in results.items():
        for name, n in _curves(label, norms):
            y = n.clone()
            y[~(torch.isfinite(y) & (y > 0))] = float("nan")
            ax.plot(range(1, n.numel() + 1), y.tolist(), label=name)
    ax.set_yscale("log")
    ax.set_xlabel("time step t")
    ax.set_ylabel(r"$\|\partial L / \partial h_t\|$")
    if title:
        ax.set_title(title)
    if results:
        ax.legend(fontsize="small")
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    return path


def summary_table(results: Mapping[str, object]) -> str:
    """Plain-text table, one row per label (per layer for 2-D norms): ``T``, decay per step
    (:func:`decay_rate`), ``‖g‖`` at ``t = 1`` and ``t = T``, their ratio, and the min and max
    over ``t``."""
    header = ("label", "T", "decay/step", "norm t=1", "norm t=T", "t=1 / t=T", "min", "max")
    rows = []
    for label, norms in results.items():
        for name, n in _curves(label, norms):
            T = n.numel()
            first, last = (float(n[0]), float(n[-1])) if T else (float("nan"),) * 2
            ratio = first / last if last != 0 else float("inf") if first else float("nan")
            rows.append((name, str(T), f"{decay_rate(n):.4f}", f"{first:.3e}", f"{last:.3e}",
                         f"{ratio:.3e}", f"{float(n.min()):.3e}" if T else "nan",
                         f"{float(n.max()):.3e}" if T else "nan"))
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    fmt = lambda r: "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
    lines = [fmt(header), "  ".join("-" * w for w in widths)] + [fmt(r) for r in rows]
    return "\n".join(lines)
