"""Layer utilities every model-handling part shares: seeded construction, re-initialisation,
finding the classifier head, and the normalisation wrapper.

Convention of the whole package: models take raw [0, 1] pixels; any normalisation
lives inside the model (:class:`Normalized`), so fingerprints are always plain images.
The post-processing attacks (FTLL, RTLL, ...) fine-tune or re-initialise exactly the
layer :func:`last_layer` finds.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

import torch
from torch import nn

__all__ = ["Normalized", "last_layer", "reinitialize", "seeded"]

M = TypeVar("M", bound=nn.Module)


def seeded(factory: Callable[[], M], seed: int) -> M:
    """Call ``factory()`` with the global torch RNG seeded to ``seed``.

    The global RNG state is restored afterwards (``fork_rng``), so building a
    model never perturbs the caller's randomness and the same seed always
    gives the same initial weights.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return factory()


def reinitialize(module: nn.Module, seed: int) -> nn.Module:
    """Re-draw the parameters of ``module`` in place, reproducibly.

    Calls ``reset_parameters()`` on every submodule that defines it (Linear,
    Conv, BatchNorm, ...) under a seeded, forked RNG. Used by RTLL/RTAL (on
    the last layer) and to turn a copy of the owner into a fresh student.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for sub in module.modules():
            reset = getattr(sub, "reset_parameters", None)
            if callable(reset):
                reset()
            reset_stats = getattr(sub, "reset_running_stats", None)
            if callable(reset_stats):
                reset_stats()
    return module


# Attribute paths that hold the classifier in common model families:
# torchvision ResNet/Inception/GoogLeNet ("fc"), VGG/EfficientNet/MobileNet/
# DenseNet ("classifier"), Swin/timm ("head"), torchvision ViT ("heads.head").
_HEAD_PATHS = ("fc", "classifier", "heads.head", "head")
# Wrappers (Normalized, fp16 wrappers, DataParallel) keep the real model here.
_WRAPPER_ATTRS = ("model", "module")


def last_layer(model: nn.Module) -> nn.Linear:
    """The final ``nn.Linear`` of a classifier (the layer FTLL/RTLL touch).

    Looks for the conventional head attributes (``fc``, ``classifier``,
    ``heads.head``, ``head``); if one is a container (e.g. VGG's classifier
    ``Sequential``) its last Linear is returned. Wrappers exposing the inner
    network as ``.model``/``.module`` are unwrapped. Otherwise falls back to
    the last ``nn.Linear`` in module order.
    """
    if not isinstance(model, nn.Module):
        raise ValueError(f"model: must be an nn.Module, got {type(model).__name__}")
    found = _find_head(model)
    if found is None:
        raise ValueError(
            f"model: ({type(model).__name__}) has no nn.Linear classifier layer; "
            "last_layer needs a Linear head (convolutional heads such as SqueezeNet's are unsupported)"
        )
    return found


def _find_head(model: nn.Module) -> nn.Linear | None:
    for path in _HEAD_PATHS:
        try:
            head = model.get_submodule(path)
        except AttributeError:
            continue
        linear = head if isinstance(head, nn.Linear) else _last_linear(head)
        if linear is not None:
            return linear
    for attr in _WRAPPER_ATTRS:
        inner = getattr(model, attr, None)
        if isinstance(inner, nn.Module) and inner is not model:
            found = _find_head(inner)
            if found is not None:
                return found
    return _last_linear(model)


def _last_linear(module: nn.Module) -> nn.Linear | None:
    linears = [m for m in module.modules() if isinstance(m, nn.Linear)]
    return linears[-1] if linears else None


class Normalized(nn.Module):
    """Normalise [0, 1] pixels with per-channel mean/std, then call ``model``.

    Keeps the package-wide convention that models eat raw pixels, so
    fingerprints (which are images) never depend on a preprocessing step.
    """

    def __init__(self, model: nn.Module, mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        mean_t = torch.as_tensor(mean, dtype=torch.float32).flatten()
        std_t = torch.as_tensor(std, dtype=torch.float32).flatten()
        if mean_t.numel() == 0:
            raise ValueError("mean: must have at least one entry (one per channel)")
        if mean_t.numel() != std_t.numel():
            raise ValueError(
                f"mean, std: must have the same length, got {mean_t.numel()} and {std_t.numel()}"
            )
        if not bool((std_t > 0).all()):
            raise ValueError(f"std: must be strictly positive, got {std_t.tolist()}")
        self.model = model
        self.register_buffer("mean", mean_t.view(-1, 1, 1))
        self.register_buffer("std", std_t.view(-1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != self.mean.shape[0]:
            raise ValueError(
                f"x: must be [N, {self.mean.shape[0]}, H, W] to match mean/std, got {tuple(x.shape)}"
            )
        return self.model((x - self.mean) / self.std)
