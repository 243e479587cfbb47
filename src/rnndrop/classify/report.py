"""Scores of a classifier's predictions as a user reads them: a table, a dict, a diagram.

``final_report`` is shared by the trainer's last step and ``rnndrop classify eval``: standard
and MC-dropout scores side by side (classes: accuracy, macro-F1, NLL, Brier, ECE; regression:
RMSE, MAE, Gaussian NLL), whether MC predictive entropy singles out the errors, and the
reliability diagram (classes) or a calibration plot of predicted vs true values (regression).
"""
from __future__ import annotations

from pathlib import Path

from .. import _plot
from .. import uncertainty as U
from .predict import Outputs, scores, uncertainty_of_errors

_ORDER = {"classification": ("accuracy", "macro_f1", "nll", "brier", "ece"),
          "regression": ("rmse", "mae", "nll")}


def format_table(res: dict, task: str) -> list[str]:
    """Lines of a small table: one row per prediction kind, one column per metric."""
    keys = [k for k in _ORDER[task] if k in res["standard"]]
    lines = ["             " + "".join(f"{k:>10}" for k in keys)]
    for kind, label in (("standard", "standard"), ("mc", "MC dropout")):
        if kind in res:
            lines.append(f"{label:<13}" + "".join(f"{res[kind][k]:>10.4f}" for k in keys))
    return lines


def final_report(out: Outputs, targets, task: str, split: str, noise_var: float, out_dir,
                 log=print, mc: int = 0, plot: str | Path | None = None) -> dict:
    """Scores of ``out`` against ``targets``, logged as a table; the diagram written to
    ``plot`` (default ``<out_dir>/reliability.png``). Returns a JSON-able dict."""
    res = scores(out, targets, task, noise_var)
    log(f"{split} ({len(targets)} examples" + (f", MC dropout with {mc} samples" if mc else "")
        + "):")
    for line in format_table(res, task):
        log("  " + line)
    if task == "classification":
        res["uncertainty"] = u = uncertainty_of_errors(out, targets)
        which = "MC predictive entropy" if out.samples is not None else "predictive entropy"
        if u["errors"] == 0:
            log(f"  no errors: the {which} cannot be scored as an error detector")
        else:
            log(f"  {which}: {u['entropy_correct']:.3f} nats on the correct, "
                f"{u['entropy_wrong']:.3f} on the {u['errors']} wrong; AUROC as an error "
                f"detector {u['auroc_entropy']:.3f}"
                + (f" (BALD {u['auroc_bald']:.3f}; entropy of the standard prediction "
                   f"{u['auroc_entropy_standard']:.3f})" if "auroc_bald" in u else ""))
    if task == "regression":
        res["noise_var"] = noise_var
    path = Path(plot) if plot else Path(out_dir) / "reliability.png"
    try:
        if task == "classification":
            curves = {"standard": (out.standard, targets)}
            if out.samples is not None:
                curves[f"MC dropout ({mc})"] = (out.samples.mean(0), targets)
            U.plot_reliability(curves, path, title=f"{split} split")
        else:
            plot_regression(out, targets, path, title=f"{split} split")
        res["plot"] = str(path)
        log(f"  plot: {path}")
    except Exception as e:      # a plotting problem must never lose the scores
        log(f"  (plot skipped: {e})")
    res["split"], res["mc_samples"] = split, mc
    return res


def plot_regression(out: Outputs, targets, path, title=None) -> Path:
    """Predicted against true values (standard; MC mean with ±1 std bars when present)."""
    fig, (ax,) = _plot.figure(size=(4.5, 4.2))
    y = targets.float()
    if out.samples is not None:
        v = out.samples[..., 0]
        ax.errorbar(y, v.mean(0), yerr=v.std(0, unbiased=False), fmt=".", ms=3, alpha=0.4,
                    elinewidth=0.5, label="MC dropout mean ± std")
    else:
        ax.plot(y, out.standard[:, 0], ".", ms=3, alpha=0.5, label="standard")
    lo, hi = float(y.min()), float(y.max())
    ax.plot([lo, hi], [lo, hi], "k--", lw=1, label="ideal")
    ax.set_xlabel("true value")
    ax.set_ylabel("predicted value")
    if title:
        ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    return _plot.save(fig, path)
