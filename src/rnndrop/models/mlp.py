"""The dropout MLP of Dive into Deep Learning §3.13, from scratch and concise (no training code).

Architecture: ``784 → 256 → ReLU → dropout(p1) → 256 → ReLU → dropout(p2) → 10`` (logits).
Two forms that compute the same function with the same random numbers:

- :class:`MLPScratch` — plain parameter tensors (``W`` stored ``(in, out)`` as in the book,
  ``X @ W + b``), rnndrop's functional dropout, no ``nn.Module``. Train it with a manual step
  (``p -= lr * p.grad`` under ``torch.no_grad()``, see :meth:`MLPScratch.sgd_step`).
- :class:`MLP` — an ``nn.Sequential`` of :class:`DropConnectLinear` (an ``nn.Linear``), ``nn.ReLU``
  and rnndrop's dropout modules; train it with ``torch.optim.SGD``.

Both draw their initial weights with :func:`init_params` (``W ~ N(0, sigma²)`` drawn as an
``(in, out)`` matrix, ``b = 0``) from the global RNG, layer by layer, and consume the global RNG
for masks in the same order during the forward pass (layer by layer: weight mask, then activation
mask). After ``torch.manual_seed(s)`` the two forms therefore start from identical values, draw
identical masks and, fed the same batches, follow the same trajectory up to floating-point
rounding (``X @ W`` and ``F.linear(X, W.T)`` may round differently).

Variants (the book's exercises):

- ``kind``: ``"bernoulli"`` (:func:`rnndrop.dropout.dropout`), ``"gaussian"``
  (:func:`~rnndrop.dropout.gaussian_dropout`: multiplicative ``N(1, p/(1-p))``), ``"three_value"``
  (:func:`~rnndrop.dropout.three_value_dropout`: ``{0, γ/2, γ}``). Each is inverted (identity in
  expectation) and off in eval mode.
- ``dropconnect=(q1, q2, q3)``: DropConnect (:func:`rnndrop.dropout.weight_dropout`, element
  mode, one mask per forward call, i.e. per mini-batch) on the weight of each of the three linear
  layers in training; the stored weights are never modified. Independent of ``p1``/``p2`` — set
  those to 0 for DropConnect alone. The analogue of activation dropout ``(p1, p2)`` is
  ``dropconnect=(0, p1, p2)``: dropping unit ``j`` of ``h1`` for one sample drops column ``j`` of
  ``W2`` for that sample; DropConnect drops single entries, shared by the whole batch.
- weight decay is a training choice: :meth:`MLPScratch.sgd_step` takes ``weight_decay`` (applied
  to the weights, not the biases, like :meth:`MLP.param_groups` for ``torch.optim.SGD``).

Shapes: input ``(B, 28, 28)``, ``(B, 1, 28, 28)`` or ``(B, 784)`` float; output ``(B, 10)``.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._checks import check_positive_int, check_probability
from ..dropout import Dropout, GaussianDropout, ThreeValueDropout, weight_dropout
from ..variance import KINDS, check_kind, dropout_fn

__all__ = ["KINDS", "init_params", "dropout_fn", "dropout_module", "DropConnectLinear",
           "MLPScratch", "MLP"]

#: Module form of each dropout kind (:data:`rnndrop.variance.KINDS`).
_MODULES: dict = {"bernoulli": Dropout, "gaussian": GaussianDropout,
                  "three_value": ThreeValueDropout}


def _check_p(p: float, name: str, kind: str) -> float:
    # Bernoulli at p = 1 means "drop everything"; the other kinds need p < 1.
    return check_probability(p, name, allow_one=kind == "bernoulli")


def dropout_module(kind: str, p: float) -> nn.Module:
    """The module form of a dropout kind with probability ``p``."""
    return _MODULES[check_kind(kind)](p)


def init_params(sizes: Sequence[int], sigma: float = 0.01, dtype=None,
                device=None) -> List[Tuple[Tensor, Tensor]]:
    """D2L's initialisation for an MLP with layer ``sizes`` (e.g. ``(784, 256, 256, 10)``).

    For each layer, in order: ``W = randn(in, out) * sigma`` from the global RNG, ``b = zeros(out)``.
    Returns plain tensors (no ``requires_grad``); both MLP forms call this, so equal seeds give
    equal weights.
    """
    out = []
    for n_in, n_out in zip(sizes[:-1], sizes[1:]):
        W = torch.randn(n_in, n_out, dtype=dtype, device=device) * sigma
        b = torch.zeros(n_out, dtype=dtype, device=device)
        out.append((W, b))
    return out


def _check_dropconnect(dropconnect, n_layers: int = 3) -> Optional[Tuple[float, ...]]:
    if dropconnect is None:
        return None
    dc = tuple(dropconnect)
    if len(dc) != n_layers:
        raise ValueError(f"dropconnect needs one probability per linear layer ({n_layers}), "
                         f"got {dropconnect!r}")
    return tuple(check_probability(q, f"dropconnect[{i}]", allow_one=True)
                 for i, q in enumerate(dc))


# ============================================================================ from scratch
class MLPScratch:
    """D2L 3.13's ``DropoutMLPScratch``: own parameter tensors, own dropout, manual SGD.

    Args:
        num_inputs, num_hiddens1, num_hiddens2, num_outputs: layer sizes (784, 256, 256, 10).
        p1, p2: dropout probabilities after the first and second hidden layer.
        kind: ``"bernoulli"``, ``"gaussian"`` or ``"three_value"``.
        dropconnect: ``None`` or ``(q1, q2, q3)``, DropConnect probability of each weight matrix.
        sigma: standard deviation of the initial weights.

    Attributes ``W1, b1, W2, b2, W3, b3`` (``W`` is ``(in, out)``); :meth:`parameters` lists
    them. ``training`` switches dropout on (:meth:`train`) and off (:meth:`eval`).
    """

    def __init__(self, num_inputs: int = 784, num_hiddens1: int = 256, num_hiddens2: int = 256,
                 num_outputs: int = 10, p1: float = 0.2, p2: float = 0.5,
                 kind: str = "bernoulli", dropconnect: Optional[Sequence[float]] = None,
                 sigma: float = 0.01, dtype=None, device=None):
        self.sizes = tuple(check_positive_int(n, name) for n, name in
                           ((num_inputs, "num_inputs"), (num_hiddens1, "num_hiddens1"),
                            (num_hiddens2, "num_hiddens2"), (num_outputs, "num_outputs")))
        self.kind = check_kind(kind)
        self.p1 = _check_p(p1, "p1", kind)
        self.p2 = _check_p(p2, "p2", kind)
        self.dropconnect = _check_dropconnect(dropconnect)
        self.training = True
        (W1, b1), (W2, b2), (W3, b3) = init_params(self.sizes, sigma, dtype, device)
        self.W1, self.b1, self.W2, self.b2, self.W3, self.b3 = (
            t.requires_grad_() for t in (W1, b1, W2, b2, W3, b3))

    # -- module-like API
    def parameters(self) -> List[Tensor]:
        return [self.W1, self.b1, self.W2, self.b2, self.W3, self.b3]

    def weights(self) -> List[Tensor]:
        """The weight matrices (the tensors weight decay acts on)."""
        return [self.W1, self.W2, self.W3]

    def train(self, mode: bool = True) -> "MLPScratch":
        self.training = bool(mode)
        return self

    def eval(self) -> "MLPScratch":
        return self.train(False)

    def zero_grad(self) -> None:
        for p in self.parameters():
            p.grad = None

    def state_dict(self) -> "OrderedDict[str, Tensor]":
        """Parameters under the names of :class:`MLP` (weights transposed to ``(out, in)``)."""
        sd = OrderedDict()
        for i, (W, b) in enumerate(((self.W1, self.b1), (self.W2, self.b2),
                                    (self.W3, self.b3)), 1):
            sd[f"linear{i}.weight"] = W.detach().t().clone()
            sd[f"linear{i}.bias"] = b.detach().clone()
        return sd

    @torch.no_grad()
    def sgd_step(self, lr: float, weight_decay: float = 0.0) -> None:
        """Minibatch SGD from scratch: ``p -= lr * p.grad`` (``+ weight_decay * p`` for the
        weights: the gradient of ``weight_decay/2 · ‖W‖²``). Gradients are then cleared."""
        for p in self.parameters():
            if p.grad is None:
                continue
            if weight_decay and p.dim() > 1:
                p -= lr * (p.grad + weight_decay * p)
            else:
                p -= lr * p.grad
        self.zero_grad()

    # -- forward
    def _w(self, W: Tensor, i: int) -> Tensor:
        if self.dropconnect is None or not self.training or self.dropconnect[i] == 0.0:
            return W
        # Mask drawn in the (out, in) layout that nn.Linear stores, so both forms draw alike.
        return weight_dropout(W.t(), self.dropconnect[i], True).t()

    def forward(self, X: Tensor) -> Tensor:
        drop = dropout_fn(self.kind)
        X = X.reshape(-1, self.sizes[0])
        H1 = torch.relu(X @ self._w(self.W1, 0) + self.b1)
        if self.training and self.p1 > 0:
            H1 = drop(H1, self.p1, True)
        H2 = torch.relu(H1 @ self._w(self.W2, 1) + self.b2)
        if self.training and self.p2 > 0:
            H2 = drop(H2, self.p2, True)
        return H2 @ self._w(self.W3, 2) + self.b3

    __call__ = forward

    def __repr__(self) -> str:
        return (f"MLPScratch(sizes={self.sizes}, p1={self.p1}, p2={self.p2}, kind={self.kind!r}, "
                f"dropconnect={self.dropconnect})")


# ================================================================================ concise
class DropConnectLinear(nn.Linear):
    """``nn.Linear`` whose weight is DropConnect-ed (:func:`rnndrop.dropout.weight_dropout`,
    element mode, probability ``p``) on every training call; the stored weight is untouched and
    ``eval()`` uses it as is. ``p = 0`` is a plain ``nn.Linear``."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, device=None,
                 dtype=None, p: float = 0.0):
        super().__init__(in_features, out_features, bias, device=device, dtype=dtype)
        self.p = check_probability(p, "p", allow_one=True)

    def forward(self, input: Tensor) -> Tensor:
        return F.linear(input, weight_dropout(self.weight, self.p, self.training), self.bias)

    def extra_repr(self) -> str:
        return super().extra_repr() + (f", dropconnect={self.p}" if self.p else "")


