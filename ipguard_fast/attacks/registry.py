"""The attack contract: what a post-processing attack is given, what it returns, how it is named.

An attack turns the owner (never modified) into models a thief could deploy (a copy,
fine-tuned, pruned, distilled...) or that an innocent party could have trained (an
independent model). The evaluation's suspect families and protect()'s reference kinds
are both lists of (attack name, settings) over one table, `ipguard_fast.attacks.ATTACKS`,
so every attack is at once a suspect family and a reference kind.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import nn
from torch.utils.data import Dataset

from .._validate import ArgumentError
from ..modules import canonical_layout

__all__ = ["Attack", "AttackContext", "applicable", "owner_needs"]

# What an attack may need from the owner's architecture.
NEEDS = ("head", "weights")   # a Linear head (re-drawn or trained alone); conv/linear weights (pruned, rounded)


@dataclass(frozen=True)
class AttackContext:
    """What every attack is given: the owner (read only: attacks work on copies), the
    data the attacker trains on, the seed of this one model, and how to train.
    holdout: data no attack trains on, where a training can measure held-out accuracy
    (Independent(match_owner=True) trains until it reaches the owner's there)."""

    owner: nn.Module
    data: Dataset
    seed: int
    input_shape: tuple[int, ...] | None = None
    num_classes: int | None = None
    batch_size: int = 64
    device: str | torch.device = "cpu"
    on_epoch: Callable[[int, nn.Module], None] | None = field(default=None, compare=False)
    holdout: Dataset | None = field(default=None, compare=False)

    def owner_copy(self) -> nn.Module:
        """A private copy of the owner to attack."""
        return copy.deepcopy(self.owner)

    def shapes(self) -> tuple[tuple[int, ...], int]:
        """(input shape, number of classes): given, or read from the data and the owner."""
        shape = self.input_shape or tuple(torch.as_tensor(self.data[0][0]).shape)
        classes = self.num_classes
        if classes is None:
            probe = copy.deepcopy(self.owner).eval()
            with torch.no_grad():
                classes = int(probe(torch.as_tensor(self.data[0][0]).float()[None]).shape[1])
        return tuple(shape), classes


@dataclass(frozen=True)
class Attack:
    """One registered attack.

    build(context, settings) returns the attacked models (one for most attacks; one per
    snapshot for attacks whose settings list several, see `Independent.epochs`).
    skeleton(context, settings) returns an untrained model of the result's architecture,
    into which a cached copy's weights load. needs: what the owner must have (NEEDS).
    outputs(settings): a label per model build returns ("" for the one model of most attacks).
    """

    name: str
    settings: type
    build: Callable[[AttackContext, Any], list[nn.Module]]
    skeleton: Callable[[AttackContext, Any], nn.Module] = field(default=lambda ctx, settings: ctx.owner_copy())
    needs: tuple[str, ...] = ()
    outputs: Callable[[Any], tuple[str, ...]] = field(default=lambda settings: ("",))

    def run(self, context: AttackContext, settings: Any) -> list[nn.Module]:
        if not isinstance(settings, self.settings):
            raise ArgumentError("settings", f"attack {self.name!r} takes {self.settings.__name__}, got "
                                            f"{type(settings).__name__}")
        return [canonical_layout(model).eval() for model in self.build(context, settings)]


def owner_needs(owner: nn.Module) -> set[str]:
    """Which of NEEDS the owner offers."""
    from ..nn import last_layer
    from .prune import WEIGHT_LAYERS

    offered = set()
    try:
        last_layer(owner)
        offered.add("head")
    except ValueError:
        pass
    if any(isinstance(m, WEIGHT_LAYERS) for m in owner.modules()):
        offered.add("weights")
    return offered


def applicable(attack: Attack, owner: nn.Module) -> bool:
    """Whether `attack` can be applied to `owner` (it has what the attack needs)."""
    return set(attack.needs) <= owner_needs(owner)
