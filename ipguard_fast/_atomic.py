"""Atomic file writes: a temp file beside the target, fsync'd, then one os.replace.

An interrupted write leaves the old file or the new one, never half of one. The bytes go
through the descriptor that created the temp file (O_EXCL, this process's own), never through
its name: a folder others can write (a shared cache, an output folder) is one where the name
can be swapped for a link to another file between its creation and a reopen, and a reopen
by name then wrote the cache's bytes over that file.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import BinaryIO, Callable


def atomic_save(path: str | os.PathLike[str], write: Callable[[BinaryIO], None]) -> Path:
    """Call write(handle) with the open binary handle of a temp file next to `path`, make it
    durable, move it into place.

    The temp file's name carries the writer's process id: a writer killed outright (kill -9)
    cannot remove its own, so the next save of the same file removes the temp files of
    processes that no longer exist."""
    path = Path(path)
    directory, prefix, suffix = _temp_names(path)
    _remove_orphans(directory, prefix, suffix)
    fd, tmp_name = tempfile.mkstemp(prefix=f"{prefix}{os.getpid()}-", suffix=suffix, dir=directory)
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)   # a rename moves whatever is at the name; it follows no link
    except BaseException:
        if os.path.lexists(tmp_name):
            os.remove(tmp_name)
        raise
    return path


def remove_saved(path: str | os.PathLike[str]) -> None:
    """Remove `path`, a file atomic_save wrote (if it is there), and the temp files that writers of
    it killed outright left beside it: a file that is done with (a checkpoint once its run has
    finished) has no next save to remove them."""
    path = Path(path)
    if os.path.lexists(path):
        os.remove(path)
    _remove_orphans(*_temp_names(path))


def _temp_names(path: Path) -> tuple[Path, str, str]:
    """(folder, prefix, suffix) of atomic_save's temp files for `path`."""
    directory = path.parent if str(path.parent) else Path(".")
    # Keep the real suffix last: some writers (torch.export.save) check it.
    return directory, f".{path.stem}.", f".tmp{path.suffix}"


def _remove_orphans(directory: Path, prefix: str, suffix: str) -> None:
    """Remove `prefix<pid>-*suffix` temp files whose writing process is gone."""
    try:
        names = os.listdir(directory)
    except OSError:
        return
    for name in names:
        if not (name.startswith(prefix) and name.endswith(suffix)):
            continue
        pid_text = name[len(prefix):].split("-", 1)[0]
        # Only our own spelling of a pid (ASCII digits, at most 10): someone else's file in a shared
        # folder (".x.\u00b2-...", ".x.99999999999999999999-...") is left alone and never fails the save.
        if not (pid_text.isascii() and pid_text.isdigit() and len(pid_text) <= 10) or _alive(int(pid_text)):
            continue
        try:
            os.remove(directory / name)
        except OSError:
            pass


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (OSError, OverflowError):  # e.g. permission denied: it exists; a pid no kernel gives: not ours
        return True
    return True


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    return atomic_save(path, lambda handle: handle.write(data))
