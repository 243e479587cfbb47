"""Recurrent layers with dropout done right: ``RNN``, ``LSTM`` and ``GRU``.

Drop-in for ``torch.nn.RNN/LSTM/GRU`` (same constructor arguments, parameter names, call
signature, states and return values, so ``load_state_dict`` works across the two), with
dropout on the inputs, between layers, on the recurrent state and on the output: variational
or Zaremba-style, tied or untied per gate, per-sample or batch-shared (DropConnect) recurrent
masks, weight dropout and residual connections. The class docstrings (``help(rnndrop.LSTM)``)
give the equations, every argument with the mask it draws, and the shapes.

This module only composes: a layer runs PyTorch's fused kernel when no per-sample recurrent
mask and no untied input mask is needed; otherwise it builds the input projection
(``fast.linear``/``fast.untied_linear``) and runs the recurrence that ``fast.select`` picks.
"""
from __future__ import annotations

import math
import textwrap
import warnings
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import fast
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
    def _check_input(self, input: Tensor):
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
        self._check_input(input)
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

        # Loop path: one big input projection, then the recurrence that fast.select picks.
        bias = None
        if b_ih is not None:
            bias = b_ih if self.mode == "GRU" else b_ih + b_hh
        if x_untied:
            xp = fast.untied_linear(x, self._input_mask(x.shape, p_in, x, gates=G), w_ih, bias)
        else:
            # One product with the bias fused (oneDNN forward and backward on CPU): measured
            # faster than `x @ w.t() + b` and it saves less for backward (docs/results/speed.md).
            xp = fast.linear(x, w_ih, bias)
        mask_h = None
        if drop_h:  # drawn after the input masks: the seeded draw order is part of the behaviour
            B = x.shape[1]
            shape = (G, B, H) if untied else (B, H)
            mask_h = bernoulli_mask(shape, self.dropout_hidden, dtype=x.dtype, device=x.device)
        if self.mode == "LSTM":
            args = (xp, h0, c0, w_hh, mask_h)
        elif self.mode == "GRU":
            args = (xp, h0, w_hh, b_hh, mask_h)
        else:
            args = (xp, h0, w_hh, ACTIVATIONS[self.activation], mask_h)
        out, h, *c = fast.select(self.mode, *args)(*args)
        return out, h, (c[0] if c else None)

    def _fused(self, x, h0, c0, w_ih, w_hh, b_ih, b_hh, train):
        has_bias = b_ih is not None
        weights = [w_ih, w_hh, b_ih, b_hh] if has_bias else [w_ih, w_hh]
        args = (weights, has_bias, 1, 0.0, train, False, False)
        with warnings.catch_warnings():
            # Each layer hands cuDNN its own weight tensors (they may be DropConnect-ed copies),
            # so cuDNN's advice to flatten them into one buffer does not apply; the copy it makes
            # is per layer and small. Silenced here only: the user's own nn.LSTM still warns.
            warnings.filterwarnings("ignore",
                                    message="RNN module weights are not part of single contiguous")
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


# ------------------------------------------------------------------------------ docstrings
# RNN, LSTM and GRU take the same constructor arguments: the parts of their docstrings that they
# share are written once here and joined to each class's own (equations, states, example) by
# ``_doc``, so that ``help(rnndrop.LSTM)`` shows the whole of it.

_MASKS_DOC = """
All masks are inverted dropout: each entry is ``1/(1-p)`` with probability ``1-p`` and 0
otherwise (so a mask's mean is 1). They are drawn at each call in training mode only; in
``eval()`` every mask is 1 and the layer computes exactly the ``torch.nn`` function. Shapes
below: ``T`` steps, ``B`` sequences, ``I`` = ``input_size``, ``H`` = ``hidden_size``, ``G``
gates ({gates}).

Which code runs: with no per-sample recurrent mask (``dropout_hidden=0``, or
``hidden_mask="batch"``) and tied input masks, each layer runs PyTorch's fused kernel (cuDNN on
GPU); otherwise the input projection is one product for the whole sequence and the recurrence
loops over time (``rnndrop.fast``: fused C kernels on CPU, Triton on CUDA for the LSTM).
"""

