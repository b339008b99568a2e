"""Which threshold a verdict uses, and whether the file's own one can show a copy at all
(verdicts.verify, remote verification and the evaluation share them)."""
from __future__ import annotations

from typing import Any

from ._validate import ArgumentError, probability
from .fingerprints import FingerprintSet

__all__ = ["DEFAULT_THRESHOLD", "conclusive_threshold", "resolve_threshold"]

# IPGuard declares a suspect pirated when its matching rate reaches a threshold. The right
# threshold depends on how often *independent* models agree with the fingerprints, so the
# recommended way to set it is calibrate_threshold() on a few negative (independently
# trained) models. When no negatives are available, 0.5 is the documented default: a copy
# typically matches far more than half the fingerprints, an independent model far fewer.
DEFAULT_THRESHOLD = 0.5


def resolve_threshold(threshold: Any, fingerprints: FingerprintSet) -> float:
    """The threshold a verdict uses: ``threshold``, else the file's calibrated one, else the default."""
    if threshold is not None:
        return _above_zero("threshold", threshold)
    return _above_zero("fingerprints.meta['threshold']", fingerprints.meta.get("threshold", DEFAULT_THRESHOLD))


def _above_zero(name: str, threshold: Any) -> float:
    """A threshold in (0, 1]: at 0 every rate reaches it, so any model would be a copy (no
    calibration gives 0; a caller who typed it gets this, not a false accusation)."""
    value = probability(name, threshold)
    if value == 0:
        raise ArgumentError(name, "must be above 0 (at 0 every suspect, one matching no fingerprint included, "
                                  "would be called pirated), got 0")
    return value


def conclusive_threshold(fingerprints: FingerprintSet) -> bool:
    """False when protect() recorded (meta["threshold_shown"]) that independents held out of
    its selection agree so often that even n of n matches is no evidence of a copy."""
    shown = fingerprints.meta.get("threshold_shown", True)
    if not isinstance(shown, bool):
        raise ValueError(f"fingerprints.meta['threshold_shown']: must be true or false, got {shown!r}")
    return shown
