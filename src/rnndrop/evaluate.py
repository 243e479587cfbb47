"""Perplexity of a language model: the standard dropout approximation and MC dropout.

Standard (eval mode): dropout off, ``ppl = exp(-1/N Σ log p(w_i | w_<i))``.

MC dropout (Gal & Ghahramani 2016): dropout stays on; for each target token the *probabilities*
of S stochastic passes are averaged, ``p̄(w_i) = 1/S Σ_s p_s(w_i)``, and
``ppl = exp(-1/N Σ log p̄(w_i))``. The S samples run in one pass by replicating every stream
S times along the batch: the masks are per sequence, so each replica draws its own masks and
carries its own hidden state from window to window.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor
from tqdm.auto import tqdm

from .data.text import bptt_windows


def exp_or_inf(x: float) -> float:
    """``exp(x)`` for a perplexity, ``inf`` where it overflows (a diverged loss past ~709 nats
    must be reported, not crash the report)."""
    try:
        return math.exp(x)
    except OverflowError:
        return math.inf


@torch.no_grad()
def perplexity(model, source: Tensor, bptt: int = 35, mc_samples: int = 0,
               mc_batch: int = 0, progress: bool = False) -> float:
    """Perplexity of ``model`` on ``source`` ``(N, B)`` (a batchified stream).

    ``mc_samples = 0``: eval mode. ``mc_samples = S > 0``: MC dropout with S samples, run
    ``mc_batch`` samples at a time (0: all S in one pass).
    """
    if mc_samples < 0:
        raise ValueError(f"mc_samples must be >= 0, got {mc_samples}")
    was_training = model.training
    try:
        if mc_samples == 0:
            model.eval()
            return exp_or_inf(_nll_sum(model, source, bptt, 1, progress) / _count(source))
        model.train()
        chunk = mc_batch or mc_samples
        # log p̄ = logsumexp_s log p_s - log S, accumulated chunk by chunk of samples.
        parts = []
        for start in range(0, mc_samples, chunk):
            s = min(chunk, mc_samples - start)
            parts.append(_token_logp(model, source, bptt, s, progress))   # (s, N-1, B)
        logp = torch.cat(parts, 0)
        lp_bar = torch.logsumexp(logp, 0) - math.log(mc_samples)
        return exp_or_inf(-lp_bar.sum().item() / _count(source))
    finally:
        model.train(was_training)


def _count(source: Tensor) -> int:
    return (source.shape[0] - 1) * source.shape[1]


def _nll_sum(model, source, bptt, samples, progress) -> float:
    return -_token_logp(model, source, bptt, samples, progress).sum().item()


def _token_logp(model, source: Tensor, bptt: int, samples: int, progress: bool) -> Tensor:
    """log p(target) for every position, ``(samples, N-1, B)``; sample s uses batch columns
    ``s*B … (s+1)*B-1`` of a stream replicated ``samples`` times."""
    B = source.shape[1]
    device = next(model.parameters()).device
    state = model.init_state(B * samples, device)
    # Written in place rather than collected in a list and concatenated: small tensors kept
    # alive between each window's large (T, S*B, V) temporaries fragment the CPU heap, and the
    # process then grew by ~3 GB over a PTB validation pass instead of reusing that memory.
    out = torch.empty(samples, source.shape[0] - 1, B, dtype=torch.float32, device=device)
    windows = bptt_windows(source, bptt)
    if progress:
        windows = tqdm(windows, total=math.ceil((source.shape[0] - 1) / bptt), desc="eval",
                       leave=False)
    i = 0
    for _, x, y in windows:
        x, y = x.to(device), y.to(device).repeat(1, samples)
        # the replicas share the window's embedding lookup (each draws its own masks)
        hidden, state = model(x, state, replicas=samples) if samples > 1 else model(x, state)
        tok = model.target_log_prob(hidden, y)                        # (T, S*B)
        n = tok.shape[0]
        out[:, i:i + n] = tok.view(n, samples, B).transpose(0, 1)
        i += n
        del hidden
    return out
