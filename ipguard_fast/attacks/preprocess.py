"""Suspects that preprocess their inputs: the owner's copy behind an input transformation
(Gaussian noise, quantisation of the pixels, a small blur, a down-and-up resize). Boundary
points are fragile to exactly that, and the verifier sees only the labels."""
from __future__ import annotations

import copy
import hashlib
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .._validate import ArgumentError, finite_number
from .registry import Attack

__all__ = ["PREPROCESS", "Preprocess", "Preprocessed", "TRANSFORMS", "restart_noise", "transform"]

TRANSFORMS = ("noise", "quantize", "blur", "resize")


@dataclass(frozen=True)
class Preprocess:
    """`kind` with its `strength`: noise -- Gaussian sigma on [0, 1] pixels; quantize -- bits
    per pixel; blur -- the Gaussian kernel's sigma in pixels; resize -- the scale of the
    down-and-up resize (0.5: half the side, then back)."""

    kind: str
    strength: float

    def __post_init__(self):
        if self.kind not in TRANSFORMS:
            raise ArgumentError("kind", f"expected one of {TRANSFORMS}, got {self.kind!r}")
        finite_number("strength", self.strength, positive=True)
        if self.kind == "quantize" and not (1 <= self.strength <= 16 and float(self.strength).is_integer()):
            raise ArgumentError("strength", f"quantize takes whole bits from 1 to 16, got {self.strength!r}")
        if self.kind == "resize" and not self.strength < 1:
            raise ArgumentError("strength", f"resize takes a scale in (0, 1), got {self.strength!r}")


def transform(x: torch.Tensor, s: Preprocess, generator: torch.Generator | None = None) -> torch.Tensor:
    """`x` ([B, C, H, W] or [B, D] pixels in [0, 1]) as the suspect sees it."""
    if s.kind == "noise":
        noise = torch.randn(x.shape, generator=generator, dtype=x.dtype).to(x.device)
        return (x + s.strength * noise).clamp(0, 1)
    if s.kind == "quantize":
        levels = 2 ** int(s.strength) - 1
        # The rounded value, with the identity's gradient (straight-through): protect's
        # refinement climbs through this suspect's transformation like any other.
        return x + (torch.round(x * levels) / levels - x).detach()
    if x.dim() != 4:   # blur and resize act on images
        return x
    if s.kind == "blur":
        return _blur(x, s.strength)
    size = [max(1, round(d * s.strength)) for d in x.shape[2:]]
    return F.interpolate(F.interpolate(x, size=size, mode="bilinear", align_corners=False), size=list(x.shape[2:]),
                         mode="bilinear", align_corners=False)


def _blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    radius = max(1, round(2 * sigma))
    offsets = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    kernel = torch.exp(-offsets ** 2 / (2 * sigma ** 2))
    kernel = kernel / kernel.sum()
    channels = x.shape[1]
    rows = kernel.view(1, 1, 1, -1).repeat(channels, 1, 1, 1)
    padded = F.pad(x, (radius, radius, radius, radius), mode="replicate")
    out = F.conv2d(padded, rows, groups=channels)
    return F.conv2d(out, rows.transpose(2, 3), groups=channels)


class Preprocessed(nn.Module):
    """A copy of `model` behind the input transformation `settings`; the noise is drawn
    from a generator of its own (seeded), so a run is reproducible. `restart_noise(stream)`
    starts the draws over at a stream of the seed: work shared out in parts (torchrun
    ranks) restarts each part's noise at the part's number, so the draws do not depend on
    which process ran the parts before."""

    def __init__(self, model: nn.Module, settings: Preprocess, seed: int = 0):
        super().__init__()
        self.model = copy.deepcopy(model).eval()
        self.settings = settings
        # What the wrapper does is part of its state: two wrappers of one model with other
        # transformations are other models (weight hashes tell suspects and references apart).
        self.register_buffer("transformation", torch.tensor([TRANSFORMS.index(settings.kind), settings.strength]))
        self.seed = int(seed) % 2**63
        self.generator = torch.Generator().manual_seed(self.seed)

    def restart_noise(self, stream: int) -> None:
        digest = hashlib.sha256(f"ipguard_fast.noise/{self.seed}/{int(stream)}".encode()).digest()
        self.generator.manual_seed(int.from_bytes(digest[:8], "big") % 2**63)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(transform(x, self.settings, self.generator))


PREPROCESS = Attack("preprocess", Preprocess, lambda ctx, s: [Preprocessed(ctx.owner, s, ctx.seed)],
                    skeleton=lambda ctx, s: Preprocessed(ctx.owner, s, ctx.seed))


def restart_noise(models, stream: int) -> None:
    """Restart the noise of every Preprocessed model in `models` at `stream` (others have none)."""
    for model in models:
        if isinstance(model, Preprocessed):
            model.restart_noise(stream)
