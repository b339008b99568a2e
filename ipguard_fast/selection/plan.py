"""protect()'s plan: how much of each kind of work to do, and what each stage should cost on
this machine, decided before the work from measured unit costs (plan_costs.py).

Without a budget the plan is the full recipe (ProtectConfig as given) and only estimates.
With `budget` seconds it walks LADDER -- each rung cuts one knob, the cheapest cuts in
quality first -- and keeps the first rung whose estimate fits. The knobs: the images the
references train on (a seeded subset: copies and independents by fewer steps), the
replicas of each reference kind, the pool's size, the refinement's steps, the negatives'
epoch cap. A plan that trains the negatives less than the caller's config says so: weaker
negatives make the points less unique and the threshold lower (measured: README).

The estimate is a sum of (work x unit cost): reference training as epochs x images x the
architecture's per-image step (epochs read from each kind's settings; a negative that
stops on a rule is counted at the epochs it took on the measured owners, below), the
pool as points x a pilot's per-point cost, scoring as references x points x a forward,
refinement as candidates x steps x selecting references x a forward and backward. Under
torchrun each rank does 1/W of every stage.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from .._validate import ArgumentError, finite_number
from ..precision import effective_precision
from .config import ProtectConfig
from .holdout import HOLDOUT_FRACTION, HOLDOUT_MAX
from .plan_costs import UnitCosts
from .pool import K_FACTORS
from .recipe import capped_recipe, negative_epoch_cap

__all__ = ["LADDER", "Plan", "apply_knobs", "estimate_stages", "fit_plan", "parse_duration", "plan_lines"]

# Epochs a negative with a stopping rule trained on the digits owner of seed 0 (recipe
# version 4; the first run of plan.py's estimates): the owner-matched ones stopped after
# 13-20 (cap 60), the converged ones after 45-60. Used only to estimate; the caps bound
# the real cost.
MATCHED_EPOCHS = 16
CONVERGED_EPOCHS = 50
_LAST_ONLY = 0.4        # a step that trains only the head: a forward and a small backward
_FIT_SAMPLE = 2000      # attacks.independent.FIT_SAMPLE: the converged rule's loss sample

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


@dataclass(frozen=True)
class Plan:
    """The knobs chosen (`config` carries them), the rung, the budget asked, the unit costs
    and each stage's estimated seconds."""

    config: ProtectConfig
    rung: int
    budget: float | None
    costs: UnitCosts
    estimate: dict
    world: int = 1
    weakened: bool = False    # the cuts train the negatives less than the full recipe (warned: plan_lines)
    refit: dict | None = None  # the later stages cut after the references ran long (plan_refit.py)

    @property
    def total(self) -> float:
        return sum(self.estimate.values())

    def to_meta(self) -> dict:
        refine = self.config.refine
        return {"budget_seconds": self.budget, "rung": self.rung, "world": self.world,
                "replicas": self.config.replicas, "pool_factor": self.config.pool_factor,
                "reference_images": self.config.reference_images,
                "refine_steps": refine.steps if refine is not None else 0,
                "negative_epoch_cap": negative_epoch_cap(self.config.recipe),
                "estimated_seconds": {k: round(v, 2) for k, v in self.estimate.items()},
                "estimated_total_seconds": round(self.total, 2), "unit_costs": self.costs.to_meta(),
                "weakened_negatives": self.weakened, **({"refit": self.refit} if self.refit else {})}


def fit_plan(config: ProtectConfig, costs: UnitCosts, n_items: int, budget: float | None, *, world: int = 1,
             built: bool = True, spent: float = 0.0) -> Plan:
    """The plan for `config` on `n_items` training images: the full config without a
    budget, else the first rung of LADDER whose estimate is within `budget` seconds, of
    which measuring the costs already took `spent`. built: False when the caller gives
    the references (nothing to train)."""
    config = _with_layout(config, costs)
    measured = {"plan": spent} if spent else {}
    if budget is None:
        return Plan(config, 0, None, costs, {**measured, **estimate_stages(config, costs, n_items, world, built)},
                    world)
    budget = finite_number("budget", budget, positive=True)
    config = dataclasses.replace(config, budget=budget)
    budget -= spent
    knobs: dict = {}
    for rung, cut in enumerate(LADDER):
        upper = knobs.get("reference_images", n_items)
        knobs.update(cut)
        candidate = apply_knobs(config, knobs, n_items)
        estimate = estimate_stages(candidate, costs, n_items, world, built)
        if sum(estimate.values()) <= budget:
            if "reference_images" in cut and candidate.reference_images is not None:
                candidate = _stretch_images(candidate, costs, n_items, budget, upper, world, built)
                estimate = estimate_stages(candidate, costs, n_items, world, built)
            weakened = (candidate.reference_images != config.reference_images
                        or negative_epoch_cap(candidate.recipe) < negative_epoch_cap(config.recipe))
            return Plan(candidate, rung, config.budget, costs, {**measured, **estimate}, world, weakened)
    raise ArgumentError("budget", f"{_duration(budget + spent)} is less than the cheapest plan's estimate "
                                  f"({_duration(sum(estimate.values()) + spent)} on this machine); raise it")


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
        changes["recipe"] = capped_recipe(config.recipe, knobs["epoch_cap"])
    if "refine_steps" in knobs and config.refine is not None:
        changes["refine"] = dataclasses.replace(config.refine, steps=min(knobs["refine_steps"], config.refine.steps))
    return dataclasses.replace(config, **changes)


