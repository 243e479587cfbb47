"""The output layers: full, sampled and adaptive softmax with one interface, and
:func:`make_output_layer` to build one by name."""
from __future__ import annotations

import math
from typing import Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._checks import check_positive_int
from ..fast import linear as _fast_linear, linear_cross_entropy

from .sampled import _REDUCTIONS, _check_num_sampled, sampled_softmax_loss
from .samplers import CandidateSampler, make_sampler

OUTPUT_LAYERS = ("full", "sampled", "adaptive")

# Elements of a (rows, V) logits block in :meth:`_LinearDecoder.target_log_prob` (16 MB in
# float32). MC dropout's replicated windows make a (T, S·B, V) block of hundreds of MB; glibc
# hands a block above its mmap threshold (32 MB at most) back to the OS when it is freed, so a
# block that size is page-faulted in afresh at every window, and on this project's VMs the
# faults cost more than the softmax itself (1.5 s to fill a fresh 168 MB tensor, 0.05 s to fill
# it again). Blocks under the threshold are reused from the heap.
_TARGET_BLOCK = 1 << 22


def _reduce(nll: Tensor, reduction: str) -> Tensor:
    if reduction == "mean":
        return nll.mean()
    if reduction == "sum":
        return nll.sum()
    if reduction == "none":
        return nll
    raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")


