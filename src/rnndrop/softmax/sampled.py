"""The functional sampled softmax: corrected logits over the target and k candidates, and
its loss (TensorFlow's ``sampled_softmax_loss`` semantics)."""
from __future__ import annotations

from typing import Optional, Union

import torch
import torch.nn.functional as F
from torch import Tensor

from .samplers import CandidateSampler, make_sampler

_REDUCTIONS = ("mean", "sum", "none")


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
