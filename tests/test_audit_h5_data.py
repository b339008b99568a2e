"""Audit (h5): the owner's data readers: damaged files, folders that loop, unreadable
images and labels the owner has no class for are bad input naming the option (exit 2), never
a crash, a hang or a silent wrong answer."""
import gzip

import numpy as np
import pytest

from ipguard_fast.cli import main
from ipguard_fast.data_files import read_idx


def _idx(path, array, compress=False):
    head = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    (gzip.open if compress else open)(path, "wb").write(head + array.astype(np.uint8).tobytes())


def _mnist(root, images, labels, compress=False):
    suffix = ".gz" if compress else ""
    _idx(root / f"train-images-idx3-ubyte{suffix}", images, compress)
    _idx(root / f"train-labels-idx1-ubyte{suffix}", labels, compress)


def _damage(path, how):
    data = bytearray(path.read_bytes())
    if how == "truncated":
        data = data[: len(data) // 2]
    else:   # the deflate stream scrambled, the gzip header intact
        data[30:200] = bytes(b ^ 0x5A for b in data[30:200])
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("how", ["truncated", "scrambled"])
def test_a_damaged_gzip_idx_file_is_bad_input_naming_it(tmp_path, capsys, how):
    rng = np.random.default_rng(0)
    _mnist(tmp_path, rng.integers(0, 256, (20, 28, 28)), rng.integers(0, 10, 20), compress=True)
    path = tmp_path / "train-images-idx3-ubyte.gz"
    _damage(path, how)
    with pytest.raises(ValueError, match="not a whole gzip file"):   # was EOFError / zlib.error
        read_idx(path, 3)
    code = main(["protect", "--model", "ipguard_fast.models:LeNet5", "--data", f"mnist:{tmp_path}",
                 "--out", str(tmp_path / "fp.safetensors"), "--no-cache"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1, err   # was exit 1, "failed: EOFError: ..."
    assert "--data:" in err and str(path) in err and "Traceback" not in err
