"""Gradient norms over time, ``‖∂L/∂h_t‖`` for every step and layer, and their decay rate."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional

import torch
from torch import Tensor

from ._rerun import _as_tuple, _cell_init, _is_stack, _like, _run_stack


@dataclass
class GradNorms:
    """Gradient norms ``‖∂L/∂h_t‖`` per step.

    ``norms``: Frobenius norm of the ``(B, H)`` slice ``∂L/∂h_t`` (all samples together);
    ``sample_norms``: mean over the batch of the per-sample Euclidean norms ``‖∂L/∂h_t[b]‖``.
    Both are ``(L, T)`` (row ``k``: layer ``k``, column ``t``: step ``t + 1``) or ``(T,)`` (top
    layer only, ``per_layer=False``). ``loss``: the value of the loss.
    """
    norms: Tensor
    sample_norms: Tensor
    loss: float

    @property
    def top(self) -> Tensor:
        """Norms of the top layer, ``(T,)``."""
        return self.norms[-1] if self.norms.dim() == 2 else self.norms

    def decay_rate(self, layer: int = -1) -> float:
        """:func:`decay_rate` of one layer's norms (default: the top layer)."""
        return decay_rate(self.norms[layer] if self.norms.dim() == 2 else self.norms)


def grad_norms_over_time(model, inputs: Tensor, loss_fn: Callable[[Tensor], Tensor], hx=None,
                         per_layer: bool = True, *, activation: Optional[str] = None) -> GradNorms:
    """Measure ``‖∂L/∂h_t‖`` for every time step (and layer) with tensor hooks.

    ``model``: a recurrent stack with ``torch.nn`` parameter names, run again step by step with
    its own weights and without dropout; ``inputs`` and ``hx`` as for its ``forward`` (including
    ``batch_first`` and unbatched input). Or a cell ``cell(x_t, state) -> state`` with time-major
    ``inputs (T, B, I)`` and ``hx`` its initial state (optional for ``torch.nn`` cells).

    ``loss_fn(output) -> scalar``: ``output`` is what the stack's ``forward`` returns first
    (last layer, the module's layout), or for a cell the stacked ``h_t`` ``(T, B, H)``. Use a
    closure for anything else (decoder, targets).

    A hook on every hidden state ``h_t`` (a non-leaf tensor of this run's graph only, gone with
    it) records ``∂L/∂h_t``, the *total* gradient through all later steps and layers, e.g. for
    one Elman layer with a loss on the last step ``∂L/∂h_t = ∂L/∂h_T ∏_{k=t+1}^{T} diag(f'(z_k))
    W_hh``. For an LSTM it is the gradient w.r.t. ``h_t`` with ``c_t`` as a separate variable.
    The backward pass runs with ``torch.autograd.grad`` on the hidden states only, so parameters'
    ``.grad`` are not touched and nothing of the model changes.

    ``activation`` overrides a vanilla RNN's activation (e.g. ``"linear"`` for a linear RNN with
    the same weights). Returns :class:`GradNorms` (``per_layer=False``: top layer only).
    """
    grads: dict[tuple[int, int], Tensor] = {}
    handles: list = []
    hooked: list[Tensor] = []

    def record(k: int, t: int, h: Tensor) -> None:
        def hook(g: Tensor) -> None:
            grads[(k, t)] = g.detach().clone()
        # A hook on a non-leaf tensor receives its total (accumulated) gradient; the handle is
        # removed right after the backward pass, and the tensor belongs to this run's graph only.
        handles.append(h.register_hook(hook))
        hooked.append(h)

    with torch.enable_grad():
        if _is_stack(model):
            output, hs, _, _ = _run_stack(model, inputs, hx, activation, leaf_states=True,
                                          on_step=record)
            L, T = len(hs), len(hs[0])
        else:
            if activation is not None:
                raise ValueError("activation= applies to recurrent stacks, not to cells")
            if inputs.dim() != 3:
                raise ValueError("cell inputs must be time-major (T, B, I)")
            state = _cell_init(model, hx, inputs.shape[1], inputs)
            state = _like(state, tuple(s.detach().clone().requires_grad_(True) for s in _as_tuple(state)))
            outs = []
            for t in range(inputs.shape[0]):
                state = model(inputs[t], state)
                h = _as_tuple(state)[0]
                record(0, t, h)
                outs.append(h)
            output, L, T = torch.stack(outs), 1, inputs.shape[0]
        loss = loss_fn(output)
        if loss.dim() != 0:
            raise ValueError(f"loss_fn must return a scalar, got shape {tuple(loss.shape)}")
        try:
            torch.autograd.grad(loss, hooked, allow_unused=True)
        finally:
            for hd in handles:
                hd.remove()

    norms = torch.zeros(L, T, dtype=torch.float64)
    sample = torch.zeros(L, T, dtype=torch.float64)
    for k in range(L):
        for t in range(T):
            g = grads.get((k, t))
            if g is None:  # h_t does not reach the loss
                continue
            g = g.to(torch.float64)
            norms[k, t] = g.norm()
            sample[k, t] = (g.reshape(g.shape[0], -1).norm(dim=1).mean() if g.dim() > 1 else g.norm())
    if not per_layer:
        norms, sample = norms[-1], sample[-1]
    return GradNorms(norms, sample, float(loss.detach()))


def decay_rate(norms_over_time) -> float:
    """Per-step multiplicative change of the gradient norm going back in time.

    With ``k = T - t`` the number of steps back from the end, fits ``log ‖∂L/∂h_t‖ ≈ a + k log ρ``
    by least squares and returns ``ρ``: the norm is multiplied by ``ρ`` at each step back, so
    ``ρ < 1`` means vanishing and ``ρ > 1`` exploding gradients (a linear RNN with
    ``W_hh = a·I`` and a loss on the last step gives exactly ``ρ = a``). Equivalently
    ``ρ = exp(-slope)`` of log-norm against ``t``. Zero and non-finite norms are left out;
    ``nan`` when fewer than two remain. Accepts a 1-D sequence or a :class:`GradNorms` (its
    top layer); slice beforehand to fit a window only.
    """
    if isinstance(norms_over_time, GradNorms):
        norms_over_time = norms_over_time.top
    n = torch.as_tensor(norms_over_time, dtype=torch.float64).detach().cpu()
    if n.dim() != 1:
        raise ValueError(f"expected the norms of one layer, a 1-D sequence, got shape {tuple(n.shape)}")
    t = torch.arange(n.numel(), dtype=torch.float64)
    ok = torch.isfinite(n) & (n > 0)
    if int(ok.sum()) < 2:
        return float("nan")
    t, y = t[ok], n[ok].log()
    tc = t - t.mean()
    slope = float((tc * (y - y.mean())).sum() / (tc * tc).sum())
    return math.exp(-slope)
