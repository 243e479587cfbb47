"""Ctrl-C and SIGTERM for a training loop: raised where it is safe, held where it is not.

While :meth:`StopSignals.installed` is active, SIGINT and SIGTERM (a job scheduler's polite
kill) raise ``KeyboardInterrupt``, except inside :meth:`StopSignals.hold` blocks (an optimiser
commit, a checkpoint write), where they are remembered and raised when the block ends. The
trainer rolls back what the interrupted compute drew and saves the last completed step.
"""
from __future__ import annotations

import signal
import threading
from contextlib import contextmanager


class StopSignals:
    def __init__(self) -> None:
        self._holding = False
        self._pending = None

    @contextmanager
    def hold(self):
        """Hold SIGINT / SIGTERM back until the block is done; then raise KeyboardInterrupt."""
        outer = self._holding
        self._holding = True
        try:
            yield
        finally:
            self._holding = outer
        if not outer and self._pending is not None:
            self._pending = None
            raise KeyboardInterrupt

    @contextmanager
    def installed(self):
        """Install the handlers for the block (main thread only; elsewhere a no-op)."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def handler(signum, frame):
            if self._holding:
                self._pending = signum
            else:
                raise KeyboardInterrupt
        old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for s, h in old.items():
                signal.signal(s, h)
