"""Argument checks shared by the whole package: clear errors that name the argument."""
from __future__ import annotations

import math


def check_probability(p: float, name: str = "p", allow_one: bool = False) -> float:
    """Return ``p`` as float if it is a valid dropout probability, else raise ``ValueError``.

    Valid is ``0 <= p < 1`` (``<= 1`` when ``allow_one``: dropping everything is meaningful only
    for some forms, which then return zeros).
    """
    if isinstance(p, bool) or not isinstance(p, (int, float)):
        raise ValueError(f"{name} must be a number in [0, 1{']' if allow_one else ')'}, got {p!r}")
    p = float(p)
    hi_ok = p <= 1.0 if allow_one else p < 1.0
    if math.isnan(p) or p < 0.0 or not hi_ok:
        raise ValueError(f"{name} must be in [0, 1{']' if allow_one else ')'}, got {p}")
    return p


def check_positive_int(n, name: str) -> int:
    if isinstance(n, bool) or not isinstance(n, int) or n <= 0:
        raise ValueError(f"{name} must be a positive integer, got {n!r}")
    return n
