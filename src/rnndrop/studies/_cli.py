"""The two entry points every study module has: ``rnndrop study NAME`` and ``python -m``."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Callable


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
