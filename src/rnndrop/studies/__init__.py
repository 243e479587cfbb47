"""Runnable studies (``rnndrop study NAME``): each trains on real data, prints a table, saves
plots, and writes its results. One module per study, each with ``add_cli(subparsers)``."""
from __future__ import annotations

import importlib

STUDIES = ("d2l_dropout", "imdb_activations", "sentiment_regression", "gradient_flow")


def add_study_cli(subparsers) -> None:
    p = subparsers.add_parser("study", help="run one of the studies (see rnndrop study -h)")
    sub = p.add_subparsers(dest="study", metavar="STUDY")
    sub.required = True
    for name in STUDIES:
        try:
            mod = importlib.import_module(f"{__name__}.{name}")
        except ImportError:
            continue
        mod.add_cli(sub)
