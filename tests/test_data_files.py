"""MNIST IDX and CIFAR binary files, written here in their formats, read back without pickle;
damaged or lying files refused before their data is read."""
import gzip

import numpy as np
import pytest
import torch

from ipguard_fast.data import load_data
from ipguard_fast.data_files import load_cifar_binary, load_mnist, read_idx


def _idx(path, array, compress):
    head = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    data = head + array.astype(np.uint8).tobytes()
    (gzip.open if compress else open)(path, "wb").write(data)


@pytest.mark.parametrize("compress", [False, True])
def test_mnist_idx_round_trip(tmp_path, compress):
    rng = np.random.default_rng(0)
    images, labels = rng.integers(0, 256, (20, 28, 28)), rng.integers(0, 10, 20)
    suffix = ".gz" if compress else ""
    _idx(tmp_path / f"train-images-idx3-ubyte{suffix}", images, compress)
    _idx(tmp_path / f"train-labels-idx1-ubyte{suffix}", labels, compress)
    data = load_data(f"mnist:{tmp_path}", "train")
    assert len(data) == 20
    image, label = data[3]
    assert image.shape == (1, 28, 28) and image.dtype == torch.float32
    assert torch.equal(image, torch.from_numpy(images[3]).float()[None] / 255) and int(label) == labels[3]


def test_protect_takes_the_files_items_in_one_conversion(tmp_path):
    from torch.utils.data import Subset, TensorDataset

    from ipguard_fast.selection.inputs import training_data

    rng = np.random.default_rng(2)
    _idx(tmp_path / "train-images-idx3-ubyte", rng.integers(0, 256, (30, 28, 28)), False)
    _idx(tmp_path / "train-labels-idx1-ubyte", rng.integers(0, 10, 30), False)
    data = load_mnist(tmp_path)
    whole = training_data(data)
    assert isinstance(whole, TensorDataset) and whole.tensors[0].dtype == torch.float32
    assert whole.tensors[1].dtype == torch.int64 and whole.tensors[0].shape == (30, 1, 28, 28)
    for i in range(30):   # the items themselves, bit for bit
        assert torch.equal(whole.tensors[0][i], data[i][0]) and int(whole.tensors[1][i]) == int(data[i][1])
    assert whole.tensors[0].data_ptr() != data.images.data_ptr() and whole.tensors[1].data_ptr() != data.labels.data_ptr()
    part = training_data(Subset(data, range(5, 17)))   # any other Dataset: item by item, the same values
    assert torch.equal(part.tensors[0], whole.tensors[0][5:17]) and torch.equal(part.tensors[1], whole.tensors[1][5:17])


def test_idx_files_that_lie_about_their_size_are_refused(tmp_path):
    path = tmp_path / "x-idx3-ubyte"
    _idx(path, np.zeros((4, 28, 28)), False)
    path.write_bytes(path.read_bytes()[:-1])                       # truncated
    with pytest.raises(ValueError, match="declares"):
        read_idx(path, 3)
    big = bytes([0, 0, 8, 3]) + (2**31 - 1).to_bytes(4, "big") + (4096).to_bytes(4, "big") * 2
    path.write_bytes(big)                                          # a 64 TB claim in 16 bytes
    with pytest.raises(ValueError, match="implausible"):
        read_idx(path, 3)
    path.write_bytes(b"\x80\x02pickle")
    with pytest.raises(ValueError, match="not an IDX file"):
        read_idx(path, 3)
    _idx(path, np.zeros((4, 28, 28)), False)
    path.write_bytes(path.read_bytes() + b"extra")                 # data past the declared end
    with pytest.raises(ValueError, match="declares"):
        read_idx(path, 3)


def test_mnist_with_mismatched_counts_or_missing_files(tmp_path):
    _idx(tmp_path / "t10k-images-idx3-ubyte", np.zeros((5, 28, 28)), False)
    with pytest.raises(FileNotFoundError, match="t10k-labels"):
        load_mnist(tmp_path, "test")
    _idx(tmp_path / "t10k-labels-idx1-ubyte", np.zeros(4), False)
    with pytest.raises(ValueError, match="5 images but 4 labels"):
        load_mnist(tmp_path, "test")


@pytest.mark.parametrize("which, label_bytes, files", [("cifar10", 1, ["test_batch.bin"]),
                                                       ("cifar100", 2, ["test.bin"])])
def test_cifar_binary_round_trip(tmp_path, which, label_bytes, files):
    rng = np.random.default_rng(1)
    rows = rng.integers(0, 256, (6, label_bytes + 3072)).astype(np.uint8)
    rows[:, label_bytes - 1] %= 10
    folder = tmp_path / {"cifar10": "cifar-10-batches-bin", "cifar100": "cifar-100-binary"}[which]
    folder.mkdir()
    (folder / files[0]).write_bytes(rows.tobytes())
    data = load_data(f"{which}:{tmp_path}", "test")
    image, label = data[2]
    assert len(data) == 6 and image.shape == (3, 32, 32)
    assert torch.equal(image, torch.from_numpy(rows[2, label_bytes:]).float().reshape(3, 32, 32) / 255)
    assert int(label) == rows[2, label_bytes - 1]
    (folder / files[0]).write_bytes(rows.tobytes()[:-7])
    with pytest.raises(ValueError, match="whole number"):
        load_cifar_binary(tmp_path, "test", which)
