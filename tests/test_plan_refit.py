"""After the references, protect fits its later stages again to the budget's time left:
cut along the ladder's later knobs when the references ran long, raised back towards the
caller's settings (never above) when they ran short, recorded."""
import dataclasses
import importlib
import time

import pytest
from test_plan import COSTS

from ipguard_fast.selection import CacheLocation, ProtectConfig, run_protect
from ipguard_fast.selection.plan import estimate_stages, fit_plan
from ipguard_fast.selection.plan_refit import LATER_STAGES, later_settings, refit_later_stages

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
    assert refit.config.replicas == planned.config.replicas
    assert refit.config.effective_recipe == planned.config.effective_recipe
    assert refit.estimate["references"] == planned.estimate["references"]   # what was done stays as planned
    meta = refit.to_meta()
    assert meta["refit"] == {"seconds_left": pytest.approx(planned.budget - late, abs=0.01),
                             "pool_factor": refit.config.pool_factor, "refine_steps": refit.config.refine.steps,
                             "direction": "cut"}
    assert meta["pool_factor"] == refit.config.pool_factor and "refit" not in planned.to_meta()


def test_no_time_left_takes_the_last_cut_and_never_raises_a_knob(planned):
    over = refit_later_stages(planned, planned.budget * 2, N_ITEMS)
    assert (over.config.pool_factor, over.config.refine.steps) == later_settings((30, 50))[-1] == (5, 20)
    assert over.refit["seconds_left"] < 0
    small = dataclasses.replace(planned, config=dataclasses.replace(planned.config, pool_factor=3))
    assert refit_later_stages(small, planned.budget * 2, N_ITEMS).config.pool_factor == 3


def test_the_settings_are_the_ladders_own_richest_first_and_never_above_the_callers():
    assert later_settings((30, 50)) == [(30, 50), (20, 50), (20, 30), (10, 30), (10, 20), (5, 20)]
    assert later_settings((12, 40)) == [(12, 40), (12, 30), (10, 30), (10, 20), (5, 20)]
    assert later_settings((4, 0)) == [(4, 0)]    # no refinement, a pool below every cut: nothing to move


@pytest.fixture
def cut_plan():
    """A budget of a twentieth of the full recipe's estimate: the plan cuts the pool and refinement."""
    full = fit_plan(ProtectConfig(), COSTS, N_ITEMS, None)
    plan = fit_plan(ProtectConfig(), COSTS, N_ITEMS, full.total / 20)
    assert (plan.config.pool_factor, plan.config.refine.steps) < (30, 50) and plan.later_ceiling == (30, 50)
    return plan


def test_references_that_ran_short_raise_the_later_stages_to_the_richest_setting_that_fits(cut_plan):
    planned = (cut_plan.config.pool_factor, cut_plan.config.refine.steps)
    full = fit_plan(ProtectConfig(), COSTS, N_ITEMS, None)
    # the references took no time: the full recipe's later stages fit what is left
    raised = refit_later_stages(cut_plan, 0.0, N_ITEMS)
    assert (raised.config.pool_factor, raised.config.refine.steps) == (30, 50)
    assert raised.estimate["pool"] == pytest.approx(full.estimate["pool"]) and later(raised) <= cut_plan.budget
    assert raised.refit == {"seconds_left": pytest.approx(cut_plan.budget, abs=0.01), "pool_factor": 30, "refine_steps": 50,
                            "direction": "raised"}
    assert raised.config.replicas == cut_plan.config.replicas
    assert raised.config.effective_recipe == cut_plan.config.effective_recipe
    assert raised.estimate["references"] == cut_plan.estimate["references"]
    # time for some of it: the richest setting that fits, and at least what was planned in each knob
    settings = later_settings((30, 50))
    richer = [s for s in settings if s[0] >= planned[0] and s[1] >= planned[1] and s != planned]
    assert len(richer) >= 2
    config = cut_plan.config
    at = lambda s: sum(seconds for stage, seconds in estimate_stages(  # noqa: E731
        dataclasses.replace(config, pool_factor=s[0], refine=dataclasses.replace(config.refine, steps=s[1])),
        COSTS, N_ITEMS).items() if stage in LATER_STAGES)
    assert at(richer[-2]) > at(richer[-1])
    some = refit_later_stages(cut_plan, cut_plan.budget - at(richer[-1]) * 1.001, N_ITEMS)   # room for the least raise
    assert (some.config.pool_factor, some.config.refine.steps) == richer[-1]


