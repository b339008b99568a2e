"""A label-only HTTP server for a model: what a suspect's owner (or a test) exposes for verification.

``start_server(model, ServeConfig(...))`` binds the socket, starts uvicorn (an h11-based
ASGI server: strict request framing, header parsing, keep-alive) in a background thread
and returns a :class:`RunningServer`; ``serve(model, ...)`` is its keyword front end and
``ipguard serve`` (cli/serve.py) runs it until stopped. The application is asgi.py, what
the API means is service.py, the limits config.py and admission.py, the wire format
protocol.py and docs/http_api.md.

uvicorn is used through its settings only (``uvicorn.Config`` / ``uvicorn.Server``); what
it lacks -- limits on connections and a deadline for request headers -- is
connections.py's protocol wrapper, passed in as the ``http`` setting. Requests uvicorn
refuses itself (a malformed request line, malformed or conflicting Content-Length) get
uvicorn's plain-text 400 and a closed connection; every answer from the API itself is
JSON. The server's event loop and uvicorn's log go through one rate-limited log (logs.py).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import socket
import threading
from typing import Any, Sequence

from .._optional import require
from .._validate import ArgumentError
from .admission import ConnectionCount
from .asgi import LabelApp
from .config import ServeConfig, ServerLimits
from .connections import ConnectionGuards, h11_protocol
from .logs import RateLimitedLog
from .protocol import DEFAULT_MAX_BATCH, DEFAULT_MAX_REQUEST_BYTES
from .service import LabelService

__all__ = ["DEFAULT_MAX_CONCURRENT", "DEFAULT_MAX_PER_CLIENT", "DEFAULT_QUEUE_TIMEOUT", "DEFAULT_REQUEST_TIMEOUT",
           "RunningServer", "serve", "start_server"]

logger = logging.getLogger("ipguard_fast.remote")

_DEFAULTS = ServerLimits()
DEFAULT_MAX_CONCURRENT = _DEFAULTS.max_concurrent
DEFAULT_MAX_PER_CLIENT = _DEFAULTS.max_per_client
DEFAULT_QUEUE_TIMEOUT = _DEFAULTS.queue_timeout
DEFAULT_REQUEST_TIMEOUT = _DEFAULTS.request_timeout
_SPARE_FILES = 64  # files kept free of connections: the model's, logs, the listening socket, refused ones lingering
_BACKLOG = 128  # connections waiting for accept(); asyncio accepts up to this many at once, before any is refused
# A connection accepted in one turn of the event loop is refused two turns later and closed in the third:
# under a flood three accepted batches hold files before the first is closed.
_ACCEPTING_FILES = 3 * _BACKLOG


class RunningServer:
    """A server started by :func:`start_server` (or :func:`serve`), serving in a background thread.

    Attributes:
        url: base URL, e.g. ``http://127.0.0.1:54321`` (endpoints are ``url + "/v1/..."``).
        host, port: the bound address (the real port when ``port=0`` was asked).
        limits: the limits in force (``max_connections`` lowered to fit the file limit).
    """

    def __init__(self, server, thread: threading.Thread, sock: socket.socket, app: LabelApp,
                 count: ConnectionCount) -> None:
        self._server, self._thread, self._socket, self._app, self._count = server, thread, sock, app, count
        self._service = app.service
        self.limits: ServerLimits = app.limits
        self._closed = False
        self._close_lock = threading.Lock()
        host, port = sock.getsockname()[:2]
        self.host: str = host
        self.port: int = int(port)
        shown = f"[{host}]" if ":" in host else host
        self.url: str = f"http://{shown}:{self.port}"

    def stats(self) -> dict[str, int]:
        """Counters since start: ``labels_requests`` (POST /v1/labels received), ``labels_ok``
        (answered 200), ``images`` (labelled), ``client_errors`` (4xx), ``server_errors`` (5xx
        other than busy), ``refused`` (busy: 503 with Retry-After), ``connections_refused``
        (over a connection limit at accept)."""
        return {**self._service.stats_snapshot(), "connections_refused": self._count.refused}

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
          max_concurrent: int = _DEFAULTS.max_concurrent, max_per_client: int = _DEFAULTS.max_per_client,
          request_timeout: float = _DEFAULTS.request_timeout, queue_timeout: float = _DEFAULTS.queue_timeout,
          max_connections: int = _DEFAULTS.max_connections,
          max_connections_per_client: int = _DEFAULTS.max_connections_per_client,
          max_body_bytes_in_flight: int = _DEFAULTS.max_body_bytes_in_flight,
          log_interval: float = _DEFAULTS.log_interval) -> RunningServer:
    """Serve ``model``'s labels over HTTP in a background thread; returns the running server.

    A keyword front end over :class:`ServeConfig` (where, who, what) and :class:`ServerLimits`
    (``max_request_bytes`` to ``log_interval``: what the server admits at once, each limit
    documented there); :func:`start_server` takes the config itself.

    Args:
        model: an ``nn.Module`` (TorchScript and ``.pt2`` modules included), an
            ``ExportedProgram``, or any callable accepted by :func:`ipguard_fast.verdicts.as_label_fn`
            (images ``[B, *input_shape]`` -> logits ``[B, C]`` or labels ``[B]``). Modules run
            in eval mode under ``torch.no_grad``, one batch at a time, and are left as they were.
        host, port: where to listen; ``port=0`` picks a free port (see ``.url``). Use a
            non-loopback host only with a ``token`` and preferably behind a TLS reverse proxy.
        token: when set, every request needs ``Authorization: Bearer <token>`` (else 401).
        input_shape: the shape of one image (e.g. ``(1, 8, 8)``). Recommended: requests with
            other shapes get a clear 400, and health reports it. When given and
            ``num_classes`` is not, the model is run once on zeros to learn ``num_classes``
            (a ValueError naming ``input_shape`` here means the shape does not fit the model).
        num_classes: reported by health; labels the model returns outside ``[0, num_classes)``
            become a 500 instead of being sent.
    """
    limits = ServerLimits(max_request_bytes=max_request_bytes, max_batch=max_batch, max_concurrent=max_concurrent,
                          max_per_client=max_per_client, request_timeout=request_timeout,
                          queue_timeout=queue_timeout, max_connections=max_connections,
                          max_connections_per_client=max_connections_per_client,
                          max_body_bytes_in_flight=max_body_bytes_in_flight, log_interval=log_interval)
    config = ServeConfig(host=host, port=port, token=token, input_shape=input_shape, num_classes=num_classes,
                         limits=limits)
    return start_server(model, config)


def start_server(model: Any, config: ServeConfig) -> RunningServer:
    """Serve ``model`` as ``config`` says (see :func:`serve`); returns the running server."""
    uvicorn = require("uvicorn", "remote", "ipguard serve")
    log = RateLimitedLog(logger, config.limits.log_interval)
    limits = _fitted(config.limits, _file_limit())
    service = LabelService(model, config)
    app = LabelApp(service, limits, log)
    count = ConnectionCount(limits.max_connections, limits.max_connections_per_client)
    guards = ConnectionGuards(limits.request_timeout, count, log, h11_protocol())
    sock = _bind(config.host, config.port)
    # ws="none": the API has no websockets, and an upgrade must not leave the connection guard.
    uvicorn_config = uvicorn.Config(guards.wrap(app), http=guards.protocol, ws="none", lifespan="on",
                                    log_config=None, access_log=False, timeout_keep_alive=5, backlog=_BACKLOG,
                                    timeout_graceful_shutdown=2, server_header=False, date_header=False)
    server = uvicorn.Server(uvicorn_config)
    started = threading.Event()
    thread = threading.Thread(target=_run, args=(server, sock, started, log), name=f"ipguard-serve:{config.port}",
                              daemon=True)
    thread.start()
    while not started.wait(0.01):
        if not thread.is_alive():
            sock.close()
            raise OSError(f"the server on {config.host}:{config.port} failed to start")
    running = RunningServer(server, thread, sock, app, count)
    logger.info("serving labels on %s", running.url)
    return running


def _file_limit() -> int | None:
    """The process's soft limit on open files, or None where there is none to read."""
    try:
        import resource
    except ImportError:  # pragma: no cover - Windows
        return None
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return None if soft == resource.RLIM_INFINITY else int(soft)


