"""Recurrent layers with dropout done right: ``RNN``, ``LSTM`` and ``GRU``.

Drop-in for ``torch.nn.RNN/LSTM/GRU``: same constructor arguments, parameter names
(``weight_ih_l{k}``, ``weight_hh_l{k}``, ``bias_ih_l{k}``, ``bias_hh_l{k}``), call signature,
state shapes and return values, so ``load_state_dict`` works across the two. On top of that:

- ``dropout_input`` on the input of the first layer, ``dropout_between`` on the inputs of the
  other layers (``dropout=`` is torch's name for it), ``dropout_hidden`` on the recurrent state
  ``h_{t-1}`` that enters ``W_hh``, ``dropout_output`` on the last layer's output.
- ``variational=True`` (Gal & Ghahramani 2016): every mask is sampled once per call (per
  sequence and feature) and reused at every time step. ``variational=False`` (Zaremba et al.
  2014): fresh masks at every step, non-recurrent connections only (``dropout_hidden`` must be 0).
- ``tied=False``: untied masks, one per gate, on inputs and on ``h_{t-1}`` (the paper's untied
  variant). ``tied=True`` shares one mask between the gates.
- ``hidden_mask="batch"``: the recurrent mask is shared by the whole batch, which is the same as
  dropping columns of ``W_hh`` (DropConnect); it then runs PyTorch's fused kernel.
- ``weight_dropout``: element-wise DropConnect on ``W_hh`` (AWD-LSTM), fused kernel too.
- ``skip=True``: residual connections between layers (sum of a layer's input and output).

For a layer with recurrent mask ``m`` (fixed for the sequence), an LSTM computes::

    i, f, g, o = σ, σ, tanh, σ ( W_ih (x_t ∘ z) + b_ih + W_hh (h_{t-1} ∘ m) + b_hh )
    c_t = f ∘ c_{t-1} + i ∘ g,   h_t = o ∘ tanh(c_t)

Shapes (as torch): input ``(T, B, I)`` (``(B, T, I)`` with ``batch_first``, or unbatched
``(T, I)``), states ``(num_layers, B, H)``; output ``(T, B, H)``.

Fast paths: when no per-sample recurrent mask is needed (``dropout_hidden == 0``, or
``hidden_mask="batch"``) and the input masks are tied, each layer runs PyTorch's fused kernel
(``torch.lstm``/``torch.gru``/``torch.rnn_tanh``/``torch.rnn_relu``); otherwise the input
projection is one large matrix product and only the recurrence loops over time
(``rnndrop.fast`` when available, else the autograd reference in ``rnndrop._recurrence``).
"""
from __future__ import annotations

import math
import warnings
from typing import Optional, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import _recurrence
from ._checks import check_positive_int, check_probability
from .dropout import bernoulli_mask, weight_dropout

__all__ = ["RNN", "LSTM", "GRU", "ACTIVATIONS"]

ACTIVATIONS = {
    "tanh": torch.tanh,
    "relu": torch.relu,
    "sigmoid": torch.sigmoid,
    "leaky_relu": F.leaky_relu,  # negative slope 0.01
}

_GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}

# Each layer hands cuDNN its own weight tensors (they may be DropConnect-ed copies), so cuDNN's
# advice to flatten them into one buffer does not apply; the copy it makes is per layer and small.
warnings.filterwarnings("ignore", message="RNN module weights are not part of single contiguous")


def _fast_backend():
    try:
        from . import fast
    except ImportError:  # the optional fast backend is absent or cannot load
        return None
    return fast