def test_a_raise_never_passes_the_callers_own_settings():
    config = dataclasses.replace(ProtectConfig(), pool_factor=12,
                                 refine=dataclasses.replace(ProtectConfig().refine, steps=40))
    full = fit_plan(config, COSTS, N_ITEMS, None)
    plan = fit_plan(config, COSTS, N_ITEMS, full.total / 20)
    assert plan.later_ceiling == (12, 40) and plan.config.pool_factor < 12
    raised = refit_later_stages(plan, -1e9, N_ITEMS)   # all the time in the world
    assert (raised.config.pool_factor, raised.config.refine.steps) == (12, 40)
    unrefined = fit_plan(dataclasses.replace(config, refine=None), COSTS, N_ITEMS, full.total / 20)
    assert refit_later_stages(unrefined, -1e9, N_ITEMS).config.refine is None


CONFIG = ProtectConfig(n=8, pool_factor=12, replicas=1, validation_replicas=1, epoch_cap=2)   # negatives: 2 epochs (the test is the refit)


def test_protect_cuts_its_pool_when_the_references_run_long(owner, small, tmp_path, monkeypatch):
    full = fit_plan(CONFIG, COSTS, len(small), None)
    # references that take their whole estimate and more: the later stages no longer fit
    delay = full.estimate["references"] + 0.5 * later(full)
    recorded, meta, logged = _budgeted_run(owner, small, tmp_path, monkeypatch, full.total * 1.05, delay)
    assert recorded["refit"]["pool_factor"] == recorded["pool_factor"] < 12
    assert meta["selection"]["pool_size"] == recorded["pool_factor"] * 8 * 5
    assert any(line.startswith("plan: ") and "later stages cut to pool" in line for line in logged)


def test_protect_raises_its_pool_when_the_references_run_short(owner, small, tmp_path, monkeypatch):
    full = fit_plan(CONFIG, COSTS, len(small), None)
    budget = full.total - 0.5 * later(full)    # the plan cuts the pool to fit
    assert fit_plan(dataclasses.replace(CONFIG, budget=budget), COSTS, len(small), budget).config.pool_factor < 12
    # references that take none of their estimate: the caller's pool fits again
    recorded, meta, logged = _budgeted_run(owner, small, tmp_path, monkeypatch, budget, -full.estimate["references"])
    assert recorded["refit"]["direction"] == "raised" and recorded["pool_factor"] == 12
    assert meta["selection"]["pool_size"] == 12 * 8 * 5
    assert any(line.startswith("plan: ") and "later stages raised to pool 12 x n" in line for line in logged)


def _budgeted_run(owner, small, tmp_path, monkeypatch, budget: float, delay: float):
    """protect with CONFIG under `budget` on the made-up machine (COSTS), the clock moved
    `delay` seconds once the references are built: (the recorded plan, the fingerprints'
    meta, the lines it logged)."""
    stages = importlib.import_module("ipguard_fast.selection.stages")
    protect_module = importlib.import_module("ipguard_fast.selection.protect")
    monkeypatch.setattr(stages, "measure_unit_costs", lambda *args, **kwargs: COSTS)
    monkeypatch.setattr(time, "perf_counter",
                        _clock_ahead_after(protect_module.make_references, protect_module, monkeypatch, delay))
    logged = []
    result = run_protect(owner, small, dataclasses.replace(CONFIG, budget=budget), progress=False,
                         cache=CacheLocation(tmp_path), log=logged.append)
    return result.fingerprints.meta["protect"]["plan"], result.fingerprints.meta, logged


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
