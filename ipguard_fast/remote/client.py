"""Client side of the label-only HTTP API: a remote model as a suspect, and resumable verification.

* :class:`RemoteLabelModel` is a callable from images to int64 labels, usable wherever a
  suspect is (``verify.matching_rate(RemoteLabelModel(url), fingerprints)``).
* :func:`verify_remote` queries the fingerprints in batches and can save every answered
  batch to a progress file, so an interrupted run resumes without re-asking (and re-paying
  for) batches already answered.
* ``add_arguments`` / ``run`` implement ``ipguard verify --endpoint``.

Standard library only (``urllib``). The wire format is in :mod:`ipguard_fast.remote.protocol`.
"""

from __future__ import annotations

import argparse
import email.utils
import hashlib
import http.client
import json
import math
import numbers
import os
import ssl
import sys
import time
import urllib.error
import urllib.request
import warnings
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urlsplit, urlunsplit

import torch

from .._atomic import atomic_write_bytes
from ..fingerprints import FingerprintSet
from ..verify import DEFAULT_THRESHOLD, Verdict, verify
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

__all__ = [
    "PROGRESS_FORMAT",
    "ProgressFileError",
    "RemoteError",
    "RemoteLabelModel",
    "add_arguments",
    "fingerprints_digest",
    "run",
    "verify_remote",
]

PROGRESS_FORMAT = "ipguard_fast.remote.progress"
PROGRESS_VERSION = 1

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


class ProgressFileError(ValueError):
    """A progress file belongs to other fingerprints or settings, or is unreadable."""


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
            raise ValueError(f"url must be an http:// or https:// URL, got {url!r}")
        if parts.query or parts.fragment:
            raise ValueError(f"url must be the server's base URL without query or fragment, got {url!r}")
        _check_number("timeout", timeout, positive=True)
        _check_number("backoff", backoff)
        _check_number("max_backoff", max_backoff)
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
            raise ValueError(f"retries must be a non-negative int, got {retries!r}")
        for name, value in (("num_classes", num_classes), ("max_batch", max_batch),
                            ("max_request_bytes", max_request_bytes)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"{name} must be a positive int or None, got {value!r}")
        if token is not None and (not isinstance(token, str) or not token.strip()):
            raise ValueError("token must be a non-empty string or None")

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
            raise ValueError("images must be a floating tensor of shape [B, *input_shape]")
        if not torch.isfinite(images).all():
            raise ValueError("images contain NaN or infinite values; the API accepts finite pixels only")
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
        raise ValueError(f"{name} must be a {'positive' if positive else 'non-negative'} number, got {value!r}")


# ---------------------------------------------------------------------- resumable verification


def fingerprints_digest(fingerprints: FingerprintSet) -> str:
    """SHA-256 identifying a fingerprint set's queries and answers (images and owner labels)."""
    digest = hashlib.sha256(b"ipguard_fast.remote.progress-v1")
    for name, tensor in (("images", fingerprints.images), ("labels", fingerprints.labels)):
        data = tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
        for piece in (name.encode(), str(tensor.dtype).encode(), json.dumps(list(tensor.shape)).encode(), data):
            digest.update(len(piece).to_bytes(8, "little"))
            digest.update(piece)
    return digest.hexdigest()


