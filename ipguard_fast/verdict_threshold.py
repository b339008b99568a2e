"""Which threshold a verdict uses, and whether the file's own one can show a copy at all
(verdicts.verify, remote verification and the evaluation share them)."""
from __future__ import annotations

from typing import Any

from ._validate import ArgumentError, probability
from .fingerprints import FingerprintSet

__all__ = ["AT_CHANCE", "DEFAULT_THRESHOLD", "LABEL_BIAS", "NOT_SHOWN", "NO_THRESHOLD", "above_chance", "chance_rate",
           "conclusive_threshold", "inconclusive_reason", "resolve_threshold"]

# Why a verdict is inconclusive (Verdict.reason).
NO_THRESHOLD = "no_threshold"            # neither the caller nor the file gives a threshold
NOT_SHOWN = "threshold_not_shown"        # the file's own threshold can show no copy (protect said so)
AT_CHANCE = "threshold_at_chance"        # a model that guesses reaches the threshold on average (chance_rate)
LABEL_BIAS = "explained_by_label_bias"   # the suspect's matches are what its own label frequencies give (label_bias.py)

# A fingerprint set with no calibrated threshold gets no verdict from verify(): which rate
# separates copies from innocents depends on how often *independent* models agree with the
# points, and for plain IPGuard points that is anything up to all of them. On this project's
# three beds at owner seeds 0-2 independents kept up to 0.83 of the plain points at k = 3 and
# 1.00 at k = 10, so a fixed 0.5 called 36 of 90 innocent models pirated at k = 3 and 84 of 90
# at k = 10 (benchmarks/results/three-beds-negative-cap-2026-12-06/seeds-0-2); three digits
# CNNs trained like the owner at other seeds kept 0.51-0.77 of 100 plain points at k = 5,
# the value `ipguard extract --help` suggests for digits. Calibrate the file
# against independent models (`ipguard calibrate`, or protect) or give a threshold.
# DEFAULT_THRESHOLD is only what evaluate() judges such a set at, reported as uncalibrated,
# to show what a caller who typed --threshold 0.5 would get.
DEFAULT_THRESHOLD = 0.5


def resolve_threshold(threshold: Any, fingerprints: FingerprintSet) -> float | None:
    """The threshold a verdict uses: ``threshold``, else the file's calibrated one, else None
    (no verdict: see DEFAULT_THRESHOLD's comment)."""
    if threshold is not None:
        return _above_zero("threshold", threshold)
    if "threshold" not in fingerprints.meta:
        return None
    return _above_zero("fingerprints.meta['threshold']", fingerprints.meta["threshold"])


def inconclusive_reason(threshold: Any, fingerprints: FingerprintSet) -> str | None:
    """Why verify() can call no suspect a copy with this threshold and file (NO_THRESHOLD,
    NOT_SHOWN, AT_CHANCE), or None when its verdicts are conclusive. A caller's threshold
    decides unless a model that ignores its input would reach it."""
    if threshold is None:
        shown = conclusive_threshold(fingerprints)   # checked (a bad flag is refused) even in a file with no threshold
        if "threshold" not in fingerprints.meta:
            return NO_THRESHOLD
        if not shown:
            return NOT_SHOWN
    return None if above_chance(resolve_threshold(threshold, fingerprints), fingerprints) else AT_CHANCE


def chance_rate(fingerprints: FingerprintSet) -> float:
    """The matching rate of a model that guesses: 1 / the number of classes, what a model
    answering at random agrees with any labels on average (the file's ``num_classes``, else
    one more than its largest label).

    Not the share of the file's most common label, what a model answering that label for
    every image keeps: protect's points may all but share one label (the demo's selected
    set: 97 of 100 labelled 4), which the real independents protect calibrates on lose all
    the same (they kept 0.00-0.02 there); that share would make every such file give no
    verdict. How often independents that do look at the points agree is what protect and
    calibrate measure."""
    classes = fingerprints.num_classes
    if not isinstance(classes, int) or isinstance(classes, bool) or classes < 1:
        classes = int(fingerprints.labels.max()) + 1 if len(fingerprints) else 1
    return 1.0 / classes


def above_chance(threshold: float, fingerprints: FingerprintSet) -> bool:
    """Whether a rate of at least ``threshold`` says more than guessing: a threshold of 1e-300
    (a file's, or a typed one) is above 0, yet one matching point of n reaches it, and a
    model that guesses matches a tenth of ten classes' points."""
    return threshold > chance_rate(fingerprints)


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
