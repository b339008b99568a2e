"""The zip reader under .pt2 and TorchScript files: it accepts what torch and plain zip writers
write, and refuses every archive on which torch's reader (miniz) and an inspection could see
different bytes, or that would inflate past its bounds -- from the headers, before inflating."""
import io
import struct
import zipfile

import pytest
from hostile_model_files import tiny_archives

from ipguard_fast.io import ModelLoadError
from ipguard_fast.io.archive import ArchiveLimits, open_archive, read_archive_file



def zip_bytes(members, method=zipfile.ZIP_STORED, comment=b""):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", method) as archive:
        for name, data in members:
            archive.writestr(name, data)
        archive.comment = comment
    return buffer.getvalue()


def end_record(data):
    """(offset of the end record, central directory offset) of a zip without zip64 records."""
    at = len(data) - 22
    return at, struct.unpack_from("<I", data, at + 16)[0]


def refused(data, match, **limits):
    with pytest.raises(ModelLoadError, match=match):
        open_archive(data, "x.pt2", ArchiveLimits(**limits) if limits else ArchiveLimits())


@pytest.fixture(scope="module")
def torch_archives(tmp_path_factory):
    _, pt2, script = tiny_archives(tmp_path_factory.mktemp("honest"))
    return [pt2.read_bytes(), script.read_bytes()]


def test_torch_archives_and_plain_zips_are_read(torch_archives):
    for data in torch_archives:  # members with data descriptors, zip64 end records, "FB" padding
        archive = open_archive(data, "m")
        assert archive.names and all(archive.read(name, 1 << 20) is not None for name in archive.names)
    plain = zip_bytes([("root/a", b"x" * 5000), ("root/b/c", b"hello")], zipfile.ZIP_DEFLATED)
    archive = open_archive(plain, "plain")
    assert archive.root == "root" and archive.names == ["a", "b/c"] and archive.read("b/c", 5) == b"hello"
    with pytest.raises(ModelLoadError, match="more than the 4 accepted"):
        archive.read("b/c", 4)


@pytest.mark.filterwarnings("ignore:Duplicate name")
@pytest.mark.parametrize("names, match", [
    (["root/a", "root/a"], "two members are named 'root/a'"),
    (["root/model.json", "root/Model.json"], "ignoring case"),
    (["root/a", "root/b\x01"], "control byte 0x01"),
    (["root/a", "root/b\\c"], "backslash"),
    (["root/a", "/root/b"], "not a relative path"),
    (["root/a", "root/../b"], "not a relative path"),
    (["root/a", "root//b"], "not a relative path"),
    (["root/a", "other/b"], "outside the archive's root folder 'root'"),
    (["a"], "not a relative path below a root folder"),
])
def test_names_torch_and_zipfile_could_read_differently_are_refused(names, match):
    refused(zip_bytes([(name, b"data") for name in names]), match)


def test_a_name_with_nul_is_refused_though_zipfile_cuts_it_short():
    data = zip_bytes([("root/config.json", b"evil"), ("root/config.jsonQx", b"clean")])
    data = data.replace(b"config.jsonQx", b"config.json\x00x")
    assert zipfile.ZipFile(io.BytesIO(data)).read("root/config.json") == b"clean"  # what zipfile inspects
    refused(data, "control byte 0x00")


def test_local_headers_must_agree_with_the_central_directory():
    data = zip_bytes([("root/aaaa", b"first"), ("root/bbbb", b"second")])
    refused(data.replace(b"root/bbbb", b"root/cccc", 1), "names another member")  # the local header only
    crc_at = data.index(b"root/bbbb") - 30 + 14
    refused(data[:crc_at] + b"\0\0\0\0" + data[crc_at + 4:], "other sizes or CRC-32")
    data = zip_bytes([("root/a", b"payload")])
    refused(data.replace(b"payload", b"PAYLOAD"), "CRC-32")  # the data, not the headers