_ARGS_DOC = """
Args:
    input_size: the number of features ``I`` of the input ``x``.
    hidden_size: the number of features ``H`` of the hidden state ``h``.
    num_layers: number of stacked layers; layer ``k >= 1`` takes the output of layer ``k-1``
        as its input. Default: 1
    bias: if ``False``, the layers have no ``b_ih`` and ``b_hh``. Default: ``True``
    batch_first: if ``True``, ``input`` and ``output`` are ``(B, T, feature)`` instead of
        ``(T, B, feature)``; the states keep their shapes. Default: ``False``
    dropout: torch's name for ``dropout_between`` (give one of the two). Default: 0
    bidirectional: ``True`` raises ``ValueError`` (not supported: run a second layer over the
        reversed sequence). Default: ``False``
    dropout_input: drop probability of the mask ``δ`` on the input of the first layer: every
        gate's ``W_i·`` multiplies ``x_t ∘ δ``, with ``δ`` of shape ``(1, B, I)`` (variational:
        one mask per sequence, the same at every step), ``(T, B, I)`` (``variational=False``:
        fresh at every step) or ``(G, 1, B, I)`` (``tied=False``: gate ``g`` sees
        ``x_t ∘ δ_g``). Default: 0
    dropout_between: the same on the input of each layer ``k >= 1``, which is the output
        ``h_t`` of layer ``k-1`` (masks ``(1, B, H)``, ``(T, B, H)`` or ``(G, 1, B, H)``).
        Default: ``dropout``
    dropout_hidden: drop probability of the recurrent mask ``m`` on ``h_{t-1}`` where it
        enters ``W_hh``: ``W_h· (h_{t-1} ∘ m)``, with ``m`` of shape ``(B, H)`` drawn once per
        sequence and reused at every step (``(G, B, H)``, one per gate, with ``tied=False``;
        one ``(H,)`` mask for the whole batch with ``hidden_mask="batch"``). Needs
        ``variational=True``. Default: 0
    dropout_output: drop probability of the mask on the output of the last layer (the
        returned ``output``, not ``h_n``): ``(1, B, H)`` variational, ``(T, B, H)`` with
        ``variational=False`` (never untied: the output feeds no gates). Default: 0
    variational: ``True`` (Gal & Ghahramani, 2016): every mask is sampled once per call for
        each sequence and feature and reused at every time step. ``False`` (Zaremba et al.,
        2014): the input, between and output masks are fresh at every step, and there is no
        recurrent dropout (``dropout_hidden`` must be 0 and ``tied`` True). Default: ``True``
    tied: ``True``: the gates share one input mask and one recurrent mask. ``False`` (untied,
        ``variational=True`` only): one mask per gate, ``δ_g`` for ``dropout_input`` and
        ``dropout_between`` (``(G, 1, B, F)``), ``m_g`` for ``dropout_hidden``
        (``(G, B, H)``). Default: ``True``
    hidden_mask: ``"sample"``: each sequence gets its own recurrent mask, ``m`` is ``(B, H)``.
        ``"batch"``: one mask ``m`` of shape ``(H,)`` for the whole batch, which is column
        DropConnect on ``W_hh``: ``W_hh (h ∘ m) = (W_hh diag(m)) h``, column ``j`` of ``W_hh``
        scaled by ``m_j`` (one column mask per gate block of ``W_hh`` when untied); the fused
        kernel then still runs. Default: ``"sample"``
    weight_dropout: drop probability of element-wise DropConnect on ``W_hh`` (AWD-LSTM,
        Merity et al., 2018): the layer uses ``W_hh ∘ M``, ``M`` of shape ``(G*H, H)`` drawn
        per call, the same for all steps and sequences; the fused kernel still runs. Default: 0
    skip: if ``True``, residual connections: the output of each layer ``k >= 1`` is its
        ``h_t`` plus its input ``x_t`` (before that layer's input dropout). Default: ``False``
{extra}    device: device of the parameters. Default: torch's default device
    dtype: dtype of the parameters (the input must have the same). Default: torch's default
"""

_IO_DOC = """
Inputs: input, {state_in}
    * **input**: ``(T, I)`` unbatched, else ``(T, B, I)``, or ``(B, T, I)`` with
      ``batch_first=True``: the input sequence (a ``PackedSequence`` is not supported: pad,
      and gather the outputs at the lengths).
    * **h_0**: ``(num_layers, H)`` unbatched, else ``(num_layers, B, H)``: the initial hidden
      state of each layer. Default: zeros{cell_in}

Outputs: output, {state_out}
    * **output**: ``(T, H)`` unbatched, else ``(T, B, H)``, or ``(B, T, H)`` with
      ``batch_first=True``: ``h_t`` of the last layer at every step (times the output mask
      with ``dropout_output``; plus the layer's input with ``skip``).
    * **h_n**: ``(num_layers, H)`` unbatched, else ``(num_layers, B, H)``: the final hidden
      state of each layer.{cell_out}
"""

