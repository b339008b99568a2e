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

from .fingerprints import FingerprintSet
from .model_io import load_model

__all__ = [
    "DEFAULT_THRESHOLD",
    "LabelFn",
    "Verdict",
    "as_label_fn",
    "calibrate_threshold",
    "matching_rate",
    "verify",
]

# IPGuard declares a suspect pirated when its matching rate reaches a threshold. The right
# threshold depends on how often *independent* models agree with the fingerprints, so the
# recommended way to set it is calibrate_threshold() on a few negative (independently
# trained) models. When no negatives are available, 0.5 is the documented default: a copy
# typically matches far more than half the fingerprints, an independent model far fewer.
DEFAULT_THRESHOLD = 0.5

LabelFn = Callable[[torch.Tensor], torch.Tensor]
"""A function from a float32 image batch ``[B, *input_shape]`` to int64 labels ``[B]`` on the CPU."""


@dataclass(frozen=True)
class Verdict:
    """Outcome of :func:`verify`. ``to_dict`` gives the JSON the CLI prints."""

    matching_rate: float
    pirated: bool
    threshold: float
    matches: int
    total: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ---------------------------------------------------------------------- suspects


def as_label_fn(suspect: Any, num_classes: int | None = None) -> LabelFn:
    """Turn any supported suspect into a :data:`LabelFn`.

    Supported suspects:
      * ``nn.Module`` (including TorchScript modules): run in eval mode under ``no_grad`` on
        the module's device and floating dtype; its training flag is restored after each call;
      * ``torch.export.ExportedProgram`` (its ``.module()`` is used); exported modules with a
        fixed batch size are fed padded batches of exactly that size;
      * ``str`` / ``Path``: a TorchScript or ``.pt2`` file, loaded with :func:`model_io.load_model`;
      * any other callable from images to logits ``[B, C]`` (floating) or labels ``[B]``
        (integer tensor, numpy array or list).

    The returned function raises ValueError when the suspect's output has the wrong batch
    length or rank, a class count different from ``num_classes`` (when given), integer
    labels outside ``[0, num_classes)`` or non-finite logits.
    """
    if num_classes is not None and (isinstance(num_classes, bool) or not isinstance(num_classes, int)
                                    or num_classes < 1):
        raise ValueError(f"num_classes must be a positive int or None, got {num_classes!r}")
    if isinstance(suspect, (str, os.PathLike)):
        suspect = load_model(suspect)
    if isinstance(suspect, torch.export.ExportedProgram):
        suspect = suspect.module()

    if isinstance(suspect, nn.Module):
        forward = _module_forward(suspect)
    elif callable(suspect):
        forward = suspect
    else:
        raise ValueError(
            f"suspect must be an nn.Module, ExportedProgram, model path or callable, got {type(suspect).__name__}"
        )

    def label_fn(images: torch.Tensor) -> torch.Tensor:
        if not isinstance(images, torch.Tensor) or not images.is_floating_point() or images.dim() < 2:
            raise ValueError("images must be a floating tensor of shape [B, *input_shape]")
        with torch.no_grad():
            output = forward(images)
        return _output_to_labels(output, batch=images.shape[0], num_classes=num_classes)

    return label_fn


def _module_forward(module: nn.Module) -> Callable[[torch.Tensor], Any]:
    """Wrap a module: move inputs to its device/dtype, run it in eval mode, restore its mode."""
    device, dtype = device_and_dtype(module)
    fixed_batch = static_batch_size(module)

    def forward(images: torch.Tensor) -> Any:
        was_training = module.training
        _set_training(module, False)
        try:
            x = images.to(device=device, dtype=dtype)
            if fixed_batch is None:
                return module(x)
            return _call_with_fixed_batch(module, x, fixed_batch)
        finally:
            _set_training(module, was_training)

    return forward


def device_and_dtype(module: nn.Module) -> tuple[torch.device, torch.dtype]:
    """Device of the first parameter/buffer and dtype of the first floating one (CPU/float32 if none)."""
    tensors = list(module.parameters()) + list(module.buffers())
    device = tensors[0].device if tensors else torch.device("cpu")
    dtype = next((t.dtype for t in tensors if t.is_floating_point()), torch.float32)
    return device, dtype


def _set_training(module: nn.Module, mode: bool) -> None:
    try:
        module.train(mode)
    except NotImplementedError:
        # Exported (.pt2) modules refuse train()/eval(): their mode was frozen at export time.
        pass


def static_batch_size(module: nn.Module) -> int | None:
    """Batch size baked into an exported graph's first input, or None when the batch is dynamic.

    ``torch.export`` specialises the batch dimension to the example's size unless it was
    marked dynamic, and the resulting module rejects any other batch size.
    """
    if not isinstance(module, torch.fx.GraphModule):
        return None
    for node in module.graph.nodes:
        if node.op == "placeholder":
            value = node.meta.get("val")
            if isinstance(value, torch.Tensor) and value.dim() >= 1 and isinstance(value.shape[0], int):
                return int(value.shape[0])
            return None
    return None


def _call_with_fixed_batch(module: nn.Module, x: torch.Tensor, size: int) -> torch.Tensor:
    """Run ``module`` on chunks of exactly ``size`` images, padding the last chunk by repeating its last image."""
    outputs = []
    for start in range(0, x.shape[0], size):
        chunk = x[start:start + size]
        real = chunk.shape[0]
        if real < size:
            chunk = torch.cat([chunk, chunk[-1:].expand(size - real, *chunk.shape[1:])])
        outputs.append(_as_tensor(module(chunk))[:real])
    return torch.cat(outputs)


