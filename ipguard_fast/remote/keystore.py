"""The secret key that authenticates progress files: where it lives, how it is made, what is refused.

A progress file is MACed with a key that never leaves this machine (progress.py), so a
hand-edited or forged file is refused. The key comes, first match wins, from

1. ``key_file`` when the caller names one (``ipguard verify --progress-key FILE``);
2. the environment variable ``IPGUARD_FAST_PROGRESS_KEY`` (the key itself, at least 32 bytes);
3. the default key file, :func:`default_key_path`:
   ``$XDG_CONFIG_HOME/ipguard_fast/progress.key``, else ``~/.config/ipguard_fast/progress.key``.

A key file that does not exist yet is created with 32 random bytes (64 hex digits), and
atomically: the key is written to a private temporary file (``O_EXCL``, mode 0600) and
fsync'd, then hard-linked into place, which never replaces an existing file. So no reader
ever sees an empty or half-written key, a process killed half-way leaves no key at all
(the next run makes one), and when several processes create the key at once, every one
ends with the first key linked.

A key file is read with a bounded read and refused when it is not a regular file (a FIFO,
a device such as /dev/null, a directory, or a link to one), is accessible to group or
others, or holds fewer than 32 or more than 4096 bytes. When the default location
cannot be used (no home folder, a read-only one), nothing falls back silently: a key
kept beside the progress file would protect nothing against whoever can write that
folder, so the call is refused with an ArgumentError naming ``key_file``.
"""
from __future__ import annotations

import os
import secrets
import stat
import tempfile
from pathlib import Path
from typing import NamedTuple

from .._validate import ArgumentError

__all__ = ["KEY_ENV", "MIN_KEY_BYTES", "ProgressKey", "default_key_path", "load_or_create_key", "progress_key"]

KEY_ENV = "IPGUARD_FAST_PROGRESS_KEY"
MIN_KEY_BYTES = 32
MAX_KEY_BYTES = 4096
_ARGUMENT = "key_file"
_HOW_TO_FIX = f"give another key file (key_file=, ipguard verify --progress-key FILE) or set {KEY_ENV}"


class ProgressKey(NamedTuple):
    """The key's bytes, and where they came from (for error messages)."""

    secret: bytes
    source: str


def default_key_path() -> Path:
    """``$XDG_CONFIG_HOME/ipguard_fast/progress.key``, else ``~/.config/ipguard_fast/progress.key``.

    Raises ArgumentError (``key_file``) when there is no absolute home folder to put it in.
    """
    config = os.environ.get("XDG_CONFIG_HOME", "")
    if not os.path.isabs(config):  # the XDG spec: a relative value is ignored
        try:
            home = Path.home()
        except (RuntimeError, KeyError):
            home = Path("")
        if not home.is_absolute():
            raise ArgumentError(_ARGUMENT, f"no home folder to keep the default progress key in; {_HOW_TO_FIX}")
        config = str(home / ".config")
    return Path(config) / "ipguard_fast" / "progress.key"


def progress_key(key_file: str | os.PathLike[str] | None = None) -> ProgressKey:
    """The progress files' key: ``key_file``, else $IPGUARD_FAST_PROGRESS_KEY, else the default key file."""
    if key_file is not None:
        if not isinstance(key_file, (str, os.PathLike)) or not os.fspath(key_file):
            raise ArgumentError(_ARGUMENT, f"must be a path or None, got {key_file!r}")
        path = Path(key_file)
        return ProgressKey(load_or_create_key(path), str(path))
    given = os.environ.get(KEY_ENV)
    if given:
        secret = given.strip().encode("utf-8")
        if len(secret) < MIN_KEY_BYTES:
            raise ArgumentError(KEY_ENV, f"holds {len(secret)} bytes; a key needs at least {MIN_KEY_BYTES} "
                                         "(e.g. the output of `python -c 'import secrets; print(secrets.token_hex(32))'`)")
        return ProgressKey(secret, KEY_ENV)
    path = default_key_path()
    return ProgressKey(load_or_create_key(path), str(path))


def load_or_create_key(path: str | os.PathLike[str]) -> bytes:
    """The key in ``path`` (surrounding whitespace stripped), created atomically when missing."""
    path = Path(path)
    key = _read(path)
    if key is None:
        _create(path)
        key = _read(path)
        if key is None:  # a name that exists but cannot be opened: a dangling link
            raise ArgumentError(_ARGUMENT, f"{path} exists but cannot be read (a broken link?); {_HOW_TO_FIX}")
    return key


def _read(path: Path) -> bytes | None:
    """The checked key in ``path``, or None when nothing is there."""
    try:
        # O_NONBLOCK: opening a FIFO must not wait for a writer before it is refused.
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ArgumentError(_ARGUMENT, f"cannot read the key file {path}: {exc.strerror}; {_HOW_TO_FIX}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ArgumentError(_ARGUMENT, f"{path} is not a regular file; a key file must be one")
        if os.name == "posix" and info.st_uid != os.geteuid():   # its owner knows the key: can forge what it MACs
            raise ArgumentError(_ARGUMENT, f"{path} belongs to another user (uid {info.st_uid}); a key file must be "
                                           "your own: delete it to have a new key made")
        if os.name == "posix" and info.st_mode & 0o077:
            raise ArgumentError(_ARGUMENT, f"{path} is open to group or others (mode {info.st_mode & 0o777:o}); "
                                           "run chmod 600 on it, or delete it to have a new key made")
        raw = _read_at_most(fd, MAX_KEY_BYTES + 1)
    finally:
        os.close(fd)
    if len(raw) > MAX_KEY_BYTES:
        raise ArgumentError(_ARGUMENT, f"{path} is longer than {MAX_KEY_BYTES} bytes: not a key file")
    key = raw.strip()
    if len(key) < MIN_KEY_BYTES:
        raise ArgumentError(_ARGUMENT, f"{path} holds {len(key)} bytes; a key needs at least {MIN_KEY_BYTES} "
                                       "(delete it to have a new one made)")
    return key


def _read_at_most(fd: int, limit: int) -> bytes:
    chunks, size = [], 0
    while size < limit:
        chunk = os.read(fd, limit - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def _create(path: Path) -> None:
    """Link a new random key into ``path`` unless another process got there first."""
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        # mkstemp opens with O_EXCL and mode 0600: nobody else can read or swap the temporary file.
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise ArgumentError(_ARGUMENT, f"cannot create the key file {path}: {exc.strerror or exc}; "
                                       f"{_HOW_TO_FIX}") from None
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(secrets.token_hex(MIN_KEY_BYTES).encode("ascii"))
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(tmp, path)  # unlike rename, never replaces a key another process linked first
        except FileExistsError:
            return
        _sync_folder(path.parent)
    except OSError as exc:
        raise ArgumentError(_ARGUMENT, f"cannot create the key file {path}: {exc.strerror or exc}; "
                                       f"{_HOW_TO_FIX}") from None
    finally:
        try:
            os.unlink(tmp)
        except OSError:
            pass


def _sync_folder(folder: Path) -> None:
    """Make the new name durable (best effort: not every platform can fsync a folder)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
