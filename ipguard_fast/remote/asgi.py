"""The label API as an ASGI application: routing, auth, request deadlines, admission, answers.

uvicorn (server.py) does the HTTP itself: strict framing and header parsing with h11
(conflicting or malformed Content-Length refused), keep-alive, the socket; each
connection's guard (connections.py) admits it and bounds its headers' time. This app owns
what the API promises on top:

- every answer is JSON (``{"error": code, "message": ...}`` for 4xx/5xx), never a traceback;
- a body is read only after its Content-Length is checked against the size limit and
  reserved from the bytes-in-flight budget (503 with Retry-After when it would not fit);
- a request's body must arrive within ``request_timeout`` seconds of its headers, or it
  gets 408 and its connection is closed: a slow sender holds no turn for long;
- decoding and the model run in worker threads, at most ``max_concurrent`` at once and
  ``max_per_client`` for one address (admission.Turns); the others wait in line up to
  ``queue_timeout`` seconds (503 with Retry-After after that), so a burst of honest
  clients is queued instead of refused. Decoding goes in short steps (decoding.py), so
  the event loop -- health answers included -- is never held for long.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import time
from typing import Any

from .._files import short_error
from .admission import BodyBudget, Busy, Turns
from .buffers import joined
from .config import ServerLimits
from .decoding import parse_labels_request
from .logs import RateLimitedLog
from .protocol import HEALTH_PATH, LABELS_PATH, ProtocolError, dumps, encode_error, encode_labels
from .service import LabelService

__all__ = ["HttpError", "LabelApp"]

_ROUTES = {HEALTH_PATH: "GET", LABELS_PATH: "POST"}
_KNOWN_METHODS = {"GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"}
_RETRY = {"Retry-After": "1"}


class HttpError(Exception):
    """Raised inside the app to answer with an error status."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None, close: bool = False):
        super().__init__(message)
        self.status, self.message, self.headers, self.close = status, message, headers or {}, close


