"""protect()'s reference recipe: the kinds of reference models, each an attack of
ipguard_fast.attacks with its settings, built per replica or once.

Positives are copies a thief could deploy; negatives independent models. The
independents that decide a verdict are the ones trained as hard as the owner, so every
negative trains until its held-out accuracy reaches the owner's (a snapshot on the way
keeps a weaker one), or by the owner's own recipe when the caller gives it
(with_owner_recipe).
A researcher passes a recipe of their own through ProtectConfig(recipe=...); bump
RECIPE_VERSION whenever the default recipe or an attack it uses changes (the reference
cache is keyed by both).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from .._validate import ArgumentError
from ..attacks import (AdversarialFineTune, Distill, Extraction, FineTune, Independent, Preprocess, Prune, Quantize,
                       get_attack)
from ..train import TrainRecipe

__all__ = ["NEGATIVES", "OPTIMIZERS", "RECIPE", "RECIPE_VERSION", "ROLES", "STUDENT_PAIRS", "THRESHOLD_NEGATIVES",
           "ReferenceKind", "capped_recipe", "check_recipe", "negative_epoch_cap", "negative_kind", "recipe_meta",
           "with_owner_recipe"]

RECIPE_VERSION = 5

# positive: a copy; negative: an independent model. student / twin: the student part's
# pairs (STUDENT_PAIRS, students.py), which take no part in the main selection.
ROLES = ("positive", "negative", "student", "twin")


@dataclass(frozen=True)
class ReferenceKind:
    """One kind of reference: attack `attack` with `settings`, built for every replica or
    once. `seed_name` is the name its seed is drawn from, when not the kind's own.
    `threshold_only`: a negative built for each validation replica (split "threshold")
    that takes no part in selection or in the choice of configuration, only in the
    threshold."""

    kind: str
    role: str
    attack: str
    settings: Any
    per_replica: bool = True
    seed_name: str | None = None
    threshold_only: bool = False   # built for the validation replicas only, and only sets the threshold


# The negatives are trained until their held-out accuracy reaches the owner's (capped at
# _CAP epochs; a snapshot at 5 epochs keeps a weaker one too) and span the recipe space:
# both optimizers, with and without augmentation, the owner's architecture and another.
_CAP = 60
_ADAM = dict(lr=1e-3, optimizer="adam")
_SGD = dict(lr=0.05, optimizer="sgd", weight_decay=5e-4)
OPTIMIZERS = {"adam": _ADAM, "sgd": _SGD}   # the negatives' two optimizers, by name


def negative_kind(arch: str, optimizer: str, augment: bool) -> ReferenceKind:
    """The selecting negative of `arch` ("owner", "generic") by `optimizer` (OPTIMIZERS),
    with or without augmentation, trained until it matches the owner."""
    if optimizer not in OPTIMIZERS:
        raise ArgumentError("optimizer", f"expected one of {sorted(OPTIMIZERS)}, got {optimizer!r}")
    name = f"independent-{arch}-{optimizer}{'-aug' if augment else ''}"
    settings = Independent(arch, epochs=(5, _CAP), augment=augment, match_owner=True, **OPTIMIZERS[optimizer])
    return ReferenceKind(name, "negative", "independent", settings)


# The generic architecture is cheap: every combination of optimizer and augmentation. The
# owner's is dear (a full training each): the two opposite corners.
NEGATIVES: tuple[ReferenceKind, ...] = (
    negative_kind("owner", "adam", False), negative_kind("owner", "sgd", True),
    negative_kind("generic", "adam", False), negative_kind("generic", "adam", True),
    negative_kind("generic", "sgd", False), negative_kind("generic", "sgd", True),
)

# The threshold is set against independents that train to the end, not only to the
# owner's accuracy: the longer an independent trains, the more of the points it keeps
# (benchmarks/results/negatives-fit-2026-12-04). As negatives of the selection they made
# the points no more unique; as the threshold's negatives they keep it above them.
_CONVERGED: tuple[ReferenceKind, ...] = tuple(
    ReferenceKind(f"independent-{arch}-{opt['optimizer']}{'-aug' if augment else ''}-converged", "negative",
                  "independent", Independent(arch, epochs=_CAP, augment=augment, until_converged=True, **opt),
                  threshold_only=True)
    for arch, opt, augment in (("owner", _ADAM, False), ("owner", _SGD, True), ("generic", _ADAM, False),
                               ("generic", _SGD, True)))
# Those of the owner's architecture at a second seed too: such independents are the
# innocents that keep the most points, from one seed to the next anything from none to
# 0.84 of them, and the threshold sits above the highest measured, so a second draw
# lowers the chance that an innocent one lies above it (three beds x three seeds: false
# accusations 4 -> 2, missed copies 37 -> 39; a third seed changed nothing:
# benchmarks/results/threshold-twins-2026-12-04).
def _owner_twins(kinds: tuple[ReferenceKind, ...]) -> tuple[ReferenceKind, ...]:
    """The kinds of the owner's architecture once more, at the seed their "-twin1" name draws."""
    return tuple(dataclasses.replace(k, kind=f"{k.kind}-twin1") for k in kinds if k.settings.arch == "owner")


