"""After the references: the stages still to come fitted again to the budget's time left.

The references are most of protect's time and the least sure of its estimates: a negative
trains until it matches the owner, and how long that takes is known only afterwards (on
owners other than the one the estimate was measured on, 6-33 % longer: README, cost
table). So once they are built, the plan's later stages -- the pool, scoring it, the
refinement -- are estimated again against what is left of the budget and, when they no
longer fit, cut along the ladder's own later knobs (the pool's size, the refinement's
steps). A knob is never raised, and never cut below the ladder's last rung: past that,
protect finishes late rather than with a pool too small to choose from.
"""
from __future__ import annotations

import dataclasses

from .plan import Plan, apply_knobs, estimate_stages

__all__ = ["LATER_CUTS", "LATER_STAGES", "refit_later_stages"]

LATER_STAGES = ("pool", "reference_outputs", "refine")
# The ladder's later knobs, cut in its order (plan.LADDER: pool 20, 10, then 5 x n per k;
# refinement 30, then 20 steps).
LATER_CUTS: tuple[dict, ...] = (
    {"pool_factor": 20},
    {"pool_factor": 10, "refine_steps": 30},
    {"pool_factor": 5, "refine_steps": 20},
)


def refit_later_stages(plan: Plan, elapsed: float, n_items: int, *, built: bool = True) -> Plan:
    """`plan` with its later stages cut until their estimate fits `plan.budget - elapsed`
    seconds (elapsed: the plan's measuring and the references), or at the last cut when
    none fits; `plan` itself when it has no budget or its later stages still fit. The
    plan returned records the refit (`refit`: the seconds that were left and the knobs)."""
    if plan.budget is None:
        return plan
    left = plan.budget - elapsed
    later = lambda config: {stage: seconds for stage, seconds in  # noqa: E731
                            estimate_stages(config, plan.costs, n_items, plan.world, built).items()
                            if stage in LATER_STAGES}
    if sum(later(plan.config).values()) <= left:
        return plan
    config = plan.config
    for cut in LATER_CUTS:
        config = apply_knobs(config, cut, n_items)
        if sum(later(config).values()) <= left:
            break
    refine = config.refine.steps if config.refine is not None else 0
    refit = {"seconds_left": round(left, 2), "pool_factor": config.pool_factor, "refine_steps": refine}
    return dataclasses.replace(plan, config=config, estimate={**plan.estimate, **later(config)}, refit=refit)
