"""protect's pool kept in its cache, so that an interrupted protect loses no finished search.

The pool (pool.extract_pool) is one extraction per start kind and k, a "part" of several
thousand boundary searches. With a cache folder (protect's cache_dir) each finished part is
kept as a fingerprint file (fingerprints.py: safetensors and hashed JSON, read back by
FingerprintSet.load), and the part still running keeps extract_fingerprints' own checkpoint
(search/checkpoint.py: every finished candidate, every checkpoint_every seconds and on
Ctrl-C), until it finishes and the checkpoint is removed. Both live in the references'
folder (cache.py: ``cache_dir/<reference key>/``) and are recorded in its authenticated
manifest (cache_manifest.py), so a rerun loads the finished parts, resumes the interrupted
one where it stopped (extract's resume gives what an uninterrupted search gives) and ends
with the fingerprints and threshold of an uninterrupted run. Fingerprint files and
checkpoints rather than a format of this module's: FingerprintSet.load checks a part's
layout, labels and pixel box, run_extraction resumes a checkpoint and re-runs float32
acceptance on every image it claims, and the cache checks the bytes; nothing is unpickled.

A file is used only when the manifest's MAC vouches for its bytes and it is a regular file
(a tampered, swapped or linked one is re-extracted with a ReferenceCacheWarning, refused with
a read-only cache). The folder's key covers the owner's architecture, code and weights, the
data and the seed; a part's file is named by a digest of the rest it depends on: its k, seed,
size, labels and start (the SHA-256 of its start images), the search options, the device
type and the number of torchrun ranks, so that a changed setting never reuses a stale part.

Under torchrun (whose ranks share the cache folder, as they share the references) every rank
reads a finished part and uses it only when every rank could, so that the ranks always
extract the same parts together (a rank that used its copy alone would wait for the others
in another part); rank 0 writes. Extract's checkpoints run in one process only, so under
torchrun an interrupted part restarts.
"""
from __future__ import annotations

import hashlib
import json
import tempfile
import warnings
from pathlib import Path

import torch
from torch import nn

from .._validate import ArgumentError
from ..fingerprints import FingerprintFileError, FingerprintSet, state_dict_sha256
from ..modules import module_device
from ..search.api import run_extraction
from ..search.config import ExtractConfig
from ..search.distributed import communicator
from .cache import CacheLocation, ReferenceCache, ReferenceCacheWarning
from .cache_key import reference_cache_key
from .cache_manifest import UntrustedFile
from .config import ProtectConfig

__all__ = ["PoolStore", "part_name", "pool_store"]

CHECKPOINT = ".checkpoint"   # a part's checkpoint is its name + this
_RUN_OPTIONS = ("init", "device", "progress")   # extract_fingerprints' keywords that are no ExtractConfig field


def pool_store(owner: nn.Module, data, config: ProtectConfig, cache: CacheLocation | None,
               key: str | None) -> PoolStore | None:
    """The pool's store in `cache`'s folder of references `key` (None: the key protect's
    references would have, for a caller who gave their own), or None without a cache folder
    (nothing is written) or when the caller's search options name a checkpoint of their own."""
    if cache is None or cache.folder is None or "checkpoint" in config.search:
        return None
    key = key or reference_cache_key(owner, data, config)
    store = ReferenceCache(cache.folder, key=key, key_file=cache.key_file, readonly=cache.readonly,
                           label="pool cache")
    return PoolStore(store, state_dict_sha256(owner))