class _LinearDecoder(nn.Module):
    """Shared parameters/full path of :class:`FullSoftmax` and :class:`SampledSoftmax`."""

    def __init__(self, hidden_size: int, vocab_size: int, bias: bool = True,
                 weight: Optional[nn.Parameter] = None):
        super().__init__()
        self.hidden_size = check_positive_int(hidden_size, "hidden_size")
        self.vocab_size = check_positive_int(vocab_size, "vocab_size")
        if weight is None:
            self.weight = nn.Parameter(torch.empty(vocab_size, hidden_size))
            nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))   # as nn.Linear
        else:
            if not isinstance(weight, nn.Parameter):
                raise ValueError("weight must be an nn.Parameter (e.g. embedding.weight) to tie")
            if tuple(weight.shape) != (vocab_size, hidden_size):
                raise ValueError(f"weight must have shape (vocab_size, hidden_size) = "
                                 f"({vocab_size}, {hidden_size}), got {tuple(weight.shape)}")
            self.weight = weight                                    # tied: same Parameter
        if bias:
            bound = 1.0 / math.sqrt(hidden_size)
            self.bias = nn.Parameter(torch.empty(vocab_size).uniform_(-bound, bound))
        else:
            self.register_parameter("bias", None)

    def logits(self, hidden: Tensor) -> Tensor:
        """``hidden @ weight.T + bias``: ``(*, H)`` → ``(*, V)``."""
        # oneDNN for the three products on CPU float32 (F.linear elsewhere): at PTB medium
        # (700 x 650 rows, V = 10k) fwd + bwd 345 against 463 ms on one core (speed.md)
        return _fast_linear(hidden, self.weight, self.bias)

    def log_prob(self, hidden: Tensor) -> Tensor:
        r"""Full log-softmax :math:`\log p(v \mid h)`: ``(*, H)`` → ``(*, V)``."""
        return F.log_softmax(self.logits(hidden), dim=-1)

    def target_log_prob(self, hidden: Tensor, targets: Tensor) -> Tensor:
        r"""Full-softmax :math:`\log p(y \mid h)` of the targets only: ``(*, H)``, ``(*)`` →
        ``(*)``, float32 or wider. Equals ``log_prob(hidden).gather(-1, y)`` without the
        ``(*, V)`` block: the logits are made a few rows at a time (see ``_TARGET_BLOCK``)."""
        h = hidden.reshape(-1, self.hidden_size)
        y = targets.reshape(-1).long()
        if h.shape[0] != y.shape[0]:
            raise ValueError(f"hidden has {h.shape[0]} rows but targets {y.shape[0]}")
        rows = max(1, _TARGET_BLOCK // self.vocab_size)
        parts = [-F.cross_entropy(self.logits(h[i:i + rows]), y[i:i + rows], reduction="none")
                 for i in range(0, h.shape[0], rows)]
        out = torch.cat(parts) if parts else h.new_zeros(0)
        return out.reshape(targets.shape)

    def full_loss(self, hidden: Tensor, targets: Tensor, reduction: str = "mean") -> Tensor:
        """Full-softmax cross-entropy: ``(*, H)``, ``(*)`` → scalar (or ``(*)`` for ``"none"``)."""
        if hidden.shape[-1] != self.hidden_size:
            raise ValueError(f"hidden must end in hidden_size = {self.hidden_size}, got shape "
                             f"{tuple(hidden.shape)}")
        # one Function for the product and the softmax's loss in training on CPU (fast/_xent:
        # PTB small fwd + bwd 85 -> 68 ms on one core, speed.md)
        loss = linear_cross_entropy(hidden.reshape(-1, self.hidden_size), self.weight,
                                    self.bias, targets.reshape(-1), reduction)
        return loss.reshape(targets.shape) if reduction == "none" else loss

    def forward(self, hidden: Tensor, targets: Optional[Tensor] = None) -> Tensor:
        return self.log_prob(hidden) if targets is None else self.loss(hidden, targets)

    def extra_repr(self) -> str:
        return (f"hidden_size={self.hidden_size}, vocab_size={self.vocab_size}, "
                f"bias={self.bias is not None}")


class FullSoftmax(_LinearDecoder):
    r"""Full softmax output layer: :math:`p(\cdot \mid h) = \operatorname{softmax}(W h + b)`.

    Args:
        hidden_size: ``H``.
        vocab_size: ``V``.
        bias: learn a bias ``(V,)`` (default ``True``).
        weight: optional existing ``(V, H)`` Parameter to tie (e.g. ``embedding.weight``).

    Attributes:
        weight: ``(V, H)``; bias: ``(V,)`` — same names/shapes as :class:`SampledSoftmax`, so
        state dicts interchange.

    Methods:
        ``loss(hidden (*, H), targets (*)) -> scalar``; ``log_prob(hidden (*, H)) -> (*, V)``.
    """

    def loss(self, hidden: Tensor, targets: Tensor, reduction: str = "mean") -> Tensor:
        """Cross-entropy of the full softmax (nats)."""
        return self.full_loss(hidden, targets, reduction)


class SampledSoftmax(_LinearDecoder):
    r"""Sampled softmax output layer (Jean et al., 2015): sampled loss in training, full in eval.

    In ``train()`` mode :meth:`loss` is :func:`sampled_softmax_loss` with ``num_sampled``
    negatives from the proposal; in ``eval()`` mode it is the full cross-entropy.
    :meth:`log_prob` is always the full log-softmax.

    Args:
        hidden_size: ``H``.
        vocab_size: ``V``.
        num_sampled: ``k``, ``0 < k < V``.
        sampler: ``"log_uniform"`` (default; ids must be sorted by decreasing frequency),
            ``"unigram"`` (needs ``counts``), ``"uniform"``, a :class:`CandidateSampler`, or a
            ``(V,)`` probability vector.
        counts: ``(V,)`` class counts for ``"unigram"``.
        alpha: unigram distortion exponent (``>= 0``).
        unique: sample ``k`` distinct negatives (default, as TF) rather than ``k`` draws with
            replacement; with ``unique=False`` also pass ``remove_accidental_hits=False`` (see the
            module docstring: the other mixed combination does not converge as ``k`` grows).
        remove_accidental_hits: mask negatives equal to the row's target (default ``True``).
        bias: learn a bias ``(V,)``.
        weight: optional existing ``(V, H)`` Parameter to tie.

    The sampler is not part of the ``state_dict`` (only ``weight`` and ``bias`` are), so
    checkpoints interchange with :class:`FullSoftmax`.
    """

    def __init__(self, hidden_size: int, vocab_size: int, num_sampled: int,
                 sampler: Union[str, CandidateSampler, Tensor] = "log_uniform", counts=None,
                 alpha: float = 0.75, unique: bool = True, remove_accidental_hits: bool = True,
                 bias: bool = True, weight: Optional[nn.Parameter] = None):
        check_positive_int(vocab_size, "vocab_size")
        self_num_sampled = _check_num_sampled(num_sampled, vocab_size)
        sampler_obj = make_sampler(sampler, vocab_size, counts=counts, alpha=alpha)
        if unique and self_num_sampled > sampler_obj.support_size:
            raise ValueError(f"num_sampled ({num_sampled}) exceeds the number of classes with "
                             f"non-zero proposal probability ({sampler_obj.support_size})")
        super().__init__(hidden_size, vocab_size, bias=bias, weight=weight)
        self.num_sampled = self_num_sampled
        self.sampler = sampler_obj
        self.unique = bool(unique)
        self.remove_accidental_hits = bool(remove_accidental_hits)

    def sampled_loss(self, hidden: Tensor, targets: Tensor, reduction: str = "mean",
                     generator: Optional[torch.Generator] = None) -> Tensor:
        """The sampled loss regardless of mode."""
        return sampled_softmax_loss(hidden, targets, self.weight, self.bias, self.num_sampled,
                                    self.sampler, self.remove_accidental_hits, generator,
                                    self.unique, reduction)

    def loss(self, hidden: Tensor, targets: Tensor, reduction: str = "mean",
             generator: Optional[torch.Generator] = None) -> Tensor:
        """Sampled loss in training mode, full cross-entropy in eval mode."""
        if self.training:
            return self.sampled_loss(hidden, targets, reduction, generator)
        return self.full_loss(hidden, targets, reduction)

    def extra_repr(self) -> str:
        return (super().extra_repr() + f", num_sampled={self.num_sampled}, "
                f"sampler={self.sampler!r}, unique={self.unique}")


class AdaptiveSoftmax(nn.Module):
    r"""Adaptive softmax (Grave et al., 2017) behind the common output-layer interface.

    Wraps :class:`torch.nn.AdaptiveLogSoftmaxWithLoss` (as ``self.asm``). Ids must be sorted by
    decreasing frequency; ``cutoffs`` split them into a head ``[0, c_0)`` and tail clusters.

    Args:
        hidden_size: ``H``.
        vocab_size: ``V``.
        cutoffs: strictly increasing ints with ``0 < c < V``.
        div_value: factor by which each tail cluster's projection shrinks (default 4.0).
        head_bias: bias on the head (default ``False``, as torch).

    Methods:
        ``loss(hidden (*, H), targets (*)) -> scalar`` (equal to torch's ``.loss``);
        ``log_prob(hidden (*, H)) -> (*, V)``.
    """

    def __init__(self, hidden_size: int, vocab_size: int, cutoffs: Sequence[int],
                 div_value: float = 4.0, head_bias: bool = False):
        super().__init__()
        self.hidden_size = check_positive_int(hidden_size, "hidden_size")
        self.vocab_size = check_positive_int(vocab_size, "vocab_size")
        try:
            cut = list(cutoffs)
        except TypeError:
            raise ValueError(f"cutoffs must be a sequence of ints, got {cutoffs!r}") from None
        if not cut or any(isinstance(c, bool) or int(c) != c for c in cut):
            raise ValueError(f"cutoffs must be a non-empty sequence of ints, got {cutoffs!r}")
        cut = [int(c) for c in cut]
        if any(b <= a for a, b in zip(cut, cut[1:])):
            raise ValueError(f"cutoffs must be strictly increasing, got {cut}")
        if cut[0] <= 0 or cut[-1] >= vocab_size:
            raise ValueError(f"cutoffs must lie in (0, vocab_size={vocab_size}), got {cut}")
        if isinstance(div_value, bool) or not isinstance(div_value, (int, float)) \
                or not math.isfinite(div_value) or div_value <= 0:
            raise ValueError(f"div_value must be a positive number, got {div_value!r}")
        self.cutoffs = cut
        self.asm = nn.AdaptiveLogSoftmaxWithLoss(hidden_size, vocab_size, cut,
                                                 div_value=float(div_value), head_bias=head_bias)

    def log_prob(self, hidden: Tensor) -> Tensor:
        r"""Full log-probabilities: ``(*, H)`` → ``(*, V)``."""
        flat = hidden.reshape(-1, self.hidden_size)
        return self.asm.log_prob(flat).reshape(*hidden.shape[:-1], self.vocab_size)

    def target_log_prob(self, hidden: Tensor, targets: Tensor) -> Tensor:
        r""":math:`\log p(y \mid h)` of the targets: ``(*, H)``, ``(*)`` → ``(*)`` (torch's
        adaptive softmax computes only the head and the targets' clusters)."""
        out = self.asm(hidden.reshape(-1, self.hidden_size), targets.reshape(-1).long())
        return out.output.reshape(targets.shape)

    def loss(self, hidden: Tensor, targets: Tensor, reduction: str = "mean") -> Tensor:
        """Negative log-likelihood of ``targets`` (nats)."""
        out = self.asm(hidden.reshape(-1, self.hidden_size), targets.reshape(-1).long())
        if reduction == "mean":
            return out.loss
        loss = _reduce(-out.output, reduction)
        return loss.reshape(targets.shape) if reduction == "none" else loss

    def forward(self, hidden: Tensor, targets: Optional[Tensor] = None) -> Tensor:
        return self.log_prob(hidden) if targets is None else self.loss(hidden, targets)

    def extra_repr(self) -> str:
        return f"hidden_size={self.hidden_size}, vocab_size={self.vocab_size}, cutoffs={self.cutoffs}"


def make_output_layer(kind: str, hidden_size: int, vocab_size: int, **params) -> nn.Module:
    """Build an output layer by name.

    ``kind="full"`` → :class:`FullSoftmax` (``bias``, ``weight``); ``"sampled"`` →
    :class:`SampledSoftmax` (``num_sampled`` required; ``sampler``, ``counts``, ``alpha``,
    ``unique``, ``remove_accidental_hits``, ``bias``, ``weight``); ``"adaptive"`` →
    :class:`AdaptiveSoftmax` (``cutoffs`` required; ``div_value``, ``head_bias``).
    Unknown ``params`` raise ``TypeError`` from the constructor.
    """
    if not isinstance(kind, str) or kind.lower() not in OUTPUT_LAYERS:
        raise ValueError(f"unknown output layer kind {kind!r}; expected one of {OUTPUT_LAYERS}")
    kind = kind.lower()
    if kind == "full":
        return FullSoftmax(hidden_size, vocab_size, **params)
    if kind == "sampled":
        if "num_sampled" not in params:
            raise ValueError("num_sampled is required for kind='sampled'")
        return SampledSoftmax(hidden_size, vocab_size, **params)
    if "cutoffs" not in params:
        raise ValueError("cutoffs is required for kind='adaptive'")
    return AdaptiveSoftmax(hidden_size, vocab_size, **params)