_ATTRIBUTES_DOC = """
Attributes:
    weight_ih_l[k]: the input-hidden weights of layer ``k``{ih}:
        ``({G}hidden_size, input_size)`` for ``k = 0``, ``({G}hidden_size, hidden_size)`` after.
    weight_hh_l[k]: the hidden-hidden weights of layer ``k``{hh}:
        ``({G}hidden_size, hidden_size)``.
    bias_ih_l[k]: the input-hidden bias of layer ``k``{bih}: ``({G}hidden_size)``.
    bias_hh_l[k]: the hidden-hidden bias of layer ``k``{bhh}: ``({G}hidden_size)``.

    All are initialised from ``U(-1/√H, 1/√H)``; names, shapes and gate order are those of
    ``torch.nn``, so state dicts load both ways (and see ``from_torch``).
"""


def _fill(text: str, **values: str) -> str:
    """``str.format`` for texts that also hold braces of their own (``h_{t-1}``)."""
    for name, value in values.items():
        text = text.replace("{" + name + "}", value)
    return text


def _doc(head: str, gates: str, blocks: Optional[str], extra_args: str = "",
         lstm_states: bool = False, examples: str = "") -> str:
    """A class docstring: its own ``head`` (summary, equations), the shared sections, then its
    ``examples``. ``blocks`` names the gate blocks of the weights, e.g. ``"i|f|g|o"``."""
    parts = blocks.split("|") if blocks else []
    stack = (lambda p: ", ``" + "|".join(f"{p}{g}" for g in parts) + "``") if parts else (lambda p: "")
    cell_in = cell_out = ""
    if lstm_states:
        cell_in = ("\n    * **c_0**: the shape of ``h_0``: the initial cell state of each layer. "
                   "Default: zeros\n      (give both states or neither).")
        cell_out = "\n    * **c_n**: the shape of ``h_n``: the final cell state of each layer."
    return "\n\n".join(part.strip("\n") for part in [
        textwrap.dedent(head),
        _fill(_MASKS_DOC, gates=gates),
        _fill(_ARGS_DOC, extra=textwrap.indent(textwrap.dedent(extra_args).lstrip("\n"), "    ")),
        _fill(_IO_DOC, state_in="(h_0, c_0)" if lstm_states else "h_0",
              state_out="(h_n, c_n)" if lstm_states else "h_n", cell_in=cell_in,
              cell_out=cell_out),
        _fill(_ATTRIBUTES_DOC, G=f"{len(parts)}*" if parts else "", ih=stack("W_i"),
              hh=stack("W_h"), bih=stack("b_i"), bhh=stack("b_h")),
        "Examples::\n" + textwrap.indent(textwrap.dedent(examples), "    "),
    ]) + "\n"


