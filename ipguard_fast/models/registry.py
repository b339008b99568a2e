"""Models by name, for the command line and the benchmarks: one registry for the package.

    build_model("resnet20", num_classes=10, input_shape=(3, 32, 32), seed=0)
    build_model("tv:resnet50", 10, (3, 224, 224))

Names: the entries of BUILDERS, plus ``tv:<torchvision name>`` and ``timm:<timm name>``.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from torch import nn

from .._validate import ArgumentError, positive_int
from ..nn import seeded
from .cifar import resnet20, wide_resnet28_10
from .digits import DigitsCNN, DigitsMLP
from .hub import timm_model, torchvision_model
from .lenet import LeNet5

__all__ = ["BUILDERS", "MODEL_NAMES", "build_model", "check_model_name"]

# name -> builder(num_classes, (C, H, W), **kwargs)
BUILDERS: dict[str, Callable[..., nn.Module]] = {
    "digits_cnn": lambda classes, shape, **kw: DigitsCNN(classes, in_channels=shape[0], **kw),
    "digits_mlp": lambda classes, shape, **kw: DigitsMLP(classes, in_features=math.prod(shape), **kw),
    "lenet5": lambda classes, shape, **kw: LeNet5(classes, in_channels=shape[0], **kw),
    "resnet20": lambda classes, shape, **kw: resnet20(classes, in_channels=shape[0], **kw),
    "wrn28_10": lambda classes, shape, **kw: wide_resnet28_10(classes, in_channels=shape[0], **kw),
}
_PREFIXES = ("tv:", "timm:")
MODEL_NAMES = tuple(BUILDERS) + ("tv:<torchvision name>", "timm:<timm name>")


def _hub(name: str, classes: int, shape: tuple[int, ...], **kwargs) -> nn.Module:
    if name.startswith("tv:"):
        if shape[0] != 3:
            raise ValueError(f"input_shape: torchvision models expect 3 input channels, input_shape has {shape[0]}")
        return torchvision_model(name[3:], classes, **kwargs)
    return timm_model(name[5:], classes, in_chans=shape[0], **kwargs)


def check_model_name(name) -> str:
    """`name` when the registry has a builder for it (checked before any model is built or trained)."""
    if not isinstance(name, str):
        raise ArgumentError("name", f"must be a string, got {name!r}")
    if name not in BUILDERS and not name.startswith(_PREFIXES):
        raise ArgumentError("name", f"{name!r} is not a registered model; known: {', '.join(MODEL_NAMES)}")
    return name


def build_model(name: str, num_classes: int, input_shape: Sequence[int], *, seed: int | None = None,
                **kwargs) -> nn.Module:
    """Build a model by registry name for inputs of shape ``input_shape`` ([C, H, W]).

    ``kwargs`` go to the builder (e.g. ``width=`` for digits_cnn, ``weights_path=``
    for tv/timm). With ``seed`` the initial weights are reproducible (see ``seeded``).
    """
    check_model_name(name)
    shape = tuple(int(s) for s in input_shape)
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"input_shape: must be (C, H, W) with positive entries, got {tuple(input_shape)!r}")
    positive_int("num_classes", num_classes)
    if name in BUILDERS:
        def make() -> nn.Module:
            return BUILDERS[name](num_classes, shape, **kwargs)
    else:
        def make() -> nn.Module:
            return _hub(name, num_classes, shape, **kwargs)
    return make() if seed is None else seeded(make, seed)
