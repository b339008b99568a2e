"""One HTTP exchange with a hard deadline: httpx on an event loop that each transport owns.

httpx's timeouts bound each network operation, not a whole exchange: a server that
sends one byte every few seconds never trips a read timeout. Running the exchange as an
asyncio task under ``asyncio.wait_for`` bounds all of it -- connecting, sending, the
status line, the headers, the body -- by one deadline, and cancels it cleanly when the
deadline passes. So the client stays a plain synchronous callable, each transport runs
its own event loop in a thread of its own (started by its first exchange) and keeps one
connection pool across its requests.

Who stops that thread: ``close()`` closes the pool, stops the loop and joins the thread
(a later exchange starts a new one). A transport that is never closed is stopped by a
garbage-collection finaliser instead; a finaliser may run on any thread, the loop's own
included, so it only schedules the stop and never waits for it: nothing here ever
blocks on the loop from the loop's own thread, and no lock is held across threads that
could deadlock.
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

_CLOSE_SECONDS = 5.0  # how long close() waits for the pool to close and the thread to end


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
    """httpx exchanges under a hard deadline, on this transport's own event-loop thread (see the module doc).

    ``close()`` (or ``with``) stops that thread and waits for it; a transport that is
    collected without being closed has its thread stopped by a finaliser.
    """

    def __init__(self, local_address: str | None = None, tls: bool = True) -> None:
        self.httpx = require("httpx", "remote", "the HTTP client")
        self.local_address, self.tls = local_address, tls
        self._lock = threading.Lock()
        self._session: _Session | None = None
        self._finalizer: weakref.finalize | None = None

    def exchange(self, method: str, url: str, body: bytes | None, headers: dict[str, str], max_response: int,
                 seconds: float) -> Exchange:
        """Send one request and read its answer within `seconds`, or raise TransportError."""
        session = self._started()
        work = _exchange(session.client, method, url, body, headers, max_response, seconds)
        try:
            future = asyncio.run_coroutine_threadsafe(work, session.loop)
        except RuntimeError:  # closed by another thread meanwhile
            work.close()
            raise TransportError("the client was closed", permanent=True) from None
        try:
            # The task's own deadline ends it; the extra second only guards against a stuck loop.
            return future.result(timeout=seconds + 1.0)
        except (asyncio.TimeoutError, TimeoutError, concurrent.futures.TimeoutError):
            future.cancel()
            raise TransportError(f"no complete answer within {seconds:.3g} s") from None
        except concurrent.futures.CancelledError:
            raise TransportError("the client was closed", permanent=True) from None
        except self.httpx.TransportError as exc:
            cause = exc.__cause__ or exc.__context__
            # A certificate problem or a scheme httpx cannot speak does not go away on retry.
            permanent = isinstance(cause, ssl.SSLError) or isinstance(exc, self.httpx.UnsupportedProtocol)
            reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            raise TransportError(reason, permanent) from None

    def _started(self) -> "_Session":
        with self._lock:
            if self._session is None:
                # Loading the CA bundle costs ~30 ms a client: only an https endpoint gets it. A plain
                # endpoint (redirects are never followed) gets a context that trusts nothing instead.
                verify = True if self.tls else ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
                transport = self.httpx.AsyncHTTPTransport(local_address=self.local_address, retries=0, verify=verify)
                # timeout=None: the exchange's own deadline bounds everything. Redirects are never
                # followed: a POST would become a GET, and the token would go to another host.
                client = self.httpx.AsyncClient(transport=transport, timeout=None, follow_redirects=False)
                self._session = _Session(client)
                # The finaliser holds the session, never this transport: collecting it stays possible.
                self._finalizer = weakref.finalize(self, self._session.stop)
            return self._session

    @property
    def thread(self) -> threading.Thread | None:
        """The event-loop thread while one runs (None before the first exchange and after close())."""
        with self._lock:
            return self._session.thread if self._session is not None else None

    def close(self) -> None:
        """Close the connection pool, stop the event loop and join its thread (a later exchange starts anew)."""
        with self._lock:
            session, finalizer = self._session, self._finalizer
            self._session = self._finalizer = None
        if finalizer is not None:
            finalizer()  # session.stop(), at most once however close and collection interleave
        if session is not None and threading.current_thread() is not session.thread:
            session.thread.join(_CLOSE_SECONDS)

    def __enter__(self) -> "HttpTransport":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class _Session:
    """One httpx client and the event loop it runs on, in a thread started here."""

    def __init__(self, client) -> None:
        self.client = client
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=_run, args=(self.loop,), name="ipguard-http", daemon=True)
        self.thread.start()

    def stop(self) -> None:
        """Close the client, then stop the loop; the thread then ends. Never waits: safe from any thread."""
        try:
            self.loop.call_soon_threadsafe(_begin_shutdown, self.loop, self.client)
        except RuntimeError:  # the loop is already closed
            pass


async def _exchange(client, method, url, body, headers, max_response, seconds) -> Exchange:
    return await asyncio.wait_for(_read(client, method, url, body, headers, max_response), seconds)


async def _read(client, method, url, body, headers, max_response) -> Exchange:
    async with client.stream(method, url, content=body, headers=headers) as response:
        chunks, size = [], 0
        async for chunk in response.aiter_raw():
            chunks.append(chunk)
            size += len(chunk)
            if size > max_response:
                break
        return Exchange(response.status_code, response.headers, b"".join(chunks))


def _begin_shutdown(loop: asyncio.AbstractEventLoop, client) -> None:
    async def shutdown() -> None:
        try:
            await asyncio.wait_for(client.aclose(), _CLOSE_SECONDS / 2)
        except Exception:  # noqa: BLE001 - a pool that will not close cleanly is dropped anyway
            pass
        finally:
            loop.stop()

    loop.create_task(shutdown())


def _run(loop: asyncio.AbstractEventLoop) -> None:
    """The thread's body: run the loop until stopped, cancel what is left, close the loop."""
    asyncio.set_event_loop(loop)
    try:
        loop.run_forever()
    finally:
        tasks = asyncio.all_tasks(loop)
        for task in tasks:
            task.cancel()
        try:
            loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            loop.close()
