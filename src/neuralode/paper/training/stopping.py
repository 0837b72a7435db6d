"""Stopping a run cleanly: SIGINT and SIGTERM ask the training loop to stop at the next batch
boundary, and every rank learns that some rank was asked."""

from __future__ import annotations

import signal
import threading
from types import FrameType
from typing import Any

from .distributed import Distributed

ANOTHER_RANK = "a stop on another rank"
"""``FitResult.stopped_by`` on the ranks that were not signalled themselves."""


class StopOnSignal:
    """While active (in the main thread), SIGINT and SIGTERM set ``reason`` instead of
    interrupting, so the loop stops at a batch boundary; a second SIGINT raises
    KeyboardInterrupt at once. The previous handlers are restored on exit."""

    def __init__(self) -> None:
        self.reason: str | None = None
        self._previous: dict[int, Any] = {}

    @property
    def requested(self) -> bool:
        """Whether this process was asked to stop (or told that another rank was)."""
        return self.reason is not None

    def agreed(self, distributed: Distributed) -> bool:
        """Whether any rank was asked to stop (every rank gets the same answer)."""
        flags = distributed.gather_rows([float(self.requested)])
        if flags.any():
            self.stopped_elsewhere()
        return self.requested

    def stopped_elsewhere(self) -> None:
        """Another rank was asked to stop: stop here too, unless this one was asked itself."""
        self.reason = self.reason or ANOTHER_RANK

    def __enter__(self) -> StopOnSignal:
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc_info: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.reason is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.reason = signal.Signals(signum).name
