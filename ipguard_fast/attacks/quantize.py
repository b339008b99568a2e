"""Weight quantisation of a copy (any bit width, emulated) and float16 inference."""
from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

from .._validate import ArgumentError
from .prune import WEIGHT_LAYERS
from .registry import Attack

__all__ = ["HALF", "QUANTIZE", "Half", "HalfPrecision", "Quantize", "quantize_int8", "quantize_weights"]


@dataclass(frozen=True)
class Quantize:
    """Symmetric per-output-channel rounding of conv/linear weights to `bits` bits."""

    bits: int = 8

    def __post_init__(self):
        _check_bits(self.bits)


@dataclass(frozen=True)
class Half:
    """float16 weights and activations behind a float32 interface (no settings)."""


def _check_bits(bits) -> int:
    if isinstance(bits, bool) or not isinstance(bits, int) or not 2 <= bits <= 16:
        raise ArgumentError("bits", f"must be an int from 2 to 16, got {bits!r}")
    return bits


def quantize_int8(model: nn.Module, layer_types: tuple[type[nn.Module], ...] = WEIGHT_LAYERS) -> nn.Module:
    """Emulated int8 weight quantisation, in place: symmetric, per output channel.

    torch.ao's dynamic quantisation is deprecated in this torch and would also round each
    batch's inputs to uint8 (outputs would depend on the batch), so the weights are
    rounded to 255 levels and stored back as float: a plain module that runs and
    back-propagates everywhere, conv layers included.
    """
    return quantize_weights(model, 8, layer_types)


@torch.no_grad()
def quantize_weights(model: nn.Module, bits: int,
                     layer_types: tuple[type[nn.Module], ...] = WEIGHT_LAYERS) -> nn.Module:
    """Emulated symmetric per-output-channel weight quantisation to ``bits`` bits, in place:
    each channel's weights rounded to 2 * (2**(bits-1) - 1) + 1 levels (int8: 255)."""
    top = 2 ** (_check_bits(bits) - 1) - 1
    layers = [m for m in model.modules() if isinstance(m, layer_types)]
    if not layers:
        raise ArgumentError("layer_types", f"model ({type(model).__name__}) has no layers of layer_types to quantise")
    for layer in layers:
        w = layer.weight
        flat = w.reshape(w.shape[0], -1)
        scale = flat.abs().amax(dim=1).clamp_min(torch.finfo(w.dtype).tiny) / float(top)
        q = torch.round(flat / scale[:, None]).clamp_(-top, top)
        w.copy_((q * scale[:, None]).reshape_as(w))
    return model.eval()


class HalfPrecision(nn.Module):
    """A float16 copy of a model behind a float32 interface: inputs cast to half, logits
    back to float. The wrapped model is a deep copy; calling ``.float()`` on the wrapper
    would undo the quantisation."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = copy.deepcopy(model).half().eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x.half()).float()


QUANTIZE = Attack("quantize", Quantize, lambda ctx, s: [quantize_weights(ctx.owner_copy(), s.bits)],
                  needs=("weights",))
HALF = Attack("half", Half, lambda ctx, s: [HalfPrecision(ctx.owner)],
              skeleton=lambda ctx, s: HalfPrecision(ctx.owner))
