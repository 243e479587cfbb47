"""Forward + backward of one SentimentClassifier batch (B=64, T=200, embedding 64, H=128),
encoder run over the padding (packed=False) against on the real tokens only (packed=True);
lengths uniform in [--min-len, 200]. One torch thread, min of 3 after a warm-up. Measures only.

    python docs/results/scripts/classifier_packed.py --min-len 30
    python docs/results/scripts/classifier_packed.py --min-len 185 --encoders rnn_tanh,gru,lstm
"""
import argparse
import time

import torch

from rnndrop.models.classifiers import ENCODERS, SentimentClassifier

ap = argparse.ArgumentParser()
ap.add_argument("--min-len", type=int, default=30)
ap.add_argument("--encoders", default=",".join(e for e in ENCODERS if e != "bigru"))
args = ap.parse_args()
torch.set_num_threads(1)
torch.manual_seed(0)
B, T = 64, 200
lengths = torch.randint(args.min_len, T + 1, (B,))
lengths[0] = T
tokens = torch.randint(2, 20000, (B, T))
tokens[torch.arange(T)[None] >= lengths[:, None]] = 0
for enc in args.encoders.split(","):
    res = {}
    for packed in (False, True):
        m = SentimentClassifier(20002, enc, embedding_dim=64, hidden_size=128, packed=packed).train()

        def step():
            m.zero_grad()
            m(tokens, lengths).sum().backward()
        step()
        ts = []
        for _ in range(3):
            t = time.perf_counter()
            step()
            ts.append(time.perf_counter() - t)
        res[packed] = min(ts)
    print(f"{enc:15s} padded {res[False] * 1e3:7.1f} ms  packed {res[True] * 1e3:7.1f} ms  "
          f"packed speed-up {res[False] / res[True]:.2f}x")
