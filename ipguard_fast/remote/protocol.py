"""The JSON wire format of the label-only HTTP API, shared by the server and the client.

Everything both sides must agree on lives here: paths, limits, and the encoders/decoders of
each message. docs/http_api.md is the prose version of this module.

Endpoints (all JSON, UTF-8):

``POST /v1/labels``
    request  ``{"shape": [B, *input_shape], "dtype": "float32", "data": "<base64>"}`` where
    ``data`` is the standard base64 (RFC 4648, with padding) of the ``B * prod(input_shape)``
    pixels as little-endian IEEE-754 float32, C order;
    response ``{"labels": [int, ...]}``, one label per image, in order.

``GET /v1/health``
    response ``{"status": "ok", "api_version": "v1", "num_classes": C or null,
    "input_shape": [...] or null, "max_batch": N, "max_request_bytes": M}``.

Errors (any 4xx/5xx) carry ``{"error": "<code>", "message": "<human readable>"}``.

Only labels ever cross the wire, never logits or probabilities: a label-only API is the
threat model IPGuard verification is designed for.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from typing import Any, Sequence

import numpy as np
import torch

from .buffers import WINDOW, b64decode_in_steps

__all__ = [
    "API_VERSION",
    "DEFAULT_MAX_BATCH",
    "DEFAULT_MAX_REQUEST_BYTES",
    "DTYPE",
    "ERROR_CODES",
    "HEALTH_PATH",
    "LABELS_PATH",
    "MAX_RANK",
    "ProtocolError",
    "decode_base64",
    "decode_health",
    "decode_images",
    "decode_labels",
    "dumps",
    "encode_error",
    "encode_health",
    "encode_images",
    "encode_labels",
    "encoded_request_bytes",
]

API_VERSION = "v1"
LABELS_PATH = "/v1/labels"
HEALTH_PATH = "/v1/health"

DTYPE = "float32"
"""The only pixel dtype on the wire (little-endian IEEE-754 binary32)."""

DEFAULT_MAX_REQUEST_BYTES = 64 * 1024 * 1024
"""Default cap on a request body (the JSON text), in bytes; larger requests get 413."""

DEFAULT_MAX_BATCH = 1024
"""Default cap on B, the number of images in one request; larger batches get 413."""

MAX_RANK = 8
"""Longest accepted ``shape`` list (batch axis included)."""

ERROR_CODES = {
    400: "bad_request",
    401: "unauthorized",
    404: "not_found",
    405: "method_not_allowed",
    408: "request_timeout",
    411: "length_required",
    413: "payload_too_large",
    429: "too_many_requests",
    500: "internal_error",
    501: "not_implemented",
    503: "unavailable",
}
"""The ``error`` code sent with each HTTP status."""

# JSON overhead of a labels request besides the base64 text: the keys, the shape list, quotes.
_REQUEST_OVERHEAD = 256


class ProtocolError(ValueError):
    """A message does not follow the wire format. ``status`` is the HTTP status a server answers with."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


# ---------------------------------------------------------------------- images (request)


def encode_images(images: torch.Tensor) -> dict[str, Any]:
    """The request body (as a dict) for ``images``, a floating tensor ``[B, *input_shape]``."""
    if not isinstance(images, torch.Tensor) or not images.is_floating_point() or images.dim() < 2:
        raise ValueError("images: must be a floating tensor of shape [B, *input_shape]")
    if images.dim() > MAX_RANK:
        raise ValueError(f"images: has rank {images.dim()}; the wire format allows at most {MAX_RANK}")
    array = images.detach().to(device="cpu", dtype=torch.float32).contiguous().numpy()
    data = np.ascontiguousarray(array, dtype="<f4").tobytes()
    return {"shape": list(images.shape), "dtype": DTYPE, "data": base64.b64encode(data).decode("ascii")}


def encoded_request_bytes(batch: int, image_numel: int) -> int:
    """Upper bound on the JSON size of a labels request for ``batch`` images of ``image_numel`` pixels."""
    raw = batch * image_numel * 4
    return 4 * math.ceil(raw / 3) + _REQUEST_OVERHEAD


def decode_images(payload: Any, *, input_shape: Sequence[int] | None = None,
                  max_batch: int | None = None) -> torch.Tensor:
    """Validate a labels request (parsed JSON) and return its images as float32 ``[B, *input_shape]``.

    Args:
        payload: the parsed request body.
        input_shape: when given, every image must have exactly this shape.
        max_batch: when given, B above it is refused with status 413.

    Raises:
        ProtocolError: status 400 for anything malformed (missing or mistyped fields, a wrong
            shape or dtype, invalid base64, a byte count that does not match the shape,
            NaN/inf pixels), 413 for a batch over ``max_batch``.
    """
    if not isinstance(payload, dict):
        raise ProtocolError("request body must be a JSON object with keys 'shape', 'dtype' and 'data'")
    missing = [key for key in ("shape", "dtype", "data") if key not in payload]
    if missing:
        raise ProtocolError(f"request is missing {', '.join(repr(k) for k in missing)}")

    dtype = payload["dtype"]
    if dtype != DTYPE:
        raise ProtocolError(f"unsupported dtype {dtype!r}; only {DTYPE!r} (little-endian) is accepted")

    shape = payload["shape"]
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) for d in shape):
        raise ProtocolError("'shape' must be a list of integers [B, *input_shape]")
    if not 2 <= len(shape) <= MAX_RANK:
        raise ProtocolError(f"'shape' must have between 2 and {MAX_RANK} entries [B, *input_shape], got {len(shape)}")
    if any(d <= 0 for d in shape):
        raise ProtocolError(f"every entry of 'shape' must be positive, got {shape}")
    batch = shape[0]
    if max_batch is not None and batch > max_batch:
        raise ProtocolError(f"batch of {batch} images exceeds this server's max_batch of {max_batch}", status=413)
    if input_shape is not None and tuple(shape[1:]) != tuple(input_shape):
        raise ProtocolError(
            f"images must have shape [B, {', '.join(str(d) for d in input_shape)}], got {shape}"
        )

    data = payload["data"]
    if not isinstance(data, (str, memoryview)):  # a memoryview: the raw text of a long string (decoding.py)
        raise ProtocolError("'data' must be a base64 string")
    numel = math.prod(shape)
    expected_chars = 4 * math.ceil(numel * 4 / 3)
    if len(data) != expected_chars:  # checked before decoding: a huge shape never allocates anything
        raise ProtocolError(
            f"'data' has {len(data)} base64 characters; shape {shape} of float32 needs {expected_chars}"
        )
    raw = decode_base64(data, numel * 4)
    # A writable buffer, so the tensor needs no copy (float32 is little-endian on every platform torch runs).
    array = np.frombuffer(raw, dtype="<f4").astype(np.float32, copy=False).reshape(shape)
    images = torch.from_numpy(array)
    if not torch.isfinite(images).all():
        raise ProtocolError("images contain NaN or infinite pixels")
    return images


