"""A label-only HTTP server for a model: what a suspect's owner (or a test) exposes for verification.

``serve(model)`` binds the socket, starts uvicorn (an h11-based ASGI server: strict
request framing, header parsing, keep-alive) in a background thread and returns a
:class:`RunningServer`; ``ipguard serve`` (cli/serve.py) runs it until stopped. The
application is asgi.py, what the API means is service.py, the wire format protocol.py
and docs/http_api.md.

uvicorn is used through its settings only (``uvicorn.Config`` / ``uvicorn.Server``); the
one thing it lacks, a deadline for request headers, is deadline.py's protocol wrapper,
passed in as the ``http`` setting. Requests uvicorn refuses itself (a malformed request
line, malformed or conflicting Content-Length) get uvicorn's plain-text 400 and a
closed connection; every answer from the API itself is JSON.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
from typing import Any, Sequence

from .._optional import require
from .._validate import finite_number, image_shape, positive_int
from .asgi import LabelApp
from .deadline import HeaderDeadline, h11_protocol
from .protocol import DEFAULT_MAX_BATCH, DEFAULT_MAX_REQUEST_BYTES
from .service import LabelService

__all__ = ["DEFAULT_MAX_CONCURRENT", "DEFAULT_MAX_PER_CLIENT", "DEFAULT_QUEUE_TIMEOUT", "DEFAULT_REQUEST_TIMEOUT",
           "RunningServer", "serve"]

logger = logging.getLogger("ipguard_fast.remote")

DEFAULT_MAX_CONCURRENT = 4
"""Label requests decoded and run at once; others wait for a turn (see DEFAULT_QUEUE_TIMEOUT)."""

DEFAULT_MAX_PER_CLIENT = 8
"""Label requests one client address may have in flight; more get 429 with Retry-After."""

DEFAULT_QUEUE_TIMEOUT = 30.0
"""Seconds a request waits for a turn before it gets 503 with Retry-After."""

DEFAULT_REQUEST_TIMEOUT = 30.0
"""Seconds a request's headers, and then its body, may take to arrive (else 408, connection closed)."""


class RunningServer:
    """A server started by :func:`serve`, serving in a background thread.

    Attributes:
        url: base URL, e.g. ``http://127.0.0.1:54321`` (endpoints are ``url + "/v1/..."``).
        host, port: the bound address (the real port when ``port=0`` was asked).
    """

    def __init__(self, server, thread: threading.Thread, sock: socket.socket, service: LabelService) -> None:
        self._server, self._thread, self._socket, self._service = server, thread, sock, service
        self._closed = False
        self._close_lock = threading.Lock()
        host, port = sock.getsockname()[:2]
        self.host: str = host
        self.port: int = int(port)
        shown = f"[{host}]" if ":" in host else host
        self.url: str = f"http://{shown}:{self.port}"

    def stats(self) -> dict[str, int]:
        """Counters since start: ``labels_requests`` (POST /v1/labels received), ``labels_ok``
        (answered 200), ``images`` (labelled), ``client_errors`` (4xx), ``server_errors`` (5xx)."""
        return self._service.stats_snapshot()

    def shutdown(self, timeout: float = 10.0) -> None:
        """Stop accepting connections and close the listening socket. Idempotent, thread-safe."""
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
        self._server.should_exit = True
        self._thread.join(timeout)
        if self._thread.is_alive():
            self._server.force_exit = True
            self._thread.join(timeout)
        self._socket.close()

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
          max_concurrent: int = DEFAULT_MAX_CONCURRENT, max_per_client: int = DEFAULT_MAX_PER_CLIENT,
          request_timeout: float = DEFAULT_REQUEST_TIMEOUT,
          queue_timeout: float = DEFAULT_QUEUE_TIMEOUT) -> RunningServer:
    """Serve ``model``'s labels over HTTP in a background thread; returns the running server.

    Args:
        model: an ``nn.Module`` (TorchScript and ``.pt2`` modules included), an
            ``ExportedProgram``, or any callable accepted by :func:`ipguard_fast.verdicts.as_label_fn`
            (images ``[B, *input_shape]`` -> logits ``[B, C]`` or labels ``[B]``). Modules run
            in eval mode under ``torch.no_grad``, one batch at a time, and are left as they were.
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
        max_concurrent: label requests decoded and run at once.
        max_per_client: label requests one client address may have in flight (429 beyond).
        request_timeout: seconds for a request's headers, then for its body (408 beyond).
        queue_timeout: seconds a request waits for a turn (503 with Retry-After beyond; 0:
            answer 503 at once when every turn is taken).
    """
    uvicorn = require("uvicorn", "remote", "ipguard serve")
    for name, value in (("max_request_bytes", max_request_bytes), ("max_batch", max_batch),
                        ("max_concurrent", max_concurrent), ("max_per_client", max_per_client)):
        positive_int(name, value)
    request_timeout = finite_number("request_timeout", request_timeout, positive=True)
    queue_timeout = finite_number("queue_timeout", queue_timeout, minimum=0.0)
    if token is not None and (not isinstance(token, str) or not token or not token.isprintable()
                              or token != token.strip()):
        raise ValueError("token: must be a non-empty printable string without surrounding whitespace")
    if input_shape is not None:
        input_shape = image_shape("input_shape", input_shape)
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise ValueError(f"port: must be an int in [0, 65535], got {port!r}")

    service = LabelService(model, token=token, max_request_bytes=max_request_bytes, max_batch=max_batch,
                           input_shape=input_shape, num_classes=num_classes)
    app = LabelApp(service, max_concurrent=max_concurrent, max_per_client=max_per_client,
                   request_timeout=request_timeout, queue_timeout=queue_timeout)
    deadline = HeaderDeadline(request_timeout, h11_protocol())
    sock = _bind(host, port)
    # ws="none": the API has no websockets, and an upgrade must not leave the header guard.
    config = uvicorn.Config(deadline.wrap(app), http=deadline.protocol, ws="none", lifespan="on", log_config=None,
                            access_log=False, timeout_keep_alive=5, timeout_graceful_shutdown=2,
                            server_header=False, date_header=False)
    server = uvicorn.Server(config)
    started = threading.Event()
    thread = threading.Thread(target=_run, args=(server, sock, started), name=f"ipguard-serve:{port}", daemon=True)
    thread.start()
    while not started.wait(0.01):
        if not thread.is_alive():
            sock.close()
            raise OSError(f"the server on {host}:{port} failed to start")
    running = RunningServer(server, thread, sock, service)
    logger.info("serving labels on %s", running.url)
    return running


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host.strip("[]"), port))
        sock.listen(128)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def _run(server, sock: socket.socket, started: threading.Event) -> None:
    async def main() -> None:
        serving = asyncio.ensure_future(server.serve(sockets=[sock]))
        while not server.started and not serving.done():
            await asyncio.sleep(0.01)
        started.set()
        await serving

    asyncio.run(main())