class _RNNBase(nn.Module):
    mode = "RNN"

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False, *,
                 dropout_input: float = 0.0, dropout_hidden: float = 0.0,
                 dropout_output: float = 0.0, dropout_between: Optional[float] = None,
                 variational: bool = True, tied: bool = True, skip: bool = False,
                 hidden_mask: str = "sample", weight_dropout: float = 0.0,
                 activation: str = "tanh", device=None, dtype=None):
        super().__init__()
        check_positive_int(input_size, "input_size")
        check_positive_int(hidden_size, "hidden_size")
        check_positive_int(num_layers, "num_layers")
        if bidirectional:
            raise ValueError("bidirectional=True is not supported by rnndrop layers; "
                             "run two layers over the sequence and its reverse instead")
        if dropout_between is None:
            dropout_between = dropout
        elif dropout and dropout != dropout_between:
            raise ValueError("give either dropout= (torch's name) or dropout_between=, not both")
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, num_layers
        self.bias, self.batch_first, self.bidirectional = bias, batch_first, False
        self.dropout_input = check_probability(dropout_input, "dropout_input")
        self.dropout_hidden = check_probability(dropout_hidden, "dropout_hidden")
        self.dropout_output = check_probability(dropout_output, "dropout_output")
        self.dropout_between = check_probability(dropout_between, "dropout_between")
        self.weight_dropout = check_probability(weight_dropout, "weight_dropout")
        self.variational, self.tied, self.skip = bool(variational), bool(tied), bool(skip)
        if hidden_mask not in ("sample", "batch"):
            raise ValueError(f"hidden_mask must be 'sample' or 'batch', got {hidden_mask!r}")
        self.hidden_mask = hidden_mask
        if not self.variational:
            if self.dropout_hidden:
                raise ValueError("dropout_hidden needs variational=True: Zaremba-style dropout "
                                 "(variational=False) has no recurrent dropout")
            if not self.tied:
                raise ValueError("tied=False (untied gate masks) applies to variational=True only")
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
        self.activation = activation
        self.negative_slope = 0.01
        G = _GATES[self.mode]
        self._gates = G
        factory = {"device": device, "dtype": dtype}
        for k in range(num_layers):
            in_k = input_size if k == 0 else hidden_size
            self.register_parameter(f"weight_ih_l{k}", nn.Parameter(torch.empty(G * hidden_size, in_k, **factory)))
            self.register_parameter(f"weight_hh_l{k}", nn.Parameter(torch.empty(G * hidden_size, hidden_size, **factory)))
            if bias:
                self.register_parameter(f"bias_ih_l{k}", nn.Parameter(torch.empty(G * hidden_size, **factory)))
                self.register_parameter(f"bias_hh_l{k}", nn.Parameter(torch.empty(G * hidden_size, **factory)))
        self.reset_parameters()

    # ---------------------------------------------------------------------------------- setup
    def reset_parameters(self) -> None:
        """U(-1/√H, 1/√H) for every weight and bias, as ``torch.nn``."""
        stdv = 1.0 / math.sqrt(self.hidden_size)
        for w in self.parameters():
            nn.init.uniform_(w, -stdv, stdv)

    def flatten_parameters(self) -> None:
        """No-op, kept for compatibility with ``torch.nn`` code."""

    def _layer_weights(self, k: int):
        g = lambda n: getattr(self, f"{n}_l{k}") if self.bias or not n.startswith("bias") else None
        return g("weight_ih"), g("weight_hh"), g("bias_ih"), g("bias_hh")

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}, num_layers={self.num_layers}"
        if self.mode == "RNN":
            s += f", activation={self.activation!r}"
        if not self.bias:
            s += ", bias=False"
        if self.batch_first:
            s += ", batch_first=True"
        for name in ("dropout_input", "dropout_hidden", "dropout_output", "dropout_between",
                     "weight_dropout"):
            if getattr(self, name):
                s += f", {name}={getattr(self, name)}"
        s += f", variational={self.variational}"
        if not self.tied:
            s += ", tied=False"
        if self.hidden_mask != "sample":
            s += f", hidden_mask={self.hidden_mask!r}"
        if self.skip:
            s += ", skip=True"
        return s

    # -------------------------------------------------------------------------------- checks
    def _check_input(self, input: Tensor, hx):
        if not isinstance(input, Tensor):
            raise TypeError(f"{type(self).__name__} expects a Tensor input (PackedSequence is not "
                            f"supported: pad and gather at the lengths), got {type(input).__name__}")
        if input.dim() not in (2, 3):
            raise ValueError(f"{type(self).__name__}: expected input of 2 (unbatched) or 3 dims, "
                             f"got shape {tuple(input.shape)}")
        if input.shape[-1] != self.input_size:
            raise ValueError(f"input.size(-1) must be equal to input_size. Expected "
                             f"{self.input_size}, got {input.shape[-1]}")
        if not input.is_floating_point():
            raise TypeError(f"input must be a floating-point tensor, got {input.dtype}")
        w = self.weight_ih_l0
        if input.dtype != w.dtype:
            raise TypeError(f"input dtype ({input.dtype}) does not match weight dtype ({w.dtype}); "
                            f"convert the input or the model")
        if input.shape[0 if not self.batch_first or input.dim() == 2 else 1] == 0:
            raise ValueError("input has no time steps")

    def _check_state(self, h: Tensor, batch: int, name: str, unbatched: bool):
        expected = (self.num_layers, self.hidden_size) if unbatched else \
            (self.num_layers, batch, self.hidden_size)
        if tuple(h.shape) != expected:
            raise ValueError(f"expected {name} of shape {expected}, got {tuple(h.shape)}")

    # ------------------------------------------------------------------------------- forward
    def forward(self, input: Tensor, hx=None):
        """Run the stack. Returns ``(output, h_n)`` or, for LSTM, ``(output, (h_n, c_n))``."""
        self._check_input(input, hx)
        unbatched = input.dim() == 2
        x = input.unsqueeze(1) if unbatched else (input.transpose(0, 1) if self.batch_first else input)
        T, B, _ = x.shape
        L, H = self.num_layers, self.hidden_size
        is_lstm = self.mode == "LSTM"
        if hx is None:
            zeros = x.new_zeros(L, B, H)
            h0, c0 = zeros, (zeros if is_lstm else None)
        else:
            if is_lstm:
                if not (isinstance(hx, (tuple, list)) and len(hx) == 2):
                    raise TypeError("LSTM expects hx=(h_0, c_0)")
                h0, c0 = hx
                self._check_state(h0, B, "h_0", unbatched)
                self._check_state(c0, B, "c_0", unbatched)
                if unbatched:
                    h0, c0 = h0.unsqueeze(1), c0.unsqueeze(1)
            else:
                if not isinstance(hx, Tensor):
                    raise TypeError(f"{self.mode} expects hx to be a Tensor h_0")
                h0, c0 = hx, None
                self._check_state(h0, B, "h_0", unbatched)
                if unbatched:
                    h0 = h0.unsqueeze(1)

        train = self.training
        hn, cn = [], []
        for k in range(L):
            p_in = self.dropout_input if k == 0 else self.dropout_between
            layer_in = x
            out, h_k, c_k = self._run_layer(k, x, h0[k], c0[k] if is_lstm else None, p_in, train)
            if self.skip and k > 0 and layer_in.shape[-1] == H:
                out = out + layer_in
            x = out
            hn.append(h_k)
            cn.append(c_k)
        if train and self.dropout_output:
            x = x * self._input_mask(x.shape, self.dropout_output, x)
        out = x.squeeze(1) if unbatched else (x.transpose(0, 1) if self.batch_first else x)
        h_n = torch.stack(hn)
        if unbatched:
            h_n = h_n.squeeze(1)
        if is_lstm:
            c_n = torch.stack(cn)
            return out, (h_n, c_n.squeeze(1) if unbatched else c_n)
        return out, h_n

    def _input_mask(self, shape, p: float, ref: Tensor, gates: int = 1) -> Tensor:
        """Mask for a ``(T, B, F)`` sequence: variational ``(1, B, F)`` (``(G, 1, B, F)``
        untied), or Zaremba ``(T, B, F)`` fresh at every step."""
        T, B, Fdim = shape
        if self.variational:
            shp = (gates, 1, B, Fdim) if gates > 1 else (1, B, Fdim)
        else:
            shp = (T, B, Fdim)
        return bernoulli_mask(shp, p, dtype=ref.dtype, device=ref.device)

    def _run_layer(self, k: int, x: Tensor, h0: Tensor, c0: Optional[Tensor], p_in: float,
                   train: bool):
        G, H = self._gates, self.hidden_size
        w_ih, w_hh, b_ih, b_hh = self._layer_weights(k)
        drop_in = train and p_in > 0
        drop_h = train and self.dropout_hidden > 0
        untied = not self.tied and self.variational
        if train and self.weight_dropout:
            w_hh = weight_dropout(w_hh, self.weight_dropout, True, "element")
        if drop_h and self.hidden_mask == "batch":
            # A batch-shared mask on h_{t-1} is a column mask on W_hh: fused kernel still runs.
            w_hh = weight_dropout(w_hh, self.dropout_hidden, True, "column",
                                  groups=G if untied else 1)
            drop_h = False
        x_untied = drop_in and untied
        if drop_in and not untied:
            x = x * self._input_mask(x.shape, p_in, x)
        fused_ok = not drop_h and not x_untied and (self.mode != "RNN" or self.activation in ("tanh", "relu"))
        if fused_ok:
            return self._fused(x, h0, c0, w_ih, w_hh, b_ih, b_hh, train)

        # Loop path: one big input projection, then the recurrence.
        fast = _fast_backend()
        bias = None
        if b_ih is not None:
            bias = b_ih if self.mode == "GRU" else b_ih + b_hh
        if x_untied:
            m = self._input_mask(x.shape, p_in, x, gates=G)            # (G, 1, B, I)
            xg = x.unsqueeze(0) * m                                    # (G, T, B, I)
            xp = torch.einsum("gtbi,ghi->tbgh", xg, w_ih.view(G, H, -1)).reshape(x.shape[0], x.shape[1], G * H)
            if bias is not None:
                xp = xp + bias
        elif fast is not None:
            # One product with the bias fused (oneDNN forward and backward on CPU): measured
            # faster than `x @ w.t() + b` and it saves less for backward (docs/results/speed.md).
            xp = fast.linear(x, w_ih, bias)
        else:
            xp = torch.nn.functional.linear(x, w_ih, bias)
        mask_h = None
        if drop_h:
            B = x.shape[1]
            shape = (G, B, H) if untied else (B, H)
            mask_h = bernoulli_mask(shape, self.dropout_hidden, dtype=x.dtype, device=x.device)
        rec = fast if (fast is not None and mask_h is not None and fast.available(x.device)) else _recurrence
        if self.mode == "LSTM":
            out, h, c = rec.lstm_recurrence(xp, h0, c0, w_hh, mask_h)
            return out, h, c
        if self.mode == "GRU":
            out, h = rec.gru_recurrence(xp, h0, w_hh, b_hh, mask_h)
            return out, h, None
        act = ACTIVATIONS[self.activation]
        out, h = _recurrence.rnn_recurrence(xp, h0, w_hh, act, mask_h)
        return out, h, None

    def _fused(self, x, h0, c0, w_ih, w_hh, b_ih, b_hh, train):
        has_bias = b_ih is not None
        weights = [w_ih, w_hh, b_ih, b_hh] if has_bias else [w_ih, w_hh]
        args = (weights, has_bias, 1, 0.0, train, False, False)
        if self.mode == "LSTM":
            out, h, c = torch.lstm(x, (h0.unsqueeze(0), c0.unsqueeze(0)), *args)
            return out, h[0], c[0]
        fn = {"GRU": torch.gru, "tanh": torch.rnn_tanh, "relu": torch.rnn_relu}[
            "GRU" if self.mode == "GRU" else self.activation]
        out, h = fn(x, h0.unsqueeze(0), *args)
        return out, h[0], None

    @classmethod
    def from_torch(cls, module: nn.RNNBase, **dropout_options):
        """Build an rnndrop layer with the weights of a ``torch.nn`` one (copied)."""
        if type(module).__name__ != cls.mode and not (cls.mode == "RNN" and isinstance(module, nn.RNN)):
            raise TypeError(f"{cls.__name__}.from_torch expects nn.{cls.mode}, got {type(module).__name__}")
        if module.bidirectional or getattr(module, "proj_size", 0):
            raise ValueError("bidirectional and projected torch RNNs are not supported")
        kwargs = dict(num_layers=module.num_layers, bias=module.bias, batch_first=module.batch_first,
                      device=module.weight_ih_l0.device, dtype=module.weight_ih_l0.dtype)
        if isinstance(module, nn.RNN) and cls.mode == "RNN":
            kwargs["activation"] = module.nonlinearity
        new = cls(module.input_size, module.hidden_size, **kwargs, **dropout_options)
        new.load_state_dict(module.state_dict())
        return new


