"""Large byte buffers built in short steps, so that no single call holds the interpreter lock for long.

The server's event loop shares the interpreter lock with the threads that decode request
bodies. One C call over a 60 MB body -- ``bytearray(n)`` zero-filling it, ``b"".join`` of
its chunks, one ``b64decode`` -- holds the lock for tens of milliseconds, and the loop
(health answers included) waits that long. Here a large buffer is an anonymous memory map
(zero pages from the kernel, nothing to fill), filled a window at a time, and after each
window the thread offers the lock to whoever waits for it (:func:`let_others_run`): the
loop then waits for one window's work, not for the interpreter's switch interval.
"""
from __future__ import annotations

import base64
import mmap
import time
from typing import Iterable

__all__ = ["WINDOW", "b64decode_in_steps", "joined", "let_others_run", "zeroed"]

WINDOW = 1 << 20
"""Bytes one step handles: about a millisecond of work."""


def let_others_run() -> None:
    """Release the interpreter lock for a moment, so that a thread waiting for it (the event loop) runs now."""
    time.sleep(0)


def zeroed(size: int):
    """A writable buffer of ``size`` zero bytes: a memory map when large (no fill), else a bytearray."""
    return mmap.mmap(-1, size) if size >= WINDOW else bytearray(size)


def joined(chunks: Iterable[bytes]):
    """The chunks in one buffer, copied a chunk at a time."""
    chunks = list(chunks)
    if len(chunks) == 1:
        return chunks[0]
    out, at = zeroed(sum(len(chunk) for chunk in chunks)), 0
    for chunk in chunks:
        out[at:at + len(chunk)] = chunk
        at += len(chunk)
        if at % WINDOW < len(chunk):
            let_others_run()
    return out


def b64decode_in_steps(text, size: int, window: int = WINDOW):
    """Standard base64 (with padding) of ``size`` decoded bytes, decoded ``window`` characters at a time.

    Raises ValueError (binascii.Error included) for anything but base64 of exactly ``size`` bytes.
    """
    window -= window % 4
    out, at = zeroed(size), 0
    for start in range(0, len(text), window):
        chunk = bytes(text[start:start + window])
        if start + window < len(text) and b"=" in chunk:
            raise ValueError("padding before the end")
        piece = base64.b64decode(chunk, validate=True)
        if at + len(piece) > size:
            raise ValueError(f"it decodes to more than {size} bytes")
        out[at:at + len(piece)] = piece
        at += len(piece)
        let_others_run()
    if at != size:
        raise ValueError(f"it decodes to {at} bytes, not {size}")
    return out