class PoolStore:
    """Each part of the pool loaded from the cache, or extracted (resumed from its checkpoint
    when one is there) and kept; `counts` says how many of each."""

    def __init__(self, cache: ReferenceCache, owner_sha256: str):
        self.cache, self.owner_sha256 = cache, owner_sha256
        self.counts = {"cached": 0, "resumed": 0, "extracted": 0}

    def part(self, owner: nn.Module, settings: dict) -> FingerprintSet:
        """extract_fingerprints(owner, **settings), from the cache when a trusted copy is there."""
        name = part_name(settings, module_device(owner).type)
        comm = communicator()
        found = self._load(name, settings)
        if comm.world > 1 and not all(comm.exchange(found is not None)):
            found = None   # every rank extracts the part, or none does
        if found is not None:
            self.counts["cached"] += 1
            return found
        with tempfile.TemporaryDirectory(prefix="ipguard-pool-") as folder:
            fps = self._extract(owner, settings, name, Path(folder) / "part.checkpoint" if comm.world == 1 else None)
            self.counts["extracted"] += 1
            if comm.rank == 0 and not self.cache.readonly:
                self.cache.save_bytes(name, _file_bytes(fps, Path(folder) / "part.safetensors"))
                self.cache.remove(name + CHECKPOINT)
        return fps

    def _extract(self, owner: nn.Module, settings: dict, name: str, checkpoint: Path | None) -> FingerprintSet:
        """The part extracted, resumed from its cached checkpoint when a trusted one is there
        (`checkpoint`: a private file for it, None under torchrun)."""
        data = None if checkpoint is None else self.cache.load_verified(name + CHECKPOINT, bytes, "re-extracted")
        if data is not None:
            checkpoint.write_bytes(data)
        writer = lambda data: self.cache.save_bytes(name + CHECKPOINT, data)  # noqa: E731
        try:
            fps = _run(owner, settings, checkpoint, writer)
        except ArgumentError as exc:   # a checkpoint the search cannot resume (it says why)
            if exc.argument != "checkpoint" or data is None:
                raise
            warnings.warn(f"pool cache: {self.cache.path(name + CHECKPOINT)}: {exc.problem}; re-extracted",
                          ReferenceCacheWarning, stacklevel=2)
            checkpoint.unlink()
            return _run(owner, settings, checkpoint, writer)
        self.counts["resumed"] += data is not None
        return fps

    def _load(self, name: str, settings: dict) -> FingerprintSet | None:
        def read(data: bytes) -> FingerprintSet:
            with tempfile.TemporaryDirectory(prefix="ipguard-pool-") as folder:
                path = Path(folder) / "part.safetensors"
                path.write_bytes(data)
                try:
                    fps = FingerprintSet.load(path)
                except FingerprintFileError:
                    raise UntrustedFile("is not a readable fingerprint file") from None
            found = (fps.meta.get("model_sha256"), fps.meta.get("k"), fps.meta.get("seed"), fps.requested)
            if found != (self.owner_sha256, float(settings["k"]), settings["seed"], settings["n"]):
                raise UntrustedFile("holds another part of the pool (its owner, k, seed or size differ)")
            return fps

        return self.cache.load_verified(name, read, "re-extracted")


def part_name(settings: dict, device_type: str) -> str:
    """A part's file name: its k and start kind, and a digest of everything it depends on
    beyond the folder's key (settings with the start images as their SHA-256, the device
    type, the number of ranks)."""
    start = settings.get("init")
    plain = {name: _plain(value) for name, value in settings.items() if name != "progress"}
    text = json.dumps({"format": "ipguard_fast-pool-part-v1", **plain, "device_type": device_type,
                       "world": communicator().world}, sort_keys=True, default=repr)
    kind = "data" if isinstance(start, torch.Tensor) else str(start)
    return f"pool-k{float(settings['k']):g}-{kind}-{hashlib.sha256(text.encode()).hexdigest()[:32]}"


def _plain(value):
    if isinstance(value, torch.Tensor):
        tensor = value.detach().to("cpu", torch.float32).contiguous()
        return f"tensor {tuple(tensor.shape)} {hashlib.sha256(tensor.numpy().tobytes()).hexdigest()}"
    return value


def _run(owner: nn.Module, settings: dict, checkpoint: Path | None, writer) -> FingerprintSet:
    """extract_fingerprints(owner, **settings) with a checkpoint handed to `writer`."""
    settings = dict(settings)
    run = {name: settings.pop(name) for name in _RUN_OPTIONS if name in settings}
    return run_extraction(owner, ExtractConfig(**settings), **run, checkpoint=checkpoint,
                          checkpoint_writer=writer).fingerprints


def _file_bytes(fps: FingerprintSet, path: Path) -> bytes:
    """The fingerprint file's bytes (FingerprintSet.save, through a private file)."""
    fps.save(path)
    return path.read_bytes()
