"""TorchScript files (``torch.jit.save``): any existing model file the suffix formats do not claim.

Trust: the graph runs inside the TorchScript interpreter, and the archive's pickled parts
are read by TorchScript's own restricted unpickler, which cannot call arbitrary Python. But
the interpreter runs whatever operators the code names (``aten::from_file`` maps files
writably), and loading itself runs any ``__setstate__`` the code defines and the native
``__setstate__`` of ``torch.classes`` objects. So:

- ``inspect`` reads the file once, through the package's zip reader (io/archive.py: the
  members torch will read, refused on duplicates, odd names or memory bombs), and refuses
  code or pickles that define or name a load-time hook (``__setstate__``, ``torch.classes``);
- ``read`` hands torch those same bytes -- the calls ``torch.jit.load`` makes, keeping the
  compilation unit -- and checks every function compiled into it (io/graphs.py: operators on
  the allowlist, no write into an input, a weight or an attribute) before anything runs.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from ..._atomic import atomic_save
from ..._files import short_error
from ...modules import eval_mode, refuses_train_mode
from ..archive import ZipArchive, open_archive, read_archive_file
from ..graphs import check_script_module
from ..weights import ModelLoadError
from .base import ExportOptions, ModelFormat, example_input, model_file, quiet_jit_deprecation, trace_exported

__all__ = ["FORMAT", "TorchScriptFormat", "save_torchscript"]

_MAX_CODE_BYTES = 64 << 20
# __setstate__ of a scripted class runs while data.pkl is unpickled; torch.classes objects run native code.
_LOAD_HOOKS = (b"__setstate__", b"torch.classes")


class TorchScriptFormat(ModelFormat):
    name = "torchscript"
    description = "TorchScript file"
    suffixes = (".pt", ".pth", ".ts", ".jit", ".zip")

    def recognises(self, spec: str) -> bool:
        # Any existing file: the registry asks the formats recognised by their suffix first.
        return Path(spec).is_file()

    def inspect(self, spec: str, weights=None) -> bytes:
        data = read_archive_file(model_file(spec, weights), spec)
        if not data.startswith(b"PK\x03\x04"):
            raise _not_torchscript(spec, "not a zip archive")
        _check_load_hooks(open_archive(data, spec), spec)
        return data

    def read(self, data: bytes, spec: str, weights, device) -> nn.Module:
        try:
            unit = torch._C.CompilationUnit()
            compiled = torch._C.import_ir_module_from_buffer(unit, data, torch.device(device), {}, False)
            module = torch.jit._recursive.wrap_cpp_module(compiled)
        except Exception as exc:
            raise _not_torchscript(spec, short_error(exc)) from exc
        check_script_module(unit, module, spec)
        return module

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
            return atomic_save(path, lambda handle: torch.jit.save(traced, handle))


FORMAT = TorchScriptFormat()


def _not_torchscript(spec: str, why: str) -> ModelLoadError:
    return ModelLoadError(f"{spec} is not a TorchScript archive ({why}); save models with torch.jit.save or "
                          "torch.export.save (.pt2), or pass 'package.module:factory' with --weights")


def _check_load_hooks(archive: ZipArchive, spec: str) -> None:
    """Refuse code or pickles that define or name what torch.jit.load runs while loading, before any check."""
    if "data.pkl" not in archive:
        raise _not_torchscript(spec, "it has no data.pkl")
    for member in archive.names:
        if member.lower().endswith((".py", ".pkl")):  # torch finds members ignoring case
            text = archive.read(member, _MAX_CODE_BYTES)
            hook = next((word for word in _LOAD_HOOKS if word in text), None)
            if hook is not None:
                raise ModelLoadError(f"{spec}: refused: {member} names {hook.decode()}, which torch.jit.load would "
                                     "run while loading, before the model could be checked")


def save_torchscript(model: nn.Module, example: torch.Tensor, path: str | os.PathLike[str]) -> Path:
    """Trace ``model`` on ``example`` (in eval mode, no grad) and save it as TorchScript, atomically.

    Every submodule's train/eval mode is restored afterwards. Returns the path written.
    """
    path = Path(path)
    with eval_mode(model), torch.no_grad(), quiet_jit_deprecation():
        traced = torch.jit.trace(model, example)
        atomic_save(path, lambda handle: torch.jit.save(traced, handle))
    return path
