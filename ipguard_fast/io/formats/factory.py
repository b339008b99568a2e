"""``package.module:factory`` specs: your own installed code builds the architecture, and the
weights come from a state dict file (``.safetensors``, or a ``torch.save`` file read with
``weights_only=True``).

The only trainable format: protect and evaluate fine-tune and prune copies of the owner,
which needs the eager module. Trust: the factory is your code, run as it is; the weights
are data only (io/weights.py). ``inspect`` checks the spec's form; nothing is imported
before it passes.
"""
from __future__ import annotations

import importlib
import re

from torch import nn

from ..weights import ModelLoadError, load_weights
from .base import ModelFormat

__all__ = ["FORMAT", "FactoryFormat"]

# `package.module:factory`, the attribute part may be dotted (e.g. `pkg.mod:Class.build`).
_FACTORY_SPEC = re.compile(r"^(?P<module>[A-Za-z_][\w.]*):(?P<attr>[A-Za-z_][\w.]*)$")


class FactoryFormat(ModelFormat):
    name = "factory"
    description = "package.module:factory"
    trainable = True
    exportable = False  # a factory is code: export writes one of the file formats

    def recognises(self, spec: str) -> bool:
        return _FACTORY_SPEC.match(spec) is not None

    def inspect(self, spec: str, weights=None) -> tuple[str, str]:
        match = _FACTORY_SPEC.match(spec)
        if match is None:
            raise ModelLoadError(f"model spec {spec!r} is not of the form 'package.module:factory'")
        return match["module"], match["attr"]

    def read(self, names: tuple[str, str], spec: str, weights, device) -> nn.Module:
        model = _build(*names, spec)
        if weights is not None:
            load_weights(model, weights)
        return model


FORMAT = FactoryFormat()


def _build(module_name: str, attr_path: str, spec: str) -> nn.Module:
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
