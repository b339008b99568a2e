"""Reference models cached on disk, one safetensors file each (never pickle), authenticated.

``folder/<key>/`` holds the references of one key (cache_key.py: the owner's architecture
and weights, the data, the recipe, the seed, the versions) and a manifest that records
each file's SHA-256 and size under a MAC made with a local key (cache_manifest.py). A
cached model is used only when the manifest's MAC holds and the file is a regular file
(no link, folder or FIFO) whose bytes hash as recorded, load strictly into the skeleton
the caller makes (a copy of the owner, or the generic model) and are all finite; the
bytes hashed are the bytes loaded, never the path read twice.

Anything else -- a file edited, swapped, linked, missing from the manifest or recorded
but missing, a forged manifest -- is rebuilt with a ReferenceCacheWarning naming it (a
folder in a file's place is left alone and the rebuilt model is not cached), or, with
``readonly=True``, refused with an ArgumentError naming it. A read-only cache never
writes: references it does not hold are built in memory.
"""
from __future__ import annotations

import hashlib
import os
import re
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors
from torch import nn

from .._validate import ArgumentError
from ..remote.keystore import progress_key
from .cache_key import data_digest, reference_cache_key
from .cache_manifest import (MANIFEST, UntrustedFile, locked, mac_key, read_manifest, read_regular, remove_record,
                             write_record)

__all__ = ["CacheLocation", "ReferenceCache", "ReferenceCacheWarning", "cache_secret", "check_cache_dir",
           "data_digest", "reference_cache_key"]


class ReferenceCacheWarning(UserWarning):
    """A cached reference (or the manifest) was not trusted and is rebuilt, or was not cached."""


@dataclass(frozen=True)
class CacheLocation:
    """Where protect keeps its reference models: `folder` (None: in memory only), the file of
    the key that authenticates its manifests (`key_file`, None: the progress files' key) and
    whether it is `readonly` (protect's cache_dir, cache_key_file, cache_readonly)."""

    folder: Any = None
    key_file: Any = None
    readonly: bool = False