class MLP(nn.Sequential):
    """D2L 3.13's concise ``DropoutMLP``: ``nn.Sequential`` with named children ``flatten,
    linear1, relu1, dropout1, linear2, relu2, dropout2, linear3``.

    Same arguments as :class:`MLPScratch`. The linear layers are :class:`DropConnectLinear`
    (with ``p = dropconnect[i]``, 0 without DropConnect); the dropout modules are
    :class:`rnndrop.dropout.Dropout` (or ``GaussianDropout`` / ``ThreeValueDropout``).
    Weights are drawn by :func:`init_params` (not torch's default init), so a seed gives the same
    values as :class:`MLPScratch`.
    """

    def __init__(self, num_inputs: int = 784, num_hiddens1: int = 256, num_hiddens2: int = 256,
                 num_outputs: int = 10, p1: float = 0.2, p2: float = 0.5,
                 kind: str = "bernoulli", dropconnect: Optional[Sequence[float]] = None,
                 sigma: float = 0.01, dtype=None, device=None):
        sizes = tuple(check_positive_int(n, name) for n, name in
                      ((num_inputs, "num_inputs"), (num_hiddens1, "num_hiddens1"),
                       (num_hiddens2, "num_hiddens2"), (num_outputs, "num_outputs")))
        check_kind(kind)
        p1, p2 = _check_p(p1, "p1", kind), _check_p(p2, "p2", kind)
        dc = _check_dropconnect(dropconnect) or (0.0, 0.0, 0.0)
        # skip_init: no default (kaiming) init, so the global RNG is not consumed before ours.
        lin = [nn.utils.skip_init(DropConnectLinear, n_in, n_out, dtype=dtype,
                                  device=device if device is not None else "cpu", p=q)
               for (n_in, n_out), q in zip(zip(sizes[:-1], sizes[1:]), dc)]
        super().__init__(OrderedDict([
            ("flatten", nn.Flatten()),
            ("linear1", lin[0]), ("relu1", nn.ReLU()), ("dropout1", dropout_module(kind, p1)),
            ("linear2", lin[1]), ("relu2", nn.ReLU()), ("dropout2", dropout_module(kind, p2)),
            ("linear3", lin[2]),
        ]))
        with torch.no_grad():
            for layer, (W, b) in zip(lin, init_params(sizes, sigma, dtype, device)):
                layer.weight.copy_(W.t())
                layer.bias.copy_(b)
        self.sizes, self.kind, self.p1, self.p2 = sizes, kind, p1, p2
        self.dropconnect = _check_dropconnect(dropconnect)

    def forward(self, input: Tensor) -> Tensor:
        return super().forward(input.reshape(-1, self.sizes[0]))

    def param_groups(self, weight_decay: float = 0.0) -> list:
        """Parameter groups for ``torch.optim.SGD``: weight decay on the weights only."""
        weights = [m.weight for m in (self.linear1, self.linear2, self.linear3)]
        biases = [m.bias for m in (self.linear1, self.linear2, self.linear3)]
        return [{"params": weights, "weight_decay": weight_decay},
                {"params": biases, "weight_decay": 0.0}]

    def hidden(self, input: Tensor) -> Tuple[Tensor, Tensor]:
        """``(h1, h2)``: the two hidden activations after ReLU, with dropout as in the current
        mode (in eval mode: the deterministic activations)."""
        x = input.reshape(-1, self.sizes[0])
        h1 = self.relu1(self.linear1(x))
        h2 = self.relu2(self.linear2(self.dropout1(h1)))
        return h1, h2
