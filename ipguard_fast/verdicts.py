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
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn

from ._errors import ran_out_of_memory
from ._files import short_error
from ._validate import positive_int
from .fingerprints import FingerprintSet
from .modules import (call_in_fixed_batches, device_and_dtype, eval_mode, held_tensors, kept_unchanged,
                      static_batch_size)
from .verdict_threshold import (AT_CHANCE, DEFAULT_THRESHOLD, NO_THRESHOLD, NOT_SHOWN, conclusive_threshold,
                                inconclusive_reason, resolve_threshold)

__all__ = ["AT_CHANCE", "DEFAULT_THRESHOLD", "NOT_SHOWN", "NO_THRESHOLD", "LabelFn", "Verdict", "as_label_fn",
           "as_output_fn", "calibrate_threshold", "conclusive_threshold", "matching_rate", "resolve_threshold", "verify"]

LabelFn = Callable[[torch.Tensor], torch.Tensor]
"""A function from a float32 image batch ``[B, *input_shape]`` to int64 labels ``[B]`` on the CPU."""


@dataclass(frozen=True)
class Verdict:
    """Outcome of :func:`verify`. ``to_dict`` gives the JSON the CLI prints. ``conclusive``
    False: no rate shows a copy, ``pirated`` is False at any rate, and ``reason`` says why --
    NO_THRESHOLD (neither the caller nor the file gives a threshold; ``threshold`` is None),
    NOT_SHOWN (the file's own threshold can show no copy) or AT_CHANCE (the threshold, the
    caller's or the file's, is at or below the rate of a model that guesses, 1 / the number
    of classes: verdict_threshold.chance_rate)."""

    matching_rate: float
    pirated: bool
    threshold: float | None
    matches: int
    total: int
    conclusive: bool = True
    reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ---------------------------------------------------------------------- suspects


def as_label_fn(suspect: Any, num_classes: int | None = None) -> LabelFn:
    """Turn any supported suspect into a :data:`LabelFn`.

    Supported suspects:
      * ``nn.Module`` (including TorchScript modules): run in eval mode under ``no_grad`` on
        the module's device and floating dtype; every submodule's mode is restored after each call;
      * ``torch.export.ExportedProgram`` (its ``.module()`` is used); exported modules with a
        fixed batch size are fed padded batches of exactly that size;
      * any other callable from images to logits ``[B, C]`` (floating) or labels ``[B]``
        (integer tensor, numpy array or list).

    The returned function raises ValueError when the suspect's output has the wrong batch
    length or rank, a class count different from ``num_classes`` (when given), integer
    labels outside ``[0, num_classes)`` or non-finite logits.
    """
    outputs = as_output_fn(suspect, num_classes)

    def label_fn(images: torch.Tensor) -> torch.Tensor:
        labels, logits = outputs(images)
        if logits is not None:  # the suspect's class count, for callers that lack one
            label_fn.classes_seen = int(logits.shape[1])
        return labels

    label_fn.classes_seen = None
    return label_fn


