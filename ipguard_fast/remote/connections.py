"""Each connection's guard, wrapped around uvicorn's h11 protocol (composition, not a subclass):
admission at accept, TCP_NODELAY, and a deadline for request headers.

serve() hands uvicorn a protocol class of its own through the typed setting
``uvicorn.Config(http=<an asyncio.Protocol class>)``. Each connection is a
:class:`ConnectionGuard`, which passes every ``asyncio.Protocol`` call on to uvicorn's h11
protocol unchanged and adds:

- **Admission.** Beyond ``max_connections`` open connections (503) or
  ``max_connections_per_client`` from one address (429) a new connection is answered at
  once with ``Retry-After`` and closed; uvicorn never sees it. It holds its file for at
  most a quarter of a second (so that the client can read the answer before the close),
  and only while few do; under a flood the rest are closed at once. One log line per
  interval says how many were refused.
- **TCP_NODELAY** on the accepted socket: an answer's head and body leave at once, never
  held back waiting for the client's delayed acknowledgement (asyncio sets it too; this
  does not depend on the event loop in use).
- **A deadline for request headers.** uvicorn has none: its keep-alive timeout covers idle
  connections between requests and is cancelled by any byte, so a client sending one
  header byte every few seconds would hold its connection for ever. A timer is armed when
  the connection opens and whenever bytes arrive while no request is in the application,
  and cleared when a request reaches it; when it fires the connection gets a JSON 408 and
  is closed.

How a guard learns that its request reached the application: it sets a context variable
while it hands bytes to uvicorn, and asyncio copies the current context into every task
created meanwhile -- among them the task in which uvicorn runs the request -- so the ASGI
wrapper (:meth:`ConnectionGuards.wrap`) finds its connection's guard there. Should a
uvicorn version ever run requests outside that context, the wrapper sees no guard, turns
the timers off for the server and logs it once: the server then lacks the header deadline
but never cuts a request short. tests/test_remote_deadlines.py checks both sides.
"""
from __future__ import annotations

import asyncio
import contextvars
import socket
from typing import Any

from .admission import ConnectionCount
from .logs import RateLimitedLog
from .protocol import dumps, encode_error

__all__ = ["ConnectionGuard", "ConnectionGuards", "h11_protocol"]

_GUARD: contextvars.ContextVar["ConnectionGuard | None"] = contextvars.ContextVar("ipguard_guard", default=None)

_MAX_LINGERING = 16  # refused connections kept open briefly so their answer can be read; the rest close at once
_LINGER_SECONDS = 0.25
_REASONS = {408: "Request Timeout", 429: "Too Many Requests", 503: "Service Unavailable"}


def h11_protocol() -> type[asyncio.Protocol]:
    """uvicorn's h11 protocol class (what ``http="h11"`` selects), used only through asyncio.Protocol."""
    try:
        from uvicorn.protocols.http.h11_impl import H11Protocol
    except ImportError as exc:  # pragma: no cover - a uvicorn that moved it: say so, not a bare ImportError
        raise RuntimeError(f"this uvicorn has no h11 protocol at uvicorn.protocols.http.h11_impl ({exc}); "
                           "ipguard serve needs uvicorn's h11 implementation") from None
    return H11Protocol


class ConnectionGuards:
    """One server's guards: ``protocol`` for ``uvicorn.Config(http=...)``, ``wrap(app)`` for its app."""

    def __init__(self, header_seconds: float, count: ConnectionCount, log: RateLimitedLog,
                 inner: type[asyncio.Protocol]) -> None:
        self.seconds, self.count, self.log = header_seconds, count, log
        self.active = True  # False once requests are seen to run outside their connection's context
        self.lingering = 0
        self.protocol: type[ConnectionGuard] = type("GuardedProtocol", (ConnectionGuard,),
                                                    {"guards": self, "inner_class": inner})

    def wrap(self, app):
        """The ASGI app that tells each request's connection guard when the request starts and ends."""

        async def guarded(scope, receive, send) -> None:
            guard = _GUARD.get()
            if scope["type"] != "http" or guard is None:
                if scope["type"] == "http" and self.active:
                    self.active = False
                    self.log.logger.warning("request headers have no deadline: this uvicorn runs requests "
                                            "outside their connection's context")
                await app(scope, receive, send)
                return
            guard.request_started()
            try:
                await app(scope, receive, send)
            finally:
                guard.request_finished()

        return guarded


