"""TorchScript files (``torch.jit.save``): any existing model file the suffix formats do not claim.

Trust: the graph runs inside the TorchScript interpreter, and the archive's pickled parts
are read by TorchScript's own restricted unpickler, which cannot call arbitrary Python.
``inspect`` therefore only checks that the file is there and carries its own weights; an
archive reader and an operator check of every method's graph belong in it.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from ..._atomic import atomic_save
from ...modules import eval_mode, refuses_train_mode
from ..weights import ModelLoadError
from .base import ExportOptions, ModelFormat, example_input, model_file, quiet_jit_deprecation, trace_exported

__all__ = ["FORMAT", "TorchScriptFormat", "save_torchscript"]


class TorchScriptFormat(ModelFormat):
    name = "torchscript"
    description = "TorchScript file"
    suffixes = (".pt", ".pth", ".ts", ".jit", ".zip")

    def recognises(self, spec: str) -> bool:
        # Any existing file: the registry asks the formats recognised by their suffix first.
        return Path(spec).is_file()

    def inspect(self, spec: str, weights=None) -> Path:
        return model_file(spec, weights)

    def read(self, path: Path, spec: str, weights, device) -> nn.Module:
        try:
            with quiet_jit_deprecation():
                return torch.jit.load(str(path), map_location=device)
        except Exception as exc:
            raise ModelLoadError(
                f"{path} is not a TorchScript archive ({exc}); save models with torch.jit.save or "
                "torch.export.save (.pt2), or pass 'package.module:factory' with --weights"
            ) from exc

    def export(self, model: nn.Module, input_shape: Sequence[int], path: str | os.PathLike[str],
               options: ExportOptions) -> Path:
        example = example_input(model, input_shape)
        if not refuses_train_mode(model) and not isinstance(model, torch.jit.ScriptModule):
            return save_torchscript(model, example, path)
        if isinstance(model, torch.jit.ScriptModule):
            traced = model  # already TorchScript: save as is
        else:  # a loaded .pt2 module: trace it ourselves (save_torchscript calls eval(), which it refuses)
            with torch.no_grad():
                traced = trace_exported(model, example)
        with quiet_jit_deprecation():
            return atomic_save(path, lambda tmp: torch.jit.save(traced, tmp))


FORMAT = TorchScriptFormat()


def save_torchscript(model: nn.Module, example: torch.Tensor, path: str | os.PathLike[str]) -> Path:
    """Trace ``model`` on ``example`` (in eval mode, no grad) and save it as TorchScript, atomically.

    Every submodule's train/eval mode is restored afterwards. Returns the path written.
    """
    path = Path(path)
    with eval_mode(model), torch.no_grad(), quiet_jit_deprecation():
        traced = torch.jit.trace(model, example)
        atomic_save(path, lambda tmp: torch.jit.save(traced, tmp))
    return path
