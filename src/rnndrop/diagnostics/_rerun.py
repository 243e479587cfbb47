"""The exact re-run of a recurrent stack behind every gradient-flow measurement.

The stack is run again step by step with the module's own weights and without dropout (what it
computes in ``eval()`` mode), so that hooks can be put on every hidden state and the gate
pre-activations recorded. The step functions repeat the torch.nn equations on purpose: the
reference loops of ``rnndrop._recurrence`` run whole sequences and keep no pre-activations.
Works on anything with ``torch.nn.RNN/LSTM/GRU`` parameter names (torch's modules and
rnndrop's), and on cells ``cell(x_t, state) -> state``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from ..rnn import ACTIVATIONS

GATE_NAMES = {"LSTM": ("i", "f", "g", "o"), "GRU": ("r", "z", "n"), "RNN": ("h",)}
_KIND_BY_GATES = {4: "LSTM", 3: "GRU", 1: "RNN"}

#: Activation applied to each recorded pre-activation (``"h"``: the RNN's own activation;
#: ``"c"``: the LSTM cell state, which enters ``tanh`` in ``h_t = o ∘ tanh(c_t)``).
GATE_ACTIVATIONS = {"i": "sigmoid", "f": "sigmoid", "g": "tanh", "o": "sigmoid", "c": "tanh",
                    "r": "sigmoid", "z": "sigmoid", "n": "tanh"}

_ACTIVATION_NAMES = (*ACTIVATIONS, "linear")


def check_activation(activation: str) -> str:
    if activation == "identity":
        return "linear"
    if activation not in _ACTIVATION_NAMES:
        raise ValueError(f"activation must be one of {list(_ACTIVATION_NAMES)}, got {activation!r}")
    return activation


def activation_fn(activation: str, negative_slope: float = 0.01) -> Callable[[Tensor], Tensor]:
    """The layers' own activation (``rnndrop.rnn.ACTIVATIONS``), plus ``"linear"`` and a leaky
    ReLU of any slope (torch's modules and cells may use another than the layers' 0.01)."""
    activation = check_activation(activation)
    if activation == "linear":
        return lambda z: z
    if activation == "leaky_relu" and negative_slope != 0.01:
        return lambda z: F.leaky_relu(z, negative_slope)
    return ACTIVATIONS[activation]


def activation_derivative(z: Tensor, activation: str, negative_slope: float = 0.01) -> Tensor:
    """``f'(z)`` element-wise for ``activation`` in tanh, sigmoid, relu, leaky_relu, linear
    (ReLU's derivative at 0 is taken as 0, as autograd does)."""
    activation = check_activation(activation)
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
    if getattr(module, "zoneout_hidden", 0) or getattr(module, "zoneout_cell", 0):
        # its eval() function is the zoneout expectation, not the plain cell re-run here
        raise ValueError("layers with zoneout are not supported by the gradient-flow re-run")
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
        act = check_activation(activation)
    else:
        act = getattr(module, "activation", None)
        if not isinstance(act, str):
            act = getattr(module, "nonlinearity", None)
        if not isinstance(act, str):
            act = "relu" if mode == "RNN_RELU" else "tanh"
        act = check_activation(act)
    L = 0
    while hasattr(module, f"weight_hh_l{L}"):
        L += 1
    return _Spec(kind, act, float(getattr(module, "negative_slope", 0.01)), L, H,
                 bool(getattr(module, "batch_first", False)), bool(getattr(module, "skip", False)))


def _layer_params(module, k: int):
    # getattr, not rnndrop's _layer_weights: torch.nn modules are measured too
    get = lambda n: getattr(module, f"{n}_l{k}", None)
    return get("weight_ih"), get("weight_hh"), get("bias_ih"), get("bias_hh")


def _make_step(spec: _Spec, w_ih, w_hh, b_ih, b_hh):
    """``step(x_t (B, I), state tuple) -> (new state tuple, {gate: pre-activation (B, H)})``."""
    if spec.kind == "RNN":
        act = activation_fn(spec.activation, spec.negative_slope)

        def step(x_t, state):
            z = F.linear(x_t, w_ih, b_ih) + F.linear(state[0], w_hh, b_hh)
            return (act(z),), {"h": z}
    elif spec.kind == "LSTM":
        def step(x_t, state):
            h, c = state
            gates = F.linear(x_t, w_ih, b_ih) + F.linear(h, w_hh, b_hh)
            i, f, g, o = gates.chunk(4, dim=-1)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            h = torch.sigmoid(o) * torch.tanh(c)
            return (h, c), {"i": i, "f": f, "g": g, "o": o, "c": c}
    else:
        def step(x_t, state):
            h = state[0]
            xr, xz, xn = F.linear(x_t, w_ih, b_ih).chunk(3, dim=-1)
            hr, hz, hn = F.linear(h, w_hh, b_hh).chunk(3, dim=-1)
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


