"""ONNX files: written by :func:`export_onnx`, loaded as suspects (:class:`OnnxSuspect`) only.

* :func:`export_onnx` writes an ONNX file with a dynamic batch axis (input ``images``
  ``[batch, *input_shape]``, output ``logits`` ``[batch, C]``). It uses torch's
  TorchScript-based exporter (``torch.onnx.export(..., dynamo=False)``), which needs only the
  ``onnx`` package; the dynamo exporter would also need ``onnxscript`` and is used only as a
  fallback if a future torch drops the TorchScript path.
* :class:`OnnxSuspect` runs an ONNX file with ``onnxruntime`` on the CPU; it is a callable
  from images to logits, so it is a suspect for :mod:`ipguard_fast.verdicts`. The search and
  the evaluation need gradients, so an ONNX file never loads as a model (``load_model``).

Trust: data only (the graph runs in onnxruntime, which runs no Python). Optional
dependencies (extra ``onnx``): ``onnx`` (export) and ``onnxruntime`` (:class:`OnnxSuspect`).
Importing this module needs neither.
"""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn

from ..._atomic import atomic_save
from ..._errors import ran_out_of_memory
from ..._files import short_error
from ..._optional import require
from ..._validate import ArgumentError, image_shape
from ...modules import call_in_fixed_batches, eval_mode, refuses_train_mode
from ..archive import ArchiveLimits, read_archive_file
from ..weights import ModelLoadError
from .base import DEFAULT_OPSET, ExportOptions, ModelFormat, example_input, model_file, trace_exported
from .onnx_external import external_tensors

__all__ = ["DEFAULT_OPSET", "FORMAT", "OnnxFormat", "OnnxSuspect", "check_opset", "export_onnx"]

INPUT_NAME = "images"
OUTPUT_NAME = "logits"

# protobuf refuses messages of 2 GiB or more: an ONNX file with every weight inside is smaller.
_LARGEST_SELF_CONTAINED = 2**31 - 1

_ORT_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64}


def export_onnx(model: nn.Module | torch.export.ExportedProgram, input_shape: Sequence[int],
                path: str | os.PathLike[str], opset: int = DEFAULT_OPSET) -> Path:
    """Export ``model`` to ONNX at ``path`` (atomically) with a dynamic batch axis; returns the path.

    Args:
        model: an ``nn.Module`` (eager, TorchScript, or the module of a loaded ``.pt2``) or an
            ``ExportedProgram``. Exported in eval mode under ``no_grad``; an eager module's
            training flag is restored afterwards.
        input_shape: shape of one image, e.g. ``(3, 32, 32)``.
        path: output file (conventionally ``.onnx``).
        opset: ONNX opset version (default 17).

    Raises:
        ImportError: the ``onnx`` package is missing (``pip install onnx``).
        ValueError: bad ``input_shape`` / ``opset``, or the model cannot be exported.
    """
    input_shape = image_shape("input_shape", input_shape)
    check_opset(opset)
    if isinstance(model, torch.export.ExportedProgram):
        model = model.module()
    if not isinstance(model, nn.Module):
        raise ArgumentError("model", f"must be an nn.Module or ExportedProgram, got {type(model).__name__}")
    onnx = require("onnx", "onnx", "ONNX export")
    path = Path(path)

    example = example_input(model, input_shape)
    with eval_mode(model), torch.no_grad():
        # Exported (.pt2) modules refuse train()/eval(), which the ONNX exporter calls:
        # export a TorchScript trace of them instead (same graph, batch axis stays dynamic).
        target = trace_exported(model, example) if refuses_train_mode(model) else model

        data = _onnx_export(target, example, opset)
        atomic_save(path, lambda handle: handle.write(data))
    try:
        onnx.checker.check_model(str(path))
    except Exception as exc:  # keep the file for inspection, but say it is invalid
        raise ValueError(f"exported ONNX model at {path} does not pass onnx.checker: {exc}") from exc
    return path


def check_opset(opset: int) -> int:
    """``opset`` if this torch's ONNX exporter writes it (7 to torch.onnx's highest), else ArgumentError."""
    try:
        from torch.onnx._constants import ONNX_MAX_OPSET as highest
    except ImportError:  # a torch without the constant: the exporter says what it cannot write
        highest = None
    if isinstance(opset, bool) or not isinstance(opset, int) or opset < 7:
        raise ArgumentError("opset", f"must be an int >= 7, got {opset!r}")
    if highest is not None and opset > highest:
        raise ArgumentError("opset", f"must be at most {highest}, the highest this torch exports, got {opset!r}")
    return opset


