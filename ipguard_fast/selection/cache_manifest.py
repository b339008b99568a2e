"""The reference cache's manifest: each cached file's SHA-256 and size, MACed with a local key.

A cache folder is as writable as whatever shares the disk, so nothing in it is trusted
unless the manifest vouches for it: ``manifest.json`` records every file, and its MAC
(HMAC-SHA256 under a key derived from the local key store's secret, see
``remote/keystore.py``) covers the records and the cache key, so neither a record edited
without the key nor a manifest moved from another key's folder is accepted.

Writers take an exclusive ``flock`` on ``.manifest.lock``, move their file into place,
re-read the manifest, merge their record and replace it atomically, so concurrent runs
never lose each other's records and a record always matches the file it names; readers
take the lock shared, so they never see a file and a record from different writers.
Files are read with ``O_NOFOLLOW`` and a bounded read, and only regular files are read.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import hmac
import json
import os
import re
import stat
from collections.abc import Iterator
from pathlib import Path

from .._atomic import atomic_write_bytes

__all__ = ["MANIFEST", "UntrustedFile", "locked", "mac_key", "read_manifest", "read_regular", "remove_record",
           "write_record"]

MANIFEST = "manifest.json"
LOCK = ".manifest.lock"
_FORMAT = "ipguard_fast-reference-cache-manifest"
_VERSION = 1
_MAX_MANIFEST_BYTES = 8 << 20
_SHA256 = re.compile(r"[0-9a-f]{64}")
_OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)


class UntrustedFile(Exception):
    """A cache file (or the manifest) that cannot be trusted; the message says why."""


def mac_key(secret: bytes) -> bytes:
    """The manifest's MAC key: derived from the key store's secret, so a MAC made for a
    progress file never authenticates a manifest."""
    return hmac.new(secret, b"ipguard_fast reference cache manifest v1", hashlib.sha256).digest()


def read_manifest(folder: Path, key: str, mac: bytes) -> dict[str, dict]:
    """{file name: {"sha256", "size"}} from `folder`'s manifest; {} when there is none.
    Raises UntrustedFile when it is there but not a regular file, malformed, or its MAC fails."""
    try:
        raw = read_regular(folder / MANIFEST, _MAX_MANIFEST_BYTES)
    except FileNotFoundError:
        return {}
    if len(raw) > _MAX_MANIFEST_BYTES:
        raise UntrustedFile(f"is larger than {_MAX_MANIFEST_BYTES} bytes")
    try:
        document = json.loads(raw.decode("utf-8"))
        claimed = document.pop("mac")
        valid = isinstance(claimed, str) and hmac.compare_digest(claimed, _mac(document, mac))
    except (ValueError, TypeError, KeyError, AttributeError, RecursionError):
        raise UntrustedFile("is not a manifest (malformed JSON)") from None
    if not valid:
        raise UntrustedFile("its MAC does not match (edited, or made with another key)")
    if document.get("format") != _FORMAT or document.get("version") != _VERSION or document.get("key") != key:
        raise UntrustedFile("belongs to another cache folder or format")
    files = document.get("files")
    if not isinstance(files, dict) or not all(_valid_record(name, entry) for name, entry in files.items()):
        raise UntrustedFile("holds malformed records")
    return files


def write_record(folder: Path, key: str, mac: bytes, file_name: str, data: bytes) -> None:
    """Write `data` as `folder/file_name` and record it in the manifest, both under the
    exclusive lock. Raises OSError when the file or the manifest cannot be written."""
    with locked(folder, exclusive=True):
        atomic_write_bytes(folder / file_name, data)
        try:
            files = read_manifest(folder, key, mac)
        except UntrustedFile:   # replaced: its records vouch for nothing
            files = {}
        files[file_name] = {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
        _write_manifest(folder, key, mac, files)


def remove_record(folder: Path, key: str, mac: bytes, file_name: str) -> None:
    """Remove `folder/file_name` and its record from the manifest, both under the exclusive
    lock (the record first: a file without a record is never trusted). Raises OSError when
    the manifest cannot be written."""
    with locked(folder, exclusive=True):
        try:
            files = read_manifest(folder, key, mac)
        except UntrustedFile:   # replaced: there is no record to remove
            files = {}
        if files.pop(file_name, None) is not None:
            _write_manifest(folder, key, mac, files)
        if os.path.lexists(folder / file_name) and not os.path.isdir(folder / file_name):
            os.remove(folder / file_name)


@contextlib.contextmanager
def locked(folder: Path, *, exclusive: bool) -> Iterator[None]:
    """flock on the folder's lock file. A shared (reading) lock on a folder without one,
    or one that cannot be written (a read-only cache), reads without locking. Raises
    UntrustedFile when the lock file is not a regular file."""
    flags = (os.O_RDWR | os.O_CREAT if exclusive else os.O_RDONLY) | os.O_NONBLOCK   # a FIFO must not block
    try:
        fd = os.open(folder / LOCK, flags | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0), 0o600)
    except OSError:
        if exclusive:
            raise
        fd = None
    if fd is None:
        yield
        return
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise UntrustedFile(f"cannot be read safely: the lock file {LOCK} is not a regular file")
        fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        yield
    finally:
        os.close(fd)   # releases the lock


def read_regular(path: Path, limit: int) -> bytes:
    """At most `limit` + 1 bytes of `path`, which must be a regular file and not a link.
    Raises FileNotFoundError when nothing is there, UntrustedFile for anything else."""
    info = os.lstat(path)
    if stat.S_ISLNK(info.st_mode):
        raise UntrustedFile("is a symbolic link")
    if stat.S_ISDIR(info.st_mode):
        raise UntrustedFile("is a directory (left alone)")
    if not stat.S_ISREG(info.st_mode):
        raise UntrustedFile("is not a regular file")
    try:
        fd = os.open(path, _OPEN_FLAGS)   # O_NOFOLLOW: a link swapped in after lstat is not followed
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise UntrustedFile(f"cannot be opened ({exc.strerror})") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise UntrustedFile("is not a regular file")
        chunks, size = [], 0
        while size <= limit:
            chunk = os.read(fd, min(limit + 1 - size, 1 << 24))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def _write_manifest(folder: Path, key: str, mac: bytes, files: dict) -> None:
    document = {"format": _FORMAT, "version": _VERSION, "key": key, "files": files}
    document["mac"] = _mac(document, mac)
    atomic_write_bytes(folder / MANIFEST, json.dumps(document, sort_keys=True, indent=1).encode())


def _mac(document: dict, mac: bytes) -> str:
    canonical = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hmac.new(mac, canonical.encode("ascii"), hashlib.sha256).hexdigest()


def _valid_record(name, entry) -> bool:
    return (isinstance(name, str) and isinstance(entry, dict) and isinstance(entry.get("sha256"), str)
            and bool(_SHA256.fullmatch(entry["sha256"])) and isinstance(entry.get("size"), int)
            and not isinstance(entry["size"], bool) and entry["size"] >= 0)