THRESHOLD_NEGATIVES: tuple[ReferenceKind, ...] = _CONVERGED + _owner_twins(_CONVERGED)

RECIPE: tuple[ReferenceKind, ...] = (
    ReferenceKind("FTLL", "positive", "fine-tune", FineTune(1e-2, 3, last_only=True)),
    ReferenceKind("FTAL", "positive", "fine-tune", FineTune(1e-3, 3)),
    ReferenceKind("RTLL", "positive", "fine-tune", FineTune(1e-2, 5, last_only=True, reinit_last=True)),
    # RTAL's draws vary: 2 of 20 kept 0.44 and 0.64 of the demo owner's points where the other
    # 18 kept 0.98-1.00. Two more draws per replica won at owner seed 0 and lost over six
    # seeds (benchmarks/results/three-beds-rtal-twins-2026-12-06): one draw.
    ReferenceKind("RTAL", "positive", "fine-tune", FineTune(1e-3, 5, reinit_last=True)),
    ReferenceKind("prune-70ft", "positive", "prune", Prune(0.7, finetune_epochs=2)),
    ReferenceKind("distill-small", "positive", "distill", Distill(1e-3, 10, "generic", precompute_teacher=True)),
    # Adversarial fine-tuning moves the boundary the points sit on. Extraction students are
    # no positive reference: trained on the owner's labels of data where those labels are
    # the true ones, they pull the selection to points that independent models keep too
    # (measured: benchmarks/results/three-beds-2026-12-04-students-as-references).
    ReferenceKind("adversarial-ft", "positive", "adversarial-fine-tune", AdversarialFineTune(1e-3, 2, eps=6 / 255)),
    *NEGATIVES,
    *THRESHOLD_NEGATIVES,
    # Settings the evaluation never uses (it prunes 20-80 %, rounds weights to int8, and
    # preprocesses with noise 0.05, 4-bit pixels, blur 0.7): stronger ones, so that points
    # that survive these survive the milder ones (the expectation over the transforms).
    ReferenceKind("prune-50", "positive", "prune", Prune(0.5), per_replica=False),
    ReferenceKind("prune-90", "positive", "prune", Prune(0.9), per_replica=False),
    ReferenceKind("int4", "positive", "quantize", Quantize(4), per_replica=False),
    ReferenceKind("noise-0.1", "positive", "preprocess", Preprocess("noise", 0.1), per_replica=False),
    ReferenceKind("pixels-3bit", "positive", "preprocess", Preprocess("quantize", 3), per_replica=False),
    ReferenceKind("blur-1", "positive", "preprocess", Preprocess("blur", 1.0), per_replica=False),
)


# The student part's pairs (students.py), added when ProtectConfig.students asks for one: per
# architecture (the owner's and the generic MLP) a student of the owner's probabilities on
# its data and a twin of the same architecture, seed (seed_name), images and recipe on
# the true labels -- what the owner's function teaches beyond what the data does (CAE,
# Lukas et al., ICLR 2021, pairs surrogates with references so;
# benchmarks/results/students-paired-2026-12-07: Adam 1e-3, 20 epochs, as the beds' students).
_STUDENT_TRAINING = dict(lr=1e-3, epochs=20)
STUDENT_PAIRS: tuple[ReferenceKind, ...] = tuple(
    kind for arch in ("owner", "generic") for kind in (
        ReferenceKind(f"student-{arch}", "student", "extraction",
                      Extraction(student=arch, answers="probabilities", **_STUDENT_TRAINING)),
        ReferenceKind(f"twin-{arch}", "twin", "independent", Independent(arch, **_STUDENT_TRAINING),
                      seed_name=f"student-{arch}")))


