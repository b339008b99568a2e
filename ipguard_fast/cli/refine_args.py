"""--no-refine and --positive-focus as protect's `refine` argument."""
from __future__ import annotations

import math


def refine_arg(args):
    """--no-refine and --positive-focus as protect's `refine`: False, True (the default
    refinement) or a RefineConfig with the focus."""
    from .._validate import ArgumentError
    from ..selection.refine import RefineConfig

    focus = getattr(args, "positive_focus", None)
    if args.no_refine or focus is None:
        return not args.no_refine
    if not math.isfinite(focus) or focus <= 0:
        raise ArgumentError("--positive-focus", f"must be a positive number of logits, got {focus!r}")
    return RefineConfig(positive_focus=focus)
