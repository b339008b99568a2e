"""Test beds: which suspects judge a fingerprint. A bed is the positive grid (short or wide),
the field's hard families (on the attacker's data), and the independent models
(architectures and how each is trained).

* demo: the short attack grid; independents trained briefly (5 epochs, Adam 1e-3).
* hard: the wide grid (RTAL for 10 epochs, 80 % pruning with fine-tuning, 30-epoch
  distillation) and independents trained like the owner, over several architectures: the
  ones that decide a verdict. For the embedded digits the owner's recipe and five
  architectures are known (models.digits); for other data the caller gives the owner's
  epochs and learning rate.
* foreign: the wide grid, and independents trained by recipes protect() never uses (SGD
  with momentum and weight decay at other rates and batch sizes, augmentation, long and
  short runs, other widths): a bed the selection's own references do not resemble, so a
  method is not judged on a bed built by the code that built its references.

The attacker's data: half of the training data, seeded (attacker_half), unless the caller
gives data of its own. An owner trained on all of it shares that half with the attacker;
train the owner on the other half (owner_half) for a clean split.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Sequence

from torch import nn
from torch.utils.data import Dataset

from .._validate import ArgumentError, finite_number, positive_int
from ..data import seeded_split
from ..models import (DIGITS_ARCHITECTURES, DIGITS_EPOCHS, DIGITS_HARD_ARCHITECTURES, DIGITS_LR, build_model,
                      check_model_name)
from .foreign import FOREIGN_DIGITS_NEGATIVES, foreign_negatives
from .negatives import NegativeGroup
from .grids import FAMILIES, FIELD_FAMILIES, field_variants, positive_variants
from .suspect_cache import open_suspect_cache
from .suspects import Suspect, Variant, build_variants

__all__ = ["BEDS", "Bed", "NegativeGroup", "attacker_half", "check_bed", "check_families", "make_bed", "owner_half"]

BEDS = ("demo", "hard", "foreign")
_DEMO_EPOCHS, _DEMO_LR = 5, 1e-3


@dataclass(frozen=True)
class Bed:
    """wide_grid: the wide positive grid; negatives: the independents' groups; field: the
    field's hard families too; small_factory: the student of "distill-small" and of
    label-only extraction (None: distill-small not built, extraction into the generic MLP)."""

    name: str
    wide_grid: bool
    negatives: tuple[NegativeGroup, ...]
    small_factory: Callable[[], nn.Module] | None = None
    field: bool = True

    def variants(self, seed: int = 0, families: Sequence[str] | None = None) -> list[Variant]:
        """Every suspect to build, positives first; `families`: only the positives of these
        (FAMILIES, FIELD_FAMILIES; None: all of them), every independent still."""
        wanted = set(check_families(families)) if families is not None else None
        positives = positive_variants(not self.wide_grid, small_factory=self.small_factory)
        positives += field_variants(self.small_factory) if self.field else []
        positives = [v for v in positives if wanted is None or v.family in wanted]
        if not positives:
            raise ArgumentError("families", f"none of {sorted(wanted)} is built on the {self.name} bed")
        return positives + [v for group in self.negatives for v in group.variants(seed)]

    def suspects(self, owner: nn.Module, train_set: Dataset, *, seed: int = 0, attacker_data: Dataset | None = None,
                 log=print, suspect_cache=None, share: tuple[int, int] | None = None,
                 families: Sequence[str] | None = None) -> list[Suspect]:
        """The bed's positives (copies of `owner`) and negatives, all seeded from `seed`;
        families: only the positives of these families (variants);
        attacker_data: the attacker's own data (default attacker_half(train_set, seed));
        suspect_cache: where each is kept once built, so that a rerun after an interruption
        trains only the missing ones (a folder or a CacheLocation; None: in memory only);
        share: (rank, world) under torchrun, each rank building its share (build_variants)."""
        start = time.perf_counter()
        attacker = attacker_data if attacker_data is not None else attacker_half(train_set, seed)
        cache = open_suspect_cache(owner, suspect_cache)
        out = build_variants(owner, train_set, self.variants(seed, families), seed=seed, attacker_data=attacker,
                             suspect_cache=cache, share=share)
        roles = [s.role for s in out]
        cached = "" if cache is None else f" ({cache.hits} of them from the cache)"
        here = "" if share is None else f" (this rank built {sum(s.model is not None for s in out)})"
        log(f"built {roles.count('positive')} positive and {roles.count('negative')} negative suspects{here} in "
            f"{time.perf_counter() - start:.1f} s{cached}")
        return out


def attacker_half(data: Dataset, seed: int) -> Dataset:
    """The attacker's half of `data` (seeded); owner_half is the other."""
    return _halves(data, seed)[1]


