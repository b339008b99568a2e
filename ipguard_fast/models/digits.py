"""The small networks of the digits demo, and how the demo trains them.

DigitsCNN is the demo's owner; DigitsMLP a deliberately different architecture for
independent models and for distillation into a smaller student. Both accept larger
inputs too (the CNN through an adaptive pool, the MLP with ``in_features``).
"""
from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .._validate import positive_int
from ..data import load_digits
from ..nn import seeded
from ..train import train_classifier

__all__ = ["DIGITS_ARCHITECTURES", "DIGITS_EPOCHS", "DIGITS_HARD_ARCHITECTURES", "DIGITS_LR", "DigitsCNN",
           "DigitsMLP", "train_digits_model"]


class _PoolTo(nn.Module):
    """nn.AdaptiveAvgPool2d(size) that hands an input already at that size straight through:
    the average of one pixel is that pixel, so the values and gradients are the same, but
    PyTorch's channels_last adaptive-pool backward is slow at that size (a seventh of an 8x8
    DigitsCNN's input-gradient step on a 2-core Xeon). Traced (torch.jit, torch.fx), scripted or
    compiled, it pools, so an exported graph accepts every input size, as it did before."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.jit.is_scripting():   # TorchScript compiles only the pooling
            # Traced (jit, dynamo, or torch.fx, whose x is a Proxy): the graph keeps the pool.
            exporting = not isinstance(x, torch.Tensor) or torch.jit.is_tracing() or torch.compiler.is_compiling()
            if not exporting and x.shape[-2:] == (self.size, self.size):
                return x
        return F.adaptive_avg_pool2d(x, self.size)

    def extra_repr(self) -> str:
        return f"output_size={self.size}"


class DigitsCNN(nn.Module):
    """Small conv net for 8x8 digits (conv-conv-pool, then a 2-layer head).

    The adaptive pool makes it accept larger inputs too (e.g. 32x32 digits);
    on 8x8 inputs it is the identity. The last layer is ``self.fc``.
    """

    def __init__(self, num_classes: int = 10, width: int = 32, in_channels: int = 1, hidden: int = 128):
        super().__init__()
        for name, value in (("num_classes", num_classes), ("width", width), ("in_channels", in_channels),
                            ("hidden", hidden)):
            positive_int(name, value)
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(width, 2 * width, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            _PoolTo(4),
        )
        self.hidden = nn.Sequential(nn.Flatten(), nn.Linear(2 * width * 16, hidden), nn.ReLU(inplace=True))
        self.fc = nn.Linear(hidden, num_classes)

    def forward(self, x):
        return self.fc(self.hidden(self.features(x)))


class DigitsMLP(nn.Module):
    """Fully connected net: flatten -> linear -> ReLU -> linear -> ReLU -> ``fc``."""

    def __init__(self, num_classes: int = 10, hidden: int = 128, in_features: int = 64):
        super().__init__()
        for name, value in (("num_classes", num_classes), ("hidden", hidden), ("in_features", in_features)):
            positive_int(name, value)
        self.body = nn.Sequential(
            nn.Flatten(),
            nn.Linear(in_features, hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, hidden),
            nn.ReLU(inplace=True),
        )
        self.fc = nn.Linear(hidden, num_classes)

    def forward(self, x):
        return self.fc(self.body(x))


# The demo's independent architectures (negative suspects), by short name.
DIGITS_ARCHITECTURES: dict[str, Callable[[], nn.Module]] = {"cnn": DigitsCNN, "mlp": DigitsMLP}

# The hard evaluation bed's independent architectures: the CNN at three widths and two
# MLPs, trained exactly like the owner (DIGITS_EPOCHS at DIGITS_LR), so they are as close
# to it as independent models get.
DIGITS_HARD_ARCHITECTURES: dict[str, Callable[[], nn.Module]] = {
    "cnn-w16": lambda: DigitsCNN(width=16),
    "cnn-w32": lambda: DigitsCNN(width=32),
    "cnn-w64": lambda: DigitsCNN(width=64),
    "mlp": DigitsMLP,
    "mlp-h256": lambda: DigitsMLP(hidden=256),
}

# Measured on CPU: DigitsCNN reaches 96.7-98.1% test accuracy over seeds 0-4 in
# about 2.3 s (single thread, batch 64, Adam).
DIGITS_EPOCHS = 5
DIGITS_LR = 3e-3


def train_digits_model(arch: str = "cnn", seed: int = 0, epochs: int = DIGITS_EPOCHS, lr: float = DIGITS_LR,
                       **kw) -> nn.Module:
    """Build DigitsCNN (``arch="cnn"``) or DigitsMLP (``"mlp"``) with seeded init
    and train it on ``load_digits("train")``. ``kw`` goes to :func:`train_classifier`.

    The data split is always the default one (split seed 0), whatever
    ``seed`` is, so owners and independent models share a test set.
    """
    if arch not in DIGITS_ARCHITECTURES:
        raise ValueError(f"arch: must be one of {tuple(DIGITS_ARCHITECTURES)}, got {arch!r}")
    model = seeded(DIGITS_ARCHITECTURES[arch], seed)
    return train_classifier(model, load_digits("train"), epochs=epochs, lr=lr, seed=seed, **kw)
