"""Optional dependencies: imported where they are used, with one message naming the extra.

The core (ops, search, fingerprints, verify) needs only torch, numpy and safetensors.
The evaluation and the demo need scikit-learn and matplotlib (extra `eval`), ONNX
needs onnx and onnxruntime (extra `onnx`), the benchmark's CW peer torchattacks
(extra `bench`).
"""
from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["MissingExtraError", "require"]


class MissingExtraError(ImportError):
    """An optional dependency is not installed; the message says which extra to install."""


def require(module: str, extra: str, purpose: str, package: str | None = None) -> ModuleType:
    """Import `module`, or raise MissingExtraError: '<purpose> needs <package>: pip install "ipguard_fast[<extra>]"'."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        package = package or module.split(".")[0]
        raise MissingExtraError(f"{purpose} needs the optional package '{package}', which is not installed: "
                                f"pip install 'ipguard_fast[{extra}]' (or pip install {package})",
                                name=exc.name) from exc
