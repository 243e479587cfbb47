"""What the trainer could still take off a medium PTB step (2 x 650, bptt 35, batch 20, 10,000
words) on one CPU thread: the output layer's three products, through oneDNN and torch.mm, with
their GFLOP/s; the loss as the example computes it against the fused one (forward + backward);
and global-norm clipping plus the SGD update over the medium model's parameters. CPU time,
medians. Measures only (issue 16; speed.md, "rnndrop train against PyTorch's example").

    OMP_NUM_THREADS=1 python docs/results/scripts/medium_step_costs.py
"""
import statistics
import time

import torch
import torch.nn.functional as F

from rnndrop.fast._gemm import _ops, transposed
from rnndrop.fast._linear import linear
from rnndrop.fast._xent import linear_cross_entropy

torch.set_num_threads(1)
N, V, H = 700, 10_000, 650           # rows (bptt x batch), words, hidden units


def cpu_ms(f, n=11):
    f()
    ts = []
    for _ in range(n):
        t0 = time.process_time()
        f()
        ts.append(time.process_time() - t0)
    return 1e3 * statistics.median(ts)


def main():
    g = torch.Generator().manual_seed(0)
    h, G, W = (torch.randn(*s, generator=g) for s in ((N, H), (N, V), (V, H)))
    lp, rw = _ops()
    flop = 2 * N * V * H
    print(f"torch {torch.__version__}, 1 thread; rows {N}, words {V}, hidden {H}")
    print("the output layer's products (CPU ms, GFLOP/s):")
    for name, f in [
            ("forward  z = h W^T, oneDNN", lambda: lp(h, W, None, "none", [], "")),
            ("forward  z = h W^T, torch.mm", lambda: torch.mm(h, W.t())),
            ("backward dh = G W, oneDNN", lambda: lp(G, W.t(), None, "none", [], "")),
            ("backward dh = G W, torch.mm", lambda: torch.mm(G, W)),
            ("backward dW = (h^T G)^T, oneDNN", lambda: lp(transposed(h), G.t(), None, "none", [], "")),
            ("backward dW = G^T h, torch.mm", lambda: torch.mm(G.t(), h))]:
        ms = cpu_ms(f)
        print(f"  {name:<34}{ms:8.1f} ms {flop / ms / 1e6:7.1f} GFLOP/s")
    print("  the (V, H) gradient made contiguous (autograd's copy of the transposed view): "
          f"{cpu_ms(lambda: lp(transposed(h), G.t(), None, 'none', [], '').t().contiguous()) - cpu_ms(lambda: lp(transposed(h), G.t(), None, 'none', [], '')):.1f} ms")

    Wp = torch.nn.Parameter(W * 0.05)
    b = torch.nn.Parameter(torch.zeros(V))
    hp = h.clone().requires_grad_()
    y = torch.randint(0, V, (N,), generator=g)

    def example():
        Wp.grad = b.grad = hp.grad = None
        F.nll_loss(F.log_softmax(linear(hp, Wp, b), -1), y).backward()

    def fused():
        Wp.grad = b.grad = hp.grad = None
        linear_cross_entropy(hp, Wp, b, y).backward()
    ex, fu = [], []
    for _ in range(3):                     # interleaved
        ex.append(cpu_ms(example, 5))
        fu.append(cpu_ms(fused, 5))
    print(f"the loss, forward + backward: example (logits, log_softmax, NLL) "
          f"{statistics.median(ex):.1f} ms, fused {statistics.median(fu):.1f} ms")

    shapes = [(V, H), (V, H), (V,)] + [(4 * H, H), (4 * H, H), (4 * H,), (4 * H,)] * 2
    ps = [torch.nn.Parameter(torch.randn(*s, generator=g)) for s in shapes]
    for p in ps:
        p.grad = torch.randn(p.shape, generator=g)
    opt = torch.optim.SGD(ps, lr=1.0)

    def clip_step():
        torch.nn.utils.clip_grad_norm_(ps, 5.0)
        opt.step()
    with torch.no_grad():
        ms = cpu_ms(clip_step)
    print(f"clip_grad_norm_ + SGD step over {sum(p.numel() for p in ps) / 1e6:.1f} M "
          f"parameters: {ms:.1f} ms")


if __name__ == "__main__":
    main()
