"""Stopping a run on request: SIGINT (Ctrl-C) and SIGTERM (``kill``, schedulers, torchrun)
are turned into a flag that the training loop checks between steps, so it can save a
checkpoint at the current step and exit cleanly instead of dying mid-write."""

from __future__ import annotations

import signal
import threading

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopSignals:
    """Context manager: while active, the first SIGINT/SIGTERM sets :attr:`received` (the
    signal number) instead of interrupting; the handlers are then restored, so a second
    signal acts as usual (KeyboardInterrupt, termination) if the user will not wait.

    Signal handlers can only be installed from the main thread; elsewhere this does nothing
    and signals keep their usual effect."""

    def __init__(self) -> None:
        self.received: int | None = None
        self._previous: dict[int, object] = {}

    @property
    def requested(self) -> bool:
        return self.received is not None

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for sig in STOP_SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, _frame) -> None:
        self.received = signum
        self._restore()

    def _restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}

    def __exit__(self, *exc) -> None:
        self._restore()


def signal_name(signum: int) -> str:
    return signal.Signals(signum).name