def as_output_fn(suspect: Any, num_classes: int | None = None
                 ) -> Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor | None]]:
    """Like :func:`as_label_fn`, but the function returns ``(labels [B], logits [B, C] or None)``:
    the float32 CPU logits when the suspect gives logits, None when it gives labels only
    (what fingerprint selection needs to score by margin where it can)."""
    if num_classes is not None:
        positive_int("num_classes", num_classes)
    if isinstance(suspect, (str, os.PathLike)):
        raise ValueError(f"suspect: {os.fspath(suspect)!r} is a path; this layer takes objects: load it with "
                         "ipguard_fast.load_suspect, or call ipguard_fast.matching_rate / verify, which accept paths")
    if isinstance(suspect, torch.export.ExportedProgram):
        suspect = suspect.module()

    if isinstance(suspect, nn.Module):
        forward = _module_forward(suspect)
    elif callable(suspect):
        forward = suspect
    else:
        raise ValueError(
            f"suspect: must be an nn.Module, ExportedProgram, model path or callable, got {type(suspect).__name__}"
        )

    def output_fn(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        if not isinstance(images, torch.Tensor) or not images.is_floating_point() or images.dim() < 2:
            raise ValueError("images: must be a floating tensor of shape [B, *input_shape]")
        with torch.no_grad():
            # A copy: a suspect that writes into its input (`x.sub_(mean)`) must not change the
            # caller's images (the fingerprints, judged again for the next suspect).
            output = forward(images.clone())
        return _checked_output(output, batch=images.shape[0], num_classes=num_classes)

    return output_fn


def _module_forward(module: nn.Module) -> Callable[[torch.Tensor], Any]:
    """Wrap a module: inputs on its device and dtype, eval mode, modes and tensors kept (kept_unchanged)."""
    device, dtype = device_and_dtype(module)
    fixed_batch = static_batch_size(module)
    held = [(name, value.detach().clone()) for name, value in held_tensors(module)]

    def forward(images: torch.Tensor) -> Any:
        with kept_unchanged(module, held):   # a suspect that changes its tensors keeps state between queries
            return _called(images)

    def _called(images: torch.Tensor) -> Any:
        with eval_mode(module):
            x = images.to(device=device, dtype=dtype)
            try:
                if fixed_batch is None:
                    return module(x)
                return call_in_fixed_batches(lambda chunk: _as_tensor(module(chunk)), x, fixed_batch)
            except Exception as exc:  # the suspect cannot take these images: our caller's bad input ...
                if ran_out_of_memory(exc):
                    raise   # ... unless a resource ran out: that is no mistake of the caller's
                raise ValueError(f"suspect: fails on images of shape {list(x.shape)}: {short_error(exc)}") from exc

    return forward


def _as_tensor(output: Any) -> torch.Tensor:
    if isinstance(output, torch.Tensor):
        return output
    try:
        return torch.as_tensor(np.asarray(output))
    except (TypeError, ValueError, RuntimeError) as exc:
        raise ValueError(
            f"suspect: output must be a tensor, numpy array or list of logits/labels, got {type(output).__name__}"
        ) from exc


def _checked_output(output: Any, batch: int, num_classes: int | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Validate a suspect's raw output: (int64 labels ``[batch]``, float32 logits or None), on the CPU."""
    out = _as_tensor(output).detach().cpu()
    if out.dim() not in (1, 2):
        raise ValueError(
            f"suspect: output must be logits [B, C] or labels [B], got shape {tuple(out.shape)}"
        )
    if out.shape[0] != batch:
        raise ValueError(f"suspect: returned {out.shape[0]} outputs for a batch of {batch} images")

    if out.dim() == 2:
        if not out.is_floating_point():
            raise ValueError(f"suspect: 2-D output must be floating logits [B, C], got dtype {out.dtype}")
        if num_classes is not None and out.shape[1] != num_classes:
            raise ValueError(f"suspect: returns {out.shape[1]} classes, the fingerprints have {num_classes}")
        if not torch.isfinite(out).all():
            raise ValueError("suspect: returned non-finite logits (NaN or inf)")
        return out.argmax(dim=1).to(torch.int64), out.float()

    if out.is_floating_point() or out.is_complex() or out.dtype == torch.bool:
        raise ValueError(f"suspect: 1-D output must be integer labels [B], got dtype {out.dtype}")
    labels = out.to(torch.int64)
    if labels.numel():
        low, high = int(labels.min()), int(labels.max())
        if low < 0 or (num_classes is not None and high >= num_classes):
            bound = f"[0, {num_classes})" if num_classes is not None else "non-negative"
            raise ValueError(f"suspect: returned label {low if low < 0 else high}, labels must be {bound}")
    return labels, None


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
    that guesses its answers would reach it on average (``AT_CHANCE``).
    """
    _check_fingerprints(fingerprints)
    reason = inconclusive_reason(threshold, fingerprints)
    threshold = resolve_threshold(threshold, fingerprints)   # None: the file has none and none is given
    matches = _count_matches(suspect, fingerprints, batch_size)
    total = len(fingerprints)
    rate = matches / total
    return Verdict(matching_rate=rate, pirated=reason is None and rate >= threshold, threshold=threshold,
                   matches=matches, total=total, conclusive=reason is None, reason=reason)


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
    """Number of fingerprints on which the suspect predicts ``fingerprints.labels``, in batches."""
    n = _check_fingerprints(fingerprints)
    positive_int("batch_size", batch_size)
    label_fn = as_label_fn(suspect, num_classes=fingerprints.num_classes)
    matches = 0
    for start in range(0, n, batch_size):
        predicted = label_fn(fingerprints.images[start:start + batch_size])
        if start == 0 and fingerprints.num_classes is None and label_fn.classes_seen is not None:
            # A set that records no class count is checked against the suspect's own.
            highest = int(fingerprints.labels.max())
            if highest >= label_fn.classes_seen:
                raise ValueError(f"fingerprints: owner label {highest} is outside the suspect's "
                                 f"{label_fn.classes_seen} classes (the set records no num_classes)")
        matches += int((predicted == fingerprints.labels[start:start + batch_size]).sum())
    return matches


def _check_fingerprints(fingerprints: FingerprintSet) -> int:
    if not isinstance(fingerprints, FingerprintSet):
        raise ValueError(f"fingerprints: must be a FingerprintSet, got {type(fingerprints).__name__}")
    if len(fingerprints) == 0:
        raise ValueError("fingerprints: is empty; a matching rate needs at least one fingerprint")
    return len(fingerprints)
