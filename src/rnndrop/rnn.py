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

import contextlib
import math
import textwrap
import warnings
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from . import _varlen, fast
from ._checks import check_positive_int, check_probability
from .dropout import (LockedConcreteDropout, bernoulli_mask, concrete_mask, concrete_regularizer,
                      weight_dropout)

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
                 zoneout: Optional[float] = None, zoneout_hidden: Optional[float] = None,
                 zoneout_cell: float = 0.0, zoneout_variational: bool = False,
                 learn_dropout: bool = False, activation: str = "tanh", device=None, dtype=None):
        super().__init__()
        check_positive_int(input_size, "input_size")
        check_positive_int(hidden_size, "hidden_size")
        check_positive_int(num_layers, "num_layers")
        if dropout_between is None:
            dropout_between = dropout
        elif dropout and dropout != dropout_between:
            raise ValueError("give either dropout= (torch's name) or dropout_between=, not both")
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, num_layers
        self.bias, self.batch_first, self.bidirectional = bias, batch_first, bool(bidirectional)
        self.dropout_input = check_probability(dropout_input, "dropout_input")
        self.dropout_hidden = check_probability(dropout_hidden, "dropout_hidden")
        self.dropout_output = check_probability(dropout_output, "dropout_output")
        self.dropout_between = check_probability(dropout_between, "dropout_between")
        self.weight_dropout = check_probability(weight_dropout, "weight_dropout")
        if zoneout is not None and zoneout_hidden is not None and zoneout != zoneout_hidden:
            raise ValueError("give either zoneout= or zoneout_hidden= (its LSTM name), not both")
        if zoneout_hidden is None:
            self.zoneout_hidden = check_probability(zoneout or 0.0, "zoneout", allow_one=True)
        else:
            self.zoneout_hidden = check_probability(zoneout_hidden, "zoneout_hidden", allow_one=True)
        self.zoneout_cell = check_probability(zoneout_cell, "zoneout_cell", allow_one=True)
        if self.zoneout_cell and self.mode != "LSTM":
            raise ValueError(f"zoneout_cell is for the LSTM only ({self.mode} has no cell state); "
                             f"use zoneout=")
        self.zoneout_variational = bool(zoneout_variational)
        self.variational, self.tied, self.skip = bool(variational), bool(tied), bool(skip)
        if hidden_mask not in ("sample", "batch"):
            raise ValueError(f"hidden_mask must be 'sample' or 'batch', got {hidden_mask!r}")
        self.hidden_mask = hidden_mask
        self.learn_dropout = bool(learn_dropout)
        if self.learn_dropout and (not self.variational or not self.tied
                                   or hidden_mask != "sample"):
            raise ValueError("learn_dropout needs variational=True, tied=True and "
                             "hidden_mask='sample' (one learned rate per mask site)")
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
        D = self.num_directions
        # torch.nn's names and order: per layer, the forward direction, then "_reverse".
        for k in range(num_layers):
            in_k = input_size if k == 0 else hidden_size * D
            for sfx in self._suffixes:
                self.register_parameter(f"weight_ih_l{k}{sfx}", nn.Parameter(torch.empty(G * hidden_size, in_k, **factory)))
                self.register_parameter(f"weight_hh_l{k}{sfx}", nn.Parameter(torch.empty(G * hidden_size, hidden_size, **factory)))
                if bias:
                    self.register_parameter(f"bias_ih_l{k}{sfx}", nn.Parameter(torch.empty(G * hidden_size, **factory)))
                    self.register_parameter(f"bias_hh_l{k}{sfx}", nn.Parameter(torch.empty(G * hidden_size, **factory)))
        if self.learn_dropout:
            # One learned (Concrete) rate per mask site and layer, started at the given rate;
            # a site given 0 has no dropout and nothing to learn. Only then do these modules
            # exist, so the state dict of a layer without learn_dropout is torch.nn's.
            site = lambda p: LockedConcreteDropout(p) if p > 0 else None
            self.concrete_input = site(self.dropout_input)
            self.concrete_between = nn.ModuleList(
                [site(self.dropout_between) for _ in range(num_layers - 1)]
                if self.dropout_between > 0 else [])
            self.concrete_hidden = nn.ModuleList(
                [site(self.dropout_hidden) for _ in range(num_layers)]
                if self.dropout_hidden > 0 else [])
            self.concrete_output = site(self.dropout_output)
            if device is not None or dtype is not None:
                for m in self._concrete_sites().values():
                    m.to(device=device, dtype=dtype)
        self.reset_parameters()

    @property
    def num_directions(self) -> int:
        return 2 if self.bidirectional else 1

    @property
    def _suffixes(self) -> tuple:
        return ("", "_reverse") if self.bidirectional else ("",)

    # ---------------------------------------------------------------------------------- setup
    def reset_parameters(self) -> None:
        """U(-1/√H, 1/√H) for every weight and bias, as ``torch.nn``."""
        stdv = 1.0 / math.sqrt(self.hidden_size)
        for name, w in self.named_parameters():
            if not name.startswith("concrete_"):     # learned dropout rates keep their start
                nn.init.uniform_(w, -stdv, stdv)

    # ------------------------------------------------------------------- learned dropout
    def _concrete_sites(self) -> dict:
        """``{site name: LockedConcreteDropout}`` of the learned rates (``learn_dropout``):
        ``input``, ``between_l{k}`` (k >= 1), ``hidden_l{k}``, ``output``."""
        if not self.learn_dropout:
            return {}
        sites = {}
        if self.concrete_input is not None:
            sites["input"] = self.concrete_input
        for k, m in enumerate(self.concrete_between, start=1):
            sites[f"between_l{k}"] = m
        for k, m in enumerate(self.concrete_hidden):
            sites[f"hidden_l{k}"] = m
        if self.concrete_output is not None:
            sites["output"] = self.concrete_output
        return sites

    def dropout_rates(self) -> dict:
        """The current learned drop probabilities, ``{site: p}`` (empty without
        ``learn_dropout``); sites as :meth:`_concrete_sites`."""
        return {name: m.p for name, m in self._concrete_sites().items()}

    def regularizer(self, weight_regularizer: float, dropout_regularizer: float,
                    output_weight: Optional[Tensor] = None) -> Tensor:
        """Concrete dropout's regulariser (``rnndrop.dropout.concrete_regularizer``) summed over
        the learned sites, each with the weights its mask multiplies: ``input`` → ``W_ih`` of
        layer 0 (``K = I``), ``between_l{k}`` → ``W_ih`` of layer k (``K = D·H``),
        ``hidden_l{k}`` → ``W_hh`` of layer k (``K = H``), ``output`` → ``output_weight``
        (the next layer's, e.g. the decoder's; the entropy term only without it, ``K = D·H``).
        Both directions' weights count. A scalar tensor (0 without ``learn_dropout``)."""
        w = self.weight_ih_l0
        total = w.new_zeros(())
        D, H = self.num_directions, self.hidden_size
        for name, m in self._concrete_sites().items():
            if name == "output":
                weights, K = ([output_weight] if output_weight is not None else []), D * H
            else:
                kind, k = ("ih", 0) if name == "input" else (
                    "ih" if name.startswith("between") else "hh", int(name.rsplit("l", 1)[1]))
                weights = [getattr(self, f"weight_{kind}_l{k}{sfx}") for sfx in self._suffixes]
                K = weights[0].shape[1]
            total = total + concrete_regularizer(m.p_logit, weights, K, weight_regularizer,
                                                 dropout_regularizer)
        return total

    def flatten_parameters(self) -> None:
        """No-op, kept for compatibility with ``torch.nn`` code."""

    def _layer_weights(self, k: int, suffix: str = ""):
        g = lambda n: getattr(self, f"{n}_l{k}{suffix}") if self.bias or not n.startswith("bias") else None
        return g("weight_ih"), g("weight_hh"), g("bias_ih"), g("bias_hh")

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}, num_layers={self.num_layers}"
        if self.mode == "RNN":
            s += f", activation={self.activation!r}"
        if not self.bias:
            s += ", bias=False"
        if self.batch_first:
            s += ", batch_first=True"
        if self.bidirectional:
            s += ", bidirectional=True"
        for name in ("dropout_input", "dropout_hidden", "dropout_output", "dropout_between",
                     "weight_dropout", "zoneout_hidden", "zoneout_cell"):
            if getattr(self, name):
                s += f", {name}={getattr(self, name)}"
        s += f", variational={self.variational}"
        if not self.tied:
            s += ", tied=False"
        if self.hidden_mask != "sample":
            s += f", hidden_mask={self.hidden_mask!r}"
        if self.skip:
            s += ", skip=True"
        if self.zoneout_variational:
            s += ", zoneout_variational=True"
        if self.learn_dropout:
            s += ", learn_dropout=True"
        return s

    @property
    def zoneout(self) -> float:
        """The hidden-state zoneout probability (``zoneout_hidden``, the LSTM's name for it)."""
        return self.zoneout_hidden

    # -------------------------------------------------------------------------------- checks
    def _check_input(self, input: Tensor, autocast: bool):
        if not isinstance(input, Tensor):
            raise TypeError(f"{type(self).__name__} expects a Tensor or a PackedSequence input, "
                            f"got {type(input).__name__}")
        if input.dim() not in (2, 3):
            raise ValueError(f"{type(self).__name__}: expected input of 2 (unbatched) or 3 dims, "
                             f"got shape {tuple(input.shape)}")
        if input.shape[-1] != self.input_size:
            raise ValueError(f"input.size(-1) must be equal to input_size. Expected "
                             f"{self.input_size}, got {input.shape[-1]}")
        if not input.is_floating_point():
            raise TypeError(f"input must be a floating-point tensor, got {input.dtype}")
        w = self.weight_ih_l0
        if input.dtype != w.dtype and not autocast:
            raise TypeError(f"input dtype ({input.dtype}) does not match weight dtype ({w.dtype}); "
                            f"convert the input or the model")
        if input.shape[0 if not self.batch_first or input.dim() == 2 else 1] == 0:
            raise ValueError("input has no time steps")

    def _check_state(self, h: Tensor, batch: int, name: str, unbatched: bool):
        L = self.num_layers * self.num_directions
        expected = (L, self.hidden_size) if unbatched else (L, batch, self.hidden_size)
        if tuple(h.shape) != expected:
            raise ValueError(f"expected {name} of shape {expected}, got {tuple(h.shape)}")

    # ------------------------------------------------------------------------------- forward
    def forward(self, input, hx=None, lengths=None):
        """Run the stack. Returns ``(output, h_n)`` or, for LSTM, ``(output, (h_n, c_n))``.

        ``input``: a tensor (see the class docstring) or a ``PackedSequence`` (then ``output``
        is one too, with the same order). ``lengths``: for a padded tensor input, the number
        of real steps of each sequence (``(B,)``, in ``[1, T]``): the same as packing it
        (nothing runs past a sequence's end, ``h_n`` is the state at its last real step, the
        reverse direction starts there) with a padded output, zero after each end.
        """
        packed = isinstance(input, PackedSequence)
        dev = (input.data if packed else input).device.type
        autocast = torch.is_autocast_enabled(dev)
        L_info = None
        if packed:
            if lengths is not None:
                raise ValueError("lengths= is for padded tensors; a PackedSequence has its own")
            self._check_input(input.data, autocast)
            x, L_info = _varlen.from_packed(input)               # (T, B, I), the batch's order
            unbatched = False
        else:
            self._check_input(input, autocast)
            unbatched = input.dim() == 2
            x = input.unsqueeze(1) if unbatched else (input.transpose(0, 1) if self.batch_first else input)
            if lengths is not None:
                if unbatched:
                    raise ValueError("lengths= needs a batched input")
                L_info = _varlen.from_lengths(lengths, x.shape[0], x.shape[1])
                if bool((L_info.lengths == x.shape[0]).all()):
                    L_info = None                                  # nothing to skip
        T, B, _ = x.shape
        h0, c0 = self._initial_state(hx, x, B, unbatched)
        if L_info is not None:
            # The whole stack runs in decreasing-length order, where the sequences still running
            # at any step are a prefix of the batch; back to the batch's order at the end.
            order = L_info.sorted_indices.to(x.device)
            x, h0 = x.index_select(1, order), h0.index_select(1, order)
            c0 = c0.index_select(1, order) if c0 is not None else None
            L_run = L_info.in_sorted_order()
        else:
            L_run = None
        if autocast:
            out_dtype = _autocast_probe(self, dev, packed or L_info is not None)[0]

        train = self.training
        hn, cn = [], []
        for k in range(self.num_layers):
            p_in = self.dropout_input if k == 0 else self.dropout_between
            layer_in = x
            out, states = self._run_layer(k, x, h0, c0, p_in, train, L_run, autocast)
            if self.skip and k > 0 and layer_in.shape[-1] == out.shape[-1]:
                out = out + layer_in.to(out.dtype)
            x = out
            for h_k, c_k in states:
                hn.append(h_k)
                cn.append(c_k)
        if train and self.dropout_output:
            if self.learn_dropout:
                T_, B_, F_ = x.shape
                x = x * concrete_mask((1, B_, F_), self.concrete_output.p_logit, dtype=x.dtype,
                                      device=x.device)
            else:
                x = x * self._input_mask(x.shape, self.dropout_output, x)
        h_n = torch.stack(hn)
        c_n = torch.stack(cn) if self.mode == "LSTM" else None
        if L_info is not None:
            back = L_info.unsorted_indices.to(x.device)
            x, h_n = x.index_select(1, back), h_n.index_select(1, back)
            c_n = c_n.index_select(1, back) if c_n is not None else None
        if autocast:
            x, h_n = x.to(out_dtype), h_n.to(out_dtype)
            c_n = c_n.to(out_dtype) if c_n is not None else None
        if packed:
            out = _varlen.to_packed(x, L_info, input)
        else:
            out = x.squeeze(1) if unbatched else (x.transpose(0, 1) if self.batch_first else x)
        if unbatched:
            h_n = h_n.squeeze(1)
            c_n = c_n.squeeze(1) if c_n is not None else None
        return (out, (h_n, c_n)) if self.mode == "LSTM" else (out, h_n)

    def _initial_state(self, hx, x: Tensor, B: int, unbatched: bool):
        """``(h0, c0)``, each ``(num_layers·D, B, H)`` (c0 None but for the LSTM)."""
        is_lstm = self.mode == "LSTM"
        if hx is None:
            w = self.weight_hh_l0
            zeros = torch.zeros(self.num_layers * self.num_directions, B, self.hidden_size,
                                dtype=w.dtype, device=x.device)
            return zeros, (zeros if is_lstm else None)
        if is_lstm:
            if not (isinstance(hx, (tuple, list)) and len(hx) == 2):
                raise TypeError("LSTM expects hx=(h_0, c_0)")
            h0, c0 = hx
            self._check_state(h0, B, "h_0", unbatched)
            self._check_state(c0, B, "c_0", unbatched)
            return (h0.unsqueeze(1), c0.unsqueeze(1)) if unbatched else (h0, c0)
        if not isinstance(hx, Tensor):
            raise TypeError(f"{self.mode} expects hx to be a Tensor h_0")
        self._check_state(hx, B, "h_0", unbatched)
        return (hx.unsqueeze(1) if unbatched else hx), None

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
                   train: bool, L: Optional[_varlen.Lengths], autocast: bool):
        """Layer ``k``, every direction: ``(output (T, B, D·H), [(h_n, c_n) per direction])``.
        Each direction draws its own masks (input, then recurrent), forward direction first."""
        outs, states = [], []
        for d, sfx in enumerate(self._suffixes):
            j = k * self.num_directions + d
            xd = x
            if d == 1:   # the reverse direction reads each sequence from its last real token
                xd = x.flip(0) if L is None else _varlen.reverse_within(x, L)
            out, h, c = self._run_direction(k, sfx, xd, h0[j], c0[j] if c0 is not None else None,
                                            p_in, train, L, autocast)
            if d == 1:
                out = out.flip(0) if L is None else _varlen.reverse_within(out, L)
            outs.append(out)
            states.append((h, c))
        return (outs[0] if len(outs) == 1 else torch.cat(outs, -1)), states

    def _run_direction(self, k: int, sfx: str, x: Tensor, h0: Tensor, c0: Optional[Tensor],
                       p_in: float, train: bool, L: Optional[_varlen.Lengths], autocast: bool):
        G, H = self._gates, self.hidden_size
        w_ih, w_hh, b_ih, b_hh = self._layer_weights(k, sfx)
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
        if drop_in and self.learn_dropout:
            site = self.concrete_input if k == 0 else self.concrete_between[k - 1]
            x = x * concrete_mask((1,) + tuple(x.shape[1:]), site.p_logit, dtype=x.dtype,
                                  device=x.device)
        elif drop_in and not untied:
            x = x * self._input_mask(x.shape, p_in, x)
        zoned = self.zoneout_hidden > 0 or self.zoneout_cell > 0
        fused_ok = (not drop_h and not x_untied and not zoned
                    and (self.mode != "RNN" or self.activation in ("tanh", "relu")))
        # With lengths on a CPU the loops run instead: torch's packed CPU kernels took ~10x longer
        # than them on IMDB-like batches (benchmarks/variational_lstm.py --packed).
        # Under an autocast torch's own kernel cannot run (float16 on a CPU; bfloat16 on a CPU
        # without avx512, where oneDNN has no bf16 LSTM primitive) the loop runs, in fp32.
        if autocast and fused_ok and not _autocast_probe(self, x.device.type, False)[1]:
            fused_ok = False
        if fused_ok and (L is None or x.device.type != "cpu"):
            return self._fused(x, h0, c0, w_ih, w_hh, b_ih, b_hh, train, L)
        if fused_ok and self.mode == "RNN":
            # The Elman RNN needs no freezing (see _segmented): torch's padded kernel runs each
            # segment, faster on a CPU than the loop (benchmarks/variational_lstm.py --packed).
            def fused_step(piece, h, c, ends):
                return self._fused(piece, h, None, w_ih, w_hh, b_ih, b_hh, train)
            return self._segmented(fused_step, x, h0, c0, L)

        # Loop path: one big input projection, then the recurrence that fast.select picks.
        # Under autocast it runs in the weights' dtype (autocast off inside): same numbers as
        # without autocast; the output is cast to torch's autocast dtype at the end of forward.
        with torch.autocast(x.device.type, enabled=False) if autocast else contextlib.nullcontext():
            if autocast:
                x, h0 = x.to(w_ih.dtype), h0.to(w_ih.dtype)
                c0 = c0.to(w_ih.dtype) if c0 is not None else None
            bias = None
            if b_ih is not None:
                bias = b_ih if self.mode == "GRU" else b_ih + b_hh
            m_in = self._input_mask(x.shape, p_in, x, gates=G) if x_untied else None
            mask_h = None
            if drop_h:  # drawn after the input masks: the seeded draw order is part of the behaviour
                B = x.shape[1]
                shape = (G, B, H) if untied else (B, H)
                if self.learn_dropout:
                    # a mask with a gradient (to its learned rate): fast.select then runs the
                    # reference loop, the fast loops give the mask none
                    mask_h = concrete_mask(shape, self.concrete_hidden[k].p_logit, dtype=x.dtype,
                                           device=x.device)
                else:
                    mask_h = bernoulli_mask(shape, self.dropout_hidden, dtype=x.dtype,
                                            device=x.device)
            # zoneout weights (hidden, then cell), drawn after the dropout masks
            zones = [self._zoneout_weights(z, x, train) if z > 0 else None
                     for z in (self.zoneout_hidden, self.zoneout_cell)[:2 if self.mode == "LSTM" else 1]]
            if not any(z is not None for z in zones):
                zones = []

            def project(x, rows=None):
                """The input projection of ``x`` (T, b, I), the first ``b`` sequences."""
                if m_in is not None:
                    return fast.untied_linear(x, m_in if rows is None else m_in[:, :, :rows],
                                              w_ih, bias)
                # One product with the bias fused (oneDNN forward and backward on CPU): measured
                # faster than `x @ w.t() + b` and it saves less for backward (docs/results/speed.md).
                return fast.linear(x, w_ih, bias)
            return self._recur(project, x, h0, c0, w_hh, b_hh, mask_h, L, zones)

    def _zoneout_weights(self, z: float, x: Tensor, train: bool) -> Tensor:
        """The zoneout weights ``d`` of one state for ``x`` (T, B, ·): in training ``d ~
        Bernoulli(z)`` (1: the unit keeps its previous value), ``(T, B, H)`` fresh at every step
        or ``(B, H)`` with ``zoneout_variational``; at eval the expectation, ``d = z``."""
        T, B = x.shape[:2]
        H = self.hidden_size
        if not train:
            return torch.full((B, H), z, dtype=x.dtype, device=x.device)
        shape = (B, H) if self.zoneout_variational else (T, B, H)
        return torch.bernoulli(torch.full(shape, z, dtype=x.dtype, device=x.device))

    def _recur(self, project, x, h0, c0, w_hh, b_hh, mask_h, L, zones=()):
        """The recurrence over ``x`` (T, B, I), projected by ``project``: all steps, or with
        lengths the real ones only (:meth:`_segmented`). ``zones``: the zoneout weights
        (hidden[, cell]; see ``_recurrence``), or empty without zoneout."""
        def run(xp, h0, c0, m, zones):
            if self.mode == "LSTM":
                args = (xp, h0, c0, w_hh, m)
            elif self.mode == "GRU":
                args = (xp, h0, w_hh, b_hh, m)
            else:
                args = (xp, h0, w_hh, ACTIVATIONS[self.activation], m)
            args += tuple(zones)   # nothing without zoneout: the calls of before, unchanged
            out, h, *c = fast.select(self.mode, *args)(*args)
            return out, h, (c[0] if c else None)

        if L is None:
            return run(project(x), h0, c0, mask_h, zones)

        extras = ()
        if zones:
            # Per step, with 1 (keep the previous value) past each sequence's end: the frozen
            # steps then leave the state exactly as it was, as without zoneout.
            alive = L.alive(x.shape[0], x.device).unsqueeze(-1)            # (T, B, 1)
            extras = tuple(None if z is None else
                           torch.where(alive, z.expand(x.shape[0], *z.shape[-2:]), 1.0).to(x.dtype)
                           for z in zones)

        def step(piece, h, c, ends, *zs):
            b = piece.shape[1]
            xp = project(piece, b)
            if ends is not None and self.mode != "RNN":
                xp = _varlen.freeze(xp, ends, self.mode)
            mb = None if mask_h is None else (mask_h[:b] if mask_h.dim() == 2 else mask_h[:, :b])
            return run(xp, h, c, mb, zs)
        return self._segmented(step, x, h0, c0, L, extras)

    def _segmented(self, step, x, h0, c0, L, extras=()):
        """Run ``step(piece (t, b, I), h (b, H), c, ends) -> (out, h, c)`` over the segments of
        ``x`` (T, B, I), the batch in decreasing-length order, where the sequences still running
        at any step are a prefix of the batch (see ``_varlen``): each segment runs on its first
        ``b`` rows only. ``ends`` (t, b) marks the real steps of a segment in which some row
        ends (else None): a gated cell's ``step`` freezes those rows' state past their end.
        The Elman RNN has no gate to freeze: its rows run on past their end inside the segment,
        never into a real step (a row that has ended is not in the next segment); its h_n, like
        the LSTM's (which freezes c only), is read from the output at the last real step.
        ``extras``: ``(T, B, ·)`` tensors (or None) cut like ``x``, passed on after ``ends``."""
        T, B = x.shape[:2]
        alive = L.alive(T, x.device)                               # (T, B), sorted order
        segs = _varlen.segments(L.batch_sizes, _SEGMENT_TOLERANCE)
        # split, not slice, along time: a slice's backward fills a zero tensor of the whole
        # input for every segment, a split's concatenates the pieces once
        sizes = [t1 - t0 for t0, t1, _ in segs]
        pieces = torch.split(x, sizes)
        extra_pieces = [torch.split(e, sizes) if e is not None else [None] * len(segs)
                        for e in extras]
        h, c, outs = h0, c0, []
        for i, ((t0, t1, b), piece) in enumerate(zip(segs, pieces)):
            ends = alive[t0:t1, :b]
            partial = not bool(ends.all())
            more = [None if e[i] is None else e[i][:, :b] for e in extra_pieces]
            o, hb, cb = step(piece[:, :b] if b < B else piece, h[:b],
                             c[:b] if c is not None else None, ends if partial else None, *more)
            if partial:
                o = o * ends.unsqueeze(-1).to(o.dtype)
            outs.append(F.pad(o, (0, 0, 0, B - b)) if b < B else o)
            h = torch.cat([hb, h[b:]]) if b < B else hb
            if c is not None:
                c = torch.cat([cb, c[b:]]) if b < B else cb
        out = torch.cat(outs)
        if self.mode != "GRU":
            last = (L.lengths - 1).to(out.device)
            h = out[last, torch.arange(B, device=out.device)]
        return out, h, c

    def _fused(self, x, h0, c0, w_ih, w_hh, b_ih, b_hh, train, L=None):
        has_bias = b_ih is not None
        weights = [w_ih, w_hh, b_ih, b_hh] if has_bias else [w_ih, w_hh]
        fn = {"LSTM": torch.lstm, "GRU": torch.gru, "tanh": torch.rnn_tanh,
              "relu": torch.rnn_relu}[self.mode if self.mode != "RNN" else self.activation]
        hx = (h0.unsqueeze(0), c0.unsqueeze(0)) if self.mode == "LSTM" else h0.unsqueeze(0)
        with warnings.catch_warnings():
            # Each layer hands cuDNN its own weight tensors (they may be DropConnect-ed copies),
            # so cuDNN's advice to flatten them into one buffer does not apply; the copy it makes
            # is per layer and small. Silenced here only: the user's own nn.LSTM still warns.
            warnings.filterwarnings("ignore",
                                    message="RNN module weights are not part of single contiguous")
            if L is None:
                res = fn(x, hx, weights, has_bias, 1, 0.0, train, False, False)
            else:   # torch's own packed kernel (the batch is in decreasing-length order)
                data = pack_padded_sequence(x, L.lengths, enforce_sorted=True).data
                res = fn(data, L.batch_sizes, hx, weights, has_bias, 1, 0.0, train, False)
        out, h = res[0], res[1]
        c = res[2] if self.mode == "LSTM" else None
        if L is not None:
            out = pad_packed_sequence(PackedSequence(out, L.batch_sizes), total_length=x.shape[0])[0]
        return out, h[0], (c[0] if c is not None else None)

    @classmethod
    def from_torch(cls, module: nn.RNNBase, **dropout_options):
        """Build an rnndrop layer with the weights of a ``torch.nn`` one (copied); bidirectional
        layers included. ``dropout_options`` are this class's dropout arguments."""
        if type(module).__name__ != cls.mode and not (cls.mode == "RNN" and isinstance(module, nn.RNN)):
            raise TypeError(f"{cls.__name__}.from_torch expects nn.{cls.mode}, got {type(module).__name__}")
        if getattr(module, "proj_size", 0):
            raise ValueError("LSTMs with proj_size > 0 are not supported")
        kwargs = dict(num_layers=module.num_layers, bias=module.bias, batch_first=module.batch_first,
                      bidirectional=module.bidirectional, device=module.weight_ih_l0.device,
                      dtype=module.weight_ih_l0.dtype)
        if isinstance(module, nn.RNN) and cls.mode == "RNN":
            kwargs["activation"] = module.nonlinearity
        if module.dropout and "dropout" not in dropout_options and "dropout_between" not in dropout_options:
            kwargs["dropout"] = module.dropout
        new = cls(module.input_size, module.hidden_size, **kwargs, **dropout_options)
        new._load_weights(module.state_dict())
        return new

    def to_torch(self) -> nn.RNNBase:
        """The ``torch.nn`` layer with these weights (copied) and ``dropout_between`` as its
        ``dropout``; the options torch does not have (recurrent, input and output dropout,
        untied masks, weight dropout, skips, other activations) are left behind."""
        if self.mode == "RNN" and self.activation not in ("tanh", "relu"):
            raise ValueError(f"torch.nn.RNN has no {self.activation!r} activation")
        cls = _TORCH_CLASSES[self.mode]
        kwargs = dict(num_layers=self.num_layers, bias=self.bias, batch_first=self.batch_first,
                      dropout=self.dropout_between, bidirectional=self.bidirectional,
                      device=self.weight_ih_l0.device, dtype=self.weight_ih_l0.dtype)
        if self.mode == "RNN":
            kwargs["nonlinearity"] = self.activation
        module = cls(self.input_size, self.hidden_size, **kwargs)
        module.load_state_dict(self._weights())
        return module

    def _weights(self) -> dict:
        """The state dict without the learned dropout rates (``learn_dropout``): the entries a
        ``torch.nn`` layer of the same shape has, under its names."""
        return {k: v for k, v in self.state_dict().items() if not k.startswith(_CONCRETE_PREFIXES)}

    def _load_weights(self, state: dict) -> None:
        """Load a ``torch.nn`` layer's state dict: every weight of this layer must be in it and
        nothing else; the learned dropout rates, which torch has not, keep their start values."""
        own = self._weights()
        missing = sorted(set(own) - set(state))
        extra = sorted(set(state) - set(own))
        if missing or extra:
            raise ValueError(f"the torch layer's weights do not match this {type(self).__name__}: "
                             f"missing {missing}, unexpected {extra}")
        with torch.no_grad():
            for k, v in state.items():
                if own[k].shape != v.shape:
                    raise ValueError(f"{k}: shape {tuple(v.shape)}, this layer has {tuple(own[k].shape)}")
                own[k].copy_(v)


