"""Stop requests: Ctrl-C or SIGTERM during training ask for a clean stop after the current step."""
from __future__ import annotations

import signal
import sys
import threading

__all__ = ["StopFlag"]


class StopFlag:
    """The first Ctrl-C (SIGINT) or SIGTERM asks for a clean stop after the
    current step and says so at once; a second Ctrl-C raises KeyboardInterrupt
    (the last checkpoint stays)."""

    def __init__(self, announce: bool = True):
        self.requested = False
        self.announce = announce
        self._old = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True
        if self.announce:
            print("\ncwarp-train: stopping after this step and saving a checkpoint (Ctrl-C again to quit at once)",
                  file=sys.stderr, flush=True)

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)
