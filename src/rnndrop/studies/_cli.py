"""The two entry points every study module has: ``rnndrop study NAME`` and ``python -m``."""
from __future__ import annotations

import argparse
import sys
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
