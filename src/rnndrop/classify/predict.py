"""Predictions of a trained classifier / regressor: deterministic and MC dropout, and their scores.

Standard ("dropout approximation"): the model in eval mode, dropout off, weights as trained
(inverted dropout needs no rescaling). MC dropout (Gal & Ghahramani 2016): dropout kept on, S
stochastic passes, and the predictive distribution is the *mean of the S probability vectors*
(not of the logits): ``p(y|x) ≈ 1/S Σ_s softmax(f_s(x))``. The S passes of a batch run as one
pass over the batch repeated S times (each copy draws its own masks; the variational masks are
per sequence), ``mc_batch`` copies at a time.

Regression: the network predicts standardised values; ``mean`` and ``std`` of the training
targets map them back. With MC the prediction is the mean of the S values and their standard
deviation the model's (epistemic) uncertainty; the Gaussian NLL adds the noise variance
``noise_var`` (the deterministic model's mean squared error on the validation split).
"""
from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor
from tqdm.auto import tqdm

from .. import uncertainty as U
from ..data.batching import Encoded

# Rows (examples × MC copies) per forward pass when mc_batch is automatic. The largest block of
# a pass is the LSTM's gate pre-activations, T·rows·4H float32: at T = 400 tokens and H = 128,
# 1024 rows are 0.84 GB.
MC_ROWS = 1024


@dataclass
class Outputs:
    """``standard``: ``(N, K)`` outputs in eval mode (probabilities, or values in the data's
    units); ``samples``: ``(S, N, K)`` of the MC passes, or None."""
    standard: Tensor
    samples: Optional[Tensor] = None


def _order(data: Encoded, batch_size: int):
    """Batches of rows of similar length (sorted: less padding), as index tensors."""
    order = torch.argsort(data.lengths, stable=True)
    return [order[i:i + batch_size] for i in range(0, len(data), batch_size)]


def _to_outputs(raw: Tensor, task: str, scale) -> Tensor:
    if task == "classification":
        return torch.softmax(raw.float(), dim=-1)
    mean, std = scale
    return raw.float() * std + mean


@torch.no_grad()
def predict(model, data: Encoded, task: str, scale=None, *, batch_size: int = 128,
            mc: int = 0, mc_batch: int = 0, device="cpu", progress: bool = False,
            autocast=None) -> Outputs:
    """Outputs of ``model`` on every row of ``data`` (in its order): standard, and with
    ``mc = S > 0`` the S MC-dropout passes too."""
    if mc < 0:
        raise ValueError(f"mc must be >= 0, got {mc}")
    N = len(data)
    was = model.training
    batches = _order(data, batch_size)
    standard, samples = None, None
    bar = tqdm(total=N * (1 + mc), desc="predict", unit="ex", disable=not progress, leave=False)
    try:
        for idx in batches:
            lengths = data.lengths[idx]
            T = int(lengths.max())
            x = data.tokens[idx, :T].to(device)
            with autocast() if autocast else nullcontext():
                model.eval()
                out = _to_outputs(model(x, lengths), task, scale).cpu()
                if standard is None:
                    standard = torch.empty(N, out.shape[-1])
                standard[idx] = out
                bar.update(len(idx))
                if mc:
                    model.train()
                    per = mc_batch or max(1, MC_ROWS // len(idx))
                    got = []
                    for s0 in range(0, mc, per):
                        s = min(per, mc - s0)
                        # the s replicas share the batch's embedding lookup
                        o = model(x, lengths, replicas=s)
                        got.append(_to_outputs(o, task, scale).view(s, len(idx), -1).cpu())
                        bar.update(s * len(idx))
                    if samples is None:
                        samples = torch.empty(mc, N, out.shape[-1])
                    samples[:, idx] = torch.cat(got)
    finally:
        model.train(was)
        bar.close()
    if standard is None:
        raise ValueError("no examples to predict")
    return Outputs(standard, samples)


def noise_variance(outputs: Outputs, targets: Tensor) -> float:
    """Regression: the standard prediction's mean squared error, the noise variance of the
    predictive Gaussian (estimated on the validation split)."""
    return float(((outputs.standard[:, 0] - targets.float()) ** 2).mean())


def scores(outputs: Outputs, targets: Tensor, task: str, noise_var: float = 0.0) -> dict:
    """Metrics of the standard and (if any) MC predictions: ``{"standard": {...}, "mc": {...}}``.
    Classification: accuracy, macro_f1, nll, brier, ece (15 bins); regression: rmse, mae and,
    with a predictive variance, the Gaussian nll."""
    res = {}
    if task == "classification":
        res["standard"] = U.classification_metrics(outputs.standard, targets)
        if outputs.samples is not None:
            res["mc"] = U.classification_metrics(outputs.samples.mean(0), targets)
        return res
    y = targets.float()
    noise = torch.full_like(y, max(noise_var, 1e-12)).sqrt()
    res["standard"] = U.regression_metrics(outputs.standard[:, 0], y, noise if noise_var else None)
    if outputs.samples is not None:
        v = outputs.samples[..., 0]
        std = (v.var(0, unbiased=False) + noise_var).clamp_min(1e-12).sqrt()
        res["mc"] = U.regression_metrics(v.mean(0), y, std)
    return res


def uncertainty_of_errors(outputs: Outputs, targets: Tensor) -> dict:
    """Is the predictive entropy higher on the misclassified examples? Mean entropy of the
    correct and the wrong predictions, and the AUROC of entropy (and, with MC samples, of the
    mutual information, BALD) as a detector of errors. With MC samples the prediction is their
    mean; ``*_standard`` is the deterministic prediction's entropy, for comparison."""
    mc = outputs.samples is not None
    mean = outputs.samples.mean(0) if mc else outputs.standard
    wrong = mean.argmax(-1) != targets
    ent = U.predictive_entropy(mean)
    std_wrong = outputs.standard.argmax(-1) != targets
    res = {"errors": int(wrong.sum()), "examples": int(wrong.numel()),
           "entropy_correct": float(ent[~wrong].mean()) if (~wrong).any() else float("nan"),
           "entropy_wrong": float(ent[wrong].mean()) if wrong.any() else float("nan"),
           "auroc_entropy": U.auroc(ent, wrong),
           "auroc_entropy_standard": U.auroc(U.predictive_entropy(outputs.standard), std_wrong)}
    if mc:
        res["auroc_bald"] = U.auroc(U.mutual_information(outputs.samples), wrong)
    return res
