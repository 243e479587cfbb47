"""Proposal distributions for sampled softmax: uniform, log-uniform (Zipf), unigram^alpha,
any categorical; draws with or without replacement and their expected counts."""
from __future__ import annotations

import math
from typing import Optional, Sequence, Union

import torch
from torch import Tensor

from .._checks import check_positive_int

SAMPLERS = ("log_uniform", "unigram", "uniform")

# Floor of an expected count before its log is taken: a class with zero proposal probability
# gets a large finite correction (about +708) rather than +inf (which would make the loss NaN).
_TINY = torch.finfo(torch.float64).tiny


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