def verify_remote(url: str | RemoteLabelModel, fingerprints: FingerprintSet, *, batch_size: int = 64,
                  token: str | None = None, progress_file: str | os.PathLike[str] | None = None,
                  threshold: float | None = None, timeout: float = 30.0, retries: int = 5,
                  backoff: float = 0.5,
                  on_batch: Callable[[int, int, int], None] | None = None) -> Verdict:
    """Verify the model behind ``url`` against ``fingerprints`` over the label-only HTTP API.

    The fingerprints are sent in batches of ``batch_size`` (batch b holds fingerprints
    ``[b * batch_size, (b + 1) * batch_size)``). The verdict equals
    ``verify.verify(model, fingerprints, threshold)`` for the served model.

    Args:
        url: the server's base URL, or a configured :class:`RemoteLabelModel` (then ``token``,
            ``timeout``, ``retries`` and ``backoff`` are ignored).
        fingerprints: the owner's fingerprint set.
        batch_size: fingerprints per batch (and per progress entry). Requests are split
            further when the server's ``/v1/health`` advertises smaller limits.
        token, timeout, retries, backoff: see :class:`RemoteLabelModel`.
        progress_file: JSON file recording every answered batch, rewritten atomically after
            each one. When it exists, its batches are reused and only the missing ones are
            queried. It is tied to the fingerprints (content hash) and ``batch_size``: a file
            for other fingerprints or another batch size raises :class:`ProgressFileError`.
            Kept when the run completes (a rerun then queries nothing).
        threshold: as in :func:`verify.verify` (default: ``fingerprints.meta["threshold"]`` or
            :data:`verify.DEFAULT_THRESHOLD`).
        on_batch: called as ``on_batch(batch_index, batches_done, batches_total)`` after each
            batch is answered (and saved).

    Raises:
        RemoteError: the server failed (after retries) or answered something malformed; the
            batches answered so far are in ``progress_file``.
        ProgressFileError: ``progress_file`` does not belong to this run.
        ValueError: invalid arguments.
    """
    if not isinstance(fingerprints, FingerprintSet):
        raise ValueError(f"fingerprints must be a FingerprintSet, got {type(fingerprints).__name__}")
    n = len(fingerprints)
    if n == 0:
        raise ValueError("fingerprints is empty; a matching rate needs at least one fingerprint")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size <= 0:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    threshold_value = threshold if threshold is not None else fingerprints.meta.get("threshold", DEFAULT_THRESHOLD)
    if isinstance(threshold_value, bool) or not isinstance(threshold_value, numbers.Real) \
            or not 0 <= threshold_value <= 1:
        name = "threshold" if threshold is not None else "fingerprints.meta['threshold']"
        raise ValueError(f"{name} must be a number in [0, 1], got {threshold_value!r}")

    num_classes = fingerprints.num_classes
    if isinstance(url, RemoteLabelModel):
        model = url
    else:
        model = RemoteLabelModel(url, token=token, timeout=timeout, retries=retries, backoff=backoff,
                                 num_classes=num_classes)
    num_batches = math.ceil(n / batch_size)
    digest = fingerprints_digest(fingerprints)
    path = Path(progress_file) if progress_file is not None else None
    done: dict[int, list[int]] = {}
    if path is not None:
        done = _load_progress(path, digest, n, batch_size, num_classes, model.url)

    todo = [b for b in range(num_batches) if b not in done]
    if todo:
        _check_server(model, fingerprints)
    for index in todo:
        start = index * batch_size
        images = fingerprints.images[start:start + batch_size]
        try:
            labels = model(images)
            _check_labels(labels, images.shape[0], num_classes, model.labels_url)
        except RemoteError as exc:
            if path is None:
                raise
            raise RemoteError(f"{exc}; {len(done)}/{num_batches} batches are saved in {path}: run again with the "
                              "same progress file to resume", status=exc.status, url=exc.url) from exc
        done[index] = labels.tolist()
        if path is not None:
            _save_progress(path, digest, n, batch_size, num_batches, model.url, done)
        if on_batch is not None:
            on_batch(index, len(done), num_batches)

    all_labels = torch.tensor([label for b in range(num_batches) for label in done[b]], dtype=torch.int64)
    return verify(_Replay(all_labels), fingerprints, threshold=threshold, batch_size=n)


class _Replay:
    """A suspect that answers the whole fingerprint batch with labels received earlier."""

    def __init__(self, labels: torch.Tensor) -> None:
        self.labels = labels

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        if images.shape[0] != self.labels.shape[0]:  # pragma: no cover - verify() is called with batch_size=n
            raise RuntimeError("replay called with an unexpected batch")
        return self.labels


