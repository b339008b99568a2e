"""The verification entry points that accept model files as suspects.

ipguard_fast.verdicts works on objects (modules, exported programs, callables) and never
opens a file. A user holding a file names it instead; these functions turn every
path among their suspects into an object (formats.load_suspect) and hand over to verdicts.
They are what the package exports as ipguard_fast.matching_rate, verify and
calibrate_threshold.
"""
from __future__ import annotations

import os
from typing import Any, Sequence

from .. import verdicts as _verdicts
from ..fingerprints import FingerprintSet
from .formats import load_suspect

__all__ = ["calibrate_threshold", "matching_rate", "resolve_suspect", "verify"]


def resolve_suspect(suspect: Any) -> Any:
    """A path becomes the model it holds (load_suspect); anything else is returned as it is."""
    if isinstance(suspect, (str, os.PathLike)):
        return load_suspect(suspect)
    return suspect


def matching_rate(suspect: Any, fingerprints: FingerprintSet, batch_size: int = 256) -> float:
    """ipguard_fast.verdicts.matching_rate, the suspect also given as a model file."""
    return _verdicts.matching_rate(resolve_suspect(suspect), fingerprints, batch_size=batch_size)


def verify(suspect: Any, fingerprints: FingerprintSet, threshold: float | None = None,
           batch_size: int = 256) -> _verdicts.Verdict:
    """ipguard_fast.verdicts.verify, the suspect also given as a model file."""
    return _verdicts.verify(resolve_suspect(suspect), fingerprints, threshold=threshold, batch_size=batch_size)


def calibrate_threshold(negative_suspects: Sequence[Any], fingerprints: FingerprintSet,
                        false_positive_rate: float = 0.01, batch_size: int = 256) -> float:
    """ipguard_fast.verdicts.calibrate_threshold, each negative suspect also given as a model file."""
    if not isinstance(negative_suspects, (str, os.PathLike)) and hasattr(negative_suspects, "__iter__"):
        negative_suspects = [resolve_suspect(s) for s in negative_suspects]
    return _verdicts.calibrate_threshold(negative_suspects, fingerprints, false_positive_rate=false_positive_rate,
                                         batch_size=batch_size)


matching_rate.__doc__ += "\n\n" + (_verdicts.matching_rate.__doc__ or "")
verify.__doc__ += "\n\n" + (_verdicts.verify.__doc__ or "")
calibrate_threshold.__doc__ += "\n\n" + (_verdicts.calibrate_threshold.__doc__ or "")
