"""Checkpoints that survive crashes and never unpickle code.

``save`` writes to a temporary file in the same directory, fsyncs it and renames it over the
target, so a crash mid-write leaves the previous checkpoint intact. ``load`` uses
``torch.load(weights_only=True)``: only tensors and plain containers are accepted. Every
failure is one :class:`CheckpointError` line that names the file: a full disk says so (torch
itself reports only "unexpected pos"), and the temporary file is removed.
"""
from __future__ import annotations

import errno
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any, Iterable

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
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(e, (OSError, RuntimeError)):
            raise CheckpointError(_write_failure(path, e, state)) from None
        raise
    return path


_DISK_FULL = (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC), errno.EFBIG)


def _write_failure(path: Path, e: BaseException, state) -> str:
    """One line saying why ``path`` could not be written. torch wraps the OSError of a full
    disk in "[enforce fail ...] unexpected pos", so look along the chain and at the free space."""
    cause, seen = e, set()
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if isinstance(cause, OSError) and cause.errno in _DISK_FULL:
            break
        cause = cause.__cause__ or cause.__context__
    need = _nbytes(state)
    try:
        free = shutil.disk_usage(path.parent).free
    except OSError:
        free = None
    kept = f"the previous {path.name} is kept" if path.exists() else f"no {path.name} was written"
    if cause is not None or (free is not None and free < need + (1 << 20)):
        left = f"{_size(free)} free" if free is not None else "free space unknown"
        return (f"no space left on device to write checkpoint {path} (directory {path.parent}: "
                f"{left}, the checkpoint needs about {_size(need)}); {kept}. Free some space "
                f"or choose another --out, then resume with --resume")
    first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return f"could not write checkpoint {path} ({first[:200]}); {kept}"


def _nbytes(obj) -> int:
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(_nbytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(_nbytes(v) for v in obj)
    return 8


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def remove_stale_temp_files(directory: str | os.PathLike) -> list[Path]:
    """Remove the temporary files that :func:`save` leaves only when the process is killed
    mid-write (``<name>.pt.<random>.tmp``). Call it only while holding the directory."""
    removed = []
    for f in Path(directory).glob("*.pt.*.tmp"):
        f.unlink(missing_ok=True)
        removed.append(f)
    return removed


def load_weights(module: torch.nn.Module, weights: dict, path: str | os.PathLike,
                 hint: str = "") -> None:
    """``module.load_state_dict(weights)`` with one line instead of torch's list when they do
    not fit: the first tensor whose shape differs (or the missing / extra names), after
    ``hint`` (e.g. which config values differ)."""
    own = module.state_dict()
    if not isinstance(weights, dict):
        raise CheckpointError(f"{path}: the model weights are not a state dict")
    shapes = [(k, tuple(v.shape), tuple(own[k].shape)) for k, v in weights.items()
              if k in own and isinstance(v, torch.Tensor) and tuple(v.shape) != tuple(own[k].shape)]
    missing = [k for k in own if k not in weights]
    extra = [k for k in weights if k not in own]
    if shapes or missing or extra:
        if shapes:
            k, a, b = shapes[0]
            detail = (f"{k} has shape {a} in the checkpoint and {b} here"
                      + (f", and {len(shapes) - 1} more tensors differ" if len(shapes) > 1 else ""))
        else:
            detail = ", ".join(filter(None, [
                f"missing {', '.join(missing[:3])}" + (" ..." if len(missing) > 3 else "") if missing else "",
                f"unexpected {', '.join(extra[:3])}" + (" ..." if len(extra) > 3 else "") if extra else ""]))
        raise CheckpointError(f"{path} does not fit this model: "
                              + (f"{hint} ({detail})" if hint else detail))
    module.load_state_dict(weights)


def require(state: dict, keys: Iterable[str], path: str | os.PathLike) -> dict:
    """Raise a CheckpointError naming the missing keys (a file with our format tag written by
    another tool, or truncated by hand) instead of a bare ``KeyError``."""
    missing = [k for k in keys if k not in state]
    if missing:
        raise CheckpointError(f"{path} is an rnndrop checkpoint without "
                              f"{', '.join(repr(k) for k in missing)}: not a language-model "
                              f"checkpoint of rnndrop train, or it is damaged")
    return state


def load(path: str | os.PathLike, map_location="cpu") -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} not found")
    try:
        with warnings.catch_warnings():
            # torch warns about legacy (non-zip) files before it fails; our one line says it all.
            warnings.simplefilter("ignore")
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