def _as_tensor(output: Any) -> torch.Tensor:
    if isinstance(output, torch.Tensor):
        return output
    try:
        return torch.as_tensor(np.asarray(output))
    except (TypeError, ValueError, RuntimeError) as exc:
        raise ValueError(
            f"suspect output must be a tensor, numpy array or list of logits/labels, got {type(output).__name__}"
        ) from exc


def _output_to_labels(output: Any, batch: int, num_classes: int | None) -> torch.Tensor:
    """Validate a suspect's raw output and reduce it to int64 labels ``[batch]`` on the CPU."""
    out = _as_tensor(output).detach().cpu()
    if out.dim() not in (1, 2):
        raise ValueError(
            f"suspect output must be logits [B, C] or labels [B], got shape {tuple(out.shape)}"
        )
    if out.shape[0] != batch:
        raise ValueError(f"suspect returned {out.shape[0]} outputs for a batch of {batch} images")

    if out.dim() == 2:
        if not out.is_floating_point():
            raise ValueError(f"2-D suspect output must be floating logits [B, C], got dtype {out.dtype}")
        if num_classes is not None and out.shape[1] != num_classes:
            raise ValueError(f"suspect returns {out.shape[1]} classes, the fingerprints have {num_classes}")
        if not torch.isfinite(out).all():
            raise ValueError("suspect returned non-finite logits (NaN or inf)")
        return out.argmax(dim=1).to(torch.int64)

    if out.is_floating_point() or out.is_complex() or out.dtype == torch.bool:
        raise ValueError(f"1-D suspect output must be integer labels [B], got dtype {out.dtype}")
    labels = out.to(torch.int64)
    if labels.numel():
        low, high = int(labels.min()), int(labels.max())
        if low < 0 or (num_classes is not None and high >= num_classes):
            bound = f"[0, {num_classes})" if num_classes is not None else "non-negative"
            raise ValueError(f"suspect returned label {low if low < 0 else high}, labels must be {bound}")
    return labels


# ---------------------------------------------------------------------- matching


def matching_rate(suspect: Any, fingerprints: FingerprintSet, batch_size: int = 256) -> float:
    """Share of fingerprints on which ``suspect`` predicts the owner's label (in [0, 1])."""
    matches = _count_matches(suspect, fingerprints, batch_size)
    return matches / len(fingerprints)


def verify(suspect: Any, fingerprints: FingerprintSet, threshold: float | None = None,
           batch_size: int = 256) -> Verdict:
    """Decide whether ``suspect`` is a copy of the fingerprinted model.

    ``threshold`` defaults to ``fingerprints.meta["threshold"]`` when the fingerprints carry a
    calibrated one, else :data:`DEFAULT_THRESHOLD`. The suspect is judged pirated when its
    matching rate is at least the threshold.
    """
    _check_fingerprints(fingerprints)
    if threshold is None:
        threshold = _check_threshold(fingerprints.meta.get("threshold", DEFAULT_THRESHOLD),
                                     "fingerprints.meta['threshold']")
    else:
        threshold = _check_threshold(threshold, "threshold")
    matches = _count_matches(suspect, fingerprints, batch_size)
    total = len(fingerprints)
    rate = matches / total
    return Verdict(matching_rate=rate, pirated=rate >= threshold, threshold=threshold,
                   matches=matches, total=total)


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
    with a warning.
    """
    if isinstance(false_positive_rate, bool) or not isinstance(false_positive_rate, numbers.Real) \
            or not 0 <= false_positive_rate < 1:
        raise ValueError(f"false_positive_rate must be in [0, 1), got {false_positive_rate!r}")
    if isinstance(negative_suspects, (str, os.PathLike)) or not hasattr(negative_suspects, "__iter__"):
        raise ValueError("negative_suspects must be a list of suspects (models, paths or callables)")
    negatives = list(negative_suspects)
    if not negatives:
        raise ValueError("negative_suspects is empty; calibration needs at least one independent model")

    n = _check_fingerprints(fingerprints)
    counts = sorted((_count_matches(s, fingerprints, batch_size) for s in negatives), reverse=True)
    allowed = math.floor(false_positive_rate * len(negatives) + 1e-9)  # tolerance for 0.29 * 100 = 28.99...
    boundary = counts[allowed]  # the largest count that must fall below the threshold
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
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size <= 0:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    label_fn = as_label_fn(suspect, num_classes=fingerprints.num_classes)
    matches = 0
    for start in range(0, n, batch_size):
        predicted = label_fn(fingerprints.images[start:start + batch_size])
        matches += int((predicted == fingerprints.labels[start:start + batch_size]).sum())
    return matches


def _check_fingerprints(fingerprints: FingerprintSet) -> int:
    if not isinstance(fingerprints, FingerprintSet):
        raise ValueError(f"fingerprints must be a FingerprintSet, got {type(fingerprints).__name__}")
    if len(fingerprints) == 0:
        raise ValueError("fingerprints is empty; a matching rate needs at least one fingerprint")
    return len(fingerprints)


def _check_threshold(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 <= value <= 1:
        raise ValueError(f"{name} must be a number in [0, 1], got {value!r}")
    return float(value)
