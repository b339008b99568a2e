"""Loading models from files and specs, and saving them as TorchScript or .pt2; never unpickling.

A model spec is one of:

* ``path/to/model.pt2`` -- a ``torch.export`` archive (``torch.export.load(path).module()``);
* ``path/to/model.pt`` (any other existing file) -- a TorchScript archive (``torch.jit.load``);
* ``package.module:factory`` -- import ``package.module``, call ``factory()`` to build the
  architecture, then optionally load weights from ``weights`` (a ``.safetensors`` file, or a
  ``torch.save``'d state dict read with ``weights_only=True``).

Trust model (a suspect's file comes from the party accused of piracy):

* weights (``.safetensors``, or torch files read with ``weights_only=True``): data only;
* ``.pt2``: inspected by pt2.py before torch reads it; only raw tensors and graphs of
  registered operators load, so nothing in the file can run Python;
* TorchScript: its graph runs inside the TorchScript interpreter (its pickled parts are
  read by TorchScript's own restricted unpickler), which cannot call arbitrary Python;
* ``package.module:factory``: your own installed code, run as it is.
"""

from __future__ import annotations

import importlib
import os
import re
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import torch
from torch import nn

from .._atomic import atomic_save
from ..modules import eval_mode, set_training
from .pt2 import load_exported
from .weights import ModelLoadError, load_weights

__all__ = ["ModelLoadError", "load_model", "save_exported", "save_torchscript"]

# `package.module:factory`, the attribute part may be dotted (e.g. `pkg.mod:Class.build`).
_FACTORY_SPEC = re.compile(r"^(?P<module>[A-Za-z_][\w.]*):(?P<attr>[A-Za-z_][\w.]*)$")


# Suffixes that mark a spec as a file path (so a missing one is "file not found", not "bad spec").
_MODEL_FILE_SUFFIXES = {".pt", ".pth", ".pt2", ".ts", ".jit", ".zip"}


def load_model(spec: str | os.PathLike[str], weights: str | os.PathLike[str] | None = None,
               device: str | torch.device = "cpu") -> nn.Module:
    """Load the model named by ``spec`` (see module docstring) on ``device``, in eval mode.

    Args:
        spec: ``.pt2`` path, TorchScript path, or ``package.module:factory``.
        weights: state dict file for a factory spec (``.safetensors`` or a ``torch.save``
            file holding a dict of tensors, optionally under a ``"state_dict"`` key).
            Not allowed with file specs, which carry their own weights.
        device: where to put the model.

    Raises:
        FileNotFoundError: a model or weights file does not exist.
        ModelLoadError: anything else wrong with the spec, the file or the weights.
    """
    if not isinstance(spec, (str, os.PathLike)):
        raise ModelLoadError(f"model spec must be a path or 'package.module:factory' string, got {type(spec).__name__}")
    spec_str = os.fspath(spec)
    path = Path(spec_str)
    if spec_str.endswith(".onnx"):
        raise ModelLoadError(f"{spec_str}: an ONNX model can be verified and served (load_suspect), but the "
                             "search and the evaluation need gradients and trainable weights: give the "
                             "PyTorch model (TorchScript, .pt2 or package.module:factory)")

    if spec_str.endswith(".pt2") or path.is_file():
        if weights is not None:
            raise ModelLoadError(
                f"weights={os.fspath(weights)!r} only applies to 'package.module:factory' specs; "
                f"the model file {spec_str!r} already contains its weights"
            )
        if not path.is_file():
            raise FileNotFoundError(f"model file not found: {spec_str}")
        model = load_exported(path) if spec_str.endswith(".pt2") else _load_torchscript(path, device)
    else:
        match = _FACTORY_SPEC.match(spec_str)
        if match is None:
            if os.sep in spec_str or path.suffix in _MODEL_FILE_SUFFIXES:
                raise FileNotFoundError(f"model file not found: {spec_str}")
            raise ModelLoadError(
                f"model spec {spec_str!r} is neither an existing file nor of the form 'package.module:factory'"
            )
        model = _build_from_factory(match["module"], match["attr"], spec_str)
        if weights is not None:
            load_weights(model, weights)

    model = model.to(device)
    set_training(model, False)
    return model


def save_torchscript(model: nn.Module, example: torch.Tensor, path: str | os.PathLike[str]) -> Path:
    """Trace ``model`` on ``example`` (in eval mode, no grad) and save it as TorchScript, atomically.

    Every submodule's train/eval mode is restored afterwards. Returns the path written.
    """
    path = Path(path)
    with eval_mode(model), torch.no_grad(), _quiet_jit_deprecation():
        traced = torch.jit.trace(model, example)
        atomic_save(path, lambda tmp: torch.jit.save(traced, tmp))
    return path


def save_exported(model: nn.Module, example: torch.Tensor, path: str | os.PathLike[str]) -> Path:
    """Export ``model`` with ``torch.export`` (batch dimension dynamic) and save a ``.pt2`` file, atomically.

    The export is taken in eval mode (exported graphs freeze dropout/batch-norm behaviour);
    every submodule's mode is restored afterwards. Returns the path written.
    """
    path = Path(path)
    if path.suffix != ".pt2":
        raise ValueError(f"path: must end in .pt2 so load_model recognises it, got {path.name!r}")
    with eval_mode(model):
        batch = torch.export.Dim("batch")
        program = torch.export.export(model, (example,), dynamic_shapes=({0: batch},))
        atomic_save(path, lambda tmp: torch.export.save(program, tmp))
    return path


# ---------------------------------------------------------------------- loaders


def _load_torchscript(path: Path, device: str | torch.device) -> nn.Module:
    try:
        with _quiet_jit_deprecation():
            return torch.jit.load(str(path), map_location=device)
    except Exception as exc:
        raise ModelLoadError(
            f"{path} is not a TorchScript archive ({exc}); save models with torch.jit.save or "
            "torch.export.save (.pt2), or pass 'package.module:factory' with --weights"
        ) from exc


def _build_from_factory(module_name: str, attr_path: str, spec: str) -> nn.Module:
    try:
        obj = importlib.import_module(module_name)
    except ImportError as exc:
        raise ModelLoadError(
            f"cannot import module {module_name!r} from model spec {spec!r}: {exc} "
            "(is it installed or on PYTHONPATH?)"
        ) from exc
    for part in attr_path.split("."):
        if not hasattr(obj, part):
            raise ModelLoadError(f"model spec {spec!r}: {getattr(obj, '__name__', obj)!r} has no attribute {part!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise ModelLoadError(f"model spec {spec!r}: {attr_path!r} is not callable")
    try:
        model = obj()
    except Exception as exc:
        raise ModelLoadError(f"model spec {spec!r}: calling {attr_path}() with no arguments failed: {exc}") from exc
    if not isinstance(model, nn.Module):
        raise ModelLoadError(f"model spec {spec!r}: factory returned {type(model).__name__}, not a torch.nn.Module")
    return model


# ---------------------------------------------------------------------- helpers


@contextmanager
def _quiet_jit_deprecation() -> Iterator[None]:
    """Hide torch's FutureWarning that torch.jit is deprecated: TorchScript input is a supported format here."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning, message=r".*torch\.jit.*deprecated")
        yield
