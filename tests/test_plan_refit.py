"""After the references, protect fits its later stages again to the budget's time left:
cut along the ladder's later knobs when the references ran long, never raised, recorded."""
import dataclasses
import importlib
import time

import pytest
from test_plan import COSTS

from ipguard_fast.selection import CacheLocation, ProtectConfig, run_protect
from ipguard_fast.selection.plan import fit_plan
from ipguard_fast.selection.plan_refit import LATER_CUTS, LATER_STAGES, refit_later_stages

N_ITEMS = 60000


def later(plan) -> float:
    return sum(plan.estimate[stage] for stage in LATER_STAGES if stage in plan.estimate)


@pytest.fixture
def planned():
    """A full plan's later stages cost about 1,000 s of the made-up machine; the budget holds them."""
    full = fit_plan(ProtectConfig(), COSTS, N_ITEMS, None)
    return fit_plan(ProtectConfig(), COSTS, N_ITEMS, full.total * 1.01)


def test_references_on_time_leave_the_plan_as_it_was(planned):
    assert planned.rung == 0
    on_time = planned.estimate["references"]
    assert refit_later_stages(planned, on_time, N_ITEMS) is planned
    assert refit_later_stages(fit_plan(ProtectConfig(), COSTS, N_ITEMS, None), 1e9, N_ITEMS).refit is None


def test_references_that_ran_long_cut_the_later_stages_until_they_fit(planned):
    late = planned.budget - 0.6 * later(planned)    # only 60 % of the later stages' time is left
    refit = refit_later_stages(planned, late, N_ITEMS)
    assert later(refit) <= planned.budget - late < later(planned)
    assert refit.config.pool_factor < planned.config.pool_factor
    assert refit.config.replicas == planned.config.replicas and refit.config.recipe == planned.config.recipe
    assert refit.estimate["references"] == planned.estimate["references"]   # what was done stays as planned
    meta = refit.to_meta()
    assert meta["refit"] == {"seconds_left": pytest.approx(planned.budget - late, abs=0.01),
                             "pool_factor": refit.config.pool_factor, "refine_steps": refit.config.refine.steps}
    assert meta["pool_factor"] == refit.config.pool_factor and "refit" not in planned.to_meta()


def test_no_time_left_takes_the_last_cut_and_never_raises_a_knob(planned):
    over = refit_later_stages(planned, planned.budget * 2, N_ITEMS)
    assert (over.config.pool_factor, over.config.refine.steps) == (LATER_CUTS[-1]["pool_factor"],
                                                                   LATER_CUTS[-1]["refine_steps"])
    assert over.refit["seconds_left"] < 0
    small = dataclasses.replace(planned, config=dataclasses.replace(planned.config, pool_factor=3))
    assert refit_later_stages(small, planned.budget * 2, N_ITEMS).config.pool_factor == 3


def test_protect_cuts_its_pool_when_the_references_run_long(owner, small, tmp_path, monkeypatch):
    stages = importlib.import_module("ipguard_fast.selection.stages")
    protect_module = importlib.import_module("ipguard_fast.selection.protect")
    monkeypatch.setattr(stages, "measure_unit_costs", lambda *args, **kwargs: COSTS)
    build = protect_module.make_references

    config = ProtectConfig(n=8, pool_factor=12, replicas=1, validation_replicas=1)
    plan = fit_plan(config, COSTS, len(small), None)
    budget = plan.total * 1.05
    # references that take their whole estimate and more: the later stages no longer fit
    delay = plan.estimate["references"] + 0.5 * later(plan)
    monkeypatch.setattr(time, "perf_counter", _clock_ahead_after(build, protect_module, monkeypatch, delay))
    logged = []
    result = run_protect(owner, small, dataclasses.replace(config, budget=budget), progress=False,
                         cache=CacheLocation(tmp_path), log=logged.append)
    recorded = result.fingerprints.meta["protect"]["plan"]
    assert recorded["refit"]["pool_factor"] == recorded["pool_factor"] < 12
    assert result.fingerprints.meta["selection"]["pool_size"] == recorded["pool_factor"] * 8 * 5
    assert any(line.startswith("plan: ") and "pool cut to" in line for line in logged)


def _clock_ahead_after(build, protect_module, monkeypatch, delay: float):
    """A perf_counter that jumps `delay` seconds ahead once the references are built (so
    the test need not wait for them)."""
    real, ahead = time.perf_counter, [0.0]

    def built(*args, **kwargs):
        out = build(*args, **kwargs)
        ahead[0] = delay
        return out

    monkeypatch.setattr(protect_module, "make_references", built)
    return lambda: real() + ahead[0]