def owner_half(data: Dataset, seed: int) -> Dataset:
    """The owner's half of `data`: the items attacker_half(data, seed) leaves out."""
    return _halves(data, seed)[0]


def _halves(data: Dataset, seed: int) -> tuple[Dataset, Dataset]:
    if len(data) < 2:
        raise ArgumentError("train_set", "needs at least 2 items to split between owner and attacker")
    return seeded_split(data, int(seed) + 7919, len(data) // 2)


def check_families(families: Sequence[str]) -> tuple[str, ...]:
    """`families` as a tuple of known positive families (FAMILIES and FIELD_FAMILIES), at least one."""
    known = FAMILIES + FIELD_FAMILIES
    if isinstance(families, str) or not all(isinstance(f, str) for f in families):
        raise ArgumentError("families", f"expected a sequence of family names, got {families!r}")
    families = tuple(dict.fromkeys(families))
    unknown = [f for f in families if f not in known]
    if unknown or not families:
        raise ArgumentError("families", f"{'has unknown entries ' + str(unknown) if unknown else 'is empty'}; "
                                        f"choose from {', '.join(known)}")
    return families


def check_bed(name: str) -> str:
    """`name` if it is a bed's."""
    if name not in BEDS:
        raise ArgumentError("bed", f"expected one of {BEDS}, got {name!r}")
    return name


def make_bed(name: str, *, digits: bool, input_shape: Sequence[int], num_classes: int,
             architectures: Sequence[str] | None = None, negative_epochs: int | None = None,
             negative_lr: float | None = None, full: bool = False,
             small_factory: Callable[[], nn.Module] | None = None) -> Bed:
    """The bed `name` for an owner of `input_shape` and `num_classes` (digits: the embedded
    digits data, whose owner recipe and architectures are known). architectures: model
    registry names of the independents (default: the digits CNN and MLP; the hard digits
    bed: its five). full: the wide grid on the demo bed too."""
    check_bed(name)
    names = [check_model_name(n) for n in architectures] if architectures is not None else None
    if names is None and digits:
        factories = dict(DIGITS_ARCHITECTURES if name == "demo" else DIGITS_HARD_ARCHITECTURES)
    else:
        names = names if names is not None else ["digits_cnn", "digits_mlp"]
        factories = {n: (lambda n=n: build_model(n, num_classes, tuple(input_shape))) for n in names}
    if name == "foreign":
        if negative_epochs is not None or negative_lr is not None:
            raise ArgumentError("negative_lr" if negative_lr is not None else "negative_epochs",
                                "the foreign bed trains its independents by its own recipes (evaluation/foreign.py); "
                                "leave it out")
        groups = FOREIGN_DIGITS_NEGATIVES if names is None and digits else foreign_negatives(factories)
        return Bed(name, True, groups, small_factory)
    hard = name == "hard"
    if hard and not digits and (negative_epochs is None or negative_lr is None):
        raise ArgumentError("negative_lr" if negative_lr is None else "negative_epochs",
                            "the hard bed trains the independents like the owner: give the owner's epochs and "
                            "learning rate")
    default_epochs, default_lr = (DIGITS_EPOCHS, DIGITS_LR) if hard else (_DEMO_EPOCHS, _DEMO_LR)
    epochs = positive_int("negative_epochs", default_epochs if negative_epochs is None else negative_epochs)
    lr = finite_number("negative_lr", default_lr if negative_lr is None else negative_lr, positive=True)
    groups = tuple(NegativeGroup(arch, factory, {"lr": lr, "epochs": epochs}) for arch, factory in factories.items())
    return Bed(name, hard or full, groups, small_factory)
