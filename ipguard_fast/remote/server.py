"""A label-only HTTP server for a model: what a suspect's owner (or a test) exposes for verification.

Standard library only (``http.server``). ``serve(model)`` starts a
:class:`http.server.ThreadingHTTPServer` in a background thread and returns a
:class:`RunningServer`; ``ipguard serve`` (cli/serve.py) runs it until stopped. What
the API means lives in service.py, the wire format in protocol.py and docs/http_api.md.

Robustness rules: every request gets a JSON answer (never a traceback), bad requests get a
4xx and leave the server serving, bodies are size-capped before they are read, only a few
requests are processed at once (others get 503 with ``Retry-After``), the model runs one
batch at a time under ``torch.no_grad`` in eval mode, and only labels leave the server.
"""

from __future__ import annotations

import json
import logging
import socket
import socketserver
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Sequence
from urllib.parse import urlsplit

from .._validate import image_shape, positive_int
from .protocol import (
    DEFAULT_MAX_BATCH,
    DEFAULT_MAX_REQUEST_BYTES,
    HEALTH_PATH,
    LABELS_PATH,
    ProtocolError,
    decode_images,
    dumps,
    encode_error,
    encode_labels,
)
from .service import LabelService

__all__ = ["DEFAULT_MAX_CONCURRENT", "DEFAULT_REQUEST_TIMEOUT", "RunningServer", "serve"]

logger = logging.getLogger(__name__)

DEFAULT_MAX_CONCURRENT = 4
"""Requests to /v1/labels read and processed at once; more get 503 with Retry-After."""

DEFAULT_REQUEST_TIMEOUT = 30.0
"""Seconds a connection may stay silent (headers or body) before the server drops it."""

_ROUTES = {HEALTH_PATH: "GET", LABELS_PATH: "POST"}
_DRAIN_TIMEOUT = 2.0
_CHUNK = 1 << 16


