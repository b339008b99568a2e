"""protect()'s plan: how much of each kind of work to do, and what each stage should cost on
this machine, decided before the work from measured unit costs (plan_costs.py, turned into
stage estimates by plan_estimate.py).

Without a budget the plan is the full recipe (ProtectConfig as given) and only estimates.
With `budget` seconds it walks LADDER -- each rung cuts one knob, the cheapest cuts in
quality first -- and keeps the first rung whose estimate fits. The knobs: the images the
references train on (a seeded subset: copies and independents by fewer steps), the
replicas of each reference kind, the pool's size, the refinement's steps, the negatives'
epoch cap. A plan that trains the negatives less than the caller's config says so: weaker
negatives make the points less unique and the threshold lower (measured: README).

The budget bounds the worst case too. The expected estimate counts a negative that trains
until it matches the owner at the epochs such runs took on the digits owner; on an owner
where they need more (a subset of a large owner's data) every one runs to its cap, and a
300 s budget took 425 s (benchmarks/results/protect-scaling-2026-12-05). So a rung fits
only when its worst case -- every negative with a stopping rule trained to its cap -- is
within WORST_CASE x the budget as well; when only that fails, the matched negatives' cap
is lowered to the most epochs that fit (never below the ladder's floor), else the next
rung is tried. The estimates are on the machine's measured speed; the plan itself is
then fixed, so the same plan builds the same references on any machine.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from .._validate import ArgumentError, finite_number
from ..precision import effective_precision
from ..search.config import AMP_DTYPES
from .config import ProtectConfig
from .plan_costs import UnitCosts
from .plan_estimate import estimate_stages
from .recipe import negative_epoch_cap

__all__ = ["LADDER", "Plan", "apply_knobs", "estimate_stages", "fit_plan", "later_knobs", "parse_duration",
           "plan_lines"]

# Each rung: the knobs it sets (the rungs are cumulative). reference_images is an upper
# bound (never more than the data has). No rung trains the negatives under 10 epochs: a
# rung at 5 (and 1,000 images) accused 9 and 11 of 45 innocents on the foreign and hard
# beds over three owner seeds (benchmarks/results/quality-vs-budget-2026-12-04), so a
# budget below the last rung is refused rather than met with such references.
LADDER: tuple[dict, ...] = (
    {},
    {"reference_images": 10000},
    {"pool_factor": 20},
    {"replicas": 2},
    {"reference_images": 5000, "refine_steps": 30},
    {"pool_factor": 10},
    {"epoch_cap": 20},
    {"replicas": 1},
    {"reference_images": 2000, "refine_steps": 20},
    {"epoch_cap": 10, "pool_factor": 5},
)
_EPOCH_FLOOR = 10    # the ladder's last epoch cap: the matched negatives' cap is never bounded below it
# The worst case's share of the budget: 15 % over it at most, which leaves part of the 20 %
# the budget is held to for the unit costs' own error (the machine's speed when they were
# measured against its speed while the work runs).
WORST_CASE = 1.15


@dataclass(frozen=True)
class Plan:
    """The knobs chosen (`config` carries them), the rung, the budget asked, the unit costs,
    each stage's estimated seconds, and the worst case's total (plan_estimate.py)."""

    config: ProtectConfig
    rung: int
    budget: float | None
    costs: UnitCosts
    estimate: dict
    world: int = 1
    weakened: bool = False    # the cuts train the negatives less than the full recipe (warned: plan_lines)
    matched_cut: bool = False  # only the cap of the negatives that stop on matching the owner is lower (noted)
    refit: dict | None = None  # the later stages moved to the time the references left (plan_refit.py)
    worst: float | None = None  # seconds if every negative with a stopping rule ran to its cap
    # The caller's (pool_factor, refine_steps) under a budget: how far a refit may raise them (plan_refit.py).
    later_ceiling: tuple[int, int] | None = None

    @property
    def total(self) -> float:
        return sum(self.estimate.values())

    def to_meta(self) -> dict:
        pool_factor, refine_steps = later_knobs(self.config)
        return {"budget_seconds": self.budget, "rung": self.rung, "world": self.world,
                "replicas": self.config.replicas, "pool_factor": pool_factor,
                "reference_images": self.config.reference_images,
                "refine_steps": refine_steps,
                "negative_epoch_cap": negative_epoch_cap(self.config.effective_recipe),
                "matched_epoch_cap": negative_epoch_cap(self.config.effective_recipe, matched_only=True),
                "estimated_seconds": {k: round(v, 2) for k, v in self.estimate.items()},
                "estimated_total_seconds": round(self.total, 2),
                "worst_case_seconds": None if self.worst is None else round(self.worst, 2),
                "unit_costs": self.costs.to_meta(),
                "weakened_negatives": self.weakened or self.matched_cut,
                **({"refit": self.refit} if self.refit else {})}


def fit_plan(config: ProtectConfig, costs: UnitCosts, n_items: int, budget: float | None, *, world: int = 1,
             built: bool = True, spent: float = 0.0) -> Plan:
    """The plan for `config` on `n_items` training images: the full config without a
    budget, else the first rung of LADDER whose estimate is within `budget` seconds, of
    which measuring the costs already took `spent`, and whose worst case is within
    WORST_CASE x `budget` (the matched negatives' cap lowered where that alone fails).
    built: False when the caller gives the references (nothing to train)."""
    config = _with_layout(config, costs)
    measured = {"plan": spent} if spent else {}
    worst = lambda c: spent + sum(estimate_stages(c, costs, n_items, world, built, worst=True).values())  # noqa: E731
    if budget is None:
        return Plan(config, 0, None, costs, {**measured, **estimate_stages(config, costs, n_items, world, built)},
                    world, worst=worst(config))
    budget = finite_number("budget", budget, positive=True)
    config = dataclasses.replace(config, budget=budget)
    limit = WORST_CASE * budget
    budget -= spent
    knobs: dict = {}
    for rung, cut in enumerate(LADDER):
        upper = knobs.get("reference_images", n_items)
        knobs.update(cut)
        candidate = apply_knobs(config, knobs, n_items)
        estimate = estimate_stages(candidate, costs, n_items, world, built)
        if sum(estimate.values()) > budget:
            continue
        if "reference_images" in cut and candidate.reference_images is not None:
            candidate = _stretch_images(candidate, costs, n_items, budget, upper, world, built)
        candidate = _bound_worst_case(candidate, worst, limit)
        if candidate is None:
            continue
        estimate = estimate_stages(candidate, costs, n_items, world, built)
        weakened = (candidate.reference_images != config.reference_images
                    or negative_epoch_cap(candidate.effective_recipe) < negative_epoch_cap(config.effective_recipe))
        return Plan(candidate, rung, config.budget, costs, {**measured, **estimate}, world, weakened,
                    matched_cut=_matched_cap(candidate) < _matched_cap(config), worst=worst(candidate),
                    later_ceiling=later_knobs(config))
    cheapest = apply_knobs(config, knobs, n_items)
    expected = sum(estimate_stages(cheapest, costs, n_items, world, built).values()) + spent
    raise ArgumentError("budget", f"{_duration(budget + spent)} is less than the cheapest plan's estimate "
                                  f"({_duration(expected)}, at most {_duration(worst(cheapest))} on this machine); "
                                  f"raise it")


def later_knobs(config: ProtectConfig) -> tuple[int, int]:
    """The knobs of the stages after the references: (pool_factor, refinement steps; 0 without refinement)."""
    return config.pool_factor, config.refine.steps if config.refine is not None else 0


def _bound_worst_case(config: ProtectConfig, worst, limit: float) -> ProtectConfig | None:
    """`config`, its matched negatives' epoch cap lowered to the most that keeps `worst`
    (seconds, of a config) within `limit`; None when even _EPOCH_FLOOR epochs do not."""
    if worst(config) <= limit:
        return config
    at = lambda cap: dataclasses.replace(config, matched_epoch_cap=cap)  # noqa: E731
    low, high = _EPOCH_FLOOR, _matched_cap(config)    # low fits (checked next), high does not
    if high <= low or worst(at(low)) > limit:
        return None
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (middle, high) if worst(at(middle)) <= limit else (low, middle)
    return at(low)


def _matched_cap(config: ProtectConfig) -> int:
    return negative_epoch_cap(config.effective_recipe, matched_only=True)


def _stretch_images(config: ProtectConfig, costs: UnitCosts, n_items: int, budget: float, upper: int, world: int,
                    built: bool) -> ProtectConfig:
    """`config` with the most reference images below `upper` (the previous rung's) that
    still fits `budget`: a rung that cuts images uses the budget it has, not a step down."""
    fits = lambda images: sum(estimate_stages(dataclasses.replace(config, reference_images=images),  # noqa: E731
                                              costs, n_items, world, built).values()) <= budget
    low, high = config.reference_images, min(upper, n_items)
    while high - low > max(1, low // 100):   # to within 1 %
        middle = (low + high) // 2
        low, high = (middle, high) if fits(middle) else (low, middle)
    return dataclasses.replace(config, reference_images=None if low >= n_items else low)


def _with_layout(config: ProtectConfig, costs: UnitCosts) -> ProtectConfig:
    """`config` whose pool searches with channels_last conv weights when the costs measured
    that layout faster on the owner, unless the caller's search options chose a layout."""
    if not costs.channels_last or "channels_last" in config.search:
        return config
    return dataclasses.replace(config, search={**config.search, "channels_last": True})


def apply_knobs(config: ProtectConfig, knobs: dict, n_items: int) -> ProtectConfig:
    """`config` with the ladder's `knobs` applied; a knob is only ever lowered."""
    changes = {key: min(value, getattr(config, key)) for key, value in knobs.items()
               if key in ("replicas", "pool_factor")}
    images = knobs.get("reference_images")
    if images is not None and images < min(n_items, config.reference_images or n_items):
        changes["reference_images"] = images
    if "epoch_cap" in knobs:
        changes["epoch_cap"] = min(knobs["epoch_cap"], config.epoch_cap or knobs["epoch_cap"])
    if "refine_steps" in knobs and config.refine is not None:
        changes["refine"] = dataclasses.replace(config.refine, steps=min(knobs["refine_steps"], config.refine.steps))
    return dataclasses.replace(config, **changes)


def _autocast(config: ProtectConfig) -> bool:
    """Whether the pool searches under an autocast (search option "amp", a name of AMP_DTYPES)."""
    return AMP_DTYPES.get(config.search.get("amp")) is not None


def plan_lines(plan: Plan) -> list[str]:
    """The plan as a user reads it: the knobs, then each stage's estimate."""
    c = plan.config
    head = ("full recipe" if plan.budget is None else
            f"budget {_duration(plan.budget)}: rung {plan.rung} of {len(LADDER) - 1}")
    refine = later_knobs(c)[1]
    lines = [f"plan ({head}{f', {plan.world} ranks' if plan.world > 1 else ''}): replicas {c.replicas} + "
             f"{c.validation_replicas} validation, references on "
             f"{'all images' if c.reference_images is None else f'at most {c.reference_images} images'}, "
             f"negatives at most {negative_epoch_cap(c.effective_recipe)} epochs{_matched_words(c)}, "
             f"pool {c.pool_factor} x n per k, refinement {refine} steps"]
    lines += [f"  {stage:18s} ~{_duration(seconds)}" for stage, seconds in plan.estimate.items()]
    worst = f", at most ~{_duration(plan.worst)}" if plan.worst is not None and plan.worst > 1.01 * plan.total else ""
    lines.append(f"  {'total':18s} ~{_duration(plan.total)}{worst} (unit costs measured on {plan.costs.device}; "
                 f"references train at {effective_precision(plan.costs.precision)}"
                 f"{', conv weights channels_last' if c.search.get('channels_last') else ''}"
                 f"{', the pool under ' + c.search['amp'] + ' autocast' if _autocast(c) else ''})")
    if plan.weakened:
        lines.append("warning: this budget trains the negative references less than the full recipe, so the "
                     "points are less unique and the threshold is set against weaker independents (measured at a "
                     "quarter of the full recipe's time: ARUC 0.06-0.22 lower on beds of strong independents; "
                     "README, quality against budget). Give more time where a verdict matters.")
    elif plan.matched_cut:
        lines.append(f"note: negatives that have not matched the owner's held-out accuracy after "
                     f"{_matched_cap(c)} epochs stop there (the budget's worst case); on an owner they need longer "
                     f"to match, they are weaker than it and the points are chosen against weaker independents. Give "
                     f"more time where a verdict matters.")
    return lines


def _matched_words(config: ProtectConfig) -> str:
    matched = _matched_cap(config)
    lower = 0 < matched < negative_epoch_cap(config.effective_recipe)
    return f" ({matched} for those that stop on matching the owner)" if lower else ""


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def parse_duration(text: str, name: str = "budget") -> float:
    """Seconds from '90', '90s', '30m', '1.5h'."""
    units = {"s": 1, "m": 60, "h": 3600}
    value = str(text).strip().lower()
    scale = units.get(value[-1:], None)
    number = value[:-1] if scale is not None else value
    try:
        seconds = float(number) * (scale or 1)
    except ValueError:
        raise ArgumentError(name, f"expected seconds or a duration like 90s, 30m, 2h; got {text!r}") from None
    if not math.isfinite(seconds) or seconds <= 0:
        raise ArgumentError(name, f"must be a positive duration, got {text!r}")
    return seconds
