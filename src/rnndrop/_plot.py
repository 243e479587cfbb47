"""Figures for the study reports: matplotlib's object API on the Agg canvas, so that plotting
never touches pyplot's global state or needs a display."""
from __future__ import annotations

from pathlib import Path

PLOT_DPI = 90


def figure(nrows: int = 1, ncols: int = 1, size=(6.4, 4.2)):
    """``(fig, axes)`` with ``nrows * ncols`` axes in a flat list."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    fig = Figure(figsize=size)
    FigureCanvasAgg(fig)
    axes = [fig.add_subplot(nrows, ncols, i + 1) for i in range(nrows * ncols)]
    return fig, axes


def save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=PLOT_DPI)
    return path
