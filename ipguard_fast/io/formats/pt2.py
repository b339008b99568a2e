"""torch.export archives (``.pt2``): read once, inspected, then loaded from the checked bytes.

Trust: ``torch.export.load`` trusts its archive and can be made to run code while loading,
so ``inspect`` reads the file into memory once and pt2_archive.inspect_archive checks every
member (only raw tensors and graphs of allowed operators pass); ``read`` hands torch those
same bytes, so nothing can change between the check and the load, and checks the program
torch built (io/exported_graphs.py: its operators, and no write into an input or a weight) before
anything of it runs.
"""
from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from ..._atomic import atomic_save
from ..._files import short_error
from ..._validate import ArgumentError
from ...modules import eval_mode, refuses_train_mode
from ..archive import read_archive_file
from ..exported_graphs import check_exported_program
from ..weights import ModelLoadError
from .base import ExportOptions, ModelFormat, example_input, model_file
from .pt2_archive import inspect_archive

__all__ = ["FORMAT", "ExportedProgramFormat", "save_exported"]


class ExportedProgramFormat(ModelFormat):
    name = "pt2"
    description = "torch.export .pt2 file"
    suffixes = (".pt2",)

    def inspect(self, spec: str, weights=None) -> bytes:
        data = read_archive_file(model_file(spec, weights), spec)
        inspect_archive(data, spec)
        return data

    def read(self, data: bytes, spec: str, weights, device) -> nn.Module:
        try:
            program = torch.export.load(io.BytesIO(data))
        except Exception as exc:
            raise ModelLoadError(f"{spec} is not a loadable torch.export (.pt2) archive: {short_error(exc)}") from exc
        check_exported_program(program, spec)
        try:
            return program.module()
        except Exception as exc:
            raise ModelLoadError(f"{spec} is not a loadable torch.export (.pt2) archive: {short_error(exc)}") from exc

    def export(self, model: nn.Module, input_shape: Sequence[int], path: str | os.PathLike[str],
               options: ExportOptions) -> Path:
        if isinstance(model, torch.jit.ScriptModule):
            raise ArgumentError("model", "a TorchScript model cannot be re-exported as .pt2; give a "
                                "package.module:factory model spec with --weights instead")
        if refuses_train_mode(model):
            raise ArgumentError("model", "it is already a .pt2 export; copy the file instead")
        return save_exported(model, example_input(model, input_shape), path)


FORMAT = ExportedProgramFormat()


def save_exported(model: nn.Module, example: torch.Tensor, path: str | os.PathLike[str]) -> Path:
    """Export ``model`` with ``torch.export`` (batch dimension dynamic) and save a ``.pt2`` file, atomically.

    The export is taken in eval mode (exported graphs freeze dropout/batch-norm behaviour);
    every submodule's mode is restored afterwards. Returns the path written.
    """
    path = Path(path)
    if not FORMAT.recognises(str(path)):
        raise ArgumentError("path", f"must end in .pt2 so load_model recognises it, got {path.name!r}")
    with eval_mode(model):
        batch = torch.export.Dim("batch")
        program = torch.export.export(model, (example,), dynamic_shapes=({0: batch},))
        atomic_save(path, lambda handle: torch.export.save(program, handle))
    return path
