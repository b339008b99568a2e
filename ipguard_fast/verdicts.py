"""Checking a suspect model against the owner's fingerprints.

IPGuard's test: query the suspect on every fingerprint image; the *matching rate* is the
share of fingerprints on which the suspect predicts the owner's label. A pirated copy
(fine-tuned, pruned, ...) keeps most of the owner's decision boundary and so matches
most fingerprints; an independently trained model matches few, because fingerprints sit
right at the owner's boundary where other models disagree.
"""

from __future__ import annotations

import math
import numbers
import os
import warnings
from dataclasses import asdict, dataclass
from typing import Any, Sequence

import torch

from ._validate import positive_int
from .fingerprints import FingerprintSet
from .label_bias import beyond_label_bias, label_bias_rate
from .suspect_calls import LabelFn, as_label_fn, as_output_fn
from .verdict_threshold import (AT_CHANCE, DEFAULT_THRESHOLD, LABEL_BIAS, NO_THRESHOLD, NOT_SHOWN, conclusive_threshold,
                                inconclusive_reason, resolve_threshold)

__all__ = ["AT_CHANCE", "DEFAULT_THRESHOLD", "LABEL_BIAS", "NOT_SHOWN", "NO_THRESHOLD", "LabelFn", "PartsVerdict", "Verdict",
           "as_label_fn", "as_output_fn", "calibrate_threshold", "check_parts", "conclusive_threshold", "matching_rate",
           "resolve_threshold", "suspect_answers", "verify", "verify_parts"]


@dataclass(frozen=True)
class Verdict:
    """Outcome of :func:`verify`. ``to_dict`` gives the JSON the CLI prints. ``conclusive``
    False: no rate shows a copy, ``pirated`` is False at any rate, and ``reason`` says why --
    NO_THRESHOLD (neither the caller nor the file gives a threshold; ``threshold`` is None),
    NOT_SHOWN (the file's own threshold can show no copy), AT_CHANCE (the threshold, the
    caller's or the file's, is at or below the rate of a model that guesses, 1 / the number
    of classes: verdict_threshold.chance_rate) or LABEL_BIAS (the suspect reaches the
    threshold, but no more often than its own label frequencies explain: label_bias.py).
    ``label_bias_rate``: the rate those frequencies give on average."""

    matching_rate: float
    pirated: bool
    threshold: float | None
    matches: int
    total: int
    conclusive: bool = True
    reason: str | None = None
    label_bias_rate: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class PartsVerdict:
    """A suspect judged on each part of the owner's fingerprints (protect's points and its
    student part, `ipguard protect --students`), each part against its own threshold: a copy
    when any part shows it -- each part's threshold took its share of the significance, so
    that the chance of a wrong call stays within the whole. ``parts``: each part's Verdict
    by name, in the order given."""

    parts: dict[str, Verdict]

    @property
    def pirated(self) -> bool:
        return any(v.pirated for v in self.parts.values())

    @property
    def shown_by(self) -> list[str]:
        """The parts that show a copy."""
        return [name for name, v in self.parts.items() if v.pirated]

    def to_dict(self) -> dict[str, Any]:
        return {"pirated": self.pirated, "shown_by": self.shown_by,
                "parts": {name: v.to_dict() for name, v in self.parts.items()}}


def check_parts(parts: Any) -> None:
    """`parts` as verify_parts takes it: a non-empty dict of name -> FingerprintSet, every set of
    the same owner (one class count, one input shape): one suspect answers them all."""
    if not isinstance(parts, dict) or not parts:
        raise ValueError("parts: expected a non-empty dict of name -> FingerprintSet")
    for name, fingerprints in parts.items():
        if not isinstance(fingerprints, FingerprintSet):
            raise ValueError(f"parts: {name!r} is a {type(fingerprints).__name__}, not a FingerprintSet")
    (first, reference), *others = parts.items()
    for name, fingerprints in others:
        for what, ours, theirs in (("classes", reference.num_classes, fingerprints.num_classes),
                                   ("input shape", reference.input_shape, fingerprints.input_shape)):
            if ours != theirs:
                raise ValueError(f"parts: {name!r} has {what} {theirs}, {first!r} has {ours}: "
                                 "the parts of one owner agree")


def verify_parts(suspect: Any, parts: dict[str, FingerprintSet], batch_size: int = 256) -> PartsVerdict:
    """``suspect`` judged on every part (name -> FingerprintSet), each at its own stored
    threshold (:func:`verify`); pirated when any part shows a copy."""
    check_parts(parts)
    return PartsVerdict({name: verify(suspect, fingerprints, batch_size=batch_size)
                         for name, fingerprints in parts.items()})


# ---------------------------------------------------------------------- matching


def matching_rate(suspect: Any, fingerprints: FingerprintSet, batch_size: int = 256) -> float:
    """Share of fingerprints on which ``suspect`` predicts the owner's label (in [0, 1])."""
    matches = _count_matches(suspect, fingerprints, batch_size)
    return matches / len(fingerprints)


