"""The multiplicative dropout masks of :mod:`rnndrop.dropout` and the variance each one adds.

Every kind is inverted (``E[ξ] = 1``) and multiplies a unit ``h`` by a random ``ξ``, so it adds
``Var[h ξ] = f · h²`` with ``f = Var[ξ]`` (:func:`variance_factor`).
:func:`measure_dropout_variance` measures that variance by sampling masks and gives the standard
error expected from sampling alone, to check the theory against.

Kinds (:data:`KINDS`): ``"bernoulli"`` (:func:`rnndrop.dropout.dropout`, ``{0, 1/(1-p)}``),
``"gaussian"`` (:func:`~rnndrop.dropout.gaussian_dropout`, ``N(1, p/(1-p))``) and
``"three_value"`` (:func:`~rnndrop.dropout.three_value_dropout`, ``{0, γ/2, γ}``).
"""
from __future__ import annotations

from typing import Callable, Optional

import torch
from torch import Tensor

from ._checks import check_probability
from .dropout import dropout, gaussian_dropout, three_value_dropout

__all__ = ["KINDS", "check_kind", "dropout_fn", "variance_factor", "measure_dropout_variance"]

KINDS = ("bernoulli", "gaussian", "three_value")
_FUNCS: dict = {"bernoulli": dropout, "gaussian": gaussian_dropout,
                "three_value": three_value_dropout}


def check_kind(kind: str) -> str:
    """``kind`` if it is one of :data:`KINDS`, else a ValueError that lists them."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(map(repr, KINDS))}; got {kind!r}")
    return kind


def dropout_fn(kind: str) -> Callable[..., Tensor]:
    """The functional form ``f(input, p, training)`` of a dropout kind."""
    return _FUNCS[check_kind(kind)]


def variance_factor(kind: str, p: float) -> float:
    """``Var[ξ]`` of the multiplicative mask ``ξ`` (``E[ξ] = 1``): ``Var[h ξ] = factor · h²``.

    Bernoulli and Gaussian: ``p / (1 - p)``; three-value: ``(1 - p) · 5γ²/8 - 1`` with
    ``γ = 4 / (3 (1 - p))``. Bernoulli at ``p = 1`` (drop everything): ``inf``.
    """
    check_kind(kind)
    p = check_probability(p, "p", allow_one=kind == "bernoulli")
    if p == 0.0:
        return 0.0
    if p == 1.0:
        return float("inf")
    if kind == "three_value":
        gamma = 4.0 / (3.0 * (1.0 - p))
        return (1.0 - p) * 5.0 * gamma ** 2 / 8.0 - 1.0
    return p / (1.0 - p)


def measure_dropout_variance(h: Tensor, p: float, kind: str = "bernoulli",
                             n_masks: int = 10_000, weight: Optional[Tensor] = None,
                             chunk: int = 2_000) -> dict:
    """Measure the variance that dropout adds, per unit, for a fixed activation vector ``h``.

    Draws ``n_masks`` independent masks of ``kind`` (training mode, from the global RNG) and
    computes, per unit, the unbiased sample variance of ``drop(h)`` — or, with ``weight``
    ``(out, in)``, of the next layer's pre-activation ``drop(h) @ weight.T`` (the bias adds no
    variance). Theory (independent masks, ``f = Var[ξ]``, :func:`variance_factor`):
    ``f · h²`` (``p/(1-p) · h²`` for Bernoulli), or ``f · (h²) @ (weight²).T``.

    Returns a dict of float64 tensors: ``measured``, ``theory``, ``mean`` (sample mean; should
    be ``h``, or ``weight @ h``), ``rel_err = measured/theory - 1`` (NaN where the theory is 0,
    e.g. ReLU units that are off) and ``rel_se``, the standard error of ``rel_err`` expected from
    sampling alone, ``sqrt((m4 - s⁴ (n-3)/(n-1)) / n) / theory`` with ``m4`` the sample fourth
    central moment (the variance of the sample variance); and ``factor``, ``f``.
    """
    fn = dropout_fn(kind)
    h = h.detach().to(torch.float64).reshape(-1)
    W = None if weight is None else weight.detach().to(torch.float64)
    n_units = h.numel() if W is None else W.shape[0]
    # pass 1: mean; pass 2 would need the samples again, so keep them (n × units float64).
    samples = torch.empty(n_masks, n_units, dtype=torch.float64)
    for i in range(0, n_masks, chunk):
        m = min(chunk, n_masks - i)
        x = fn(h.expand(m, -1).contiguous(), p, True)
        samples[i:i + m] = x if W is None else x @ W.t()
    mean = samples.mean(0)
    dev = samples - mean
    measured = dev.pow(2).sum(0) / (n_masks - 1)
    m4 = dev.pow(4).mean(0)
    f = variance_factor(kind, p)
    theory = f * (h * h if W is None else (h * h) @ (W * W).t())
    pos = theory > 0
    nan = torch.full_like(theory, float("nan"))
    rel_err = torch.where(pos, measured / theory.where(pos, torch.ones_like(theory)) - 1, nan)
    n = n_masks
    var_s2 = (m4 - measured ** 2 * (n - 3) / (n - 1)).clamp_min(0) / n
    rel_se = torch.where(pos, var_s2.sqrt()
                         / theory.where(pos, torch.ones_like(theory)), nan)
    return {"measured": measured, "theory": theory, "mean": mean, "rel_err": rel_err,
            "rel_se": rel_se, "factor": f}
