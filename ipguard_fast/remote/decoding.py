"""A labels request's body to images, in steps short enough that the server's event loop keeps running.

The server decodes in worker threads, but a thread running one long C call (``json.loads``
of 60 MB, one ``b64decode`` of it) holds the interpreter lock for its whole length -- a
quarter to half a second -- and the event loop, health answers included, waits that long.
So a body is never handed whole to one such call:

- a body up to ``SMALL_BODY`` bytes is parsed by ``json.loads`` at once (a few ms at most);
- a larger one must be what a labels request is: a little JSON around one long ``data``
  string. The long string is cut out by searching for quotes (``bytes.find``, in windows),
  the rest -- at most ``MAX_STRUCTURE`` bytes -- is parsed by ``json.loads`` with a
  placeholder where the string was, and the string itself is checked and base64-decoded
  window by window (buffers.py, which also builds every large buffer without one long
  copy). A large body that is mostly JSON structure (long lists, deep nesting, many keys)
  is refused before it is parsed: parsing it would hold the lock and make objects many
  times its size.

Long strings may use one escape, ``\\/`` (some JSON encoders escape every slash); any other
backslash in them is refused, as it has no place in base64.
"""
from __future__ import annotations

import json
import secrets

import torch

from . import buffers
from .protocol import ProtocolError, decode_images

__all__ = ["MAX_STRUCTURE", "SMALL_BODY", "parse_labels_request"]

SMALL_BODY = 1 << 20
"""Bodies up to this many bytes are parsed by json.loads in one call."""

MAX_STRUCTURE = 64 * 1024
"""A larger body may hold at most this many bytes besides its long 'data' string."""


def parse_labels_request(body, *, input_shape=None, max_batch=None) -> torch.Tensor:
    """The images of a labels request body (bytes, bytearray or a memory map); ProtocolError (400/413)
    for anything else."""
    if len(body) <= SMALL_BODY:
        # bytes(): the server's joined() gives a memory map for any body over buffers.WINDOW,
        # which json.loads does not take.
        return decode_images(_loads(bytes(body)), input_shape=input_shape, max_batch=max_batch)
    start, end = _long_string(body)
    placeholder = "\0" + secrets.token_hex(8)  # no client can guess it, and JSON text cannot hold \0 raw
    payload = _loads(bytes(body[:start]) + json.dumps(placeholder).encode() + bytes(body[end + 1:]))
    if not isinstance(payload, dict) or payload.get("data") != placeholder:
        raise ProtocolError("a request over 1 MiB must be a labels request whose long string is 'data'")
    payload["data"] = _unescaped(body, start + 1, end)
    return decode_images(payload, input_shape=input_shape, max_batch=max_batch)


def _unescaped(body, start: int, end: int) -> memoryview:
    """The raw text of ``body[start:end]`` (a long string) with ``\\/`` read as ``/``, a window at a
    time; any other backslash is refused."""
    if _find(body, b"\\", start, end) < 0:
        return memoryview(body)[start:end]
    out, size = buffers.zeroed(end - start), 0
    while start < end:
        stop = min(end, start + buffers.WINDOW)
        if body[stop - 1] == 0x5C and stop < end:
            stop += 1  # keep an escape whole
        piece = bytes(body[start:stop]).replace(b"\\/", b"/")
        if b"\\" in piece:
            raise ProtocolError("'data' is not valid base64: it holds a backslash")
        out[size:size + len(piece)] = piece
        size, start = size + len(piece), stop
        buffers.let_others_run()
    return memoryview(out)[:size]


def _loads(text: bytes):
    try:
        return json.loads(text)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        reason = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)[:200]
        raise ProtocolError(f"request body is not valid JSON: {reason}") from None


def _long_string(body) -> tuple[int, int]:
    """The positions of the opening and closing quotes of the body's one string longer than what
    is left of MAX_STRUCTURE; ProtocolError when there is none or when the rest is too large."""
    limit = min(len(body), MAX_STRUCTURE)
    position, inside = 0, None  # inside: where the string being read opened
    while True:
        quote = body.find(b'"', position, limit)
        if quote < 0:
            break
        if inside is None:
            inside = quote
        elif not _escaped(body, quote, inside):
            inside = None
        position = quote + 1
    if inside is None:
        raise ProtocolError(f"a request over 1 MiB may hold at most {MAX_STRUCTURE} bytes besides its base64 "
                            "'data' string")
    end = _find(body, b'"', inside + 1)
    if end < 0:
        raise ProtocolError("request body is not valid JSON: a string is never closed")
    if body[end - 1] == 0x5C:  # a backslash before the quote, which base64 never holds
        raise ProtocolError("'data' is not valid base64: it holds a backslash")
    if inside + 1 + len(body) - end > MAX_STRUCTURE:
        raise ProtocolError(f"a request over 1 MiB may hold at most {MAX_STRUCTURE} bytes besides its base64 "
                            "'data' string")
    return inside, end


def _escaped(body, quote: int, opened: int) -> bool:
    """Whether the quote at ``quote`` is escaped (an odd run of backslashes before it)."""
    run = 0
    while quote - 1 - run > opened and body[quote - 1 - run] == 0x5C:
        run += 1
    return run % 2 == 1


def _find(body, needle: bytes, start: int, end: int | None = None) -> int:
    """``body.find(needle, start, end)`` a window at a time, so no one call scans the whole body."""
    end = len(body) if end is None else end
    while start < end:
        found = body.find(needle, start, min(end, start + buffers.WINDOW))
        if found >= 0:
            return found
        start += buffers.WINDOW
        buffers.let_others_run()
    return -1
