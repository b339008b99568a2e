"""One HTTP exchange with a hard deadline: httpx on a background event loop.

httpx's timeouts bound each network operation, not a whole exchange: a server that
sends one byte every few seconds never trips a read timeout. Running the exchange as an
asyncio task under ``anyio.fail_after`` bounds all of it -- connecting, sending, the
status line, the headers, the body -- by one deadline, and cancels it cleanly when the
deadline passes. The event loop runs in a background thread (an anyio blocking portal),
so the client stays a plain synchronous callable, and one connection pool serves every
request of a client.
"""
from __future__ import annotations

import ssl
import threading
import weakref
from typing import Any

from .._optional import require

__all__ = ["Exchange", "HttpTransport", "TransportError"]


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
        self.anyio = require("anyio", "remote", "the HTTP client")
        self.local_address = local_address
        self._lock = threading.Lock()
        self._portal = None
        self._client = None
        self._finalizer = None

    def exchange(self, method: str, url: str, body: bytes | None, headers: dict[str, str], max_response: int,
                 seconds: float) -> Exchange:
        """Send one request and read its answer within `seconds`, or raise TransportError."""
        portal = self._start()
        try:
            return portal.call(self._exchange, method, url, body, headers, max_response, seconds)
        except TimeoutError:
            raise TransportError(f"no complete answer within {seconds:.3g} s") from None
        except self.httpx.TransportError as exc:
            cause = exc.__cause__ or exc.__context__
            # A certificate problem or a scheme httpx cannot speak does not go away on retry.
            permanent = isinstance(cause, ssl.SSLError) or isinstance(exc, self.httpx.UnsupportedProtocol)
            reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            raise TransportError(reason, permanent) from None

    async def _exchange(self, method, url, body, headers, max_response, seconds) -> Exchange:
        with self.anyio.fail_after(seconds):
            async with self._client.stream(method, url, content=body, headers=headers) as response:
                chunks, size = [], 0
                async for chunk in response.aiter_raw():
                    chunks.append(chunk)
                    size += len(chunk)
                    if size > max_response:
                        break
                return Exchange(response.status_code, response.headers, b"".join(chunks))

    def _start(self):
        with self._lock:
            if self._portal is None:
                manager = self.anyio.from_thread.start_blocking_portal()
                portal = manager.__enter__()
                transport = self.httpx.AsyncHTTPTransport(local_address=self.local_address, retries=0)
                self._client = portal.call(self._make_client, transport)
                self._portal = portal
                self._finalizer = weakref.finalize(self, _close, portal, manager, self._client)
            return self._portal

    async def _make_client(self, transport):
        # timeout=None: the exchange's own deadline bounds everything. Redirects are never
        # followed: a POST would become a GET, and the token would go to another host.
        return self.httpx.AsyncClient(transport=transport, timeout=None, follow_redirects=False)

    def close(self) -> None:
        with self._lock:
            if self._finalizer is not None:
                self._finalizer()
            self._portal = self._client = self._finalizer = None


def _close(portal, manager, client) -> None:
    try:
        portal.call(client.aclose)
    finally:
        manager.__exit__(None, None, None)