class RunningServer:
    """A server started by :func:`serve`, serving in a background thread.

    Attributes:
        url: base URL, e.g. ``http://127.0.0.1:54321`` (endpoints are ``url + "/v1/..."``).
        host, port: the bound address (the real port when ``port=0`` was asked).
    """

    def __init__(self, httpd: "_LabelHTTPServer", thread: threading.Thread) -> None:
        self._httpd = httpd
        self._thread = thread
        self._closed = False
        self._close_lock = threading.Lock()
        host, port = httpd.server_address[:2]
        self.host: str = host
        self.port: int = int(port)
        shown = f"[{host}]" if ":" in host else host
        self.url: str = f"http://{shown}:{self.port}"

    def stats(self) -> dict[str, int]:
        """Counters since start: ``labels_requests`` (POST /v1/labels received), ``labels_ok``
        (answered 200), ``images`` (labelled), ``client_errors`` (4xx), ``server_errors`` (5xx)."""
        return self._httpd.service.stats_snapshot()

    def shutdown(self, timeout: float = 10.0) -> None:
        """Stop accepting connections and close the listening socket. Idempotent, thread-safe.

        Requests already being processed finish in their own threads. Must not be called from
        the model itself on the request thread that is waiting for it (use another thread).
        """
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout)

    @property
    def closed(self) -> bool:
        return self._closed

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the server stops (True) or ``timeout`` seconds pass (False)."""
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def __enter__(self) -> "RunningServer":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.shutdown()

    def __repr__(self) -> str:
        return f"RunningServer(url={self.url!r}, closed={self._closed})"


def serve(model: Any, host: str = "127.0.0.1", port: int = 0, token: str | None = None,
          max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES, max_batch: int = DEFAULT_MAX_BATCH, *,
          input_shape: Sequence[int] | None = None, num_classes: int | None = None,
          max_concurrent: int = DEFAULT_MAX_CONCURRENT,
          request_timeout: float = DEFAULT_REQUEST_TIMEOUT) -> RunningServer:
    """Serve ``model``'s labels over HTTP in a background thread; returns the running server.

    Args:
        model: an ``nn.Module`` (TorchScript and ``.pt2`` modules included), an
            ``ExportedProgram``, or any callable accepted by :func:`ipguard_fast.verify.as_label_fn`
            (images ``[B, *input_shape]`` -> logits ``[B, C]`` or labels ``[B]``). Modules are put
            in eval mode; all calls run under ``torch.no_grad``, one batch at a time.
        host, port: where to listen; ``port=0`` picks a free port (see ``.url``). Use a
            non-loopback host only with a ``token`` and preferably behind a TLS reverse proxy.
        token: when set, every request needs ``Authorization: Bearer <token>`` (else 401).
        max_request_bytes: larger request bodies are refused with 413 before being read.
        max_batch: requests with more images are refused with 413.
        input_shape: the shape of one image (e.g. ``(1, 8, 8)``). Recommended: requests with
            other shapes get a clear 400, and health reports it. When given and
            ``num_classes`` is not, the model is run once on zeros to learn ``num_classes``
            (a ValueError here means the shape does not fit the model).
        num_classes: reported by health; labels the model returns outside ``[0, num_classes)``
            become a 500 instead of being sent.
        max_concurrent: label requests read and processed at once; extra ones get 503
            with ``Retry-After: 1``.
        request_timeout: seconds a silent connection is kept open.
    """
    for name, value in (("max_request_bytes", max_request_bytes), ("max_batch", max_batch),
                        ("max_concurrent", max_concurrent)):
        positive_int(name, value)
    if token is not None and (not isinstance(token, str) or not token or not token.isprintable()
                              or token != token.strip()):
        raise ValueError("token: must be a non-empty printable string without surrounding whitespace")
    if input_shape is not None:
        input_shape = image_shape("input_shape", input_shape)

    service = LabelService(model, token=token, max_request_bytes=max_request_bytes, max_batch=max_batch,
                           input_shape=input_shape, num_classes=num_classes, max_concurrent=max_concurrent)
    server_class = _LabelHTTPServer6 if ":" in host else _LabelHTTPServer
    handler = type("_BoundHandler", (_Handler,), {"timeout": request_timeout})
    httpd = server_class((host, port), handler)
    httpd.service = service
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.1},
                              name=f"ipguard-serve:{httpd.server_address[1]}", daemon=True)
    thread.start()
    running = RunningServer(httpd, thread)
    logger.info("serving labels on %s", running.url)
    return running


# ---------------------------------------------------------------------- internals


class _LabelHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    service: LabelService

    def server_bind(self) -> None:
        # HTTPServer.server_bind resolves the host's FQDN (a DNS lookup); we never need it.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name, self.server_port = str(host), int(port)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Default prints a traceback to stderr for e.g. a client hanging up mid-response.
        logger.debug("connection from %s failed", client_address, exc_info=True)


class _LabelHTTPServer6(_LabelHTTPServer):
    address_family = socket.AF_INET6


class HttpError(Exception):
    """Raised inside a handler to answer with an error status."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers or {}


