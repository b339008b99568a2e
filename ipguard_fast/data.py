"""Datasets: scikit-learn's bundled digits, and CIFAR / ImageFolder from local folders.

Images are float32 in [0, 1] with shape [N, C, H, W]; labels are int64. Nothing here
ever downloads.
"""
from __future__ import annotations

import os
import re

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset, Subset, TensorDataset

from ._optional import require
from ._validate import positive_int

__all__ = ["CIFAR10_MEAN", "CIFAR10_STD", "IMAGENET_MEAN", "IMAGENET_STD", "digits_input_shape", "seeded_split",
           "load_cifar", "load_data", "load_digits", "load_imagefolder"]

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

_SPLITS = ("train", "test", "all")


def _check_size(size: int | None) -> None:
    if size is not None:
        positive_int("size", size)


def _check_channels(channels: int) -> None:
    if channels not in (1, 3):
        raise ValueError(f"channels: must be 1 or 3, got {channels!r}")


def digits_input_shape(size: int | None = None, channels: int = 1) -> tuple[int, int, int]:
    """The [C, H, W] shape of images returned by :func:`load_digits`."""
    _check_size(size)
    _check_channels(channels)
    side = 8 if size is None else size
    return (channels, side, side)


def load_digits(split: str = "train", *, size: int | None = None, channels: int = 1,
                test_fraction: float = 0.2, seed: int = 0) -> TensorDataset:
    """scikit-learn's 1,797 handwritten digits as a ``TensorDataset`` (needs the ``eval`` extra).

    Images are float32 in [0, 1] (raw values 0..16 divided by 16) with shape
    [N, channels, 8, 8], or [N, channels, size, size] when ``size`` is given
    (bilinear upsampling, so CIFAR/ImageNet architectures can be benchmarked
    on them). The train/test split is stratified by class and determined by
    ``seed`` alone, so owner and suspects trained in separate calls always
    see the same split.
    """
    if split not in _SPLITS:
        raise ValueError(f"split: must be one of {_SPLITS}, got {split!r}")
    _check_size(size)
    _check_channels(channels)
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction: must be in (0, 1), got {test_fraction!r}")

    datasets = require("sklearn.datasets", "eval", "the digits data set", package="scikit-learn")
    model_selection = require("sklearn.model_selection", "eval", "the digits data set", package="scikit-learn")
    bunch = datasets.load_digits()
    images = bunch.images.astype(np.float32) / 16.0
    labels = bunch.target.astype(np.int64)

    if split != "all":
        index = np.arange(len(labels))
        train_idx, test_idx = model_selection.train_test_split(
            index, test_size=test_fraction, stratify=labels, random_state=seed)
        # Sorted so the order does not depend on sklearn's internal shuffle.
        chosen = np.sort(train_idx if split == "train" else test_idx)
        images, labels = images[chosen], labels[chosen]

    x = torch.from_numpy(images).unsqueeze(1)  # [N, 1, 8, 8]
    if size is not None and size != 8:
        x = _resize_in_chunks(x, size)
    if channels == 3:
        x = x.repeat(1, 3, 1, 1)
    return TensorDataset(x.contiguous(), torch.from_numpy(labels))


def _resize_in_chunks(x: torch.Tensor, size: int, chunk: int = 256) -> torch.Tensor:
    """Bilinear resize without a large temporary (224x224 digits are ~1 GB)."""
    out = torch.empty(x.shape[0], x.shape[1], size, size, dtype=x.dtype)
    for start in range(0, x.shape[0], chunk):
        part = x[start : start + chunk]
        resized = F.interpolate(part, size=(size, size), mode="bilinear", align_corners=False)
        out[start : start + chunk] = resized.clamp_(0.0, 1.0)
    return out


_CIFAR_FOLDERS = {"cifar10": "cifar-10-batches-py", "cifar100": "cifar-100-python"}


def load_cifar(root: str | os.PathLike, split: str = "train", which: str = "cifar10") -> Dataset:
    """CIFAR-10/100 from a local torchvision-format folder (download=False).

    Returns a torchvision dataset of (float [3,32,32] image in [0,1], int label).
    """
    import torchvision
    from torchvision import transforms

    if which not in _CIFAR_FOLDERS:
        raise ValueError(f"which: must be one of {tuple(_CIFAR_FOLDERS)}, got {which!r}")
    if split not in ("train", "test"):
        raise ValueError(f"split: must be 'train' or 'test', got {split!r}")
    cls = torchvision.datasets.CIFAR10 if which == "cifar10" else torchvision.datasets.CIFAR100
    try:
        return cls(os.fspath(root), train=split == "train", download=False, transform=transforms.ToTensor())
    except RuntimeError as exc:  # torchvision: "Dataset not found or corrupted."
        raise FileNotFoundError(
            f"{which} not found under root {os.fspath(root)!r}: expected the extracted "
            f"'{_CIFAR_FOLDERS[which]}' folder there (this package never downloads data)"
        ) from exc


