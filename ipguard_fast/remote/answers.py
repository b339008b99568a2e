"""What an HTTP error answer tells the client: when to retry, and one line saying what went wrong.

The server's errors are JSON (``{"error": code, "message": ...}``), but a proxy or the
HTTP layer in front of it may answer plain text or HTML: each is read bounded and
reduced to one line. Kept apart from client.py, which decides what to send and retry.
"""
from __future__ import annotations

import email.utils
import json
import math
from datetime import datetime, timezone
from typing import Any

__all__ = ["error_detail", "http_error_message", "retry_after"]

_MAX_ERROR_BODY = 64 * 1024


def retry_after(headers: Any) -> float | None:
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


def error_detail(raw: bytes) -> str:
    raw = raw[:_MAX_ERROR_BODY]
    try:
        payload = json.loads(raw.decode("utf-8"))
        if isinstance(payload, dict) and isinstance(payload.get("message"), str):
            return " ".join(payload["message"].split())[:500]
    except (UnicodeDecodeError, ValueError, RecursionError):
        pass
    return " ".join(raw[:200].decode("utf-8", "replace").split())


def http_error_message(method: str, url: str, status: int, detail: str, headers: Any, attempts: int) -> str:
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
