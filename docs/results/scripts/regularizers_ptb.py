"""The PTB table of docs/results/regularizers.md: every ptb-400-<arm> recipe trained to the end
of one schedule, on the size this 2-core CPU trains in its budget. Overrides, the same for every
arm: 2 x 200 units (the recipes are 2 x 400), 6 epochs at lr 1, halved after epoch 3
(1, 1, 1, 0.5, 0.25, 0.125). One thread per run, two runs at a time, slowest arms first. Each run
writes metrics.jsonl, final.json (valid and test perplexity) and its plots; the table is
printed by regularizers_table.py.

    RNNDROP_DATA=../shared/data python docs/results/scripts/regularizers_ptb.py --out runs
    python docs/results/scripts/regularizers_table.py runs
"""
import argparse
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ARMS = ("learned", "both", "zoneout", "variational", "zaremba", "none")
SET = ["model.hidden_size=200", "train.epochs=6", "train.decay_after=3", "train.lr_decay=2"]


def run_arm(arm: str, out: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "rnndrop", "train", f"configs/ptb-400-{arm}.toml",
           "--out", str(out / f"ptb-400-{arm}"), "--threads", "1", "--no-progress"]
    for s in SET:
        cmd += ["--set", s]
    with open(out / f"ptb-400-{arm}.log", "w") as log:
        log.write("$ " + " ".join(cmd) + "\n")
        log.flush()
        subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, check=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--jobs", type=int, default=2)
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    with ThreadPoolExecutor(args.jobs) as pool:
        list(pool.map(lambda a: run_arm(a, args.out), ARMS))


if __name__ == "__main__":
    main()