# Segments of the variable-length loop end where fewer than this share of their rows still run:
# at most ~15% of a segment's row-steps are padding, in a handful of segments per batch.
_SEGMENT_TOLERANCE = 0.85

_TORCH_CLASSES = {"LSTM": nn.LSTM, "GRU": nn.GRU, "RNN": nn.RNN}
# The learned-rate modules of learn_dropout: the state-dict entries torch.nn has no counterpart of.
_CONCRETE_PREFIXES = ("concrete_",)
_AUTOCAST_DTYPES: dict = {}


def _autocast_probe(layer: "_RNNBase", device_type: str, packed: bool) -> tuple[torch.dtype, bool]:
    """``(dtype, runs)``: the dtype ``torch.nn``'s layer of the same kind returns under the
    autocast now active, and whether torch's kernel runs under it at all (asked of torch once
    per case: its policy differs between cells and for packed input, and its CPU kernels exist
    for bf16 only where oneDNN has them)."""
    key = (layer.mode, layer.activation, layer.num_layers, layer.bidirectional, device_type,
           torch.get_autocast_dtype(device_type), packed)
    if key not in _AUTOCAST_DTYPES:
        mode = layer.mode if layer.mode != "RNN" else layer.activation
        cls = _TORCH_CLASSES[layer.mode]
        kw = {"nonlinearity": mode} if mode in ("tanh", "relu") else {}
        # fork_rng: initialising the probe must not move the RNG the masks are drawn from (a
        # resumed run, whose cache is empty, would draw different masks from then on)
        with torch.random.fork_rng(devices=[]):
            ref = cls(2, 2, num_layers=layer.num_layers, bidirectional=layer.bidirectional, **kw)
        ref = ref.to(device_type)
        x = torch.zeros(2, 2, 2, device=device_type)
        try:
            with torch.no_grad():
                out = ref(pack_padded_sequence(x, [2, 1]) if packed else x)[0]
            _AUTOCAST_DTYPES[key] = (out.data.dtype if packed else out.dtype, True)
        except RuntimeError:   # torch itself cannot run it: ours returns the weights' dtype
            _AUTOCAST_DTYPES[key] = (layer.weight_ih_l0.dtype, False)
    return _AUTOCAST_DTYPES[key]


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
Variable lengths (a ``PackedSequence``, or ``lengths=``): on a GPU torch's packed kernel where
the fused one runs; elsewhere (and on a CPU always, where torch's packed kernels are slow) the
batch runs in decreasing-length order in a few time segments, each on the sequences still
running, with the steps past a sequence's end frozen (no state changes, zero output).
Zoneout always runs the loop path: on a CPU the hand-written loops (the fused C kernels with
zoneout for float32, torch ops otherwise), elsewhere the reference loop (the Triton kernels have
no zoneout, and the hand-written loops have not been run on a GPU). Learned rates (``learn_dropout``) give the recurrent mask a
gradient: the CPU loops compute it, on CUDA the reference loop runs.
Autocast: the fused kernel runs under it where torch's does; the loops run in the
parameters' dtype with autocast off inside, and the outputs are cast to the dtype
``torch.nn``'s layer returns under the same autocast.
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
    bidirectional: if ``True``, each layer has a second, reverse direction that reads each
        sequence from its last real token back (its weights ``..._reverse``); the layer's output
        is both directions' ``h_t`` side by side (``2H`` features), the states hold
        ``2·num_layers`` rows (layer ``k``: rows ``2k`` forward, ``2k+1`` reverse), as in
        ``torch.nn``. Each direction draws its own masks. Default: ``False``
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
    zoneout: zoneout probability ``z`` of the hidden state (Krueger et al., 2016): in training
        each unit of ``h`` keeps its previous value with probability ``z``,
        ``h_t = d_t ∘ h_{t-1} + (1 - d_t) ∘ h̃_t`` with ``d_t ~ Bernoulli(z)`` of shape
        ``(B, H)`` (``h̃_t``: the cell's update above); at eval the expectation,
        ``h_t = z h_{t-1} + (1 - z) h̃_t``. ``z = 1`` in training keeps ``h_0``. Runs the loop
        path (not the fused kernel; on CPU the hand-written loops, on CUDA the reference loop).
        Steps past a sequence's end stay frozen. Default: 0
    zoneout_hidden: the LSTM's name for ``zoneout`` (give one of the two). Default: ``zoneout``
    zoneout_cell: LSTM only: the same on the cell state, ``c_t = d^c_t ∘ c_{t-1} +
        (1 - d^c_t) ∘ c̃_t``; as in the paper ``h̃_t = o_t ∘ tanh(c̃_t)`` is computed from the
        candidate ``c̃_t = f_t ∘ c_{t-1} + i_t ∘ g_t``. Default: 0
    zoneout_variational: ``False`` (the paper): the zoneout masks ``d_t`` are fresh at every
        step, ``(T, B, H)``; ``True``: one mask ``(B, H)`` per sequence, the same at every step.
        Default: ``False``
    learn_dropout: learn the drop probabilities (Concrete dropout, Gal, Hron & Kendall 2017):
        each site given a rate ``p > 0`` (``dropout_input``, ``dropout_between`` and
        ``dropout_hidden`` per layer, ``dropout_output``) gets a learned rate started at ``p``
        (a ``LockedConcreteDropout`` submodule ``concrete_*``, its ``p_logit`` a parameter) and
        draws relaxed masks of the variational shapes above, temperature 0.1. Add
        :meth:`regularizer` to the loss; :meth:`dropout_rates` reads the rates. The recurrent
        mask then has a gradient: on CPU the fast loops compute it (one product after
        the loop), on CUDA the reference loop runs. Needs
        ``variational=True``, ``tied=True``, ``hidden_mask="sample"``. Default: ``False``
{extra}    device: device of the parameters. Default: torch's default device
    dtype: dtype of the parameters (the input must have the same). Default: torch's default
"""

_IO_DOC = """
Inputs: input, {state_in}
    * **input**: ``(T, I)`` unbatched, else ``(T, B, I)``, or ``(B, T, I)`` with
      ``batch_first=True``: the input sequence; or a ``PackedSequence`` (sorted or not), for
      which the output is one too, as in ``torch.nn``.
    * **h_0**: ``(D·num_layers, H)`` unbatched, else ``(D·num_layers, B, H)`` (``D`` = 2 if
      ``bidirectional`` else 1): the initial hidden state of each layer and direction.
      Default: zeros{cell_in}
    * **lengths** (keyword, padded input only): ``(B,)`` the real length of each sequence,
      ``1 ≤ lengths ≤ T``: the same as packing the input first (nothing past a sequence's end
      is computed, its final state is the one at its last real step, the reverse direction
      starts there, the output past it is zero), without the packing.

Outputs: output, {state_out}
    * **output**: ``(T, D·H)`` unbatched, else ``(T, B, D·H)``, or ``(B, T, D·H)`` with
      ``batch_first=True`` (a ``PackedSequence`` for packed input): ``h_t`` of the last layer
      at every step, both directions side by side (times the output mask with
      ``dropout_output``; plus the layer's input with ``skip``).
    * **h_n**: ``(D·num_layers, H)`` unbatched, else ``(D·num_layers, B, H)``: the final
      hidden state of each layer and direction (the reverse direction's is at the first
      step).{cell_out}
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
