"""The label API as an ASGI application: routing, auth, request deadlines, fairness, answers.

uvicorn (server.py) does the HTTP itself: strict framing and header parsing with h11
(conflicting or malformed Content-Length refused), keep-alive, the socket. This app
owns what the API promises on top:

- every answer is JSON (``{"error": code, "message": ...}`` for 4xx/5xx), never a traceback;
- a request's body must arrive within ``request_timeout`` seconds of its headers, or it
  gets 408 and its connection is closed: a slow sender holds no slot for long;
- a body is read only after its Content-Length is checked against the size limit;
- each client address has at most ``max_per_client`` requests in flight (429 beyond);
- at most ``max_concurrent`` requests decode and run at once; the others wait up to
  ``queue_timeout`` seconds for a turn (503 with Retry-After after that), so a burst of
  honest clients is queued instead of refused;
- the model runs in a worker thread, one batch at a time (LabelService), so the event
  loop keeps reading other requests meanwhile.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
import time
from typing import Any

from .protocol import HEALTH_PATH, LABELS_PATH, ProtocolError, decode_images, dumps, encode_error, encode_labels
from .service import LabelService

__all__ = ["HttpError", "LabelApp"]

logger = logging.getLogger("ipguard_fast.remote")

_ROUTES = {HEALTH_PATH: "GET", LABELS_PATH: "POST"}
_KNOWN_METHODS = {"GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"}


class HttpError(Exception):
    """Raised inside the app to answer with an error status."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None, close: bool = False):
        super().__init__(message)
        self.status, self.message, self.headers, self.close = status, message, headers or {}, close


class LabelApp:
    def __init__(self, service: LabelService, *, max_concurrent: int, max_per_client: int,
                 request_timeout: float, queue_timeout: float) -> None:
        self.service = service
        self.request_timeout, self.queue_timeout = request_timeout, queue_timeout
        self.max_per_client = max_per_client
        self.turns: asyncio.Semaphore | None = None  # made on the server's loop
        self.max_concurrent = max_concurrent
        self.in_flight: dict[str, int] = {}
        self.executor = concurrent.futures.ThreadPoolExecutor(max_concurrent, thread_name_prefix="ipguard-model")

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
            failure = error.status >= 500 and error.status != 501
            self.service.count(**{"server_errors" if failure else "client_errors": 1})
            headers = dict(error.headers)
            if error.close:
                headers["Connection"] = "close"
            await _send_json(send, error.status, encode_error(error.status, error.message), headers)
        except Exception:  # never a traceback to the client
            logger.exception("internal error answering %s %s", scope.get("method"), scope.get("path"))
            self.service.count(server_errors=1)
            await _send_json(send, 500, encode_error(500, "internal server error"))

    async def _lifespan(self, receive, send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self.turns = asyncio.Semaphore(self.max_concurrent)
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
        client = (scope.get("client") or ("unknown", 0))[0]
        if self.in_flight.get(client, 0) >= self.max_per_client:
            raise HttpError(429, f"this client already has {self.max_per_client} requests in flight",
                            {"Retry-After": "1"})
        self.in_flight[client] = self.in_flight.get(client, 0) + 1
        try:
            await self._labels(headers, receive, send, started)
        finally:
            self.in_flight[client] -= 1
            if not self.in_flight[client]:
                del self.in_flight[client]

    async def _labels(self, headers: dict[str, str], receive, send, started: float) -> None:
        self.service.count(labels_requests=1)
        length = self._content_length(headers)
        body = await self._read_body(receive, length, started + self.request_timeout)
        await self._wait_for_turn()
        try:
            images = self._decode(body)
            labels = await self._predict(images)
        finally:
            self.turns.release()
        self.service.count(labels_ok=1, images=int(images.shape[0]))
        await _send_json(send, 200, encode_labels(labels))

    async def _wait_for_turn(self) -> None:
        busy = HttpError(503, "server busy, retry later", {"Retry-After": "1"})
        if self.queue_timeout <= 0:
            if self.turns.locked():
                raise busy
            await self.turns.acquire()
            return
        try:
            await asyncio.wait_for(self.turns.acquire(), timeout=self.queue_timeout)
        except (asyncio.TimeoutError, TimeoutError):
            raise busy from None

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

    async def _read_body(self, receive, length: int, deadline: float) -> bytes:
        chunks, received = [], 0
        while True:
            remaining = deadline - time.monotonic()
            try:
                if remaining <= 0:
                    raise TimeoutError
                message = await asyncio.wait_for(receive(), timeout=remaining)
            except (asyncio.TimeoutError, TimeoutError):
                raise HttpError(408, f"timed out reading the request body ({received} of {length} bytes received "
                                     f"in {self.request_timeout:g} s)", close=True) from None
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
        return b"".join(chunks)

    def _decode(self, body: bytes):
        try:
            payload = json.loads(body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:
            reason = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)[:200]
            raise HttpError(400, f"request body is not valid JSON: {reason}") from None
        try:
            return decode_images(payload, input_shape=self.service.input_shape, max_batch=self.service.max_batch)
        except ProtocolError as exc:
            raise HttpError(exc.status, str(exc)) from None

    async def _predict(self, images):
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self.executor, self.service.predict, images)
        except Exception:
            logger.exception("model failed on a batch of shape %s", list(images.shape))
            if self.service.input_shape is None:
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