class _Handler(BaseHTTPRequestHandler):
    server: _LabelHTTPServer
    server_version = "ipguard-fast"
    sys_version = ""
    timeout = DEFAULT_REQUEST_TIMEOUT

    # Every method goes through _dispatch so unknown paths get 404 and wrong methods 405, in JSON.
    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def do_PATCH(self) -> None:
        self._dispatch("PATCH")

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """Used by the base class for malformed request lines, oversized headers, unknown methods."""
        try:
            self._send_json(code, encode_error(code, message or self.responses.get(code, ("error",))[0]))
        except OSError:
            pass
        self.close_connection = True

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - base class signature
        logger.info("%s %s", self.address_string(), format % args)

    # ------------------------------------------------------------------ dispatch

    def _dispatch(self, method: str) -> None:
        service = self.server.service
        self._body_consumed = False
        self.close_connection = True
        try:
            try:
                self._route(method, service)
            except HttpError as reply:
                service.count(**{"client_errors" if reply.status < 500 else "server_errors": 1})
                self._send_json(reply.status, encode_error(reply.status, reply.message), reply.headers)
            except Exception:  # never a traceback to the client
                logger.exception("internal error answering %s %s", method, self.path)
                service.count(server_errors=1)
                self._send_json(500, encode_error(500, "internal server error"))
            finally:
                if not self._body_consumed:
                    self._drain(service)
        except OSError:  # the client went away while we answered
            logger.debug("client %s disconnected", self.address_string(), exc_info=True)

    def _route(self, method: str, service: LabelService) -> None:
        path = urlsplit(self.path).path
        if path not in _ROUTES:
            raise HttpError(404, f"no endpoint {path!r}; the API has GET {HEALTH_PATH} and POST {LABELS_PATH}")
        allowed = _ROUTES[path]
        if method != allowed:
            raise HttpError(405, f"{path} accepts {allowed} only", {"Allow": allowed})
        if not service.authorized(self.headers.get("Authorization")):
            raise HttpError(401, "missing or wrong bearer token (send 'Authorization: Bearer <token>')",
                         {"WWW-Authenticate": 'Bearer realm="ipguard"'})
        if path == HEALTH_PATH:
            self._send_json(200, service.health())
            return
        self._labels(service)

    def _labels(self, service: LabelService) -> None:
        service.count(labels_requests=1)
        length = self._content_length(service)
        if not service.slots.acquire(blocking=False):
            raise HttpError(503, "server busy, retry later", {"Retry-After": "1"})
        try:
            body = self._read_body(length)
            try:
                payload = json.loads(body.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                raise HttpError(400, f"request body is not valid JSON: {exc}") from None
            try:
                images = decode_images(payload, input_shape=service.input_shape, max_batch=service.max_batch)
            except ProtocolError as exc:
                raise HttpError(exc.status, str(exc)) from None
            try:
                labels = service.predict(images)
            except Exception:
                logger.exception("model failed on a batch of shape %s", list(images.shape))
                if service.input_shape is None:
                    # No declared shape: most likely the client sent a shape the model cannot take.
                    raise HttpError(400, f"the model could not process images of shape {list(images.shape)}") from None
                raise HttpError(500, "the model failed on this batch") from None
        finally:
            service.slots.release()
        service.count(labels_ok=1, images=int(images.shape[0]))
        self._send_json(200, encode_labels(labels))

    # ------------------------------------------------------------------ I/O

    def _content_length(self, service: LabelService) -> int:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            raise HttpError(411, "chunked bodies are not accepted; send Content-Length")
        header = self.headers.get("Content-Length")
        if header is None:
            raise HttpError(411, "Content-Length header required")
        try:
            length = int(header.strip())
        except ValueError:
            raise HttpError(400, f"invalid Content-Length {header!r}") from None
        if length < 0:
            raise HttpError(400, f"invalid Content-Length {header!r}")
        if length > service.max_request_bytes:
            raise HttpError(413, f"request body of {length} bytes exceeds max_request_bytes={service.max_request_bytes}")
        return length

    def _read_body(self, length: int) -> bytes:
        chunks, remaining = [], length
        while remaining:
            try:
                chunk = self.rfile.read(min(remaining, 1 << 20))
            except TimeoutError:
                self._body_consumed = True  # nothing more is coming: do not drain
                raise HttpError(408, f"timed out reading the request body ({length - remaining} of {length} "
                                  "bytes received)") from None
            if not chunk:
                self._body_consumed = True
                raise HttpError(400, f"request body ended after {length - remaining} of {length} bytes")
            chunks.append(chunk)
            remaining -= len(chunk)
        self._body_consumed = True
        return b"".join(chunks)

    def _drain(self, service: LabelService) -> None:
        """Read and discard an unread body (bounded) so the client can read our early answer."""
        try:
            remaining = int(self.headers.get("Content-Length", "0"))
        except ValueError:
            return
        if remaining <= 0 or remaining > 2 * service.max_request_bytes:
            return
        try:
            self.connection.settimeout(_DRAIN_TIMEOUT)
            while remaining > 0:
                chunk = self.rfile.read(min(remaining, _CHUNK))
                if not chunk:
                    break
                remaining -= len(chunk)
        except OSError:
            pass

    def _send_json(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        body = dumps(payload)
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("Connection", "close")
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()
