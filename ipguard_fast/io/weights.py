"""Reading a state dict from a local file and loading it into a model, strictly.

Weights come from .safetensors files (data only) or from torch.save files read with
``weights_only=True`` (tensors and plain containers; no arbitrary pickled objects).
Training checkpoints that nest the weights under ``"state_dict"`` are unwrapped.
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

__all__ = ["ModelLoadError", "load_weights", "read_state_dict"]


class ModelLoadError(ValueError):
    """A model spec or weights file could not be turned into a model."""


def read_state_dict(path: str | os.PathLike[str], argument: str = "weights") -> dict[str, torch.Tensor]:
    """The mapping of names to tensors stored in `path` (safetensors, or torch.save read weights-only)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{argument}: file not found: {path} (weights are only read from local files)")
    try:
        if path.suffix == ".safetensors":
            import safetensors.torch

            state = safetensors.torch.load_file(str(path), device="cpu")
        else:
            state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # safetensors and torch.load raise many types for a bad file
        raise ModelLoadError(f"{argument}: cannot read weights from {path}: {exc} "
                             "(expected .safetensors or a torch.save'd state dict)") from exc
    if isinstance(state, Mapping) and isinstance(state.get("state_dict"), Mapping):
        state = state["state_dict"]
    if not isinstance(state, Mapping) or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        raise ModelLoadError(f"{argument}: {path} does not hold a state dict (a mapping of names to tensors)")
    return dict(state)


def load_weights(model: nn.Module, path: str | os.PathLike[str], argument: str = "weights") -> nn.Module:
    """Load the state dict in `path` into `model` (in place), every key and shape matching."""
    state = read_state_dict(path, argument)
    expected = set(model.state_dict())
    missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
    if missing or unexpected:
        raise ModelLoadError(f"{argument}: the weights in {path} do not match the model: missing keys "
                             f"{_short_list(missing)}, unexpected keys {_short_list(unexpected)}")
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:  # shape mismatches
        raise ModelLoadError(f"{argument}: the weights in {path} do not match the model: {exc}") from exc
    return model


def _short_list(names: list[str], limit: int = 10) -> str:
    shown = ", ".join(names[:limit])
    more = f", ... ({len(names) - limit} more)" if len(names) > limit else ""
    return f"[{shown}{more}]"
