"""One HTTP exchange with a hard deadline: httpx on a background event loop.

httpx's timeouts bound each network operation, not a whole exchange: a server that
sends one byte every few seconds never trips a read timeout. Running the exchange as an
asyncio task under ``asyncio.wait_for`` bounds all of it -- connecting, sending, the
status line, the headers, the body -- by one deadline, and cancels it cleanly when the
deadline passes. The event loop is one daemon thread shared by every client of the
process, so the client stays a plain synchronous callable and each client keeps one
connection pool across its requests.

Nothing here ever waits on the loop from the loop's own thread, and closing a client
(also from a garbage-collection finaliser, which may run on any thread) only schedules
the close: no lock-step between threads that could deadlock.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import ssl
import threading
import weakref
from typing import Any

from .._optional import require

__all__ = ["Exchange", "HttpTransport", "TransportError"]

_LOOP: asyncio.AbstractEventLoop | None = None
_LOOP_LOCK = threading.Lock()


def _loop() -> asyncio.AbstractEventLoop:
    """The process's background event loop (a daemon thread, started on first use)."""
    global _LOOP
    with _LOOP_LOCK:
        if _LOOP is None or _LOOP.is_closed():
            loop = asyncio.new_event_loop()
            threading.Thread(target=loop.run_forever, name="ipguard-http", daemon=True).start()
            _LOOP = loop
        return _LOOP


class TransportError(Exception):
    """The exchange did not produce an answer: ``reason`` says why, ``permanent`` whether retrying can help."""

    def __init__(self, reason: str, permanent: bool = False) -> None:
        super().__init__(reason)
        self.reason, self.permanent = reason, permanent


class Exchange:
    """An answer: the status, the headers (case-insensitive), and at most max_response + 1 body bytes."""

    def __init__(self, status: int, headers: Any, body: bytes) -> None:
        self.status, self.headers, self.body = status, headers, body


class HttpTransport:
    def __init__(self, local_address: str | None = None) -> None:
        self.httpx = require("httpx", "remote", "the HTTP client")
        self.local_address = local_address
        self._lock = threading.Lock()
        self._client = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._finalizer = None

    def exchange(self, method: str, url: str, body: bytes | None, headers: dict[str, str], max_response: int,
                 seconds: float) -> Exchange:
        """Send one request and read its answer within `seconds`, or raise TransportError."""
        loop, client = self._started()
        future = asyncio.run_coroutine_threadsafe(
            self._exchange(client, method, url, body, headers, max_response, seconds), loop)
        try:
            # The task's own deadline ends it; the extra second only guards against a stuck loop.
            return future.result(timeout=seconds + 1.0)
        except (asyncio.TimeoutError, TimeoutError, concurrent.futures.TimeoutError):
            future.cancel()
            raise TransportError(f"no complete answer within {seconds:.3g} s") from None
        except self.httpx.TransportError as exc:
            cause = exc.__cause__ or exc.__context__
            # A certificate problem or a scheme httpx cannot speak does not go away on retry.
            permanent = isinstance(cause, ssl.SSLError) or isinstance(exc, self.httpx.UnsupportedProtocol)
            reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            raise TransportError(reason, permanent) from None

    async def _exchange(self, client, method, url, body, headers, max_response, seconds) -> Exchange:
        return await asyncio.wait_for(self._read(client, method, url, body, headers, max_response), seconds)

    @staticmethod
    async def _read(client, method, url, body, headers, max_response) -> Exchange:
        async with client.stream(method, url, content=body, headers=headers) as response:
            chunks, size = [], 0
            async for chunk in response.aiter_raw():
                chunks.append(chunk)
                size += len(chunk)
                if size > max_response:
                    break
            return Exchange(response.status_code, response.headers, b"".join(chunks))

    def _started(self):
        with self._lock:
            if self._client is None:
                loop = _loop()
                transport = self.httpx.AsyncHTTPTransport(local_address=self.local_address, retries=0)
                # timeout=None: the exchange's own deadline bounds everything. Redirects are never
                # followed: a POST would become a GET, and the token would go to another host.
                self._client = self.httpx.AsyncClient(transport=transport, timeout=None, follow_redirects=False)
                self._loop = loop
                self._finalizer = weakref.finalize(self, _schedule_close, loop, self._client)
            return self._loop, self._client

    def close(self) -> None:
        """Release the connection pool (scheduled on the loop; a later exchange opens a new one)."""
        with self._lock:
            if self._finalizer is not None:
                self._finalizer()
            self._client = self._loop = self._finalizer = None


def _schedule_close(loop: asyncio.AbstractEventLoop, client) -> None:
    """Close `client` on its loop without waiting: safe from any thread, finalisers included."""
    if not loop.is_closed():
        asyncio.run_coroutine_threadsafe(client.aclose(), loop)
