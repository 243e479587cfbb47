"""Training tokens/s of the small PTB recipe as 1 process and as N processes under torchrun (one
torch thread each, the same global batch), and 1 process with N threads for reference. Each run
stops after --steps steps; tokens/s is the trainer's own count (tokens of all ranks over the
training time of the epoch so far, start-up and evaluation excluded), read from last.pt.
Rounds are interleaved; prints one line per run and the medians. Measures and prints; asserts
nothing.

    RNNDROP_DATA=/path/to/data python docs/results/scripts/scaling.py [--steps 300] [--rounds 2]
"""
import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

RECIPE = Path(__file__).resolve().parents[3] / "configs" / "ptb-small-zaremba.toml"


def command(kind: str, n: int, out: Path, steps: int) -> list:
    train = ["-m", "rnndrop", "train", str(RECIPE), "--out", str(out), "--no-progress",
             "--set", f"train.max_steps={steps}", "--set", "train.checkpoint_every=0"]
    if kind == "torchrun":
        return [sys.executable, "-m", "torch.distributed.run", "--standalone",
                f"--nproc_per_node={n}", *train, "--threads", "1"]
    return [sys.executable, *train, "--threads", str(n)]


def tokens_per_s(out: Path) -> float:
    es = torch.load(out / "last.pt", weights_only=True)["train_state"]["epoch_stats"]
    return es["tokens"] / es["seconds"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--nproc", type=int, default=2)
    ap.add_argument("--only", type=int, choices=(0, 1, 2),
                    help="run only this configuration (0, 1 or 2, in the order printed)")
    args = ap.parse_args()
    n = args.nproc
    runs = [("1 process, 1 thread", "single", 1), (f"{n} processes, 1 thread each", "torchrun", n),
            (f"1 process, {n} threads", "single", n)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    seen = {name: [] for name, _, _ in runs}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for i, (name, kind, k) in enumerate(runs):
                if args.only is not None and i != args.only:
                    continue
                out = Path(tmp) / f"r{r}-{i}"
                cmd = command(kind, k, out, args.steps)
                if r == 0:
                    print("$", " ".join(cmd[1:]).replace(str(RECIPE), "configs/" + RECIPE.name))
                subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL)
                seen[name].append(tokens_per_s(out))
                print(f"round {r + 1}: {name}: {seen[name][-1]:.0f} tokens/s", flush=True)
    base = statistics.median(seen[runs[0][0]]) if seen[runs[0][0]] else None
    for name, _, _ in runs:
        if seen[name]:
            med = statistics.median(seen[name])
            ratio = f" ({med / base:.2f}x)" if base else ""
            print(f"{name}: median {med:.0f} tokens/s{ratio}")


if __name__ == "__main__":
    main()
