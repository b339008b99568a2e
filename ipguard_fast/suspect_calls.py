"""How a suspect is called: any supported suspect (a module, a TorchScript or exported
program, a callable returning logits or labels) turned into a function from an image batch
to labels (and logits when it gives them), its output checked and its own tensors kept
unchanged by the call. verdicts.py counts the matches; the sandbox's worker and
selection's scores call suspects through the same functions."""
from __future__ import annotations

import os
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from ._errors import ran_out_of_memory
from ._files import short_error
from ._validate import positive_int
from .modules import (call_in_fixed_batches, device_and_dtype, eval_mode, held_tensors, kept_unchanged,
                      static_batch_size)

__all__ = ["LabelFn", "as_label_fn", "as_output_fn"]

LabelFn = Callable[[torch.Tensor], torch.Tensor]
"""A function from a float32 image batch ``[B, *input_shape]`` to int64 labels ``[B]`` on the CPU."""


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
