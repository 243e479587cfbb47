"""Gradient-flow diagnostics: measure vanishing and exploding gradients in recurrent networks.

Backpropagation through time multiplies Jacobians. For an Elman RNN
``h_t = f(z_t)``, ``z_t = W_ih x_t + b + W_hh h_{t-1}``, a loss on the last step gives::

    ∂L/∂h_t = ∂L/∂h_T · ∂h_T/∂h_t,    ∂h_T/∂h_t = ∏_{k=t+1}^{T} J_k,    J_k = diag(f'(z_k)) W_hh

so ``‖∂L/∂h_t‖ <= ‖∂L/∂h_T‖ ∏_k ‖diag(f'(z_k))‖ ‖W_hh‖₂``: it shrinks (vanishes) or grows
(explodes) geometrically with the distance ``T - t`` when ``σ_max(W_hh) · max|f'|`` is below or
above 1. LSTMs and GRUs add the additive path ``c_t = f_t ∘ c_{t-1} + …`` / ``h_t = z ∘ h_{t-1} + …``
whose Jacobian is close to ``diag(f_t)`` / ``diag(z_t)``, which is how they carry gradients further.

Tools (all leave the model untouched: no parameter, ``.grad``, ``requires_grad``, mode or hook is
changed or left behind):

- :func:`grad_norms_over_time`: ``‖∂L/∂h_t‖`` for every step ``t`` and layer, measured with tensor
  hooks on the hidden states of an exact step-by-step re-run of the model with its own weights.
- :func:`jacobian_products`: the exact ``‖∂s_T/∂s_t‖`` (spectral or Frobenius) from per-step
  Jacobians (``torch.autograd.functional.jacobian``) multiplied together; :func:`spectral_norm`
  (power iteration) and :func:`spectral_norms` (``σ_max`` of every ``weight_hh``).
- :func:`saturation`, :func:`collect_preactivations`, :func:`saturation_report`: saturated
  tanh/sigmoid units and dead ReLU units.
- :func:`decay_rate`: the per-step factor by which the gradient norm changes going back in time.
- :func:`clip_grad_norm`, :func:`clip_grad_value`, :class:`ClipMonitor`: clipping that reports
  what it did, and a running record of it for trainers to log.
- :func:`plot_grad_norms`, :func:`summary_table`: a log-y plot and a plain-text table.

Models: anything with ``torch.nn.RNN/LSTM/GRU`` parameter names (``weight_ih_l{k}``,
``weight_hh_l{k}``, ``bias_ih_l{k}``, ``bias_hh_l{k}``): ``torch.nn.RNN/LSTM/GRU`` and
``rnndrop.rnn.RNN/LSTM/GRU`` (with ``activation`` ``"tanh"``, ``"relu"``, ``"sigmoid"``,
``"leaky_relu"``, slope ``negative_slope``; residual ``skip`` connections are followed). The
stack is re-run layer by layer without dropout (what the model computes in ``eval()`` mode).
Bidirectional and projected (``proj_size``) LSTMs are not supported. Alternatively a *cell*:
any callable ``cell(x_t, state) -> state`` on ``(B, I)`` inputs, where ``state`` is a tensor
``h`` ``(B, H)`` or a tuple whose first element is ``h`` (``torch.nn.RNNCell``, ``GRUCell``,
``LSTMCell``, or a hand-written recurrence); cell inputs are time-major ``(T, B, I)``.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Optional, Union

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "GradNorms", "grad_norms_over_time", "decay_rate",
    "spectral_norm", "spectral_norms", "jacobian_products",
    "activation_derivative", "saturation", "collect_preactivations", "saturation_report",
    "GATE_ACTIVATIONS",
    "ClipStats", "ClipValueStats", "clip_grad_norm", "clip_grad_value", "ClipMonitor",
    "plot_grad_norms", "summary_table",
]

_GATE_NAMES = {"LSTM": ("i", "f", "g", "o"), "GRU": ("r", "z", "n"), "RNN": ("h",)}
_KIND_BY_GATES = {4: "LSTM", 3: "GRU", 1: "RNN"}

#: Activation applied to each recorded pre-activation (``"h"``: the RNN's own activation;
#: ``"c"``: the LSTM cell state, which enters ``tanh`` in ``h_t = o ∘ tanh(c_t)``).
GATE_ACTIVATIONS = {"i": "sigmoid", "f": "sigmoid", "g": "tanh", "o": "sigmoid", "c": "tanh",
                    "r": "sigmoid", "z": "sigmoid", "n": "tanh"}

_ACTIVATION_NAMES = ("tanh", "relu", "sigmoid", "leaky_relu", "linear")


# ============================================================================ activations
def _check_activation(activation: str) -> str:
    if activation == "identity":
        return "linear"
    if activation not in _ACTIVATION_NAMES:
        raise ValueError(f"activation must be one of {list(_ACTIVATION_NAMES)}, got {activation!r}")
    return activation


def _activation_fn(activation: str, negative_slope: float = 0.01) -> Callable[[Tensor], Tensor]:
    activation = _check_activation(activation)
    if activation == "leaky_relu":
        return lambda z: F.leaky_relu(z, negative_slope)
    return {"tanh": torch.tanh, "relu": torch.relu, "sigmoid": torch.sigmoid,
            "linear": lambda z: z}[activation]


def activation_derivative(z: Tensor, activation: str, negative_slope: float = 0.01) -> Tensor:
    """``f'(z)`` element-wise for ``activation`` in tanh, sigmoid, relu, leaky_relu, linear
    (ReLU's derivative at 0 is taken as 0, as autograd does)."""
    activation = _check_activation(activation)
    if activation == "tanh":
        return 1 - torch.tanh(z) ** 2
    if activation == "sigmoid":
        s = torch.sigmoid(z)
        return s * (1 - s)
    if activation == "relu":
        return (z > 0).to(z.dtype)
    if activation == "leaky_relu":
        return torch.where(z > 0, torch.ones_like(z), torch.full_like(z, negative_slope))
    return torch.ones_like(z)


# ===================================================================== stack re-run (exact)
@dataclass(frozen=True)
class _Spec:
    kind: str            # "RNN", "LSTM", "GRU"
    activation: str      # RNN only
    negative_slope: float
    num_layers: int
    hidden_size: int
    batch_first: bool
    skip: bool


def _is_stack(model) -> bool:
    return isinstance(model, torch.nn.Module) and hasattr(model, "weight_hh_l0")


def _spec(module, activation: Optional[str] = None) -> _Spec:
    if not _is_stack(module):
        raise TypeError("expected a recurrent module with torch.nn.RNN/LSTM/GRU parameter names "
                        f"(weight_hh_l0, ...), got {type(module).__name__}")
    if getattr(module, "bidirectional", False):
        raise ValueError("bidirectional recurrent modules are not supported")
    if getattr(module, "proj_size", 0):
        raise ValueError("LSTMs with proj_size > 0 are not supported")
    w_hh = module.weight_hh_l0
    H = w_hh.shape[1]
    G = w_hh.shape[0] // H
    mode = str(getattr(module, "mode", "")).upper()
    if "LSTM" in mode:
        kind = "LSTM"
    elif "GRU" in mode:
        kind = "GRU"
    elif mode.startswith("RNN"):
        kind = "RNN"
    else:
        if G not in _KIND_BY_GATES or w_hh.shape[0] != G * H:
            raise ValueError(f"cannot tell the cell type of weight_hh_l0 of shape {tuple(w_hh.shape)}")
        kind = _KIND_BY_GATES[G]
    if kind != "RNN":
        if activation is not None:
            raise ValueError(f"activation= applies to vanilla RNNs only, not {kind}")
        act = "tanh"
    elif activation is not None:
        act = _check_activation(activation)
    else:
        act = getattr(module, "activation", None)
        if not isinstance(act, str):
            act = getattr(module, "nonlinearity", None)
        if not isinstance(act, str):
            act = "relu" if mode == "RNN_RELU" else "tanh"
        act = _check_activation(act)
    L = 0
    while hasattr(module, f"weight_hh_l{L}"):
        L += 1
    return _Spec(kind, act, float(getattr(module, "negative_slope", 0.01)), L, H,
                 bool(getattr(module, "batch_first", False)), bool(getattr(module, "skip", False)))


def _layer_params(module, k: int):
    get = lambda n: getattr(module, f"{n}_l{k}", None)
    return get("weight_ih"), get("weight_hh"), get("bias_ih"), get("bias_hh")


def _linear(x: Tensor, w: Tensor, b: Optional[Tensor]) -> Tensor:
    return F.linear(x, w, b)


def _make_step(spec: _Spec, w_ih, w_hh, b_ih, b_hh):
    """``step(x_t (B, I), state tuple) -> (new state tuple, {gate: pre-activation (B, H)})``."""
    if spec.kind == "RNN":
        act = _activation_fn(spec.activation, spec.negative_slope)

        def step(x_t, state):
            z = _linear(x_t, w_ih, b_ih) + _linear(state[0], w_hh, b_hh)
            return (act(z),), {"h": z}
    elif spec.kind == "LSTM":
        def step(x_t, state):
            h, c = state
            gates = _linear(x_t, w_ih, b_ih) + _linear(h, w_hh, b_hh)
            i, f, g, o = gates.chunk(4, dim=-1)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            h = torch.sigmoid(o) * torch.tanh(c)
            return (h, c), {"i": i, "f": f, "g": g, "o": o, "c": c}
    else:
        def step(x_t, state):
            h = state[0]
            xr, xz, xn = _linear(x_t, w_ih, b_ih).chunk(3, dim=-1)
            hr, hz, hn = _linear(h, w_hh, b_hh).chunk(3, dim=-1)
            r_pre, z_pre = xr + hr, xz + hz
            r, z = torch.sigmoid(r_pre), torch.sigmoid(z_pre)
            n_pre = xn + r * hn
            h = (1 - z) * torch.tanh(n_pre) + z * h
            return (h,), {"r": r_pre, "z": z_pre, "n": n_pre}
    return step


def _prepare(module, spec: _Spec, input: Tensor, hx):
    """-> time-major ``x (T, B, I)``, per-layer initial state tuples, ``unbatched``."""
    if input.dim() not in (2, 3):
        raise ValueError(f"expected a 2-D (unbatched) or 3-D input, got shape {tuple(input.shape)}")
    unbatched = input.dim() == 2
    x = input.unsqueeze(1) if unbatched else (input.transpose(0, 1) if spec.batch_first else input)
    B = x.shape[1]
    L, H = spec.num_layers, spec.hidden_size
    ref = module.weight_hh_l0
    if hx is None:
        z = torch.zeros(L, B, H, dtype=ref.dtype, device=ref.device)
        states = [z] + ([z] if spec.kind == "LSTM" else [])
    else:
        states = list(hx) if spec.kind == "LSTM" else [hx]
        if spec.kind == "LSTM" and len(states) != 2:
            raise TypeError("an LSTM expects hx=(h_0, c_0)")
        if unbatched:
            states = [s.unsqueeze(1) for s in states]
        for s in states:
            if tuple(s.shape) != (L, B, H):
                raise ValueError(f"expected an initial state of shape {(L, B, H)}, got {tuple(s.shape)}")
    return x, [tuple(s[k] for s in states) for k in range(L)], unbatched


def _to_layout(out: Tensor, spec: _Spec, unbatched: bool) -> Tensor:
    return out.squeeze(1) if unbatched else (out.transpose(0, 1) if spec.batch_first else out)


def _run_stack(module, input: Tensor, hx=None, activation: Optional[str] = None, *,
               leaf_states: bool = False, on_step=None, until_layer: Optional[int] = None):
    """Run the stack step by step with the module's own weights (no dropout).

    Returns ``(output in the module's layout, hs, pres, layer_inputs)`` where ``hs[k][t]`` is
    the ``(B, H)`` hidden state of layer ``k`` at step ``t + 1``, ``pres[k][gate]`` a list of
    ``(B, H)`` pre-activations and ``layer_inputs[k]`` the ``(T, B, ·)`` input of layer ``k``.
    ``on_step(k, t, h)`` is called on every hidden state as it is computed.
    """
    spec = _spec(module, activation)
    x, states, unbatched = _prepare(module, spec, input, hx)
    hs, pres, layer_inputs = [], [], []
    last = spec.num_layers if until_layer is None else until_layer + 1
    for k in range(last):
        layer_inputs.append(x)
        step = _make_step(spec, *_layer_params(module, k))
        state = states[k]
        if leaf_states:
            state = tuple(s.detach().clone().requires_grad_(True) for s in state)
        h_k, pre_k = [], {}
        for t in range(x.shape[0]):
            state, pre = step(x[t], state)
            if on_step is not None:
                on_step(k, t, state[0])
            h_k.append(state[0])
            for g, v in pre.items():
                pre_k.setdefault(g, []).append(v)
        out = torch.stack(h_k)
        if spec.skip and k > 0 and x.shape[-1] == out.shape[-1]:
            out = out + x
        hs.append(h_k)
        pres.append(pre_k)
        x = out
    return _to_layout(x, spec, unbatched), hs, pres, layer_inputs


# ---------------------------------------------------------------------------------- cells
def _as_tuple(state) -> tuple:
    return tuple(state) if isinstance(state, (tuple, list)) else (state,)


def _like(template, parts: tuple):
    return parts if isinstance(template, (tuple, list)) else parts[0]


def _cell_init(cell, hx, batch: int, ref: Tensor):
    if hx is not None:
        return hx
    H = getattr(cell, "hidden_size", None)
    if not isinstance(H, int):
        raise ValueError("hx is required for a cell callable without a hidden_size attribute")
    z = ref.new_zeros(batch, H)
    return (z, z.clone()) if isinstance(cell, torch.nn.LSTMCell) else z


# ============================================================================ grad norms
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


# ========================================================================= jacobian tools
def spectral_norm(W: Tensor, iters: int = 100, tol: float = 1e-12) -> float:
    """Largest singular value ``σ_max(W) = ‖W‖₂`` by power iteration on ``WᵀW``.

    Works in float64 from a fixed pseudo-random start (reproducible, global RNG untouched) and
    stops after ``iters`` iterations or when ``σ`` changes by less than ``tol`` relatively. The
    error of ``σ`` decays like ``(σ₂/σ₁)^(2·iters)``. Tensors with more than 2 dims are viewed
    as ``(shape[0], -1)``, as ``torch.nn.utils.spectral_norm`` does.
    """
    W = W.detach()
    if W.dim() == 1:
        return float(W.double().norm())
    W = W.reshape(W.shape[0], -1).to(torch.float64)
    gen = torch.Generator().manual_seed(0)
    v = torch.randn(W.shape[1], generator=gen, dtype=torch.float64).to(W.device)
    v = v / v.norm()
    sigma = 0.0
    for _ in range(max(int(iters), 1)):
        u = W @ v
        new_sigma = float(u.norm())
        if new_sigma == 0.0:
            return 0.0
        v = W.t() @ (u / new_sigma)
        v = v / v.norm()
        if abs(new_sigma - sigma) <= tol * new_sigma:
            sigma = new_sigma
            break
        sigma = new_sigma
    return float((W @ v).norm())


def _gate_names(G: int) -> tuple:
    return {4: _GATE_NAMES["LSTM"], 3: _GATE_NAMES["GRU"]}.get(G, tuple(str(g) for g in range(G)))


def spectral_norms(module: torch.nn.Module, per_gate: bool = False, iters: int = 100) -> dict[str, float]:
    """``{name: σ_max}`` for every parameter of ``module`` (recursively) whose name contains
    ``weight_hh``. With ``per_gate`` the ``(G·H, H)`` matrix is split into its ``G`` square gate
    blocks, named ``name.i`` … (LSTM ``i, f, g, o``; GRU ``r, z, n``)."""
    out = {}
    for name, p in module.named_parameters():
        if "weight_hh" not in name:
            continue
        if per_gate and p.dim() == 2 and p.shape[0] % p.shape[1] == 0 and p.shape[0] > p.shape[1]:
            G = p.shape[0] // p.shape[1]
            for g, block in zip(_gate_names(G), p.detach().chunk(G, dim=0)):
                out[f"{name}.{g}"] = spectral_norm(block, iters)
        else:
            out[name] = spectral_norm(p, iters)
    return out


def _matrix_norm(P: Tensor, norm: str) -> float:
    if norm == "spectral":
        return float(torch.linalg.matrix_norm(P, ord=2))
    return float(torch.linalg.matrix_norm(P, ord="fro"))


def jacobian_products(model, x: Tensor, h0=None, *, layer: int = 0, norm: str = "spectral",
                      part: str = "full", activation: Optional[str] = None) -> Tensor:
    """Exact ``‖∂s_T/∂s_t‖`` for ``t = 0 … T`` along the trajectory of ``x``.

    ``s_t`` is the recurrent state after step ``t`` (``s_0`` the initial state): ``h_t`` for an
    RNN/GRU, ``[h_t; c_t]`` (size ``2H``) for an LSTM. Each step's Jacobian
    ``J_k = ∂s_k/∂s_{k-1}`` (``diag(f'(z_k)) W_hh`` for an Elman RNN) is computed with
    ``torch.autograd.functional.jacobian`` for one sample at a time and
    ``∂s_T/∂s_t = J_T J_{T-1} ⋯ J_{t+1}`` multiplied from the end. Meant for small models: it
    costs ``T·B`` Jacobians of size ``S×S``.

    ``model``: a recurrent stack (``x`` and ``h0`` as for its ``forward``; ``layer`` picks the
    layer, the ones below run first to make its input) or a cell ``cell(x_t, state) -> state``
    (``x`` time-major ``(T, I)`` or ``(T, B, I)``; ``h0`` unbatched or batched state).
    ``norm``: ``"spectral"`` (largest singular value) or ``"fro"``. ``part``: ``"full"`` state or
    ``"h"``, the ``∂h_T/∂h_t`` block (for an LSTM: with ``c_t`` held fixed).

    Returns ``(T + 1,)`` for an unbatched ``x``, else ``(B, T + 1)``; entry ``t`` is
    ``‖∂s_T/∂s_t‖`` (entry ``T`` is ``‖I‖``: 1 spectral, ``√S`` Frobenius).
    """
    if norm not in ("spectral", "fro"):
        raise ValueError(f"norm must be 'spectral' or 'fro', got {norm!r}")
    if part not in ("full", "h"):
        raise ValueError(f"part must be 'full' or 'h', got {part!r}")
    if _is_stack(model):
        spec = _spec(model, activation)
        if not 0 <= layer < spec.num_layers:
            raise ValueError(f"layer must be in [0, {spec.num_layers}), got {layer}")
        unbatched = x.dim() == 2
        with torch.no_grad():
            _, _, _, layer_inputs = _run_stack(model, x, h0, activation, until_layer=layer)
        _, states, _ = _prepare(model, spec, x, h0)
        seq = layer_inputs[layer].detach()                        # (T, B, I_k)
        init = tuple(s.detach() for s in states[layer])           # each (B, H)
        step_k = _make_step(spec, *_layer_params(model, layer))
        step = lambda x_t, st: step_k(x_t, st)[0]
    else:
        if activation is not None:
            raise ValueError("activation= applies to recurrent stacks, not to cells")
        unbatched = x.dim() == 2
        seq = x.unsqueeze(1) if unbatched else x
        st0 = _cell_init(model, h0, seq.shape[1], seq)
        init = tuple(s.detach() for s in _as_tuple(st0))
        if unbatched and h0 is not None:
            init = tuple(s.unsqueeze(0) for s in init)
        step = lambda x_t, st: _as_tuple(model(x_t, _like(st0, st)))
    T, B = seq.shape[0], seq.shape[1]
    sizes = [s.shape[-1] for s in init]
    H = sizes[0]
    S = sum(sizes)

    def flat_step(x_t: Tensor, s: Tensor) -> Tensor:
        parts = tuple(p.unsqueeze(0) for p in s.split(sizes))
        return torch.cat([p[0] for p in step(x_t.unsqueeze(0), parts)])

    result = torch.zeros(B, T + 1, dtype=torch.float64)
    for b in range(B):
        s = torch.cat([p[b] for p in init])
        jacs = []
        with torch.enable_grad():
            for t in range(T):
                x_t = seq[t, b]
                J = torch.autograd.functional.jacobian(lambda s_: flat_step(x_t, s_), s)
                jacs.append(J.detach().to(torch.float64))
                with torch.no_grad():
                    s = flat_step(x_t, s)
        P = torch.eye(S, dtype=torch.float64, device=s.device)
        pick = (lambda M: M[:H, :H]) if part == "h" else (lambda M: M)
        result[b, T] = _matrix_norm(pick(P), norm)
        for t in range(T, 0, -1):
            P = P @ jacs[t - 1]
            result[b, t - 1] = _matrix_norm(pick(P), norm)
    return result[0] if unbatched else result


# ============================================================================= saturation
def saturation(preactivations: Tensor, activation: str = "tanh", threshold: float = 0.01,
               negative_slope: float = 0.01) -> float:
    """Fraction of saturated units among pre-activations ``z`` of shape ``(..., H)``.

    tanh / sigmoid: the fraction of *elements* with ``|f'(z)| < threshold`` (with 0.01:
    ``|z| > 3.8`` for tanh, ``|z| > 4.6`` for sigmoid). relu / leaky_relu: the fraction of dead
    *units* (last dimension) whose ``z <= 0`` at every position (every step and sample) — for
    leaky ReLU their gradient is only ``negative_slope``. linear: 0.
    """
    activation = _check_activation(activation)
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


# =============================================================================== clipping
def _params_list(params) -> list[Tensor]:
    if isinstance(params, Tensor):
        return [params]
    return list(params)


@dataclass(frozen=True)
class ClipStats:
    """What :func:`clip_grad_norm` did: ``total_norm`` before clipping, whether it ``clipped``
    (``total_norm > max_norm``), the ``scale`` applied to the gradients (1.0 when not clipped)
    and whether the norm was ``finite``."""
    total_norm: float
    max_norm: float
    clipped: bool
    scale: float
    finite: bool = True


@dataclass(frozen=True)
class ClipValueStats:
    """What :func:`clip_grad_value` did: ``num_clipped`` of ``numel`` gradient elements had
    ``|g| > clip_value`` (``fraction_clipped``); ``max_abs`` is the largest ``|g|`` before."""
    clip_value: float
    num_clipped: int
    numel: int
    fraction_clipped: float
    max_abs: float


def clip_grad_norm(params, max_norm: float, norm_type: float = 2.0,
                   error_if_nonfinite: bool = False) -> ClipStats:
    """``torch.nn.utils.clip_grad_norm_`` (gradients scaled in place by
    ``min(1, max_norm / (total_norm + 1e-6))``), reporting the pre-clip total norm, whether it
    clipped and the scale. Parameters without ``.grad`` are ignored."""
    params = _params_list(params)
    total = torch.nn.utils.clip_grad_norm_(params, max_norm, norm_type=norm_type,
                                           error_if_nonfinite=error_if_nonfinite)
    total = float(total)
    finite = math.isfinite(total)
    clipped = finite and total > max_norm
    scale = min(1.0, max_norm / (total + 1e-6)) if finite else float("nan")
    return ClipStats(total, float(max_norm), clipped, scale, finite)


def clip_grad_value(params, clip_value: float) -> ClipValueStats:
    """``torch.nn.utils.clip_grad_value_`` (every gradient element clamped to
    ``[-clip_value, clip_value]`` in place), reporting how many elements were clipped."""
    if clip_value < 0:
        raise ValueError(f"clip_value must be >= 0, got {clip_value}")
    params = [p for p in _params_list(params) if p.grad is not None]
    n = 0
    clipped = 0
    max_abs = 0.0
    for p in params:
        g = p.grad.detach()
        n += g.numel()
        if g.numel():
            clipped += int((g.abs() > clip_value).sum())
            max_abs = max(max_abs, float(g.abs().max()))
    torch.nn.utils.clip_grad_value_(params, clip_value)
    return ClipValueStats(float(clip_value), clipped, n, clipped / n if n else 0.0, max_abs)


class ClipMonitor:
    """Running record of gradient clipping across training steps, for trainers to log.

    >>> mon = ClipMonitor()
    >>> stats = mon.clip_grad_norm(model.parameters(), 5.0)   # clips and records   # doctest: +SKIP
    >>> mon.summary()   # {'steps': …, 'clipped': …, 'fraction_clipped': …, 'mean_norm': …, …}  # doctest: +SKIP

    Norm clipping (:class:`ClipStats`): ``steps``, ``clipped`` (count), ``fraction_clipped``,
    ``mean_norm`` / ``max_norm`` of the pre-clip total norm over finite steps, ``mean_scale``
    (mean factor applied on clipped steps: how much clipping acted), ``nonfinite`` steps.
    Value clipping (:class:`ClipValueStats`): ``value_steps``, ``value_fraction_clipped`` (mean
    fraction of elements clipped per step). ``state_dict``/``load_state_dict`` for checkpoints.
    """

    _FIELDS = ("steps", "clipped", "nonfinite", "norm_sum", "norm_max", "finite_steps",
               "scale_sum", "value_steps", "value_fraction_sum")

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.steps = self.clipped = self.nonfinite = self.finite_steps = self.value_steps = 0
        self.norm_sum = self.norm_max = self.scale_sum = self.value_fraction_sum = 0.0

    def update(self, stats: Union[ClipStats, ClipValueStats]) -> Union[ClipStats, ClipValueStats]:
        """Record one step's statistics; returns them."""
        if isinstance(stats, ClipValueStats):
            self.value_steps += 1
            self.value_fraction_sum += stats.fraction_clipped
            return stats
        self.steps += 1
        if not stats.finite:
            self.nonfinite += 1
            return stats
        self.finite_steps += 1
        self.norm_sum += stats.total_norm
        self.norm_max = max(self.norm_max, stats.total_norm)
        if stats.clipped:
            self.clipped += 1
            self.scale_sum += stats.scale
        return stats

    def clip_grad_norm(self, params, max_norm: float, norm_type: float = 2.0) -> ClipStats:
        """:func:`clip_grad_norm` and record it."""
        return self.update(clip_grad_norm(params, max_norm, norm_type))

    def clip_grad_value(self, params, clip_value: float) -> ClipValueStats:
        """:func:`clip_grad_value` and record it."""
        return self.update(clip_grad_value(params, clip_value))

    @property
    def fraction_clipped(self) -> float:
        return self.clipped / self.steps if self.steps else 0.0

    @property
    def mean_norm(self) -> float:
        return self.norm_sum / self.finite_steps if self.finite_steps else float("nan")

    @property
    def max_norm(self) -> float:
        return self.norm_max if self.finite_steps else float("nan")

    @property
    def mean_scale(self) -> float:
        return self.scale_sum / self.clipped if self.clipped else 1.0

    def summary(self) -> dict[str, float]:
        out = {"steps": self.steps, "clipped": self.clipped,
               "fraction_clipped": self.fraction_clipped, "mean_norm": self.mean_norm,
               "max_norm": self.max_norm, "mean_scale": self.mean_scale,
               "nonfinite": self.nonfinite}
        if self.value_steps:
            out["value_steps"] = self.value_steps
            out["value_fraction_clipped"] = self.value_fraction_sum / self.value_steps
        return out

    def state_dict(self) -> dict:
        return {f: getattr(self, f) for f in self._FIELDS}

    def load_state_dict(self, state: Mapping) -> None:
        for f in self._FIELDS:
            setattr(self, f, type(getattr(self, f))(state[f]))

    def __repr__(self) -> str:
        s = self.summary()
        return (f"ClipMonitor(steps={s['steps']}, clipped={s['clipped']}, "
                f"mean_norm={s['mean_norm']:.4g}, max_norm={s['max_norm']:.4g})")


# ========================================================================= plots & tables
def _curves(label: str, norms) -> list[tuple[str, Tensor]]:
    if isinstance(norms, GradNorms):
        norms = norms.norms
    n = torch.as_tensor(norms, dtype=torch.float64).detach().cpu()
    if n.dim() == 1:
        return [(label, n)]
    if n.dim() == 2:
        return [(f"{label} (layer {k})", n[k]) for k in range(n.shape[0])]
    raise ValueError(f"norms for {label!r} must be 1-D (T,) or 2-D (layers, T), got {tuple(n.shape)}")


def plot_grad_norms(results: Mapping[str, object], path: Union[str, os.PathLike],
                    title: Optional[str] = None) -> Path:
    """Plot ``‖∂L/∂h_t‖`` against the time step ``t = 1 … T`` on a log y-axis, one line per label
    (a :class:`GradNorms` or 2-D ``(layers, T)`` tensor gives one line per layer). Uses
    matplotlib's Agg canvas directly (no pyplot, no global backend change). Zero norms are not
    drawn. Creates the parent folder; returns the path."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig = Figure(figsize=(6.4, 4.2))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    for label, norms in results.items():
        for name, n in _curves(label, norms):
            y = n.clone()
            y[~(torch.isfinite(y) & (y > 0))] = float("nan")
            ax.plot(range(1, n.numel() + 1), y.tolist(), label=name)
    ax.set_yscale("log")
    ax.set_xlabel("time step t")
    ax.set_ylabel(r"$\|\partial L / \partial h_t\|$")
    if title:
        ax.set_title(title)
    if results:
        ax.legend(fontsize="small")
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    return path


def summary_table(results: Mapping[str, object]) -> str:
    """Plain-text table, one row per label (per layer for 2-D norms): ``T``, decay per step
    (:func:`decay_rate`), ``‖g‖`` at ``t = 1`` and ``t = T``, their ratio, and the min and max
    over ``t``."""
    header = ("label", "T", "decay/step", "norm t=1", "norm t=T", "t=1 / t=T", "min", "max")
    rows = []
    for label, norms in results.items():
        for name, n in _curves(label, norms):
            T = n.numel()
            first, last = (float(n[0]), float(n[-1])) if T else (float("nan"),) * 2
            ratio = first / last if last != 0 else float("inf") if first else float("nan")
            rows.append((name, str(T), f"{decay_rate(n):.4f}", f"{first:.3e}", f"{last:.3e}",
                         f"{ratio:.3e}", f"{float(n.min()):.3e}" if T else "nan",
                         f"{float(n.max()):.3e}" if T else "nan"))
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    fmt = lambda r: "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
    lines = [fmt(header), "  ".join("-" * w for w in widths)] + [fmt(r) for r in rows]
    return "\n".join(lines)


# ============================================================= CLI: rnndrop diagnose
def add_cli(subparsers) -> None:
    """Add ``rnndrop diagnose CONFIG_OR_CHECKPOINT``: gradient flow through a language model's
    LSTM (per-layer decay per step, ``‖∂L/∂h_t‖`` at ``t = 1`` and ``T``, ``σ_max(W_hh)``,
    saturation) on one batch, with a plot of the gradient norm against the time step."""
    p = subparsers.add_parser(
        "diagnose", help="gradient flow through a language model (checkpoint or recipe)",
        description="Gradient flow through the LSTM of a language model: a trained checkpoint "
                    "(*.pt) or a freshly initialised model from a recipe (*.toml). One batch of "
                    "the corpus (random tokens when the corpus cannot be loaded), loss = the LM "
                    "loss over the window.")
    p.add_argument("source", metavar="CONFIG_OR_CHECKPOINT",
                   help="recipe (configs/*.toml) or checkpoint (last.pt / best.pt)")
    p.add_argument("--bptt", type=int, default=100, help="time steps T (default: %(default)s)")
    p.add_argument("--batch", type=int, default=None,
                   help="sequences in the batch (default: train.batch_size of the config)")
    p.add_argument("--data", help="data directory (default: data.dir of the config, else "
                                  "$RNNDROP_DATA/ptb); random tokens when it cannot be loaded")
    p.add_argument("--vocab-size", type=int, default=None,
                   help="vocabulary size for a recipe when no corpus is available")
    p.add_argument("--out", default="runs/diagnose/grad_norms.png",
                   help="plot of log gradient norm against time step (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="seed for initialisation and random tokens")
    p.add_argument("--loss", choices=("all", "last"), default="all",
                   help="LM loss over every step of the window (all, the training loss) or on "
                        "the last step only (last: ‖∂L/∂h_t‖ is then purely the gradient carried "
                        "back through time, T - t steps)")
    p.set_defaults(func=_diagnose_command)


def _diagnose_source(source: Path):
    """-> ``(cfg, checkpoint state or None, kind)`` for a recipe (``*.toml``) or a checkpoint."""
    from . import checkpoint as ckpt
    from .config import RunConfig, load_config
    if source.suffix.lower() == ".toml":
        return load_config(source), None, "recipe (freshly initialised)"
    state = ckpt.load(source)
    missing = [k for k in ("model", "config") if k not in state]
    if missing:
        raise ckpt.CheckpointError(f"{source} has no {' / '.join(missing)} entry: not a "
                                   f"language-model checkpoint")
    if not isinstance(state["model"], Mapping) or "embedding.weight" not in state["model"]:
        raise ckpt.CheckpointError(f"{source}: no embedding.weight in the model state")
    return RunConfig.from_dict(state["config"], str(source)), state, "checkpoint"


def _diagnose_build(source: Path, cfg, state, vocab_size: int, counts, seed: int):
    """The language model in eval mode, with the checkpoint's weights if any."""
    import inspect
    import sys
    from . import checkpoint as ckpt
    try:
        from .models.lm import RNNLanguageModel
    except ImportError as e:
        raise RuntimeError(f"cannot build the language model ({e})") from None
    kw = {}
    if "counts" in inspect.signature(RNNLanguageModel.from_config).parameters:
        if counts is None and cfg.model.output == "sampled" and \
                str(getattr(cfg.model, "sampler", "")).lower() == "unigram":
            # The proposal only matters for the sampled training loss, not for this analysis.
            print("notice: no training counts for the unigram sampler; using uniform counts",
                  file=sys.stderr)
            counts = torch.ones(vocab_size)
        kw["counts"] = counts
    torch.manual_seed(seed)
    model = RNNLanguageModel.from_config(vocab_size, cfg.model, **kw)
    if state is not None:
        try:
            model.load_state_dict(state["model"])
        except RuntimeError as e:
            raise ckpt.CheckpointError(f"{source} does not fit the model its config describes: "
                                       f"{str(e).splitlines()[0]}") from None
    return model.eval()


def _diagnose_corpus(cfg, data: Optional[str]):
    """-> ``(corpus or None, why not)``: never downloads (only an existing directory is read)."""
    d = data or cfg.data.dir
    if d is None and cfg.data.layout == "ptb" and os.environ.get("RNNDROP_DATA"):
        d = str(Path(os.environ["RNNDROP_DATA"]) / "ptb")
    if d is None:
        return None, "no data directory (--data, data.dir or $RNNDROP_DATA)"
    if not Path(d).is_dir():
        return None, f"data directory {d} not found"
    try:
        from .train import load_corpus_for
        return load_corpus_for(cfg, d), ""
    except Exception as e:  # missing files, data module absent, unreadable corpus, ...
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        return None, f"corpus in {d} could not be loaded ({msg[:200]})"


def _diagnose_command(args) -> int:
    import sys
    source = Path(args.source)
    if args.bptt < 2:
        raise ValueError(f"--bptt must be >= 2, got {args.bptt}")
    if args.batch is not None and args.batch < 1:
        raise ValueError(f"--batch must be >= 1, got {args.batch}")
    if args.vocab_size is not None and args.vocab_size < 1:
        raise ValueError(f"--vocab-size must be >= 1, got {args.vocab_size}")
    cfg, state, kind = _diagnose_source(source)
    B = args.batch or cfg.train.batch_size
    T = args.bptt
    corpus, why = _diagnose_corpus(cfg, args.data)
    if state is not None:
        V = int(state["model"]["embedding.weight"].shape[0])
    elif args.vocab_size is not None:
        V = args.vocab_size
    elif corpus is not None:
        V = len(corpus.vocab)
    else:
        raise ValueError(f"{source}: the vocabulary size is unknown ({why}); give "
                         f"--vocab-size N or --data DIR")
    if corpus is not None and len(corpus.vocab) != V:
        corpus, why = None, f"the corpus has {len(corpus.vocab)} words, the model {V}"
    counts = getattr(corpus.vocab, "counts", None) if corpus is not None else None
    if counts is None and state is not None and isinstance(state.get("vocab"), Mapping):
        c = state["vocab"].get("counts")
        counts = c if c is not None and len(c) == V else None
    model = _diagnose_build(source, cfg, state, V, counts, args.seed)
    tokens, data_note = None, ""
    if corpus is not None:
        from .data.text import batchify
        stream = batchify(corpus.train, B)
        if stream.shape[0] < 3:
            why = f"the training stream is too short for a batch of {B}"
        else:
            if stream.shape[0] - 1 < T:
                print(f"notice: the training stream has {stream.shape[0]} steps per sequence; "
                      f"T = {stream.shape[0] - 1} instead of {T}", file=sys.stderr)
                T = stream.shape[0] - 1
            tokens = stream[:T + 1].long()
            data_note = f"corpus training split (first {T} steps of {B} streams)"
    if tokens is None:
        print(f"notice: {why}; using random tokens instead", file=sys.stderr)
        gen = torch.Generator().manual_seed(args.seed)
        tokens = torch.randint(0, V, (T + 1, B), generator=gen)
        data_note = f"random tokens (uniform over {V} words)"
    x, y = tokens[:-1], tokens[1:]
    with torch.no_grad():
        emb = model.embedding(x)
    if args.loss == "last":
        loss_fn = lambda out: model.loss(out[-1:], y[-1:])
    else:
        loss_fn = lambda out: model.loss(out, y)
    gn = grad_norms_over_time(model.rnn, emb, loss_fn)
    sig = spectral_norms(model.rnn)
    sat = saturation_report(model.rnn, emb)

    L = gn.norms.shape[0]
    print(f"rnndrop diagnose: {source} [{kind}]")
    print(f"model: LSTM {L} layer(s) × {model.hidden_size}, vocabulary {V}; batch {B}, T = {T}, "
          f"data: {data_note}; loss = LM loss (mean NLL per token, "
          f"{'every step' if args.loss == 'all' else 'last step only'}) = {gn.loss:.4f}")
    gates = sorted({g.split(".", 1)[1] for g in sat}, key="ifgoc".find)
    header = ("layer", "decay/step", "norm t=1", "norm t=T", "t=1 / t=T", "σ_max(W_hh)") + \
        tuple(f"sat {g}" for g in gates)
    rows = []
    for k in range(L):
        n = gn.norms[k]
        first, last = float(n[0]), float(n[-1])
        ratio = first / last if last else float("inf")
        rows.append((str(k), f"{decay_rate(n):.4f}", f"{first:.3e}", f"{last:.3e}", f"{ratio:.3e}",
                     f"{sig.get(f'weight_hh_l{k}', float('nan')):.4f}")
                    + tuple(f"{sat.get(f'l{k}.{g}', float('nan')):.3f}" for g in gates))
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    fmt = lambda r: "  ".join(c.rjust(w) for c, w in zip(r, widths))
    print("\n".join([fmt(header), "  ".join("-" * w for w in widths)] + [fmt(r) for r in rows]))
    print("decay/step: factor by which ‖∂L/∂h_t‖ changes per step back in time (< 1 vanishing, "
          "> 1 exploding); sat: fraction of saturated gate pre-activations (|f'| < 0.01)")
    path = plot_grad_norms({"LSTM": gn}, args.out,
                           title=f"{source.name}: ‖∂L/∂h_t‖, batch {B}, T = {T}")
    print(f"plot: {path}")
    return 0
