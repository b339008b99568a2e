"""A model file under 1 MB never makes the process use more than 512 MB before it is refused.

Before, archive members were read whole before anything was refused: a 246 KB .pt2 (240 MB of
``[],`` in models/model.json) took 6.7 GB, a deflate bomb in its sample inputs 6.8 GB. Each
file here is loaded in a fresh process, whose peak resident memory is measured around the load.
"""
import json
import struct
import subprocess
import sys
import zipfile
import zlib

import pytest
from hostile_model_files import tiny_archives

LIMIT_MB = 512

MEASURE = """
import resource, sys, time
import ipguard_fast
from ipguard_fast.io import ModelLoadError, load_model
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.perf_counter()
try:
    load_model(sys.argv[1])
    outcome = "loaded"
except ModelLoadError as exc:
    outcome = "refused: " + str(exc)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"grew_mb": (after - before) / 1024, "seconds": time.perf_counter() - start, "outcome": outcome}))
"""


def _repeated_deflate(head, chunk, count, tail):
    """(deflate stream, CRC-32, size) of head + chunk * count + tail, fast: the chunk is compressed once
    and its fully flushed block (which refers to nothing before it) repeated."""
    def flushed(data, mode=zlib.Z_FULL_FLUSH):
        compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
        return compressor.compress(data) + compressor.flush(mode)

    crc = zlib.crc32(head)
    for _ in range(count):
        crc = zlib.crc32(chunk, crc)
    stream = flushed(head) + flushed(chunk) * count + flushed(tail, zlib.Z_FINISH)
    return stream, zlib.crc32(tail, crc), len(head) + len(chunk) * count + len(tail)


def _rewrite(source, target, replace):
    """Copy an archive with member ``name`` replaced by ``replace[name]`` (head, chunk, count, tail), deflated."""
    local, directory = bytearray(), bytearray()
    with zipfile.ZipFile(source) as old:
        for info in old.infolist():
            member = info.filename.split("/", 1)[1]
            if member in replace:
                stream, crc, size = _repeated_deflate(*replace[member])
                method = zipfile.ZIP_DEFLATED
            else:
                stream = old.read(info)
                crc, size, method = zlib.crc32(stream), len(stream), zipfile.ZIP_STORED
            name = info.filename.encode()
            fields = struct.pack("<HHHHHIIIHH", 20, 0, method, 0, 0, crc, len(stream), size, len(name), 0)
            directory += b"PK\x01\x02" + struct.pack("<H", 20) + fields + struct.pack("<HHHII", 0, 0, 0, 0,
                                                                                       len(local)) + name
            local += b"PK\x03\x04" + fields + name + stream
    count = len(old.infolist())
    end = b"PK\x05\x06" + struct.pack("<HHHHIIH", 0, 0, count, count, len(directory), len(local), 0)
    target.write_bytes(bytes(local + directory + end))
    return target


@pytest.fixture(scope="module")
def honest(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bombs")
    return (folder, *tiny_archives(folder)[1:])


def _bombs(folder, pt2, script):
    brackets = (b"[", b"[]," * (1 << 20), 80, b"[]]")  # 240 MB of JSON: 80 million lists
    zeros = (b"", bytes(1 << 20), 700, b"")              # 700 MB of zeros
    return {
        "json bomb in models/model.json": _rewrite(pt2, folder / "json.pt2", {"models/model.json": brackets}),
        "deflate bomb in sample_inputs": _rewrite(pt2, folder / "zeros.pt2", {"data/sample_inputs/model.pt": zeros}),
        "deflate bomb in a TorchScript data.pkl": _rewrite(script, folder / "zeros.pt", {"data.pkl": zeros}),
    }


def test_small_bombs_are_refused_within_the_memory_bound(honest):
    folder, pt2, script = honest
    with zipfile.ZipFile(pt2) as archive:
        assert json.loads(archive.read(archive.namelist()[0].split("/")[0] + "/models/model.json"))
    for what, path in _bombs(folder, pt2, script).items():
        assert path.stat().st_size < 1_000_000, what
        result = subprocess.run([sys.executable, "-c", "import json\n" + MEASURE, str(path)], capture_output=True,
                                text=True, timeout=300)
        assert result.returncode == 0, result.stderr[-2000:]
        report = json.loads(result.stdout.strip().splitlines()[-1])
        assert report["outcome"].startswith("refused"), (what, report)
        assert "would inflate" in report["outcome"], (what, report)
        assert report["grew_mb"] < LIMIT_MB, (what, report)
        assert report["seconds"] < 10, (what, report)
