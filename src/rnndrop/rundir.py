"""The run directory: one writer at a time, and logs that agree with the checkpoint.

A training run owns its directory (``last.pt``, ``best.pt``, ``metrics.jsonl``,
``steps.jsonl``) while it runs. :class:`RunLock` makes a second run into the same directory stop
with one line naming the process that holds it; the lock is an ``flock`` on ``.lock`` (the
kernel drops it when its process dies, so a stale lock of a killed run is simply taken over).

A kill can land between two writes: after a log line and before its checkpoint, or the other way
round. The logs are therefore made to agree with the checkpoint a run resumes from
(:func:`rewrite_metrics`, :func:`truncate_steps`): the checkpoint is the truth.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

try:
    import fcntl
except ImportError:  # not POSIX: fall back to a PID file created exclusively
    fcntl = None

LOCK_NAME = ".lock"


class RunDirectoryBusy(RuntimeError):
    """Another live process is training into this directory."""


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class RunLock:
    """Exclusive hold on a run directory: ``with RunLock(out): ...``."""

    def __init__(self, directory: str | os.PathLike):
        self.dir = Path(directory)
        self.path = self.dir / LOCK_NAME
        self._fd = None

    def _holder(self) -> str:
        try:
            pid = self.path.read_text().split()[0]
        except (OSError, IndexError):
            return "another process"
        return f"PID {pid}"

    def acquire(self) -> "RunLock":
        self.dir.mkdir(parents=True, exist_ok=True)
        if fcntl is None:
            return self._acquire_pidfile()
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise RunDirectoryBusy(
                    f"run directory {self.dir} is in use by {self._holder()} (another rnndrop "
                    f"run); wait for it to finish or choose another --out") from None
            # The holder before us may have removed the file between our open and our lock:
            # then we locked an orphan inode; start again on the file that is there now.
            try:
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return self

    def _acquire_pidfile(self) -> "RunLock":
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                try:
                    pid = int(self.path.read_text().split()[0])
                except (OSError, ValueError, IndexError):
                    pid = -1
                if pid > 0 and _pid_alive(pid):
                    raise RunDirectoryBusy(
                        f"run directory {self.dir} is in use by PID {pid} (another rnndrop "
                        f"run); wait for it to finish or choose another --out") from None
                self.path.unlink(missing_ok=True)       # stale: its process is gone
                continue
            os.write(fd, f"{os.getpid()}\n".encode())
            self._fd = fd
            return self
        raise RunDirectoryBusy(f"could not take the lock {self.path}")

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            self.path.unlink(missing_ok=True)   # while still holding it: see acquire()
        finally:
            if fcntl is not None:
                fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def atomic_write_text(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` (UTF-8, fsynced): a crash leaves the old file or the new."""
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".part", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def append_lines(path: Path, lines: list[str]) -> None:
    """Append whole lines and fsync them (a log line is on disk before the checkpoint that
    follows it; :func:`truncate_steps` removes lines the checkpoint does not cover)."""
    if not lines:
        return
    with open(path, "a") as f:
        f.write("\n".join(lines) + "\n")
        f.flush()
        os.fsync(f.fileno())


def rewrite_metrics(path: Path, history: list[dict]) -> None:
    """Make ``metrics.jsonl`` exactly one line per finished epoch of ``history``."""
    text = "".join(json.dumps(rec) + "\n" for rec in history)
    if path.exists() and path.read_text() == text:
        return
    if not history and not path.exists():
        return
    atomic_write_text(path, text)


def truncate_steps(path: Path, last_step: int) -> int:
    """Keep the lines of ``steps.jsonl`` with ``step <= last_step`` (a torn last line is
    dropped too); returns how many lines were removed."""
    if not path.exists():
        return 0
    kept, dropped = [], 0
    for line in path.read_text().splitlines():
        try:
            ok = json.loads(line)["step"] <= last_step
        except (ValueError, KeyError, TypeError):
            ok = False
        if ok:
            kept.append(line + "\n")
        else:
            dropped += 1
    if dropped:
        atomic_write_text(path, "".join(kept))
    return dropped
