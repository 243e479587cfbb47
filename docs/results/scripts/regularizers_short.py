"""The short PTB rows of docs/results/regularizers.md: every ptb-400-* arm at 2 x 200 units for
the first 300 steps of its schedule (23 % of an epoch), one thread each, two arms at a time;
then the validation perplexity of where each got (``rnndrop eval --split valid``), the tokens/s
of its training steps and, for the learned arm, the rates after 300 steps. This measures the
cost of each regulariser and the first steps of training, not where the arms end.

    RNNDROP_DATA=../shared/data python docs/results/scripts/regularizers_short.py --out /tmp/regptb
    python docs/results/scripts/regularizers_short.py --out /tmp/regptb --table   # table only
"""
import argparse
import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

from rnndrop.runs import load_run

ARMS = ("learned", "both", "zoneout", "variational", "zaremba", "none")
SET = ["--set", "model.hidden_size=200", "--set", "train.max_steps=300",
       "--set", "train.log_every=100"]


def run_arm(arm: str, out: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with open(out / f"{arm}.log", "w") as log:
        for cmd in ([sys.executable, "-m", "rnndrop", "train", f"configs/ptb-400-{arm}.toml",
                     "--out", str(out / arm), "--threads", "1", "--no-progress", *SET],
                    [sys.executable, "-m", "rnndrop", "eval", str(out / arm / "last.pt"),
                     "--split", "valid", "--threads", "1", "--no-progress"]):
            log.write("$ " + " ".join(cmd) + "\n")
            log.flush()
            subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, check=True)


def table(out: Path) -> None:
    print("| arm | train ppl, steps 1-300 | valid ppl after 300 steps | tokens/s | learned rates after 300 steps |")
    print("|---|---|---|---|---|")
    for arm in ARMS:
        log = (out / f"{arm}.log").read_text()
        valid = re.search(r"valid perplexity \(dropout approximation\): ([\d.]+)", log).group(1)
        run = load_run(out / arm / "last.pt")
        es = run.state["train_state"]["epoch_stats"]
        train_ppl = torch.tensor(es["loss"] / es["tokens"]).exp().item()
        rates = run.model.dropout_rates() if run.config.model.learn_dropout else {}
        shown = ", ".join(f"{k} {v:.3f}" for k, v in rates.items()) or "—"
        print(f"| {arm} | {train_ppl:.1f} | {valid} | {es['tokens'] / es['seconds']:.0f} | {shown} |")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--table", action="store_true", help="only print the table of finished runs")
    ap.add_argument("--jobs", type=int, default=2)
    args = ap.parse_args()
    if not args.table:
        args.out.mkdir(parents=True, exist_ok=True)
        with ThreadPoolExecutor(args.jobs) as pool:
            list(pool.map(lambda a: run_arm(a, args.out), ARMS))
    table(args.out)


if __name__ == "__main__":
    main()
