"""Tables and figures of the d2l-dropout study (:mod:`rnndrop.studies.d2l_dropout`), made
from its ``results.json`` alone: ``tables.md`` and the five plots ``d2l-dropout-grid.png``,
``d2l-dropout-curves.png``, ``d2l-dropout-variance.png``, ``d2l-dropout-weight-decay.png`` and
``d2l-dropout-variants.png``."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Optional

from .._plot import figure, save
from ._cli import write_report

__all__ = ["BOOK_ACCURACY", "find_run", "markdown_tables", "plot_all", "report"]

#: Test accuracy the book reports for this network after 10 epochs.
BOOK_ACCURACY = (0.87, 0.88)


def find_run(runs, *, form="concise", p1=0.2, p2=0.5, kind="bernoulli", dropconnect=None,
          weight_decay=0.0, seed=0, keep=None) -> Optional[dict]:
    """The first run of ``runs`` with this configuration (``keep``: and this ``keep_state``)."""
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
    n_eval = s["train_eval_size"] if s["n_train"] is None else min(s["train_eval_size"], s["n_train"])
    L = []
    L.append(f"Settings: lr {s['lr']:g}, batch {s['batch_size']}, seed {seed}; "
             f"{len(runs)} runs on {study['workers']} worker process(es), training wall time "
             f"{study['train_seconds']:.0f} s (torch {study['torch']}, {study['cpu_count']} CPUs). "
             "Accuracies in eval mode after the given epoch: test = all test images, train = "
             f"the first {n_eval} "
             "training images; gap = train − test accuracy; train loss = the book's running "
             "mean over the last epoch with dropout on.")

    # ---- repro
    R = s["repro_epochs"]
    L += ["", f"### Reproduction: both forms, {R} epochs (book: test accuracy about "
          f"{BOOK_ACCURACY[0]:.2f}–{BOOK_ACCURACY[1]:.2f})", "",
          _HEAD[0] + " seconds |", _HEAD[1] + "---|"]
    sc = find_run(runs, form="scratch", seed=seed)
    co = find_run(runs, form="concise", seed=seed)
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
                r = find_run(runs, p1=a, p2=b, seed=seed)
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
        r = find_run(runs, p1=a, p2=b, seed=seed)
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
            r = find_run(runs, seed=seed, **kw)
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
        M = [[(_at(r, E) or {}).get(key, float("nan")) if (r := find_run(runs, p1=a, p2=b, seed=seed))
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
        r = find_run(runs, p1=a, p2=b, seed=seed)
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
            from matplotlib.ticker import NullFormatter  # matplotlib only when plotting
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
            r = find_run(runs, seed=seed, **kw)
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


def report(results: dict, out) -> dict[str, Path]:
    """``tables.md`` (key ``"markdown"``) and the plots in ``out``."""
    return write_report(out, "tables.md", markdown_tables(results), plot_all(results, Path(out)))
