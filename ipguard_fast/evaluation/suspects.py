"""Positive and negative suspect models for evaluating a fingerprint.

Positives are post-processed copies of the owner -- what a model thief would deploy --
and should still agree with the owner on the fingerprints; negatives are independently
trained models and should not. Both are lists of `Variant`s (a name, a family, an attack
of ipguard_fast.attacks and its settings): the beds (beds.py) say which.

Every positive is built from a copy, so the owner is never modified, and every variant
is seeded from its name (attacks.evaluation_seed), so the whole list is reproducible and
never meets a seed of protect()'s reference models.
"""
from __future__ import annotations

import operator
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import time

import torch
from torch import nn
from torch.utils.data import Dataset

from .._validate import ArgumentError
from ..attacks import (EVALUATION_SEED_LIMIT, AttackContext, Independent, evaluation_seed, get_attack,
                       independent_seeds)
from .grids import FAMILIES, positive_variants
from .suspect_cache import open_suspect_cache

__all__ = ["EVALUATION_SEED_LIMIT", "FAMILIES", "Suspect", "Variant", "build_suspects", "build_variants", "independent_seeds",
           "negative_suspects", "paper_suspects", "positive_suspects"]

_ROLES = ("positive", "negative")


@dataclass
class Suspect:
    """A model to test against the owner's fingerprints.

    ``name`` is unique within a list (e.g. ``"FTAL-lr0.001-e3"``), ``family`` groups
    variants of one attack (one of :data:`FAMILIES` for positives, ``"independent-<arch>"``
    for negatives), ``role`` is the ground truth. ``rank``: under torchrun, the rank that
    built the model and alone scores it (build_variants(share=...)); on the other ranks
    ``model`` is None. None: every rank holds the model.
    """

    name: str
    family: str
    role: str
    model: nn.Module | None = field(repr=False)
    rank: int | None = None

    def __post_init__(self) -> None:
        if self.role not in _ROLES:
            raise ArgumentError("role", f"must be one of {_ROLES}, got {self.role!r}")
        if self.rank is not None and (isinstance(self.rank, bool) or not isinstance(self.rank, int) or self.rank < 0):
            raise ArgumentError("rank", f"must be a rank (an int >= 0) or None, got {self.rank!r}")
        if not isinstance(self.model, nn.Module) and not (self.model is None and self.rank is not None):
            raise ArgumentError("model", f"must be an nn.Module, got {type(self.model).__name__}")


@dataclass(frozen=True)
class Variant:
    """One suspect to build: attack `attack` of the registry with `settings`, seeded by
    `name` (or by `seed` when given: independents take the seeds after the owner's)."""

    name: str
    family: str
    attack: str
    settings: Any
    role: str = "positive"
    seed: int | None = None
    data: str = "owner"     # what it trains on: "owner" (the owner's data) or "attacker" (the attacker's own)


def build_variants(owner: nn.Module, data: Dataset, variants: Sequence[Variant], *, seed: int = 0,
                   batch_size: int = 64, device: str | torch.device = "cpu",
                   attacker_data: Dataset | None = None, suspect_cache=None,
                   share: tuple[int, int] | None = None) -> list[Suspect]:
    """Every variant's model, in order, in eval mode; the owner is never modified. Variants
    of the attacker's data train on `attacker_data`. suspect_cache: where each model is kept
    as soon as it is built, and found by a rerun (a folder, a selection.CacheLocation or a
    suspect_cache.SuspectCache; None: in memory only), see suspect_cache.py.
    share: (rank, world) of a torchrun run: rank r builds the variants i with i % world == r
    (the others are Suspects without a model, marked with the rank that holds them), so the
    ranks train the suspects once between them instead of each training all; evaluate then
    scores each on the rank that holds it. Every suspect is the same model whichever rank
    builds it (its seed comes from its name)."""
    rank, world = _checked_share(share)
    cache = open_suspect_cache(owner, suspect_cache)
    out = []
    for index, v in enumerate(variants):
        holder = index % world
        if holder != rank:
            out.append(Suspect(v.name, v.family, v.role, None, rank=holder))
            continue
        s = v.seed if v.seed is not None else evaluation_seed(seed, v.name)
        if v.data == "attacker" and attacker_data is None:
            raise ArgumentError("attacker_data", f"{v.name} trains on the attacker's data: give it")
        context = AttackContext(owner, attacker_data if v.data == "attacker" else data, s, batch_size=batch_size,
                                device=device)
        if cache is not None:
            model = cache.build(v, context)
        else:
            (model,) = get_attack(v.attack).run(context, v.settings)
        out.append(Suspect(v.name, v.family, v.role, model, rank=None if share is None else rank))
    return out


