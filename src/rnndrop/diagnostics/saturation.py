"""Saturated tanh / sigmoid units and dead ReLU units from the recorded pre-activations."""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from ._rerun import GATE_ACTIVATIONS, _run_stack, _spec, activation_derivative, check_activation


def saturation(preactivations: Tensor, activation: str = "tanh", threshold: float = 0.01,
               negative_slope: float = 0.01) -> float:
    """Fraction of saturated units among pre-activations ``z`` of shape ``(..., H)``.

    tanh / sigmoid: the fraction of *elements* with ``|f'(z)| < threshold`` (with 0.01:
    ``|z| > 3.8`` for tanh, ``|z| > 4.6`` for sigmoid). relu / leaky_relu: the fraction of dead
    *units* (last dimension) whose ``z <= 0`` at every position (every step and sample) — for
    leaky ReLU their gradient is only ``negative_slope``. linear: 0.
    """
    activation = check_activation(activation)
    z = preactivations.detach()
    if z.numel() == 0:
        return float("nan")
    if activation in ("relu", "leaky_relu"):
        dead = (z.reshape(-1, z.shape[-1]) <= 0).all(dim=0)
        return float(dead.double().mean())
    if activation == "linear":
        return 0.0
    d = activation_derivative(z.double(), activation, negative_slope).abs()
    return float((d < threshold).double().mean())


def collect_preactivations(model, input: Tensor, hx=None,
                           activation: Optional[str] = None) -> list[dict[str, Tensor]]:
    """Run a recurrent stack (no dropout, no grad) and return, per layer, ``{gate: (T, B, H)}``
    pre-activations: ``"h"`` (vanilla RNN, ``z_t`` with ``h_t = f(z_t)``); LSTM ``"i", "f",
    "g", "o"`` and ``"c"`` (the cell state, which enters ``tanh``); GRU ``"r", "z"`` and ``"n"``
    (``x_n + r ∘ (W_hn h + b_hn)``, the argument of tanh). Time-major regardless of
    ``batch_first``. :data:`GATE_ACTIVATIONS` gives each gate's activation."""
    with torch.no_grad():
        _, _, pres, _ = _run_stack(model, input, hx, activation)
    return [{g: torch.stack(v) for g, v in layer.items()} for layer in pres]


def saturation_report(model, input: Tensor, hx=None, threshold: float = 0.01,
                      activation: Optional[str] = None) -> dict[str, float]:
    """:func:`saturation` of every gate of every layer: ``{"l0.h": …}`` (RNN),
    ``{"l0.i", "l0.f", "l0.g", "l0.o", "l0.c", …}`` (LSTM), ``{"l0.r", "l0.z", "l0.n", …}`` (GRU)."""
    spec = _spec(model, activation)
    out = {}
    for k, layer in enumerate(collect_preactivations(model, input, hx, activation)):
        for g, z in layer.items():
            act = spec.activation if g == "h" else GATE_ACTIVATIONS[g]
            out[f"l{k}.{g}"] = saturation(z, act, threshold, spec.negative_slope)
    return out
