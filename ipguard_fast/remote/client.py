"""Client side of the label-only HTTP API: a remote model as a suspect.

:class:`RemoteLabelModel` is a callable from images to int64 labels, usable wherever a
suspect is (``verdicts.matching_rate(RemoteLabelModel(url), fingerprints)``), with a
deadline for every request, retries and backoff. The HTTP itself is httpx (the
``remote`` extra), run by transport.py under one hard deadline per exchange; this
module decides what to send, what to retry and what an answer means. verification.py
verifies through it, resumably. The wire format is in :mod:`ipguard_fast.remote.protocol`.
"""

from __future__ import annotations

import json
import math
import time
from typing import Any, Callable
from urllib.parse import urlsplit

import torch

from .._validate import ArgumentError, finite_number, non_negative_int, positive_int
from .protocol import (
    HEALTH_PATH,
    LABELS_PATH,
    ProtocolError,
    decode_health,
    decode_labels,
    dumps,
    encode_images,
    encoded_request_bytes,
)
from .answers import error_detail, http_error_message, retry_after
from .transport import HttpTransport, TransportError

__all__ = ["RemoteError", "RemoteLabelModel"]

_RETRY_STATUSES = frozenset({429, 500, 502, 503, 504}) | frozenset(range(505, 600))


class RemoteError(RuntimeError):
    """The remote API failed: unreachable after retries, a non-retryable HTTP error, or a malformed answer.

    Attributes:
        status: the HTTP status when the server answered one, else None.
        url: the URL that was queried.
    """

    def __init__(self, message: str, *, status: int | None = None, url: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.url = url


# ---------------------------------------------------------------------- the remote suspect


class RemoteLabelModel:
    """A model behind the label-only HTTP API, as a callable ``images -> int64 labels``.

    Args:
        url: base URL of the server, e.g. ``http://127.0.0.1:8080`` (a path prefix such as
            ``https://host/models/resnet`` is kept: endpoints are ``url + "/v1/labels"``).
        token: bearer token sent as ``Authorization: Bearer <token>``.
        timeout: seconds one request may take in all -- connecting, sending, and the whole
            answer -- however slowly the server trickles bytes.
        retries: extra attempts after a retryable failure (5xx, 429, connection refused/reset,
            timeout): at most ``retries + 1`` attempts per request. Other 4xx are not retried.
        backoff: first delay in seconds; attempt k (0-based) waits ``backoff * 2**k`` before
            the next one, at most ``max_backoff``. A ``Retry-After`` header (seconds or an
            HTTP date) replaces the computed delay, also capped at ``max_backoff``.
        num_classes: when given, labels outside ``[0, num_classes)`` raise RemoteError.
        max_batch, max_request_bytes: when given, a call with more images (or a bigger body)
            is split into several requests. :meth:`configure_from_health` sets them from the server.
        local_address: the local IP address requests leave from (default: the system's choice).

    ``labels(images, deadline=...)`` and ``health(deadline=...)`` also take an absolute
    deadline (``time.monotonic()`` seconds) that no attempt, retry or backoff may pass:
    ``verify_remote`` bounds a whole run with it.

    The first request starts the client's own event-loop thread (httpx runs on it, see
    transport.py). ``close()`` (or ``with``) closes the connection pool and stops and joins
    that thread; a later call starts a new one. A client collected without ``close()`` has
    its thread stopped by a finaliser.

    Calls raise :class:`RemoteError` for an unreachable server, an HTTP error, malformed JSON,
    a wrong label count, or labels that are not integers in range.
    """

    def __init__(self, url: str, token: str | None = None, timeout: float = 30.0, retries: int = 5,
                 backoff: float = 0.5, *, max_backoff: float = 30.0, num_classes: int | None = None,
                 max_batch: int | None = None, max_request_bytes: int | None = None,
                 local_address: str | None = None) -> None:
        parts = urlsplit(url) if isinstance(url, str) else None
        if parts is None or parts.scheme not in ("http", "https") or not parts.netloc:
            raise ArgumentError("url", f"must be an http:// or https:// URL, got {url!r}")
        if parts.query or parts.fragment:
            raise ArgumentError("url", f"must be the server's base URL without query or fragment, got {url!r}")
        for name, value in (("num_classes", num_classes), ("max_batch", max_batch),
                            ("max_request_bytes", max_request_bytes)):
            if value is not None:
                positive_int(name, value)
        if token is not None and (not isinstance(token, str) or not token.strip()):
            raise ArgumentError("token", "must be a non-empty string or None")

        self.url = url.rstrip("/")
        self.token = token.strip() if token is not None else None
        self.timeout = finite_number("timeout", timeout, positive=True)
        self.retries = non_negative_int("retries", retries)
        self.backoff = finite_number("backoff", backoff, minimum=0.0)
        self.max_backoff = finite_number("max_backoff", max_backoff, minimum=0.0)
        self.num_classes = num_classes
        self.max_batch = max_batch
        self.max_request_bytes = max_request_bytes
        self.requests_sent = 0  # HTTP attempts made, retries included
        self._transport = HttpTransport(local_address)
        self._sleep: Callable[[float], None] = time.sleep  # replaceable in tests

    def close(self) -> None:
        """Close the connection pool and stop the event-loop thread (a later call starts a new one)."""
        self._transport.close()

    def __enter__(self) -> "RemoteLabelModel":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    @property
    def labels_url(self) -> str:
        return self.url + LABELS_PATH

    @property
    def health_url(self) -> str:
        return self.url + HEALTH_PATH

    def __repr__(self) -> str:
        return f"RemoteLabelModel({self.url!r}, token={'***' if self.token else None})"

    # ------------------------------------------------------------------ public calls

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """Labels of ``images`` (floating ``[B, *input_shape]``) as int64 ``[B]`` on the CPU."""
        return self.labels(images)

    def labels(self, images: torch.Tensor, deadline: float | None = None) -> torch.Tensor:
        """Labels of ``images``; no request runs past ``deadline`` (time.monotonic() seconds)."""
        if not isinstance(images, torch.Tensor) or not images.is_floating_point() or images.dim() < 2:
            raise ValueError("images: must be a floating tensor of shape [B, *input_shape]")
        if not torch.isfinite(images).all():
            raise ValueError("images: contain NaN or infinite values; the API accepts finite pixels only")
        batch = images.shape[0]
        if batch == 0:
            return torch.zeros(0, dtype=torch.int64)
        chunk = self._chunk_size(images)
        return torch.cat([self._labels(images[start:start + chunk], deadline) for start in range(0, batch, chunk)])

    def health(self, deadline: float | None = None) -> dict[str, Any]:
        """``GET /v1/health``: a dict with ``status``, ``num_classes``, ``input_shape``, ``max_batch``,
        ``max_request_bytes`` (None for what the server does not report)."""
        payload = self._request("GET", self.health_url, None, 1 << 20, deadline)
        try:
            return decode_health(payload)
        except ProtocolError as exc:
            raise RemoteError(f"malformed answer from {self.health_url}: {exc}", url=self.health_url) from None

    def configure_from_health(self, deadline: float | None = None) -> dict[str, Any]:
        """Ask the server for its limits and adopt those not set yet (so calls are split to fit); returns health."""
        info = self.health(deadline)
        if self.max_batch is None:
            self.max_batch = info["max_batch"]
        if self.max_request_bytes is None:
            self.max_request_bytes = info["max_request_bytes"]
        return info

    # ------------------------------------------------------------------ internals

    def _chunk_size(self, images: torch.Tensor) -> int:
        """Images per request so that a request respects ``max_batch`` and ``max_request_bytes``."""
        size = images.shape[0] if self.max_batch is None else min(images.shape[0], self.max_batch)
        if self.max_request_bytes is not None:
            numel = math.prod(images.shape[1:])
            limit = self.max_request_bytes
            if encoded_request_bytes(1, numel) > limit:
                raise RemoteError(
                    f"one image of shape {list(images.shape[1:])} needs {encoded_request_bytes(1, numel)} "
                    f"request bytes, over the server's max_request_bytes={limit}", url=self.labels_url)
            fit = max(1, (limit - encoded_request_bytes(0, numel)) // 4 * 3 // (4 * numel))
            while fit > 1 and encoded_request_bytes(fit, numel) > limit:
                fit -= 1
            size = min(size, fit)
        return max(1, size)

    def _labels(self, images: torch.Tensor, deadline: float | None) -> torch.Tensor:
        batch = images.shape[0]
        body = dumps(encode_images(images))
        payload = self._request("POST", self.labels_url, body, max(1 << 20, 32 * batch + 4096), deadline)
        try:
            return decode_labels(payload, batch, self.num_classes)
        except ProtocolError as exc:
            raise RemoteError(f"malformed answer from {self.labels_url}: {exc}", url=self.labels_url) from None

    def _request(self, method: str, url: str, body: bytes | None, max_response: int,
                 deadline: float | None = None) -> Any:
        """One API call with retries, none past the deadline; returns the parsed JSON of a 200 answer."""
        headers = {"Accept": "application/json", "User-Agent": "ipguard-fast"}
        if body is not None:
            headers["Content-Type"] = "application/json"
        if self.token is not None:
            headers["Authorization"] = f"Bearer {self.token}"
        attempts = self.retries + 1
        for attempt in range(attempts):
            seconds = self._time_left(deadline, url, attempt)
            self.requests_sent += 1
            last = attempt == attempts - 1
            try:
                answer = self._transport.exchange(method, url, body, headers, max_response, seconds)
            except TransportError as exc:
                if exc.permanent or last:
                    raise RemoteError(f"cannot reach {url}: {exc.reason} (after {attempt + 1} attempt"
                                      f"{'s' if attempt else ''})", url=url) from None
                self._pause(self._delay(attempt, None), deadline)
                continue
            status = answer.status
            if status != 200:
                if status in _RETRY_STATUSES and not last:
                    self._pause(self._delay(attempt, retry_after(answer.headers)), deadline)
                    continue
                raise RemoteError(http_error_message(method, url, status, error_detail(answer.body),
                                                     answer.headers, attempt + 1), status=status, url=url)
            if len(answer.body) > max_response:
                raise RemoteError(f"answer from {url} is larger than {max_response} bytes", status=status, url=url)
            try:
                return json.loads(answer.body.decode("utf-8"))
            except (UnicodeDecodeError, ValueError, RecursionError) as exc:
                reason = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)[:200]
                raise RemoteError(f"malformed JSON from {url}: {reason}: {answer.body[:100]!r}", status=status,
                                  url=url) from None
        raise AssertionError("unreachable")  # pragma: no cover

    def _time_left(self, deadline: float | None, url: str, attempt: int) -> float:
        """Seconds the next attempt may take: the per-request timeout, cut by the deadline."""
        if deadline is None:
            return self.timeout
        left = deadline - time.monotonic()
        if left <= 0:
            raise RemoteError(f"deadline passed before {url} answered (after {attempt} attempt"
                              f"{'' if attempt == 1 else 's'})", url=url)
        return min(self.timeout, left)

    def _pause(self, seconds: float, deadline: float | None) -> None:
        """Wait before a retry, never past the deadline."""
        if deadline is not None:
            seconds = min(seconds, max(0.0, deadline - time.monotonic()))
        self._sleep(seconds)

    def _delay(self, attempt: int, advised: float | None) -> float:
        """The wait before the next attempt: the server's Retry-After when it sent one, else the backoff."""
        delay = advised if advised is not None else self.backoff * (2 ** attempt)
        return max(0.0, min(delay, self.max_backoff))