class ConnectionGuard(asyncio.Protocol):
    """One connection: uvicorn's protocol inside; admission, TCP_NODELAY and a header deadline around it."""

    guards: ConnectionGuards
    inner_class: type[asyncio.Protocol]

    def __init__(self, **kwargs: Any) -> None:
        self.inner = self.inner_class(**kwargs)  # uvicorn's own arguments, passed on unread
        self.transport: asyncio.Transport | None = None
        self.address = "unknown"
        self.admitted = False
        self.in_app = 0
        self.timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport) -> None:
        self.transport = transport
        _no_delay(transport)
        peer = transport.get_extra_info("peername")
        self.address = str(peer[0]) if isinstance(peer, tuple) and peer else "unknown"
        refusal = self.guards.count.admit(self.address)
        if refusal is not None:
            self._refuse(*refusal)
            return
        self.admitted = True
        self._handing(self.inner.connection_made, transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        if not self.admitted:
            return  # a refused connection's request: read and dropped while its answer leaves
        self._handing(self.inner.data_received, data)
        if not self.in_app:
            self._arm()  # headers (of this or the next request) still incomplete

    def eof_received(self):
        if not self.admitted:
            return False  # close
        return self._handing(self.inner.eof_received)

    def connection_lost(self, exc) -> None:
        self._cancel()
        if self.admitted:
            self.admitted = False
            self.guards.count.release(self.address)
            self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        if self.admitted:
            self.inner.pause_writing()

    def resume_writing(self) -> None:
        if self.admitted:
            self.inner.resume_writing()

    def request_started(self) -> None:
        self.in_app += 1
        self._cancel()

    def request_finished(self) -> None:
        self.in_app -= 1

    def _handing(self, method, *args):
        """Call uvicorn with this guard in the context its request tasks will copy."""
        token = _GUARD.set(self)
        try:
            return method(*args)
        finally:
            _GUARD.reset(token)

    def _arm(self) -> None:
        if self.timer is None and not self.transport.is_closing():
            self.timer = asyncio.get_running_loop().call_later(self.guards.seconds, self._expired)

    def _cancel(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _expired(self) -> None:
        self.timer = None
        if self.in_app or not self.guards.active or self.transport.is_closing():
            return
        self._answer(408, f"request headers not received within {self.guards.seconds:g} s", {})
        self.transport.close()

    def _refuse(self, status: int, reason: str) -> None:
        """Answer a connection over a limit and close it: after a short linger while few linger, else now."""
        self.guards.log.warning(f"refused {status}", "refused connections over the limit: %s (from %s)", reason,
                                self.address)
        self._answer(status, f"{reason}; retry later", {"retry-after": "1"})
        guards = self.guards
        if guards.lingering >= _MAX_LINGERING or not self.transport.can_write_eof():
            self.transport.close()
            return
        guards.lingering += 1
        self.transport.write_eof()  # the answer, then the end: the client reads both, we drain its request

        def close() -> None:
            guards.lingering -= 1
            self.transport.close()

        asyncio.get_running_loop().call_later(_LINGER_SECONDS, close)

    def _answer(self, status: int, message: str, headers: dict[str, str]) -> None:
        body = dumps(encode_error(status, message))
        extra = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
        head = (f"HTTP/1.1 {status} {_REASONS[status]}\r\ncontent-type: application/json\r\n"
                f"content-length: {len(body)}\r\n{extra}connection: close\r\n\r\n")
        self.transport.write(head.encode("latin-1") + body)


def _no_delay(transport) -> None:
    sock = transport.get_extra_info("socket")
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:  # the peer is already gone: nothing to speed up
            pass
