"""The two entry points every study module has: ``rnndrop study NAME`` and ``python -m``."""
from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import torch


def entry_points(name: str, module: str, help: str, doc: str,
                 add_arguments: Callable[[argparse.ArgumentParser], None],
                 run: Callable[[argparse.Namespace], int]):
    """``(add_cli, main)`` for a study: ``add_cli(subparsers)`` adds the ``name`` sub-command,
    ``main(argv)`` parses ``argv`` for ``python -m module``; both end in ``run(args)``."""
    description = (doc or "").split("\n\n")[0]

    def add_cli(subparsers) -> argparse.ArgumentParser:
        p = subparsers.add_parser(name, help=help, description=description)
        add_arguments(p)
        p.set_defaults(func=run)
        return p

    def main(argv=None) -> int:
        mod = module
        if mod == "__main__":  # run as ``python -m rnndrop.studies.X``: name the real module
            spec = getattr(sys.modules.get("__main__"), "__spec__", None)
            mod = spec.name if spec is not None else mod
        p = argparse.ArgumentParser(prog=f"python -m {mod}", description=description)
        add_arguments(p)
        return run(p.parse_args(argv))

    return add_cli, main


def add_run_arguments(p: argparse.ArgumentParser, quick_help: str) -> None:
    """The options the single-process studies share: seed, device, threads, --quick,
    --no-progress."""
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    p.add_argument("--threads", type=int,
                   help="torch CPU threads (default: torch's); 1 is much faster on a busy machine")
    p.add_argument("--quick", action="store_true", help=quick_help)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def prepare(args: argparse.Namespace, settings_from_args: Callable[[argparse.Namespace], Any]):
    """The start of a study run: ``--threads``, the settings, the output folder (created) and
    whether to show progress bars. Returns ``(settings, out, progress)``."""
    if getattr(args, "threads", None):
        torch.set_num_threads(args.threads)
    settings = settings_from_args(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    return settings, out, not getattr(args, "no_progress", False)


def json_safe(o):
    """``o`` with non-finite floats made JSON-safe (NaN → null, ±inf → "inf"/"-inf"), through
    dicts, lists and tuples."""
    if isinstance(o, float) and not math.isfinite(o):
        return None if math.isnan(o) else ("inf" if o > 0 else "-inf")
    if isinstance(o, dict):
        return {k: json_safe(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [json_safe(v) for v in o]
    return o


def loadavg():
    """The 1/5/15-minute load averages, or None where the platform has none."""
    return os.getloadavg() if hasattr(os, "getloadavg") else None


def finish(study: dict, args: argparse.Namespace, load_start, write_outputs,
           table: Callable[[dict], str]) -> int:
    """Record the arguments and load averages in ``study``, write its outputs into ``args.out``,
    print ``table(study)`` and where the outputs went."""
    study["args"] = {k: v for k, v in vars(args).items() if k != "func"}
    study["loadavg_start"] = load_start
    study["loadavg_end"] = loadavg()
    paths = write_outputs(study, args.out)
    print(table(study))
    print(f"wall time {study['wall_seconds']:.1f} s; outputs in {Path(args.out)}: "
          + ", ".join(p.name for p in paths.values()))
    return 0


def run_jobs(labels: Sequence[str], order: Sequence[int], run_here: Callable[[int], Any],
             workers: int, job: Callable[[Any], Any], job_arg: Callable[[int], Any],
             initializer: Optional[Callable] = None, initargs: tuple = (),
             desc: str = "runs", unit: str = "run", progress: bool = True) -> list:
    """Results of jobs ``0 … len(labels)-1``, started in ``order``, with a progress bar.

    ``workers <= 1``: ``run_here(i)`` in this process with one torch thread (the study networks
    are too small to gain from more, and on a busy machine intra-op threads cost ~10x in
    contention; the thread count is restored afterwards). Otherwise ``job(job_arg(i))`` in
    ``workers`` spawned processes, each set up by ``initializer(*initargs)``.
    """
    from tqdm.auto import tqdm
    results: list = [None] * len(labels)
    bar = tqdm(total=len(labels), desc=desc, unit=unit, disable=not progress)
    try:
        if workers <= 1:
            threads = torch.get_num_threads()
            torch.set_num_threads(1)
            try:
                for i in order:
                    bar.set_postfix_str(labels[i])
                    results[i] = run_here(i)
                    bar.update(1)
            finally:
                torch.set_num_threads(threads)
        else:
            import multiprocessing as mp
            from concurrent.futures import ProcessPoolExecutor, as_completed
            with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"),
                                     initializer=initializer, initargs=initargs) as ex:
                futs = {ex.submit(job, job_arg(i)): i for i in order}
                for fut in as_completed(futs):
                    i = futs[fut]
                    results[i] = fut.result()
                    bar.set_postfix_str(labels[i])
                    bar.update(1)
    finally:
        bar.close()
    return results
