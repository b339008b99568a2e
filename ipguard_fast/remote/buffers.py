"""Large byte buffers built in short steps, so that no single call holds the interpreter lock for long.

The server's event loop shares the interpreter lock with the threads that decode request
bodies. One C call over a 60 MB body -- ``bytearray(n)`` zero-filling it, ``b"".join`` of
its chunks, one ``b64decode`` -- holds the lock for tens of milliseconds, and the loop
(health answers included) waits that long. Here a large buffer is an anonymous memory map
(zero pages from the kernel, nothing to fill), filled a window at a time, and after each
window the thread hands the lock to whoever waits for it (:func:`let_others_run`): the
loop then waits for one window's work, not for the interpreter's switch interval.

Both sizes were measured in the soak test (tests/test_remote_soak.py, 2 cores): the loop
gives up the lock at every socket call (accept, recv, send) and must win it back each time,
so while a worker decodes, each of the loop's calls waits for the worker's current window.
With 1 MiB windows (5-6 ms for one ``replace`` of an escaped body) and ``time.sleep(0)``
(which releases the lock and usually takes it straight back before the waiting loop
wakes), one accept burst stalled health for 100-250 ms; 256 KiB windows and a real 100 us
pause took the soak's health p99 from 9-137 ms (3 of 8 runs over 100 ms) to 14-54 ms (0 of
8; benchmarks/results/soak-health-2026-12-07/). A 26 MB body decodes 9% slower.
"""
from __future__ import annotations

import base64
import mmap
import time
from typing import Iterable

__all__ = ["WINDOW", "b64decode_in_steps", "joined", "let_others_run", "zeroed"]

WINDOW = 1 << 18
"""Bytes one step handles: a quarter of what one escaped MiB took to unescape (5-6 ms), the slowest step."""

_PAUSE = 1e-4
"""Seconds a worker sleeps between steps: long enough for a waiting thread to wake and take the lock."""


def let_others_run() -> None:
    """Hand the interpreter lock to a thread waiting for it (the event loop), so that it runs now.

    ``time.sleep(0)`` would release the lock and, most often, take it back before the waiting
    thread is scheduled; a real pause lets that thread win it."""
    time.sleep(_PAUSE)


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
