"""Validation perplexity per epoch of the six PTB arms (docs/results/img/regularizers-ptb-valid.png)
from their metrics.jsonl files.

    python docs/results/scripts/regularizers_plot.py runs docs/results/img/regularizers-ptb-valid.png
"""
import json
import sys
from pathlib import Path

import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

ARMS = ("none", "zaremba", "variational", "zoneout", "both", "learned")
runs, out = Path(sys.argv[1]), Path(sys.argv[2])
fig, ax = plt.subplots(figsize=(6, 4))
for arm in ARMS:
    recs = [json.loads(x) for x in (runs / f"ptb-400-{arm}" / "metrics.jsonl").read_text().splitlines()]
    ax.plot([r["epoch"] for r in recs], [r["valid_ppl"] for r in recs], marker="o", label=arm)
ax.set_xlabel("epoch")
ax.set_ylabel("validation perplexity")
ax.set_yscale("log")
ax.set_title("PTB, 2 x 200 LSTM, 6 epochs (lr halved after epoch 3)")
ax.legend()
fig.tight_layout()
fig.savefig(out, dpi=100)
