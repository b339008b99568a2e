"""The verification entry points that accept model files as suspects.

ipguard_fast.verdicts works on objects (modules, exported programs, callables) and never
opens a file. A user holding a file names it instead; these functions turn every path
among their suspects into an object and hand over to verdicts. They are what the package
exports as ipguard_fast.matching_rate, verify and calibrate_threshold.

Trust: a suspect's file comes from the party accused of copying, so by default
(``isolate=True``) a path is loaded and run by a confined worker process (sandbox/), and
only its labels or logits come back; ``isolate=False`` loads it here, for files you trust;
an ``Isolation`` sets the worker's limits. A model object is the caller's own and always
runs in the caller's process.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from contextlib import AbstractContextManager, ExitStack, nullcontext
from typing import Any

from .. import verdicts as _verdicts
from .._validate import ArgumentError
from ..fingerprints import FingerprintSet
from .formats import load_suspect
from .sandbox import IsolatedSuspect, Isolation

__all__ = ["calibrate_threshold", "matching_rate", "resolve_suspect", "verify", "verify_parts"]


def resolve_suspect(suspect: Any) -> Any:
    """A path becomes the model it holds, loaded in this process (load_suspect); anything else is
    returned as it is. For files you trust; the functions below isolate paths by default."""
    if isinstance(suspect, (str, os.PathLike)):
        return load_suspect(suspect)
    return suspect


def matching_rate(suspect: Any, fingerprints: FingerprintSet, batch_size: int = 256,
                  isolate: bool | Isolation = True) -> float:
    """ipguard_fast.verdicts.matching_rate, the suspect also given as a model file (see ``isolate``
    in the module's docstring)."""
    with _suspect(suspect, _isolation(isolate), fingerprints) as resolved:
        return _verdicts.matching_rate(resolved, fingerprints, batch_size=batch_size)


def verify(suspect: Any, fingerprints: FingerprintSet, threshold: float | None = None,
           batch_size: int = 256, isolate: bool | Isolation = True) -> _verdicts.Verdict:
    """ipguard_fast.verdicts.verify, the suspect also given as a model file (see ``isolate``
    in the module's docstring)."""
    with _suspect(suspect, _isolation(isolate), fingerprints) as resolved:
        return _verdicts.verify(resolved, fingerprints, threshold=threshold, batch_size=batch_size)


def verify_parts(suspect: Any, parts: dict[str, FingerprintSet], batch_size: int = 256,
                 isolate: bool | Isolation = True) -> _verdicts.PartsVerdict:
    """ipguard_fast.verdicts.verify_parts, the suspect also given as a model file (one worker for
    every part; see ``isolate`` in the module's docstring)."""
    _verdicts.check_parts(parts)   # before a worker starts for a file
    with _suspect(suspect, _isolation(isolate), next(iter(parts.values()))) as resolved:
        return _verdicts.verify_parts(resolved, parts, batch_size=batch_size)


def calibrate_threshold(negative_suspects: Sequence[Any], fingerprints: FingerprintSet,
                        false_positive_rate: float = 0.01, batch_size: int = 256,
                        isolate: bool | Isolation = True) -> float:
    """ipguard_fast.verdicts.calibrate_threshold, each negative suspect also given as a model file
    (see ``isolate`` in the module's docstring; one worker per file, all stopped at the end)."""
    isolation = _isolation(isolate)
    with ExitStack() as stack:
        if not isinstance(negative_suspects, (str, os.PathLike)) and hasattr(negative_suspects, "__iter__"):
            negative_suspects = [stack.enter_context(_suspect(s, isolation, fingerprints)) for s in negative_suspects]
        return _verdicts.calibrate_threshold(negative_suspects, fingerprints,
                                             false_positive_rate=false_positive_rate, batch_size=batch_size)


def _isolation(isolate: Any) -> Isolation | None:
    if isinstance(isolate, Isolation):
        return isolate
    if isolate is True:
        return Isolation()
    if isolate is False:
        return None
    raise ArgumentError("isolate", f"must be True, False or an Isolation, got {isolate!r}")


def _suspect(suspect: Any, isolation: Isolation | None, fingerprints: Any) -> AbstractContextManager[Any]:
    """The suspect as verdicts takes it, for the length of a `with` block (a file's worker told the
    fingerprints' class count, when they are a set: verdicts checks the rest)."""
    if not isinstance(suspect, (str, os.PathLike)):
        return nullcontext(suspect)
    if isolation is None:
        return nullcontext(load_suspect(suspect))
    classes = fingerprints.num_classes if isinstance(fingerprints, FingerprintSet) else None
    return IsolatedSuspect(suspect, isolation=isolation, num_classes=classes)


matching_rate.__doc__ += "\n\n" + (_verdicts.matching_rate.__doc__ or "")
verify.__doc__ += "\n\n" + (_verdicts.verify.__doc__ or "")
verify_parts.__doc__ += "\n\n" + (_verdicts.verify_parts.__doc__ or "")
calibrate_threshold.__doc__ += "\n\n" + (_verdicts.calibrate_threshold.__doc__ or "")
