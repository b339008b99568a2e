"""The foreign bed's recipes: how its owner and its independent models are trained, on
purpose unlike protect()'s references (selection/recipe.py: Adam 1e-3 and SGD 0.05 at
batch 64, trained until they match the owner). An independent party picks its own
optimizer, rate, batch size, augmentation and length; a verdict must hold against all
of them, so the bed spans long and short runs, other widths and other architectures.
"""
from __future__ import annotations

from typing import Callable, Mapping

from torch import nn

from ..models import DigitsCNN, DigitsMLP
from ..train import TrainRecipe
from .negatives import NegativeGroup

__all__ = ["FOREIGN_DIGITS_NEGATIVES", "FOREIGN_OWNER_RECIPE", "FOREIGN_RECIPES", "foreign_negatives"]

# An owner trained long with SGD, momentum, weight decay and augmentation.
FOREIGN_OWNER_RECIPE = TrainRecipe(epochs=40, lr=0.03, batch_size=128, optimizer="sgd", weight_decay=1e-3,
                                   augment=True)

_LIKE_OWNER = dict(epochs=40, lr=0.03, batch_size=128, optimizer="sgd", weight_decay=1e-3, augment=True)
_ADAM_LONG = dict(epochs=30, lr=1e-3, batch_size=64)
_ADAM_SMALL_BATCH = dict(epochs=20, lr=5e-4, batch_size=32, augment=True)
_SGD_SHORT = dict(epochs=8, lr=0.1, batch_size=256, optimizer="sgd", momentum=0.5)

# name -> Independent's keywords: the recipes of independents on any data.
FOREIGN_RECIPES: dict[str, dict] = {"sgd-aug-e40": _LIKE_OWNER, "adam-e30": _ADAM_LONG,
                                    "adam-b32-aug-e20": _ADAM_SMALL_BATCH, "sgd-short-e8": _SGD_SHORT}


# The digits bed's independents: the owner's architecture trained exactly like the owner
# at three seeds, and other recipes, widths and architectures.
FOREIGN_DIGITS_NEGATIVES: tuple[NegativeGroup, ...] = (
    NegativeGroup("cnn-sgd-aug-e40", DigitsCNN, _LIKE_OWNER, seeds=3),
    NegativeGroup("cnn-adam-e30", DigitsCNN, _ADAM_LONG, seeds=1),
    NegativeGroup("cnn-w16-adam-e30", lambda: DigitsCNN(width=16), _ADAM_LONG, seeds=1),
    NegativeGroup("cnn-w64-adam-b32-aug-e20", lambda: DigitsCNN(width=64), _ADAM_SMALL_BATCH, seeds=1),
    NegativeGroup("cnn-sgd-short-e8", DigitsCNN, _SGD_SHORT, seeds=1),
    NegativeGroup("mlp-adam-b32-aug-e20", DigitsMLP, _ADAM_SMALL_BATCH, seeds=1),
    NegativeGroup("mlp-h256-sgd-aug-e40", lambda: DigitsMLP(hidden=256), _LIKE_OWNER, seeds=1),
)


def foreign_negatives(factories: Mapping[str, Callable[[], nn.Module]]) -> tuple[NegativeGroup, ...]:
    """Every architecture of `factories` by every foreign recipe, one seed each."""
    return tuple(NegativeGroup(f"{arch}-{recipe}", factory, settings, seeds=1)
                 for arch, factory in factories.items() for recipe, settings in FOREIGN_RECIPES.items())
