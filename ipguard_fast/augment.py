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
    out = torch.empty_like(x)
    # One slice per distinct offset: at most (2s+1)^2 slices, never one per image.
    for dy, dx in torch.unique(offsets, dim=0).tolist():
        rows = ((offsets[:, 0] == dy) & (offsets[:, 1] == dx)).nonzero().flatten().to(x.device)
        out[rows] = padded[rows, :, dy:dy + height, dx:dx + width]
    return out