def _check_server(model: RemoteLabelModel, fingerprints: FingerprintSet) -> None:
    """Read /v1/health: adopt the server's limits, refuse a server for other shapes or class counts."""
    try:
        info = model.configure_from_health()
    except RemoteError as exc:
        if exc.status in (404, 405):  # a label-only API without the health endpoint still works
            return
        raise
    shape = info.get("input_shape")
    if shape is not None and tuple(shape) != fingerprints.input_shape:
        raise RemoteError(f"the server takes images of shape {shape}, the fingerprints are "
                          f"{list(fingerprints.input_shape)}", url=model.health_url)
    classes = info.get("num_classes")
    if classes is not None and fingerprints.num_classes is not None and classes != fingerprints.num_classes:
        raise RemoteError(f"the server's model has {classes} classes, the fingerprints' owner model has "
                          f"{fingerprints.num_classes}", url=model.health_url)


def _check_labels(labels: Any, batch: int, num_classes: int | None, url: str) -> None:
    if not isinstance(labels, torch.Tensor) or labels.dtype != torch.int64 or labels.shape != (batch,):
        raise RemoteError(f"suspect returned {labels!r} for a batch of {batch}; expected int64 labels [{batch}]",
                          url=url)
    if batch and (int(labels.min()) < 0 or (num_classes is not None and int(labels.max()) >= num_classes)):
        raise RemoteError(f"suspect returned a label outside [0, {num_classes})", url=url)


def _public_url(url: str) -> str:
    """``url`` without user:password, for storing in the progress file."""
    parts = urlsplit(url)
    netloc = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def _load_progress(path: Path, digest: str, n: int, batch_size: int, num_classes: int | None,
                   url: str) -> dict[int, list[int]]:
    if not path.exists():
        return {}
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ProgressFileError(f"cannot read progress file {path}: {exc}; delete it to start over") from exc
    if not isinstance(state, dict) or state.get("format") != PROGRESS_FORMAT:
        raise ProgressFileError(f"{path} is not an ipguard_fast progress file")
    if state.get("version") != PROGRESS_VERSION:
        raise ProgressFileError(f"{path} has progress format version {state.get('version')!r}, "
                                f"this library reads {PROGRESS_VERSION}")
    if state.get("fingerprints_sha256") != digest:
        raise ProgressFileError(
            f"{path} was written for other fingerprints (sha256 {state.get('fingerprints_sha256')!r}, these are "
            f"{digest!r}); use another progress file or delete it")
    if state.get("batch_size") != batch_size:
        raise ProgressFileError(f"{path} was written with batch_size={state.get('batch_size')!r}; resume with "
                                f"that batch size, or delete the file to start over with {batch_size}")
    if state.get("endpoint") not in (None, _public_url(url)):
        warnings.warn(f"progress file {path} was started against {state.get('endpoint')}; resuming against "
                      f"{_public_url(url)} (the answers of both are combined)", UserWarning, stacklevel=3)

    batches = state.get("batches")
    if not isinstance(batches, dict):
        raise ProgressFileError(f"{path}: 'batches' must be an object")
    num_batches = math.ceil(n / batch_size)
    done: dict[int, list[int]] = {}
    for key, labels in batches.items():
        if not key.isdigit() or int(key) >= num_batches:
            raise ProgressFileError(f"{path}: batch index {key!r} is not in [0, {num_batches})")
        index = int(key)
        expected = min(batch_size, n - index * batch_size)
        if not isinstance(labels, list) or len(labels) != expected or not all(
                isinstance(v, int) and not isinstance(v, bool) and v >= 0
                and (num_classes is None or v < num_classes) for v in labels):
            raise ProgressFileError(f"{path}: batch {index} must be {expected} labels in [0, {num_classes})")
        done[index] = labels
    return done


