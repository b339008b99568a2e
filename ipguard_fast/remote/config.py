"""Every setting of the label API, checked once: the server's limits and address, the client's retries.

``serve(...)`` and ``verify_remote(...)`` are keyword front ends over these; a caller
that keeps settings in one place passes them whole (``start_server(model, ServeConfig(...))``,
``run_remote_verification(url, fingerprints, RemoteVerifyConfig(...))``). Each class checks
its fields with ipguard_fast._validate when it is made, so a bad value is an ArgumentError
naming the field before a socket is opened or a request sent.
"""
from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from typing import Sequence

from .._validate import ArgumentError, finite_number, image_shape, non_negative_int, positive_int
from .protocol import DEFAULT_MAX_BATCH, DEFAULT_MAX_REQUEST_BYTES

__all__ = ["RemoteVerifyConfig", "RetryPolicy", "ServeConfig", "ServerLimits", "check_token"]

_HOSTNAME = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}"
                       r"[A-Za-z0-9])?)*\.?$")


@dataclass(frozen=True)
class ServerLimits:
    """What one server admits at once; beyond each limit a request is refused with a status that says so.

    Attributes:
        max_request_bytes: larger request bodies get 413 before being read.
        max_batch: requests with more images get 413.
        max_concurrent: label requests decoded and run at once (the worker threads).
        max_per_client: of those turns, how many one client address may hold at once; its
            further requests wait in line behind other addresses' (never refused for it).
        request_timeout: seconds for a request's headers, then for its body (408 beyond).
        queue_timeout: seconds a request waits for a turn (503 with Retry-After beyond; 0:
            503 at once when every turn is taken).
        max_connections: open connections in all; more are answered 503 with Retry-After
            at accept and closed (lowered at start to fit the process's file limit).
        max_connections_per_client: open connections from one client address; more get 429.
        max_body_bytes_in_flight: bytes of request bodies being read or decoded, in all; a
            body whose Content-Length would pass it gets 503 with Retry-After, unread.
        log_interval: seconds between two log lines of one kind of failure (others counted).
    """

    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES
    max_batch: int = DEFAULT_MAX_BATCH
    max_concurrent: int = 4
    max_per_client: int = 8
    request_timeout: float = 30.0
    queue_timeout: float = 30.0
    max_connections: int = 1000
    max_connections_per_client: int = 256
    max_body_bytes_in_flight: int = 4 * DEFAULT_MAX_REQUEST_BYTES
    log_interval: float = 10.0

    def __post_init__(self) -> None:
        for name in ("max_request_bytes", "max_batch", "max_concurrent", "max_per_client", "max_connections",
                     "max_connections_per_client", "max_body_bytes_in_flight"):
            positive_int(name, getattr(self, name))
        object.__setattr__(self, "request_timeout", finite_number("request_timeout", self.request_timeout,
                                                                  positive=True))
        object.__setattr__(self, "queue_timeout", finite_number("queue_timeout", self.queue_timeout, minimum=0.0))
        object.__setattr__(self, "log_interval", finite_number("log_interval", self.log_interval, minimum=0.0))
        if self.max_body_bytes_in_flight < self.max_request_bytes:
            raise ArgumentError("max_body_bytes_in_flight", f"must be at least max_request_bytes="
                                f"{self.max_request_bytes}, else no body of the largest size is ever read")


@dataclass(frozen=True)
class ServeConfig:
    """Where and how a model is served: the address, the token, what the model takes, the limits."""

    host: str = "127.0.0.1"
    port: int = 0
    token: str | None = None
    input_shape: Sequence[int] | None = None
    num_classes: int | None = None
    limits: ServerLimits = field(default_factory=ServerLimits)

    def __post_init__(self) -> None:
        check_host("host", self.host)
        if isinstance(self.port, bool) or not isinstance(self.port, int) or not 0 <= self.port <= 65535:
            raise ArgumentError("port", f"must be an int in [0, 65535], got {self.port!r}")
        if self.token is not None:
            check_token("token", self.token)
        if self.input_shape is not None:
            object.__setattr__(self, "input_shape", image_shape("input_shape", self.input_shape))
        if self.num_classes is not None:
            positive_int("num_classes", self.num_classes)
        if not isinstance(self.limits, ServerLimits):
            raise ArgumentError("limits", f"must be a ServerLimits, got {type(self.limits).__name__}")


