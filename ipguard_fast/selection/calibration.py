"""A fingerprint file's threshold calibrated on independent models the caller has.

`extract` writes plain IPGuard points with no threshold, and verify gives such a file no
verdict (verdict_threshold.DEFAULT_THRESHOLD says why: independents keep anything up to
all of the plain points). `calibrate_fingerprints` measures how many points each given
independent model keeps and stores, as protect does, the highest of those rates plus the
sampling noise of the file's n points (significance.significant_threshold): a rate at or
above it is unlikely for a model that agrees no more than the most agreeable independent.
The level is never below the file's chance rate (verdict_threshold.chance_rate: what a model
that guesses agrees with), so negatives that keep none of the points cannot put the threshold
at one match of n, where a guessing model passes it.
A file that already carries a threshold (protect's, or an earlier calibration's) keeps it
when it is higher: more independents can show that innocents keep more points, never that
they keep fewer than the ones measured before. The negatives must be models the points were
not chosen against: select_fingerprints keeps the points its negatives lose, so those
negatives would set the threshold far below what an unseen independent keeps.
"""
from __future__ import annotations

import hashlib
import os
import stat
import warnings
from collections.abc import Sequence
from typing import Any

from .._validate import ArgumentError, positive_int
from ..fingerprints import FingerprintSet
from ..io.sandbox import Isolation
from ..io.suspects import matching_rate
from ..label_bias import copy_can_be_shown
from ..verdict_threshold import chance_rate, conclusive_threshold, resolve_threshold
from .significance import SIGNIFICANCE, significant_threshold

__all__ = ["FEW_NEGATIVES", "calibrate_fingerprints"]

# Below this many independents a warning says the level is a low estimate: independents of the
# owner's architecture trained like it kept 0.38-0.94 of one file's points from one draw to the
# next (README, "Three beds": twin-spread-2026-12-05), so the highest of two is often far below
# what a third keeps.
FEW_NEGATIVES = 3


def calibrate_fingerprints(fingerprints: FingerprintSet, negatives: Sequence[Any], *,
                           significance: float = SIGNIFICANCE, batch_size: int = 256,
                           isolate: bool | Isolation = True) -> FingerprintSet:
    """A copy of ``fingerprints`` whose ``meta["threshold"]`` is calibrated on ``negatives``
    (models trained independently of the owner: modules, callables or model files, a file run
    by a confined worker unless ``isolate=False``), with ``meta["threshold_shown"]`` and the
    measurement in ``meta["calibration"]``. The caller's set is not changed."""
    if not isinstance(fingerprints, FingerprintSet):
        raise ArgumentError("fingerprints", f"must be a FingerprintSet, got {type(fingerprints).__name__}")
    if isinstance(negatives, (str, os.PathLike)) or not isinstance(negatives, Sequence) or not negatives:
        raise ArgumentError("negatives", "must be a non-empty list of independent models (modules, callables or "
                                         "model files)")
    if isinstance(significance, bool) or not isinstance(significance, (int, float)) \
            or not 0.0 < significance < 0.5:
        raise ArgumentError("significance", f"must be in (0, 0.5), got {significance!r}")
    positive_int("batch_size", batch_size)
    n = len(fingerprints)
    if n == 0:
        raise ArgumentError("fingerprints", "is empty; a threshold needs at least one fingerprint")
    previous = resolve_threshold(None, fingerprints)        # the file's own, checked before any model runs
    previous_shown = conclusive_threshold(fingerprints)
    measured = []
    for negative in negatives:   # the rate first: a file the worker cannot load is refused before it is hashed
        rate = matching_rate(negative, fingerprints, batch_size, isolate)
        measured.append({**_described(negative), "matching_rate": rate})
    # Never below chance: negatives that keep none of the points would put the threshold at one
    # match of n, which a model that guesses passes.
    chance = chance_rate(fingerprints)
    level = max(chance, *(entry["matching_rate"] for entry in measured))
    threshold, shown = significant_threshold(level, n, significance)
    meta = dict(fingerprints.meta)
    if previous is not None and previous >= threshold:   # never lowered; a tie keeps the more cautious flag
        shown = previous_shown and (previous > threshold or shown)
        threshold = previous
    labels_allow = copy_can_be_shown(fingerprints.labels)   # verify's label-bias test, for an exact copy
    shown = shown and labels_allow
    meta.update(threshold=threshold, threshold_shown=shown,
                calibration={"negatives": measured, "chance_rate": chance, "level": level, "significance": significance,
                             "previous_threshold": previous})
    if len(measured) < FEW_NEGATIVES:
        warnings.warn(f"{len(measured)} independent model(s) give a low estimate of what another "
                      "keeps (independents trained like the owner kept 0.38-0.94 of one file's points from one "
                      f"seed to the next); give {FEW_NEGATIVES} or more, of the owner's architecture and recipe too",
                      stacklevel=2)
    if not labels_allow:
        warnings.warn(f"the {n} points' labels are too few or too crowded for even an exact copy's matches to be "
                      "told from a model that ignores the points (verify's label-bias test): verify calls no suspect "
                      "a copy with this file; extract more points, spread over more labels", stacklevel=2)
    elif not shown:
        warnings.warn(f"an independent model kept {level:.2f} of the {n} points, so not even {n} of {n} "
                      "matches shows a copy: verify calls no suspect a copy with this file's threshold (its verdicts "
                      "are inconclusive); extract at a smaller k, or use protect", stacklevel=2)
    return FingerprintSet(fingerprints.images.clone(), fingerprints.labels.clone(),
                          fingerprints.source_labels.clone(), fingerprints.margins.clone(),
                          fingerprints.steps.clone(), meta)


def _described(negative: Any) -> dict:
    """What the file records of a negative: a file's name and SHA-256, else the object's type."""
    if isinstance(negative, (str, os.PathLike)):
        path = os.fspath(negative)
        return {"model": os.path.basename(path) or path, "sha256": _file_sha256(path)}
    return {"model": type(negative).__name__, "sha256": None}


def _file_sha256(path: str) -> str | None:
    """SHA-256 of a regular file, read after the worker measured it (a record of the owner's own
    calibration, not a proof of the bytes measured); None for anything else (a
    package.module:factory spec). Opened without blocking and checked on the open descriptor,
    so a FIFO put in the file's place after it was measured is never waited on."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        return hashlib.file_digest(handle, "sha256").hexdigest()
