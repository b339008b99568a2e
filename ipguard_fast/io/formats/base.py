"""What a model format provides, and the few helpers the formats share.

A format is one ModelFormat object, and every model file or spec passes through the
same steps, in this order:

1. ``recognises(spec)``: does the spec name this format (a suffix, an existing file, a
   spec form)? The registry asks the formats in turn.
2. ``inspect(spec, weights)``: the safety check before anything is loaded. A model file
   comes from a party that may be hostile, so this is where a format refuses what could
   run code or exhaust memory. It returns what ``read`` builds from: the checked bytes where
   the loader can read bytes (so nothing changes between the check and the load), else the
   path.
3. ``read(inspected, spec, weights, device)``: the object. ``load_model`` gives it as a
   model (an nn.Module in eval mode on ``device``), ``load_suspect`` as anything the
   verification accepts.
4. ``export(model, input_shape, path, options)``: write a model in this format.

and three facts: ``trainable`` (protect and evaluate fine-tune and prune copies of what it
loads), ``exportable`` and ``suspect_only`` (loads for verification and serving, not as a
model for the search).
"""
from __future__ import annotations

import os
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import torch
from torch import nn

from ..._files import not_a_file
from ..._validate import ArgumentError
from ...modules import device_and_dtype, set_training
from ..weights import ModelLoadError

__all__ = ["DEFAULT_OPSET", "ExportOptions", "ModelFormat", "example_input", "model_file", "quiet_jit_deprecation",
           "trace_exported"]

DEFAULT_OPSET = 17

# Example batch used for tracing/exporting: 2, not 1, so no exporter specialises the batch axis to 1.
EXAMPLE_BATCH = 2


@dataclass(frozen=True)
class ExportOptions:
    """Settings an exporter may use; a format with a setting of its own adds a field here."""

    opset: int = DEFAULT_OPSET  # ONNX opset version


class ModelFormat:
    """One model format (see the module docstring). Subclasses set the class attributes
    and implement ``inspect`` and ``read`` (and ``export`` when ``exportable``)."""

    name: str = ""                   # the registry's key, and the CLI's --format choice
    description: str = ""            # as the CLI's help lists it: "TorchScript file"
    suffixes: tuple[str, ...] = ()   # file names that are this format (a missing one is "file not found")
    trainable: bool = False          # protect / evaluate can fine-tune what it loads
    exportable: bool = True          # export() writes it
    suspect_only: bool = False       # loads for verify / serve, not as a model for the search

    def recognises(self, spec: str) -> bool:
        """Whether ``spec`` names this format; by default, by its suffix."""
        return bool(self.suffixes) and spec.endswith(self.suffixes)

    def inspect(self, spec: str, weights: str | os.PathLike[str] | None) -> Any:
        """Refuse (ModelLoadError) what must not be loaded; return what ``read`` builds from."""
        raise NotImplementedError

    def read(self, inspected: Any, spec: str, weights: str | os.PathLike[str] | None,
             device: str | torch.device) -> Any:
        """The object built from what ``inspect`` returned."""
        raise NotImplementedError

    def load_model(self, spec: str, weights: str | os.PathLike[str] | None = None,
                   device: str | torch.device = "cpu") -> nn.Module:
        """The model ``spec`` names, inspected first, on ``device``, in eval mode."""
        model = self.read(self.inspect(spec, weights), spec, weights, device).to(device)
        set_training(model, False)
        return model

    def load_suspect(self, spec: str, weights: str | os.PathLike[str] | None = None,
                     device: str | torch.device = "cpu") -> Any:
        """A suspect for verification or serving; by default the model."""
        return self.load_model(spec, weights, device)

    def export(self, model: nn.Module, input_shape: tuple[int, ...], path: str | os.PathLike[str],
               options: ExportOptions) -> Path:
        """Write ``model`` (taking images of ``input_shape``) to ``path`` in this format."""
        raise ArgumentError("format", f"{self.name} models are not written by export")

    def __repr__(self) -> str:
        return f"<model format {self.name}>"


def model_file(spec: str, weights: str | os.PathLike[str] | None) -> Path:
    """The path of a model file that carries its own weights: no ``weights``, and it must exist."""
    if weights is not None:
        raise ModelLoadError(f"weights: {os.fspath(weights)!r} only applies to 'package.module:factory' specs; "
                             f"the model file {spec!r} already contains its weights")
    path = Path(spec)
    if not path.is_file():
        raise not_a_file("model file", spec, path)
    return path


def example_input(model: nn.Module, input_shape: Sequence[int]) -> torch.Tensor:
    """A zero batch of EXAMPLE_BATCH images on the model's device, in its dtype, to trace or export on."""
    device, dtype = device_and_dtype(model)
    return torch.zeros(EXAMPLE_BATCH, *input_shape, device=device, dtype=dtype)


def trace_exported(model: nn.Module, example: torch.Tensor) -> torch.jit.ScriptModule:
    """TorchScript trace of a loaded .pt2 module (which refuses train()/eval(), so exporters
    that call them take this trace instead: the same graph, the batch axis still dynamic).

    Its runtime input checks (``torch._check`` on the shapes) hold for the example and are
    dropped from the trace, with a TracerWarning each: those warnings are expected and hidden.
    """
    with quiet_jit_deprecation(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning,
                                message=r"Converting a tensor to a Python boolean")
        return torch.jit.trace(model, example, check_trace=False)


@contextmanager
def quiet_jit_deprecation() -> Iterator[None]:
    """Hide torch's FutureWarning that torch.jit is deprecated: TorchScript is a supported format here."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning, message=r".*torch\.jit.*deprecated")
        yield
