"""Metrics of predictive quality and uncertainty: calibration (ECE, reliability diagrams), proper
scoring rules (Brier, NLL), accuracy and macro-F1, the MC-dropout uncertainties (predictive
entropy, mutual information / BALD), regression errors and the AUROC of an uncertainty score as
an error detector.

Small functions on tensors in the manner of :mod:`torch.nn.functional`. Classification inputs are
*probabilities* ``probs`` of shape ``(N, C)`` whose rows sum to 1 (for MC dropout: the mean of
the per-pass probabilities, not of the logits) and integer ``targets`` of shape ``(N,)``.
Scalars come back as Python floats; float32 or float64 input on any device.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Optional

import torch
from torch import Tensor

from . import _plot

__all__ = ["expected_calibration_error", "reliability_bins", "brier_score", "nll", "accuracy",
           "macro_f1", "classification_metrics", "predictive_entropy", "mutual_information",
           "regression_metrics", "auroc", "plot_reliability"]

_SUM_TOL = 1e-3


# ---------------------------------------------------------------------------------- validation

def _check_probs(probs: Tensor, name: str = "probs", ndim: int = 2) -> Tensor:
    if not isinstance(probs, Tensor):
        raise ValueError(f"{name} must be a tensor; got {type(probs).__name__}")
    if probs.dim() != ndim:
        want = "(N, C)" if ndim == 2 else "(S, N, C)"
        raise ValueError(f"{name} must have shape {want}; got {tuple(probs.shape)}")
    if probs.numel() == 0:
        raise ValueError(f"{name} is empty: {tuple(probs.shape)}")
    if not probs.is_floating_point():
        raise ValueError(f"{name} must be floating point; got {probs.dtype}")
    if not bool(torch.isfinite(probs).all()):
        raise ValueError(f"{name} has non-finite entries")
    if float(probs.min()) < 0:
        raise ValueError(f"{name} has negative entries (min {float(probs.min()):.3g}): "
                         "pass probabilities, not logits")
    err = float((probs.sum(-1) - 1).abs().max())
    if err > _SUM_TOL:
        raise ValueError(f"{name} rows must sum to 1 (within {_SUM_TOL:g}); the worst is off by "
                         f"{err:.3g}: pass probabilities (softmax), not logits")
    return probs


def _check_targets(targets: Tensor, n: int, num_classes: Optional[int],
                   name: str = "targets") -> Tensor:
    if not isinstance(targets, Tensor):
        raise ValueError(f"{name} must be a tensor; got {type(targets).__name__}")
    if targets.dim() != 1 or targets.shape[0] != n:
        raise ValueError(f"{name} must have shape ({n},); got {tuple(targets.shape)}")
    if targets.is_floating_point() or targets.is_complex():
        raise ValueError(f"{name} must hold integer class indices; got {targets.dtype}")
    targets = targets.long()
    lo, hi = int(targets.min()), int(targets.max())
    if lo < 0 or (num_classes is not None and hi >= num_classes):
        bound = "" if num_classes is None else f" < {num_classes}"
        raise ValueError(f"{name} must be class indices in [0{bound}); got range [{lo}, {hi}]")
    return targets


def _check_classification(probs: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
    _check_probs(probs)
    return probs, _check_targets(targets.to(probs.device) if isinstance(targets, Tensor)
                                 else targets, probs.shape[0], probs.shape[1])


def _check_n_bins(n_bins: int) -> int:
    if isinstance(n_bins, bool) or not isinstance(n_bins, int) or n_bins < 1:
        raise ValueError(f"n_bins must be an integer >= 1; got {n_bins!r}")
    return n_bins


def _acc_dtype(x: Tensor) -> torch.dtype:
    # Sums over many examples in float64 (float32 loses ~1e-4 over 1e6 terms); MPS has no float64.
    return x.dtype if x.device.type == "mps" else torch.float64


# --------------------------------------------------------------------------------- calibration

def reliability_bins(probs: Tensor, targets: Tensor, n_bins: int = 15) -> dict:
    r"""Top-label confidence and accuracy in ``n_bins`` equal-width bins over ``[0, 1]``.

    The confidence of example ``i`` is ``c_i = max_c p_ic`` and it is correct when
    ``argmax_c p_ic = y_i`` (ties: the first maximal class). Bin ``b`` holds the examples with
    ``e_b <= c_i < e_{b+1}``, edges ``e = linspace(0, 1, n_bins + 1)`` in the input's dtype (the
    edges of ``torchmetrics``' ``CalibrationError``); a confidence of exactly 1 goes into the last
    bin, ``[e_{n_bins - 1}, 1]`` (torchmetrics 1.9 gives it a hidden bin of its own, its issue
    #3510; softmax in float32 saturates at 1 for a logit margin above ~17, so it does happen).

    Args:
        probs: ``(N, C)`` probabilities, rows summing to 1.
        targets: ``(N,)`` class indices.
        n_bins: number of bins, >= 1.

    Returns:
        ``{"edges": (n_bins + 1,), "confidence": (n_bins,), "accuracy": (n_bins,),
        "count": (n_bins,) long}`` on the input's device; ``confidence`` and ``accuracy`` are the
        bin means (``nan`` for an empty bin, whose count is 0).
    """
    probs, targets = _check_classification(probs, targets)
    _check_n_bins(n_bins)
    conf, pred = _top_label(probs)
    correct = pred == targets
    edges = torch.linspace(0.0, 1.0, n_bins + 1, dtype=probs.dtype, device=probs.device)
    # right=True: e_b <= c < e_{b+1}, as torchmetrics' bucketize; clamp puts c == 1 (and a
    # rounding 1 + ulp) into the last bin instead of a bin of its own.
    idx = (torch.bucketize(conf, edges, right=True) - 1).clamp_(0, n_bins - 1)
    acc_t = _acc_dtype(probs)
    count = torch.bincount(idx, minlength=n_bins)
    zeros = torch.zeros(n_bins, dtype=acc_t, device=probs.device)
    conf_sum = zeros.index_add(0, idx, conf.to(acc_t))
    hit_sum = zeros.index_add(0, idx, correct.to(acc_t))
    denom = count.to(acc_t)
    # 0 / 0 = nan marks the empty bins
    return {"edges": edges, "confidence": (conf_sum / denom).to(probs.dtype),
            "accuracy": (hit_sum / denom).to(probs.dtype), "count": count}


def _top_label(probs: Tensor) -> tuple[Tensor, Tensor]:
    # argmax (documented: first maximal index) rather than max(dim), whose tie index is not
    pred = probs.argmax(dim=1)
    return probs.gather(1, pred[:, None]).squeeze(1), pred


def _ece_from_bins(bins: dict) -> float:
    count = bins["count"]
    full = count > 0
    acc_t = _acc_dtype(bins["confidence"])
    gap = (bins["accuracy"][full].to(acc_t) - bins["confidence"][full].to(acc_t)).abs()
    return float((count[full].to(acc_t) * gap).sum() / count.sum().to(acc_t))


def expected_calibration_error(probs: Tensor, targets: Tensor, n_bins: int = 15) -> float:
    r"""Top-label expected calibration error with equal-width bins (Naeini et al. 2015; Guo et
    al. 2017):

    .. math::
        \mathrm{ECE} = \sum_b \frac{|B_b|}{N}\,\bigl|\mathrm{acc}(B_b) - \mathrm{conf}(B_b)\bigr|

    with the bins of :func:`reliability_bins` (empty bins add nothing). The value of
    ``torchmetrics.classification.CalibrationError(task="multiclass", n_bins=n_bins,
    norm="l1")`` on the same float32 input, except where confidences of exactly 1 share the last
    bin with others: torchmetrics (1.9) then bins them apart (see :func:`reliability_bins`).

    Args:
        probs: ``(N, C)`` probabilities, rows summing to 1.
        targets: ``(N,)`` class indices.
        n_bins: number of bins, >= 1.

    Returns:
        ECE in ``[0, 1]`` as a float.
    """
    return _ece_from_bins(reliability_bins(probs, targets, n_bins))


# ------------------------------------------------------------------------------ scoring rules

def brier_score(probs: Tensor, targets: Tensor) -> float:
    r"""Multi-class Brier score (Brier 1950):
    :math:`\frac1N \sum_i \sum_c (p_{ic} - \mathbb{1}[y_i = c])^2`, in ``[0, 2]``.

    With 2 classes this is twice the binary Brier score :math:`\frac1N\sum_i (p_i - y_i)^2` of
    the positive class (both classes' errors are counted and they are equal).

    Args:
        probs: ``(N, C)`` probabilities, rows summing to 1.
        targets: ``(N,)`` class indices.
    """
    probs, targets = _check_classification(probs, targets)
    acc_t = _acc_dtype(probs)
    p = probs.to(acc_t)
    # sum_c p_c^2 - 2 p_y + 1 avoids building the (N, C) one-hot
    per = (p * p).sum(1) - 2 * p.gather(1, targets[:, None]).squeeze(1) + 1
    return float(per.mean())


def nll(probs: Tensor, targets: Tensor, eps: float = 1e-12) -> float:
    r"""Mean negative log-likelihood :math:`-\frac1N \sum_i \log \max(p_{i y_i}, \epsilon)` in nats.

    Takes probabilities (the MC average of the per-pass probabilities), not logits; the clamp at
    ``eps`` keeps a confident miss finite (``-log 1e-12 ≈ 27.6``).

    Args:
        probs: ``(N, C)`` probabilities, rows summing to 1.
        targets: ``(N,)`` class indices.
        eps: smallest probability taken, > 0.
    """
    if not eps > 0:
        raise ValueError(f"eps must be > 0; got {eps!r}")
    probs, targets = _check_classification(probs, targets)
    p_y = probs.to(_acc_dtype(probs)).gather(1, targets[:, None]).squeeze(1)
    return float(-p_y.clamp_min(eps).log().mean())


def accuracy(probs: Tensor, targets: Tensor) -> float:
    """Fraction of examples whose most probable class (``argmax``, first on ties) is the target.

    Args:
        probs: ``(N, C)`` probabilities, rows summing to 1.
        targets: ``(N,)`` class indices.
    """
    probs, targets = _check_classification(probs, targets)
    return int((probs.argmax(1) == targets).sum()) / probs.shape[0]


def macro_f1(probs_or_pred: Tensor, targets: Tensor, num_classes: Optional[int] = None) -> float:
    r"""Macro-averaged F1: :math:`F1_c = 2\,TP_c / (2\,TP_c + FP_c + FN_c)` per class, averaged
    over the classes that occur among the targets or the predictions.

    A class with neither predictions nor targets is left out of the average (its F1 is 0/0); a
    class with targets but no predictions has F1 = 0, as does one predicted but never a target.

    Args:
        probs_or_pred: ``(N, C)`` probabilities (the prediction is their ``argmax``) or ``(N,)``
            predicted class indices.
        targets: ``(N,)`` class indices.
        num_classes: ``C``; default: ``probs.shape[1]``, or for predicted indices
            ``max(pred.max(), targets.max()) + 1``.
    """
    x = probs_or_pred
    if num_classes is not None and (isinstance(num_classes, bool) or num_classes < 1):
        raise ValueError(f"num_classes must be >= 1; got {num_classes!r}")
    if not isinstance(x, Tensor):
        raise ValueError(f"probs_or_pred must be a tensor; got {type(x).__name__}")
    if x.dim() == 2:
        _check_probs(x, "probs_or_pred")
        if num_classes is not None and num_classes != x.shape[1]:
            raise ValueError(f"num_classes={num_classes} but probs have {x.shape[1]} columns")
        num_classes = x.shape[1]
        pred = x.argmax(1)
    elif x.dim() == 1:
        if x.numel() == 0:
            raise ValueError("probs_or_pred is empty")
        pred = _check_targets(x, x.shape[0], num_classes, "predictions")
    else:
        raise ValueError(f"probs_or_pred must have shape (N, C) or (N,); got {tuple(x.shape)}")
    targets = _check_targets(targets.to(pred.device) if isinstance(targets, Tensor) else targets,
                             pred.shape[0], num_classes)
    if num_classes is None:
        num_classes = int(max(pred.max(), targets.max())) + 1
    # C counts, small: on the CPU in float64 whatever the device
    tp = torch.bincount(targets[pred == targets], minlength=num_classes).cpu()
    n_pred = torch.bincount(pred, minlength=num_classes).cpu()
    n_true = torch.bincount(targets, minlength=num_classes).cpu()
    denom = n_pred + n_true                          # = 2 TP + FP + FN
    seen = denom > 0
    return float((2 * tp[seen].double() / denom[seen].double()).mean())


def classification_metrics(probs: Tensor, targets: Tensor, n_bins: int = 15) -> dict:
    """``{"accuracy", "macro_f1", "nll", "brier", "ece"}`` of ``probs`` ``(N, C)`` against
    ``targets`` ``(N,)``, each a float (ECE with ``n_bins`` bins)."""
    probs, targets = _check_classification(probs, targets)
    return {"accuracy": accuracy(probs, targets), "macro_f1": macro_f1(probs, targets),
            "nll": nll(probs, targets), "brier": brier_score(probs, targets),
            "ece": expected_calibration_error(probs, targets, n_bins)}


# ------------------------------------------------------------------------------ uncertainties

def _entropy(p: Tensor) -> Tensor:
    # special.entr(x) = -x log x with entr(0) = 0: the 0 log 0 = 0 convention without a nan
    return torch.special.entr(p).sum(-1)


def predictive_entropy(mean_probs: Tensor) -> Tensor:
    r"""Entropy of the predictive distribution, :math:`H[p]_i = -\sum_c p_{ic} \log p_{ic}` in
    nats (``0 log 0 = 0``), between 0 (one-hot) and ``log C`` (uniform).

    For MC dropout ``mean_probs`` is the mean over the passes of the per-pass probabilities: it
    measures the total uncertainty (aleatoric + epistemic).

    Args:
        mean_probs: ``(N, C)`` probabilities, rows summing to 1.

    Returns:
        ``(N,)`` tensor, the input's dtype and device.
    """
    return _entropy(_check_probs(mean_probs, "mean_probs"))


def mutual_information(sample_probs: Tensor) -> Tensor:
    r"""Mutual information between the prediction and the model (BALD; Houlsby et al. 2011,
    Gal et al. 2017): the epistemic part of the predictive entropy,

    .. math:: I_i = H\Bigl[\frac1S \sum_s p_{s i}\Bigr] - \frac1S \sum_s H[p_{s i}] \;\ge 0

    (Jensen: entropy is concave). 0 when all passes agree; ``log 2`` for two confident passes on
    different classes. Tiny negatives from rounding are clamped to 0.

    Args:
        sample_probs: ``(S, N, C)`` probabilities of ``S`` stochastic passes, rows summing to 1.

    Returns:
        ``(N,)`` tensor, the input's dtype and device.
    """
    _check_probs(sample_probs, "sample_probs", ndim=3)
    mi = _entropy(sample_probs.mean(0)) - _entropy(sample_probs).mean(0)
    return mi.clamp_min(0.0)


# --------------------------------------------------------------------------------- regression

def regression_metrics(mean: Tensor, targets: Tensor, std: Optional[Tensor] = None) -> dict:
    r"""``{"rmse", "mae"}`` of predictions ``mean`` against ``targets``, and with ``std`` also
    the Gaussian negative log-likelihood

    .. math:: \mathrm{nll} = \frac1N \sum_i \tfrac12 \log(2\pi\sigma_i^2)
              + \frac{(y_i - \mu_i)^2}{2\sigma_i^2}, \qquad \sigma_i^2 \ge 10^{-12}

    (the clamp keeps a zero MC spread, e.g. a model without dropout, finite).

    Args:
        mean: predictions, any shape (``(N,)`` typically), floating point.
        targets: same shape as ``mean``.
        std: predictive standard deviations (``>= 0``), same shape as ``mean`` or broadcastable
            to it (a 0-d tensor for one homoscedastic spread); ``None``: no ``nll``.

    Returns:
        dict of floats.
    """
    for name, t in (("mean", mean), ("targets", targets)):
        if not isinstance(t, Tensor):
            raise ValueError(f"{name} must be a tensor; got {type(t).__name__}")
    if mean.shape != targets.shape:
        raise ValueError(f"mean and targets must have the same shape; got {tuple(mean.shape)} "
                         f"and {tuple(targets.shape)}")
    if mean.numel() == 0:
        raise ValueError("mean is empty")
    if not mean.is_floating_point():
        raise ValueError(f"mean must be floating point; got {mean.dtype}")
    acc_t = _acc_dtype(mean)
    mu, y = mean.to(acc_t), targets.to(device=mean.device, dtype=acc_t)
    err = y - mu
    out = {"rmse": float(err.square().mean().sqrt()), "mae": float(err.abs().mean())}
    if std is not None:
        if not isinstance(std, Tensor):
            raise ValueError(f"std must be a tensor or None; got {type(std).__name__}")
        # broadcastable to mean's shape without growing it (torch.broadcast_shapes costs ~1 s on
        # its first call)
        fits = std.dim() <= mean.dim() and all(
            a in (1, b) for a, b in zip(reversed(std.shape), reversed(mean.shape)))
        if not fits:
            raise ValueError(f"std of shape {tuple(std.shape)} does not fit mean of shape "
                             f"{tuple(mean.shape)}")
        s = std.to(device=mean.device, dtype=acc_t)
        if bool((s < 0).any()) or not bool(torch.isfinite(s).all()):
            raise ValueError("std must be finite and >= 0")
        var = s.square().clamp_min(1e-12)
        out["nll"] = float((0.5 * torch.log(2 * math.pi * var) + err.square() / (2 * var)).mean())
    return out


# ------------------------------------------------------------------------------------ ranking

def auroc(scores: Tensor, positive: Tensor) -> float:
    r"""Area under the ROC curve of ``scores`` as a detector of ``positive`` (higher score =
    more likely positive), e.g. predictive entropy as a detector of misclassified examples.

    Rank-based (Mann-Whitney U): the probability that a random positive scores above a random
    negative, ties counted 1/2,

    .. math:: \mathrm{AUC} = \frac{\sum_{i \in +} r_i - n_+(n_+ + 1)/2}{n_+\, n_-}

    with ``r`` the ranks of the scores (1-based, tied scores share their average rank).

    Args:
        scores: ``(N,)`` real scores.
        positive: ``(N,)`` bool (or 0/1 integers).

    Returns:
        AUROC in ``[0, 1]``; ``nan`` when all examples are positive or all negative.
    """
    for name, t in (("scores", scores), ("positive", positive)):
        if not isinstance(t, Tensor):
            raise ValueError(f"{name} must be a tensor; got {type(t).__name__}")
    if scores.dim() != 1 or positive.shape != scores.shape:
        raise ValueError(f"scores and positive must both have shape (N,); got "
                         f"{tuple(scores.shape)} and {tuple(positive.shape)}")
    if scores.numel() == 0:
        raise ValueError("scores is empty")
    if positive.dtype != torch.bool:
        if positive.is_floating_point() or not bool(((positive == 0) | (positive == 1)).all()):
            raise ValueError(f"positive must be bool or 0/1 integers; got {positive.dtype}")
        positive = positive.bool()
    if scores.is_floating_point() and bool(torch.isnan(scores).any()):
        raise ValueError("scores has nan entries")
    positive = positive.to(scores.device)
    n_pos = int(positive.sum())
    n_neg = scores.numel() - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    # average ranks: unique values sorted ascending; a value's ranks run from (cum - count + 1)
    # to cum, whose mean is cum - (count - 1) / 2
    _, inverse, counts = torch.unique(scores, sorted=True, return_inverse=True, return_counts=True)
    acc_t = _acc_dtype(scores) if scores.is_floating_point() else torch.float64
    cum = counts.cumsum(0).to(acc_t)
    avg_rank = cum - (counts.to(acc_t) - 1) / 2
    rank_sum = avg_rank[inverse][positive].sum()
    u = rank_sum - n_pos * (n_pos + 1) / 2
    return float(u / (n_pos * n_neg))


# ---------------------------------------------------------------------------------------- plot

def plot_reliability(curves: dict, path, n_bins: int = 15, title: Optional[str] = None) -> Path:
    """Reliability diagram: per-bin accuracy against mean confidence for each curve, the
    diagonal of perfect calibration, each curve's ECE in its legend label; beneath it, the share
    of examples in each confidence bin. Written as a PNG.

    Args:
        curves: ``{label: (probs, targets)}``, e.g. ``{"standard": (p, y),
            "MC dropout (50)": (p_mc, y)}``; ``probs`` ``(N, C)``, ``targets`` ``(N,)``.
        path: the PNG to write (its folder is created).
        n_bins: number of equal-width confidence bins.
        title: figure title.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    """
    if not isinstance(curves, dict) or not curves:
        raise ValueError("curves must be a non-empty dict {label: (probs, targets)}")
    _check_n_bins(n_bins)
    binned = {}
    for label, pair in curves.items():
        if not isinstance(pair, (tuple, list)) or len(pair) != 2:
            raise ValueError(f"curves[{label!r}] must be a pair (probs, targets)")
        binned[label] = {k: v.detach().cpu().double() for k, v in
                         reliability_bins(pair[0], pair[1], n_bins).items()}
    fig, (ax, hist) = _plot.figure(2, 1, size=(5.6, 6.0))
    # a tall diagram over a short histogram: re-seat the two axes on a 3:1 grid
    grid = fig.add_gridspec(2, 1, height_ratios=(3, 1))
    ax.set_subplotspec(grid[0])
    hist.set_subplotspec(grid[1])
    ax.plot([0, 1], [0, 1], ls="--", color="0.5", lw=1, label="perfectly calibrated")
    for label, b in binned.items():
        full = b["count"] > 0
        ece = _ece_from_bins(b)
        line, = ax.plot(b["confidence"][full].numpy(), b["accuracy"][full].numpy(), marker="o",
                        ms=4, label=f"{label} (ECE {ece:.3f})")
        share = (b["count"] / b["count"].sum()).numpy()
        hist.stairs(share, b["edges"].numpy(), color=line.get_color(), lw=1.5)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_ylabel("accuracy")
    ax.set_title(title if title is not None else f"reliability ({n_bins} bins)")
    ax.legend(loc="upper left", fontsize=8)
    ax.grid(alpha=0.3)
    hist.set_xlim(0, 1)
    hist.set_xlabel("confidence (top-label probability)")
    hist.set_ylabel("share")
    hist.grid(alpha=0.3)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return _plot.save(fig, path)
