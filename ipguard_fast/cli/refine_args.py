"""--no-refine, --positive-focus, --negative-cap and --reference-fraction as protect's `refine` argument."""
from __future__ import annotations

import math


def refine_arg(args):
    """--no-refine, --positive-focus, --negative-cap and --reference-fraction as protect's
    `refine`: False, True (the default refinement) or a RefineConfig with the focus, the
    negatives' cap and the share of references drawn per step."""
    from .._validate import ArgumentError
    from ..selection.refine import RefineConfig

    settings = {}
    for option, name in (("--positive-focus", "positive_focus"), ("--negative-cap", "negative_cap")):
        value = getattr(args, name, None)
        if value is not None and (not math.isfinite(value) or value <= 0):
            raise ArgumentError(option, f"must be a positive number of logits, got {value!r}")
        if value is not None:
            settings[name] = value
    fraction = getattr(args, "reference_fraction", None)
    if fraction is not None and not (math.isfinite(fraction) and 0 < fraction <= 1):
        raise ArgumentError("--reference-fraction", f"must be a share in (0, 1], got {fraction!r}")
    if fraction is not None:
        if "positive_focus" in settings:
            raise ArgumentError("--reference-fraction", "takes no --positive-focus (the focus weighs every kind)")
        settings["reference_fraction"] = fraction
    if args.no_refine and settings:   # they shape a refinement that --no-refine skips: say so, never ignore them
        given = {"positive_focus": "--positive-focus", "negative_cap": "--negative-cap",
                 "reference_fraction": "--reference-fraction"}
        raise ArgumentError(given[next(iter(settings))], "sets the refinement, which --no-refine turns off")
    if not settings:
        return not args.no_refine
    return RefineConfig(**settings)
