"""torchvision and timm architectures, randomly initialised or with weights from a local file.

Nothing is ever downloaded: ``weights=None`` is passed to the builders and weights
come only from ``weights_path`` (see ipguard_fast.io.weights).
"""
from __future__ import annotations

import os

from torch import nn

from .._optional import require
from .._validate import positive_int
from ..io.weights import load_weights

__all__ = ["timm_model", "torchvision_model"]


def torchvision_model(name: str, num_classes: int = 1000, weights_path: str | os.PathLike | None = None,
                      **kwargs) -> nn.Module:
    """A torchvision classification model, randomly initialised or loaded from a local
    state-dict file. Extra ``kwargs`` go to the torchvision builder (e.g.
    ``aux_logits=False`` for Inception)."""
    import torchvision

    positive_int("num_classes", num_classes)
    available = torchvision.models.list_models(module=torchvision.models)
    if name not in available:
        raise ValueError(
            f"name: {name!r} is not a torchvision classification model; e.g. {', '.join(available[:8])}, ...")
    model = torchvision.models.get_model(name, weights=None, num_classes=num_classes, **kwargs)
    return model if weights_path is None else load_weights(model, weights_path, "weights_path")


def timm_model(name: str, num_classes: int = 1000, weights_path: str | os.PathLike | None = None,
               **kwargs) -> nn.Module:
    """A timm model (optional package), weights only from a local file."""
    timm = require("timm", "timm", f"timm_model({name!r})")
    positive_int("num_classes", num_classes)
    model = timm.create_model(name, pretrained=False, num_classes=num_classes, **kwargs)
    return model if weights_path is None else load_weights(model, weights_path, "weights_path")