class LabelApp:
    def __init__(self, service: LabelService, limits: ServerLimits, log: RateLimitedLog) -> None:
        self.service, self.limits, self.log = service, limits, log
        self.turns = Turns(limits.max_concurrent, limits.max_per_client, limits.queue_timeout)
        self.budget = BodyBudget(limits.max_body_bytes_in_flight)
        self.executor = concurrent.futures.ThreadPoolExecutor(limits.max_concurrent, thread_name_prefix="ipguard-model")

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        started = time.monotonic()
        try:
            await self._route(scope, receive, send, started)
        except HttpError as error:
            # 501 answers a method the API does not have: the client's mistake, not a failure here.
            refused = "Retry-After" in error.headers
            kind = "refused" if refused else "server_errors" if error.status >= 500 and error.status != 501 \
                else "client_errors"
            self.service.count(**{kind: 1})
            headers = dict(error.headers)
            if error.close:
                headers["Connection"] = "close"
            await _send_json(send, error.status, encode_error(error.status, error.message), headers)
        except Exception:  # never a traceback to the client
            self.log.warning("internal", "internal error answering %s %s", scope.get("method"), scope.get("path"),
                             exc_info=True)
            self.service.count(server_errors=1)
            await _send_json(send, 500, encode_error(500, "internal server error"))

    async def _lifespan(self, receive, send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                self.executor.shutdown(wait=False, cancel_futures=True)
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _route(self, scope, receive, send, started: float) -> None:
        method, path = scope["method"], scope["path"]
        if method not in _KNOWN_METHODS:
            raise HttpError(501, f"method {method[:20]!r} is not implemented")
        if path not in _ROUTES:
            raise HttpError(404, f"no endpoint {path[:100]!r}; the API has GET {HEALTH_PATH} and POST {LABELS_PATH}")
        if method != _ROUTES[path]:
            raise HttpError(405, f"{path} accepts {_ROUTES[path]} only", {"Allow": _ROUTES[path]})
        headers = _headers(scope)
        if not self.service.authorized(headers.get("authorization")):
            raise HttpError(401, "missing or wrong bearer token (send 'Authorization: Bearer <token>')",
                            {"WWW-Authenticate": 'Bearer realm="ipguard"'})
        if path == HEALTH_PATH:
            await _send_json(send, 200, self.service.health())
            return
        client = str((scope.get("client") or ("unknown", 0))[0])
        await self._labels(headers, receive, send, started, client)

    async def _labels(self, headers: dict[str, str], receive, send, started: float, client: str) -> None:
        self.service.count(labels_requests=1)
        length = self._content_length(headers)
        if not self.budget.reserve(length):
            self.log.warning("budget", "refused request bodies over max_body_bytes_in_flight=%d",
                             self.budget.limit)
            raise HttpError(503, f"the server is reading {self.budget.used} bytes of other requests, its limit "
                                 "for bodies in flight; retry later", _RETRY, close=True)
        try:
            body = await self._read_body(receive, length, started + self.limits.request_timeout)
            try:
                async with self.turns.turn(client):
                    labels, count = await asyncio.get_running_loop().run_in_executor(self.executor, self._run, body)
            except Busy:
                raise HttpError(503, "server busy, retry later", _RETRY) from None
        finally:
            self.budget.release(length)
        self.service.count(labels_ok=1, images=count)
        await _send_json(send, 200, encode_labels(labels))

    def _content_length(self, headers: dict[str, str]) -> int:
        # h11 has already refused malformed and conflicting Content-Length headers.
        if "chunked" in headers.get("transfer-encoding", "").lower():
            raise HttpError(411, "chunked bodies are not accepted; send Content-Length", close=True)
        if "content-length" not in headers:
            raise HttpError(411, "Content-Length header required", close=True)
        length = int(headers["content-length"])
        if length > self.service.max_request_bytes:
            raise HttpError(413, f"request body of {length} bytes exceeds max_request_bytes="
                                 f"{self.service.max_request_bytes}", close=True)
        return length

    async def _read_body(self, receive, length: int, deadline: float) -> list[bytes]:
        """The body's chunks as they came: joined by the worker, never copied on the event loop."""
        chunks, received = [], 0
        while True:
            remaining = deadline - time.monotonic()
            try:
                if remaining <= 0:
                    raise TimeoutError
                message = await asyncio.wait_for(receive(), timeout=remaining)
            except (asyncio.TimeoutError, TimeoutError):
                raise HttpError(408, f"timed out reading the request body ({received} of {length} bytes "
                                     f"received in {self.limits.request_timeout:g} s)", close=True) from None
            if message["type"] == "http.disconnect":
                raise HttpError(400, f"the client went away after {received} of {length} bytes", close=True)
            chunk = message.get("body", b"")
            received += len(chunk)
            if received > length:  # h11 frames by Content-Length; this is only a guard
                raise HttpError(400, "request body longer than its Content-Length", close=True)
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        if received != length:
            raise HttpError(400, f"request body ended after {received} of {length} bytes", close=True)
        return chunks

    def _run(self, chunks: list[bytes]):
        """In a worker thread: the body to images (in short steps), then the model's labels."""
        service = self.service
        try:
            images = parse_labels_request(joined(chunks), input_shape=service.input_shape,
                                          max_batch=service.max_batch)
        except ProtocolError as exc:
            raise HttpError(exc.status, str(exc)) from None
        try:
            return service.predict(images), int(images.shape[0])
        except Exception as exc:   # one line: any client can send a batch the model cannot take
            self.log.warning("model", "the model failed on a batch of shape %s: %s", list(images.shape),
                             short_error(exc))
            if service.input_shape is None:
                # No declared shape: most likely the client sent a shape the model cannot take.
                raise HttpError(400, f"the model could not process images of shape {list(images.shape)}") from None
            raise HttpError(500, "the model failed on this batch") from None


def _headers(scope) -> dict[str, str]:
    """Request headers, lower-cased names; latin-1 as HTTP defines them."""
    return {name.decode("latin-1").lower(): value.decode("latin-1") for name, value in scope["headers"]}


async def _send_json(send, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
    body = dumps(payload)
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
           (b"cache-control", b"no-store")]
    raw += [(k.lower().encode("latin-1"), str(v).encode("latin-1")) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})
