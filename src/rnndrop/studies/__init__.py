"""Runnable studies (``rnndrop study NAME``): each trains on real or generated data, prints its
tables, saves plots and writes ``results.json``. One module per study, each on the skeleton of
:mod:`._cli` (``Settings``, ``run``, ``report`` and ``STUDY``)."""
from __future__ import annotations

from . import d2l_dropout, gradient_flow, imdb_activations, sentiment_regression

STUDIES = (d2l_dropout, imdb_activations, sentiment_regression, gradient_flow)


def add_study_cli(subparsers) -> None:
    """Add ``study`` (with one sub-command per study) to ``subparsers``."""
    p = subparsers.add_parser("study", help="run one of the studies (see rnndrop study -h)")
    sub = p.add_subparsers(dest="study", metavar="STUDY")
    sub.required = True
    for study in STUDIES:
        study.STUDY.add_cli(sub)
