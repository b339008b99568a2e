"""A bed's independent models, as groups: one architecture, one recipe, several seeds."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Mapping

from torch import nn

from ..attacks import Independent, independent_seeds
from .suspects import Variant

__all__ = ["NegativeGroup"]


@dataclass(frozen=True)
class NegativeGroup:
    """Independent models of one architecture and recipe: `factory` trained by `settings`
    (Independent's keywords but arch) from `seeds` seeds. seeds None: the owner's
    seed's independent_seeds (1, 2, 3 after it); an int: that many seeds drawn from the
    group's name."""

    label: str
    factory: Callable[[], nn.Module]
    settings: Mapping = field(default_factory=dict)
    seeds: int | None = None

    def variants(self, owner_seed: int) -> list[Variant]:
        settings = Independent(self.factory, **self.settings)
        if self.seeds is None:
            return [Variant(f"independent-{self.label}-seed{s}", f"independent-{self.label}", "independent", settings,
                            role="negative", seed=s) for s in independent_seeds(owner_seed)]
        return [Variant(f"independent-{self.label}-{i}", f"independent-{self.label}", "independent", settings,
                        role="negative") for i in range(self.seeds)]
