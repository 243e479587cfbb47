"""Tables and figures of the gradient-flow study (:mod:`rnndrop.studies.gradient_flow`), made
from its ``results.json`` alone: ``results.md`` and the plots ``gradient-flow-init.png``,
``gradient-flow-radius.png``, ``gradient-flow-trained.png`` and ``gradient-flow-loss.png``."""
from __future__ import annotations

import math
from pathlib import Path

from .._plot import figure, save
from ._cli import write_report

__all__ = ["markdown_table", "plot_all", "report"]


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
        from matplotlib import colormaps  # matplotlib only when plotting
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


def report(results: dict, out) -> dict[str, Path]:
    """``results.md`` (key ``"markdown"``) and the plots in ``out``."""
    return write_report(out, "results.md", markdown_table(results), plot_all(results, Path(out)))
