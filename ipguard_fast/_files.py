"""Checks on files before they are parsed or written: bounded safetensors headers, output
paths that can be read back and never overwrite an input.

safetensors parses the whole JSON header before anything else; a file from an untrusted
party can make that header hundreds of megabytes of zero-size tensors (seconds of parsing,
gigabytes of memory, an error message as long as the header). The first 8 bytes give the
header's length, so a cap refuses such a file at once.
"""
from __future__ import annotations

import os
from pathlib import Path

__all__ = ["check_safetensors_header", "check_writable_output", "short_error"]


def check_safetensors_header(path: str | os.PathLike[str], limit: int, error: type[Exception] = ValueError,
                             what: str = "safetensors file") -> None:
    """Raise `error` when `path` cannot be a `what` or its safetensors header exceeds `limit` bytes."""
    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as handle:
            head = handle.read(8)
    except OSError as exc:
        raise error(f"{path}: cannot be read ({exc.strerror or exc})") from None
    if len(head) < 8:
        raise error(f"{path} is not a readable {what} (truncated: {size} bytes)")
    length = int.from_bytes(head, "little")
    if length > limit:
        raise error(f"{path} is not a readable {what}: its header would be {length} bytes, more than the "
                    f"{limit} allowed (refused before parsing)")
    if 8 + length > size:
        raise error(f"{path} is not a readable {what} (truncated: the header claims {length} bytes, "
                    f"the file has {size})")


def check_writable_output(name: str, out: str | os.PathLike[str], inputs=()) -> Path:
    """`out` as a Path, refused when its name cannot be read back (not UTF-8) or when it is one
    of `inputs` (writing it would destroy what the command reads)."""
    text = os.fspath(out)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"{name}: the file name {text!r} is not valid UTF-8 and could not be read back") from None
    path = Path(text)
    for given in inputs:
        if given is None:
            continue
        other = Path(os.fspath(given))
        same = other.exists() and path.exists() and os.path.samefile(path, other)
        if same or path.resolve() == other.resolve():
            raise ValueError(f"{name}: {text} is also an input ({os.fspath(given)}); writing it would destroy it")
    return path


def short_error(exc: BaseException, limit: int = 300) -> str:
    """One line of at most `limit` characters describing `exc`.

    A parser's message can be huge, and a model's error can carry a whole (TorchScript)
    traceback, which ends with the actual message: that last line is what is kept."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    if len(lines) > 1 and any("Traceback" in line for line in lines):
        lines = lines[-1:]
    text = " ".join(" ".join(lines).split()) or type(exc).__name__
    return text if len(text) <= limit else text[:limit] + "..."
