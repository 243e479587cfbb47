"""Reference recurrences: the per-time-step loops of `rnndrop.rnn`'s loop path, in plain autograd.

Each function runs one layer over a whole sequence given the *input projections* already computed
for every step (one large GEMM outside the loop — the only part of the work that does not depend on
h_{t-1}). They are written with plain autograd ops so that they serve as the numerical reference
for every faster implementation (``rnndrop.fast``); ``rnndrop.fast.select`` runs them where there
is no fast loop (the Elman RNN, mixed dtypes or devices, devices other than CPU and CUDA).

Shapes (time-major): ``xp`` is ``(T, B, G*H)`` with G = 4 (LSTM), 3 (GRU), 1 (RNN); ``h0``/``c0``
are ``(B, H)``; ``weight_hh`` is ``(G*H, H)``. ``mask_h`` is ``None`` (no recurrent dropout),
``(B, H)`` (one mask per sequence shared by the gates: *tied*) or ``(G, B, H)`` (one mask per gate:
*untied*), already scaled by 1/(1-p); ``mask_mode`` names the three layouts (``MaskMode``) for
every implementation. Gate order follows ``torch.nn``: LSTM i, f, g, o; GRU r, z, n.

Zoneout (Krueger et al., 2016): ``zoneout_h`` (and the LSTM's ``zoneout_c``) is ``None`` (no
zoneout), ``(B, H)`` (the same at every step: per-sequence masks, or the constant ``z`` at eval)
or ``(T, B, H)`` (one per step), the weight ``d`` with which each unit keeps its previous value::

    h_t = d_t ∘ h_{t-1} + (1 - d_t) ∘ h̃_t        (h̃_t: the cell's own update)

``d ∈ {0, 1}`` in training (``Bernoulli(z)``), ``d = z`` at eval (the expectation). For the
LSTM, as in the paper, both candidates come from the un-zoned cell update
``c̃_t = f c_{t-1} + i g``: ``c_t = d^c_t ∘ c_{t-1} + (1 - d^c_t) ∘ c̃_t`` and
``h_t = d^h_t ∘ h_{t-1} + (1 - d^h_t) ∘ o tanh(c̃_t)``.
"""
from __future__ import annotations

import enum
from typing import Callable, Optional

import torch
from torch import Tensor


class MaskMode(enum.IntEnum):
    """Layout of the recurrent mask ``mask_h``. The values are the ``mode`` ints that the fused
    kernels of ``rnndrop.fast`` (C and Triton) take."""
    NONE = 0    # no recurrent dropout (mask_h is None)
    TIED = 1    # (B, H): one mask shared by the gates
    UNTIED = 2  # (G, B, H): one mask per gate


def mask_mode(mask_h: Optional[Tensor]) -> MaskMode:
    """The ``MaskMode`` of ``mask_h``: the one place that reads it from the number of dimensions.
    Each recurrence (here and in ``rnndrop.fast``) calls it once at its entry and passes it down."""
    if mask_h is None:
        return MaskMode.NONE
    if mask_h.dim() == 2:
        return MaskMode.TIED
    if mask_h.dim() == 3:
        return MaskMode.UNTIED
    raise ValueError(f"mask_h must be (B, H) or (G, B, H), got shape {tuple(mask_h.shape)}")


def zone_at(z: Optional[Tensor], t: int) -> Optional[Tensor]:
    """The zoneout weights of step ``t`` from ``None``, ``(B, H)`` or ``(T, B, H)``."""
    if z is None or z.dim() == 2:
        return z
    return z[t]


def _zone(d: Optional[Tensor], prev: Tensor, new: Tensor) -> Tensor:
    """``d ∘ prev + (1 - d) ∘ new`` (``new`` itself without zoneout)."""
    return new if d is None else d * prev + (1 - d) * new


