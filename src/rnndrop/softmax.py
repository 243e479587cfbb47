r"""Output layers for large vocabularies: full, sampled and adaptive softmax.

All three output layers share one interface, so a language model can swap them freely:

* ``loss(hidden, targets, reduction="mean")`` — the training loss (cross-entropy, nats);
* ``log_prob(hidden)`` — the *full* log-softmax over the vocabulary, shape ``(*, V)``;
* ``forward(hidden, targets=None)`` — ``loss`` when ``targets`` is given, else ``log_prob``.

:class:`FullSoftmax` and :class:`SampledSoftmax` hold the decoder as two parameters named
``weight`` (``(V, H)``) and ``bias`` (``(V,)``) directly on the module (no sub-``Linear``), so a
``state_dict`` saved from one loads into the other, and both accept an existing ``weight``
Parameter for weight tying with the input embedding.

Sampled softmax (Jean et al., 2015, "On Using Very Large Target Vocabulary for Neural Machine
Translation"; semantics of TensorFlow's ``tf.nn.sampled_softmax_loss``)
--------------------------------------------------------------------------------------------
For a row with hidden state :math:`h`, target :math:`t` and logits
:math:`z_j = w_j^\top h + b_j`, draw :math:`k` candidate ids :math:`S = (s_1, \dots, s_k)` from a
proposal :math:`P` (once per batch, shared by all rows). With :math:`Q(j)` the *expected count*
of :math:`j` among the draws, the corrected logits are

.. math::
    \tilde z_0 = z_t - \log Q(t), \qquad \tilde z_i = z_{s_i} - \log Q(s_i),

accidental hits (:math:`s_i = t`) are set to :math:`-\infty`, and the loss is the cross-entropy
with the true class at index 0: :math:`-\tilde z_0 + \log \sum_{i=0}^{k} e^{\tilde z_i}`.
Only the ``N + k`` needed rows of the weight matrix are gathered: the cost is
:math:`O((N + k) H)` instead of :math:`O(V H)`.

Expected counts (what :meth:`CandidateSampler.log_q` returns the log of):

* ``unique=True`` (the default, as in TensorFlow: draw with replacement until ``k`` distinct ids
  have been seen, which took ``num_tries`` draws, and keep those ``k``):
  :math:`Q(j) = 1 - (1 - P(j))^{\text{num\_tries}}`, the probability that ``j`` shows up in
  ``num_tries`` draws (TensorFlow's approximation of the inclusion probability);
* ``unique=False`` (``k`` i.i.d. draws with replacement, duplicates kept as separate columns):
  :math:`Q(j) = k\,P(j)`, exact.

The sampled loss is a biased estimate of the full cross-entropy (generally an underestimate)
whose gradient approaches the full-softmax gradient as ``k`` grows — *for the consistent
combinations*: ``unique=True`` with ``remove_accidental_hits=True`` (the defaults), or
``unique=False`` with ``remove_accidental_hits=False``. Reason: the true column contributes
:math:`e^{z_t}/Q(t)` to the estimated normaliser. With unique sampling and hit removal the
target's share tends to :math:`e^{z_t}` as :math:`Q(t) \to 1`; without removal the (unbiased)
negatives already account for :math:`e^{z_t}` and the extra :math:`e^{z_t}/(kP(t))` vanishes as
:math:`k` grows. But with replacement *and* hit removal the target's share is
:math:`e^{z_t}/(kP(t))`, which goes to 0 for large :math:`k` (and a unique sample without removal
counts the target about twice): the error then stops decreasing, or grows, with :math:`k` (TF's
accidental-hit removal also presupposes unique candidates). Evaluation should always use the full
softmax (:class:`SampledSoftmax` does so in ``eval()`` mode and in ``log_prob``).

Samplers keep their probabilities on the CPU in float64 and draw there (pass a CPU
``torch.Generator``); the ids are moved to the weight's device.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._checks import check_positive_int

__all__ = [
    "CandidateSampler", "CategoricalSampler", "UniformSampler", "LogUniformSampler",
    "UnigramSampler", "make_sampler", "compute_sampled_logits", "sampled_softmax_loss",
    "FullSoftmax", "SampledSoftmax", "AdaptiveSoftmax", "make_output_layer",
    "SAMPLERS", "OUTPUT_LAYERS",
]

SAMPLERS = ("log_uniform", "unigram", "uniform")
OUTPUT_LAYERS = ("full", "sampled", "adaptive")
_REDUCTIONS = ("mean", "sum", "none")
# Floor of an expected count before its log is taken: a class with zero proposal probability
# gets a large finite correction (about +708) rather than +inf (which would make the loss NaN).
_TINY = torch.finfo(torch.float64).tiny


# ----------------------------------------------------------------------------------------------
# Proposal distributions
# ----------------------------------------------------------------------------------------------

class CandidateSampler:
    r"""A proposal distribution :math:`P` over class ids ``0 .. num_classes-1``.

    Subclasses provide ``probs`` (or override :meth:`prob` and :meth:`_draw` when they can do it
    without materialising the ``(V,)`` vector). Probabilities are float64 on the CPU.

    Attributes:
        num_classes (int): ``V``.
        probs (Tensor): ``(V,)`` float64, non-negative, sums to 1.
    """

    num_classes: int

    def __init__(self, num_classes: int):
        self.num_classes = check_positive_int(num_classes, "num_classes")
        self._probs: Optional[Tensor] = None
        self._cdf: Optional[Tensor] = None

    # -- distribution ----------------------------------------------------------------------
    @property
    def probs(self) -> Tensor:
        if self._probs is None:
            self._probs = self._compute_probs()
        return self._probs

    def _compute_probs(self) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def prob(self, ids: Tensor) -> Tensor:
        """:math:`P(\\text{ids})`, float64 on the CPU, same shape as ``ids``."""
        return self.probs[torch.as_tensor(ids).long().cpu()]

    @property
    def support_size(self) -> int:
        """Number of classes with non-zero probability (the most ``unique`` draws can give)."""
        return int((self.probs > 0).sum())

    # -- sampling --------------------------------------------------------------------------
    def _draw(self, n: int, generator: Optional[torch.Generator]) -> Tensor:
        """``n`` i.i.d. draws with replacement (inverse CDF), int64 on the CPU."""
        if self._cdf is None:
            self._cdf = torch.cumsum(self.probs, 0)
        u = torch.rand(n, generator=generator, dtype=torch.float64) * self._cdf[-1]
        ids = torch.searchsorted(self._cdf, u, right=True)
        return ids.clamp_(max=self.num_classes - 1)

    def sample(self, num_sampled: int, generator: Optional[torch.Generator] = None,
               unique: bool = False, return_num_tries: bool = False):
        """Draw ``num_sampled`` candidate ids.

        Args:
            num_sampled: ``k`` (positive int).
            generator: optional CPU ``torch.Generator``.
            unique: if ``False`` (default), ``k`` i.i.d. draws with replacement
                (``num_tries = k``). If ``True``, draw until ``k`` distinct ids have been seen
                (TensorFlow's ``unique=True``) and return those; ``num_tries`` is the number of
                draws that took. Needs ``k <=`` :attr:`support_size`; with a very skewed ``P`` and
                ``k`` close to ``V`` this can take many draws (coupon collector).
            return_num_tries: also return ``num_tries`` (needed for :meth:`log_q`).

        Returns:
            ``ids`` (``(k,)`` int64, CPU), or ``(ids, num_tries)``.
        """
        k = check_positive_int(num_sampled, "num_sampled")
        if not unique:
            ids, tries = self._draw(k, generator), k
        else:
            if k > self.num_classes:
                raise ValueError(f"num_sampled must be <= num_classes ({self.num_classes}) "
                                 f"when unique=True, got {k}")
            if k > self.support_size:
                raise ValueError(f"num_sampled must be <= the number of classes with non-zero "
                                 f"probability ({self.support_size}) when unique=True, got {k}")
            ids, tries = self._draw_unique(k, generator)
        return (ids, tries) if return_num_tries else ids

    def _draw_unique(self, k: int, generator: Optional[torch.Generator]):
        draws = torch.empty(0, dtype=torch.long)
        chunk = max(2 * k, 16)
        while True:
            draws = torch.cat([draws, self._draw(chunk, generator)])
            uniq, inverse = torch.unique(draws, return_inverse=True)
            if uniq.numel() >= k:
                pos = torch.arange(draws.numel())
                first = torch.full((uniq.numel(),), draws.numel(), dtype=torch.long)
                first = first.scatter_reduce(0, inverse, pos, reduce="amin")
                first = first.sort().values[:k]          # positions of first occurrences, in order
                return draws[first], int(first[-1]) + 1  # tries = draws up to the k-th new id
            chunk *= 2

    # -- correction ------------------------------------------------------------------------
    def expected_count(self, ids: Tensor, num_tries: int = 1, unique: bool = False) -> Tensor:
        r"""Expected count :math:`Q` of each id in ``num_tries`` draws (float64, CPU).

        ``unique=False``: :math:`Q = \text{num\_tries}\cdot P`. ``unique=True``:
        :math:`Q = 1 - (1-P)^{\text{num\_tries}}` (computed as ``-expm1(n * log1p(-P))``).
        """
        p = self.prob(ids)
        if unique:
            return -torch.expm1(num_tries * torch.log1p(-p))
        return num_tries * p

    def log_q(self, ids: Tensor, num_tries: int = 1, unique: bool = False) -> Tensor:
        r""":math:`\log Q(\text{ids})`, the log expected count subtracted from the logits.

        With the defaults (``num_tries=1``) this is :math:`\log P(\text{ids})`. For a batch of
        ``k`` draws with replacement pass ``num_tries=k``; for unique sampling pass the
        ``num_tries`` returned by :meth:`sample` and ``unique=True``. Counts are floored at the
        smallest positive float64 so the result is finite. Float64, CPU, shape of ``ids``.
        """
        return torch.log(self.expected_count(ids, num_tries, unique).clamp(min=_TINY))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(num_classes={self.num_classes})"


class CategoricalSampler(CandidateSampler):
    """Proposal given by explicit (unnormalised) non-negative weights ``probs`` of shape ``(V,)``."""

    def __init__(self, probs):
        p = torch.as_tensor(probs, dtype=torch.float64).detach().cpu()
        if p.dim() != 1 or p.numel() == 0:
            raise ValueError(f"probs must be a non-empty 1-D tensor, got shape {tuple(p.shape)}")
        if not torch.isfinite(p).all() or (p < 0).any():
            raise ValueError("probs must be finite and non-negative")
        if p.sum() <= 0:
            raise ValueError("probs must have a positive sum")
        super().__init__(p.numel())
        self._probs = p / p.sum()


class UniformSampler(CandidateSampler):
    r"""Uniform proposal :math:`P(k) = 1/V`."""

    def _compute_probs(self) -> Tensor:
        return torch.full((self.num_classes,), 1.0 / self.num_classes, dtype=torch.float64)

    def prob(self, ids: Tensor) -> Tensor:
        ids = torch.as_tensor(ids)
        return torch.full(ids.shape, 1.0 / self.num_classes, dtype=torch.float64)

    @property
    def support_size(self) -> int:
        return self.num_classes

    def _draw(self, n, generator):
        return torch.randint(self.num_classes, (n,), generator=generator)


class LogUniformSampler(CandidateSampler):
    r"""Log-uniform (Zipfian) proposal over frequency-sorted ids (id 0 the most frequent):

    .. math:: P(k) = \frac{\log(k+2) - \log(k+1)}{\log(V+1)}, \qquad k = 0, \dots, V-1.

    The CDF is :math:`\log(k+2)/\log(V+1)`, so a draw is
    :math:`\lfloor \exp(u \log(V+1)) \rfloor - 1` with :math:`u \sim U[0,1)`: sampling and
    :meth:`prob` cost :math:`O(k)`, never :math:`O(V)`.
    """

    def _compute_probs(self) -> Tensor:
        return self.prob(torch.arange(self.num_classes))

    def prob(self, ids: Tensor) -> Tensor:
        k = torch.as_tensor(ids).cpu().to(torch.float64)
        return torch.log1p(1.0 / (k + 1.0)) / math.log(self.num_classes + 1.0)

    @property
    def support_size(self) -> int:
        return self.num_classes

    def _draw(self, n, generator):
        u = torch.rand(n, generator=generator, dtype=torch.float64)
        ids = torch.floor(torch.exp(u * math.log(self.num_classes + 1.0))).long() - 1
        return ids.clamp_(0, self.num_classes - 1)


class UnigramSampler(CandidateSampler):
    r"""Unigram proposal with distortion ``alpha``: :math:`P(k) \propto \text{counts}_k^{\alpha}`.

    ``alpha=1`` is the unigram distribution, ``alpha=0`` uniform, ``0.75`` the word2vec default.
    Classes with a zero count get zero probability when ``alpha > 0`` (they are never sampled as
    negatives; smooth the counts, e.g. ``counts + 1``, if they can be targets).

    Args:
        counts: ``(V,)`` non-negative class counts (not all zero).
        alpha: distortion exponent, ``>= 0``.
        num_classes: optional ``V`` to check ``len(counts)`` against.
    """

    def __init__(self, counts, alpha: float = 0.75, num_classes: Optional[int] = None):
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) \
                or math.isnan(alpha) or math.isinf(alpha) or alpha < 0:
            raise ValueError(f"alpha must be a finite number >= 0, got {alpha!r}")
        if counts is None:
            raise ValueError("counts is required for the unigram sampler")
        c = torch.as_tensor(counts, dtype=torch.float64).detach().cpu()
        if c.dim() != 1 or c.numel() == 0:
            raise ValueError(f"counts must be a non-empty 1-D sequence, got shape {tuple(c.shape)}")
        if num_classes is not None and c.numel() != num_classes:
            raise ValueError(f"counts must have length num_classes={num_classes}, "
                             f"got {c.numel()}")
        if not torch.isfinite(c).all() or (c < 0).any():
            raise ValueError("counts must be finite and non-negative")
        if alpha > 0 and c.max() <= 0:
            raise ValueError("counts must not be all zero")
        super().__init__(c.numel())
        self.alpha = float(alpha)
        if self.alpha == 0:
            w = torch.ones_like(c)
        else:
            w = (c / c.max()) ** self.alpha        # scale first: no overflow for big counts
        self._probs = w / w.sum()

    def __repr__(self) -> str:
        return f"UnigramSampler(num_classes={self.num_classes}, alpha={self.alpha})"


def make_sampler(sampler: Union[str, CandidateSampler, Tensor, Sequence[float]],
                 num_classes: int, counts=None, alpha: float = 0.75) -> CandidateSampler:
    """Build a sampler from a name (``"log_uniform"``, ``"unigram"``, ``"uniform"``), an existing
    :class:`CandidateSampler` (returned as is, after checking its size), or a probability vector."""
    num_classes = check_positive_int(num_classes, "num_classes")
    if isinstance(sampler, CandidateSampler):
        s = sampler
    elif isinstance(sampler, str):
        name = sampler.lower().replace("-", "_")
        if name in ("log_uniform", "loguniform", "zipf"):
            s = LogUniformSampler(num_classes)
        elif name == "unigram":
            s = UnigramSampler(counts, alpha, num_classes=num_classes)
        elif name == "uniform":
            s = UniformSampler(num_classes)
        else:
            raise ValueError(f"unknown sampler {sampler!r}; expected one of {SAMPLERS}")
    elif isinstance(sampler, (Tensor, list, tuple)):
        s = CategoricalSampler(sampler)
    else:
        raise ValueError(f"sampler must be a name {SAMPLERS}, a CandidateSampler or a "
                         f"probability vector, got {type(sampler).__name__}")
    if s.num_classes != num_classes:
        raise ValueError(f"sampler has {s.num_classes} classes but the vocabulary has "
                         f"{num_classes}")
    return s


# ----------------------------------------------------------------------------------------------
# Functional sampled softmax
# ----------------------------------------------------------------------------------------------

def _check_num_sampled(num_sampled, num_classes: int) -> int:
    if isinstance(num_sampled, bool) or not isinstance(num_sampled, int):
        raise ValueError(f"num_sampled must be an integer, got {num_sampled!r}")
    if num_sampled <= 0:
        raise ValueError(f"num_sampled must be positive, got {num_sampled}")
    if num_sampled >= num_classes:
        raise ValueError(f"num_sampled must be < vocab_size ({num_classes}), got {num_sampled}; "
                         f"use the full softmax instead")
    return num_sampled


def compute_sampled_logits(hidden: Tensor, targets: Tensor, weight: Tensor,
                           bias: Optional[Tensor], num_sampled: int,
                           sampler: Union[CandidateSampler, Tensor],
                           remove_accidental_hits: bool = True,
                           generator: Optional[torch.Generator] = None, unique: bool = True,
                           sampled_values=None):
    r"""Corrected logits of the true class and of ``k`` sampled classes.

    Args:
        hidden: ``(N, H)`` (any leading dims are flattened).
        targets: ``(N,)`` int64 class ids (same leading dims as ``hidden``).
        weight: ``(V, H)`` class embeddings; only ``N + k`` rows are gathered.
        bias: ``(V,)`` or ``None``.
        num_sampled: ``k``, with ``0 < k < V``.
        sampler: a :class:`CandidateSampler` over ``V`` classes, or a ``(V,)`` probability vector.
        remove_accidental_hits: set the logit of a sampled id equal to the row's target to
            :math:`-\infty` (it is then excluded from the softmax).
        generator: optional CPU generator for the draw.
        unique: sample ``k`` distinct ids (default, as TF) instead of ``k`` draws with
            replacement (see the module docstring for which combinations with
            ``remove_accidental_hits`` are consistent).
        sampled_values: optional ``(sampled_ids (k,), true_log_q (N,), sampled_log_q (k,))`` to
            bypass the sampler (deterministic paths, tests, custom samplers); then ``k`` is taken
            from ``sampled_ids`` and ``num_sampled`` / ``sampler`` are not used.

    Returns:
        ``(logits, sampled_ids)``: ``logits`` is ``(N, 1 + k)`` with the true class in column 0
        (the label of every row is 0), ``sampled_ids`` is ``(k,)`` on ``weight``'s device.
    """
    if hidden.dim() < 1 or hidden.shape[-1] != weight.shape[-1]:
        raise ValueError(f"hidden last dim ({hidden.shape[-1] if hidden.dim() else None}) must "
                         f"equal weight's hidden size ({weight.shape[-1]})")
    num_classes, h = weight.shape
    hidden = hidden.reshape(-1, h)
    targets = targets.reshape(-1).long()
    if targets.numel() != hidden.shape[0]:
        raise ValueError(f"targets has {targets.numel()} elements but hidden has "
                         f"{hidden.shape[0]} rows")
    if bias is not None and bias.shape != (num_classes,):
        raise ValueError(f"bias must have shape ({num_classes},), got {tuple(bias.shape)}")
    dev, dt = weight.device, hidden.dtype

    if sampled_values is not None:
        sampled, true_lq, samp_lq = sampled_values
        sampled = torch.as_tensor(sampled).long().reshape(-1).to(dev)
        true_lq = torch.as_tensor(true_lq).reshape(-1).to(dev, dt)
        samp_lq = torch.as_tensor(samp_lq).reshape(-1).to(dev, dt)
    else:
        k = _check_num_sampled(num_sampled, num_classes)
        if not isinstance(sampler, CandidateSampler):
            sampler = make_sampler(sampler, num_classes)
        if sampler.num_classes != num_classes:
            raise ValueError(f"sampler has {sampler.num_classes} classes but weight has "
                             f"{num_classes} rows")
        ids, tries = sampler.sample(k, generator=generator, unique=unique, return_num_tries=True)
        true_lq = sampler.log_q(targets.cpu(), tries, unique).to(dev, dt)
        samp_lq = sampler.log_q(ids, tries, unique).to(dev, dt)
        sampled = ids.to(dev)

    targets = targets.to(dev)
    w_true = weight.index_select(0, targets)                  # (N, H)
    w_samp = weight.index_select(0, sampled)                  # (k, H)
    true_logits = (hidden * w_true).sum(-1)                   # (N,)
    samp_logits = hidden @ w_samp.t()                         # (N, k)
    if bias is not None:
        true_logits = true_logits + bias.index_select(0, targets)
        samp_logits = samp_logits + bias.index_select(0, sampled)
    true_logits = true_logits - true_lq
    samp_logits = samp_logits - samp_lq
    if remove_accidental_hits:
        hits = targets.unsqueeze(1) == sampled.unsqueeze(0)   # (N, k)
        samp_logits = samp_logits.masked_fill(hits, float("-inf"))
    return torch.cat([true_logits.unsqueeze(1), samp_logits], dim=1), sampled


def sampled_softmax_loss(hidden: Tensor, targets: Tensor, weight: Tensor, bias: Optional[Tensor],
                         num_sampled: int, sampler: Union[CandidateSampler, Tensor],
                         remove_accidental_hits: bool = True,
                         generator: Optional[torch.Generator] = None, unique: bool = True,
                         reduction: str = "mean", sampled_values=None) -> Tensor:
    r"""Sampled-softmax cross-entropy (Jean et al., 2015; ``tf.nn.sampled_softmax_loss``).

    ``k = num_sampled`` negatives are drawn once per call from ``sampler`` and shared by all rows;
    the true and sampled logits are each corrected by :math:`-\log Q` (expected count, see the
    module docstring); accidental hits are masked to :math:`-\infty`; the loss of a row is
    :math:`-\tilde z_0 + \operatorname{logsumexp}_i \tilde z_i`. See
    :func:`compute_sampled_logits` for the arguments.

    Shapes:
        hidden ``(N, H)``, targets ``(N,)``, weight ``(V, H)``, bias ``(V,)`` → scalar for
        ``reduction="mean"`` (default) or ``"sum"``, ``targets.shape`` for ``"none"``.

    Raises:
        ValueError: ``num_sampled <= 0`` or ``>= V``; unknown ``reduction``; shape mismatches.
    """
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")
    logits, _ = compute_sampled_logits(hidden, targets, weight, bias, num_sampled, sampler,
                                       remove_accidental_hits, generator, unique, sampled_values)
    labels = torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device)
    loss = F.cross_entropy(logits, labels, reduction=reduction)
    return loss.reshape(targets.shape) if reduction == "none" else loss


# ----------------------------------------------------------------------------------------------
# Modules
# ----------------------------------------------------------------------------------------------

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
        return F.linear(hidden, self.weight, self.bias)

    def log_prob(self, hidden: Tensor) -> Tensor:
        r"""Full log-softmax :math:`\log p(v \mid h)`: ``(*, H)`` → ``(*, V)``."""
        return F.log_softmax(self.logits(hidden), dim=-1)

    def full_loss(self, hidden: Tensor, targets: Tensor, reduction: str = "mean") -> Tensor:
        """Full-softmax cross-entropy: ``(*, H)``, ``(*)`` → scalar (or ``(*)`` for ``"none"``)."""
        if reduction not in _REDUCTIONS:
            raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")
        logits = self.logits(hidden).reshape(-1, self.vocab_size)
        loss = F.cross_entropy(logits, targets.reshape(-1).long(), reduction=reduction)
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