def estimate_stages(config: ProtectConfig, costs: UnitCosts, n_items: int, world: int = 1,
                    built: bool = True) -> dict:
    """Estimated seconds of each stage of protect() under `config`."""
    counts = _reference_counts(config)
    pool = config.pool_factor * config.n * (len(K_FACTORS) if config.k == "auto" else len(config.k)) * len(config.inits)
    forward = sum(counts[split, arch] * getattr(costs, f"{arch}_forward") for split, arch in counts)
    out = {"references": _reference_seconds(config, costs, n_items) if built else 0.0,
           "pool": pool * costs.pool_point,
           "reference_outputs": pool * forward}
    if config.refine is not None:
        # every selecting reference and the owner itself (it keeps its label) at every step
        per_point = costs.owner_input_grad + sum(counts["select", arch] * getattr(costs, f"{arch}_input_grad")
                                                 for arch in _ARCHS)
        out["refine"] = config.refine.factor * config.n * config.refine.steps * per_point
    return {stage: seconds / world for stage, seconds in out.items()}


_ARCHS = ("owner", "generic")


def _reference_counts(config: ProtectConfig) -> dict:
    """How many reference models of each architecture select, and how many only validate
    or set the threshold: {(split, arch): count}."""
    counts = {(split, arch): 0 for split in ("select", "other") for arch in _ARCHS}
    for kind in config.recipe:
        models, arch = _models_per_run(kind.settings), _model_arch(kind.settings)
        if not kind.per_replica:
            counts["select", arch] += models
        elif kind.threshold_only:
            counts["other", arch] += config.validation_replicas * models
        else:
            counts["select", arch] += config.replicas * models
            counts["other", arch] += config.validation_replicas * models
    return counts


def _reference_seconds(config: ProtectConfig, costs: UnitCosts, n_items: int) -> float:
    held = min(HOLDOUT_MAX, max(1, round(HOLDOUT_FRACTION * n_items)))
    total = 0.0
    for kind in config.recipe:
        runs = (1 if not kind.per_replica else config.validation_replicas if kind.threshold_only
                else config.replicas + config.validation_replicas)
        items = n_items - held if kind.role == "negative" else n_items
        items = min(items, config.reference_images or items)
        epochs, arch, evaluated, evaluator = _work(kind.settings, held, items)
        total += runs * (epochs * items * getattr(costs, f"{arch}_train")
                         + evaluated * getattr(costs, f"{evaluator}_forward"))
    return total


def _work(settings, held: int, items: int) -> tuple[float, str, float, str]:
    """(epochs of training steps, the architecture trained, images only evaluated, the
    architecture that evaluates them) of one run of a reference kind, read from its
    settings by field name (a kind of a caller's recipe with none of these fields counts
    as free, like pruning without fine-tuning)."""
    name = type(settings).__name__
    if name == "Independent":
        cap, arch = max(settings.epoch_list()), _arch(settings.arch)
        if settings.match_owner:
            epochs = min(cap, MATCHED_EPOCHS)
            return epochs, arch, epochs * held, arch
        if settings.until_converged:
            epochs = min(cap, CONVERGED_EPOCHS)
            return epochs, arch, epochs * min(items, _FIT_SAMPLE), arch
        return cap, arch, 0.0, arch
    if name == "Distill":   # the teacher's logits computed once
        return settings.epochs, _arch(settings.student), items, "owner"
    if name == "AdversarialFineTune":   # each step's attack: forward and backward per PGD step
        return settings.epochs * (settings.steps + 1), "owner", 0.0, "owner"
    if name == "FineTune":
        return settings.epochs * (_LAST_ONLY if settings.last_only else 1.0), "owner", 0.0, "owner"
    return float(getattr(settings, "finetune_epochs", 0) or 0), "owner", 0.0, "owner"


def _arch(arch) -> str:
    """The measured architecture a kind's cost is read from: the generic MLP's, else the
    owner's (a caller's factory or "generic-cnn" is costed as the owner, never measured)."""
    return "generic" if arch == "generic" else "owner"


def _model_arch(settings) -> str:
    """The architecture of the models a kind yields: the student's or the independent's, else the owner's."""
    arch = getattr(settings, "student", None) or getattr(settings, "arch", None)
    return _arch(arch) if isinstance(arch, str) else "owner"


def _models_per_run(settings) -> int:
    return len(settings.labels()) if type(settings).__name__ == "Independent" else 1


def plan_lines(plan: Plan) -> list[str]:
    """The plan as a user reads it: the knobs, then each stage's estimate."""
    c = plan.config
    head = ("full recipe" if plan.budget is None else
            f"budget {_duration(plan.budget)}: rung {plan.rung} of {len(LADDER) - 1}")
    refine = c.refine.steps if c.refine is not None else 0
    lines = [f"plan ({head}{f', {plan.world} ranks' if plan.world > 1 else ''}): replicas {c.replicas} + "
             f"{c.validation_replicas} validation, references on "
             f"{'all images' if c.reference_images is None else f'at most {c.reference_images} images'}, "
             f"negatives at most {negative_epoch_cap(c.recipe)} epochs, pool {c.pool_factor} x n per k, "
             f"refinement {refine} steps"]
    lines += [f"  {stage:18s} ~{_duration(seconds)}" for stage, seconds in plan.estimate.items()]
    lines.append(f"  {'total':18s} ~{_duration(plan.total)} (unit costs measured on {plan.costs.device}; "
                 f"references train at {effective_precision(plan.costs.precision)}"
                 f"{', conv weights channels_last' if c.search.get('channels_last') else ''})")
    if plan.weakened:
        lines.append("warning: this budget trains the negative references less than the full recipe, so the "
                     "points are less unique and the threshold is set against weaker independents (measured at a "
                     "quarter of the full recipe's time: ARUC 0.06-0.22 lower on beds of strong independents; "
                     "README, quality against budget). Give more time where a verdict matters.")
    return lines


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
