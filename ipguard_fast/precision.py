"""The precision a training runs at: float32, float32 with channels_last images and conv
weights ("fp32-cl": oneDNN's fast layout on CPU), or bf16 autocast with channels_last where
the device multiplies bf16 natively (`native_bf16`: a CUDA GPU's tensor cores, a CPU's AMX
tiles).

Which is faster depends on the model: measured on an H200, bf16 + channels_last trains
ResNet-50 at 224x224 1.18-1.56x faster, and small CNNs and ResNet-20 at 32x32 (launch-bound
at batch 64) 0.76-0.96x as fast (benchmarks/results/protect-costs-2026-12-04); on CPU
fp32-cl trains the digits CNN 1.1-1.3x faster on an AVX2 EPYC and 1.5-2.1x on an AVX-512
Xeon; on a CPU with AMX (that Xeon) bf16 trains it 1.5-2.1x faster than fp32-cl. float32
is the default; protect's references train at fp32-cl where its pool runs channels_last (a
conv owner on CPU), else at float32, and at bf16 on a CPU with AMX when the caller asks for a
bf16 pool (`chosen_precision`; why a rule and not the fastest, and why bf16 is not the
default: selection/plan_costs.py). IPGUARD_FAST_TRAIN_PRECISION=fp32|fp32-cl|bf16 forces one.
"""
from __future__ import annotations

import contextlib
import contextvars
import os
from typing import Iterator

import torch
from torch import nn

from ._validate import ArgumentError
from .modules import canonical_layout

__all__ = ["PRECISIONS", "TrainingPrecision", "chosen_precision", "current_precision", "effective_precision",
           "native_bf16", "training_precision"]

PRECISIONS = ("fp32", "fp32-cl", "bf16")
_CHOSEN: contextvars.ContextVar[str | None] = contextvars.ContextVar("ipguard_fast_train_precision", default=None)


class TrainingPrecision:
    """One training's precision: the autocast context (`enabled`: bf16), the images' memory
    format (`channels_last`), and the model's memory format restored afterwards (a trained
    model leaves as it came)."""

    def __init__(self, enabled: bool, converted: bool, channels_last: bool | None = None, device_type: str = "cuda"):
        self.enabled, self.converted, self.device_type = enabled, converted, device_type
        self.channels_last = enabled if channels_last is None else channels_last

    def autocast(self):
        return torch.autocast(self.device_type, dtype=torch.bfloat16) if self.enabled else contextlib.nullcontext()

    def images(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last and x.dim() == 4 else x

    def restore(self, model: nn.Module) -> None:
        if self.converted:
            canonical_layout(model)


def training_precision(model: nn.Module, device: torch.device, precision: str | None = None) -> TrainingPrecision:
    """The precision `model` trains at on `device`: `precision`, else the environment's, else
    the one chosen for the enclosing block, else float32. bf16 applies where the device
    multiplies it natively (`native_bf16`), else float32 as given; with it and with fp32-cl
    `model`'s conv weights become channels_last until `restore`."""
    name = precision or current_precision()
    if name not in PRECISIONS:
        raise ArgumentError("precision", f"expected one of {PRECISIONS}, got {name!r}")
    enabled = name == "bf16" and native_bf16(device)
    layout = enabled or name == "fp32-cl"
    converted = layout and any(isinstance(m, nn.Conv2d) for m in model.modules())
    if converted:
        model.to(memory_format=torch.channels_last)
    return TrainingPrecision(enabled, converted, channels_last=layout, device_type=device.type)


def native_bf16(device: torch.device) -> bool:
    """Whether `device` multiplies bf16 natively: a CUDA GPU that supports it, or a CPU with
    AMX tiles (Intel Xeon since Sapphire Rapids), where oneDNN's bf16 kernels trained the
    digits CNN 1.5-2.1x and ran its input gradient 2-3x faster than fp32-cl. Elsewhere bf16
    is emulated and slower than float32, so a training asked for bf16 runs at float32."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    probe = getattr(torch.cpu, "_is_amx_tile_supported", None)   # private in torch 2.x: absent means unknown, so no
    return device.type == "cpu" and probe is not None and bool(probe())


def current_precision() -> str:
    """What a training here runs at unless its caller names one: the environment's, else
    the enclosing chosen_precision block's, else float32."""
    return os.environ.get("IPGUARD_FAST_TRAIN_PRECISION") or _CHOSEN.get() or "fp32"


def effective_precision(chosen: str) -> str:
    """What a training inside chosen_precision(`chosen`) runs at: the environment's, if set."""
    return os.environ.get("IPGUARD_FAST_TRAIN_PRECISION") or chosen


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