def _save_progress(path: Path, digest: str, n: int, batch_size: int, num_batches: int, url: str,
                   done: dict[int, list[int]]) -> None:
    state = {
        "format": PROGRESS_FORMAT,
        "version": PROGRESS_VERSION,
        "fingerprints_sha256": digest,
        "num_fingerprints": n,
        "batch_size": batch_size,
        "num_batches": num_batches,
        "batches_done": len(done),
        "endpoint": _public_url(url),
        "updated": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "batches": {str(index): done[index] for index in sorted(done)},
    }
    data = json.dumps(state, separators=(",", ":")).encode("utf-8")
    atomic_write_bytes(path, data)


# ---------------------------------------------------------------------- CLI: ipguard verify --endpoint


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``ipguard verify --endpoint``."""
    parser.add_argument("--fingerprints", required=True, help="fingerprint file (.safetensors) of the owner model")
    parser.add_argument("--endpoint", required=True, help="base URL of the suspect's label API, e.g. http://host:8080")
    parser.add_argument("--token-env", metavar="VAR", help="environment variable holding the API's bearer token")
    parser.add_argument("--progress", metavar="FILE",
                        help="progress file: saves each answered batch; rerun with it to resume an interrupted run")
    parser.add_argument("--threshold", type=float,
                        help="matching-rate threshold (default: the fingerprints' calibrated one, else 0.5)")
    parser.add_argument("--batch-size", type=int, default=64, help="fingerprints per request (default 64)")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds per HTTP attempt (default 30)")
    parser.add_argument("--retries", type=int, default=5, help="retries on 5xx/429/connection errors (default 5)")
    parser.add_argument("--json", action="store_true", help="print the verdict as JSON")


def run(args: argparse.Namespace) -> int:
    """``ipguard verify --endpoint``. Exit 0 with a verdict, 1 when the remote run failed, 2 on bad input.

    Needs ``args.fingerprints`` and ``args.endpoint``; ``token_env``, ``progress``, ``threshold``,
    ``batch_size`` (64), ``timeout`` (30), ``retries`` (5) and ``json`` are optional attributes.
    """
    from ..fingerprints import FingerprintFileError

    # Optional arguments are read with defaults, so a CLI that declares only some of them works.
    token_env = getattr(args, "token_env", None)
    as_json = bool(getattr(args, "json", False))
    try:
        token = None
        if token_env:
            token = os.environ.get(token_env, "").strip()
            if not token:
                raise ValueError(f"environment variable {token_env} (from --token-env) is unset or empty")
        fingerprints = FingerprintSet.load(args.fingerprints)
    except (ValueError, FileNotFoundError, FingerprintFileError) as exc:
        print(f"ipguard verify: error: {exc}", file=sys.stderr)
        return 2

    def report(index: int, done: int, total: int) -> None:
        if not as_json:
            print(f"\rqueried {done}/{total} batches", end="" if done < total else "\n", file=sys.stderr, flush=True)

    try:
        verdict = verify_remote(args.endpoint, fingerprints, batch_size=getattr(args, "batch_size", 64),
                                token=token, progress_file=getattr(args, "progress", None),
                                threshold=getattr(args, "threshold", None), timeout=getattr(args, "timeout", 30.0),
                                retries=getattr(args, "retries", 5), on_batch=report)
    except (ProgressFileError, ValueError) as exc:
        print(f"ipguard verify: error: {exc}", file=sys.stderr)
        return 2
    except RemoteError as exc:
        print(f"ipguard verify: error: {exc}", file=sys.stderr)
        return 1

    if as_json:
        print(json.dumps(verdict.to_dict()))
    else:
        outcome = "PIRATED (matches the fingerprinted model)" if verdict.pirated else "not pirated"
        print(f"matching rate {verdict.matching_rate:.4f} ({verdict.matches}/{verdict.total}) "
              f"vs threshold {verdict.threshold:g}: {outcome}")
    return 0
