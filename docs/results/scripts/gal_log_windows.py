"""Compare the training loss of our large variational runs with Gal's published log, window by
window, through the first epoch.

Gal's log (yaringal/BayesianRNN, LM_code/main_new_dropout_SOTA.log, 1250 units) prints a
running "train perp." every 133 steps: exp of the mean of a buffer of epoch_size = 1327 per-step
losses that starts filled with the first step's loss. So between two prints at steps s0 < s1
the mean per-step loss is (E (m1 - m0) + (s1 - s0) p0) / (s1 - s0), with m = log(perp) and p0
the first loss (≈ log 10000 at the uniform initialisation; we use our runs' first loss, 9.217).

    python docs/results/scripts/gal_log_windows.py RUN_DIR/steps.jsonl [...]
"""
import json
import math
import statistics
import sys

EPOCH = 1327
P0 = 9.217
# (step, printed train perplexity) from Gal's log, epoch 0.008 to 0.910
GAL = [(10, 10348.171), (143, 8747.297), (276, 6761.846), (409, 5125.591), (542, 3840.427),
       (675, 2848.935), (808, 2084.552), (941, 1517.012), (1074, 1094.884), (1207, 787.070)]


def gal_windows():
    for (s0, p_0), (s1, p_1) in zip(GAL, GAL[1:]):
        yield s0, s1, (EPOCH * (math.log(p_1) - math.log(p_0)) + (s1 - s0) * P0) / (s1 - s0)


def main(paths):
    runs = [[json.loads(line)["loss"] for line in open(p)] for p in paths]
    print("| steps | Gal's log (1250 units) | " + " | ".join(paths) + " |")
    print("|---" * (2 + len(paths)) + "|")
    for s0, s1, g in gal_windows():
        cells = [f"{statistics.mean(r[s0:s1]):.2f}" if len(r) >= s1 else "—" for r in runs]
        print(f"| {s0 + 1}–{s1} | {g:.2f} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main(sys.argv[1:])
