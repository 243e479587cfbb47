"""Sampling text from a language model: temperature and top-k, one token at a time.

The model reads the context (``<eos>`` and the prompt: a stream after an ``<eos>`` is how every
line starts in training) and then, per step, its last output's distribution
``p_i ∝ exp(log p(i) / temperature)`` restricted to the ``top_k`` most likely tokens gives the
next token, which is fed back with the carried LSTM state. As the temperature goes to 0 the
draw becomes the argmax (greedy decoding); ``top_k = 1`` is greedy at any temperature.
Eval mode (no dropout: the dropout approximation of the predictive distribution).
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import Tensor


def check_sampling(temperature: float, top_k: int, n_tokens: int) -> None:
    """One-line errors, naming the option, for values that sample nothing meaningful."""
    if not (isinstance(temperature, (int, float)) and temperature > 0
            and temperature != float("inf")):
        raise ValueError(f"--temperature must be a finite number > 0 (near 0: greedy), "
                         f"got {temperature!r}")
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 0:
        raise ValueError(f"--top-k must be an integer >= 0 (0: the whole vocabulary), got {top_k!r}")
    if isinstance(n_tokens, bool) or not isinstance(n_tokens, int) or n_tokens < 0:
        raise ValueError(f"--tokens must be an integer >= 0, got {n_tokens!r}")


def next_token_weights(log_probs: Tensor, temperature: float, top_k: int = 0) -> Tensor:
    """Unnormalised sampling weights ``(V,)`` from a log-distribution ``(V,)``: tempered, and
    zero outside the ``top_k`` largest (0: keep all). Float64, with the maximum subtracted, so a
    tiny temperature leaves exactly the argmax rather than overflowing to NaN."""
    z = log_probs.double() / temperature
    if top_k and top_k < z.numel():
        kth = torch.topk(z, top_k).values[-1]
        z = torch.where(z >= kth, z, torch.full_like(z, -float("inf")))
    return torch.exp(z - z.max())


@torch.no_grad()
def sample(model, context: Sequence[int], n_tokens: int, temperature: float = 1.0,
           top_k: int = 0, generator: Optional[torch.Generator] = None) -> list[int]:
    """``n_tokens`` ids drawn from ``model`` (in eval mode; its mode is restored afterwards)
    after the ids ``context`` (at least one). ``generator``: the draws' RNG (a fixed seed
    repeats the text)."""
    check_sampling(temperature, top_k, n_tokens)
    if len(context) == 0:
        raise ValueError("sample needs at least one context token (e.g. <eos>)")
    device = next(model.parameters()).device
    was = model.training
    model.eval()
    try:
        x = torch.tensor(list(context), dtype=torch.long, device=device).view(-1, 1)
        hidden, state = model(x, model.init_state(1, device))
        out: list[int] = []
        for _ in range(n_tokens):
            logp = model.log_prob(hidden[-1:]).view(-1)
            w = next_token_weights(logp, temperature, top_k).cpu()
            tok = int(torch.multinomial(w, 1, generator=generator))
            out.append(tok)
            hidden, state = model(torch.tensor([[tok]], device=device), state)
        return out
    finally:
        model.train(was)
