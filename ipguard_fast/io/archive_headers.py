"""The headers of a zip archive, parsed byte by byte and held to one unambiguous layout (see archive.py).

Everything here reads headers only; no member data is inflated. ``parse`` returns the
central directory's entries after checking the end records, every directory entry, every
local header and the layout (members back to back from offset 0, then the directory, then the
end records); ``check_names`` checks the names and returns the root folder.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass

from .weights import ModelLoadError

__all__ = ["ArchiveError", "DEFLATED", "Entry", "STORED", "check_names", "parse"]

STORED, DEFLATED = 0, 8
_END = struct.Struct("<IHHHHIIH")                 # end of central directory record
_LOCATOR = struct.Struct("<IIQI")                  # zip64 end of central directory locator
_END64 = struct.Struct("<IQHHIIQQQQ")              # zip64 end of central directory record
_DIRECTORY = struct.Struct("<IHHHHHHIIIHHHHHII")   # central directory entry
_LOCAL = struct.Struct("<IHHHHHIIIHH")             # local file header
_END_SIG, _LOCATOR_SIG, _END64_SIG = 0x06054B50, 0x07064B50, 0x06064B50
_DIRECTORY_SIG, _LOCAL_SIG, _DESCRIPTOR_SIG = 0x02014B50, 0x04034B50, 0x08074B50
_U16, _U32 = 0xFFFF, 0xFFFFFFFF
# Flag bits a plain archive uses: 1-2 deflate level, 3 data descriptor, 11 UTF-8 names. Anything
# else (encryption, patches, masked headers) is refused.
_ALLOWED_FLAGS = 0x080E
_MAX_VERSION_NEEDED = 45                           # 4.5: zip64
_ZIP64_EXTRA, _PADDING_EXTRA = 0x0001, 0x4246      # zip64 sizes; torch's alignment padding ("FB")


class ArchiveError(ModelLoadError):
    """An archive refused before anything in it was inflated or handed to torch."""


@dataclass
class Entry:
    """One central-directory entry, its zip64 sizes resolved."""

    raw: bytes                 # the name's bytes, as torch compares them
    flags: int
    method: int
    crc: int
    compressed_size: int
    size: int
    header_offset: int
    name: str = ""             # set by check_names
    data_offset: int = -1      # set by parse, from the local header


def parse(data: bytes, label: str, max_members: int) -> list[Entry]:
    """The directory's entries, after the end records, every header and the layout are checked."""
    cd_offset, cd_size, count = _end_records(data, label)
    if count == 0:
        raise ArchiveError(f"{label}: refused: the archive holds no members")
    if count > max_members:
        raise ArchiveError(f"{label}: refused: the archive holds {count} members, more than {max_members}")
    entries = _directory(data, cd_offset, cd_size, count, label)
    _check_layout(data, entries, cd_offset, label)
    return entries


def _refuse(label: str, why: str) -> ArchiveError:
    return ArchiveError(f"{label}: refused: {why}; only archives written by torch (or a plain zip writer) load")


def _end_records(data: bytes, label: str) -> tuple[int, int, int]:
    """(directory offset, directory size, entry count), read from the end record at the very end."""
    end_at = len(data) - _END.size
    if end_at < 0 or int.from_bytes(data[end_at:end_at + 4], "little") != _END_SIG:
        raise ArchiveError(f"{label} is not a zip archive (no end record at its end: not a model archive, or "
                           "one with a comment or data after it)")
    _, disk, cd_disk, on_disk, count, cd_size, cd_offset, comment = _END.unpack_from(data, end_at)
    cd_end = end_at
    locator_at = end_at - _LOCATOR.size
    if locator_at >= 0 and int.from_bytes(data[locator_at:locator_at + 4], "little") == _LOCATOR_SIG:
        cd_end = locator_at - _END64.size
        _, z_disk, z_offset, disks = _LOCATOR.unpack_from(data, locator_at)
        if cd_end < 0 or z_offset != cd_end or z_disk != 0 or disks != 1:
            raise _refuse(label, "its zip64 locator does not point at the record before it")
        sig, size, _, _, disk64, cd_disk64, on_disk64, count64, cd_size64, cd_offset64 = _END64.unpack_from(
            data, cd_end)
        if sig != _END64_SIG or size != _END64.size - 12 or disk64 or cd_disk64:
            raise _refuse(label, "its zip64 end record is malformed")
        pairs = ((count, count64, _U16), (on_disk, on_disk64, _U16), (cd_size, cd_size64, _U32),
                 (cd_offset, cd_offset64, _U32))
        if any(small not in (big, saturated) for small, big, saturated in pairs):
            raise _refuse(label, "its end records disagree")
        count, on_disk, cd_size, cd_offset = count64, on_disk64, cd_size64, cd_offset64
    elif _U16 in (count, on_disk) or _U32 in (cd_size, cd_offset):
        raise _refuse(label, "its end record asks for zip64 values that are not there")
    if comment or disk or cd_disk or on_disk != count:
        raise _refuse(label, "it has an archive comment or spans several disks")
    if cd_offset + cd_size != cd_end:
        raise _refuse(label, "its central directory does not end where the end records begin")
    return cd_offset, cd_size, count


