"""Client side of the label-only HTTP API: a remote model as a suspect.

:class:`RemoteLabelModel` is a callable from images to int64 labels, usable wherever a
suspect is (``verify.matching_rate(RemoteLabelModel(url), fingerprints)``), with
timeouts, retries and backoff. verification.py verifies through it, resumably.

Standard library only (``urllib``). The wire format is in :mod:`ipguard_fast.remote.protocol`.
"""

from __future__ import annotations

import email.utils
import http.client
import json
import math
import numbers
import ssl
import time
import urllib.error
import urllib.request
from datetime import datetime, timezone
from typing import Any, Callable
from urllib.parse import urlsplit

import torch

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

__all__ = ["RemoteError", "RemoteLabelModel"]

_RETRY_STATUSES = frozenset({429, 500, 502, 503, 504}) | frozenset(range(505, 600))
_MAX_ERROR_BODY = 64 * 1024


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


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Never follow redirects: a POST would turn into a GET and the token would go to another host."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


class RemoteLabelModel:
    """A model behind the label-only HTTP API, as a callable ``images -> int64 labels``.

    Args:
        url: base URL of the server, e.g. ``http://127.0.0.1:8080`` (a path prefix such as
            ``https://host/models/resnet`` is kept: endpoints are ``url + "/v1/labels"``).
        token: bearer token sent as ``Authorization: Bearer <token>``.
        timeout: seconds to wait for connecting and for each read.
        retries: extra attempts after a retryable failure (5xx, 429, connection refused/reset,
            timeout): at most ``retries + 1`` attempts per request. Other 4xx are not retried.
        backoff: first delay in seconds; attempt k (0-based) waits ``backoff * 2**k`` before
            the next one, at most ``max_backoff``. A ``Retry-After`` header (seconds or an
            HTTP date) replaces the computed delay, also capped at ``max_backoff``.
        num_classes: when given, labels outside ``[0, num_classes)`` raise RemoteError.
        max_batch, max_request_bytes: when given, a call with more images (or a bigger body)
            is split into several requests. :meth:`configure_from_health` sets them from the server.

    Calls raise :class:`RemoteError` for an unreachable server, an HTTP error, malformed JSON,
    a wrong label count, or labels that are not integers in range.
    """

    def __init__(self, url: str, token: str | None = None, timeout: float = 30.0, retries: int = 5,
                 backoff: float = 0.5, *, max_backoff: float = 30.0, num_classes: int | None = None,
                 max_batch: int | None = None, max_request_bytes: int | None = None) -> None:
        parts = urlsplit(url) if isinstance(url, str) else None
        if parts is None or parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"url: must be an http:// or https:// URL, got {url!r}")
        if parts.query or parts.fragment:
            raise ValueError(f"url: must be the server's base URL without query or fragment, got {url!r}")
        _check_number("timeout", timeout, positive=True)
        _check_number("backoff", backoff)
        _check_number("max_backoff", max_backoff)
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
            raise ValueError(f"retries: must be a non-negative int, got {retries!r}")
        for name, value in (("num_classes", num_classes), ("max_batch", max_batch),
                            ("max_request_bytes", max_request_bytes)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"{name}: must be a positive int or None, got {value!r}")
        if token is not None and (not isinstance(token, str) or not token.strip()):
            raise ValueError("token: must be a non-empty string or None")

        self.url = url.rstrip("/")
        self.token = token.strip() if token is not None else None
        self.timeout = float(timeout)
        self.retries = retries
        self.backoff = float(backoff)
        self.max_backoff = float(max_backoff)
        self.num_classes = num_classes
        self.max_batch = max_batch
        self.max_request_bytes = max_request_bytes
        self.requests_sent = 0  # HTTP attempts made, retries included
        self._opener = urllib.request.build_opener(_NoRedirect())
        self._sleep: Callable[[float], None] = time.sleep  # replaceable in tests

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
        if not isinstance(images, torch.Tensor) or not images.is_floating_point() or images.dim() < 2:
            raise ValueError("images: must be a floating tensor of shape [B, *input_shape]")
        if not torch.isfinite(images).all():
            raise ValueError("images: contain NaN or infinite values; the API accepts finite pixels only")
        batch = images.shape[0]
        if batch == 0:
            return torch.zeros(0, dtype=torch.int64)
        chunk = self._chunk_size(images)
        return torch.cat([self._labels(images[start:start + chunk]) for start in range(0, batch, chunk)])

    def health(self) -> dict[str, Any]:
        """``GET /v1/health``: a dict with ``status``, ``num_classes``, ``input_shape``, ``max_batch``,
        ``max_request_bytes`` (None for what the server does not report)."""
        payload = self._request("GET", self.health_url, None, 1 << 20)
        try:
            return decode_health(payload)
        except ProtocolError as exc:
            raise RemoteError(f"malformed answer from {self.health_url}: {exc}", url=self.health_url) from None

    def configure_from_health(self) -> dict[str, Any]:
        """Ask the server for its limits and adopt those not set yet (so calls are split to fit); returns health."""
        info = self.health()
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

    def _labels(self, images: torch.Tensor) -> torch.Tensor:
        batch = images.shape[0]
        body = dumps(encode_images(images))
        payload = self._request("POST", self.labels_url, body, max(1 << 20, 32 * batch + 4096))
        try:
            return decode_labels(payload, batch, self.num_classes)
        except ProtocolError as exc:
            raise RemoteError(f"malformed answer from {self.labels_url}: {exc}", url=self.labels_url) from None

    def _request(self, method: str, url: str, body: bytes | None, max_response: int) -> Any:
        """One API call with retries; returns the parsed JSON of a 200 answer."""
        headers = {"Accept": "application/json", "User-Agent": "ipguard-fast"}
        if body is not None:
            headers["Content-Type"] = "application/json"
        if self.token is not None:
            headers["Authorization"] = f"Bearer {self.token}"
        attempts = self.retries + 1
        for attempt in range(attempts):
            request = urllib.request.Request(url, data=body, headers=headers, method=method)
            self.requests_sent += 1
            last = attempt == attempts - 1
            try:
                with self._opener.open(request, timeout=self.timeout) as response:
                    raw = response.read(max_response + 1)
                    status = response.status
            except urllib.error.HTTPError as exc:
                status, retry_after = exc.code, _retry_after(exc.headers)
                detail = _error_detail(exc)
                if status in _RETRY_STATUSES and not last:
                    self._sleep(self._delay(attempt, retry_after))
                    continue
                raise RemoteError(_http_error_message(method, url, status, detail, exc.headers, attempt + 1),
                                  status=status, url=url) from None
            except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
                reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
                if isinstance(reason, ssl.SSLError) or last:  # a certificate problem does not go away
                    raise RemoteError(f"cannot reach {url}: {reason!r} (after {attempt + 1} attempt"
                                      f"{'s' if attempt else ''})", url=url) from None
                self._sleep(self._delay(attempt, None))
                continue
            if len(raw) > max_response:
                raise RemoteError(f"answer from {url} is larger than {max_response} bytes", status=status, url=url)
            if status != 200:
                raise RemoteError(f"{method} {url} answered HTTP {status}, expected 200", status=status, url=url)
            try:
                return json.loads(raw.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                raise RemoteError(f"malformed JSON from {url}: {exc}: {raw[:100]!r}", status=status, url=url) from None
        raise AssertionError("unreachable")  # pragma: no cover

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        delay = retry_after if retry_after is not None else self.backoff * (2 ** attempt)
        return max(0.0, min(delay, self.max_backoff))


def _retry_after(headers: Any) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or HTTP date), or None."""
    value = headers.get("Retry-After") if headers is not None else None
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value)) if math.isfinite(float(value)) else None
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, (when - datetime.now(timezone.utc)).total_seconds())


def _error_detail(exc: urllib.error.HTTPError) -> str:
    try:
        raw = exc.read(_MAX_ERROR_BODY)
    except (OSError, http.client.HTTPException):
        return ""
    try:
        payload = json.loads(raw.decode("utf-8"))
        if isinstance(payload, dict) and isinstance(payload.get("message"), str):
            return payload["message"][:500]
    except (UnicodeDecodeError, json.JSONDecodeError):
        pass
    return raw[:200].decode("utf-8", "replace").strip()


def _http_error_message(method: str, url: str, status: int, detail: str, headers: Any, attempts: int) -> str:
    text = f"{method} {url} failed with HTTP {status}"
    if detail:
        text += f": {detail}"
    if status == 401:
        text += " (check the bearer token: --token-env / token=)"
    elif status == 413:
        text += " (request too large: use a smaller batch size)"
    elif 300 <= status < 400:
        text += f" (redirect to {headers.get('Location') if headers else None!r} not followed: use that URL)"
    if attempts > 1:
        text += f" (after {attempts} attempts)"
    return text


def _check_number(name: str, value: Any, positive: bool = False) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) \
            or value < 0 or (positive and value == 0):
        raise ValueError(f"{name}: must be a {'positive' if positive else 'non-negative'} number, got {value!r}")


# ---------------------------------------------------------------------- resumable verification
