"""What the server lets in at once: connections, bytes of bodies, turns at the model.

Each limit bounds one resource an abusive client could exhaust, and answers beyond it
with a status that tells an honest client to come back (``Retry-After``):

- :class:`ConnectionCount`: open connections in all and per client address (file
  descriptors). Checked at accept, before a byte is read.
- :class:`BodyBudget`: bytes of request bodies being read or decoded, in all (memory).
  Reserved from the Content-Length before the body is read, so unfinished bodies from
  many addresses cannot add up past it.
- :class:`Turns`: who decodes and runs a batch (CPU and the model): ``total`` at once,
  at most ``per_address`` of them for one address, the others waiting in line up to
  ``timeout`` seconds. One address's many requests queue behind each other instead of
  being refused, so honest clients behind one address (a NAT, a test) all get through.

All three are used from the server's event-loop thread only.
"""
from __future__ import annotations

import asyncio
import contextlib
from typing import AsyncIterator

__all__ = ["BodyBudget", "Busy", "ConnectionCount", "Turns"]


class Busy(Exception):
    """No turn within the queue timeout."""


class ConnectionCount:
    """Open connections, in all and per address."""

    def __init__(self, total: int, per_address: int) -> None:
        self.total, self.per_address = total, min(per_address, total)
        self.open, self.refused = 0, 0
        self.by_address: dict[str, int] = {}

    def admit(self, address: str) -> tuple[int, str] | None:
        """None when the connection is admitted (and counted), else (status, reason) to refuse it with."""
        if self.open >= self.total:
            self.refused += 1
            return 503, f"the server has {self.total} connections open, its limit"
        if self.by_address.get(address, 0) >= self.per_address:
            self.refused += 1
            return 429, f"this address has {self.per_address} connections open, its limit"
        self.open += 1
        self.by_address[address] = self.by_address.get(address, 0) + 1
        return None

    def release(self, address: str) -> None:
        self.open -= 1
        left = self.by_address[address] - 1
        if left:
            self.by_address[address] = left
        else:
            del self.by_address[address]


class BodyBudget:
    """Bytes of request bodies admitted and not yet answered."""

    def __init__(self, limit: int) -> None:
        self.limit, self.used = limit, 0

    def reserve(self, size: int) -> bool:
        if self.used + size > self.limit:
            return False
        self.used += size
        return True

    def release(self, size: int) -> None:
        self.used -= size


class Turns:
    """At most ``total`` requests at the model at once, at most ``per_address`` of them from one address."""

    def __init__(self, total: int, per_address: int, timeout: float) -> None:
        self.total, self.per_address, self.timeout = total, per_address, timeout
        self._all: asyncio.Semaphore | None = None  # made on first use, on the server's loop
        self._lines: dict[str, list] = {}  # address -> [its semaphore, requests holding or awaiting it]

    @contextlib.asynccontextmanager
    async def turn(self, address: str) -> AsyncIterator[None]:
        """Hold a turn for the body of the ``async with``; raises Busy after ``timeout`` seconds of waiting."""
        if self._all is None:
            self._all = asyncio.Semaphore(self.total)
        line = self._lines.setdefault(address, [asyncio.Semaphore(self.per_address), 0])
        line[1] += 1
        try:
            await self._acquire(line[0])
            try:
                yield
            finally:
                self._all.release()
                line[0].release()
        finally:
            line[1] -= 1
            if not line[1]:
                del self._lines[address]

    async def _acquire(self, own: asyncio.Semaphore) -> None:
        """The address's place, then a turn of all: both or neither, within the timeout."""
        if self.timeout <= 0 and (own.locked() or self._all.locked()):
            raise Busy
        try:
            await asyncio.wait_for(self._both(own), self.timeout if self.timeout > 0 else None)
        except (asyncio.TimeoutError, TimeoutError):
            raise Busy from None

    async def _both(self, own: asyncio.Semaphore) -> None:
        await own.acquire()
        try:
            await self._all.acquire()
        except BaseException:  # cancelled by the timeout: give the address's place back
            own.release()
            raise
