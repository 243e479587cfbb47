"""Checkpoints that survive crashes and never unpickle code.

``save`` writes to a temporary file in the same directory, fsyncs it and renames it over the
target, so a crash mid-write leaves the previous checkpoint intact. ``load`` uses
``torch.load(weights_only=True)``: only tensors and plain containers are accepted.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch

FORMAT = "rnndrop-checkpoint-v1"


class CheckpointError(RuntimeError):
    """A checkpoint is missing, corrupted, or does not fit the model/corpus."""


def save(state: dict[str, Any], path: str | os.PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save({"format": FORMAT, **state}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load(path: str | os.PathLike, map_location="cpu") -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} not found")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # truncated zip, wrong file, disallowed pickle content, ...
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if "weights only load failed" in first.lower():
            # torch's message goes on to suggest weights_only=False, which would run whatever
            # code the file holds: never pass that advice on.
            first = "not a torch checkpoint, or it holds objects other than tensors and plain data"
        raise CheckpointError(f"checkpoint {path} is corrupted or not an rnndrop checkpoint "
                              f"({first[:200]})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not an rnndrop checkpoint (format "
                              f"{state.get('format') if isinstance(state, dict) else type(state).__name__!r})")
    return state
