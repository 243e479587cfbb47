"""Initialisation of recurrent layers, in place (like :mod:`torch.nn.init`).

Both functions work on any module with ``torch.nn.RNN/LSTM/GRU`` parameter names
(``weight_hh_l{k}``, ``bias_ih_l{k}``, ``bias_hh_l{k}``): ``torch.nn.RNN/LSTM/GRU`` and
``rnndrop.RNN/LSTM/GRU``.
"""
from __future__ import annotations

import torch
from torch import nn

__all__ = ["INITS", "init_recurrent", "set_gate_bias"]

INITS = ("default", "orthogonal")


def init_recurrent(rnn: nn.Module, init: str = "default", radius: float = 1.0) -> None:
    """``init="orthogonal"``: every square gate block of every ``weight_hh_l{k}`` becomes
    ``radius ×`` a random orthogonal matrix (spectral radius and norm both = ``radius``), drawn
    from the global RNG. ``"default"``: leave torch's ``U(-1/√H, 1/√H)``. Other parameters are
    not touched."""
    if init == "default":
        return
    if init != "orthogonal":
        raise ValueError(f"init must be one of {INITS}, got {init!r}")
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
    mode = getattr(rnn, "mode", "")   # rnndrop and torch recurrent layers say "LSTM" / "GRU"
    if mode not in ("LSTM", "GRU"):
        raise ValueError(f"gate_bias applies to LSTM and GRU only, got {mode or type(rnn).__name__}")
    H = rnn.hidden_size
    with torch.no_grad():
        for k in range(rnn.num_layers):
            getattr(rnn, f"bias_ih_l{k}")[H:2 * H] = value     # f (LSTM i,f,g,o) / z (GRU r,z,n)
            getattr(rnn, f"bias_hh_l{k}")[H:2 * H] = 0.0
