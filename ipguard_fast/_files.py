"""Checks on files before they are parsed or written: bounded safetensors headers, output
paths (files or folders) checked before any work: they can be read back, never overwrite
an input, and can be written.

safetensors parses the whole JSON header before anything else; a file from an untrusted
party can make that header hundreds of megabytes of zero-size tensors (seconds of parsing,
gigabytes of memory, an error message as long as the header). The first 8 bytes give the
header's length, so a cap refuses such a file at once.
"""
from __future__ import annotations

import errno
import os
from pathlib import Path

from ._validate import ArgumentError

__all__ = ["check_output_folder", "check_safetensors_header", "check_writable_output", "no_json_constant",
           "not_a_file", "short_error"]


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
    """`out` as a Path for a file to write, refused before any work when its name cannot be
    read back (not UTF-8), when it is one of `inputs` (writing it would destroy what the
    command reads), when it names a folder or a special file (a FIFO, a device), or when
    its folder is missing or not writable."""
    path = _utf8_path(name, out)
    for given in inputs:
        if given is None:
            continue
        other = Path(os.fspath(given))
        same = other.exists() and path.exists() and os.path.samefile(path, other)
        if same or os.path.realpath(path) == os.path.realpath(other):   # realpath: no error on a link loop
            raise ArgumentError(name, f"{path} is also an input ({os.fspath(given)}); writing it would destroy it")
    if path.is_dir():
        raise ArgumentError(name, f"{path} is a folder; give a file name")
    if path.exists() and not path.is_file():
        raise ArgumentError(name, f"{path} is not a regular file (a FIFO, a device or a socket)")
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise ArgumentError(name, f"the folder {folder} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ArgumentError(name, f"the folder {folder} is not writable")
    return path


def check_output_folder(name: str, out: str | os.PathLike[str]) -> Path:
    """`out` as a Path for a folder the command creates or fills, refused before any work
    when it exists and is not a folder, or when it cannot be created in its nearest
    existing parent."""
    path = _utf8_path(name, out)
    if path.exists() and not path.is_dir():
        raise ArgumentError(name, f"{path} exists and is not a folder")
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise ArgumentError(name, f"{existing} is not a folder, so {path} cannot be made in it")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ArgumentError(name, f"the folder {existing} is not writable")
    return path


def _utf8_path(name: str, out) -> Path:
    text = os.fspath(out)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ArgumentError(name, f"the file name {text!r} is not valid UTF-8 and could not be read back") from None
    try:
        os.stat(text)
    except OSError as exc:   # a loop of symbolic links reads as missing to Path.exists(), so it would pass
        if exc.errno == errno.ELOOP:
            raise ArgumentError(name, f"{text} is a loop of symbolic links") from None
    return Path(text)


def short_error(exc: BaseException, limit: int = 300) -> str:
    """One line of at most `limit` characters describing `exc`.

    A parser's message can be huge, and a model's error can carry a whole (TorchScript)
    traceback, which ends with the actual message: that last line is what is kept."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    if len(lines) > 1 and any("Traceback" in line for line in lines):
        lines = lines[-1:]
    text = " ".join(" ".join(lines).split()) or type(exc).__name__
    return text if len(text) <= limit else text[:limit] + "..."


def no_json_constant(name: str) -> None:
    """json.loads' parse_constant: NaN and Infinity are no JSON, and the files here are written
    strict, so a file holding them was edited."""
    raise ValueError(f"{name} is not a JSON value")


def unique_keys(pairs: list[tuple[str, object]]) -> dict:
    """json.loads' object_pairs_hook: a key given twice is refused. json keeps the last one and
    other readers the first, so one file would say two things (a threshold of 0.99 to one tool,
    0.01 to this one); the files here are written with each key once."""
    found: dict = {}
    for key, value in pairs:
        if key in found:
            raise ValueError(f"the key {key!r} is given more than once")
        found[key] = value
    return found


def not_a_file(what: str, label: str, path: str | os.PathLike[str]) -> FileNotFoundError:
    """The error for a `what` (e.g. "model file") at `path` that is no regular file: missing, or
    something else (a folder, a device such as /dev/zero, a pipe), which "not found" would misname."""
    if os.path.lexists(path):
        return FileNotFoundError(f"{what} {label} is not a regular file (a folder, a device, a pipe or a broken link?)")
    return FileNotFoundError(f"{what} not found: {label}")
