"""--no-refine, --positive-focus and --negative-cap as protect's `refine` argument."""
from __future__ import annotations

import math


def refine_arg(args):
    """--no-refine, --positive-focus and --negative-cap as protect's `refine`: False, True
    (the default refinement) or a RefineConfig with the focus and the negatives' cap."""
    from .._validate import ArgumentError
    from ..selection.refine import RefineConfig

    settings = {}
    for option, name in (("--positive-focus", "positive_focus"), ("--negative-cap", "negative_cap")):
        value = getattr(args, name, None)
        if value is not None and (not math.isfinite(value) or value <= 0):
            raise ArgumentError(option, f"must be a positive number of logits, got {value!r}")
        if value is not None:
            settings[name] = value
    if args.no_refine or not settings:
        return not args.no_refine
    return RefineConfig(**settings)
