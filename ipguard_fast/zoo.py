"""Datasets and model builders used to train owners and suspects.

Conventions shared by the whole package:

* images are float32 in [0, 1] with shape [N, C, H, W]; labels are int64;
* every model takes raw [0, 1] pixels -- any normalisation lives inside the
  model (see :class:`Normalized`), so fingerprints are always plain images;
* the classifier's final layer is an ``nn.Linear`` that :func:`last_layer`
  can find, because the post-processing attacks (FTLL, RTLL, ...) fine-tune or
  re-initialise exactly that layer.

Nothing here ever downloads: datasets come from scikit-learn's bundled digits
or from local folders, weights only from local files.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from typing import TypeVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset, TensorDataset

__all__ = [
    "CIFAR10_MEAN",
    "CIFAR10_STD",
    "CifarResNet",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "DigitsCNN",
    "DigitsMLP",
    "Normalized",
    "WideResNet",
    "build_model",
    "cifar_resnet",
    "digits_input_shape",
    "last_layer",
    "load_cifar",
    "load_digits",
    "load_imagefolder",
    "reinitialize",
    "resnet20",
    "seeded",
    "timm_model",
    "torchvision_model",
    "wide_resnet",
    "wide_resnet28_10",
]

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

M = TypeVar("M", bound=nn.Module)


# ---------------------------------------------------------------------------
# Seeded construction
# ---------------------------------------------------------------------------


def seeded(factory: Callable[[], M], seed: int) -> M:
    """Call ``factory()`` with the global torch RNG seeded to ``seed``.

    The global RNG state is restored afterwards (``fork_rng``), so building a
    model never perturbs the caller's randomness and the same seed always
    gives the same initial weights.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return factory()


