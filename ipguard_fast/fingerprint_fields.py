"""Checks of a FingerprintSet's tensors against what its meta records, run on every set made
or loaded (fingerprints.py): a file comes from whoever wrote it, and a set that contradicts
its own meta would give a matching rate of nothing."""
from __future__ import annotations

from typing import Any

import torch

from ._validate import ArgumentError, finite_number

__all__ = ["check_label_range", "check_pixel_box", "check_recorded_shape"]

# Pixels may sit this far outside the stored box (float noise of the clamp).
_BOX_TOLERANCE = 1e-5


def check_recorded_shape(images: torch.Tensor, meta: dict[str, Any]) -> None:
    """The images must have the shape the search recorded (meta input_shape): 9x9 images in
    an 8x8 file, which a CNN with a global pool takes too, verified the owner at 0.50."""
    recorded = meta.get("input_shape")
    if recorded is None:
        return
    if not isinstance(recorded, list) or not recorded or not all(
            isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in recorded):
        raise ArgumentError("FingerprintSet.meta['input_shape']", f"must be a list of positive ints, got {recorded!r}")
    if tuple(recorded) != tuple(images.shape[1:]):
        raise ValueError(f"FingerprintSet.images: one image has shape {list(images.shape[1:])} but "
                         f"meta['input_shape'] records {recorded}")


def check_pixel_box(images: torch.Tensor, meta: dict[str, Any]) -> None:
    """Fingerprints are pixels in the box the search clamped to (meta lo/hi, default [0, 1])."""
    lo = finite_number("FingerprintSet.meta['lo']", meta.get("lo", 0.0))
    hi = finite_number("FingerprintSet.meta['hi']", meta.get("hi", 1.0))
    if not lo < hi:
        raise ArgumentError("FingerprintSet.meta", f"'lo' and 'hi' must be numbers with lo < hi, got {lo!r}, {hi!r}")
    low, high = (float(images.min()), float(images.max())) if images.shape[0] else (lo, hi)
    if low < lo - _BOX_TOLERANCE or high > hi + _BOX_TOLERANCE:
        raise ValueError(f"FingerprintSet.images: pixels span [{low:g}, {high:g}], outside the box "
                         f"[{lo:g}, {hi:g}] of meta lo/hi")


def check_label_range(name: str, labels: torch.Tensor, num_classes: int | None) -> None:
    """Labels are classes of the owner: >= 0 and, when meta records it, below num_classes."""
    if labels.numel() == 0:
        return
    low, high = int(labels.min()), int(labels.max())
    if low < 0:
        raise ValueError(f"FingerprintSet.{name}: has negative label {low}")
    if num_classes is not None and high >= num_classes:
        raise ValueError(f"FingerprintSet.{name}: has label {high} but meta['num_classes'] is {num_classes}")
