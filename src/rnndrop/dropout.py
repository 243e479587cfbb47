"""The dropout family, each as a functional form and an ``nn.Module``.

All forms are *inverted*: kept units are rescaled during training so that ``E[output] = input``,
and every module is the identity in ``eval()`` mode.

=====================  ==========================================================================
``dropout``            Bernoulli dropout written from scratch (Dive into Deep Learning 3.13).
``locked_dropout``     variational / locked: one mask per sequence and feature, reused at every step.
``embedding_dropout``  drops whole word types: a dropped word is zero wherever it occurs.
``WeightDrop``         DropConnect on any named parameter of any module (fused kernels still run).
``gaussian_dropout``   multiplicative N(1, p/(1-p)) noise: the variance of Bernoulli dropout at p.
``three_value_dropout`` masks in {0, γ/2, γ} with probabilities {p, (1-p)/2, (1-p)/2}.
``concrete_dropout``   learned rate (Gal, Hron & Kendall 2017): a relaxed Bernoulli mask whose ``p``
                       is a parameter; ``concrete_regularizer`` is the prior's term for the loss.
=====================  ==========================================================================
"""
from __future__ import annotations

from typing import Iterable, Optional, Sequence, Union

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from ._checks import check_probability

__all__ = [
    "bernoulli_mask", "dropout", "Dropout", "locked_dropout", "LockedDropout",
    "embedding_dropout", "EmbeddingDropout", "WeightDrop", "gaussian_dropout", "GaussianDropout",
    "three_value_dropout", "ThreeValueDropout", "concrete_dropout", "concrete_mask",
    "concrete_embedding_dropout", "concrete_regularizer", "ConcreteDropout", "LockedConcreteDropout",
]


def bernoulli_mask(shape: Sequence[int], p: float, *, dtype=None, device=None,
                   generator: Optional[torch.Generator] = None) -> Tensor:
    """An inverted-dropout mask: each entry is ``1/(1-p)`` with probability ``1-p``, else 0.

    Drawn from scratch as in D2L: ``(U > p) / (1 - p)`` with ``U ~ Uniform[0, 1)``. ``p = 1``
    gives all zeros.
    """
    p = check_probability(p, "p", allow_one=True)
    if p == 1.0:
        return torch.zeros(shape, dtype=dtype, device=device)
    u = torch.rand(shape, dtype=dtype, device=device, generator=generator)
    return (u > p).to(u.dtype) / (1.0 - p)


# --------------------------------------------------------------------------------------------
# 1. Dropout from scratch
# --------------------------------------------------------------------------------------------
def dropout(input: Tensor, p: float = 0.5, training: bool = True,
            generator: Optional[torch.Generator] = None) -> Tensor:
    """Inverted dropout: ``h' = h · ξ / (1 - p)`` with ``ξ ~ Bernoulli(1 - p)`` per element.

    ``E[h'] = h`` and ``Var[h'] = h² p / (1 - p)``. Any shape; ``p = 1`` returns zeros.
    """
    p = check_probability(p, "p", allow_one=True)
    if not training or p == 0.0:
        return input
    return input * bernoulli_mask(input.shape, p, dtype=input.dtype, device=input.device,
                                  generator=generator)


class _DropoutBase(nn.Module):
    allow_one = True

    def __init__(self, p: float = 0.5):
        super().__init__()
        self.p = check_probability(p, "p", allow_one=self.allow_one)

    def extra_repr(self) -> str:
        return f"p={self.p}"


class Dropout(_DropoutBase):
    """Module form of :func:`dropout`. Shape: any; output has the input's shape."""

    def forward(self, input: Tensor) -> Tensor:
        return dropout(input, self.p, self.training)


# --------------------------------------------------------------------------------------------
# 2. Locked (variational) dropout
# --------------------------------------------------------------------------------------------
def locked_dropout(input: Tensor, p: float = 0.5, training: bool = True,
                   batch_first: bool = False) -> Tensor:
    """Variational dropout for sequences (Gal & Ghahramani 2016): one mask per sequence and
    feature, the same at every time step.

    Input ``(T, B, *F)`` (or ``(B, T, *F)`` with ``batch_first``); the mask has shape
    ``(1, B, *F)`` (``(B, 1, *F)``) and is broadcast over time.
    """
    p = check_probability(p, "p", allow_one=True)
    if not training or p == 0.0:
        return input
    if input.dim() < 2:
        raise ValueError(f"locked_dropout expects a sequence of at least 2 dims (time and batch), "
                         f"got shape {tuple(input.shape)}")
    shape = list(input.shape)
    shape[1 if batch_first else 0] = 1
    return input * bernoulli_mask(shape, p, dtype=input.dtype, device=input.device)