def _onnx_export(model: nn.Module, example: torch.Tensor, opset: int) -> bytes:
    """The ONNX file's bytes (kept in memory: atomic_save writes them through its own descriptor)."""
    common = dict(input_names=[INPUT_NAME], output_names=[OUTPUT_NAME], opset_version=opset)
    try:
        with warnings.catch_warnings():
            # torch >= 2.9 warns that the TorchScript-based exporter is the legacy one; it is the
            # one that needs no onnxscript, so it is the one we want.
            warnings.filterwarnings("ignore", category=DeprecationWarning, message=r".*legacy TorchScript-based ONNX")
            warnings.filterwarnings("ignore", category=DeprecationWarning, message=r"The feature will be removed")
            warnings.filterwarnings("ignore", category=FutureWarning, message=r".*torch\.jit.*deprecated")
            warnings.filterwarnings("ignore", category=UserWarning, message=r"no signature found for <torch\.ScriptMethod")
            buffer = io.BytesIO()
            torch.onnx.export(model, (example,), buffer, dynamo=False, do_constant_folding=True,
                              dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}}, **common)
        return buffer.getvalue()
    except (ImportError, TypeError) as exc:
        # Only a torch without the TorchScript exporter (the module or the dynamo= flag gone)
        # falls through to the dynamo exporter; any other failure is the model's and is raised.
        missing_module = isinstance(exc, ImportError) and (exc.name or "").startswith("torch")
        if not (missing_module or (isinstance(exc, TypeError) and "dynamo" in str(exc))):
            raise
        legacy_error = exc
    try:
        import onnxscript  # noqa: F401
    except ImportError as exc:
        raise ImportError(f"this torch's TorchScript ONNX exporter failed ({legacy_error}); the dynamo exporter "
                          "needs onnxscript: pip install onnxscript") from exc
    batch = torch.export.Dim("batch")
    program = torch.onnx.export(model, (example,), None, dynamo=True, dynamic_shapes=({0: batch},), **common)
    return program.model_proto.SerializeToString()


