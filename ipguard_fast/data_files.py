"""Data sets in raw binary formats, read without pickle and with every size checked before
anything large is read: MNIST's IDX files (gzip or raw ubyte; Fashion-MNIST and
KMNIST use the same format) and CIFAR-10/100's binary version.

Images stay uint8 in memory (a quarter of float32) and become float32 in [0, 1] per item.
"""
from __future__ import annotations

import gzip
import os
import zlib
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, TensorDataset

from ._validate import ArgumentError

__all__ = ["UInt8Images", "load_cifar_binary", "load_mnist", "read_idx"]

_MAX_ITEMS = 10_000_000          # more items than any data set this reads
_MAX_BYTES = 4 << 30             # 4 GiB: the largest file read
_IDX_TYPES = {0x08: np.uint8}


class UInt8Images(Dataset):
    """(float32 [C, H, W] image in [0, 1], int64 label) items over uint8 storage."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor):
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int):
        return _pixels(self.images[index]), self.labels[index]

    def as_tensor_dataset(self) -> TensorDataset:
        """Every item at once, as float32 images and int64 labels: the items, in one conversion."""
        return TensorDataset(_pixels(self.images), self.labels.clone())


def _pixels(stored: torch.Tensor) -> torch.Tensor:
    """uint8 pixels as float32 in [0, 1]."""
    return stored.float().div_(255.0)


def read_idx(path: str | os.PathLike, ndim: int) -> np.ndarray:
    """One IDX file (gzip or raw) of unsigned bytes with `ndim` dimensions, sizes checked
    against the file before its data is read."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as handle:
            head = handle.read(4 + 4 * ndim)
            if len(head) < 4 + 4 * ndim or head[:2] != b"\0\0" or head[2] not in _IDX_TYPES or head[3] != ndim:
                raise ArgumentError("data", f"{path}: not an IDX file of {ndim} dimension(s) of unsigned bytes")
            dims = [int.from_bytes(head[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
            size = int(np.prod(dims))
            if not 0 < dims[0] <= _MAX_ITEMS or any(d == 0 or d > 4096 for d in dims[1:]) or size > _MAX_BYTES:
                raise ArgumentError("data", f"{path}: implausible IDX dimensions {dims}")
            data = _read_at_most(handle, size + 1)   # one byte more than declared: a longer file is refused
    except (EOFError, zlib.error, gzip.BadGzipFile) as exc:   # a truncated or damaged .gz: bad input, not a crash
        raise ArgumentError("data", f"{path}: not a whole gzip file ({exc})") from None
    if len(data) != size:
        raise ArgumentError("data", f"{path}: holds {len(data)} data bytes where its header declares {size}")
    return np.frombuffer(data, dtype=np.uint8).reshape(dims)


def _read_at_most(handle, limit: int, chunk: int = 1 << 24) -> bytes:
    """Up to `limit` bytes, read in chunks: read(limit) would reserve `limit` bytes at once,
    so a 16-byte file whose header claims gigabytes would cost gigabytes before it is refused."""
    parts, left = [], limit
    while left > 0:
        part = handle.read(min(chunk, left))
        if not part:
            break
        parts.append(part)
        left -= len(part)
    return b"".join(parts)


def _idx_file(root: Path, stem: str) -> Path:
    for name in (stem, f"{stem}.gz", stem.replace("-idx", ".idx"), stem.replace("-idx", ".idx") + ".gz"):
        if (root / name).is_file():
            return root / name
    raise FileNotFoundError(f"{root}: no {stem} or {stem}.gz (MNIST's IDX files; nothing is downloaded)")


def load_mnist(root: str | os.PathLike, split: str = "train") -> UInt8Images:
    """MNIST-format IDX files in `root` (train-images-idx3-ubyte[.gz] and so on; the files
    may also sit in root/raw as torchvision keeps them) as [1, 28, 28] images."""
    if split not in ("train", "test"):
        raise ArgumentError("split", f"must be 'train' or 'test', got {split!r}")
    root = Path(root)
    if not (root / _stem(split, "images")).exists() and not (root / (_stem(split, "images") + ".gz")).exists():
        root = root / "raw" if (root / "raw").is_dir() else root
    images = read_idx(_idx_file(root, _stem(split, "images")), 3)
    labels = read_idx(_idx_file(root, _stem(split, "labels")), 1)
    if len(images) != len(labels):
        raise ArgumentError("data", f"{root}: {len(images)} images but {len(labels)} labels")
    return UInt8Images(torch.from_numpy(images.copy()).unsqueeze(1), torch.from_numpy(labels.astype(np.int64)))


def _stem(split: str, kind: str) -> str:
    prefix = "train" if split == "train" else "t10k"
    return f"{prefix}-{kind}-idx{3 if kind == 'images' else 1}-ubyte"


_CIFAR_BINARY = {"cifar10": ("cifar-10-batches-bin", [f"data_batch_{i}.bin" for i in range(1, 6)],
                             ["test_batch.bin"], 1),
                 "cifar100": ("cifar-100-binary", ["train.bin"], ["test.bin"], 2)}


def load_cifar_binary(root: str | os.PathLike, split: str = "train", which: str = "cifar10") -> UInt8Images:
    """CIFAR-10/100's binary version (records of label byte(s) and 3072 pixel bytes) from
    root or root/<its folder> as [3, 32, 32] images; CIFAR-100 takes the fine label."""
    if which not in _CIFAR_BINARY:
        raise ArgumentError("which", f"must be one of {tuple(_CIFAR_BINARY)}, got {which!r}")
    if split not in ("train", "test"):
        raise ArgumentError("split", f"must be 'train' or 'test', got {split!r}")
    folder, train, test, label_bytes = _CIFAR_BINARY[which]
    root = Path(root) / folder if (Path(root) / folder).is_dir() else Path(root)
    record = label_bytes + 3072
    parts = []
    for name in train if split == "train" else test:
        path = root / name
        if not path.is_file():
            raise FileNotFoundError(f"{path}: missing ({which}'s binary version; nothing is downloaded)")
        size = path.stat().st_size
        if size == 0 or size % record or size > _MAX_BYTES:
            raise ArgumentError("data", f"{path}: {size} bytes is not a whole number of {record}-byte records")
        parts.append(np.fromfile(path, dtype=np.uint8).reshape(-1, record))
    rows = np.concatenate(parts)
    images = torch.from_numpy(rows[:, label_bytes:].copy()).reshape(-1, 3, 32, 32)
    return UInt8Images(images, torch.from_numpy(rows[:, label_bytes - 1].astype(np.int64)))
