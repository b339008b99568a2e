"""Training-time augmentation: random translations of a batch of images, the one
augmentation that suits every image task (flips and crops change the label of digits and
text; a shift of a few pixels never does).

Reference and suspect models are trained with and without it because the recipe space of
real owners spans both: an independent model trained with augmentation is smoother near the
data, and one without is not, and a fingerprint must be judged against both.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["default_shift", "random_shift"]

# Images of at most this many values (C x H x W) are shifted by one gather, larger ones by a
# slice per distinct offset: the same pixels either way. On this project's 2-core Xeon, at
# batch 64, the gather was 2.7-10x faster from 1x8x8 to 3x64x64 images (up to 49 small slice
# copies a batch cost more than a small network's training step at 28x28), 1.3-1.7x at
# 3x96x96 and 3x128x128, and 0.8x at 3x224x224, where the slices stay
# (benchmarks/results/random-shift-2026-12-05).
_GATHER_MAX = 65536


def default_shift(height: int, width: int) -> int:
    """The largest shift for an image of this size: an eighth of its side, at least one pixel
    (the usual 4-pixel pad-and-crop of 32x32 CIFAR images)."""
    return max(1, round(min(height, width) / 8))


def random_shift(x: torch.Tensor, generator: torch.Generator, max_shift: int | None = None) -> torch.Tensor:
    """Each image of `x` [B, C, H, W] moved by its own random offset in [-s, s] per axis, the
    uncovered border filled with zeros (pad and crop). Other shapes come back unchanged."""
    if x.dim() != 4 or len(x) == 0:
        return x
    s = default_shift(x.shape[2], x.shape[3]) if max_shift is None else int(max_shift)
    offsets = torch.randint(0, 2 * s + 1, (len(x), 2), generator=generator)
    padded = F.pad(x, (s, s, s, s))
    height, width = x.shape[2], x.shape[3]
    out = torch.empty_like(x)   # x's memory format
    if x[0].numel() <= _GATHER_MAX:
        # One gather for the whole batch: image b's pixel (r, c) is the padded image's
        # (r + dy_b, c + dx_b).
        offsets = offsets.to(x.device)
        rows = offsets[:, 0, None] + torch.arange(height, device=x.device)           # [B, H]
        cols = offsets[:, 1, None] + torch.arange(width, device=x.device)            # [B, W]
        index = (rows[:, :, None] * (width + 2 * s) + cols[:, None, :]).flatten(1)   # [B, H*W] into the padded plane
        picked = padded.flatten(2).gather(2, index[:, None, :].expand(-1, x.shape[1], -1))
        out.copy_(picked.view_as(x))
        return out
    # One slice per distinct offset: at most (2s+1)^2 slices, never one per image.
    for dy, dx in torch.unique(offsets, dim=0).tolist():
        rows = ((offsets[:, 0] == dy) & (offsets[:, 1] == dx)).nonzero().flatten().to(x.device)
        out[rows] = padded[rows, :, dy:dy + height, dx:dx + width]
    return out