def reinitialize(module: nn.Module, seed: int) -> nn.Module:
    """Re-draw the parameters of ``module`` in place, reproducibly.

    Calls ``reset_parameters()`` on every submodule that defines it (Linear,
    Conv, BatchNorm, ...) under a seeded, forked RNG. Used by RTLL/RTAL (on
    the last layer) and to turn a copy of the owner into a fresh student.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for sub in module.modules():
            reset = getattr(sub, "reset_parameters", None)
            if callable(reset):
                reset()
            reset_stats = getattr(sub, "reset_running_stats", None)
            if callable(reset_stats):
                reset_stats()
    return module


# ---------------------------------------------------------------------------
# Digits (scikit-learn's bundled 8x8 digits; works offline)
# ---------------------------------------------------------------------------

_SPLITS = ("train", "test", "all")


def _check_size(size: int | None) -> None:
    if size is not None and (not isinstance(size, int) or isinstance(size, bool) or size < 1):
        raise ValueError(f"size must be a positive int or None, got {size!r}")


def _check_channels(channels: int) -> None:
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels!r}")


def digits_input_shape(size: int | None = None, channels: int = 1) -> tuple[int, int, int]:
    """The [C, H, W] shape of images returned by :func:`load_digits`."""
    _check_size(size)
    _check_channels(channels)
    side = 8 if size is None else size
    return (channels, side, side)


def load_digits(
    split: str = "train",
    *,
    size: int | None = None,
    channels: int = 1,
    test_fraction: float = 0.2,
    seed: int = 0,
) -> TensorDataset:
    """scikit-learn's 1,797 handwritten digits as a ``TensorDataset``.

    Images are float32 in [0, 1] (raw values 0..16 divided by 16) with shape
    [N, channels, 8, 8], or [N, channels, size, size] when ``size`` is given
    (bilinear upsampling, so CIFAR/ImageNet architectures can be benchmarked
    on them). The train/test split is stratified by class and determined by
    ``seed`` alone, so owner and suspects trained in separate calls always
    see the same split.
    """
    if split not in _SPLITS:
        raise ValueError(f"split must be one of {_SPLITS}, got {split!r}")
    _check_size(size)
    _check_channels(channels)
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction!r}")

    from sklearn.datasets import load_digits as _sk_load_digits
    from sklearn.model_selection import train_test_split

    bunch = _sk_load_digits()
    images = bunch.images.astype(np.float32) / 16.0
    labels = bunch.target.astype(np.int64)

    if split != "all":
        index = np.arange(len(labels))
        train_idx, test_idx = train_test_split(
            index, test_size=test_fraction, stratify=labels, random_state=seed
        )
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


class DigitsCNN(nn.Module):
    """Small conv net for 8x8 digits (conv-conv-pool, then a 2-layer head).

    The adaptive pool makes it accept larger inputs too (e.g. 32x32 digits);
    on 8x8 inputs it is the identity. The last layer is ``self.fc``.
    """

    def __init__(self, num_classes: int = 10, width: int = 32, in_channels: int = 1, hidden: int = 128):
        super().__init__()
        _check_positive("num_classes", num_classes)
        _check_positive("width", width)
        _check_positive("in_channels", in_channels)
        _check_positive("hidden", hidden)
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(width, 2 * width, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.AdaptiveAvgPool2d(4),
        )
        self.hidden = nn.Sequential(nn.Flatten(), nn.Linear(2 * width * 16, hidden), nn.ReLU(inplace=True))
        self.fc = nn.Linear(hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.hidden(self.features(x)))


class DigitsMLP(nn.Module):
    """Fully connected net: flatten -> linear -> ReLU -> linear -> ReLU -> ``fc``.

    A deliberately different architecture from :class:`DigitsCNN`, used for
    negative suspects and for distillation into a smaller student.
    """

    def __init__(self, num_classes: int = 10, hidden: int = 128, in_features: int = 64):
        super().__init__()
        _check_positive("num_classes", num_classes)
        _check_positive("hidden", hidden)
        _check_positive("in_features", in_features)
        self.body = nn.Sequential(
            nn.Flatten(),
            nn.Linear(in_features, hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, hidden),
            nn.ReLU(inplace=True),
        )
        self.fc = nn.Linear(hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.body(x))


def _check_positive(name: str, value: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")


# ---------------------------------------------------------------------------
# Finding the classifier layer
# ---------------------------------------------------------------------------

# Attribute paths that hold the classifier in common model families:
# torchvision ResNet/Inception/GoogLeNet ("fc"), VGG/EfficientNet/MobileNet/
# DenseNet ("classifier"), Swin/timm ("head"), torchvision ViT ("heads.head").
_HEAD_PATHS = ("fc", "classifier", "heads.head", "head")
# Wrappers (Normalized, fp16 wrappers, DataParallel) keep the real model here.
_WRAPPER_ATTRS = ("model", "module")


def last_layer(model: nn.Module) -> nn.Linear:
    """The final ``nn.Linear`` of a classifier (the layer FTLL/RTLL touch).

    Looks for the conventional head attributes (``fc``, ``classifier``,
    ``heads.head``, ``head``); if one is a container (e.g. VGG's classifier
    ``Sequential``) its last Linear is returned. Wrappers exposing the inner
    network as ``.model``/``.module`` are unwrapped. Otherwise falls back to
    the last ``nn.Linear`` in module order.
    """
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be an nn.Module, got {type(model).__name__}")
    found = _find_head(model)
    if found is None:
        raise ValueError(
            f"model ({type(model).__name__}) has no nn.Linear classifier layer; "
            "last_layer needs a Linear head (convolutional heads such as SqueezeNet's are unsupported)"
        )
    return found


def _find_head(model: nn.Module) -> nn.Linear | None:
    for path in _HEAD_PATHS:
        try:
            head = model.get_submodule(path)
        except AttributeError:
            continue
        linear = head if isinstance(head, nn.Linear) else _last_linear(head)
        if linear is not None:
            return linear
    for attr in _WRAPPER_ATTRS:
        inner = getattr(model, attr, None)
        if isinstance(inner, nn.Module) and inner is not model:
            found = _find_head(inner)
            if found is not None:
                return found
    return _last_linear(model)


def _last_linear(module: nn.Module) -> nn.Linear | None:
    linears = [m for m in module.modules() if isinstance(m, nn.Linear)]
    return linears[-1] if linears else None


# ---------------------------------------------------------------------------
# Normalisation wrapper
# ---------------------------------------------------------------------------


class Normalized(nn.Module):
    """Normalise [0, 1] pixels with per-channel mean/std, then call ``model``.

    Keeps the package-wide convention that models eat raw pixels, so
    fingerprints (which are images) never depend on a preprocessing step.
    """

    def __init__(self, model: nn.Module, mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        mean_t = torch.as_tensor(mean, dtype=torch.float32).flatten()
        std_t = torch.as_tensor(std, dtype=torch.float32).flatten()
        if mean_t.numel() == 0:
            raise ValueError("mean must have at least one entry (one per channel)")
        if mean_t.numel() != std_t.numel():
            raise ValueError(
                f"mean and std must have the same length, got {mean_t.numel()} and {std_t.numel()}"
            )
        if not bool((std_t > 0).all()):
            raise ValueError(f"std must be strictly positive, got {std_t.tolist()}")
        self.model = model
        self.register_buffer("mean", mean_t.view(-1, 1, 1))
        self.register_buffer("std", std_t.view(-1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != self.mean.shape[0]:
            raise ValueError(
                f"x must be [N, {self.mean.shape[0]}, H, W] to match mean/std, got {tuple(x.shape)}"
            )
        return self.model((x - self.mean) / self.std)


# ---------------------------------------------------------------------------
# CIFAR ResNet (He et al. 2016, section 4.2)
# ---------------------------------------------------------------------------


class _ShortcutA(nn.Module):
    """Parameter-free shortcut: subsample by stride and zero-pad channels."""

    def __init__(self, in_planes: int, planes: int, stride: int):
        super().__init__()
        self.stride = stride
        self.pad = planes - in_planes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, :: self.stride, :: self.stride]
        half = self.pad // 2
        return F.pad(x, (0, 0, 0, 0, half, self.pad - half))


class _BasicBlock(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int, shortcut: str):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        if stride == 1 and in_planes == planes:
            self.shortcut: nn.Module = nn.Identity()
        elif shortcut == "A":
            self.shortcut = _ShortcutA(in_planes, planes, stride)
        else:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """ResNet-(6n+2) for 32x32 inputs: 3 stages of n BasicBlocks (16/32/64)."""

    def __init__(self, depth: int, num_classes: int, in_channels: int, shortcut: str):
        super().__init__()
        if not isinstance(depth, int) or depth < 8 or (depth - 2) % 6 != 0:
            raise ValueError(f"depth must be 6n+2 with n >= 1 (20, 32, 44, 56, 110, ...), got {depth!r}")
        if shortcut not in ("A", "B"):
            raise ValueError(f"shortcut must be 'A' (zero-pad) or 'B' (1x1 conv), got {shortcut!r}")
        _check_positive("num_classes", num_classes)
        _check_positive("in_channels", in_channels)
        blocks = (depth - 2) // 6
        self.conv1 = nn.Conv2d(in_channels, 16, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        stages, in_planes = [], 16
        for planes, stride in ((16, 1), (32, 2), (64, 2)):
            layers = []
            for i in range(blocks):
                layers.append(_BasicBlock(in_planes, planes, stride if i == 0 else 1, shortcut))
                in_planes = planes
            stages.append(nn.Sequential(*layers))
        self.layer1, self.layer2, self.layer3 = stages
        self.fc = nn.Linear(64, num_classes)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)
        return self.fc(out)


def cifar_resnet(depth: int, num_classes: int = 10, in_channels: int = 3, shortcut: str = "A") -> CifarResNet:
    """CIFAR-style ResNet of the given depth (6n+2)."""
    return CifarResNet(depth, num_classes, in_channels, shortcut)


def resnet20(num_classes: int = 10, in_channels: int = 3, shortcut: str = "A") -> CifarResNet:
    """ResNet-20 (~0.27M parameters) with option-A shortcuts by default."""
    return CifarResNet(20, num_classes, in_channels, shortcut)


# ---------------------------------------------------------------------------
# Wide ResNet (Zagoruyko & Komodakis 2016)
# ---------------------------------------------------------------------------


class _WideBlock(nn.Module):
    """Pre-activation block: BN-ReLU-conv3x3-(dropout)-BN-ReLU-conv3x3."""

    def __init__(self, in_planes: int, planes: int, stride: int, dropout: float):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.shortcut: nn.Module = (
            nn.Identity()
            if stride == 1 and in_planes == planes
            else nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = F.relu(self.bn1(x))
        # When the shapes change the projection sees the pre-activated input,
        # as in the reference implementation.
        skip = x if isinstance(self.shortcut, nn.Identity) else self.shortcut(pre)
        out = self.conv1(pre)
        out = self.conv2(F.relu(self.bn2(self.dropout(out))))
        return out + skip


class WideResNet(nn.Module):
    """WRN-depth-widen: 3 groups of (depth-4)/6 blocks, widths 16k/32k/64k."""

    def __init__(self, depth: int, widen: int, num_classes: int, in_channels: int, dropout: float = 0.0):
        super().__init__()
        if not isinstance(depth, int) or depth < 10 or (depth - 4) % 6 != 0:
            raise ValueError(f"depth must be 6n+4 with n >= 1 (10, 16, 22, 28, 40, ...), got {depth!r}")
        _check_positive("widen", widen)
        _check_positive("num_classes", num_classes)
        _check_positive("in_channels", in_channels)
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
        blocks = (depth - 4) // 6
        widths = (16 * widen, 32 * widen, 64 * widen)
        self.conv1 = nn.Conv2d(in_channels, 16, 3, padding=1, bias=False)
        groups, in_planes = [], 16
        for planes, stride in zip(widths, (1, 2, 2)):
            layers = []
            for i in range(blocks):
                layers.append(_WideBlock(in_planes, planes, stride if i == 0 else 1, dropout))
                in_planes = planes
            groups.append(nn.Sequential(*layers))
        self.block1, self.block2, self.block3 = groups
        self.bn = nn.BatchNorm2d(in_planes)
        self.fc = nn.Linear(in_planes, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.block3(self.block2(self.block1(self.conv1(x))))
        out = F.relu(self.bn(out))
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)
        return self.fc(out)


def wide_resnet(
    depth: int, widen: int, num_classes: int = 10, in_channels: int = 3, dropout: float = 0.0
) -> WideResNet:
    """Wide ResNet of any depth (6n+4) and widening factor; tiny ones for tests."""
    return WideResNet(depth, widen, num_classes, in_channels, dropout)


def wide_resnet28_10(num_classes: int = 10, in_channels: int = 3, dropout: float = 0.0) -> WideResNet:
    """WRN-28-10 (~36.5M parameters)."""
    return WideResNet(28, 10, num_classes, in_channels, dropout)


# ---------------------------------------------------------------------------
# torchvision / timm models with local weights
# ---------------------------------------------------------------------------


def _load_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a state dict from a local .safetensors or torch.save file."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"weights_path {path!r} does not exist (weights are only read from local files)"
        )
    if path.endswith(".safetensors"):
        try:
            from safetensors.torch import load_file
        except ImportError as exc:  # pragma: no cover - safetensors ships with most torch installs
            raise ImportError("reading .safetensors weights requires the 'safetensors' package") from exc
        return load_file(path, device="cpu")
    state = torch.load(path, map_location="cpu", weights_only=True)
    # Training checkpoints often nest the weights.
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ValueError(f"weights_path {path!r} does not contain a state dict (got {type(state).__name__})")
    return state


def _maybe_load_weights(model: nn.Module, weights_path: str | os.PathLike | None) -> nn.Module:
    if weights_path is not None:
        model.load_state_dict(_load_state_dict(weights_path), strict=True)
    return model


def torchvision_model(
    name: str, num_classes: int = 1000, weights_path: str | os.PathLike | None = None, **kwargs
) -> nn.Module:
    """A torchvision classification model, randomly initialised or loaded
    from a local state-dict file (never downloaded). Extra ``kwargs`` go to
    the torchvision builder (e.g. ``aux_logits=False`` for Inception)."""
    import torchvision

    _check_positive("num_classes", num_classes)
    available = torchvision.models.list_models(module=torchvision.models)
    if name not in available:
        raise ValueError(
            f"name {name!r} is not a torchvision classification model; e.g. {', '.join(available[:8])}, ..."
        )
    model = torchvision.models.get_model(name, weights=None, num_classes=num_classes, **kwargs)
    return _maybe_load_weights(model, weights_path)


def timm_model(
    name: str, num_classes: int = 1000, weights_path: str | os.PathLike | None = None, **kwargs
) -> nn.Module:
    """A timm model (optional dependency), weights only from a local file."""
    try:
        import timm
    except ImportError as exc:
        raise ImportError(
            f"timm_model({name!r}) needs the optional package 'timm', which is not installed "
            "(pip install timm); torchvision models work without it via torchvision_model()"
        ) from exc
    _check_positive("num_classes", num_classes)
    model = timm.create_model(name, pretrained=False, num_classes=num_classes, **kwargs)
    return _maybe_load_weights(model, weights_path)


# ---------------------------------------------------------------------------
# Local image datasets (CIFAR, ImageFolder)
# ---------------------------------------------------------------------------

_CIFAR_FOLDERS = {"cifar10": "cifar-10-batches-py", "cifar100": "cifar-100-python"}


def load_cifar(root: str | os.PathLike, split: str = "train", which: str = "cifar10") -> Dataset:
    """CIFAR-10/100 from a local torchvision-format folder (download=False).

    Returns a torchvision dataset of (float [3,32,32] image in [0,1], int label).
    """
    import torchvision
    from torchvision import transforms

    if which not in _CIFAR_FOLDERS:
        raise ValueError(f"which must be one of {tuple(_CIFAR_FOLDERS)}, got {which!r}")
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    cls = torchvision.datasets.CIFAR10 if which == "cifar10" else torchvision.datasets.CIFAR100
    try:
        return cls(os.fspath(root), train=split == "train", download=False, transform=transforms.ToTensor())
    except RuntimeError as exc:  # torchvision: "Dataset not found or corrupted."
        raise FileNotFoundError(
            f"{which} not found under root {os.fspath(root)!r}: expected the extracted "
            f"'{_CIFAR_FOLDERS[which]}' folder there (this package never downloads data)"
        ) from exc


def load_imagefolder(root: str | os.PathLike, size: int = 224, resize: int | None = None) -> Dataset:
    """An ImageFolder (one sub-folder per class) as [3, size, size] images in [0, 1].

    Images are resized so the short side is ``resize`` (default
    ``size * 256 / 224``, the usual ImageNet ratio) and centre-cropped.
    """
    from torchvision import datasets, transforms

    _check_positive("size", size)
    resize = round(size * 256 / 224) if resize is None else resize
    _check_positive("resize", resize)
    if resize < size:
        raise ValueError(f"resize ({resize}) must be >= size ({size}) so the centre crop fits")
    root = os.fspath(root)
    if not os.path.isdir(root):
        raise FileNotFoundError(f"root {root!r} is not a directory (expected one sub-folder per class)")
    transform = transforms.Compose(
        [transforms.Resize(resize), transforms.CenterCrop(size), transforms.ToTensor()]
    )
    try:
        return datasets.ImageFolder(root, transform=transform)
    except FileNotFoundError as exc:
        raise FileNotFoundError(f"root {root!r} has no class sub-folders with images: {exc}") from exc


# ---------------------------------------------------------------------------
# Registry
# ---------------------------------------------------------------------------

_REGISTERED = (
    "digits_cnn", "digits_mlp", "resnet20", "wrn28_10", "tv:<torchvision name>", "timm:<timm name>"
)


def build_model(
    name: str,
    num_classes: int,
    input_shape: Sequence[int],
    *,
    seed: int | None = None,
    **kwargs,
) -> nn.Module:
    """Build a model by registry name for inputs of shape ``input_shape`` ([C, H, W]).

    Names: ``digits_cnn``, ``digits_mlp``, ``resnet20``, ``wrn28_10``,
    ``tv:<torchvision name>``, ``timm:<timm name>``. ``kwargs`` go to the
    builder (e.g. ``width=`` for digits_cnn, ``weights_path=`` for tv/timm).
    With ``seed`` the initial weights are reproducible (see :func:`seeded`).
    """
    if not isinstance(name, str):
        raise ValueError(f"name must be a string, got {name!r}")
    shape = tuple(int(s) for s in input_shape)
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"input_shape must be (C, H, W) with positive entries, got {tuple(input_shape)!r}")
    _check_positive("num_classes", num_classes)
    channels = shape[0]

    def make() -> nn.Module:
        if name == "digits_cnn":
            return DigitsCNN(num_classes, in_channels=channels, **kwargs)
        if name == "digits_mlp":
            return DigitsMLP(num_classes, in_features=math.prod(shape), **kwargs)
        if name == "resnet20":
            return resnet20(num_classes, in_channels=channels, **kwargs)
        if name == "wrn28_10":
            return wide_resnet28_10(num_classes, in_channels=channels, **kwargs)
        if name.startswith("tv:"):
            if channels != 3:
                raise ValueError(f"torchvision models expect 3 input channels, input_shape has {channels}")
            return torchvision_model(name[3:], num_classes, **kwargs)
        if name.startswith("timm:"):
            return timm_model(name[5:], num_classes, in_chans=channels, **kwargs)
        raise ValueError(f"name {name!r} is not a registered model; known: {', '.join(_REGISTERED)}")

    return make() if seed is None else seeded(make, seed)