def load_imagefolder(root: str | os.PathLike, size: int | tuple[int, int] = 224, resize: int | None = None) -> Dataset:
    """An ImageFolder (one sub-folder per class) as [3, size, size] images in [0, 1].

    Images are resized so the short side is ``resize`` (default
    ``size * 256 / 224``, the usual ImageNet ratio) and centre-cropped. ``size`` as
    (height, width): every image resized to exactly that (an owner trained on images of
    another aspect, e.g. 24x32), without a crop.
    """
    from torchvision import datasets, transforms

    if isinstance(size, tuple):
        if len(size) != 2 or resize is not None:
            raise ValueError(f"size: (height, width) takes no resize, got {size!r} with resize={resize!r}")
        steps = [transforms.Resize((positive_int("size", size[0]), positive_int("size", size[1])))]
    else:
        positive_int("size", size)
        resize = round(size * 256 / 224) if resize is None else resize
        positive_int("resize", resize)
        if resize < size:
            raise ValueError(f"resize: ({resize}) must be >= size ({size}) so the centre crop fits")
        steps = [transforms.Resize(resize), transforms.CenterCrop(size)]
    root = os.fspath(root)
    if not os.path.isdir(root):
        raise FileNotFoundError(f"root {root!r} is not a directory (expected one sub-folder per class)")
    _check_folders_once(root)
    transform = transforms.Compose([*steps, transforms.ToTensor()])
    try:
        return datasets.ImageFolder(root, transform=transform, loader=_read_image)
    except FileNotFoundError as exc:
        raise FileNotFoundError(f"root {root!r} has no class sub-folders with images: {exc}") from exc


# Pillow's 16-bit grayscale modes. Its convert("RGB") clips them at 255 rather than scaling
# (a 16-bit PNG came out white: a silent wrong image); 48-bit RGB it scales itself.
_SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N"})
# 32-bit integer and floating-point images carry no range to scale from: refused, named.
_UNSCALED_MODES = frozenset({"I", "F"})


def _read_image(path: str):
    """An RGB image at 8 bits per channel, as torchvision's loader gives it, but with 16-bit
    grayscale scaled (v / 257, so 65535 is 255) instead of clipped, an image without a known
    range refused, and a file it cannot read (not an image, truncated, a decompression bomb)
    bad input naming the file rather than PIL's own error mid-training."""
    from PIL import Image

    try:
        with open(path, "rb") as f:
            image = Image.open(f)
            image.load()
    except (OSError, SyntaxError, Image.DecompressionBombError) as exc:
        raise ValueError(f"{path}: not a readable image ({exc})") from None
    if image.mode in _SIXTEEN_BIT_MODES:
        wide = np.asarray(image, dtype=np.uint32)
        image = Image.fromarray(((wide + 128) // 257).astype(np.uint8), mode="L")
    elif image.mode in _UNSCALED_MODES:
        raise ValueError(f"{path}: a {'32-bit integer' if image.mode == 'I' else 'floating-point'} image "
                         f"(mode {image.mode}) has no pixel range to read it by; save it with 8 or 16 bits per "
                         "channel")
    return image.convert("RGB")


def _check_folders_once(root: str) -> None:
    """Refuses a tree that reaches a folder twice: ImageFolder follows symbolic links, so a link
    back up the tree read its images again at every turn (a link to '.' 41 times over, two such
    links 2^40 times: a hang), and two links to one folder read its images twice."""
    seen: dict[str, str] = {}
    for top, _, _ in os.walk(root, followlinks=True):
        real = os.path.realpath(top)
        if real in seen:
            raise ValueError(f"root {root!r}: {top!r} is the folder {seen[real]!r} again (a symbolic link loop, "
                             "or two links to one folder): its images would be read more than once")
        seen[real] = top


DATA_SPECS = "digits, mnist:ROOT, cifar10:ROOT, cifar100:ROOT or imagefolder:ROOT[:SIZE or :HxW]"
# imagefolder's optional size: N (short side resized, centre crop N x N; default 224) or HxW (resized exactly).
_IMAGE_SIZE = re.compile(r"(?P<h>[0-9]{1,5})(?:x(?P<w>[0-9]{1,5}))?")


def seeded_split(data: Dataset, seed: int, first: int) -> tuple[Dataset, Dataset]:
    """(`first` items of `data`, the rest), drawn by a seeded permutation: the same parts for
    the same seed. TensorDatasets stay TensorDatasets (sliced tensors train fast); anything
    else becomes Subsets."""
    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(int(seed)))
    parts = order[:first], order[first:]
    if isinstance(data, TensorDataset):
        return tuple(TensorDataset(*(t[part] for t in data.tensors)) for part in parts)
    return tuple(Subset(data, part.tolist()) for part in parts)


def load_data(spec: str, split: str) -> Dataset:
    """A data set from a command-line spec: ``digits``, ``mnist:ROOT`` (IDX files, gzip or raw),
    ``cifar10:ROOT`` / ``cifar100:ROOT`` (the binary version when ROOT holds it, else
    torchvision's folder), ``imagefolder:ROOT`` (224 x 224 crops), ``imagefolder:ROOT:N`` (N x N
    crops) or ``imagefolder:ROOT:HxW`` (resized to H x W)."""
    from .data_files import _CIFAR_BINARY, load_cifar_binary, load_mnist

    name, _, root = str(spec).partition(":")
    if name == "digits" and not root:
        return load_digits(split)
    if name == "mnist" and root:
        return load_mnist(root, split)
    if name in ("cifar10", "cifar100") and root:
        binary = os.path.join(root, _CIFAR_BINARY[name][0])
        if os.path.isdir(binary) or os.path.isfile(os.path.join(root, _CIFAR_BINARY[name][1][0])):
            return load_cifar_binary(root, split, which=name)
        return load_cifar(root, split, which=name)
    if name == "imagefolder" and root:
        folder, _, size = root.rpartition(":")
        match = _IMAGE_SIZE.fullmatch(size) if folder else None
        if match is None or (os.path.isdir(root) and not os.path.isdir(folder)):   # a folder named "x:16"
            return load_imagefolder(root)
        h, w = int(match["h"]), match["w"]
        return load_imagefolder(folder, size=(h, int(w)) if w is not None else h)
    raise ValueError(f"data: expected {DATA_SPECS}, got {spec!r}")
