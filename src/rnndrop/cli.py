"""Command-line interface: ``rnndrop <command> ...`` (also ``python -m rnndrop``).

Each sub-command lives in the module that implements it; this file only wires arguments, so the
start-up stays fast and a missing optional piece fails with a clear message.
"""
from __future__ import annotations

import argparse
import sys


def _demo(args) -> int:
    from .demo import run_demo
    run_demo(steps=args.steps, seed=args.seed)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rnndrop", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    p = sub.add_parser("demo", help="train a small variational LSTM on a generated task")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_demo)
    for register in _REGISTRARS:
        register(sub)
    return parser


_REGISTRARS: list = []


def _optional_registrars():
    """Sub-commands defined by other modules (train, eval, study, diagnose)."""
    import importlib
    for name in ("rnndrop.train", "rnndrop.evaluate", "rnndrop.diagnostics", "rnndrop.studies"):
        try:
            mod = importlib.import_module(name)
        except ImportError:
            continue
        reg = getattr(mod, "register_cli", None)
        if reg is not None:
            _REGISTRARS.append(reg)


def main(argv=None) -> int:
    if not _REGISTRARS:
        _optional_registrars()
    args = build_parser().parse_args(argv)
    try:
        return args.func(args) or 0
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
