"""The server's log, rate-limited: one line per kind of failure per interval, never one per attacker's try.

A server under abuse fails the same way thousands of times a second (refused
connections, malformed requests, a full file table at accept). One line per kind per
``interval`` seconds says what happens and how often ("... (1234 more since the last
line)") without letting a flood write the disk full. Three sources go through it: the
server's own lines (:meth:`RateLimitedLog.warning`), the event loop's errors (the
exception handler, installed on the server's own loop: a failed ``accept()`` is one line,
never a traceback) and uvicorn's warnings (a filter on its ``uvicorn.error`` logger while
the server runs, removed when it stops).
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Any

__all__ = ["RateLimitedLog"]


class RateLimitedLog:
    """Lines to ``logger``, at most one per kind per ``interval`` seconds; thread-safe."""

    def __init__(self, logger: logging.Logger, interval: float) -> None:
        self.logger, self.interval = logger, interval
        self._lock = threading.Lock()
        self._kinds: dict[str, list[float]] = {}  # kind -> [time of the last line, lines held back since]

    def allow(self, kind: str) -> int | None:
        """None when a line of this kind was written within the interval (it is counted), else
        the number of lines of this kind held back since the last one."""
        now = time.monotonic()
        with self._lock:
            entry = self._kinds.get(kind)
            if entry is not None and now - entry[0] < self.interval:
                entry[1] += 1
                return None
            if len(self._kinds) > 1000:  # kinds are few; a flood of distinct ones must not grow this
                self._kinds.clear()
            held = int(entry[1]) if entry is not None else 0
            self._kinds[kind] = [now, 0]
            return held

    def warning(self, kind: str, message: str, *args: Any, exc_info: bool = False) -> None:
        held = self.allow(kind)
        if held is None:
            return
        if held:
            message += f" ({held} more since the last line)"
        self.logger.warning(message, *args, exc_info=exc_info)

    def loop_exception(self, loop, context: dict) -> None:
        """An event loop's exception handler: one line, no traceback (a failed accept lands here)."""
        message = str(context.get("message") or "event loop error")
        error = context.get("exception")
        self.warning("loop: " + message, "%s%s", message, f": {error!r}" if error is not None else "")

    def filter(self, record: logging.LogRecord) -> bool:
        """A logging filter: warnings and errors of one message template pass once per interval."""
        if record.levelno < logging.WARNING:
            return True
        held = self.allow(f"{record.name}: {record.msg}")
        if held is None:
            return False
        if held:
            record.msg = f"{record.msg} ({held} more since the last line)"
        return True