class LockedDropout(_DropoutBase):
    """Module form of :func:`locked_dropout`.

    Args:
        p: probability of dropping a unit (for a whole sequence).
        batch_first: input is ``(B, T, *F)`` instead of ``(T, B, *F)``.
    """

    def __init__(self, p: float = 0.5, batch_first: bool = False):
        super().__init__(p)
        self.batch_first = batch_first

    def forward(self, input: Tensor) -> Tensor:
        return locked_dropout(input, self.p, self.training, self.batch_first)

    def extra_repr(self) -> str:
        return f"p={self.p}, batch_first={self.batch_first}"


# --------------------------------------------------------------------------------------------
# 3. Embedding dropout (word types)
# --------------------------------------------------------------------------------------------
_EMB_MODES = ("batch", "sequence")


def _check_mode(mode: str, allowed: Sequence[str], name: str = "mode") -> str:
    if mode not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, allowed))}; got {mode!r}")
    return mode


def embedding_dropout(input: Tensor, weight: Tensor, p: float = 0.1, training: bool = True,
                      mode: str = "sequence", batch_first: bool = False,
                      padding_idx: Optional[int] = None, replicas: int = 1) -> Tensor:
    """Look up ``weight[input]`` with whole word types dropped.

    ``mode="batch"`` (AWD-LSTM): one Bernoulli mask over the vocabulary for the whole call; a
    dropped word is zero everywhere in the batch. ``mode="sequence"`` (Gal & Ghahramani): one mask
    per sequence; a word dropped in a sequence is zero at all its occurrences in that sequence,
    other sequences are unaffected. Kept rows are scaled by ``1/(1-p)``.

    ``replicas = R > 1`` (MC dropout's samples side by side) gives what ``input.repeat(1, R)``
    (``repeat(R, 1)`` with ``batch_first``) would give, the same masks from the same seed, with
    one lookup: replica ``r`` of sequence ``b`` is batch column ``r·B + b``, each with its own
    word-type mask in ``sequence`` mode.

    Shapes: ``input`` integer ``(T, B)`` (``(B, T)`` with ``batch_first``; in ``batch`` mode any
    shape), ``weight`` ``(V, D)``; output ``input.shape + (D,)``, with ``R·B`` sequences.
    """
    p = check_probability(p, "p", allow_one=True)
    _check_mode(mode, _EMB_MODES)
    if input.dtype not in (torch.int64, torch.int32):
        raise TypeError(f"embedding_dropout expects integer token ids, got {input.dtype}")
    _check_replicas(input, replicas)
    if not training or p == 0.0:
        return _repeat_batch(F.embedding(input, weight, padding_idx), replicas, batch_first)
    V = weight.shape[0]
    if mode == "batch":
        mask = bernoulli_mask((V, 1), p, dtype=weight.dtype, device=weight.device)
        return _repeat_batch(F.embedding(input, weight * mask, padding_idx), replicas,
                             batch_first)
    if input.dim() != 2:
        raise ValueError(f"mode='sequence' needs input of shape (T, B) or (B, T) with batch_first,"
                         f" got shape {tuple(input.shape)}")
    mask = _word_type_mask(input, V, batch_first, replicas, lambda n: bernoulli_mask(
        (n,), p, dtype=weight.dtype, device=weight.device))
    return _masked_lookup(F.embedding(input, weight, padding_idx), mask, batch_first)


def _check_replicas(input: Tensor, replicas: int) -> None:
    if isinstance(replicas, bool) or not isinstance(replicas, int) or replicas < 1:
        raise ValueError(f"replicas must be an integer >= 1, got {replicas!r}")
    if replicas > 1 and input.dim() != 2:
        raise ValueError(f"replicas > 1 needs input of shape (T, B) or (B, T), got shape "
                         f"{tuple(input.shape)}")