def verify(suspect: Any, fingerprints: FingerprintSet, threshold: float | None = None,
           batch_size: int = 256) -> Verdict:
    """Decide whether ``suspect`` is a copy of the fingerprinted model.

    ``threshold`` defaults to ``fingerprints.meta["threshold"]``, the one protect or
    ``ipguard calibrate`` stored. The suspect is judged pirated when its matching rate is at
    least the threshold. The verdict is inconclusive (``pirated`` False, ``reason`` set) when
    the file carries no threshold and none is given -- how many plain points an independent
    model keeps depends on the owner, k and the task, anything up to all of them, so no fixed
    rate is evidence (see :data:`DEFAULT_THRESHOLD`) --, when the file's own threshold can
    show no copy (:func:`conclusive_threshold`), or when the threshold is so low that a model
    that guesses its answers would reach it on average (``AT_CHANCE``); and when the suspect
    reaches the threshold but its label frequencies explain its matches (``LABEL_BIAS``:
    a model answering one label everywhere on a set crowded onto that label).
    """
    _check_fingerprints(fingerprints)
    reason = inconclusive_reason(threshold, fingerprints)
    threshold = resolve_threshold(threshold, fingerprints)   # None: the file has none and none is given
    answers = suspect_answers(suspect, fingerprints, batch_size)
    matches = int((answers == fingerprints.labels).sum())
    total = len(fingerprints)
    rate = matches / total
    if reason is None and rate >= threshold and not beyond_label_bias(fingerprints.labels, answers):
        reason = LABEL_BIAS
    return Verdict(matching_rate=rate, pirated=reason is None and rate >= threshold, threshold=threshold,
                   matches=matches, total=total, conclusive=reason is None, reason=reason,
                   label_bias_rate=label_bias_rate(fingerprints.labels, answers))


def calibrate_threshold(negative_suspects: Sequence[Any], fingerprints: FingerprintSet,
                        false_positive_rate: float = 0.01, batch_size: int = 256) -> float:
    """Smallest threshold whose false-positive rate on independent models is at most ``false_positive_rate``.

    Each negative suspect (a model trained independently of the owner's) gets a matching
    rate; the returned threshold t is the smallest value such that the share of negatives
    with rate >= t is at most ``false_positive_rate``.

    Matching rates are multiples of ``1/n`` (n = number of fingerprints), so "just above a
    negative's rate r" is ``r + 1/n``. With ``a = floor(fpr * len(negatives))`` negatives
    allowed to pass, t is the (a+1)-th largest negative rate plus ``1/n``, capped at 1. With
    few negatives (``fpr * len(negatives) < 1``, the usual case) that is
    ``min(1, max_negative_rate + 1/n)``: every negative falls below the threshold. If the
    needed rate is already 1.0 no threshold in [0, 1] achieves the target; 1.0 is returned
    with a warning. To store a threshold in a file, with the sampling margin of its n points
    that protect uses, see ``ipguard_fast.calibrate_fingerprints`` (``ipguard calibrate``).
    """
    if isinstance(false_positive_rate, bool) or not isinstance(false_positive_rate, numbers.Real) \
            or not 0 <= false_positive_rate < 1:
        raise ValueError(f"false_positive_rate: must be in [0, 1), got {false_positive_rate!r}")
    if isinstance(negative_suspects, (str, os.PathLike)) or not hasattr(negative_suspects, "__iter__"):
        raise ValueError("negative_suspects: must be a list of suspects (models, paths or callables)")
    negatives = list(negative_suspects)
    if not negatives:
        raise ValueError("negative_suspects: is empty; calibration needs at least one independent model")

    n = _check_fingerprints(fingerprints)
    counts = sorted((_count_matches(s, fingerprints, batch_size) for s in negatives), reverse=True)
    allowed = math.floor(false_positive_rate * len(negatives) + 1e-9)  # tolerance for 0.29 * 100 = 28.99...
    boundary = counts[min(allowed, len(counts) - 1)]  # the largest count that must fall below the threshold
    if boundary >= n:
        warnings.warn(
            "a negative suspect matches every fingerprint, so no threshold in [0, 1] reaches "
            f"false_positive_rate={false_positive_rate}; returning 1.0",
            stacklevel=2,
        )
    # Integer arithmetic then one division, so the threshold equals matches/total exactly
    # for a suspect with boundary+1 matches (verify compares with >=).
    return min(n, boundary + 1) / n


# ---------------------------------------------------------------------- helpers


def _count_matches(suspect: Any, fingerprints: FingerprintSet, batch_size: int) -> int:
    """Number of fingerprints on which the suspect predicts ``fingerprints.labels``."""
    return int((suspect_answers(suspect, fingerprints, batch_size) == fingerprints.labels).sum())


def suspect_answers(suspect: Any, fingerprints: FingerprintSet, batch_size: int = 256) -> torch.Tensor:
    """The suspect's label for every fingerprint (int64 on the CPU), queried in batches."""
    n = _check_fingerprints(fingerprints)
    positive_int("batch_size", batch_size)
    label_fn = as_label_fn(suspect, num_classes=fingerprints.num_classes)
    answers = []
    for start in range(0, n, batch_size):
        predicted = label_fn(fingerprints.images[start:start + batch_size])
        if start == 0 and fingerprints.num_classes is None and label_fn.classes_seen is not None:
            # A set that records no class count is checked against the suspect's own.
            highest = int(fingerprints.labels.max())
            if highest >= label_fn.classes_seen:
                raise ValueError(f"fingerprints: owner label {highest} is outside the suspect's "
                                 f"{label_fn.classes_seen} classes (the set records no num_classes)")
        answers.append(predicted)
    return torch.cat(answers)


def _check_fingerprints(fingerprints: FingerprintSet) -> int:
    if not isinstance(fingerprints, FingerprintSet):
        raise ValueError(f"fingerprints: must be a FingerprintSet, got {type(fingerprints).__name__}")
    if len(fingerprints) == 0:
        raise ValueError("fingerprints: is empty; a matching rate needs at least one fingerprint")
    return len(fingerprints)