class ReferenceCache:
    """``folder/<key>/<name>.safetensors`` for each reference, vouched for by the folder's
    manifest. ``folder=None`` caches nothing. ``key_file``: the local key's file (None: the
    key store's default, see remote/keystore.py). ``readonly``: refuse what fails instead
    of rebuilding it, and write nothing. ``argument`` and ``label``: how a refusal names
    the folder's argument and how a warning names the cache (evaluate's suspects are
    cached the same way, evaluation/suspect_cache.py)."""

    def __init__(self, folder, *, key: str, key_file=None, readonly: bool = False, argument: str = "cache_dir",
                 label: str = "reference cache"):
        self.key, self.readonly, self.argument, self.label = key, bool(readonly), argument, label
        folder = check_cache_dir(folder, readonly=self.readonly, argument=argument)
        self.folder = None if folder is None else folder / key
        self._mac = None if folder is None else mac_key(cache_secret(key_file))
        self._warned: set[str] = set()

    def path(self, name: str) -> Path | None:
        if self.folder is None:
            return None
        return self.folder / (re.sub(r"[^A-Za-z0-9_.-]+", "_", name) + ".safetensors")

    def load(self, name: str, skeleton: Callable[[], nn.Module]) -> nn.Module | None:
        """The cached model `name`, or None when it is not cached or not trusted (then rebuilt)."""
        return self.load_verified(name, lambda data: _model_from(data, skeleton))

    def load_verified(self, name: str, read: Callable[[bytes], Any], action: str = "rebuilt") -> Any:
        """`read` of the cached file `name`'s bytes once the manifest vouches for them (`read`
        raises UntrustedFile for a content it refuses), or None when it is not cached or not
        trusted (then a warning says it is `action`; refused when read-only)."""
        path = self.path(name)
        if path is None or not os.path.lexists(self.folder):
            return None
        try:
            _check_folder(self.folder)
            with locked(self.folder, exclusive=False):
                data = self._verified(path)
            return None if data is None else read(data)
        except UntrustedFile as exc:
            self._distrust(path, str(exc), action)
            return None

    def save(self, name: str, model: nn.Module) -> None:
        """Cache `model` as `name` (nothing for a read-only cache; a warning when it cannot)."""
        path = self.path(name)
        if path is None or self.readonly:
            return
        with torch.no_grad():
            # Clones: tied weights are saved under each of their names, so a strict load fills them all.
            tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}
        try:
            _check_finite(tensors)
        except UntrustedFile as exc:
            self._warn(f"{self.label}: {path}: {exc}; {name} is not cached")
            return
        self.save_bytes(name, save_safetensors(tensors, metadata={"name": name}))

    def save_bytes(self, name: str, data: bytes) -> None:
        """Cache `data` as the file `name` and record it in the manifest (nothing for a
        read-only cache; a warning when it cannot)."""
        path = self.path(name)
        if path is None or self.readonly:
            return
        try:
            if os.path.lexists(self.folder):
                _check_folder(self.folder)
            if os.path.isdir(path) and not os.path.islink(path):
                raise UntrustedFile("is a directory (left alone)")
            self.folder.mkdir(parents=True, exist_ok=True)
            with _pinned(self.folder) as folder:
                write_record(folder, self.key, self._mac, path.name, data)
        except (OSError, UntrustedFile) as exc:
            self._warn(f"{self.label}: {path}: {exc}; {name} is not cached")

    def remove(self, name: str) -> None:
        """The file `name` and its record removed (nothing for a read-only cache; a warning when it cannot)."""
        path = self.path(name)
        if path is None or self.readonly or not os.path.lexists(self.folder):
            return
        try:
            with _pinned(self.folder) as folder:
                remove_record(folder, self.key, self._mac, path.name)
        except (OSError, UntrustedFile) as exc:
            self._warn(f"{self.label}: {path}: {exc}; not removed")

    def _verified(self, path: Path) -> bytes | None:
        try:
            files = read_manifest(self.folder, self.key, self._mac)
        except UntrustedFile as exc:
            self._distrust(self.folder / MANIFEST, str(exc), "the files it lists are rebuilt")
            files = {}
        entry = files.get(path.name)
        try:
            data = read_regular(path, 0 if entry is None else entry["size"])
        except FileNotFoundError:
            if entry is None:
                return None   # never cached
            raise UntrustedFile("is missing (the manifest records it)") from None
        if entry is None:
            raise UntrustedFile("is not recorded in the manifest")
        if len(data) != entry["size"]:
            raise UntrustedFile(f"is not the size the manifest records ({entry['size']} bytes)")
        if hashlib.sha256(data).hexdigest() != entry["sha256"]:
            raise UntrustedFile("its SHA-256 does not match the manifest")
        return data

    def _distrust(self, path: Path, reason: str, action: str) -> None:
        if self.readonly:
            raise ArgumentError(self.argument, f"{path} {reason}; refused: the cache is read-only")
        self._warn(f"{self.label}: {path} {reason}; {action}")

    def _warn(self, message: str) -> None:
        if message not in self._warned:   # once per cache: a bad manifest concerns every file
            self._warned.add(message)
            warnings.warn(message, ReferenceCacheWarning, stacklevel=4)


def _model_from(data: bytes, skeleton: Callable[[], nn.Module]) -> nn.Module:
    """The skeleton with the weights in `data`: every name, shape and dtype as the skeleton's, all finite."""
    try:
        tensors = load_safetensors(data)
    except (SafetensorError, ValueError, RuntimeError, TypeError):   # not MemoryError: that is no bad file
        raise UntrustedFile("is not a readable safetensors file") from None
    _check_finite(tensors)
    with torch.random.fork_rng(devices=[]):   # a skeleton's fresh weights are overwritten: no draw of the caller's
        model = skeleton()
    expected = model.state_dict()
    if set(tensors) != set(expected):
        raise UntrustedFile("does not hold the reference's weights (other names)")
    for name, tensor in tensors.items():
        if tensor.shape != expected[name].shape or tensor.dtype != expected[name].dtype:
            raise UntrustedFile(f"does not fit the reference's architecture ({name})")
    model.load_state_dict(tensors, strict=True)
    return model.eval()