def _repeat_batch(emb: Tensor, replicas: int, batch_first: bool) -> Tensor:
    """``emb`` ``(T, B, D)`` (``(B, T, D)``) with its batch repeated ``replicas`` times."""
    if replicas == 1:
        return emb
    return emb.repeat(replicas, 1, 1) if batch_first else emb.repeat(1, replicas, 1)


def _word_type_mask(input: Tensor, V: int, batch_first: bool, replicas: int, draw) -> Tensor:
    """One mask entry per (sequence, word type) that occurs, ``draw(n)`` giving ``n`` of them:
    ``(R, *input.shape)``, O(T·B) rather than O(B·V)."""
    seq = torch.arange(input.shape[0 if batch_first else 1], device=input.device)
    seq = seq.unsqueeze(1) if batch_first else seq.unsqueeze(0)
    uniq, inverse = torch.unique(seq * V + input.long(), return_inverse=True)
    # The sorted keys of the repeated batch are these U keys once per replica in turn
    # (sequence r·B + b), so R·U entries read row by row are exactly the masks that
    # input.repeat would draw: sharing the lookup changes no result.
    return draw(replicas * uniq.numel()).view(replicas, -1)[:, inverse]


def _masked_lookup(emb: Tensor, mask: Tensor, batch_first: bool) -> Tensor:
    """``emb`` ``(T, B, D)`` (``(B, T, D)``) times the replicas' masks ``(R, T, B)``
    (``(R, B, T)``): ``(T, R·B, D)`` (``(R·B, T, D)``) in one product, no repeated copy."""
    R = mask.shape[0]
    if batch_first:
        out = emb.unsqueeze(0) * mask.unsqueeze(-1)                     # (R, B, T, D)
        return out.reshape(R * emb.shape[0], *emb.shape[1:])
    out = emb.unsqueeze(1) * mask.permute(1, 0, 2).unsqueeze(-1)        # (T, R, B, D)
    return out.reshape(emb.shape[0], R * emb.shape[1], emb.shape[2])


class EmbeddingDropout(nn.Embedding):
    """``nn.Embedding`` with word-type dropout (see :func:`embedding_dropout`).

    Args: as ``nn.Embedding``, plus ``dropout`` (probability of dropping a word type), ``mode``
    (``"sequence"`` or ``"batch"``) and ``batch_first`` (layout of the ids in ``sequence`` mode).
    """

    def __init__(self, num_embeddings: int, embedding_dim: int, dropout: float = 0.1,
                 mode: str = "sequence", batch_first: bool = False, **kwargs):
        super().__init__(num_embeddings, embedding_dim, **kwargs)
        self.dropout = check_probability(dropout, "dropout", allow_one=True)
        self.mode = _check_mode(mode, _EMB_MODES)
        self.batch_first = batch_first
        if self.max_norm is not None or self.sparse:
            raise ValueError("EmbeddingDropout does not support max_norm or sparse gradients")

    def forward(self, input: Tensor, replicas: int = 1) -> Tensor:
        """``replicas``: see :func:`embedding_dropout` (MC dropout's samples in one lookup)."""
        return embedding_dropout(input, self.weight, self.dropout, self.training, self.mode,
                                 self.batch_first, self.padding_idx, replicas)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", dropout={self.dropout}, mode={self.mode!r}"


# --------------------------------------------------------------------------------------------
# 4. DropConnect / weight dropout
# --------------------------------------------------------------------------------------------
_WD_MODES = ("element", "column")


def weight_dropout(weight: Tensor, p: float, training: bool = True, mode: str = "element",
                   groups: int = 1) -> Tensor:
    """DropConnect on a weight matrix ``(out, in)``.

    ``mode="element"``: each entry dropped independently. ``mode="column"``: whole input columns
    dropped — for ``W_hh`` that equals dropping hidden units ``h_{t-1}`` with one mask shared by
    the whole batch. With ``groups > 1`` (e.g. 4 LSTM gates stacked in ``W_hh``) each block of
    ``out/groups`` rows gets its own column mask (untied gate masks).
    """
    p = check_probability(p, "p", allow_one=True)
    _check_mode(mode, _WD_MODES)
    if not training or p == 0.0:
        return weight
    if mode == "element":
        return weight * bernoulli_mask(weight.shape, p, dtype=weight.dtype, device=weight.device)
    if weight.dim() < 2 or weight.shape[0] % groups:
        raise ValueError(f"column DropConnect needs a matrix whose rows split into {groups} "
                         f"groups, got shape {tuple(weight.shape)}")
    mask = bernoulli_mask((groups, 1, weight.shape[1]), p, dtype=weight.dtype,
                          device=weight.device)
    return (weight.reshape(groups, -1, weight.shape[1]) * mask).reshape(weight.shape)


