"""Crash-consistency harness: a tiny ``rnndrop train`` in a child process, interrupted by real
signals (SIGINT, SIGTERM, SIGKILL) at random steps and killed inside a checkpoint write, then
resumed until it finishes. Used by test_crash_consistency.py and, with more trials, by
docs/results/scripts/crash_consistency.py."""
from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
from pathlib import Path

# The child: `rnndrop train ...`; with KILL_IN_WRITE=k it kills itself with SIGKILL at its k-th
# checkpoint rename, after the temporary file is written and fsynced: a kill inside a write.
CHILD = """
import os, signal, sys
k = int(os.environ.get("KILL_IN_WRITE", "0"))
if k:
    real, n = os.replace, [0]
    def replace(a, b):
        if str(b).endswith(".pt"):
            n[0] += 1
            if n[0] == k:
                os.kill(os.getpid(), signal.SIGKILL)
        return real(a, b)
    os.replace = replace
from rnndrop.cli import main
sys.exit(main(sys.argv[1:]))
"""

RECIPE = ("[model]\nhidden_size = 16\nnum_layers = 2\ninit_range = 0.1\n[train]\nepochs = 2\n"
          "batch_size = 4\neval_batch_size = 2\nbptt = 7\ncheckpoint_every = 5\nthreads = 1\n"
          "log_every = 1\n")


def write_recipe(path: Path) -> Path:
    path.write_text(RECIPE)
    return path


def _args(recipe, data, out, overrides, resume):
    a = ["train", str(recipe), "--out", str(out), "--no-progress"]
    if data is not None:          # else the recipe's data (``$RNNDROP_DATA``)
        a += ["--data", str(data)]
    for k, v in overrides.items():
        a += ["--set", f"{k}={v}"]
    return a + (["--resume"] if resume else [])


def _step_of(line: str):
    # "epoch 1 | step 12 | ..." (the per-step log line); other lines give None
    parts = [p.strip() for p in line.split("|")]
    if len(parts) > 2 and parts[0].startswith("epoch ") and parts[1].startswith("step "):
        return int(parts[1].split()[1])
    return None


def run_child(recipe, data, out, overrides, resume, signum=None, at_step=None, kill_in_write=0,
              timeout=120):
    """Run the child once. With ``signum``, send it when the child has logged step
    ``at_step``; returns ``(returncode, last step logged, output)``."""
    env = dict(os.environ, PYTHONUNBUFFERED="1", KILL_IN_WRITE=str(kill_in_write))
    p = subprocess.Popen([sys.executable, "-c", CHILD, *_args(recipe, data, out, overrides, resume)],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    out_lines, last, sent = [], None, False
    try:
        for line in p.stdout:
            out_lines.append(line)
            s = _step_of(line)
            if s is not None:
                last = s
                if signum is not None and not sent and s >= at_step:
                    p.send_signal(signum)
                    sent = True
        p.wait(timeout=timeout)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    return p.returncode, last, "".join(out_lines)


def last_checkpoint_step(out: Path):
    from rnndrop import checkpoint as ckpt
    f = Path(out) / "last.pt"
    return ckpt.load(f)["train_state"]["step"] if f.exists() else 0


def interrupted_run(recipe, data, out, overrides, events, total_steps, seed=0):
    """Run to the end through ``events`` (each ``"SIGINT"``, ``"SIGTERM"``, ``"SIGKILL"`` or
    ``"write"``), every one at a random later step. Returns one dict per event: the signal, the
    step at which it was sent, the step of the checkpoint it left, the return code."""
    rnd = random.Random(seed)
    record = []
    for ev in events:
        done = last_checkpoint_step(out)
        resume = (Path(out) / "last.pt").exists()
        if ev == "write":
            k = rnd.randint(1, 3)
            rc, last, text = run_child(recipe, data, out, overrides, resume, kill_in_write=k)
            at = last
        else:
            at = rnd.randint(done + 1, max(done + 1, min(total_steps - 3, done + 25)))
            rc, last, text = run_child(recipe, data, out, overrides, resume,
                                       getattr(signal, ev), at)
        record.append({"event": ev, "sent_after_step": at, "last_logged": last,
                       "checkpoint_step": last_checkpoint_step(out), "returncode": rc,
                       "output": text})
    rc, _, text = run_child(recipe, data, out, overrides, (Path(out) / "last.pt").exists())
    if rc != 0:
        raise AssertionError(f"the final resume failed (rc {rc}):\n{text}")
    return record