def _check_finite(tensors: dict[str, torch.Tensor]) -> None:
    for name, tensor in tensors.items():
        if (tensor.is_floating_point() or tensor.is_complex()) and not bool(torch.isfinite(tensor).all()):
            raise UntrustedFile(f"holds non-finite weights ({name})")


def _check_folder(folder: Path) -> None:
    """The key's folder: made by the cache, so a link, a file or another user's folder in its
    place is not trusted (whoever can write the cache's folder could rename this user's key
    folder away and put one of their own, with links in it, in its place)."""
    if os.path.islink(folder):
        raise UntrustedFile(f"is in a folder that is a symbolic link ({folder})")
    if not os.path.isdir(folder):
        raise UntrustedFile(f"is in {folder}, which is not a folder")
    owner = os.lstat(folder).st_uid
    if os.name == "posix" and owner != os.geteuid():
        raise UntrustedFile(f"is in {folder}, which another user (uid {owner}) owns")


@contextmanager
def _pinned(folder: Path) -> Iterator[Path]:
    """The key's folder opened once, no link followed, and checked as _check_folder checks it;
    the path to work in is /proc/self/fd/N, the folder opened, where Linux has it: whoever can
    write the cache's folder could swap the key's folder for a link after a check by name, and
    the manifest was then written into another folder of the user's."""
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        _check_folder(folder)   # says what is there instead (a link, a file) ...
        raise                   # ... or the open's own error
    try:
        owner = os.fstat(fd).st_uid
        if os.name == "posix" and owner != os.geteuid():
            raise UntrustedFile(f"is in {folder}, which another user (uid {owner}) owns")
        opened = Path(f"/proc/self/fd/{fd}")
        yield opened if opened.is_dir() else folder
    finally:
        os.close(fd)


def check_cache_dir(folder, *, readonly: bool = False, argument: str = "cache_dir") -> Path | None:
    """`folder` as a Path (None: no cache), refused when it is not a folder, or (unless
    `readonly`) cannot be created or written. Checked before any work."""
    if folder is None:
        return None
    if not isinstance(folder, (str, os.PathLike)) or not os.fspath(folder):
        raise ArgumentError(argument, f"must be a folder path or None, got {folder!r}")
    path = Path(folder)
    if os.path.lexists(path) and not path.is_dir():
        raise ArgumentError(argument, f"{path} exists and is not a folder" + (" (a broken link)" * path.is_symlink()))
    if readonly:
        return path
    existing = path
    while not os.path.lexists(existing) and existing.parent != existing:
        existing = existing.parent
    if not existing.is_dir():
        raise ArgumentError(argument, f"cannot create {path}: {existing} is not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ArgumentError(argument, f"{existing} is not writable (a read-only cache: cache_readonly=True, "
                                      "ipguard protect --cache-readonly)")
    return path


def cache_secret(key_file=None) -> bytes:
    """The manifests' key: the progress files' key store (`key_file`, else
    $IPGUARD_FAST_PROGRESS_KEY, else its default file), created on first use."""
    try:
        return progress_key(key_file).secret
    except ArgumentError as exc:
        if exc.argument != "key_file":
            raise
        problem = exc.problem.split("; give another key file")[0]
        raise ArgumentError("cache_key_file", f"{problem}; give another key file (cache_key_file=, ipguard protect "
                                              "--cache-key FILE), or cache nothing (cache_dir=None, --no-cache)") from None
