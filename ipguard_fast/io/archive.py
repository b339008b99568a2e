"""Zip archives (``.pt2`` and TorchScript files) read the way torch reads them, refused where readers could differ.

torch reads these archives with miniz (``caffe2/serialize/inline_container.cc``): the root
folder is the first central-directory entry's up to its first ``/``; a member is found by its
full name compared byte for byte except for ASCII case; its data starts after the local header
the central directory points at, and its sizes are the central directory's. Python's
``zipfile`` reads the same bytes differently (it cuts a name at NUL, keeps the last of two
members of one name, decodes names as cp437, shifts offsets by data in front of the archive),
so an inspection through ``zipfile`` can check one member while torch loads another.

``open_archive`` parses the archive itself and accepts only one that every reader sees alike:

- members back to back from offset 0, then the central directory, then the end records, and
  nothing else: no data before, between, after or inside members that no entry accounts for,
  no two entries on one member, no archive comment;
- names of printable UTF-8 below one root folder (no NUL or control byte, no backslash, no
  empty, ``.`` or ``..`` part), each name once even ignoring ASCII case;
- each local header agreeing with its directory entry (name, method, flags, sizes, CRC-32);
- stored or deflated data only, nothing encrypted; declared sizes, their total and the
  expansion of deflated members within ``ArchiveLimits``.

All of this is decided from the headers, before anything is inflated. Then every member is
inflated in bounded chunks to check its real size and CRC-32, and ``read`` returns one
member, refusing it unhurt when it is larger than the caller's bound.
"""
from __future__ import annotations

import os
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from .._files import not_a_file
from . import archive_headers as headers
from .archive_headers import ArchiveError, Entry

__all__ = ["ArchiveError", "ArchiveLimits", "DEFAULT_LIMITS", "ZipArchive", "open_archive", "read_archive_file"]

_CHUNK = 1 << 20


@dataclass(frozen=True)
class ArchiveLimits:
    """Bounds an archive must keep before anything in it is inflated."""

    max_file_bytes: int = 16 << 30        # the archive file itself
    max_members: int = 100_000
    max_total_bytes: int = 16 << 30       # declared uncompressed sizes, all members together
    expansion: int = 10                   # total uncompressed <= expansion * file size + expansion_floor
    expansion_floor: int = 64 << 20
    max_ratio: int = 100                  # a deflated member over ratio_floor expands at most this much
    ratio_floor: int = 1 << 20


DEFAULT_LIMITS = ArchiveLimits()


def read_archive_file(path: str | os.PathLike[str], label: str, limits: ArchiveLimits = DEFAULT_LIMITS) -> bytes:
    """The bytes of a regular file of at most ``limits.max_file_bytes``, read once, never more than that."""
    path = Path(path)
    if not path.is_file():
        raise not_a_file("model file", label, path)
    with open(path, "rb") as file:
        # The size first: read(n) reserves n bytes up front, which a confined worker's
        # address-space limit (io/sandbox) would refuse for n = the 16 GiB bound.
        size = os.fstat(file.fileno()).st_size
        if size > limits.max_file_bytes:
            raise ArchiveError(f"{label}: refused: the file is larger than {limits.max_file_bytes} bytes")
        data = file.read(size + 1)
    if len(data) != size:
        raise ArchiveError(f"{label}: refused: the file changed while it was read")
    return data


class ZipArchive:
    """A checked archive: ``names`` (below the root folder, in directory order), ``read``, ``size``.

    Members are found as torch finds them, ignoring ASCII case (names that differ only in case
    were refused, so a lookup finds one member or none).
    """

    def __init__(self, data: bytes, label: str, root: str, entries: list[Entry]):
        self._view = memoryview(data)
        self.label, self.root = label, root
        self.names = [entry.name[len(root) + 1:] for entry in entries]
        self._entries = {_fold(name): entry for name, entry in zip(self.names, entries)}

    def __contains__(self, name: str) -> bool:
        return _fold(name) in self._entries

    def size(self, name: str) -> int:
        return self._entries[_fold(name)].size

    def chunks(self, name: str) -> Iterator[bytes | memoryview]:
        """The member's data in pieces of at most 1 MiB, never more than its declared size in all."""
        entry = self._entries[_fold(name)]
        raw = self._view[entry.data_offset:entry.data_offset + entry.compressed_size]
        if entry.method == headers.STORED:
            for start in range(0, len(raw), _CHUNK):
                yield raw[start:start + _CHUNK]
            return
        inflater, produced = zlib.decompressobj(-zlib.MAX_WBITS), 0
        for start in range(0, len(raw), _CHUNK):
            piece = raw[start:start + _CHUNK]
            while piece:
                out = inflater.decompress(piece, _CHUNK)
                piece = inflater.unconsumed_tail
                produced += len(out)
                if produced > entry.size:
                    raise ArchiveError(f"{self.label}: refused: {name} inflates past its declared "
                                       f"{entry.size} bytes")
                if out:
                    yield out
        if not inflater.eof or inflater.unused_data:
            raise ArchiveError(f"{self.label}: refused: {name} is not one complete deflate stream")

    def read(self, name: str, limit: int) -> bytes:
        """The whole member, refused (before inflating it) when it is declared larger than ``limit``."""
        if name not in self:
            raise ArchiveError(f"{self.label}: refused: {name} is missing")
        if self.size(name) > limit:
            raise ArchiveError(f"{self.label}: refused: {name} is {self.size(name)} bytes, more than the "
                               f"{limit} accepted for it")
        return b"".join(self.chunks(name))

    def verify(self) -> None:
        """Inflate every member in bounded pieces: its real size and CRC-32 must be the declared ones."""
        for name, entry in zip(self.names, self._entries.values()):
            crc, size = 0, 0
            for piece in self.chunks(name):
                crc, size = zlib.crc32(piece, crc), size + len(piece)
            if size != entry.size or crc != entry.crc:
                raise ArchiveError(f"{self.label}: refused: {name} holds {size} bytes with CRC-32 {crc:08x}, but "
                                   f"declares {entry.size} bytes with CRC-32 {entry.crc:08x}")


def _fold(name: str) -> bytes:
    return name.encode("utf-8").lower()  # ASCII case only, as miniz compares names


def open_archive(data: bytes, label: str, limits: ArchiveLimits = DEFAULT_LIMITS) -> ZipArchive:
    """The archive in ``data`` after every check of the module doc; ArchiveError (a ModelLoadError) if any fails."""
    if len(data) > limits.max_file_bytes:
        raise ArchiveError(f"{label}: refused: the archive is larger than {limits.max_file_bytes} bytes")
    entries = headers.parse(data, label, limits.max_members)
    root = headers.check_names(entries, label)
    _check_sizes(entries, len(data), label, limits)
    archive = ZipArchive(data, label, root, entries)
    archive.verify()
    return archive


def _check_sizes(entries: list[Entry], file_size: int, label: str, limits: ArchiveLimits) -> None:
    total = 0
    for entry in entries:
        ratio_bound = max(limits.ratio_floor, limits.max_ratio * entry.compressed_size)
        if entry.method == headers.DEFLATED and entry.size > ratio_bound:
            raise ArchiveError(f"{label}: refused: {entry.name} would inflate from {entry.compressed_size} to "
                               f"{entry.size} bytes (more than {limits.max_ratio} times)")
        total += entry.size
    bound = min(limits.max_total_bytes, limits.expansion * file_size + limits.expansion_floor)
    if total > bound:
        raise ArchiveError(f"{label}: refused: its members declare {total} bytes uncompressed, more than the "
                           f"{bound} accepted for a file of {file_size} bytes")
