"""A deadline for request headers, wrapped around uvicorn's h11 protocol (composition, not a subclass).

uvicorn has no deadline for a request's headers: its keep-alive timeout covers idle
connections between requests and is cancelled by any byte, so a client sending one
header byte every few seconds would hold its connection for ever. serve() therefore
hands uvicorn a protocol class of its own through the typed setting
``uvicorn.Config(http=<an asyncio.Protocol class>)``. Each connection is a
:class:`HeaderGuard`: it passes every ``asyncio.Protocol`` call on to uvicorn's h11
protocol unchanged and adds one timer, armed when the connection opens and whenever
bytes arrive while no request is in the application, and cleared when a request
reaches it. When the timer fires the connection gets a JSON 408 and is closed.

How a guard learns that its request reached the application: it sets a context
variable while it hands bytes to uvicorn, and asyncio copies the current context into
every task created meanwhile -- among them the task in which uvicorn runs the request --
so the ASGI wrapper (:meth:`HeaderDeadline.wrap`) finds its connection's guard there.
Should a uvicorn version ever run requests outside that context, the wrapper sees no
guard, turns the timers off for the server and logs it once: the server then lacks the
header deadline but never cuts a request short. tests/test_remote_deadlines.py checks
both sides (slow headers get 408; a request slower than the deadline is answered).
"""
from __future__ import annotations

import asyncio
import contextvars
import logging
from typing import Any

from .protocol import dumps, encode_error

__all__ = ["HeaderDeadline", "HeaderGuard", "h11_protocol"]

logger = logging.getLogger("ipguard_fast.remote")

_GUARD: contextvars.ContextVar["HeaderGuard | None"] = contextvars.ContextVar("ipguard_header_guard", default=None)


def h11_protocol() -> type[asyncio.Protocol]:
    """uvicorn's h11 protocol class (what ``http="h11"`` selects), used only through asyncio.Protocol."""
    try:
        from uvicorn.protocols.http.h11_impl import H11Protocol
    except ImportError as exc:  # pragma: no cover - a uvicorn that moved it: say so, not a bare ImportError
        raise RuntimeError(f"this uvicorn has no h11 protocol at uvicorn.protocols.http.h11_impl ({exc}); "
                           "ipguard serve needs uvicorn's h11 implementation") from None
    return H11Protocol


class HeaderDeadline:
    """One server's header deadline: ``protocol`` for ``uvicorn.Config(http=...)``, ``wrap(app)`` for its app."""

    def __init__(self, seconds: float, inner: type[asyncio.Protocol]) -> None:
        self.seconds = seconds
        self.active = True  # False once requests are seen to run outside their connection's context
        self.protocol: type[HeaderGuard] = type("HeaderGuardedProtocol", (HeaderGuard,),
                                                {"deadline": self, "inner_class": inner})

    def wrap(self, app):
        """The ASGI app that tells each request's connection guard when the request starts and ends."""

        async def guarded(scope, receive, send) -> None:
            guard = _GUARD.get()
            if scope["type"] != "http" or guard is None:
                if scope["type"] == "http" and self.active:
                    self.active = False
                    logger.warning("request headers have no deadline: this uvicorn runs requests outside "
                                   "their connection's context")
                await app(scope, receive, send)
                return
            guard.request_started()
            try:
                await app(scope, receive, send)
            finally:
                guard.request_finished()

        return guarded


class HeaderGuard(asyncio.Protocol):
    """One connection: uvicorn's protocol inside, a deadline for each request's headers around it."""

    deadline: HeaderDeadline
    inner_class: type[asyncio.Protocol]

    def __init__(self, **kwargs: Any) -> None:
        self.inner = self.inner_class(**kwargs)  # uvicorn's own arguments, passed on unread
        self.transport: asyncio.Transport | None = None
        self.in_app = 0
        self.timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport) -> None:
        self.transport = transport
        self._handing(self.inner.connection_made, transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        self._handing(self.inner.data_received, data)
        if not self.in_app:
            self._arm()  # headers (of this or the next request) still incomplete

    def eof_received(self):
        return self._handing(self.inner.eof_received)

    def connection_lost(self, exc) -> None:
        self._cancel()
        self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
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
            self.timer = asyncio.get_running_loop().call_later(self.deadline.seconds, self._expired)

    def _cancel(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _expired(self) -> None:
        self.timer = None
        if self.in_app or not self.deadline.active or self.transport.is_closing():
            return
        message = f"request headers not received within {self.deadline.seconds:g} s"
        body = dumps(encode_error(408, message))
        head = (f"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
                f"content-length: {len(body)}\r\nconnection: close\r\n\r\n")
        self.transport.write(head.encode("latin-1") + body)
        self.transport.close()