class WeightDrop(nn.Module):
    """Wrap ``module`` so that the named parameters are DropConnect-ed on every training call.

    The stored parameters are never modified: each forward call builds dropped copies and runs
    the wrapped module on them with :func:`torch.func.functional_call`, so fused kernels (e.g.
    ``nn.LSTM``'s) still run. In ``eval()`` the module runs on its stored weights.

    Args:
        module: any ``nn.Module``.
        weights: name or list of names of parameters of ``module`` (e.g. ``"weight_hh_l0"``).
        p: drop probability.
        mode: ``"element"`` or ``"column"`` (see :func:`weight_dropout`).
        groups: row groups with their own column masks (``4`` for untied LSTM gates).

    Example::

        >>> lstm = WeightDrop(nn.LSTM(10, 20), ["weight_hh_l0"], p=0.5)
        >>> out, (h, c) = lstm(torch.randn(5, 3, 10))
    """

    def __init__(self, module: nn.Module, weights: Union[str, Iterable[str]], p: float = 0.5,
                 mode: str = "element", groups: int = 1):
        super().__init__()
        self.module = module
        self.weights = [weights] if isinstance(weights, str) else list(weights)
        self.p = check_probability(p, "p", allow_one=True)
        self.mode = _check_mode(mode, _WD_MODES)
        self.groups = groups
        params = dict(module.named_parameters())
        missing = [w for w in self.weights if w not in params]
        if missing:
            raise ValueError(f"{type(module).__name__} has no parameter(s) {missing}; "
                             f"available: {sorted(params)}")

    def forward(self, *args, **kwargs):
        if not self.training or self.p == 0.0:
            return self.module(*args, **kwargs)
        params = dict(self.module.named_parameters())
        dropped = {name: weight_dropout(params[name], self.p, True, self.mode, self.groups)
                   for name in self.weights}
        return functional_call(self.module, dropped, args, kwargs)

    def extra_repr(self) -> str:
        return f"weights={self.weights}, p={self.p}, mode={self.mode!r}"


# --------------------------------------------------------------------------------------------
# 5. Other noise distributions (D2L exercises)
# --------------------------------------------------------------------------------------------
def gaussian_dropout(input: Tensor, p: float = 0.5, training: bool = True) -> Tensor:
    """Multiplicative Gaussian noise ``h' = h · ξ``, ``ξ ~ N(1, p/(1-p))``: the same mean and
    variance as inverted Bernoulli dropout at ``p`` (Srivastava et al. 2014, §10)."""
    p = check_probability(p, "p")
    if not training or p == 0.0:
        return input
    std = (p / (1.0 - p)) ** 0.5
    return input * (1.0 + std * torch.randn_like(input))


def three_value_dropout(input: Tensor, p: float = 0.5, training: bool = True) -> Tensor:
    """Mask values ``{0, γ/2, γ}`` with probabilities ``{p, (1-p)/2, (1-p)/2}``.

    ``E[ξ] = (1-p)·3γ/4 = 1`` gives ``γ = 4 / (3 (1-p))``; ``Var[ξ] = (1-p)·5γ²/8 - 1``.
    """
    p = check_probability(p, "p")
    if not training or p == 0.0:
        return input
    gamma = 4.0 / (3.0 * (1.0 - p))
    u = torch.rand_like(input)
    half = (1.0 - p) / 2.0
    mask = torch.where(u < p, 0.0, torch.where(u < p + half, gamma / 2, gamma)).to(input.dtype)
    return input * mask


class GaussianDropout(_DropoutBase):
    """Module form of :func:`gaussian_dropout` (``p`` in [0, 1))."""
    allow_one = False

    def forward(self, input: Tensor) -> Tensor:
        return gaussian_dropout(input, self.p, self.training)


class ThreeValueDropout(_DropoutBase):
    """Module form of :func:`three_value_dropout` (``p`` in [0, 1))."""
    allow_one = False

    def forward(self, input: Tensor) -> Tensor:
        return three_value_dropout(input, self.p, self.training)


