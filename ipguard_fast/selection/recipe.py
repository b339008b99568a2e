"""protect()'s reference recipe: the kinds of reference models, each an attack of
ipguard_fast.attacks with its settings, built per replica or once.

Positives are copies a thief could deploy; negatives independent models. The
independents that decide a verdict are the ones trained as hard as the owner, so the
negatives span weak to strong training (one run gives several epochs' snapshots).
A researcher passes a recipe of their own through ProtectConfig(recipe=...); bump
RECIPE_VERSION whenever the default recipe or an attack it uses changes (the reference
cache is keyed by both).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .._validate import ArgumentError
from ..attacks import Distill, FineTune, Independent, Prune, Quantize, get_attack

__all__ = ["RECIPE", "RECIPE_VERSION", "ReferenceKind", "check_recipe", "recipe_meta"]

RECIPE_VERSION = 2


@dataclass(frozen=True)
class ReferenceKind:
    """One kind of reference: attack `attack` with `settings`, built for every replica or
    once. `seed_name` is the name its seed is drawn from, when not the kind's own."""

    kind: str
    role: str
    attack: str
    settings: Any
    per_replica: bool = True
    seed_name: str | None = None


RECIPE: tuple[ReferenceKind, ...] = (
    ReferenceKind("FTLL", "positive", "fine-tune", FineTune(1e-2, 3, last_only=True)),
    ReferenceKind("FTAL", "positive", "fine-tune", FineTune(1e-3, 3)),
    ReferenceKind("RTLL", "positive", "fine-tune", FineTune(1e-2, 5, last_only=True, reinit_last=True)),
    ReferenceKind("RTAL", "positive", "fine-tune", FineTune(1e-3, 5, reinit_last=True)),
    ReferenceKind("prune-70ft", "positive", "prune", Prune(0.7, finetune_epochs=2)),
    ReferenceKind("distill-small", "positive", "distill", Distill(1e-3, 10, "generic", precompute_teacher=True)),
    ReferenceKind("independent-owner-lr0.001", "negative", "independent", Independent("owner", 1e-3, (5, 10)),
                  seed_name="owner-lr0.001"),
    ReferenceKind("independent-owner-lr0.003", "negative", "independent", Independent("owner", 3e-3, (5,)),
                  seed_name="owner-lr0.003"),
    ReferenceKind("independent-generic-lr0.001", "negative", "independent", Independent("generic", 1e-3, (5, 10)),
                  seed_name="generic-lr0.001"),
    ReferenceKind("independent-generic-lr0.003", "negative", "independent", Independent("generic", 3e-3, (5,)),
                  seed_name="generic-lr0.003"),
    # Settings the evaluation never uses (it prunes 20-80 % and rounds to int8).
    ReferenceKind("prune-50", "positive", "prune", Prune(0.5), per_replica=False),
    ReferenceKind("prune-90", "positive", "prune", Prune(0.9), per_replica=False),
    ReferenceKind("int4", "positive", "quantize", Quantize(4), per_replica=False),
)


def recipe_meta(recipe: tuple[ReferenceKind, ...] = RECIPE) -> list[dict]:
    """The recipe as JSON-able data (what the reference cache is keyed by)."""
    return [{"kind": k.kind, "role": k.role, "attack": k.attack, "settings": repr(k.settings),
             "per_replica": k.per_replica, "seed_name": k.seed_name} for k in recipe]


def check_recipe(recipe) -> tuple[ReferenceKind, ...]:
    """A recipe as a tuple of ReferenceKind with registered attacks, distinct kinds and both roles."""
    kinds = tuple(recipe) if isinstance(recipe, (tuple, list)) else None
    if not kinds or not all(isinstance(k, ReferenceKind) for k in kinds):
        raise ArgumentError("recipe", "expected a non-empty sequence of ReferenceKind")
    for k in kinds:
        get_attack(k.attack)
        if k.role not in ("positive", "negative"):
            raise ArgumentError("recipe", f"{k.kind}: role must be 'positive' or 'negative', got {k.role!r}")
    if len({k.kind for k in kinds}) != len(kinds):
        raise ArgumentError("recipe", "has repeated kinds")
    if {k.role for k in kinds} != {"positive", "negative"}:
        raise ArgumentError("recipe", "needs kinds of both roles")
    return kinds
