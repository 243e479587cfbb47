"""Ctrl-C and SIGTERM for a training loop: raised where it is safe, held where it is not.

While :meth:`StopSignals.installed` is active, SIGINT and SIGTERM (a job scheduler's polite
kill) raise ``KeyboardInterrupt``, except inside :meth:`StopSignals.hold` blocks (an optimiser
commit, a checkpoint write), where they are remembered and raised when the block ends. The
trainer rolls back what the interrupted compute drew and saves the last completed step.

With ``defer=True`` (several processes, one run) a signal is only remembered (``requested``):
the ranks must stop at the same step, so the trainer asks all of them at its next collective.
"""
from __future__ import annotations

import signal
import threading
from contextlib import contextmanager


class StopSignals:
    def __init__(self, defer: bool = False) -> None:
        self._holding = False
        self._pending = None
        self.defer = defer

    @property
    def requested(self) -> bool:
        """A signal arrived (and, with ``defer``, waits for the trainer to act on it)."""
        return self._pending is not None

    def clear(self) -> None:
        """Forget a remembered signal (the trainer has acted on it)."""
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
        if not outer and self._pending is not None and not self.defer:
            self._pending = None
            raise KeyboardInterrupt

    @contextmanager
    def installed(self):
        """Install the handlers for the block (main thread only; elsewhere a no-op)."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def handler(signum, frame):
            if self._holding or self.defer:
                self._pending = signum
            else:
                raise KeyboardInterrupt
        old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for s, h in old.items():
                signal.signal(s, h)
