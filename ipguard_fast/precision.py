"""The precision a training runs at: float32, or on CUDA bf16 autocast with channels_last
images and conv weights (tensor cores).

Which is faster depends on the model: measured on an H200, bf16 + channels_last trains
ResNet-50 at 224x224 1.56x faster, and small CNNs and ResNet-20 at 32x32 (launch-bound at
batch 64) 0.76-0.96x as fast (benchmarks/results/protect-costs-2026-12-04). So float32
is the default, and protect's plan times both on the owner and trains its references at
the faster one (`chosen_precision`); IPGUARD_FAST_TRAIN_PRECISION=bf16|fp32 forces one.
"""
from __future__ import annotations

import contextlib
import contextvars
import os
from typing import Iterator

import torch
from torch import nn

from ._validate import ArgumentError

__all__ = ["PRECISIONS", "TrainingPrecision", "chosen_precision", "training_precision"]

PRECISIONS = ("fp32", "bf16")
_CHOSEN: contextvars.ContextVar[str | None] = contextvars.ContextVar("ipguard_fast_train_precision", default=None)


class TrainingPrecision:
    """One training's precision: the autocast context, the images' memory format, and the
    model's memory format restored afterwards (a trained model leaves as it came)."""

    def __init__(self, enabled: bool, converted: bool):
        self.enabled, self.converted = enabled, converted

    def autocast(self):
        return torch.autocast("cuda", dtype=torch.bfloat16) if self.enabled else contextlib.nullcontext()

    def images(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.enabled and x.dim() == 4 else x

    def restore(self, model: nn.Module) -> None:
        if self.converted:
            model.to(memory_format=torch.contiguous_format)


def training_precision(model: nn.Module, device: torch.device, precision: str | None = None) -> TrainingPrecision:
    """The precision `model` trains at on `device`: `precision`, else the environment's, else
    the one chosen for the enclosing block, else float32. bf16 applies on CUDA only; there
    `model`'s conv weights become channels_last until `restore`."""
    name = precision or os.environ.get("IPGUARD_FAST_TRAIN_PRECISION") or _CHOSEN.get() or "fp32"
    if name not in PRECISIONS:
        raise ArgumentError("precision", f"expected one of {PRECISIONS}, got {name!r}")
    enabled = name == "bf16" and device.type == "cuda" and torch.cuda.is_bf16_supported()
    converted = enabled and any(isinstance(m, nn.Conv2d) for m in model.modules())
    if converted:
        model.to(memory_format=torch.channels_last)
    return TrainingPrecision(enabled, converted)


@contextlib.contextmanager
def chosen_precision(name: str) -> Iterator[None]:
    """Trainings inside the block run at `name` (unless the environment forces another)."""
    if name not in PRECISIONS:
        raise ArgumentError("precision", f"expected one of {PRECISIONS}, got {name!r}")
    token = _CHOSEN.set(name)
    try:
        yield
    finally:
        _CHOSEN.reset(token)
