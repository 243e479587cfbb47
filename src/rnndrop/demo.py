"""A one-minute demo: a variational LSTM learns a delayed-recall task generated on the fly
(:func:`rnndrop.data.synthetic.delayed_recall`).

Each sequence is random tokens; the target at step t is the token seen ``delay`` steps earlier,
so the network must carry information through its recurrent state — exactly where recurrent
(variational) dropout acts. The loss starts at log(vocab) and falls as the LSTM learns to recall.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .data.synthetic import delayed_recall
from .dropout import EmbeddingDropout
from .rnn import LSTM


class RecallModel(nn.Module):
    def __init__(self, vocab: int, hidden: int, p: float):
        super().__init__()
        self.embed = EmbeddingDropout(vocab, hidden, dropout=0.0)
        self.rnn = LSTM(hidden, hidden, num_layers=1, dropout_input=p, dropout_hidden=p,
                        dropout_output=p)
        self.head = nn.Linear(hidden, vocab)

    def forward(self, tokens):
        out, _ = self.rnn(self.embed(tokens))
        return self.head(out)


def run_demo(steps: int = 300, seed: int = 0, vocab: int = 8, delay: int = 3, hidden: int = 64,
             p: float = 0.1, every: int = 25, print_fn=print) -> list[float]:
    """Train and print the loss every ``every`` steps; returns the logged losses."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model = RecallModel(vocab, hidden, p)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    print_fn(f"rnndrop demo: variational LSTM (p={p} on inputs, recurrent state and outputs) "
             f"recalls the token seen {delay} steps ago; chance loss = ln {vocab} = {math.log(vocab):.3f}")
    losses, running = [], 0.0
    for step in range(1, steps + 1):
        x, y = delayed_recall(32, 20, vocab, delay, gen)
        loss = F.cross_entropy(model(x).reshape(-1, vocab), y.reshape(-1), ignore_index=-100)
        opt.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        running += loss.item()
        if step % every == 0:
            losses.append(running / every)
            print_fn(f"step {step:4d}  loss {losses[-1]:.4f}")
            running = 0.0
    model.eval()
    with torch.no_grad():
        x, y = delayed_recall(256, 20, vocab, delay, gen)
        acc = (model(x).argmax(-1) == y)[delay:].float().mean().item()
    print_fn(f"recall accuracy (eval mode, fresh sequences): {acc:.3f}")
    return losses