def _hh(h: Tensor, weight_hh: Tensor, mask_h: Optional[Tensor], mode: MaskMode,
        gates: int) -> Tensor:
    """(h ∘ m) @ W_hhᵀ with a tied ``(B, H)`` or untied ``(G, B, H)`` mask -> ``(B, G*H)``."""
    if mode == MaskMode.NONE:
        return h @ weight_hh.t()
    if mode == MaskMode.TIED:
        return (h * mask_h) @ weight_hh.t()
    H = h.shape[-1]
    # Untied: gate g sees its own masked copy of h: (G, B, H) @ (G, H, H) -> (G, B, H).
    hm = h.unsqueeze(0) * mask_h
    w = weight_hh.view(gates, H, H).transpose(1, 2)
    return torch.bmm(hm, w).transpose(0, 1).reshape(h.shape[0], gates * H)


def lstm_recurrence(xp: Tensor, h0: Tensor, c0: Tensor, weight_hh: Tensor,
                    mask_h: Optional[Tensor] = None, zoneout_h: Optional[Tensor] = None,
                    zoneout_c: Optional[Tensor] = None) -> tuple[Tensor, Tensor, Tensor]:
    """LSTM over a sequence. ``xp = W_ih x_t + b_ih + b_hh`` for all t.

    i, f, g, o = σ, σ, tanh, σ of (xp_t + W_hh (h_{t-1} ∘ m)); c_t = f c_{t-1} + i g; h_t = o tanh(c_t)
    (with zoneout, these are the candidates, see the module docstring).
    Returns ``(out (T, B, H), h_T, c_T)``.
    """
    mode = mask_mode(mask_h)
    h, c = h0, c0
    outs = []
    for t in range(xp.shape[0]):
        gates = xp[t] + _hh(h, weight_hh, mask_h, mode, 4)
        i, f, g, o = gates.chunk(4, dim=1)
        c_new = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h_new = torch.sigmoid(o) * torch.tanh(c_new)
        h = _zone(zone_at(zoneout_h, t), h, h_new)
        c = _zone(zone_at(zoneout_c, t), c, c_new)
        outs.append(h)
    return torch.stack(outs), h, c


def gru_recurrence(xp: Tensor, h0: Tensor, weight_hh: Tensor, bias_hh: Optional[Tensor],
                   mask_h: Optional[Tensor] = None,
                   zoneout_h: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
    """GRU over a sequence. ``xp = W_ih x_t + b_ih`` for all t (b_hh is kept apart because the
    reset gate multiplies it: n = tanh(x_n + r ∘ (W_hn (h ∘ m) + b_hn))).

    h_t = (1 - z) ∘ n + z ∘ h_{t-1} (the carried h is not masked). Returns ``(out, h_T)``.
    """
    mode = mask_mode(mask_h)
    h = h0
    outs = []
    for t in range(xp.shape[0]):
        hh = _hh(h, weight_hh, mask_h, mode, 3)
        if bias_hh is not None:
            hh = hh + bias_hh
        xr, xz, xn = xp[t].chunk(3, dim=1)
        hr, hz, hn = hh.chunk(3, dim=1)
        r = torch.sigmoid(xr + hr)
        z = torch.sigmoid(xz + hz)
        n = torch.tanh(xn + r * hn)
        h = _zone(zone_at(zoneout_h, t), h, (1 - z) * n + z * h)
        outs.append(h)
    return torch.stack(outs), h


def rnn_recurrence(xp: Tensor, h0: Tensor, weight_hh: Tensor, activation: Callable[[Tensor], Tensor],
                   mask_h: Optional[Tensor] = None,
                   zoneout_h: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
    """Elman RNN: h_t = act(xp_t + W_hh (h_{t-1} ∘ m)), ``xp = W_ih x_t + b_ih + b_hh``."""
    mode = mask_mode(mask_h)
    h = h0
    outs = []
    for t in range(xp.shape[0]):
        h = _zone(zone_at(zoneout_h, t), h, activation(xp[t] + _hh(h, weight_hh, mask_h, mode, 1)))
        outs.append(h)
    return torch.stack(outs), h
