"""The resumable progress file of a remote verification: every answered batch, saved as it comes.

It is bound to its run: the fingerprints (a digest of their images and labels), the batch
size and the endpoint must match, and an HMAC over the whole content, keyed with a secret
that never leaves this machine, must verify -- so answers are never reused for another
run, and a hand-edited or forged file (labels changed to flip a verdict) is refused, not
warned about. Rewritten atomically after each batch, so an interrupted run resumes
without re-asking (and re-paying for) batches already answered.

The key comes from keystore.py: the ``key_file`` argument, else the environment variable
IPGUARD_FAST_PROGRESS_KEY, else ~/.config/ipguard_fast/progress.key (made once, atomically,
readable by its owner only).
"""
from __future__ import annotations

import hashlib
import hmac
import json
import math
import os
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from .._atomic import atomic_write_bytes
from .._files import short_error
from .._hashing import tensors_sha256
from .._validate import ArgumentError
from ..fingerprints import FingerprintSet
from .keystore import progress_key

__all__ = ["PROGRESS_FORMAT", "PROGRESS_VERSION", "ProgressFile", "ProgressFileError", "check_progress_path",
           "fingerprints_digest"]

PROGRESS_FORMAT = "ipguard_fast.remote.progress"
PROGRESS_VERSION = 2
MAX_PROGRESS_BYTES = 256 * 1024 * 1024


class ProgressFileError(ValueError):
    """A progress file belongs to other fingerprints or settings, or is unreadable."""


def fingerprints_digest(fingerprints: FingerprintSet) -> str:
    """SHA-256 identifying a fingerprint set's queries and answers (images and owner labels)."""
    items = (("images", fingerprints.images), ("labels", fingerprints.labels))
    return tensors_sha256(items, b"ipguard_fast.remote.progress-v1").hexdigest()


def public_url(url: str) -> str:
    """``url`` without user:password, for storing in the progress file."""
    parts = urlsplit(url)
    netloc = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def check_progress_path(path) -> None:
    """Refuses a progress file's path that is empty or in a folder that does not exist or takes
    no new file (else the run queries a batch, then fails to save it). Whether a folder takes a
    file is tried, not read from its mode: root passes every permission check, yet /proc or a
    read-only mount refuse the file; the probe, an empty file of its own name, is removed at once."""
    if not isinstance(path, (str, os.PathLike)) or not os.fspath(path).strip():
        raise ArgumentError("progress_file", f"must be a non-empty path, got {path!r}")
    folder = Path(path).absolute().parent
    if not folder.is_dir():
        raise ArgumentError("progress_file", f"its folder {folder} does not exist")
    try:
        handle, probe = tempfile.mkstemp(prefix=".ipguard-progress-probe-", dir=folder)
    except OSError as exc:
        raise ArgumentError("progress_file", f"its folder {folder} takes no new file ({short_error(exc)})") from None
    os.close(handle)
    os.unlink(probe)


class ProgressFile:
    """The answered batches of one run: `load()` what an earlier run saved, `save(done)` after each batch.

    ``key_file``: where the MAC key is kept (see keystore.py; None: its documented default).
    """

    def __init__(self, path, fingerprints: FingerprintSet, batch_size: int, url: str,
                 key_file: str | os.PathLike[str] | None = None) -> None:
        self.path = Path(path)
        if key_file is not None and os.path.realpath(key_file) == os.path.realpath(path):  # before it is made
            raise ArgumentError("key_file", f"{os.fspath(key_file)} is the progress file itself; give another file")
        self.key = progress_key(key_file)
        self.digest = fingerprints_digest(fingerprints)
        self.n, self.batch_size = len(fingerprints), batch_size
        self.num_batches = math.ceil(self.n / batch_size)
        self.num_classes = fingerprints.num_classes
        self.url = url

    def load(self) -> dict[int, list[int]]:
        if not self.path.exists():
            return {}
        path = self.path
        if not path.is_file():  # a FIFO would block the read, a device never end it
            raise ProgressFileError(f"{path} is not a regular file; a progress file must be one")
        try:
            if path.stat().st_size > MAX_PROGRESS_BYTES:
                raise ProgressFileError(f"{path} is refused: larger than any progress file of this run")
            state = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
            if isinstance(exc, ProgressFileError):
                raise
            raise ProgressFileError(f"cannot read {path} as a progress file: {str(exc)[:200]}; if it is this "
                                    "run's progress file, delete it to start over, else give another path") from None
        if not isinstance(state, dict) or state.get("format") != PROGRESS_FORMAT:
            raise ProgressFileError(f"{path} is not an ipguard_fast progress file")
        if state.get("version") != PROGRESS_VERSION:
            raise ProgressFileError(f"{path} has progress format version {state.get('version')!r}, "
                                    f"this library reads {PROGRESS_VERSION}")
        if state.get("fingerprints_sha256") != self.digest:
            raise ProgressFileError(
                f"{path} was written for other fingerprints (sha256 {state.get('fingerprints_sha256')!r}, these "
                f"are {self.digest!r}); use another progress file or delete it")
        if state.get("batch_size") != self.batch_size:
            raise ProgressFileError(f"{path} was written with batch_size={state.get('batch_size')!r}; resume with "
                                    f"that batch size, or delete the file to start over with {self.batch_size}")
        if state.get("endpoint") != public_url(self.url):
            raise ProgressFileError(f"{path} holds answers from {str(state.get('endpoint'))[:200]!r}, not from "
                                    f"{public_url(self.url)}; use another progress file or delete it")
        stored = state.pop("mac", None)
        if not isinstance(stored, str) or not hmac.compare_digest(stored, self._mac(state)):
            raise ProgressFileError(f"{path} failed its integrity check: it was edited, or written with another "
                                    f"key than {self.key.source}; delete it to start over")
        return self._batches(state.get("batches"))

    def _batches(self, batches) -> dict[int, list[int]]:
        if not isinstance(batches, dict):
            raise ProgressFileError(f"{self.path}: 'batches' must be an object")
        done: dict[int, list[int]] = {}
        for key, labels in batches.items():
            if not key.isdigit() or int(key) >= self.num_batches:
                raise ProgressFileError(f"{self.path}: batch index {key!r} is not in [0, {self.num_batches})")
            index = int(key)
            expected = min(self.batch_size, self.n - index * self.batch_size)
            if not isinstance(labels, list) or len(labels) != expected or not all(
                    isinstance(v, int) and not isinstance(v, bool) and v >= 0
                    and (self.num_classes is None or v < self.num_classes) for v in labels):
                raise ProgressFileError(f"{self.path}: batch {index} must be {expected} labels in "
                                        f"[0, {self.num_classes})")
            done[index] = labels
        return done

    def save(self, done: dict[int, list[int]]) -> None:
        state = {
            "format": PROGRESS_FORMAT,
            "version": PROGRESS_VERSION,
            "fingerprints_sha256": self.digest,
            "num_fingerprints": self.n,
            "batch_size": self.batch_size,
            "num_batches": self.num_batches,
            "batches_done": len(done),
            "endpoint": public_url(self.url),
            "updated": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "batches": {str(index): done[index] for index in sorted(done)},
        }
        state["mac"] = self._mac(state)
        atomic_write_bytes(self.path, json.dumps(state, separators=(",", ":")).encode("utf-8"))

    def _mac(self, state: dict) -> str:
        canonical = json.dumps(state, sort_keys=True, separators=(",", ":")).encode("utf-8")
        return hmac.new(self.key.secret, canonical, hashlib.sha256).hexdigest()