# --------------------------------------------------------------------------------------------
# 6. Concrete dropout: learned rates (Gal, Hron & Kendall 2017)
# --------------------------------------------------------------------------------------------
def concrete_dropout(input: Tensor, p_logit: Tensor, training: bool = True,
                     temperature: float = 0.1, locked: bool = False, batch_first: bool = False,
                     generator: Optional[torch.Generator] = None, eps: float = 1e-7) -> Tensor:
    """Dropout whose probability ``p = σ(p_logit)`` is learned (Concrete dropout).

    The Bernoulli "drop" indicator is replaced by its Concrete (relaxed Bernoulli) sample, which
    is differentiable in ``p``::

        u ~ U(0, 1)
        z̃ = σ((log p - log(1-p) + log u - log(1-u)) / t)      (→ Bernoulli(p) as t → 0)
        output = input ∘ (1 - z̃) / (1 - p)                      (inverted: E[mask] ≈ 1)

    with ``log p - log(1-p) = p_logit`` exactly, and ``t = temperature`` (the paper's 0.1). In
    ``training=False`` the input is returned (the expectation, as for every dropout here; MC
    dropout runs it with ``training=True``). Gradients reach ``p_logit`` through ``z̃`` and
    ``1/(1-p)``; add :func:`concrete_regularizer` to the loss, or ``p`` only shrinks.

    Shapes: ``input`` any shape; ``p_logit`` a scalar tensor (one rate per site, as the paper).
    ``locked=True`` (variational): the input is a sequence ``(T, B, *F)`` (``(B, T, *F)`` with
    ``batch_first``) and the mask ``(1, B, *F)`` (``(B, 1, *F)``) is the same at every step;
    else the mask has the input's shape.
    """
    if not training:
        return input
    shape = list(input.shape)
    if locked:
        if input.dim() < 2:
            raise ValueError(f"locked concrete dropout expects a sequence of at least 2 dims "
                             f"(time and batch), got shape {tuple(input.shape)}")
        shape[1 if batch_first else 0] = 1
    return input * concrete_mask(shape, p_logit, temperature, dtype=input.dtype,
                                 device=input.device, generator=generator, eps=eps)


def concrete_mask(shape: Sequence[int], p_logit: Tensor, temperature: float = 0.1, *,
                  dtype=None, device=None, generator: Optional[torch.Generator] = None,
                  eps: float = 1e-7) -> Tensor:
    """The relaxed inverted-dropout mask ``(1 - z̃) / (1 - p)`` of :func:`concrete_dropout`, of
    ``shape``, differentiable in ``p_logit`` (a scalar tensor)."""
    u = torch.rand(shape, dtype=dtype, device=device, generator=generator)
    noise = torch.log(u + eps) - torch.log1p(eps - u)                  # log u - log(1-u)
    drop = torch.sigmoid((p_logit.to(u.dtype) + noise) / temperature)
    keep = torch.sigmoid(-p_logit).to(u.dtype)                          # 1 - p, never 0
    return (1 - drop) / keep


def concrete_embedding_dropout(input: Tensor, weight: Tensor, p_logit: Tensor,
                               training: bool = True, temperature: float = 0.1,
                               batch_first: bool = False,
                               padding_idx: Optional[int] = None, replicas: int = 1) -> Tensor:
    """:func:`embedding_dropout` in ``mode="sequence"`` with a learned rate: one relaxed mask
    entry (:func:`concrete_mask`) per sequence and word type that occurs, so a word type
    dropped in a sequence is (nearly) zero at all its occurrences there. Shapes: ``input``
    integer ``(T, B)`` (``(B, T)`` with ``batch_first``), ``weight`` ``(V, D)``; output
    ``input.shape + (D,)``; ``replicas`` as in :func:`embedding_dropout`. For
    :func:`concrete_regularizer` the dropped input is the one-hot word, ``K = V``."""
    _check_replicas(input, replicas)
    if not training:
        return _repeat_batch(F.embedding(input, weight, padding_idx), replicas, batch_first)
    if input.dim() != 2:
        raise ValueError(f"concrete_embedding_dropout needs input of shape (T, B), got shape "
                         f"{tuple(input.shape)}")
    mask = _word_type_mask(input, weight.shape[0], batch_first, replicas, lambda n: concrete_mask(
        (n,), p_logit, temperature, dtype=weight.dtype, device=weight.device))
    return _masked_lookup(F.embedding(input, weight, padding_idx), mask, batch_first)