def _directory(data: bytes, cd_offset: int, cd_size: int, count: int, label: str) -> list[Entry]:
    entries, pos, cd_end = [], cd_offset, cd_offset + cd_size
    for _ in range(count):
        if pos + _DIRECTORY.size > cd_end:
            raise _refuse(label, "its central directory is shorter than its entry count")
        (sig, _, needed, flags, method, _, _, crc, compressed, size, name_len, extra_len, comment_len, disk, _, _,
         offset) = _DIRECTORY.unpack_from(data, pos)
        name_at = pos + _DIRECTORY.size
        pos = name_at + name_len + extra_len + comment_len
        raw = bytes(data[name_at:name_at + name_len])
        if sig != _DIRECTORY_SIG or pos > cd_end:
            raise _refuse(label, "its central directory is malformed")
        if comment_len or disk:
            raise _refuse(label, f"member {raw!r} has a comment or lies on another disk")
        size, compressed, offset = _zip64_sizes(data[name_at + name_len:pos], (size, compressed, offset), raw, label)
        _check_fields(raw, needed, flags, method, compressed, size, label)
        entries.append(Entry(raw, flags, method, crc, compressed, size, offset))
    if pos != cd_end:
        raise _refuse(label, "its central directory holds more than its entries")
    return entries


def _zip64_sizes(extra: bytes, values: tuple[int, ...], raw: bytes, label: str) -> tuple[int, ...]:
    """``values`` (sizes, then the offset in a directory entry) with the saturated ones read from the zip64 field."""
    resolved, pos, seen = list(values), 0, False
    while pos < len(extra):
        if pos + 4 > len(extra):
            raise _refuse(label, f"member {raw!r} has a malformed extra field")
        kind, length = struct.unpack_from("<HH", extra, pos)
        body = extra[pos + 4:pos + 4 + length]
        pos += 4 + length
        if len(body) != length or kind not in (_ZIP64_EXTRA, _PADDING_EXTRA):
            raise _refuse(label, f"member {raw!r} has an extra field of kind {kind:#06x}")
        if kind == _ZIP64_EXTRA:
            # Every reader takes the saturated fields from its first slots, in order (miniz, zipfile).
            wanted = [i for i, value in enumerate(values) if value == _U32]
            if seen or length % 8 or not 8 * len(wanted) <= length <= 24:
                raise _refuse(label, f"member {raw!r} has a zip64 field that does not match its header")
            for slot, i in enumerate(wanted):
                resolved[i] = struct.unpack_from("<Q", body, 8 * slot)[0]
            seen = True
    if not seen and _U32 in values:
        raise _refuse(label, f"member {raw!r} asks for zip64 sizes that are not there")
    return tuple(resolved)


def _check_fields(raw: bytes, needed: int, flags: int, method: int, compressed: int, size: int, label: str) -> None:
    if flags & ~_ALLOWED_FLAGS or needed > _MAX_VERSION_NEEDED:
        raise _refuse(label, f"member {raw!r} is encrypted or uses zip features beyond version 4.5")
    if method not in (STORED, DEFLATED):
        raise _refuse(label, f"member {raw!r} uses compression method {method} (only stored or deflated)")
    if method == STORED and compressed != size:
        raise _refuse(label, f"member {raw!r} is stored, yet declares {compressed} bytes stored for {size}")


