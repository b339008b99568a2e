"""A small generic classifier for any input shape: what fingerprint selection trains as an
independent reference model, and distils the owner into, when it knows nothing about the
owner's architecture."""
from __future__ import annotations

import math
from collections.abc import Sequence

from torch import nn

from .._validate import image_shape, positive_int

__all__ = ["GenericMLP"]

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
