"""Training throughput (tokens/s) of rnndrop's language model against PyTorch's own structure.

Baseline: nn.Embedding → nn.Dropout → nn.LSTM(dropout=p between layers) → nn.Dropout → nn.Linear,
the structure of PyTorch's word_language_model example. Ours: rnndrop.models.lm.RNNLanguageModel
with the chosen scheme. Same sizes, same random token stream, SGD step with clipping, interleaved
in one process; prints medians over repeats and the ratio ours / baseline (> 1 means faster).
Measures only — asserts nothing.

    python benchmarks/lm_throughput.py --size small --schemes none zaremba variational
    python benchmarks/lm_throughput.py --size medium --device cuda
    python benchmarks/lm_throughput.py --size medium --precisions fp32 bf16   # autocast, as train.precision

``--precisions fp32 bf16``: every model also under bf16 autocast (forward and loss; weights and
optimiser float32, as ``train.precision = "bf16"``), each its own copy; ``ratio`` is against the
baseline in the same precision, ``vs fp32`` against the same model in float32.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn

from rnndrop.models.lm import RNNLanguageModel

SIZES = {"small": (200, 20, 0.0), "medium": (650, 35, 0.5), "large": (1500, 35, 0.65)}
VOCAB = 10_000
PRECISIONS = {"fp32": None, "bf16": torch.bfloat16}


class Baseline(nn.Module):
    def __init__(self, V, H, L, p):
        super().__init__()
        self.drop = nn.Dropout(p)
        self.encoder = nn.Embedding(V, H)
        self.rnn = nn.LSTM(H, H, L, dropout=p)
        self.decoder = nn.Linear(H, V)

    def forward(self, x, hidden):
        out, hidden = self.rnn(self.drop(self.encoder(x)), hidden)
        return self.decoder(self.drop(out)), hidden

    def loss(self, x, y, hidden):
        logits, hidden = self(x, hidden)
        return nn.functional.cross_entropy(logits.view(-1, logits.shape[-1]), y.view(-1)), hidden


def ours(V, H, L, p, scheme):
    if scheme == "none":
        return RNNLanguageModel(V, H, L)
    if scheme == "zaremba":
        return RNNLanguageModel(V, H, L, scheme="zaremba", dropout=p)
    return RNNLanguageModel(V, H, L, scheme="variational", dropout_embedding=p / 2,
                            dropout_input=p, dropout_hidden=p / 2, dropout_output=p,
                            tied_masks=(scheme == "variational-tied"))


def step_fn(model, opt, x, y, state, dtype=None):
    with torch.autocast(x.device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
        if isinstance(model, Baseline):
            loss, state = model.loss(x, y, state)
        else:
            out, state = model(x, state)
            loss = model.loss(out, y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    nn.utils.clip_grad_norm_(model.parameters(), 5.0)
    opt.step()
    return tuple(s.detach() for s in state)


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", choices=SIZES, default="small")
    ap.add_argument("--schemes", nargs="+", default=["none", "zaremba", "variational"],
                    choices=["none", "zaremba", "variational", "variational-tied"])
    ap.add_argument("--batch", type=int, default=20)
    ap.add_argument("--steps", type=int, default=10, help="timed steps per repeat")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--precisions", nargs="+", default=["fp32"], choices=list(PRECISIONS),
                    help="run every model in each (bf16: autocast, as train.precision)")
    ap.add_argument("--profile", action="store_true",
                    help="also print torch.profiler's top ops over --steps steps of each model")
    args = ap.parse_args()
    H, T, p = SIZES[args.size]
    B, L = args.batch, 2
    device = torch.device(args.device)
    models, dtypes = {}, {}
    for prec in args.precisions:
        sfx = "" if prec == "fp32" else f" {prec}"
        torch.manual_seed(0)                           # the same weights in every precision
        models["baseline" + sfx] = Baseline(VOCAB, H, L, p)
        for s in args.schemes:
            models[s + sfx] = ours(VOCAB, H, L, p, s)
        for k in models:
            dtypes.setdefault(k, PRECISIONS[prec])
    opts, states = {}, {}
    for k, m in models.items():
        m.to(device).train()
        opts[k] = torch.optim.SGD(m.parameters(), lr=0.1)
        z = torch.zeros(L, B, H, device=device)
        states[k] = (z, z.clone())
    x = torch.randint(0, VOCAB, (T, B), device=device)
    y = torch.randint(0, VOCAB, (T, B), device=device)
    times = {k: [] for k in models}
    cpu = {k: [] for k in models}       # process CPU time: on a shared CPU, waits do not count
    for k in models:                                   # warm-up
        for _ in range(2):
            states[k] = step_fn(models[k], opts[k], x, y, states[k], dtypes[k])
    for _ in range(args.repeats):                      # interleaved repeats
        for k, m in models.items():
            sync(device)
            t0, c0 = time.perf_counter(), time.process_time()
            for _ in range(args.steps):
                states[k] = step_fn(m, opts[k], x, y, states[k], dtypes[k])
            sync(device)
            times[k].append((time.perf_counter() - t0) / args.steps)
            cpu[k].append((time.process_time() - c0) / args.steps)
    print(f"LM training throughput, size={args.size} (H={H}, T={T}, B={B}, V={VOCAB}, 2 layers), "
          f"device={device}, torch {torch.__version__}, threads={torch.get_num_threads()}")
    on_cpu = device.type == "cpu"
    several = len(set(args.precisions)) > 1 and "fp32" in args.precisions
    print(f"{'model':<23}{'ms/step':>10}{'tokens/s':>12}{'ratio':>8}"
          + (f"{'CPU ms/step':>13}{'CPU ratio':>11}" if on_cpu else "")
          + (f"{'vs fp32':>9}" if several else ""))
    for k in models:
        prec = k.split(" ")[1] if " " in k else ""
        base_k = "baseline" + (f" {prec}" if prec else "")
        base, cbase = statistics.median(times[base_k]), statistics.median(cpu[base_k])
        med, c = statistics.median(times[k]), statistics.median(cpu[k])
        line = (f"{k:<23}{1e3 * med:>10.1f}{T * B / med:>12.0f}{base / med:>8.2f}"
                + (f"{1e3 * c:>13.1f}{cbase / c:>11.2f}" if on_cpu else ""))
        if several:                                    # against the same model in float32
            vs = statistics.median((cpu if on_cpu else times)[k.split(" ")[0]])
            line += f"{vs / (c if on_cpu else med):>9.2f}"
        print(line)
    if args.profile:
        from torch.profiler import ProfilerActivity, profile
        for k, m in models.items():
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                for _ in range(args.steps):
                    states[k] = step_fn(m, opts[k], x, y, states[k], dtypes[k])
            print(f"{k}: {args.steps} steps")
            print(prof.key_averages().table(
                sort_by="self_cpu_time_total", row_limit=12, max_name_column_width=36))


if __name__ == "__main__":
    main()
