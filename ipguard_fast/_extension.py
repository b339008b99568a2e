"""Loads the compiled ops library (ipguard_fast._C) once, if it was built.

`has_extension()` says whether torch.ops.ipguard.* are the compiled kernels.
Without them, ipguard_fast.ops falls back to ipguard_fast.reference and warns
once. IPGUARD_FAST_FORCE_REFERENCE=1 forces the reference (for A/B runs).
"""
from __future__ import annotations

import importlib.util
import os
import warnings

import torch

_loaded: bool | None = None
_load_error: str | None = None


def _load() -> bool:
    global _loaded, _load_error
    if _loaded is not None:
        return _loaded
    spec = importlib.util.find_spec("ipguard_fast._C")
    if spec is None or spec.origin is None:
        _loaded, _load_error = False, "ipguard_fast._C was not built"
        return False
    try:
        torch.ops.load_library(spec.origin)
        _loaded = True
    except OSError as exc:  # e.g. built against another torch
        _loaded, _load_error = False, f"could not load {spec.origin}: {exc}"
    return _loaded


def force_reference() -> bool:
    """True when IPGUARD_FAST_FORCE_REFERENCE=1 asks for the pure-PyTorch ops."""
    return os.environ.get("IPGUARD_FAST_FORCE_REFERENCE", "0") == "1"


def has_extension() -> bool:
    """True when the compiled ops are loaded (whatever IPGUARD_FAST_FORCE_REFERENCE says)."""
    return _load()


_warned = False


def use_compiled() -> bool:
    """Whether ops should dispatch to the compiled kernels; warns once when they are missing."""
    global _warned
    if force_reference():
        return False
    if _load():
        return True
    if not _warned:
        _warned = True
        warnings.warn(
            f"ipguard_fast: compiled ops unavailable ({_load_error}); using the pure-PyTorch "
            "reference. Build with `pip install --no-build-isolation .` for the fast kernels.",
            RuntimeWarning,
            stacklevel=3,
        )
    return False