def with_owner_recipe(recipe: tuple[ReferenceKind, ...], train: TrainRecipe) -> tuple[ReferenceKind, ...]:
    """`recipe` whose negatives are the owner's own recipe (`train`, for fixed epochs) on the
    owner's architecture and another, plus the default negatives of the other optimizer, so
    that the recipe space stays spanned. The threshold too is set against independents
    trained by the owner's recipe (besides the converged defaults): an independent trained
    exactly like the owner is the closest an innocent model comes to it (the owner's
    architecture at two seeds, as in THRESHOLD_NEGATIVES)."""
    if not isinstance(train, TrainRecipe):
        raise ArgumentError("train_recipe", f"expected a TrainRecipe, got {type(train).__name__}")
    settings = dict(lr=train.lr, epochs=train.epochs, optimizer=train.optimizer, weight_decay=train.weight_decay,
                    momentum=train.momentum, batch_size=train.batch_size, augment=train.augment)
    own = tuple(ReferenceKind(f"independent-{arch}-owner-recipe", "negative", "independent",
                              Independent(arch, **settings)) for arch in ("owner", "generic"))
    own_threshold = tuple(ReferenceKind(f"independent-{arch}-owner-recipe-threshold", "negative", "independent",
                                        Independent(arch, **settings), threshold_only=True)
                          for arch in ("owner", "generic"))
    own_threshold += _owner_twins(own_threshold)   # two seeds, as THRESHOLD_NEGATIVES
    held = sorted({k.kind for k in recipe} & {k.kind for k in own + own_threshold})
    if held:   # `recipe` is one this made: pass the base recipe with train_recipe, or this one alone
        raise ArgumentError("train_recipe", f"the recipe already holds owner-recipe negatives {held}")
    others = tuple(k for k in recipe if k.role == "negative" and k.attack == "independent" and not k.threshold_only
                   and k.settings.optimizer != train.optimizer)
    return (tuple(k for k in recipe if k.role == "positive") + own + others
            + tuple(k for k in recipe if k.threshold_only) + own_threshold
            + tuple(k for k in recipe if k.role in ("student", "twin")))


def recipe_meta(recipe: tuple[ReferenceKind, ...] = RECIPE) -> list[dict]:
    """The recipe as JSON-able data (what the reference cache is keyed by)."""
    return [{"kind": k.kind, "role": k.role, "attack": k.attack, "settings": repr(k.settings),
             "per_replica": k.per_replica, "seed_name": k.seed_name, "threshold_only": k.threshold_only}
            for k in recipe]


def check_recipe(recipe) -> tuple[ReferenceKind, ...]:
    """A recipe as a tuple of ReferenceKind with registered attacks, distinct kinds and both roles."""
    kinds = tuple(recipe) if isinstance(recipe, (tuple, list)) else None
    if not kinds or not all(isinstance(k, ReferenceKind) for k in kinds):
        raise ArgumentError("recipe", "expected a non-empty sequence of ReferenceKind")
    for k in kinds:
        get_attack(k.attack)
        if k.role not in ROLES:
            raise ArgumentError("recipe", f"{k.kind}: role must be one of {ROLES}, got {k.role!r}")
        if k.threshold_only and (k.role != "negative" or not k.per_replica):
            raise ArgumentError("recipe", f"{k.kind}: a threshold_only kind is a negative built per replica")
    if len({k.kind for k in kinds}) != len(kinds):
        raise ArgumentError("recipe", "has repeated kinds")
    if not {"positive", "negative"} <= {k.role for k in kinds if not k.threshold_only}:
        raise ArgumentError("recipe", "needs kinds of both roles")
    roles = {k.role for k in kinds}
    if ("student" in roles) != ("twin" in roles):   # a student part needs both halves of its pairs
        raise ArgumentError("recipe", "student kinds need twin kinds and the other way round")
    return kinds


def capped_recipe(recipe: tuple[ReferenceKind, ...], cap: int, *, matched_only: bool = False
                  ) -> tuple[ReferenceKind, ...]:
    """`recipe` with every independent trained at most `cap` epochs (plan.py's last cuts);
    `matched_only`: only those that train until they match the owner (plan.py's bound on
    its worst case)."""
    return tuple(_capped(kind, cap) if not matched_only or _matches_owner(kind) else kind for kind in recipe)


def _capped(kind: ReferenceKind, cap: int) -> ReferenceKind:
    """`kind` with an independent's epochs (its cap, its snapshots) at most `cap`: the
    negatives that train to a rule are the dearest references of a large owner."""
    settings = kind.settings
    if isinstance(settings, Extraction):   # a student capped as its twin is, so that the pair stays a pair
        return kind if settings.epochs <= cap else dataclasses.replace(
            kind, settings=dataclasses.replace(settings, epochs=cap))
    if not isinstance(settings, Independent) or max(settings.epoch_list()) <= cap:
        return kind
    epochs = tuple(sorted({min(e, cap) for e in settings.epoch_list()}))
    if settings.match_owner and len(epochs) == 1:   # the snapshot and the cap met: keep a weaker snapshot
        epochs = (max(1, cap // 2), cap) if cap > 1 else (cap,)
    value = epochs if isinstance(settings.epochs, tuple) and len(epochs) > 1 else epochs[-1]
    if settings.match_owner and not isinstance(value, tuple):
        value = (value,)
    return dataclasses.replace(kind, settings=dataclasses.replace(settings, epochs=value))


def negative_epoch_cap(recipe: tuple[ReferenceKind, ...], *, matched_only: bool = False) -> int:
    """The most epochs any independent reference of `recipe` may train (`matched_only`: any
    that trains until it matches the owner)."""
    caps = [max(k.settings.epoch_list()) for k in recipe if isinstance(k.settings, Independent)
            and (not matched_only or _matches_owner(k))]
    return max(caps, default=0)


def _matches_owner(kind: ReferenceKind) -> bool:
    return isinstance(kind.settings, Independent) and kind.settings.match_owner
