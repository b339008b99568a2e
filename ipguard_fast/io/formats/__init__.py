"""Model formats, one module each, and the registry that picks one for a spec.

Each module here (torchscript, pt2, onnx, factory) defines one ModelFormat (base.py): how a
spec is recognised, the inspection before anything loads, the load as a model or as a
suspect, the export, and whether protect / evaluate can train what it loads. Everything
else in the package goes through the functions below, so a new format is one module and
one entry in FORMATS.

Trust model (a suspect's file comes from the party accused of piracy): each format's
``inspect`` refuses what could run code before its loader sees the file; see each module.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from ..._files import not_a_file, short_error
from ..._validate import ArgumentError, image_shape
from ..weights import ModelLoadError
from . import factory, onnx, pt2, torchscript
from .base import DEFAULT_OPSET, ExportOptions, ModelFormat
from .onnx import OnnxSuspect, export_onnx
from .pt2 import save_exported
from .torchscript import save_torchscript

__all__ = ["DEFAULT_OPSET", "EXPORT_FORMATS", "FORMATS", "ModelFormat", "OnnxSuspect", "available_device", "export_model",
           "export_onnx",
           "format_of", "load_model", "load_suspect", "load_trainable_model", "model_help", "require_trainable",
           "save_exported", "save_torchscript"]

# In the order they are asked to recognise a spec: the formats known by their suffix first,
# then TorchScript (any other existing file), then the factory spec form.
FORMATS: tuple[ModelFormat, ...] = (onnx.FORMAT, pt2.FORMAT, torchscript.FORMAT, factory.FORMAT)
BY_NAME = {fmt.name: fmt for fmt in FORMATS}
EXPORT_FORMATS = tuple(fmt.name for fmt in FORMATS if fmt.exportable)


def format_of(spec: str | os.PathLike[str]) -> ModelFormat:
    """The format of the model spec (a path, or ``package.module:factory``).

    Raises:
        FileNotFoundError: it names a model file (by its folder or suffix) that does not exist.
        ModelLoadError: it is neither an existing file nor a spec any format recognises.
    """
    if not isinstance(spec, (str, os.PathLike)):
        raise ModelLoadError(f"model spec must be a path or 'package.module:factory' string, got {type(spec).__name__}")
    text = os.fspath(spec)
    for fmt in FORMATS:
        if fmt.recognises(text):
            return fmt
    if os.sep in text or any(Path(text).suffix in fmt.suffixes for fmt in FORMATS):
        raise not_a_file("model file", text, text)
    raise ModelLoadError(f"model spec {text!r} is neither an existing file nor of the form 'package.module:factory'")


def load_model(spec: str | os.PathLike[str], weights: str | os.PathLike[str] | None = None,
               device: str | torch.device = "cpu") -> nn.Module:
    """Load the model named by ``spec`` on ``device``, in eval mode, after its format inspected it.

    Args:
        spec: a ``.pt2`` path, a TorchScript path, or ``package.module:factory``.
        weights: state dict file for a factory spec (``.safetensors`` or a ``torch.save``
            file holding a dict of tensors, optionally under a ``"state_dict"`` key).
            Not allowed with file specs, which carry their own weights.
        device: where to put the model.

    Raises:
        FileNotFoundError: a model or weights file does not exist.
        ModelLoadError: anything else wrong with the spec, the file or the weights (an ONNX
            file, which loads only as a suspect, included).
    """
    return format_of(spec).load_model(os.fspath(spec), weights, device)


def load_suspect(spec: str | os.PathLike[str], weights: str | os.PathLike[str] | None = None,
                 device: str | torch.device = "cpu") -> Any:
    """A suspect for verification or serving: an ONNX file (run by onnxruntime) or any load_model spec."""
    return format_of(spec).load_suspect(os.fspath(spec), weights, available_device(device))


def available_device(device) -> str:
    """`device` as a string, checked here: a device this machine lacks is the option's fault,
    not the model file's (its load would only fail)."""
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError, ValueError) as exc:
        raise ArgumentError("device", short_error(exc)) from None
    if parsed.type == "cuda" and (not torch.cuda.is_available()
                                  or (parsed.index or 0) >= torch.cuda.device_count()):
        raise ArgumentError("device", f"{device!r} asked for, but this machine has "
                                      f"{torch.cuda.device_count() if torch.cuda.is_available() else 'no'} CUDA device(s)")
    return str(parsed)


def require_trainable(spec: str | os.PathLike[str], argument: str = "model") -> ModelFormat:
    """The spec's format, if protect and evaluate can train what it loads; else ArgumentError naming ``argument``."""
    fmt = format_of(spec)
    if not fmt.trainable:
        trainable = " or ".join(f.description for f in FORMATS if f.trainable)
        raise ArgumentError(argument, f"protect and evaluate fine-tune and prune copies of the owner, so they need a "
                                      f"trainable model: give {trainable} with its weights, not a {fmt.description}")
    return fmt


def load_trainable_model(spec: str | os.PathLike[str], weights: str | os.PathLike[str] | None = None,
                         argument: str = "model", device: str | torch.device = "cpu") -> nn.Module:
    """load_model for protect and evaluate: a format that cannot be trained is refused before it loads."""
    model = require_trainable(spec, argument).load_model(os.fspath(spec), weights, device)
    if isinstance(model, torch.jit.ScriptModule):  # a factory may build one
        raise ArgumentError(argument, "the factory returned a TorchScript module, which cannot be fine-tuned")
    return model


def export_model(model: nn.Module, input_shape: Sequence[int], path: str | os.PathLike[str],
                 format: str = "onnx", opset: int = DEFAULT_OPSET) -> Path:  # noqa: A002 - CLI name
    """Save ``model`` in ``format`` (one of EXPORT_FORMATS), the batch axis dynamic where the format allows."""
    fmt = BY_NAME.get(format) if isinstance(format, str) else None
    if fmt is None or not fmt.exportable:
        raise ArgumentError("format", f"must be one of {', '.join(map(repr, EXPORT_FORMATS))}, got {format!r}")
    return fmt.export(model, image_shape("input_shape", input_shape), path, ExportOptions(opset=opset))


def model_help(suspects: bool = False) -> str:
    """The forms a model spec takes, for a command's help (``suspects``: the suspect-only formats too)."""
    shown = [fmt.description for fmt in FORMATS if not fmt.suspect_only]
    shown += [fmt.description for fmt in FORMATS if fmt.suspect_only and suspects]
    return ", ".join(shown[:-1]) + f", or {shown[-1]}"