class RNN(_RNNBase):
    """Elman RNN, ``h_t = act(W_ih (x_t ∘ z) + b_ih + W_hh (h_{t-1} ∘ m) + b_hh)``.

    ``activation`` is one of ``"tanh"`` (default), ``"relu"``, ``"sigmoid"``, ``"leaky_relu"``
    (slope 0.01); torch's ``nonlinearity=`` is accepted as an alias. tanh and ReLU without a
    per-sample recurrent mask run the fused kernel; sigmoid and leaky ReLU always loop.
    """
    mode = "RNN"

    def __init__(self, *args, activation: Optional[str] = None, nonlinearity: Optional[str] = None,
                 **kwargs):
        if activation is not None and nonlinearity is not None and activation != nonlinearity:
            raise ValueError("give either activation= or nonlinearity= (its alias), not both")
        super().__init__(*args, activation=activation or nonlinearity or "tanh", **kwargs)

    @property
    def nonlinearity(self) -> str:
        return self.activation


class LSTM(_RNNBase):
    """LSTM with variational / Zaremba dropout. Returns ``(output, (h_n, c_n))``."""
    mode = "LSTM"

    def __init__(self, *args, **kwargs):
        if "activation" in kwargs or "nonlinearity" in kwargs:
            raise ValueError("LSTM has fixed activations; activation= is for RNN only")
        super().__init__(*args, **kwargs)


class GRU(_RNNBase):
    """GRU with variational / Zaremba dropout (``torch.nn.GRU`` equations; the recurrent mask
    applies to ``h_{t-1}`` inside the ``W_hh`` products, not to the carried ``z ∘ h_{t-1}``)."""
    mode = "GRU"

    def __init__(self, *args, **kwargs):
        if "activation" in kwargs or "nonlinearity" in kwargs:
            raise ValueError("GRU has fixed activations; activation= is for RNN only")
        super().__init__(*args, **kwargs)