def concrete_regularizer(p_logit: Tensor, weights: Iterable[Tensor] = (), input_dim: int = 1,
                         weight_regularizer: float = 1e-6,
                         dropout_regularizer: float = 1e-5) -> Tensor:
    """The regulariser of Concrete dropout for one site (Gal, Hron & Kendall 2017, their code)::

        R = weight_regularizer · Σ_W ‖W‖² / (1 - p)
            + dropout_regularizer · K · (p log p + (1 - p) log(1 - p))

    ``weights``: the matrices the dropped input multiplies (its next layer's), ``K =
    input_dim`` the number of features dropped. The second term is minus ``K`` times the
    Bernoulli entropy: it pulls ``p`` toward 1/2 against the first, which pulls it toward 0.
    The scales carry the data-set size ``N`` the loss is averaged over: the paper's
    ``weight_regularizer = l² / (τ N)`` (prior length-scale ``l``, precision ``τ``) and
    ``dropout_regularizer = 2 / (τ N)``. Returns a scalar tensor with gradients to ``p_logit``
    and the weights.
    """
    log_p, log_q = F.logsigmoid(p_logit), F.logsigmoid(-p_logit)        # log p, log(1 - p)
    sq = sum((w.square().sum() for w in weights), p_logit.new_zeros(()))
    neg_entropy = log_p.exp() * log_p + log_q.exp() * log_q
    return (weight_regularizer * sq / log_q.exp() + dropout_regularizer * input_dim * neg_entropy).sum()


def _check_open_probability(p: float, name: str) -> float:
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 < float(p) < 1.0:
        raise ValueError(f"{name} must be in (0, 1) (a learned rate starts inside), got {p!r}")
    return float(p)


class ConcreteDropout(nn.Module):
    """Module form of :func:`concrete_dropout`: one learned rate, its logit a parameter.

    Args:
        p: the initial drop probability, in (0, 1) (``p_logit = log p - log(1-p)``).
        temperature: of the relaxed mask (the paper: 0.1).
        weight_regularizer, dropout_regularizer: the scales of :meth:`regularizer` (see
            :func:`concrete_regularizer`; the paper's ``l²/(τN)`` and ``2/(τN)``).
        batch_first: for the locked form, the input is ``(B, T, *F)``.

    ``p`` (a float) is the current rate; :meth:`regularizer` takes the weights that the
    dropped input multiplies, with ``K`` the last input's number of features unless given.
    Shapes: as :func:`concrete_dropout`.
    """
    locked = False

    def __init__(self, p: float = 0.5, temperature: float = 0.1,
                 weight_regularizer: float = 1e-6, dropout_regularizer: float = 1e-5,
                 batch_first: bool = False):
        super().__init__()
        p = _check_open_probability(p, "p")
        if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) \
                or not temperature > 0:
            raise ValueError(f"temperature must be a positive number, got {temperature!r}")
        self.temperature = float(temperature)
        self.weight_regularizer, self.dropout_regularizer = weight_regularizer, dropout_regularizer
        self.batch_first = batch_first
        self.p_logit = nn.Parameter(torch.tensor(math.log(p) - math.log1p(-p)))
        self.input_dim: Optional[int] = None

    @property
    def p(self) -> float:
        return torch.sigmoid(self.p_logit.detach()).item()

    def forward(self, input: Tensor) -> Tensor:
        self.input_dim = input.shape[-1]
        return concrete_dropout(input, self.p_logit, self.training, self.temperature,
                                self.locked, self.batch_first)

    def regularizer(self, *weights: Tensor, input_dim: Optional[int] = None) -> Tensor:
        K = input_dim if input_dim is not None else self.input_dim
        if K is None:
            raise ValueError("input_dim is unknown before the first forward call; give input_dim=")
        return concrete_regularizer(self.p_logit, weights, K, self.weight_regularizer,
                                    self.dropout_regularizer)

    def extra_repr(self) -> str:
        return (f"p={self.p:.4g} (learned), temperature={self.temperature}"
                + (", locked" if self.locked else ""))


class LockedConcreteDropout(ConcreteDropout):
    """:class:`ConcreteDropout` with one mask per sequence (``(1, B, *F)`` for ``(T, B, *F)``),
    the same at every step: the learned-rate form of :class:`LockedDropout`."""
    locked = True
