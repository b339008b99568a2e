"""CIFAR-style networks for 32x32 inputs: ResNet-(6n+2) (He et al. 2016, section 4.2) and
Wide ResNet (Zagoruyko & Komodakis 2016)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .._validate import positive_int

__all__ = ["CifarResNet", "WideResNet", "cifar_resnet", "resnet20", "wide_resnet", "wide_resnet28_10"]


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


def _stages(block, in_planes: int, widths, strides, blocks: int, **kw) -> tuple[list[nn.Sequential], int]:
    """Stages of `blocks` blocks each; the first block of a stage takes its stride."""
    stages = []
    for planes, stride in zip(widths, strides):
        layers = []
        for index in range(blocks):
            layers.append(block(in_planes, planes, stride if index == 0 else 1, **kw))
            in_planes = planes
        stages.append(nn.Sequential(*layers))
    return stages, in_planes


class CifarResNet(nn.Module):
    """ResNet-(6n+2) for 32x32 inputs: 3 stages of n BasicBlocks (16/32/64)."""

    def __init__(self, depth: int, num_classes: int, in_channels: int, shortcut: str):
        super().__init__()
        if not isinstance(depth, int) or depth < 8 or (depth - 2) % 6 != 0:
            raise ValueError(f"depth: must be 6n+2 with n >= 1 (20, 32, 44, 56, 110, ...), got {depth!r}")
        if shortcut not in ("A", "B"):
            raise ValueError(f"shortcut: must be 'A' (zero-pad) or 'B' (1x1 conv), got {shortcut!r}")
        positive_int("num_classes", num_classes)
        positive_int("in_channels", in_channels)
        self.conv1 = nn.Conv2d(in_channels, 16, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        stages, _ = _stages(_BasicBlock, 16, (16, 32, 64), (1, 2, 2), (depth - 2) // 6, shortcut=shortcut)
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
            raise ValueError(f"depth: must be 6n+4 with n >= 1 (10, 16, 22, 28, 40, ...), got {depth!r}")
        positive_int("widen", widen)
        positive_int("num_classes", num_classes)
        positive_int("in_channels", in_channels)
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout: must be in [0, 1), got {dropout!r}")
        widths = (16 * widen, 32 * widen, 64 * widen)
        self.conv1 = nn.Conv2d(in_channels, 16, 3, padding=1, bias=False)
        groups, in_planes = _stages(_WideBlock, 16, widths, (1, 2, 2), (depth - 4) // 6, dropout=dropout)
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


def wide_resnet(depth: int, widen: int, num_classes: int = 10, in_channels: int = 3,
                dropout: float = 0.0) -> WideResNet:
    """Wide ResNet of any depth (6n+4) and widening factor; tiny ones for tests."""
    return WideResNet(depth, widen, num_classes, in_channels, dropout)


def wide_resnet28_10(num_classes: int = 10, in_channels: int = 3, dropout: float = 0.0) -> WideResNet:
    """WRN-28-10 (~36.5M parameters)."""
    return WideResNet(28, 10, num_classes, in_channels, dropout)