def decode_base64(data: str | memoryview, size: int, window: int = WINDOW):
    """``data``, standard base64 (with padding) of ``size`` bytes, decoded a window at a time
    (buffers.py); ProtocolError for anything else."""
    try:
        return b64decode_in_steps(data.encode("ascii") if isinstance(data, str) else data, size, window)
    except (binascii.Error, UnicodeEncodeError, ValueError) as exc:
        raise ProtocolError(f"'data' is not valid base64: {exc}") from None


# ---------------------------------------------------------------------- labels (response)


def encode_labels(labels: torch.Tensor | Sequence[int]) -> dict[str, Any]:
    """The response body (as a dict) for integer labels ``[B]``."""
    if isinstance(labels, torch.Tensor):
        values = labels.detach().cpu().reshape(-1).tolist()
    else:
        values = list(labels)
    return {"labels": [int(v) for v in values]}


def decode_labels(payload: Any, batch: int, num_classes: int | None = None) -> torch.Tensor:
    """Validate a labels response (parsed JSON) for a request of ``batch`` images.

    Returns int64 labels ``[batch]``. Raises ProtocolError when the body is not an object with
    a ``labels`` list of exactly ``batch`` JSON integers (booleans and floats such as ``1.0``
    are refused) in ``[0, num_classes)`` (or non-negative when ``num_classes`` is None).
    """
    if not isinstance(payload, dict) or "labels" not in payload:
        raise ProtocolError("response is not a JSON object with a 'labels' list")
    labels = payload["labels"]
    if not isinstance(labels, list):
        raise ProtocolError(f"'labels' must be a list, got {type(labels).__name__}")
    if len(labels) != batch:
        raise ProtocolError(f"server returned {len(labels)} labels for a batch of {batch} images")
    for index, value in enumerate(labels):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ProtocolError(f"label {index} is {value!r}, not an integer")
        if value < 0 or (num_classes is not None and value >= num_classes):
            bound = f"[0, {num_classes})" if num_classes is not None else "non-negative"
            raise ProtocolError(f"label {index} is {value}, labels must be {bound}")
    if not labels:
        return torch.zeros(0, dtype=torch.int64)
    if max(labels) > np.iinfo(np.int64).max:
        raise ProtocolError("a label does not fit in int64")
    return torch.tensor(labels, dtype=torch.int64)


# ---------------------------------------------------------------------- health and errors


def encode_health(num_classes: int | None, input_shape: Sequence[int] | None, max_batch: int,
                  max_request_bytes: int) -> dict[str, Any]:
    """The ``GET /v1/health`` response body (as a dict)."""
    return {
        "status": "ok",
        "api_version": API_VERSION,
        "num_classes": num_classes,
        "input_shape": list(input_shape) if input_shape is not None else None,
        "max_batch": max_batch,
        "max_request_bytes": max_request_bytes,
    }


def decode_health(payload: Any) -> dict[str, Any]:
    """Validate a health response; returns a dict with the keys of :func:`encode_health`.

    Only ``status == "ok"`` is required; the other keys are None when absent, so a server that
    does not advertise its limits or shapes still works.
    """
    if not isinstance(payload, dict) or payload.get("status") != "ok":
        raise ProtocolError(f"health response is not {{'status': 'ok', ...}}: {_clip(payload)}")

    def optional_int(key: str, minimum: int) -> int | None:
        value = payload.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ProtocolError(f"health field {key!r} must be an integer >= {minimum} or null, got {value!r}")
        return value

    shape = payload.get("input_shape")
    if shape is not None and (not isinstance(shape, list) or not all(
            isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in shape)):
        raise ProtocolError(f"health field 'input_shape' must be a list of positive integers or null, got {shape!r}")
    return {
        "status": "ok",
        "api_version": payload.get("api_version"),
        "num_classes": optional_int("num_classes", 1),
        "input_shape": shape,
        "max_batch": optional_int("max_batch", 1),
        "max_request_bytes": optional_int("max_request_bytes", 1),
    }


def encode_error(status: int, message: str) -> dict[str, Any]:
    """The error body (as a dict) sent with HTTP ``status``."""
    return {"error": ERROR_CODES.get(status, "error"), "message": message}


def dumps(payload: Any) -> bytes:
    """Serialise a message: compact, strict JSON (no NaN), UTF-8."""
    return json.dumps(payload, separators=(",", ":"), allow_nan=False).encode("utf-8")


def _clip(value: Any, limit: int = 200) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."
