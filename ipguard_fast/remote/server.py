"""A label-only HTTP server for a model: what a suspect's owner (or a test) exposes for verification.

Standard library only (``http.server``). ``serve(model)`` starts a
:class:`http.server.ThreadingHTTPServer` in a background thread and returns a
:class:`RunningServer`; ``run(args)`` is ``ipguard serve``. The wire format is in
:mod:`ipguard_fast.remote.protocol` and docs/http_api.md.

Robustness rules: every request gets a JSON answer (never a traceback), bad requests get a
4xx and leave the server serving, bodies are size-capped before they are read, only a few
requests are processed at once (others get 503 with ``Retry-After``), the model runs one
batch at a time under ``torch.no_grad`` in eval mode, and only labels leave the server.
"""

from __future__ import annotations

import argparse
import hmac
import ipaddress
import json
import logging
import os
import signal
import socket
import socketserver
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Sequence
from urllib.parse import urlsplit

import numpy as np
import torch
from torch import nn

from ..verify import as_label_fn, static_batch_size
from .protocol import (
    DEFAULT_MAX_BATCH,
    DEFAULT_MAX_REQUEST_BYTES,
    HEALTH_PATH,
    LABELS_PATH,
    ProtocolError,
    decode_images,
    dumps,
    encode_error,
    encode_health,
    encode_labels,
    parse_shape,
)

__all__ = ["DEFAULT_MAX_CONCURRENT", "RunningServer", "add_arguments", "run", "serve"]

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
        return self._httpd.app.stats_snapshot()

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
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    if token is not None and (not isinstance(token, str) or not token or not token.isprintable()
                              or token != token.strip()):
        raise ValueError("token must be a non-empty printable string without surrounding whitespace")
    if input_shape is not None:
        input_shape = tuple(input_shape)
        if not input_shape or not all(isinstance(d, int) and not isinstance(d, bool) and d > 0
                                      for d in input_shape):
            raise ValueError(f"input_shape must be positive ints, got {input_shape!r}")

    if isinstance(model, torch.export.ExportedProgram):
        model = model.module()
    if isinstance(model, nn.Module):
        _set_eval(model)
    if num_classes is None and input_shape is not None:
        num_classes = _probe_num_classes(model, input_shape)
    label_fn = as_label_fn(model, num_classes=num_classes)

    app = _App(label_fn=label_fn, token=token, max_request_bytes=max_request_bytes, max_batch=max_batch,
               input_shape=input_shape, num_classes=num_classes, max_concurrent=max_concurrent)
    server_class = _LabelHTTPServer6 if ":" in host else _LabelHTTPServer
    handler = type("_BoundHandler", (_Handler,), {"timeout": request_timeout})
    httpd = server_class((host, port), handler)
    httpd.app = app
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.1},
                              name=f"ipguard-serve:{httpd.server_address[1]}", daemon=True)
    thread.start()
    running = RunningServer(httpd, thread)
    logger.info("serving labels on %s", running.url)
    return running


# ---------------------------------------------------------------------- internals


class _App:
    """Server-wide state shared by the request threads."""

    def __init__(self, *, label_fn, token, max_request_bytes, max_batch, input_shape, num_classes,
                 max_concurrent) -> None:
        self.label_fn = label_fn
        self.token = token.encode("utf-8") if token is not None else None
        self.max_request_bytes = max_request_bytes
        self.max_batch = max_batch
        self.input_shape = input_shape
        self.num_classes = num_classes
        self.slots = threading.BoundedSemaphore(max_concurrent)
        self.model_lock = threading.Lock()
        self._stats_lock = threading.Lock()
        self._stats = {"labels_requests": 0, "labels_ok": 0, "images": 0, "client_errors": 0, "server_errors": 0}

    def count(self, **increments: int) -> None:
        with self._stats_lock:
            for key, value in increments.items():
                self._stats[key] += value

    def stats_snapshot(self) -> dict[str, int]:
        with self._stats_lock:
            return dict(self._stats)

    def authorized(self, header: str | None) -> bool:
        if self.token is None:
            return True
        if not header:
            return False
        scheme, _, credentials = header.partition(" ")
        if scheme.lower() != "bearer":
            return False
        return hmac.compare_digest(credentials.strip().encode("utf-8", "replace"), self.token)

    def predict(self, images: torch.Tensor) -> torch.Tensor:
        with self.model_lock, torch.no_grad():
            return self.label_fn(images)


class _LabelHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    app: _App

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


