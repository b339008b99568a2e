"""A small generic classifier for any input shape: what fingerprint selection trains as an
independent reference model, and distils the owner into, when it knows nothing about the
owner's architecture."""
from __future__ import annotations

import math
from collections.abc import Sequence

from torch import nn

from .._validate import ArgumentError, image_shape, positive_int

__all__ = ["GenericCNN", "GenericMLP"]

# Images larger than this (per side) are average-pooled down to it first, so the first
# layer stays small whatever the input size (3x224x224 would otherwise give 38M weights).
_MAX_SIDE = 32


class GenericMLP(nn.Module):
    """flatten -> Linear(D, hidden) -> ReLU -> ``fc``; [C, H, W] inputs with a side above 32
    are average-pooled to at most 32x32 first."""

    def __init__(self, input_shape: Sequence[int], num_classes: int, hidden: int = 256):
        super().__init__()
        shape = image_shape("input_shape", input_shape)
        positive_int("num_classes", num_classes)
        positive_int("hidden", hidden)
        layers: list[nn.Module] = []
        if len(shape) == 3 and max(shape[1:]) > _MAX_SIDE:
            side = (min(shape[1], _MAX_SIDE), min(shape[2], _MAX_SIDE))
            layers.append(nn.AdaptiveAvgPool2d(side))
            shape = (shape[0], *side)
        layers += [nn.Flatten(), nn.Linear(math.prod(shape), hidden), nn.ReLU(inplace=True)]
        self.body = nn.Sequential(*layers)
        self.fc = nn.Linear(hidden, num_classes)

    def forward(self, x):
        return self.fc(self.body(x))


class GenericCNN(nn.Module):
    """A conv net of its own design for any [C, H, W] input: two 3x3 conv-BN-ReLU layers of
    `width` channels, a 2x2 max pool where the side allows it, a third of 2 x `width`, a
    global average pool and ``fc``. Unlike the MLP it shares the inductive bias of most
    image owners (local filters, pooling), and unlike the owner's own architecture it is
    another design and wider than small owners: independents of other conv designs and
    widths keep more of an owner's points than MLPs do. Sides above 32 are average-pooled
    to 32 first, as GenericMLP does."""

    def __init__(self, input_shape: Sequence[int], num_classes: int, width: int = 64):
        super().__init__()
        shape = image_shape("input_shape", input_shape)
        if len(shape) != 3:
            raise ArgumentError("input_shape", f"GenericCNN needs an image shape [C, H, W], got {tuple(shape)}")
        positive_int("num_classes", num_classes)
        positive_int("width", width)
        channels, side = shape[0], min(shape[1:])
        layers: list[nn.Module] = []
        if max(shape[1:]) > _MAX_SIDE:
            layers.append(nn.AdaptiveAvgPool2d((min(shape[1], _MAX_SIDE), min(shape[2], _MAX_SIDE))))
            side = min(side, _MAX_SIDE)
        layers += _conv_bn_relu(channels, width) + _conv_bn_relu(width, width)
        if side >= 4:
            layers.append(nn.MaxPool2d(2))
        layers += _conv_bn_relu(width, 2 * width) + [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        self.body = nn.Sequential(*layers)
        self.fc = nn.Linear(2 * width, num_classes)

    def forward(self, x):
        return self.fc(self.body(x))


def _conv_bn_relu(inputs: int, outputs: int) -> list[nn.Module]:
    return [nn.Conv2d(inputs, outputs, 3, padding=1, bias=False), nn.BatchNorm2d(outputs), nn.ReLU(inplace=True)]
