"""Atomic file writes: a temp file beside the target, fsync'd, then one os.replace.

An interrupted write leaves the old file or the new one, never half of one.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable


def atomic_save(path: str | os.PathLike[str], write: Callable[[str], None]) -> Path:
    """Call write(tmp_path) on a temp file next to `path`, make it durable, move it into place."""
    path = Path(path)
    directory = path.parent if str(path.parent) else Path(".")
    # Keep the real suffix last: some writers (torch.export.save) check it.
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}", dir=directory)
    os.close(fd)
    try:
        write(tmp_name)
        with open(tmp_name, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        if os.path.exists(tmp_name):
            os.remove(tmp_name)
        raise
    return path


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    return atomic_save(path, lambda tmp: Path(tmp).write_bytes(data))