def _fitted(limits: ServerLimits, files: int | None) -> ServerLimits:
    """``limits`` with max_connections lowered so that open connections never exhaust the file table:
    a full table makes accept() fail, and the server would stall instead of refusing. Besides the
    connections it keeps room for those accepted and not yet refused (_ACCEPTING_FILES)."""
    if files is None or limits.max_connections + _SPARE_FILES + _ACCEPTING_FILES <= files:
        return limits
    fitted = max(1, files - _SPARE_FILES - _ACCEPTING_FILES)
    logger.warning("max_connections lowered from %d to %d to fit this process's limit of %d open files",
                   limits.max_connections, fitted, files)
    return dataclasses.replace(limits, max_connections=fitted,
                               max_connections_per_client=min(limits.max_connections_per_client, fitted))


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host.strip("[]"), port))
        sock.listen(_BACKLOG)
    except socket.gaierror as exc:
        sock.close()
        raise ArgumentError("host", f"cannot resolve {host!r}: {exc.strerror or exc}") from None
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def _run(server, sock: socket.socket, started: threading.Event, log: RateLimitedLog) -> None:
    """The server thread: uvicorn on a new event loop whose errors, and uvicorn's warnings, are rate-limited."""
    async def main() -> None:
        asyncio.get_running_loop().set_exception_handler(log.loop_exception)
        serving = asyncio.ensure_future(server.serve(sockets=[sock]))
        while not server.started and not serving.done():
            await asyncio.sleep(0.01)
        started.set()
        await serving

    uvicorn_log = logging.getLogger("uvicorn.error")
    uvicorn_log.addFilter(log)
    try:
        asyncio.run(main())
    finally:
        uvicorn_log.removeFilter(log)
