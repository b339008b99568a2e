"""After the references: the stages still to come fitted again to the budget's time left.

The references are most of protect's time and the least sure of its estimates: a negative
trains until it matches the owner or converges, and how long that takes is known only
afterwards (on 28x28 owners from 34 % under to 47 % over their expected estimate:
benchmarks/results/budget-worst-case-2026-12-05, budget-refit-raise-2026-12-06). So once
they are built, the plan's later stages -- the pool, scoring it, the refinement -- are
estimated again against what is left of the budget, and moved along the ladder's own later
knobs (the pool's size, the refinement's steps):

* cut, when they no longer fit: to the first of the ladder's later settings that fits,
  never below its last (past that, protect finishes late rather than with a pool too
  small to choose from);
* raised, when the references ran short and a richer setting fits: back towards what the
  plan cut, never above the caller's own settings. A budget is time the owner gave; left
  unused it buys nothing, and these two knobs buy quality (on the three beds, the same
  references, pool 10 x n per k and 30 steps against 30 x n and 50: mean selected ARUC
  0.751 against 0.771, 47 copies missed against 40;
  benchmarks/results/three-beds-later-cut-2026-12-06).

What was built stays as planned: the references, their images, replicas and epochs.
"""
from __future__ import annotations

import dataclasses

from .plan import LADDER, Plan, estimate_stages, later_knobs

__all__ = ["LATER_STAGES", "later_settings", "refit_later_stages"]

LATER_STAGES = ("pool", "reference_outputs", "refine")


def later_settings(ceiling: tuple[int, int]) -> list[tuple[int, int]]:
    """The (pool_factor, refine_steps) settings the ladder passes through from `ceiling`
    (the caller's own), richest first, each knob no higher than the ceiling's: (30, 50),
    (20, 50), (20, 30), (10, 30), (10, 20), (5, 20) for the defaults."""
    pool, steps = ceiling
    out = [ceiling]
    for cut in LADDER:
        pool = min(pool, cut.get("pool_factor", pool))
        steps = min(steps, cut.get("refine_steps", steps)) if steps else 0
        if (pool, steps) != out[-1]:
            out.append((pool, steps))
    return out


def refit_later_stages(plan: Plan, elapsed: float, n_items: int, *, built: bool = True) -> Plan:
    """`plan` with its later stages moved to fit `plan.budget - elapsed` seconds (elapsed:
    the plan's measuring and the references): the richest of `later_settings` that fits
    when the plan's own fits and a richer one does too, else the first that fits below
    it (the last when none does); `plan` itself when it has no budget or nothing moves.
    The plan returned records the refit (`refit`: the seconds that were left, the knobs,
    and whether they were raised or cut)."""
    if plan.budget is None:
        return plan
    left = plan.budget - elapsed
    later = lambda setting: {stage: seconds for stage, seconds in  # noqa: E731
                             estimate_stages(_with(plan.config, setting), plan.costs, n_items, plan.world,
                                             built).items()
                             if stage in LATER_STAGES}
    fits = lambda setting: sum(later(setting).values()) <= left  # noqa: E731
    current = later_knobs(plan.config)
    settings = later_settings(plan.later_ceiling or current)
    if fits(current):
        richer = [s for s in settings if s != current and s[0] >= current[0] and s[1] >= current[1]]
        chosen, direction = next((s for s in richer if fits(s)), None), "raised"
    else:
        poorer = [s for s in settings if s != current and s[0] <= current[0] and s[1] <= current[1]]
        chosen, direction = next((s for s in poorer if fits(s)), poorer[-1] if poorer else None), "cut"
    if chosen is None:
        return plan
    refit = {"seconds_left": round(left, 2), "pool_factor": chosen[0], "refine_steps": chosen[1],
             "direction": direction}
    return dataclasses.replace(plan, config=_with(plan.config, chosen), estimate={**plan.estimate, **later(chosen)},
                               refit=refit)


def _with(config, setting: tuple[int, int]):
    pool, steps = setting
    refine = dataclasses.replace(config.refine, steps=steps) if config.refine is not None else None
    return dataclasses.replace(config, pool_factor=pool, refine=refine)
