"""Reference models cached on disk: safetensors weights (never pickle), one file per model,
in a folder keyed by a hash of everything that decides the weights.

The key covers the owner's weights (SHA-256), the reference recipe (its JSON), the
seed, and the training data's size and first items, so a cached model is reused only
where rebuilding it would give the same weights. A model is rebuilt into a skeleton the
caller makes (a copy of the owner, or the generic model) and its state loaded strictly.
"""
from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any, Callable

import torch
from safetensors.torch import load_model, save_model
from torch import nn
from torch.utils.data import Dataset

from .._atomic import atomic_save
from .._hashing import tensor_bytes, update_framed

__all__ = ["ReferenceCache", "data_digest"]

_DATA_ITEMS_HASHED = 64


def data_digest(data: Dataset) -> str:
    """SHA-256 of a data set's length and its first 64 (image, label) items: cheap, and
    enough to tell the data sets one owner protects with apart."""
    digest = hashlib.sha256(b"ipguard_fast-protect-data-v1")
    update_framed(digest, str(len(data)).encode())
    for index in range(min(len(data), _DATA_ITEMS_HASHED)):
        image, label = data[index][0], data[index][1]
        update_framed(digest, tensor_bytes(torch.as_tensor(image)))
        update_framed(digest, str(int(label)).encode())
    return digest.hexdigest()


class ReferenceCache:
    """``folder/<key>/<name>.safetensors`` for each reference; ``key`` hashes the owner,
    the recipe, the seed and the data. ``folder=None`` caches nothing."""

    def __init__(self, folder, *, owner_sha256: str, recipe: dict[str, Any], data_sha256: str):
        text = json.dumps({"owner": owner_sha256, "recipe": recipe, "data": data_sha256}, sort_keys=True)
        self.key = hashlib.sha256(text.encode()).hexdigest()[:32]
        self.folder = None if folder is None else Path(folder) / self.key

    def path(self, name: str) -> Path | None:
        if self.folder is None:
            return None
        return self.folder / (re.sub(r"[^A-Za-z0-9_.-]+", "_", name) + ".safetensors")

    def load(self, name: str, skeleton: Callable[[], nn.Module]) -> nn.Module | None:
        """The cached model `name`, or None when it is not cached (or unreadable: then rebuilt)."""
        path = self.path(name)
        if path is None or not path.is_file():
            return None
        model = skeleton()
        try:
            missing, unexpected = load_model(model, str(path), strict=True)
        except Exception:   # a damaged or foreign file: rebuild rather than fail
            return None
        return model.eval()

    def save(self, name: str, model: nn.Module) -> None:
        path = self.path(name)
        if path is None:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        with torch.no_grad():
            atomic_save(path, lambda tmp: save_model(model, str(tmp), metadata={"name": name}))