def check_token(name: str, token) -> str:
    """A bearer token as an HTTP header carries it: printable ASCII, no surrounding whitespace.

    Anything else cannot be sent (httpx refuses a non-ASCII or multi-line header, and its error
    would quote the token) or never matches (the server reads header bytes as latin-1). The
    message never shows the token."""
    if not isinstance(token, str) or not token or token != token.strip() or not all(
            " " <= char <= "~" for char in token):
        raise ArgumentError(name, "must be a non-empty string of printable ASCII characters without surrounding "
                                  "whitespace (it travels in an HTTP header)")
    return token


def check_host(name: str, host) -> str:
    """A host name or IP literal (IPv6 with or without brackets); '999.1.1.1' is refused, not looked up."""
    if not isinstance(host, str) or not host:
        raise ArgumentError(name, f"must be a host name or IP address, got {host!r}")
    bare = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        ipaddress.ip_address(bare)
        return host
    except ValueError:
        pass
    if ":" in bare or re.fullmatch(r"[0-9.]+", bare) or not _HOSTNAME.match(bare):
        raise ArgumentError(name, f"{host!r} is not a valid IP address or host name")
    return host


@dataclass(frozen=True)
class RetryPolicy:
    """How a client retries: ``retries`` failures retried, delays growing from ``backoff``, jittered.

    Attempt k (0-based) waits ``backoff * 2**k`` -- or the server's ``Retry-After`` when it
    sent one, never less -- times a random factor in [1, 1.5) so that many clients told the
    same delay do not come back at once, at most ``max_backoff`` seconds. A busy answer (429,
    or 503 with Retry-After) is the server asking to come back, not a failure: with a run
    deadline it is retried until the deadline, without one it counts like a failure.
    """

    retries: int = 5
    backoff: float = 0.5
    max_backoff: float = 30.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "retries", non_negative_int("retries", self.retries))
        object.__setattr__(self, "backoff", finite_number("backoff", self.backoff, minimum=0.0))
        object.__setattr__(self, "max_backoff", finite_number("max_backoff", self.max_backoff, minimum=0.0))

    def delay(self, attempt: int, advised: float | None, draw: float) -> float:
        """The wait before attempt ``attempt + 1``; ``draw`` is a random number in [0, 1)."""
        delay = self.backoff * (2 ** min(attempt, 62))
        if advised is not None:
            delay = max(delay, advised)
        return max(0.0, min(delay * (1.0 + 0.5 * draw), self.max_backoff))


@dataclass(frozen=True)
class RemoteVerifyConfig:
    """A remote verification's settings (see :func:`ipguard_fast.remote.verify_remote`).

    Attributes:
        batch_size: fingerprints per batch (and per progress entry).
        timeout: seconds one request may take in all.
        retries, backoff: the client's :class:`RetryPolicy`.
        deadline: seconds the whole run may take, retries and waits included (None: unbounded).
    """

    batch_size: int = 64
    timeout: float = 30.0
    retries: int = 5
    backoff: float = 0.5
    deadline: float | None = None

    def __post_init__(self) -> None:
        positive_int("batch_size", self.batch_size)
        object.__setattr__(self, "timeout", finite_number("timeout", self.timeout, positive=True))
        RetryPolicy(self.retries, self.backoff)
        if self.deadline is not None:
            object.__setattr__(self, "deadline", finite_number("deadline", self.deadline, positive=True))
