"""ProtectConfig: every setting of protect(), checked once (like the search's ExtractConfig)."""
from __future__ import annotations

import functools
import numbers
from dataclasses import dataclass, field
from typing import Any

from .._validate import ArgumentError, finite_number, non_negative_int, positive_int
from ..search.candidates import LABEL_MODES
from ..search.config import check_search_options
from .pool import POOL_FACTOR
from .recipe import RECIPE, STUDENT_PAIRS, ReferenceKind, capped_recipe, check_recipe, with_owner_recipe
from .refine import RefineConfig
from .scores import SCORES
from .significance import SIGNIFICANCE
from .spread import check_share

__all__ = ["INITS", "ProtectConfig"]

INITS = ("data", "uniform")   # init="auto" tries both and lets the held-out references choose


@dataclass(frozen=True)
class ProtectConfig:
    """protect()'s settings.

    n: fingerprints kept. k: "auto" (the pool spans the owner's median margin x
    pool.K_FACTORS and selection picks among all its points), a number, or a list of
    numbers (each alone and all merged, chosen by held-out references); stored as "auto"
    or a tuple. pool_factor: pool points per k, as a multiple of n. replicas: replicas of
    each reference kind that select; validation_replicas: more that are only measured
    (the threshold comes from them). refine: a RefineConfig, True (the default one) or
    False/None (keep the pool's own points). init: "data", "uniform" or "auto".
    search: extra keywords for the pool's extract_fingerprints (batch_size, amp, ...).
    recipe: the caller's reference kinds (recipe.RECIPE; each an attack and its settings),
    kept as given. train_recipe: the owner's own training recipe (a train.TrainRecipe),
    when known: the negatives then include independents trained exactly so
    (recipe.with_owner_recipe); without it they train until their held-out accuracy
    reaches the owner's. epoch_cap / matched_epoch_cap: every independent reference / those
    that train until they match the owner train at most this many epochs (the plan's cuts,
    plan.py; None: the recipe's own). effective_recipe: the kinds protect builds, derived
    from these four.
    reference_images: the references train on a seeded subset of at most this many of
    the training images (None: all of them); the plan's first knob (plan.py). budget:
    seconds this machine may spend; the plan cuts knobs until its estimate fits (None:
    the full recipe, estimated only). label_share: at most this multiple of an even share
    of the n points may carry one label (spread.py; None, the default: the top n with at
    most half of them on one label, spread.MOST_ONE_LABEL, which a set needs for verify to
    tell a copy from a model answering one label; label_share = the number of classes: the
    plain top n). threshold_significance: the stored
    threshold is the smallest count of n that a model agreeing at the calibrated level
    reaches with at most this probability, below 0.5 (significance.py; None: the level itself).
    students: points of the student part (students.py; 0, the default: none), a second set
    with its own threshold that extraction students of the owner's outputs keep and models
    of the same data do not; the recipe then builds recipe.STUDENT_PAIRS (unless it holds
    student kinds of its own), and each part's threshold takes half the significance.
    """

    n: int = 100
    k: Any = "auto"
    pool_factor: int = POOL_FACTOR
    score: str = "separation"
    replicas: int = 3
    validation_replicas: int = 1
    refine: Any = True
    init: str = "data"
    labels: str = "predicted"
    seed: int = 0
    batch_size: int = 256
    search: dict = field(default_factory=dict)
    recipe: tuple = RECIPE
    train_recipe: Any = None
    reference_images: int | None = None
    budget: float | None = None
    label_share: float | None = None
    threshold_significance: float | None = SIGNIFICANCE
    epoch_cap: int | None = None
    matched_epoch_cap: int | None = None
    students: int = 0

    def __post_init__(self) -> None:
        positive_int("n", self.n)
        object.__setattr__(self, "k", _k(self.k))
        positive_int("pool_factor", self.pool_factor)
        if self.score not in SCORES:
            raise ArgumentError("score", f"expected one of {SCORES}, got {self.score!r}")
        positive_int("replicas", self.replicas)
        non_negative_int("validation_replicas", self.validation_replicas)
        object.__setattr__(self, "refine", _refine(self.refine))
        if self.init not in (*INITS, "auto"):
            raise ArgumentError("init", f"expected one of {(*INITS, 'auto')}, got {self.init!r}")
        if self.labels not in LABEL_MODES:
            raise ArgumentError("labels", f"expected one of {LABEL_MODES}, got {self.labels!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, numbers.Integral):
            raise ArgumentError("seed", f"must be an int, got {self.seed!r}")
        positive_int("batch_size", self.batch_size)
        object.__setattr__(self, "label_share", check_share(self.label_share))
        if self.threshold_significance is not None:
            significance = self.threshold_significance
            if isinstance(significance, bool) or not isinstance(significance, numbers.Real) \
                    or not 0 < significance < 0.5:   # at 0.5 or more the margin lowers the threshold
                raise ArgumentError("threshold_significance", f"must be in (0, 0.5) or None, got {significance!r}")
            object.__setattr__(self, "threshold_significance", float(significance))
        if self.reference_images is not None:
            positive_int("reference_images", self.reference_images)
        if self.budget is not None:
            if isinstance(self.budget, bool) or not isinstance(self.budget, numbers.Real):
                raise ArgumentError("budget", f"must be seconds (a number), got {self.budget!r}")
            object.__setattr__(self, "budget", finite_number("budget", self.budget, positive=True))
        object.__setattr__(self, "recipe", check_recipe(self.recipe))
        non_negative_int("students", self.students)
        for name in ("epoch_cap", "matched_epoch_cap"):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, positive_int(name, getattr(self, name)))
        _ = self.effective_recipe   # train_recipe checked against the recipe now, not at first use
        search = check_search_options("search", self.search, ("n", "k", "input_shape", "seed", "labels", "progress"))
        object.__setattr__(self, "search", search)

    @functools.cached_property
    def effective_recipe(self) -> tuple[ReferenceKind, ...]:
        """The reference kinds protect builds, keys its cache by and estimates: `recipe` with
        the owner's own negatives (train_recipe), then every independent within epoch_cap and
        those that match the owner within matched_epoch_cap. Derived here only, from the
        caller's fields, so a config rebuilt by dataclasses.replace derives it afresh."""
        recipe = self.recipe
        if self.students and not any(k.role == "student" for k in recipe):
            recipe = recipe + STUDENT_PAIRS
        if self.train_recipe is not None:
            recipe = check_recipe(with_owner_recipe(recipe, self.train_recipe))
        if self.epoch_cap is not None:
            recipe = capped_recipe(recipe, self.epoch_cap)
        if self.matched_epoch_cap is not None:
            recipe = capped_recipe(recipe, self.matched_epoch_cap, matched_only=True)
        return recipe

    @property
    def fixed_ks(self) -> list[float] | None:
        """The caller's k values, or None for "auto" (the grid from the owner's margins)."""
        return None if self.k == "auto" else list(self.k)

    @property
    def inits(self) -> list[str]:
        return list(INITS) if self.init == "auto" else [self.init]


def _k(k) -> str | tuple[float, ...]:
    if isinstance(k, str):
        if k != "auto":
            raise ArgumentError("k", f"expected 'auto', a number or a list of numbers, got {k!r}")
        return "auto"
    values = list(k) if isinstance(k, (list, tuple)) else [k]
    if not values:
        raise ArgumentError("k", "the list is empty")
    if any(not isinstance(v, numbers.Real) or isinstance(v, bool) for v in values):
        raise ArgumentError("k", f"expected 'auto', a number or a list of numbers, got {k!r}")
    out = tuple(finite_number("k", v, minimum=0.0) for v in values)
    if len(set(out)) != len(out):
        raise ArgumentError("k", f"has repeated values {list(out)}")
    return out


def _refine(refine) -> RefineConfig | None:
    if refine is None:
        return None
    if isinstance(refine, RefineConfig):
        return refine if refine.steps > 0 else None
    if not isinstance(refine, bool):
        raise ArgumentError("refine", f"expected True, False or a RefineConfig, got {type(refine).__name__}")
    return RefineConfig() if refine else None