def _checked_share(share) -> tuple[int, int]:
    """(rank, world) from build_variants' `share` ((0, 1) for None)."""
    if share is None:
        return 0, 1
    try:
        rank, world = (operator.index(x) for x in share)
    except (TypeError, ValueError):
        raise ArgumentError("share", f"expected (rank, world) as two ints, got {share!r}") from None
    if not 0 <= rank < world:
        raise ArgumentError("share", f"expected 0 <= rank < world, got rank {rank} of {world}")
    return rank, world


def positive_suspects(owner: nn.Module, train_set: Dataset, *, seed: int = 0, quick: bool = True,
                      student_factory: Callable[[], nn.Module] | None = None,
                      small_factory: Callable[[], nn.Module] | None = None, families: Iterable[str] | None = None,
                      batch_size: int = 64, device: str | torch.device = "cpu",
                      suspect_cache=None) -> list[Suspect]:
    """Post-processed copies of ``owner`` (never modified), all in eval mode.

    ``train_set`` is the data the attacker fine-tunes/distils on (labels are ignored for
    distillation, which uses the owner's soft labels). ``student_factory`` builds the
    same-architecture distillation student (default: the owner's architecture re-drawn);
    ``small_factory`` a smaller one for "distill-small" (default None: skipped).
    ``families`` restricts which attacks are built (default: all of :data:`FAMILIES`).
    ``quick`` picks a short grid of settings; ``quick=False`` a wider one.
    ``suspect_cache``: where they are kept (build_variants).
    """
    _check_owner_and_data(owner, train_set)
    variants = _positive_variants(quick, student_factory, small_factory, families)
    return build_variants(owner, train_set, variants, seed=seed, batch_size=batch_size, device=device,
                          suspect_cache=suspect_cache)


def _check_owner_and_data(owner, train_set) -> None:
    if not isinstance(owner, nn.Module):
        raise ArgumentError("owner", f"must be an nn.Module, got {type(owner).__name__}")
    if len(train_set) == 0:
        raise ArgumentError("train_set", "must not be empty")


def _positive_variants(quick: bool, student_factory, small_factory, families) -> list[Variant]:
    """The paper's copies (positive_suspects' settings), checked."""
    wanted = set(FAMILIES if families is None else families)
    unknown = wanted - set(FAMILIES)
    if unknown:
        raise ArgumentError("families", f"has unknown entries {sorted(unknown)}; choose from {FAMILIES}")
    return [v for v in positive_variants(quick, student_factory, small_factory) if v.family in wanted]


def negative_suspects(train_set: Dataset, factories: Mapping[str, Callable[[], nn.Module]], *,
                      seeds: Sequence[int] = independent_seeds(0), epochs: int, lr: float = 1e-3,
                      batch_size: int = 64, optimizer: str = "adam", weight_decay: float = 0.0,
                      device: str | torch.device = "cpu", suspect_cache=None) -> list[Suspect]:
    """Independently trained models: every architecture in ``factories`` x every seed.

    Each gets its own seeded initialisation and batch order. The owner must have been
    trained with a seed not in ``seeds`` (the default, (1, 2, 3), suits an owner of seed
    0), otherwise a "negative" of the owner's architecture starts from the owner's own
    weights. Family names are ``"independent-<key>"``; names add ``"-seed<s>"``.
    ``suspect_cache``: where they are kept (build_variants).
    """
    if len(train_set) == 0:
        raise ArgumentError("train_set", "must not be empty")
    variants = _negative_variants(factories, seeds, epochs=epochs, lr=lr, optimizer=optimizer,
                                  weight_decay=weight_decay)
    return build_variants(nn.Identity(), train_set, variants, batch_size=batch_size, device=device,
                          suspect_cache=suspect_cache)