class _Reply(Exception):
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
        app = self.server.app
        self._body_consumed = False
        self.close_connection = True
        try:
            try:
                self._route(method, app)
            except _Reply as reply:
                app.count(**{"client_errors" if reply.status < 500 else "server_errors": 1})
                self._send_json(reply.status, encode_error(reply.status, reply.message), reply.headers)
            except Exception:  # never a traceback to the client
                logger.exception("internal error answering %s %s", method, self.path)
                app.count(server_errors=1)
                self._send_json(500, encode_error(500, "internal server error"))
            finally:
                if not self._body_consumed:
                    self._drain(app)
        except OSError:  # the client went away while we answered
            logger.debug("client %s disconnected", self.address_string(), exc_info=True)

    def _route(self, method: str, app: _App) -> None:
        path = urlsplit(self.path).path
        if path not in _ROUTES:
            raise _Reply(404, f"no endpoint {path!r}; the API has GET {HEALTH_PATH} and POST {LABELS_PATH}")
        allowed = _ROUTES[path]
        if method != allowed:
            raise _Reply(405, f"{path} accepts {allowed} only", {"Allow": allowed})
        if not app.authorized(self.headers.get("Authorization")):
            raise _Reply(401, "missing or wrong bearer token (send 'Authorization: Bearer <token>')",
                         {"WWW-Authenticate": 'Bearer realm="ipguard"'})
        if path == HEALTH_PATH:
            self._send_json(200, encode_health(app.num_classes, app.input_shape, app.max_batch,
                                               app.max_request_bytes))
            return
        self._labels(app)

    def _labels(self, app: _App) -> None:
        app.count(labels_requests=1)
        length = self._content_length(app)
        if not app.slots.acquire(blocking=False):
            raise _Reply(503, "server busy, retry later", {"Retry-After": "1"})
        try:
            body = self._read_body(length)
            try:
                payload = json.loads(body.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                raise _Reply(400, f"request body is not valid JSON: {exc}") from None
            try:
                images = decode_images(payload, input_shape=app.input_shape, max_batch=app.max_batch)
            except ProtocolError as exc:
                raise _Reply(exc.status, str(exc)) from None
            try:
                labels = app.predict(images)
            except Exception:
                logger.exception("model failed on a batch of shape %s", list(images.shape))
                if app.input_shape is None:
                    # No declared shape: most likely the client sent a shape the model cannot take.
                    raise _Reply(400, f"the model could not process images of shape {list(images.shape)}") from None
                raise _Reply(500, "the model failed on this batch") from None
        finally:
            app.slots.release()
        app.count(labels_ok=1, images=int(images.shape[0]))
        self._send_json(200, encode_labels(labels))

    # ------------------------------------------------------------------ I/O

    def _content_length(self, app: _App) -> int:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            raise _Reply(411, "chunked bodies are not accepted; send Content-Length")
        header = self.headers.get("Content-Length")
        if header is None:
            raise _Reply(411, "Content-Length header required")
        try:
            length = int(header.strip())
        except ValueError:
            raise _Reply(400, f"invalid Content-Length {header!r}") from None
        if length < 0:
            raise _Reply(400, f"invalid Content-Length {header!r}")
        if length > app.max_request_bytes:
            raise _Reply(413, f"request body of {length} bytes exceeds max_request_bytes={app.max_request_bytes}")
        return length

    def _read_body(self, length: int) -> bytes:
        chunks, remaining = [], length
        while remaining:
            try:
                chunk = self.rfile.read(min(remaining, 1 << 20))
            except TimeoutError:
                self._body_consumed = True  # nothing more is coming: do not drain
                raise _Reply(408, f"timed out reading the request body ({length - remaining} of {length} "
                                  "bytes received)") from None
            if not chunk:
                self._body_consumed = True
                raise _Reply(400, f"request body ended after {length - remaining} of {length} bytes")
            chunks.append(chunk)
            remaining -= len(chunk)
        self._body_consumed = True
        return b"".join(chunks)

    def _drain(self, app: _App) -> None:
        """Read and discard an unread body (bounded) so the client can read our early answer."""
        try:
            remaining = int(self.headers.get("Content-Length", "0"))
        except ValueError:
            return
        if remaining <= 0 or remaining > 2 * app.max_request_bytes:
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


def _set_eval(model: nn.Module) -> None:
    try:
        model.eval()
    except NotImplementedError:  # exported (.pt2) modules: mode frozen at export time
        pass


def _probe_num_classes(model: Any, input_shape: tuple[int, ...]) -> int | None:
    """Run ``model`` once on zeros to read its class count (None when it returns labels)."""
    if isinstance(model, nn.Module):
        tensors = list(model.parameters()) + list(model.buffers())
        device = tensors[0].device if tensors else torch.device("cpu")
        dtype = next((t.dtype for t in tensors if t.is_floating_point()), torch.float32)

        def forward(x: torch.Tensor) -> Any:
            return model(x.to(device=device, dtype=dtype))
    else:
        forward = model
    sizes = [2, 1]
    static = static_batch_size(model)
    if static is not None:
        sizes = [static]
    error: Exception | None = None
    for size in sizes:
        try:
            with torch.no_grad():
                out = forward(torch.zeros(size, *input_shape))
            break
        except Exception as exc:  # try the next batch size
            error = exc
    else:
        raise ValueError(f"the model fails on a batch of zeros of shape [B, {', '.join(map(str, input_shape))}]: "
                         f"{error}; check input_shape") from error
    if not isinstance(out, torch.Tensor):
        out = torch.as_tensor(np.asarray(out))
    if out.dim() == 2 and out.is_floating_point():
        return int(out.shape[1])
    return None


# ---------------------------------------------------------------------- CLI: ipguard serve


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``ipguard serve``."""
    parser.add_argument("--model", required=True,
                        help="model spec: TorchScript file, .pt2 archive, or package.module:factory")
    parser.add_argument("--weights", help="weights (.safetensors or state dict) for a package.module:factory spec")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default 127.0.0.1; use a token when exposing it)")
    parser.add_argument("--port", type=int, default=8080, help="port (default 8080; 0 picks a free one)")
    parser.add_argument("--input-shape", help="shape of one image, e.g. 3,32,32 (recommended: validates requests "
                                              "and lets /v1/health report num_classes)")
    token = parser.add_mutually_exclusive_group()
    token.add_argument("--token-env", metavar="VAR",
                       help="require 'Authorization: Bearer <token>', the token read from environment variable VAR")
    token.add_argument("--token", help="require this bearer token (visible in the process list: prefer --token-env)")
    parser.add_argument("--max-request-bytes", type=int, default=DEFAULT_MAX_REQUEST_BYTES,
                        help=f"largest request body accepted (default {DEFAULT_MAX_REQUEST_BYTES})")
    parser.add_argument("--max-batch", type=int, default=DEFAULT_MAX_BATCH,
                        help=f"most images per request (default {DEFAULT_MAX_BATCH})")
    parser.add_argument("--max-concurrent", type=int, default=DEFAULT_MAX_CONCURRENT,
                        help=f"label requests processed at once; more get 503 (default {DEFAULT_MAX_CONCURRENT})")


def run(args: argparse.Namespace) -> int:
    """``ipguard serve``: serve until SIGINT/SIGTERM. Returns 0, or 2 on a usage/model error."""
    from ..model_io import load_suspect

    try:
        token = resolve_token(getattr(args, "token", None), getattr(args, "token_env", None))
        shape_text = getattr(args, "input_shape", None)
        input_shape = parse_shape(shape_text) if shape_text else None
        model = load_suspect(args.model, getattr(args, "weights", None))
        server = serve(model, host=getattr(args, "host", "127.0.0.1"), port=getattr(args, "port", 8080),
                       token=token,
                       max_request_bytes=getattr(args, "max_request_bytes", DEFAULT_MAX_REQUEST_BYTES),
                       max_batch=getattr(args, "max_batch", DEFAULT_MAX_BATCH), input_shape=input_shape,
                       max_concurrent=getattr(args, "max_concurrent", DEFAULT_MAX_CONCURRENT))
    except (ValueError, FileNotFoundError, OSError) as exc:
        print(f"ipguard serve: error: {exc}", file=sys.stderr)
        return 2
    if token is None and not _is_loopback(server.host):
        print(f"ipguard serve: warning: listening on {server.host} without a token; anyone who can reach it "
              "can query the model", file=sys.stderr)
    print(f"ipguard serve: serving labels on {server.url} (Ctrl-C to stop)", flush=True)

    stop = threading.Event()
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        server.shutdown()
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    return 0


def resolve_token(token: str | None, token_env: str | None) -> str | None:
    """The bearer token from ``--token`` or the environment variable named by ``--token-env``."""
    if token is not None and token_env is not None:
        raise ValueError("give --token or --token-env, not both")
    if token_env is not None:
        value = os.environ.get(token_env)
        if not value:
            raise ValueError(f"environment variable {token_env} (from --token-env) is unset or empty")
        return value.strip()
    if token is not None and not token.strip():
        raise ValueError("--token is empty")
    return token.strip() if token is not None else None


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
