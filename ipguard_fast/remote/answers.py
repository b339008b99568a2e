"""What an HTTP answer tells the client: its body (decompressed, bounded), when to retry, and
one line saying what went wrong.

The client asks for ``Accept-Encoding: identity``, but a server or proxy may compress
anyway: gzip and deflate bodies are decompressed, never past the answer's size bound (a
small compressed body can expand without limit). The server's errors are JSON
(``{"error": code, "message": ...}``), but a proxy or the HTTP layer in front of it may
answer plain text or HTML: each is read bounded and reduced to one line. Kept apart from
client.py, which decides what to send and retry.
"""
from __future__ import annotations

import email.utils
import json
import math
import zlib
from datetime import datetime, timezone
from typing import Any, Callable

__all__ = ["AnswerError", "decoded_body", "error_detail", "http_error_message", "retry_after"]

_MAX_ERROR_BODY = 64 * 1024


class AnswerError(ValueError):
    """An answer's body cannot be read: an unknown encoding, broken compression, or too large."""


def decoded_body(headers: Any, raw: bytes, limit: int) -> bytes:
    """``raw`` as the server meant it: decompressed when Content-Encoding says gzip or deflate,
    never more than ``limit`` bytes (AnswerError beyond)."""
    if len(raw) > limit:
        raise AnswerError(f"larger than {limit} bytes")
    coding = (headers.get("Content-Encoding") or "identity").strip().lower() if headers is not None else "identity"
    if coding == "identity":
        return raw
    if coding in ("gzip", "x-gzip"):
        return _inflate(raw, limit, 16 + zlib.MAX_WBITS, coding)
    if coding == "deflate":  # zlib-wrapped as the standard says; raw deflate as some servers send
        try:
            return _inflate(raw, limit, zlib.MAX_WBITS, coding)
        except AnswerError as exc:
            if "larger than" in str(exc):
                raise
            return _inflate(raw, limit, -zlib.MAX_WBITS, coding)
    raise AnswerError(f"it is sent with Content-Encoding {coding[:40]!r}, which this client does not decode")


def _inflate(raw: bytes, limit: int, wbits: int, coding: str) -> bytes:
    inflater = zlib.decompressobj(wbits)
    try:
        out = inflater.decompress(raw, limit + 1)
    except zlib.error as exc:
        raise AnswerError(f"its {coding} compression is broken: {exc}") from None
    if len(out) > limit:
        raise AnswerError(f"larger than {limit} bytes once decompressed")
    if not inflater.eof:
        raise AnswerError(f"its {coding} compression ends early")
    return out


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
        if when.tzinfo is None:
            when = when.replace(tzinfo=timezone.utc)
        return max(0.0, (when - datetime.now(timezone.utc)).total_seconds())
    except (TypeError, ValueError, IndexError, OverflowError):  # a date no calendar holds: no advice
        return None


def error_detail(raw: bytes) -> str:
    """One printable line of an error answer's message: the server's text never reaches a terminal
    as control characters (escape sequences that move the cursor, erase lines or retitle the window)."""
    raw = raw[:_MAX_ERROR_BODY]
    try:
        payload = json.loads(raw.decode("utf-8"))
        if isinstance(payload, dict) and isinstance(payload.get("message"), str):
            return _printable(payload["message"])[:500]
    except (UnicodeDecodeError, ValueError, RecursionError):
        pass
    return _printable(raw[:200].decode("utf-8", "replace"))


def _printable(text: str) -> str:
    return " ".join("".join(ch if ch.isprintable() else " " for ch in text).split())


def http_error_message(method: str, url: str, status: int, detail: str, headers: Any, attempts: int,
                       redact: Callable[[str], str] = lambda text: text) -> str:
    """The one-line error of a failed request; `redact` hides the endpoint's secrets in what the
    server wrote (a redirect's Location may echo the token or the URL's password)."""
    text = f"{method} {url} failed with HTTP {status}"
    if detail:
        text += f": {detail}"
    if status == 401:
        text += " (check the bearer token: --token-env / token=)"
    elif status == 413:
        text += " (request too large: use a smaller batch size)"
    elif 300 <= status < 400:
        location = headers.get("Location") if headers else None
        text += f" (redirect to {redact(location) if location is not None else None!r} not followed: use that URL)"
    if attempts > 1:
        text += f" (after {attempts} attempts)"
    return text