class RNN(_RNNBase):
    __doc__ = _doc("""
        Multi-layer Elman RNN with dropout (drop-in for ``torch.nn.RNN``).

        For each step ``t``, each layer computes::

            h_t = act(W_ih (x_t ∘ δ) + b_ih + W_hh (h_{t-1} ∘ m) + b_hh)

        where ``x_t`` is the layer's input at step ``t`` (the output of the layer below for
        layers ``k >= 1``), ``h_{t-1}`` its hidden state (``h_0`` at the first step), ``act``
        the ``activation``, ``δ`` the input mask (``dropout_input``, ``dropout_between``),
        ``m`` the recurrent mask (``dropout_hidden``) and ``∘`` the element-wise product.
        With one gate, tied and untied masks are the same thing.
        """, gates="1", blocks=None, extra_args="""
        activation: ``"tanh"``, ``"relu"``, ``"sigmoid"`` or ``"leaky_relu"`` (slope 0.01).
            tanh and ReLU run the fused kernel when no loop is needed; sigmoid and leaky ReLU
            always loop. Default: ``"tanh"``
        nonlinearity: torch's name for ``activation`` (give one of the two).
        """, examples="""
        >>> rnn = rnndrop.RNN(10, 20, num_layers=2, dropout_input=0.2, dropout_hidden=0.3)
        >>> x = torch.randn(5, 3, 10)
        >>> output, h_n = rnn(x, torch.zeros(2, 3, 20))
        >>> output.shape, h_n.shape
        (torch.Size([5, 3, 20]), torch.Size([2, 3, 20]))
        """)
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
    __doc__ = _doc("""
        Multi-layer LSTM with dropout (drop-in for ``torch.nn.LSTM``).

        For each step ``t``, each layer computes::

            i_t = σ(W_ii (x_t ∘ δ_i) + b_ii + W_hi (h_{t-1} ∘ m_i) + b_hi)
            f_t = σ(W_if (x_t ∘ δ_f) + b_if + W_hf (h_{t-1} ∘ m_f) + b_hf)
            g_t = tanh(W_ig (x_t ∘ δ_g) + b_ig + W_hg (h_{t-1} ∘ m_g) + b_hg)
            o_t = σ(W_io (x_t ∘ δ_o) + b_io + W_ho (h_{t-1} ∘ m_o) + b_ho)
            c_t = f_t ∘ c_{t-1} + i_t ∘ g_t
            h_t = o_t ∘ tanh(c_t)

        where ``x_t`` is the layer's input at step ``t`` (the output of the layer below for
        layers ``k >= 1``), ``h_{t-1}``, ``c_{t-1}`` its states (``h_0``, ``c_0`` at the first
        step), ``σ`` the sigmoid and ``∘`` the element-wise product. ``δ_·`` are the input
        masks (``dropout_input``, ``dropout_between``), ``m_·`` the recurrent masks
        (``dropout_hidden``); tied (the default), ``δ_i = δ_f = δ_g = δ_o`` and
        ``m_i = m_f = m_g = m_o``. The cell state ``c`` is never masked.
        """, gates="4: i, f, g, o", blocks="i|f|g|o", lstm_states=True, examples="""
        >>> lstm = rnndrop.LSTM(10, 20, num_layers=2, dropout_input=0.2, dropout_hidden=0.3,
        ...                     dropout_between=0.2, dropout_output=0.2)
        >>> x = torch.randn(5, 3, 10)
        >>> h_0, c_0 = torch.zeros(2, 3, 20), torch.zeros(2, 3, 20)
        >>> output, (h_n, c_n) = lstm(x, (h_0, c_0))
        >>> output.shape, h_n.shape, c_n.shape
        (torch.Size([5, 3, 20]), torch.Size([2, 3, 20]), torch.Size([2, 3, 20]))
        >>> untied = rnndrop.LSTM(10, 20, batch_first=True, dropout_input=0.3, tied=False)
        >>> untied(torch.randn(3, 5, 10))[0].shape
        torch.Size([3, 5, 20])
        """)
    mode = "LSTM"

    def __init__(self, *args, **kwargs):
        if "activation" in kwargs or "nonlinearity" in kwargs:
            raise ValueError("LSTM has fixed activations; activation= is for RNN only")
        super().__init__(*args, **kwargs)


class GRU(_RNNBase):
    __doc__ = _doc("""
        Multi-layer GRU with dropout (drop-in for ``torch.nn.GRU``).

        For each step ``t``, each layer computes::

            r_t = σ(W_ir (x_t ∘ δ_r) + b_ir + W_hr (h_{t-1} ∘ m_r) + b_hr)
            z_t = σ(W_iz (x_t ∘ δ_z) + b_iz + W_hz (h_{t-1} ∘ m_z) + b_hz)
            n_t = tanh(W_in (x_t ∘ δ_n) + b_in + r_t ∘ (W_hn (h_{t-1} ∘ m_n) + b_hn))
            h_t = (1 - z_t) ∘ n_t + z_t ∘ h_{t-1}

        where ``x_t`` is the layer's input at step ``t`` (the output of the layer below for
        layers ``k >= 1``), ``h_{t-1}`` its hidden state (``h_0`` at the first step), ``σ`` the
        sigmoid and ``∘`` the element-wise product. ``δ_·`` are the input masks
        (``dropout_input``, ``dropout_between``), ``m_·`` the recurrent masks
        (``dropout_hidden``); tied (the default), ``δ_r = δ_z = δ_n`` and ``m_r = m_z = m_n``.
        The recurrent mask applies inside the ``W_hh`` products only, not to the carried
        ``z_t ∘ h_{t-1}``.
        """, gates="3: r, z, n", blocks="r|z|n", examples="""
        >>> gru = rnndrop.GRU(10, 20, num_layers=2, dropout=0.2, dropout_hidden=0.3)
        >>> x = torch.randn(5, 3, 10)
        >>> output, h_n = gru(x)
        >>> output.shape, h_n.shape
        (torch.Size([5, 3, 20]), torch.Size([2, 3, 20]))
        >>> gru(torch.randn(5, 10))[0].shape  # unbatched
        torch.Size([5, 20])
        """)
    mode = "GRU"

    def __init__(self, *args, **kwargs):
        if "activation" in kwargs or "nonlinearity" in kwargs:
            raise ValueError("GRU has fixed activations; activation= is for RNN only")
        super().__init__(*args, **kwargs)