class OnnxSuspect:
    """An ONNX model run by onnxruntime on the CPU: a callable from images to logits.

    ``OnnxSuspect(path)(images)`` takes a floating tensor ``[B, *input_shape]`` and returns the
    model's first output as a torch tensor (logits ``[B, C]``), so it can be passed as a suspect
    to :func:`ipguard_fast.verdicts.verify` / ``matching_rate``. Models with a fixed batch size are
    fed chunks of exactly that size (the last one padded).

    Attributes:
        input_name: name of the model's (first) input.
        input_shape: its per-image shape, with None for symbolic dimensions.
        batch_size: fixed batch size of the model, or None when the batch axis is dynamic.

    Raises:
        ImportError: onnxruntime is not installed (``pip install onnxruntime``).
        FileNotFoundError: ``path`` does not exist.
        ValueError: the file is not a loadable ONNX model.
    """

    def __init__(self, path: str | os.PathLike[str], threads: int | None = None) -> None:
        ort = require("onnxruntime", "onnx", "OnnxSuspect")
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"ONNX model not found: {self.path}")
        model_bytes = self._self_contained_bytes()
        options = ort.SessionOptions()
        if threads is not None:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        options.log_severity_level = 4  # fatal only: a failure's message is in the exception, reported once
        try:   # the bytes just checked, never the path: nothing else is read
            self.session = ort.InferenceSession(model_bytes, sess_options=options,
                                                providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types
            raise ValueError(f"{self.path} is not a loadable ONNX model: {exc}") from exc
        if not self.session.get_inputs():
            raise ValueError(f"{self.path} is not a suspect: the ONNX model takes no input")
        first = self.session.get_inputs()[0]
        self.input_name: str = first.name
        dims = [d if isinstance(d, int) and d > 0 else None for d in first.shape]
        self.batch_size: int | None = dims[0] if dims else None
        self.input_shape: tuple[int | None, ...] = tuple(dims[1:])
        self._dtype = _ORT_TYPES.get(first.type)
        if self._dtype is None:
            raise ValueError(f"{self.path}: input {first.name!r} has type {first.type}; only float inputs are supported")

    def _self_contained_bytes(self) -> bytes:
        """The file's bytes, refused when any tensor reads its data from another file
        (onnx_external.py: a suspect must not read the verifier's files)."""
        onnx = require("onnx", "onnx", "OnnxSuspect")
        if self.path.stat().st_size > _LARGEST_SELF_CONTAINED:
            raise ValueError(f"{self.path} is refused: over 2 GiB, protobuf's limit, so no ONNX model that keeps "
                             "all its weights inside it (external data is refused)")
        # The zip reader's bounded read: the file's own size, never a 2 GiB buffer reserved up
        # front (a worker under --memory-limit 1 refused every ONNX model so).
        model_bytes = read_archive_file(self.path, str(self.path), ArchiveLimits(max_file_bytes=_LARGEST_SELF_CONTAINED))
        try:
            model = onnx.load_model_from_string(model_bytes)
        except Exception as exc:  # protobuf's DecodeError and onnx's own
            raise ValueError(f"{self.path} is not a loadable ONNX model: {short_error(exc)}") from exc
        for name, location in external_tensors(model):
            raise ValueError(f"{self.path} is refused: its tensor {name!r} would read its data from the file "
                             f"{location!r} beside it, and a suspect may read no file of this machine; save it "
                             "with every weight inside (onnx.save_model(model, path, save_as_external_data=False))")
        return model_bytes

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        if not isinstance(images, torch.Tensor) or not images.is_floating_point() or images.dim() < 2:
            raise ValueError("images: must be a floating tensor of shape [B, *input_shape]")
        if images.dim() - 1 != len(self.input_shape) or any(
                want is not None and want != got for want, got in zip(self.input_shape, images.shape[1:])):
            shown = ", ".join("?" if d is None else str(d) for d in self.input_shape)
            raise ValueError(f"images: {self.path.name} takes images [B, {shown}], got {list(images.shape)}")
        images = images.detach().cpu()
        if self.batch_size is None:
            return self._run(images)
        return call_in_fixed_batches(self._run, images, self.batch_size)

    def _run(self, images: torch.Tensor) -> torch.Tensor:
        array = np.ascontiguousarray(images.numpy().astype(self._dtype, copy=False))
        try:
            output = np.asarray(self.session.run(None, {self.input_name: array})[0])
        except Exception as exc:  # onnxruntime's own types: the model cannot take these images, as for a module
            if ran_out_of_memory(RuntimeError(str(exc))):   # ... unless a resource ran out: never bad input
                raise MemoryError(f"suspect: {self.path.name}: {short_error(exc)}") from exc
            raise ValueError(f"suspect: fails on images of shape {list(images.shape)}: {short_error(exc)}") from exc
        if output.dtype.kind not in "biufc":   # strings, sequences, maps: no logits or labels
            raise ValueError(f"suspect: {self.path.name} answers {output.dtype} values, not logits or labels")
        return torch.from_numpy(output)

    def __repr__(self) -> str:
        return f"OnnxSuspect({str(self.path)!r})"


class OnnxFormat(ModelFormat):
    name = "onnx"
    description = ".onnx file"
    suffixes = (".onnx",)
    suspect_only = True

    def inspect(self, spec: str, weights=None) -> Path:
        # onnxruntime runs no Python; what it could read beyond the file (external data) is
        # refused by OnnxSuspect itself, which public callers construct directly too.
        return model_file(spec, weights)

    def read(self, path: Path, spec: str, weights, device) -> OnnxSuspect:
        return OnnxSuspect(path)

    def load_model(self, spec: str, weights=None, device="cpu") -> nn.Module:
        raise ModelLoadError(f"{spec}: an ONNX model can be verified and served (load_suspect), but the "
                             "search and the evaluation need gradients and trainable weights: give the "
                             "PyTorch model (TorchScript, .pt2 or package.module:factory)")

    def load_suspect(self, spec: str, weights=None, device="cpu") -> OnnxSuspect:
        return self.read(self.inspect(spec, weights), spec, weights, device)

    def export(self, model: nn.Module, input_shape: Sequence[int], path: str | os.PathLike[str],
               options: ExportOptions) -> Path:
        return export_onnx(model, input_shape, path, opset=options.opset)


FORMAT = OnnxFormat()
