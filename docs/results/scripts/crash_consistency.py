"""Crash-consistency figures for docs/results/reliability.md.

Part A (tiny model, generated data): for each dropout scheme, ``--trials`` runs, each interrupted
by SIGINT, SIGTERM and SIGKILL at random steps and killed inside a checkpoint write, then
resumed to the end; counts the runs equal to an uninterrupted one (every tensor of last.pt,
metrics.jsonl, steps.jsonl).

Part B (PTB, ``--ptb``): the small recipe with per-step logging, killed with SIGKILL at random
steps (default ``checkpoint_every`` = 500), resumed each time, up to ``--ptb-steps`` steps; steps
lost per kill and whether the last checkpoint equals that of an uninterrupted run.

    python docs/results/scripts/crash_consistency.py --trials 5
    RNNDROP_DATA=../shared/data python docs/results/scripts/crash_consistency.py --trials 0 --ptb
"""
from __future__ import annotations

import argparse
import random
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT / "tests"))

from crashrun import (interrupted_run, last_checkpoint_step, run_child,  # noqa: E402
                      write_recipe)
from lmrun import LM_SCHEMES, QUIET, assert_same_run, write_lm_corpus  # noqa: E402

EVENTS = ("SIGINT", "SIGTERM", "SIGKILL", "write")


def part_a(trials: int, work: Path) -> None:
    from rnndrop.config import load_config
    from rnndrop.data.text import load_corpus
    from rnndrop.train import LMTrainer
    data = write_lm_corpus(work / "data", n_train=200)
    recipe = write_recipe(work / "tiny.toml")
    print("| scheme | trials | interrupts | identical runs | steps lost per SIGKILL (mean, max) |")
    print("|---|---|---|---|---|")
    for scheme, over in LM_SCHEMES.items():
        cfg = load_config(recipe, [f"{k}={v}" for k, v in over.items()])
        ref_dir = work / f"ref-{scheme}"
        ref = LMTrainer(cfg, load_corpus(data, layout="ptb"), ref_dir, **QUIET)
        ref.train()
        same, lost, n_int = 0, [], 0
        for trial in range(trials):
            out = work / f"{scheme}-{trial}"
            events = interrupted_run(recipe, data, out, over, EVENTS, ref.state.step,
                                     seed=f"{scheme}-{trial}")
            n_int += len(events)
            lost += [e["last_logged"] - e["checkpoint_step"] for e in events
                     if e["event"] == "SIGKILL" and e["last_logged"] is not None]
            try:
                assert_same_run(ref_dir, out)
                same += 1
            except AssertionError as err:
                print(f"  {scheme} trial {trial} differs: {err}", file=sys.stderr)
        lost_s = f"{statistics.mean(lost):.1f}, {max(lost)}" if lost else "-"
        print(f"| {scheme} | {trials} | {n_int} | {same}/{trials} | {lost_s} |", flush=True)


def part_b(steps: int, kills: int, work: Path, seed: int) -> None:
    from rnndrop import checkpoint as ckpt
    recipe = ROOT / "configs" / "ptb-small-zaremba.toml"
    over = {"train.log_every": 1, "train.max_steps": steps, "train.threads": 1,
            "train.mc_samples": 0}
    rnd = random.Random(seed)
    t0 = time.time()
    rc, _, text = run_child(recipe, None, work / "ptb-ref", over, False, timeout=3600)
    assert rc == 0, text
    print(f"uninterrupted: {steps} steps in {time.time() - t0:.0f} s")
    out = work / "ptb-killed"
    lost = []
    for _ in range(kills):
        done = last_checkpoint_step(out)
        at = rnd.randint(done + 1, min(steps - 1, done + 1000))
        rc, last, text = run_child(recipe, None, out, over, (out / "last.pt").exists(),
                                   signal.SIGKILL, at, timeout=3600)
        lost.append(last - last_checkpoint_step(out))
        print(f"SIGKILL after step {last}: checkpoint at step {last_checkpoint_step(out)}, "
              f"{lost[-1]} steps lost (rc {rc})", flush=True)
    rc, _, text = run_child(recipe, None, out, over, True, timeout=3600)
    assert rc == 0, text
    a, b = ckpt.load(work / "ptb-ref" / "last.pt"), ckpt.load(out / "last.pt")
    same = all(a["model"][k].equal(b["model"][k]) for k in a["model"])
    print(f"{kills} kills: steps lost mean {statistics.mean(lost):.0f}, max {max(lost)}; "
          f"final weights after {steps} steps identical to the uninterrupted run: {same}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=5)
    ap.add_argument("--ptb", action="store_true")
    ap.add_argument("--ptb-steps", type=int, default=3000)
    ap.add_argument("--ptb-kills", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        if args.trials:
            part_a(args.trials, Path(d))
        if args.ptb:
            part_b(args.ptb_steps, args.ptb_kills, Path(d), args.seed)


if __name__ == "__main__":
    main()
