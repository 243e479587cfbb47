"""Gradient clipping that reports what it did, and a running record of it for trainers.

:func:`clip_grad_norm` and :func:`clip_grad_value` are ``torch.nn.utils``' in-place clipping,
returning :class:`ClipStats` / :class:`ClipValueStats`; :class:`ClipMonitor` accumulates them over
steps (``LMTrainer`` keeps one per epoch and checkpoints it).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Union

import torch
from torch import Tensor

__all__ = ["ClipStats", "ClipValueStats", "clip_grad_norm", "clip_grad_norm_tensor",
           "clip_grad_value", "ClipMonitor"]


def _params_list(params) -> list[Tensor]:
    if isinstance(params, Tensor):
        return [params]
    return list(params)


@dataclass(frozen=True)
class ClipStats:
    """What :func:`clip_grad_norm` did: ``total_norm`` before clipping, whether it ``clipped``
    (``total_norm > max_norm``), the ``scale`` applied to the gradients (1.0 when not clipped)
    and whether the norm was ``finite``."""
    total_norm: float
    max_norm: float
    clipped: bool
    scale: float
    finite: bool = True

    @classmethod
    def of(cls, total_norm: float, max_norm: float) -> "ClipStats":
        """The record of a clip whose pre-clip norm was ``total_norm`` (read back later, e.g.
        from :func:`clip_grad_norm_tensor`)."""
        total = float(total_norm)
        finite = math.isfinite(total)
        clipped = finite and total > max_norm
        scale = min(1.0, max_norm / (total + 1e-6)) if finite else float("nan")
        return cls(total, float(max_norm), clipped, scale, finite)


@dataclass(frozen=True)
class ClipValueStats:
    """What :func:`clip_grad_value` did: ``num_clipped`` of ``numel`` gradient elements had
    ``|g| > clip_value`` (``fraction_clipped``); ``max_abs`` is the largest ``|g|`` before."""
    clip_value: float
    num_clipped: int
    numel: int
    fraction_clipped: float
    max_abs: float


def clip_grad_norm(params, max_norm: float, norm_type: float = 2.0,
                   error_if_nonfinite: bool = False) -> ClipStats:
    """``torch.nn.utils.clip_grad_norm_`` (gradients scaled in place by
    ``min(1, max_norm / (total_norm + 1e-6))``), reporting the pre-clip total norm, whether it
    clipped and the scale. Parameters without ``.grad`` are ignored."""
    total = clip_grad_norm_tensor(params, max_norm, norm_type, error_if_nonfinite)
    return ClipStats.of(float(total), max_norm)


def clip_grad_norm_tensor(params, max_norm: float, norm_type: float = 2.0,
                          error_if_nonfinite: bool = False) -> Tensor:
    """:func:`clip_grad_norm` without reading anything back: the pre-clip total norm stays a
    0-d tensor on the gradients' device (torch scales by the clamped coefficient on the device),
    so a CUDA training loop need not wait for the GPU at every step;
    ``ClipStats.of(float(norm), max_norm)`` gives the record when it is read."""
    return torch.nn.utils.clip_grad_norm_(_params_list(params), max_norm, norm_type=norm_type,
                                          error_if_nonfinite=error_if_nonfinite)


def clip_grad_value(params, clip_value: float) -> ClipValueStats:
    """``torch.nn.utils.clip_grad_value_`` (every gradient element clamped to
    ``[-clip_value, clip_value]`` in place), reporting how many elements were clipped."""
    if clip_value < 0:
        raise ValueError(f"clip_value must be >= 0, got {clip_value}")
    params = [p for p in _params_list(params) if p.grad is not None]
    n = 0
    clipped = 0
    max_abs = 0.0
    for p in params:
        g = p.grad.detach()
        n += g.numel()
        if g.numel():
            clipped += int((g.abs() > clip_value).sum())
            max_abs = max(max_abs, float(g.abs().max()))
    torch.nn.utils.clip_grad_value_(params, clip_value)
    return ClipValueStats(float(clip_value), clipped, n, clipped / n if n else 0.0, max_abs)


class ClipMonitor:
    """Running record of gradient clipping across training steps, for trainers to log.

    >>> mon = ClipMonitor()
    >>> stats = mon.clip_grad_norm(model.parameters(), 5.0)   # clips and records   # doctest: +SKIP
    >>> mon.summary()   # {'steps': …, 'clipped': …, 'fraction_clipped': …, 'mean_norm': …, …}  # doctest: +SKIP

    Norm clipping (:class:`ClipStats`): ``steps``, ``clipped`` (count), ``fraction_clipped``,
    ``mean_norm`` / ``max_norm`` of the pre-clip total norm over finite steps, ``mean_scale``
    (mean factor applied on clipped steps: how much clipping acted), ``nonfinite`` steps.
    Value clipping (:class:`ClipValueStats`): ``value_steps``, ``value_fraction_clipped`` (mean
    fraction of elements clipped per step). ``state_dict``/``load_state_dict`` for checkpoints.
    """

    _FIELDS = ("steps", "clipped", "nonfinite", "norm_sum", "norm_max", "finite_steps",
               "scale_sum", "value_steps", "value_fraction_sum")

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.steps = self.clipped = self.nonfinite = self.finite_steps = self.value_steps = 0
        self.norm_sum = self.norm_max = self.scale_sum = self.value_fraction_sum = 0.0

    def update(self, stats: Union[ClipStats, ClipValueStats]) -> Union[ClipStats, ClipValueStats]:
        """Record one step's statistics; returns them."""
        if isinstance(stats, ClipValueStats):
            self.value_steps += 1
            self.value_fraction_sum += stats.fraction_clipped
            return stats
        self.steps += 1
        if not stats.finite:
            self.nonfinite += 1
            return stats
        self.finite_steps += 1
        self.norm_sum += stats.total_norm
        self.norm_max = max(self.norm_max, stats.total_norm)
        if stats.clipped:
            self.clipped += 1
            self.scale_sum += stats.scale
        return stats

    def clip_grad_norm(self, params, max_norm: float, norm_type: float = 2.0) -> ClipStats:
        """:func:`clip_grad_norm` and record it."""
        return self.update(clip_grad_norm(params, max_norm, norm_type))

    def clip_grad_value(self, params, clip_value: float) -> ClipValueStats:
        """:func:`clip_grad_value` and record it."""
        return self.update(clip_grad_value(params, clip_value))

    @property
    def fraction_clipped(self) -> float:
        return self.clipped / self.steps if self.steps else 0.0

    @property
    def mean_norm(self) -> float:
        return self.norm_sum / self.finite_steps if self.finite_steps else float("nan")

    @property
    def max_norm(self) -> float:
        return self.norm_max if self.finite_steps else float("nan")

    @property
    def mean_scale(self) -> float:
        return self.scale_sum / self.clipped if self.clipped else 1.0

    def summary(self) -> dict[str, float]:
        out = {"steps": self.steps, "clipped": self.clipped,
               "fraction_clipped": self.fraction_clipped, "mean_norm": self.mean_norm,
               "max_norm": self.max_norm, "mean_scale": self.mean_scale,
               "nonfinite": self.nonfinite}
        if self.value_steps:
            out["value_steps"] = self.value_steps
            out["value_fraction_clipped"] = self.value_fraction_sum / self.value_steps
        return out

    def state_dict(self) -> dict:
        return {f: getattr(self, f) for f in self._FIELDS}

    def load_state_dict(self, state: Mapping) -> None:
        for f in self._FIELDS:
            setattr(self, f, type(getattr(self, f))(state[f]))

    def __repr__(self) -> str:
        s = self.summary()
        return (f"ClipMonitor(steps={s['steps']}, clipped={s['clipped']}, "
                f"mean_norm={s['mean_norm']:.4g}, max_norm={s['max_norm']:.4g})")