def _negative_variants(factories: Mapping[str, Callable[[], nn.Module]], seeds: Sequence[int],
                       **training) -> list[Variant]:
    """Every architecture of `factories` x every seed, trained by `training` (Independent's
    keywords), checked."""
    if not factories:
        raise ArgumentError("factories", "must map at least one architecture name to a model factory")
    seeds = list(seeds)
    if not seeds:
        raise ArgumentError("seeds", "must contain at least one seed")
    if len(set(seeds)) != len(seeds):
        raise ArgumentError("seeds", f"must be distinct, got {seeds}")
    if any(not 0 <= int(s) < EVALUATION_SEED_LIMIT for s in seeds):
        raise ArgumentError("seeds", f"must lie in [0, 2**62) (larger seeds belong to the selection's references), "
                                     f"got {seeds}")
    variants = []
    for arch, factory in factories.items():
        if not callable(factory):
            raise ArgumentError(f"factories[{arch!r}]", f"must be callable, got {type(factory).__name__}")
        settings = Independent(factory, **training)
        variants += [Variant(f"independent-{arch}-seed{s}", f"independent-{arch}", "independent", settings,
                             role="negative", seed=int(s)) for s in seeds]
    return variants


def build_suspects(owner: nn.Module, train_set: Dataset, *,
                   negative_factories: Mapping[str, Callable[[], nn.Module]], negative_epochs: int,
                   negative_seeds: Sequence[int] | None = None, negative_lr: float = 1e-3, small_factory=None,
                   seed: int = 0, quick: bool = True, log=print) -> list[Suspect]:
    """The paper's positives (post-processed copies) and negatives (independent models);
    beds.make_bed says which for the demo and hard beds.

    negative_seeds: default independent_seeds(seed), three seeds after `seed`, so an owner
    trained with `seed` never has an "independent" twin starting from its own weights.
    """
    negatives = {"factories": negative_factories, "epochs": negative_epochs, "seeds": negative_seeds,
                 "lr": negative_lr}
    return paper_suspects(owner, train_set, negatives, small_factory=small_factory, seed=seed, quick=quick, log=log)


def paper_suspects(owner: nn.Module, train_set: Dataset, negatives: Mapping, *, small_factory=None, seed: int = 0,
                   quick: bool = True, log=print, suspect_cache=None,
                   share: tuple[int, int] | None = None) -> list[Suspect]:
    """build_suspects with the negatives' settings in one mapping (`factories`, `epochs`, and
    optionally `seeds` and `lr`), each suspect kept in `suspect_cache`, this torchrun rank's
    `share` built (build_variants)."""
    _check_owner_and_data(owner, train_set)
    seeds = independent_seeds(seed) if negatives.get("seeds") is None else negatives["seeds"]
    independents = _negative_variants(negatives["factories"], seeds, epochs=negatives["epochs"],
                                      lr=negatives.get("lr", 1e-3))
    start = time.perf_counter()
    positives = build_variants(owner, train_set, _positive_variants(quick, None, small_factory, None), seed=seed,
                               suspect_cache=suspect_cache, share=share)
    log(f"built {built_here(positives)} positive suspects in {time.perf_counter() - start:.1f} s")
    start = time.perf_counter()
    built = build_variants(nn.Identity(), train_set, independents, suspect_cache=suspect_cache, share=share)
    log(f"trained {built_here(built)} negative suspects in {time.perf_counter() - start:.1f} s")
    return positives + built


def built_here(suspects: Sequence[Suspect]) -> str:
    """How many of `suspects` this process built: "12", or "6 of 12 (this rank's share)"."""
    here = sum(s.model is not None for s in suspects)
    return str(here) if here == len(suspects) else f"{here} of {len(suspects)} (this rank's share)"
