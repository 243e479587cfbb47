"""Command-line interface: ``rnndrop <command> ...`` (also ``python -m rnndrop``).

Only wiring: each command lives in :mod:`rnndrop.commands` (train, eval, demo, diagnose,
generate, classify) or is a study (:mod:`rnndrop.studies`); errors the user can act on become one line and exit code 2.
"""
from __future__ import annotations

import argparse
import os
import sys

from .checkpoint import CheckpointError
from .commands import classify, diagnose, generate, train
from .data import DataError
from .studies import add_study_cli

# What a user can act on: one line. Anything else (a TypeError, say) is a bug: a traceback.
USER_ERRORS = (CheckpointError, DataError, FileNotFoundError, ValueError, RuntimeError)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rnndrop", description="rnndrop: dropout done right for recurrent networks")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    train.add_parsers(sub)
    diagnose.add_parsers(sub)
    generate.add_parsers(sub)
    classify.add_parsers(sub)
    add_study_cli(sub)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args) or 0
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    except USER_ERRORS as e:
        if os.environ.get("RNNDROP_DEBUG"):
            raise
        print(f"rnndrop {args.command}: error: {e}\n(set RNNDROP_DEBUG=1 for the traceback)",
              file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