def test_declared_sizes_must_be_the_real_sizes():
    data = bytearray(zip_bytes([("root/a", b"z" * 1000)], zipfile.ZIP_DEFLATED))
    local, (_, directory) = 0, end_record(data)
    for size_at in (local + 22, directory + 24):  # uncompressed size, in both headers
        struct.pack_into("<I", data, size_at, 1010)
    refused(bytes(data), "holds 1000 bytes .* declares 1010 bytes")


def test_bytes_before_between_or_after_members_are_refused():
    data = zip_bytes([("root/a", b"one"), ("root/b", b"two")])
    refused(b"junk" + data, "does not end where the end records begin")  # zipfile would shift its offsets
    refused(data + b"junk", "no end record at its end")
    end, directory = end_record(data)
    shifted = bytearray(data[:directory] + b"junk" + data[directory:])
    struct.pack_into("<I", shifted, end + 4 + 16, directory + 4)
    refused(bytes(shifted), "4 unaccounted bytes after member b'root/b'")
    moved = bytearray(b"junk" + data)  # every offset moved along: a self-extracting archive's layout
    struct.pack_into("<I", moved, end + 4 + 16, directory + 4)
    for entry in (directory + 4, moved.index(b"PK\x01\x02", directory + 5)):
        struct.pack_into("<I", moved, entry + 42, struct.unpack_from("<I", moved, entry + 42)[0] + 4)
    assert zipfile.ZipFile(io.BytesIO(bytes(moved))).read("root/b") == b"two"
    refused(bytes(moved), "bytes before its first member")
    refused(zip_bytes([("root/a", b"one")], comment=b"hello"), "comment")


def test_overlapping_members_are_refused():
    data = bytearray(zip_bytes([("root/a", b"one"), ("root/b", b"two")]))
    _, directory = end_record(data)
    second = data.index(b"PK\x01\x02", directory + 1)
    struct.pack_into("<I", data, second + 42, 0)  # b's entry points at a's local header
    refused(bytes(data), "bytes|overlaps|names another member")


def test_encrypted_or_unknown_methods_are_refused():
    data = bytearray(zip_bytes([("root/a", b"one")]))
    _, directory = end_record(data)
    for flags_at in (6, directory + 8):
        data[flags_at] |= 1
    refused(bytes(data), "encrypted")


def test_a_deflate_bomb_is_refused_before_it_is_inflated():
    bomb = zip_bytes([("root/zeros", bytes(50 << 20))], zipfile.ZIP_DEFLATED)
    assert len(bomb) < 100_000
    refused(bomb, "would inflate from .* to 52428800 bytes")
    # Under the ratio bound, yet past the bound on the total for the file's size.
    refused(zip_bytes([("root/a", bytes(4000)), ("root/b", bytes(4000))], zipfile.ZIP_DEFLATED), "8000 bytes",
            expansion=1, expansion_floor=7000)
    refused(zip_bytes([("root/a", b"x")]), "more than the 0 accepted", max_total_bytes=0)
    refused(zip_bytes([("root/a", b"x"), ("root/b", b"y")]), "2 members, more than 1", max_members=1)


def test_a_file_past_the_size_bound_is_not_read_whole(tmp_path):
    path = tmp_path / "big.pt"
    path.write_bytes(b"x" * 1000)
    with pytest.raises(ModelLoadError, match="larger than 999 bytes"):
        read_archive_file(path, "big.pt", ArchiveLimits(max_file_bytes=999))
    assert read_archive_file(path, "big.pt") == b"x" * 1000


def test_a_stream_longer_than_declared_is_refused():
    data = bytearray(zip_bytes([("root/a", b"abc" * 1000)], zipfile.ZIP_DEFLATED))
    _, directory = end_record(data)
    for size_at in (22, directory + 24):
        struct.pack_into("<I", data, size_at, 2000)  # less than the stream holds
    refused(bytes(data), "inflates past its declared 2000 bytes")


def test_members_are_found_ignoring_case_as_torch_finds_them():
    archive = open_archive(zip_bytes([("root/Data.pkl", b"pickle")]), "x.pt")
    assert "data.pkl" in archive and archive.read("DATA.PKL", 10) == b"pickle" and archive.names == ["Data.pkl"]
