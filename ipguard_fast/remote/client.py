"""Client side of the label-only HTTP API: a remote model as a suspect.

:class:`RemoteLabelModel` is a callable from images to int64 labels, usable wherever a
suspect is (``verdicts.matching_rate(RemoteLabelModel(url), fingerprints)``), with a
deadline for every request, retries with jittered backoff that honour the server's
``Retry-After`` (config.RetryPolicy), answers decompressed when a server compresses them
anyway (answers.py), and the endpoint's credentials kept out of every message
(credentials.py). The HTTP itself is httpx (the ``remote`` extra), run by transport.py
under one hard deadline per exchange; this module decides what to send, what to retry
and what an answer means. verification.py verifies through it, resumably. The wire
format is in :mod:`ipguard_fast.remote.protocol`.
"""

from __future__ import annotations

import json
import math
import random
import time
from typing import Any, Callable

import torch

from .._validate import ArgumentError, finite_number, positive_int
from .answers import AnswerError, decoded_body, error_detail, http_error_message, retry_after
from .config import RetryPolicy, check_token
from .credentials import Endpoint
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
from .transport import Exchange, HttpTransport, TransportError

__all__ = ["RemoteError", "RemoteLabelModel"]

_RETRY_STATUSES = frozenset({429, 500, 502, 503, 504}) | frozenset(range(505, 600))
# Under a deadline, no retry starts with less time than this left: a request needs a round
# trip, and an attempt given a millisecond can only time out.
MIN_ATTEMPT_SECONDS = 0.05


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
            A ``user:password@`` in it is sent as HTTP basic auth when there is no ``token``
            (for a proxy in front of the API) and never shown: ``.url``, ``repr`` and every
            error message carry the URL without it.
        token: bearer token sent as ``Authorization: Bearer <token>`` (never shown either).
        timeout: seconds one request may take in all -- connecting, sending, and the whole
            answer -- however slowly the server trickles bytes.
        retries, backoff, max_backoff: the :class:`~ipguard_fast.remote.config.RetryPolicy`:
            at most ``retries`` failures (5xx, 429, connection refused/reset, timeout) are
            retried, waiting ``backoff * 2**k`` or the server's ``Retry-After`` (whichever is
            longer), jittered, at most ``max_backoff``. Other 4xx are not retried. A busy
            answer (429, or 503 with Retry-After) under a ``deadline`` is retried until the
            deadline instead: the server asked to come back, it did not fail.
        num_classes: when given, labels outside ``[0, num_classes)`` raise RemoteError.
        max_batch, max_request_bytes: when given, a call with more images (or a bigger body)
            is split into several requests. :meth:`configure_from_health` sets them from the server.
        local_address: the local IP address requests leave from (default: the system's choice).

    ``labels(images, deadline=...)`` and ``health(deadline=...)`` also take an absolute
    deadline (``time.monotonic()`` seconds) that no attempt, retry or backoff may pass:
    ``verify_remote`` bounds a whole run with it.

    Requests ask for ``Accept-Encoding: identity``; a gzip or deflate answer is decompressed
    all the same (bounded). The first request starts the client's own event-loop thread
    (httpx runs on it, see transport.py). ``close()`` (or ``with``) closes the connection
    pool and stops and joins that thread; a later call starts a new one. A client collected
    without ``close()`` has its thread stopped by a finaliser.

    Calls raise :class:`RemoteError` for an unreachable server, an HTTP error, malformed JSON,
    a wrong label count, or labels that are not integers in range.
    """

    def __init__(self, url: str, token: str | None = None, timeout: float = 30.0, retries: int = 5,
                 backoff: float = 0.5, *, max_backoff: float = 30.0, num_classes: int | None = None,
                 max_batch: int | None = None, max_request_bytes: int | None = None,
                 local_address: str | None = None) -> None:
        if token is not None and (not isinstance(token, str) or not token.strip()):
            raise ArgumentError("token", "must be a non-empty string or None")
        self.token = check_token("token", token.strip()) if token is not None else None
        self._endpoint = Endpoint(url, self.token)
        self.url = self._endpoint.url
        for name, value in (("num_classes", num_classes), ("max_batch", max_batch),
                            ("max_request_bytes", max_request_bytes)):
            if value is not None:
                positive_int(name, value)
        self.timeout = finite_number("timeout", timeout, positive=True)
        self.retry = RetryPolicy(retries, backoff, max_backoff)
        self.num_classes = num_classes
        self.max_batch = max_batch
        self.max_request_bytes = max_request_bytes
        self.requests_sent = 0  # HTTP attempts made, retries included
        self._transport = HttpTransport(local_address, tls=self.url.startswith("https:"))
        self._sleep: Callable[[float], None] = time.sleep  # replaceable in tests
        self._random: Callable[[], float] = random.random  # the backoff's jitter; replaceable in tests

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
        payload = self._request("GET", HEALTH_PATH, None, 1 << 20, deadline)
        try:
            return decode_health(payload)
        except ProtocolError as exc:
            raise RemoteError(f"malformed answer from {self.health_url}: {self._endpoint.redact(str(exc))}",
                              url=self.health_url) from None

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
        payload = self._request("POST", LABELS_PATH, body, max(1 << 20, 32 * batch + 4096), deadline)
        try:
            return decode_labels(payload, batch, self.num_classes)
        except ProtocolError as exc:
            raise RemoteError(f"malformed answer from {self.labels_url}: {self._endpoint.redact(str(exc))}",
                              url=self.labels_url) from None

    def _request(self, method: str, path: str, body: bytes | None, max_response: int,
                 deadline: float | None = None) -> Any:
        """One API call with retries, none past the deadline; returns the parsed JSON of a 200 answer."""
        shown = self.url + path
        failures = attempts = 0
        last = ""
        while True:
            seconds = self._time_left(deadline, shown, attempts, last)
            self.requests_sent += 1
            attempts += 1
            try:
                answer = self._transport.exchange(method, self._endpoint.url + path, body, self._headers(body),
                                                  max_response, seconds)
            except TransportError as exc:
                last = self._endpoint.redact(exc.reason)
                if exc.permanent or failures >= self.retry.retries:
                    raise RemoteError(f"cannot reach {shown}: {last} (after {_plural(attempts, 'attempt')})",
                                      url=shown) from None
                failures = self._pause(failures, None, deadline, shown, attempts, last)
                continue
            if answer.status == 200:
                return self._parsed(answer, shown, max_response)
            advised = retry_after(answer.headers)
            busy = answer.status == 429 or (answer.status == 503 and advised is not None)
            last = f"HTTP {answer.status}"
            if answer.status in _RETRY_STATUSES and (failures < self.retry.retries or (busy and deadline is not None)):
                failures = self._pause(failures, advised, deadline, shown, attempts, last)
                continue
            detail = self._endpoint.redact(error_detail(self._body(answer, max_response)))
            raise RemoteError(http_error_message(method, shown, answer.status, detail, answer.headers, attempts,
                                                 self._endpoint.redact), status=answer.status, url=shown)

    def _headers(self, body: bytes | None) -> dict[str, str]:
        headers = {"Accept": "application/json", "Accept-Encoding": "identity", "User-Agent": "ipguard-fast"}
        if body is not None:
            headers["Content-Type"] = "application/json"
        if self._endpoint.authorization is not None:
            headers["Authorization"] = self._endpoint.authorization
        return headers

    def _body(self, answer: Exchange, max_response: int) -> bytes:
        """An error answer's body, decompressed when that works (it is only shown)."""
        try:
            return decoded_body(answer.headers, answer.body, max_response)
        except AnswerError:
            return answer.body

    def _parsed(self, answer: Exchange, url: str, max_response: int) -> Any:
        """The JSON of a 200 answer."""
        try:
            raw = decoded_body(answer.headers, answer.body, max_response)
        except AnswerError as exc:
            raise RemoteError(f"answer from {url} cannot be read: {exc}", status=200, url=url) from None
        try:
            return json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:
            reason = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)[:200]
            shown = self._endpoint.redact(repr(raw[:100]))
            raise RemoteError(f"malformed JSON from {url}: {reason}: {shown}", status=200, url=url) from None

    def _time_left(self, deadline: float | None, url: str, attempts: int, last: str) -> float:
        """Seconds the next attempt may take: the per-request timeout, cut by the deadline."""
        if deadline is None:
            return self.timeout
        left = deadline - time.monotonic()
        if left <= 0:
            raise _deadline_passed(url, attempts, last)
        return min(self.timeout, left)

    def _pause(self, failures: int, advised: float | None, deadline: float | None, url: str, attempts: int,
               last: str) -> int:
        """Wait before a retry (jittered backoff or Retry-After); the failures so far. A wait that
        leaves less than MIN_ATTEMPT_SECONDS before the deadline ends the call there instead,
        naming the last answer (a doomed last attempt's timeout would hide the server's 429)."""
        seconds = self.retry.delay(failures, advised, self._random())
        if deadline is not None and time.monotonic() + seconds > deadline - MIN_ATTEMPT_SECONDS:
            self._sleep(max(0.0, deadline - time.monotonic()))
            raise _deadline_passed(url, attempts, last)
        self._sleep(seconds)
        return failures + 1


def _deadline_passed(url: str, attempts: int, last: str) -> RemoteError:
    ended = f"; the last: {last}" if last else ""
    return RemoteError(f"deadline passed before {url} answered (after {_plural(attempts, 'attempt')}{ended})", url=url)


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"