def _check_layout(data: bytes, entries: list[Entry], cd_offset: int, label: str) -> None:
    """Members back to back from offset 0 in directory order, each local header matching its entry."""
    if entries[0].header_offset != 0:
        raise _refuse(label, "there are bytes before its first member")
    for index, entry in enumerate(entries):
        end = entries[index + 1].header_offset if index + 1 < len(entries) else cd_offset
        entry.data_offset = _local_header(data, entry, end, label)
        data_end = entry.data_offset + entry.compressed_size
        if data_end > end:
            raise _refuse(label, f"member {entry.raw!r} overlaps what follows it")
        if entry.flags & 0x8:
            _check_descriptor(data, data_end, end - data_end, entry, label)
        elif data_end != end:
            raise _refuse(label, f"there are {end - data_end} unaccounted bytes after member {entry.raw!r}")


def _local_header(data: bytes, entry: Entry, end: int, label: str) -> int:
    """The offset of the member's data, after checking its local header against the directory entry."""
    at = entry.header_offset
    if at + _LOCAL.size > end:
        raise _refuse(label, f"member {entry.raw!r} overlaps what follows it")
    sig, needed, flags, method, _, _, crc, compressed, size, name_len, extra_len = _LOCAL.unpack_from(data, at)
    name_end = at + _LOCAL.size + name_len
    if sig != _LOCAL_SIG or data[at + _LOCAL.size:name_end] != entry.raw:
        raise _refuse(label, f"the local header of member {entry.raw!r} is missing or names another member")
    if flags != entry.flags or method != entry.method or needed > _MAX_VERSION_NEEDED:
        raise _refuse(label, f"the local header of member {entry.raw!r} disagrees with the central directory")
    size, compressed = _zip64_sizes(data[name_end:name_end + extra_len], (size, compressed), entry.raw, label)
    local, real = (crc, compressed, size), (entry.crc, entry.compressed_size, entry.size)
    deferred = flags & 0x8 and all(value in (0, expected) for value, expected in zip(local, real))
    if local != real and not deferred:
        raise _refuse(label, f"the local header of member {entry.raw!r} declares other sizes or CRC-32 than the "
                             "central directory")
    return name_end + extra_len


def _check_descriptor(data: bytes, at: int, length: int, entry: Entry, label: str) -> None:
    """The data descriptor after a member's data: 12 to 24 bytes, its values the directory's."""
    layouts = {12: "<III", 16: "<IIII", 20: "<IQQ", 24: "<IIQQ"}
    if length not in layouts:
        raise _refuse(label, f"there are {length} unaccounted bytes after member {entry.raw!r}")
    values = struct.unpack_from(layouts[length], data, at)
    if length in (16, 24):
        if values[0] != _DESCRIPTOR_SIG:
            raise _refuse(label, f"member {entry.raw!r} is followed by a malformed data descriptor")
        values = values[1:]
    if tuple(values) != (entry.crc, entry.compressed_size, entry.size):
        raise _refuse(label, f"the data descriptor of member {entry.raw!r} disagrees with the central directory")


def check_names(entries: list[Entry], label: str) -> str:
    """The root folder, after checking every name (see archive.py); sets each entry's ``name``."""
    root, seen = None, set()
    for entry in entries:
        raw = entry.raw
        control = next((byte for byte in raw if byte < 0x20 or byte == 0x7F), None)
        if control is not None:
            raise _refuse(label, f"member name {raw!r} holds the control byte {control:#04x} (NUL cuts a name "
                                 "short for Python's zipfile, not for torch)")
        if b"\\" in raw:
            raise _refuse(label, f"member name {raw!r} holds a backslash")
        try:
            name = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise _refuse(label, f"member name {raw!r} is not UTF-8") from None
        parts = name.split("/")
        if len(parts) < 2 or any(part in ("", ".", "..") for part in parts):
            raise _refuse(label, f"member name {name!r} is not a relative path below a root folder")
        root = parts[0] if root is None else root
        if parts[0] != root:
            raise _refuse(label, f"member {name!r} lies outside the archive's root folder {root!r}")
        if raw.lower() in seen:  # torch finds members ignoring ASCII case, and takes one of them
            raise _refuse(label, f"two members are named {name!r} (ignoring case): torch and an inspection "
                                 "could read different ones")
        seen.add(raw.lower())
        entry.name = name
    return root
