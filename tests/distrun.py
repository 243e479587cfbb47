"""Helpers for tests that run ``rnndrop train`` as several processes on CPU (gloo): each rank a
child process with the environment torchrun would give it, on a free local port.

:func:`fork_ranks` forks the test process (torch and rnndrop already imported: a rank starts in
milliseconds instead of the seconds an import takes) and runs the CLI's ``main`` in each child;
:func:`torchrun` starts the real launcher in a subprocess."""
from __future__ import annotations

import importlib
import multiprocessing
import os
import socket
import subprocess
import sys
import time
import traceback
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"

# The tiny LM of lmrun.tiny_lm_config as a recipe (the CLI reads recipes).
RECIPE = ("[model]\nhidden_size = 16\nnum_layers = 2\ninit_range = 0.1\n[train]\nepochs = 2\n"
          "batch_size = 4\neval_batch_size = 2\nbptt = 7\ncheckpoint_every = 0\nthreads = 1\n")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def child_env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items()
           if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(SRC), env.get("PYTHONPATH")]))
    env["OMP_NUM_THREADS"] = "1"
    env.update(extra)
    return env


# ----------------------------------------------------------------------------- forked ranks
class Rank:
    """One forked rank: ``proc`` (a multiprocessing Process), ``log`` (its stdout and stderr)."""

    def __init__(self, proc, log: Path):
        self.proc, self.log = proc, log

    @property
    def output(self) -> str:
        return self.log.read_text() if self.log.exists() else ""

    @property
    def returncode(self):
        return self.proc.exitcode


def _rank_main(argv, env, log):
    os.environ.update(env)
    f = open(log, "w", buffering=1)
    os.dup2(f.fileno(), 1)
    os.dup2(f.fileno(), 2)
    sys.stdout = sys.stderr = f
    code = 1
    try:
        from rnndrop.cli import main
        code = main(argv)
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    except BaseException:
        traceback.print_exc()
    finally:
        f.flush()
        os._exit(code)


def fork_ranks(argv: list, nproc: int, logs: Path, **env) -> list[Rank]:
    """Start ``rnndrop <argv>`` as ranks 0..nproc-1 of one run (``nproc=1``: a plain single
    process, no torchrun variables); logs in ``logs/rank<r>.log``."""
    import torch
    importlib.import_module("rnndrop.cli")       # imported once here, not in every child
    torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)   # imports torch._dynamo
    logs.mkdir(parents=True, exist_ok=True)
    ctx = multiprocessing.get_context("fork")
    port = free_port()
    ranks = []
    for rank in range(nproc):
        e = dict(env)
        if nproc > 1:
            e.update(WORLD_SIZE=str(nproc), RANK=str(rank), LOCAL_RANK=str(rank),
                     LOCAL_WORLD_SIZE=str(nproc), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        log = logs / f"rank{rank}.log"
        p = ctx.Process(target=_rank_main, args=(argv, e, log), daemon=True)
        p.start()
        ranks.append(Rank(p, log))
    return ranks


def join(ranks: list[Rank], timeout: float = 120) -> list[Rank]:
    """Wait for every rank (killing the rest past ``timeout``)."""
    end = time.monotonic() + timeout
    for r in ranks:
        r.proc.join(max(0.0, end - time.monotonic()))
    for r in ranks:
        if r.proc.is_alive():
            r.proc.kill()
            r.proc.join()
    return ranks


def run_forked(argv: list, nproc: int, logs: Path, timeout: float = 120, **env) -> list[Rank]:
    """:func:`fork_ranks` and :func:`join`; asserts every rank exited with 0."""
    ranks = join(fork_ranks(argv, nproc, logs, **env), timeout)
    for i, r in enumerate(ranks):
        assert r.returncode == 0, f"rank {i} exited with {r.returncode}:\n{r.output}"
    return ranks


def cli_args(recipe: Path, data: Path, out: Path, overrides: dict = (), resume=False) -> list:
    """``train RECIPE --data DATA --out OUT --no-progress --set k=v ... [--resume]``."""
    a = ["train", str(recipe), "--data", str(data), "--out", str(out), "--no-progress"]
    for k, v in dict(overrides).items():
        a += ["--set", f"{k}={v}"]
    return a + (["--resume"] if resume else [])


def torchrun(argv: list, nproc: int, timeout: float = 120) -> subprocess.CompletedProcess:
    """``python -m torch.distributed.run --standalone --nproc_per_node N -m rnndrop <argv>``."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           f"--nproc_per_node={nproc}", "-m", "rnndrop", *argv]
    return subprocess.run(cmd, env=child_env(), capture_output=True, text=True, timeout=timeout)
