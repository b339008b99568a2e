"""protect()'s plan: the estimate, the budget ladder, the knobs it sets, the reference subset,
the CLI's --budget and --dry-run, and the plan recorded in the file. Tiny settings."""
import copy
import dataclasses
import pytest
import torch
from safetensors.torch import save_file

from ipguard_fast.cli import main
from ipguard_fast.nn import seeded
from ipguard_fast.selection import CacheLocation, ProtectConfig, plan_protect, run_protect
from ipguard_fast.selection.cache_key import reference_cache_key
from ipguard_fast.selection.plan import (LADDER, WORST_CASE, apply_knobs, estimate_stages, fit_plan, parse_duration,
                                         plan_lines)
from ipguard_fast.selection.recipe import RECIPE, negative_epoch_cap
from ipguard_fast.selection.plan_costs import UnitCosts
from ipguard_fast.selection.references import _at_most

# Unit costs of a made-up machine: enough to check the arithmetic, independent of this one's speed.
COSTS = UnitCosts(owner_train=1e-3, generic_train=2e-4, owner_forward=2e-4, generic_forward=5e-5,
                  owner_input_grad=5e-4, generic_input_grad=1e-4, pool_point=2e-2, device="test")


def test_no_budget_keeps_the_full_recipe_and_estimates_every_stage():
    config = ProtectConfig()
    plan = fit_plan(config, COSTS, 60000, None)
    assert plan.config == config and plan.rung == 0 and plan.budget is None
    assert set(plan.estimate) == {"references", "pool", "reference_outputs", "refine"}
    assert all(seconds > 0 for seconds in plan.estimate.values())
    # the pool: 30 x 100 points at each of the 5 k of the automatic grid
    assert plan.estimate["pool"] == pytest.approx(30 * 100 * 5 * COSTS.pool_point)
    assert "refine" not in fit_plan(ProtectConfig(refine=False), COSTS, 60000, None).estimate


def test_the_owners_own_recipe_survives_the_plan_and_every_rung():
    """The plan rebuilds the config (dataclasses.replace); the owner's recipe was applied to its
    own result again, and protect refused every train_recipe ('recipe: has repeated kinds').
    The config now keeps the caller's recipe and derives effective_recipe from it."""
    from ipguard_fast.train import TrainRecipe

    config = ProtectConfig(train_recipe=TrainRecipe(epochs=12, optimizer="sgd", lr=0.03, augment=True))
    kinds = [k.kind for k in config.effective_recipe]
    assert len(kinds) == len(set(kinds)) and "independent-owner-owner-recipe" in kinds
    assert dataclasses.replace(config, n=7).effective_recipe == config.effective_recipe
    for budget, rung in ((None, 0), (800.0, 6), (400.0, 9)):   # rungs 6 and 9 cap the negatives' epochs
        plan = fit_plan(config, COSTS, 1437, budget)
        assert plan.rung == rung and plan.config.train_recipe == config.train_recipe
        assert {k.kind for k in plan.config.effective_recipe} == set(kinds) and plan.config.recipe == RECIPE
    # the config keeps the caller's recipe: another owner recipe is derived afresh from it
    other = dataclasses.replace(config, train_recipe=TrainRecipe(epochs=5))
    assert other.effective_recipe == ProtectConfig(train_recipe=TrainRecipe(epochs=5)).effective_recipe
    with pytest.raises(ValueError, match="^train_recipe: the recipe already holds owner-recipe negatives"):
        ProtectConfig(recipe=config.effective_recipe, train_recipe=TrainRecipe(epochs=5))


def test_the_refinement_estimate_counts_only_the_drawn_share_of_the_references():
    from ipguard_fast.selection.refine import RefineConfig
    full = fit_plan(ProtectConfig(), COSTS, 60000, None).estimate["refine"]
    half = fit_plan(ProtectConfig(refine=RefineConfig(reference_fraction=0.5)), COSTS, 60000, None).estimate["refine"]
    owner_only = 3 * 100 * 50 * COSTS.owner_input_grad   # the owner takes part at every step
    assert half == pytest.approx(owner_only + (full - owner_only) / 2)


def test_the_pool_searches_in_the_layout_the_costs_chose_unless_the_caller_chose_one():
    fast = dataclasses.replace(COSTS, channels_last=True)
    assert fit_plan(ProtectConfig(), fast, 1000, None).config.search == {"channels_last": True}
    assert fit_plan(ProtectConfig(), COSTS, 1000, None).config.search == {}
    mine = ProtectConfig(search={"channels_last": False})
    assert fit_plan(mine, fast, 1000, None).config.search == {"channels_last": False}
    assert fit_plan(ProtectConfig(), fast, 1000, 3600.0).config.search == {"channels_last": True}
    assert "channels_last" in plan_lines(fit_plan(ProtectConfig(), fast, 1000, None))[-1]
    assert "channels_last" not in plan_lines(fit_plan(mine, fast, 1000, None))[-1]   # what runs, not what was timed


def test_the_plan_prints_the_precision_the_environment_forces(monkeypatch):
    costs = dataclasses.replace(COSTS, precision="fp32-cl")
    monkeypatch.delenv("IPGUARD_FAST_TRAIN_PRECISION", raising=False)
    assert "references train at fp32-cl" in plan_lines(fit_plan(ProtectConfig(), costs, 1000, None))[-1]
    monkeypatch.setenv("IPGUARD_FAST_TRAIN_PRECISION", "fp32")
    assert "references train at fp32)" in plan_lines(fit_plan(ProtectConfig(), costs, 1000, None))[-1]


def test_estimates_scale_with_the_work():
    full = estimate_stages(ProtectConfig(), COSTS, 60000)
    # reference training is linear in the images it trains on, but for the parts that are
    # not (a converged negative checks its loss on at most FIT_SAMPLE items, the held-out
    # split that matched negatives measure is capped)
    half = estimate_stages(ProtectConfig(), COSTS, 30000)
    assert half["references"] == pytest.approx(full["references"] / 2, rel=0.04)
    assert half["references"] < full["references"] / 2
    assert half["pool"] == full["pool"]
    # twice as slow a machine, twice the estimate; two ranks, half of it
    slow = dataclasses.replace(COSTS, **{f.name: 2 * getattr(COSTS, f.name) for f in dataclasses.fields(COSTS)
                                         if f.name not in ("device", "precision", "amp")})
    assert estimate_stages(ProtectConfig(), slow, 60000) == pytest.approx({k: 2 * v for k, v in full.items()})
    assert estimate_stages(ProtectConfig(), COSTS, 60000, world=2) == pytest.approx(
        {k: v / 2 for k, v in full.items()})
    # given references: nothing to train
    assert estimate_stages(ProtectConfig(), COSTS, 60000, built=False)["references"] == 0


def test_each_rung_of_the_ladder_is_cheaper_and_the_budget_picks_the_first_that_fits():
    totals = []
    for rung in range(len(LADDER)):
        plan = fit_plan(ProtectConfig(), COSTS, 60000, None)
        knobs = {}
        for cut in LADDER[:rung + 1]:
            knobs.update(cut)
        totals.append(sum(estimate_stages(apply_knobs(plan.config, knobs, 60000), COSTS, 60000).values()))
    assert all(later < earlier for earlier, later in zip(totals, totals[1:])), totals
    for rung in (0, 3, len(LADDER) - 1):
        plan = fit_plan(ProtectConfig(), COSTS, 60000, totals[rung] * 1.001)
        assert plan.rung == rung and plan.total <= plan.budget
    cheapest = fit_plan(ProtectConfig(), COSTS, 60000, totals[-1] * 1.001).config
    assert cheapest.replicas == 1 and cheapest.pool_factor == 5 and cheapest.reference_images == 2000
    assert cheapest.refine.steps == 20 and negative_epoch_cap(cheapest.effective_recipe) == 10
    weak = fit_plan(ProtectConfig(), COSTS, 60000, totals[-1] * 1.001)
    assert weak.weakened and weak.to_meta()["weakened_negatives"] and plan_lines(weak)[-1].startswith("warning: ")
    # 5,000 images: rungs 1-3 cut no images, only the pool and the replicas; the negatives
    # are weakened only where the worst case lowers the matched ones' cap
    knobs = {k: v for cut in LADDER[:4] for k, v in cut.items()}
    rung3 = sum(estimate_stages(apply_knobs(ProtectConfig(), knobs, 5000), COSTS, 5000).values())
    cut = fit_plan(ProtectConfig(), COSTS, 5000, rung3 * 1.001)
    cut_recipe = cut.config.effective_recipe
    assert cut.rung == 3 and cut.config.reference_images is None and negative_epoch_cap(cut_recipe) == 60
    assert not cut.weakened and cut.matched_cut == (negative_epoch_cap(cut_recipe, matched_only=True) < 60)
    assert cut.to_meta()["weakened_negatives"] == cut.matched_cut
    assert plan_lines(cut)[-1].startswith("note: ") == cut.matched_cut
    roomy = fit_plan(ProtectConfig(), COSTS, 5000, fit_plan(ProtectConfig(), COSTS, 5000, None).worst / WORST_CASE)
    assert roomy.rung == 0 and roomy.config == dataclasses.replace(ProtectConfig(), budget=roomy.budget)
    assert not roomy.weakened and not roomy.matched_cut and not plan_lines(roomy)[-1].startswith(("warning", "note"))
    assert negative_epoch_cap(ProtectConfig().effective_recipe) == 60


def test_an_epoch_cap_keeps_every_negative_and_its_snapshots_within_it():
    config = apply_knobs(ProtectConfig(), {"epoch_cap": 10}, 60000)
    before = [k for k in ProtectConfig().effective_recipe if k.attack == "independent"]
    after = [k for k in config.effective_recipe if k.attack == "independent"]
    assert [k.kind for k in after] == [k.kind for k in before]
    for old, new in zip(before, after):
        assert max(new.settings.epoch_list()) == 10 and len(new.settings.labels()) == len(old.settings.labels())
    positives = [k for k in config.effective_recipe if k.role == "positive"]
    assert positives == [k for k in ProtectConfig().effective_recipe if k.role == "positive"]


def _matched_cap(plan):
    return negative_epoch_cap(plan.config.effective_recipe, matched_only=True)


@pytest.mark.parametrize("images", [1500, 60000])
def test_the_budget_bounds_the_worst_case_by_lowering_the_matched_negatives_cap(images):
    full = fit_plan(ProtectConfig(), COSTS, images, None)
    # every negative with a stopping rule run to its cap costs more than the expectation
    assert full.worst > 1.2 * full.total
    worst = lambda config: sum(estimate_stages(config, COSTS, images, worst=True).values())  # noqa: E731
    knobs = {k: v for cut in LADDER for k, v in cut.items()}
    cheapest = sum(estimate_stages(apply_knobs(ProtectConfig(), knobs, images), COSTS, images).values())
    for share in (1.0, 0.6, 0.3, 0.1):
        if share * full.total < cheapest * 1.01:
            continue
        plan = fit_plan(ProtectConfig(), COSTS, images, share * full.total)
        assert plan.total <= plan.budget and plan.worst <= WORST_CASE * plan.budget
        assert plan.worst == pytest.approx(worst(plan.config))
        assert _matched_cap(plan) >= 10
        if _matched_cap(plan) < negative_epoch_cap(plan.config.effective_recipe):
            assert plan.weakened or plan.matched_cut
            assert "for those that stop on matching the owner" in plan_lines(plan)[0]
            assert plan_lines(plan)[-1].startswith("warning: " if plan.weakened else "note: ")
            # the most epochs that fit: one more would not
            looser = dataclasses.replace(plan.config, matched_epoch_cap=_matched_cap(plan) + 1)
            assert worst(looser) > WORST_CASE * plan.budget
    at_full = fit_plan(ProtectConfig(), COSTS, images, full.total * 1.001)
    assert at_full.rung == 0 and _matched_cap(at_full) < 60 and at_full.matched_cut and not at_full.weakened
    # only the negatives that stop on matching the owner lose epochs: the converged ones keep theirs
    converged = [max(k.settings.epoch_list()) for k in at_full.config.effective_recipe
                 if k.attack == "independent" and k.settings.until_converged]
    assert converged and set(converged) == {60}
    meta = at_full.to_meta()
    assert meta["matched_epoch_cap"] == _matched_cap(at_full) and meta["worst_case_seconds"] > meta[
        "estimated_total_seconds"]


def test_the_plan_never_raises_a_knob_the_caller_lowered():
    config = ProtectConfig(replicas=1, pool_factor=5, refine=False)
    budget = 1e-9 + fit_plan(config, COSTS, 500, None).worst / WORST_CASE   # the worst case fits too
    plan = fit_plan(config, COSTS, 500, budget)
    assert plan.config == dataclasses.replace(config, budget=budget)
    # data smaller than every subset rung: all of it
    tight = fit_plan(ProtectConfig(), COSTS, 500, 1.0e6)
    assert tight.config.reference_images is None


@pytest.mark.parametrize("budget", [0, -5, float("nan"), float("inf"), "10m", True])
def test_a_bad_budget_names_it(budget):
    with pytest.raises(ValueError, match="^budget: "):
        ProtectConfig(budget=budget)
    if not isinstance(budget, (str, bool)):
        with pytest.raises(ValueError, match="^budget: "):
            fit_plan(ProtectConfig(), COSTS, 1000, budget)


def test_a_budget_below_the_cheapest_plan_says_what_it_needs():
    with pytest.raises(ValueError, match="^budget: 1 s is less than the cheapest plan's estimate"):
        fit_plan(ProtectConfig(), COSTS, 60000, 1.0)


@pytest.mark.parametrize("text, seconds", [("90", 90), ("90s", 90), ("30m", 1800), ("1.5h", 5400), (" 2H ", 7200)])
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "m", "abc", "-3m", "0", "nan", "inf", "1e999h", "30 min"])
def test_bad_durations_name_the_option(text):
    with pytest.raises(ValueError, match="^--budget: "):
        parse_duration(text, "--budget")


def test_reference_images_take_a_seeded_subset_and_key_the_cache(owner, small):
    part = _at_most(small, 50, 7)
    assert len(part) == 50 and torch.equal(part.tensors[0], _at_most(small, 50, 7).tensors[0])
    assert _at_most(small, 500, 7) is small and _at_most(small, None, 7) is small
    keys = {reference_cache_key(owner, small, ProtectConfig(reference_images=r)) for r in (None, 50, 80)}
    keys.add(reference_cache_key(owner, small, apply_knobs(ProtectConfig(), {"epoch_cap": 10}, len(small))))
    assert len(keys) == 4
    with pytest.raises(ValueError, match="^reference_images: "):
        ProtectConfig(reference_images=0)


def test_plan_protect_measures_without_changing_the_owner(owner, small):
    before = copy.deepcopy(owner.state_dict())
    flags = [p.requires_grad for p in owner.parameters()]
    layout = [(p.data_ptr(), p.stride()) for p in owner.parameters()]
    owner.train()
    plan = plan_protect(owner, small, ProtectConfig(n=8, pool_factor=2, replicas=1))
    assert owner.training and [p.requires_grad for p in owner.parameters()] == flags
    assert [(p.data_ptr(), p.stride()) for p in owner.parameters()] == layout   # timed channels_last, none left
    owner.eval()
    assert all(torch.equal(before[k], v) for k, v in owner.state_dict().items())
    costs = plan.costs
    assert all(getattr(costs, f.name) > 0 for f in dataclasses.fields(costs)
               if f.name not in ("device", "precision", "channels_last", "amp"))
    assert costs.precision == ("fp32-cl" if costs.channels_last else "fp32")   # the layout the pool runs in; bf16 when asked
    assert costs.amp is None and "amp" not in plan.config.search   # float32 unless asked (test_bf16_cpu.py)
    assert plan.config.search.get("channels_last", False) == costs.channels_last
    lines = plan_lines(plan)
    assert lines[0].startswith("plan (full recipe): replicas 1 + 1 validation") and lines[-1].lstrip().startswith("total")


@pytest.mark.parametrize("speed", [0.5, 2.0])
def test_the_layout_and_precision_do_not_depend_on_timing(owner, small, monkeypatch, speed):
    """They change the float rounding, so the fingerprints: two runs on one machine must take
    the same (a timed choice flipped in CI on an owner whose two layouts cost the same)."""
    import ipguard_fast.selection.plan_costs as plan_costs
    timed = plan_costs._per_image

    def skewed(call, count, device):   # what runs with channels_last conv weights takes `speed` times as long
        laid_out = any(not p.is_contiguous() for p in owner.parameters() if p.dim() == 4)
        return timed(call, count, device) * (speed if laid_out else 1.0)

    monkeypatch.setattr(plan_costs, "_per_image", skewed)
    costs = plan_protect(owner, small, ProtectConfig(n=8, pool_factor=2, replicas=1)).costs
    assert costs.channels_last is True and costs.precision == "fp32-cl"   # a conv owner on CPU: oneDNN's layout
    given = plan_protect(owner, small, ProtectConfig(n=8, pool_factor=2, replicas=1, search={"channels_last": False}))
    assert given.costs.channels_last is False and given.costs.precision == "fp32"


class _FlattensByView(torch.nn.Module):
    """A conv owner whose code cannot take channels_last tensors (it views a conv output)."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 4, 3, padding=1)
        self.fc = torch.nn.Linear(4 * 8 * 8, 10)

    def forward(self, x):
        out = self.conv(x)
        return self.fc(out.view(out.size(0), -1))


def test_an_owner_that_cannot_train_channels_last_keeps_its_references_at_float32(small):
    import ipguard_fast.selection.plan_costs as plan_costs

    owner = _FlattensByView()
    x, y = small.tensors[0][:8], small.tensors[1][:8]
    before = [p.stride() for p in owner.parameters()]
    precision, seconds = plan_costs._reference_precision(owner, x, y, torch.device("cpu"), True)
    assert precision == "fp32" and seconds > 0 and [p.stride() for p in owner.parameters()] == before
    costs = plan_protect(owner, small, ProtectConfig(n=8, pool_factor=2, replicas=1)).costs
    assert costs.channels_last is False and costs.precision == "fp32"   # it cannot search in that layout either


def test_protect_under_a_budget_follows_and_records_its_plan(owner, small, tmp_path, monkeypatch):
    # This machine's speed made fixed (COSTS), so the budget falls between two known rungs.
    import ipguard_fast.selection.stages as stages
    monkeypatch.setattr(stages, "measure_unit_costs", lambda *args, **kwargs: COSTS)
    config = ProtectConfig(n=8, pool_factor=4, replicas=2, validation_replicas=1)
    full = fit_plan(config, COSTS, len(small), None)
    one = dataclasses.replace(config, replicas=1)
    budget = (full.total + fit_plan(one, COSTS, len(small), None).total) / 2   # below the full plan
    expected = fit_plan(config, COSTS, len(small), budget)
    assert expected.rung > 0
    result = run_protect(owner, small, dataclasses.replace(config, budget=budget), progress=False,
                         cache=CacheLocation(tmp_path))
    plan = result.fingerprints.meta["protect"]["plan"]
    # the same plan, beside the seconds its measuring took (counted against the budget)
    estimated = plan.pop("estimated_seconds")
    spent = estimated.pop("plan")
    assert spent > 0 and plan.pop("estimated_total_seconds") <= budget
    want = fit_plan(config, COSTS, len(small), budget, spent=spent).to_meta()
    want["estimated_seconds"].pop("plan")
    worst = plan.pop("worst_case_seconds")   # counts the measuring's seconds, which the meta rounds
    assert worst <= WORST_CASE * budget and worst == pytest.approx(want.pop("worst_case_seconds"), abs=0.03)
    # The references take this machine's real time, not COSTS': the later stages may have
    # been moved to the time they left (test_plan_refit.py), and the record says so.
    refit, planned = plan.pop("refit", None), want.pop("estimated_seconds")
    if refit is not None:
        assert (plan["pool_factor"], plan["refine_steps"]) == (refit["pool_factor"], refit["refine_steps"])
        for key in ("pool_factor", "refine_steps"):
            want[key] = plan[key]
    assert estimated["references"] == planned["references"]
    assert estimated == planned or refit is not None
    assert plan == {k: v for k, v in want.items() if k != "estimated_total_seconds"}
    assert plan["budget_seconds"] == budget
    assert plan["unit_costs"]["device"] == "test"
    assert sum(r.split == "select" and r.kind == "FTAL" for r in result.references) == plan["replicas"]
    capped = [r for r in result.references if r.kind == "independent-owner-adam-converged"]
    assert [r.name for r in capped] == [f"protect/independent-owner-adam-converged-e{plan['negative_epoch_cap']}/r"
                                        f"{plan['replicas']}"]
    assert sum(r.split == "validate" and r.kind == "FTAL" for r in result.references) == 1
    assert "plan" in result.report.timings


def test_cli_dry_run_prints_the_plan_and_writes_nothing(owner, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    save_file(owner.state_dict(), tmp_path / "owner.safetensors")
    out = tmp_path / "fps.safetensors"
    args = ["protect", "--model", "ipguard_fast.models:DigitsCNN", "--weights", "owner.safetensors", "--data", "digits", "-n", "8", "--pool-factor", "2", "--replicas", "1",
            "--dry-run", "--out", str(out)]
    assert main(args + ["--budget", "10h"]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("plan (budget 10.0 h: rung 0 of"), printed
    assert "references" in printed and "total" in printed and not out.exists()
    assert not (tmp_path / "ipguard-references").exists()
    assert main(args + ["--budget", "soon"]) == 2
    assert "--budget: expected seconds or a duration" in capsys.readouterr().err
    # --epoch-cap sets the negatives' cap on any machine; a budget only lowers it
    assert main(args + ["--epoch-cap", "7", "--budget", "10h"]) == 0
    assert "negatives at most 7 epochs" in capsys.readouterr().out
    assert main(args + ["--epoch-cap", "0"]) == 2
    assert "--epoch-cap" in capsys.readouterr().err


def test_a_rung_that_cuts_images_uses_the_budget_it_has():
    full = fit_plan(ProtectConfig(), COSTS, 60000, None).total
    first = sum(estimate_stages(apply_knobs(ProtectConfig(), LADDER[1], 60000), COSTS, 60000).values())
    budget = (full + first) / 2
    plan = fit_plan(ProtectConfig(), COSTS, 60000, budget)
    assert plan.rung == 1 and 10000 < plan.config.reference_images < 60000
    assert 0.97 * budget <= plan.total <= budget


def test_negatives_given_as_factory_and_weights(tmp_path):
    from ipguard_fast.cli.common import load_negative_models
    from ipguard_fast.models import DigitsMLP

    model = seeded(DigitsMLP, 3)
    save_file(model.state_dict(), tmp_path / "mlp.safetensors")
    (spec, loaded), = load_negative_models([f"ipguard_fast.models:DigitsMLP={tmp_path / 'mlp.safetensors'}"])
    assert spec.startswith("ipguard_fast.models:DigitsMLP=")
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), model.state_dict().values()))
    for bad, needle in ((f"ipguard_fast.models:DigitsMLP={tmp_path / 'none.safetensors'}", "not found"),
                        ("ipguard_fast.models:DigitsMLP=", "needs its weights"),
                        (f"ipguard_fast.models:DigitsCNN={tmp_path / 'mlp.safetensors'}", "")):
        with pytest.raises(ValueError, match="^--negatives: ") as info:
            load_negative_models([bad])
        assert needle in str(info.value)


class _Constant(torch.nn.Module):
    """An owner no search can move: its logits do not depend on the input."""

    def __init__(self):
        super().__init__()
        self.bias = torch.nn.Parameter(torch.linspace(0.0, 1.0, 10))

    def forward(self, x):
        return self.bias.expand(len(x), -1) + 0.0 * x.flatten(1).sum(1, keepdim=True)


def test_the_pilot_tries_a_bounded_number_of_candidates_on_an_owner_no_search_moves(small, monkeypatch):
    import ipguard_fast.selection.plan_costs as plan_costs

    tried = []
    real = plan_costs.extract_fingerprints

    def counted(*args, **kwargs):
        found = real(*args, **kwargs)
        tried.append((kwargs["max_candidates"], found.meta["candidates_tried"], len(found)))
        return found

    monkeypatch.setattr(plan_costs, "extract_fingerprints", counted)
    seconds = plan_costs._pilot_seconds(_Constant(), small.tensors[0][:16], (1, 8, 8), 1.0, {"max_steps": 3}, 0)
    points = plan_costs._PILOT_POINTS
    assert tried[-1] == (plan_costs._PILOT_TRIES * points, plan_costs._PILOT_TRIES * points, 0)   # none found
    assert seconds > 0


def test_the_pilot_asks_for_fewer_points_when_a_budget_leaves_it_little_time(owner, small, monkeypatch):
    # A large owner under a small budget was refused only after minutes of pilot (a MobileNet
    # at 32x32: 244 s for a budget of 90 s): with a limit, the warm-up's rate sets the count.
    import ipguard_fast.selection.plan_costs as plan_costs

    asked = []
    real = plan_costs.extract_fingerprints

    def counted(model, count, **kwargs):
        asked.append(count)
        return real(model, count, **kwargs)

    monkeypatch.setattr(plan_costs, "extract_fingerprints", counted)
    images = small.tensors[0][:16]
    for limit, expected in ((None, plan_costs._PILOT_POINTS), (1e9, plan_costs._PILOT_POINTS),
                            (1e-9, plan_costs._PILOT_MIN_POINTS)):
        asked.clear()
        assert plan_costs._pilot_seconds(owner, images, (1, 8, 8), 1.0, {"max_steps": 50}, 0, limit) > 0
        assert asked == [1, expected]


def test_protect_runs_with_the_owners_own_recipe(owner, small):
    """End to end through the plan, which rebuilds the config: an owner's recipe made every
    protect() refuse ('recipe: has repeated kinds') before any work."""
    from ipguard_fast.attacks import prune_model
    from ipguard_fast.models import DigitsMLP
    from ipguard_fast.train import TrainRecipe, train_classifier

    given = {"positives": [prune_model(copy.deepcopy(owner), p) for p in (0.3, 0.5)],
             "negatives": [train_classifier(seeded(DigitsMLP, s), small, epochs=2, seed=s) for s in (7, 8)]}
    recipe = TrainRecipe(epochs=2, optimizer="sgd", lr=0.03)
    result = run_protect(owner, small, ProtectConfig(n=4, k=[1.0], pool_factor=2, refine=False, train_recipe=recipe),
                         references=given, progress=False)
    assert len(result.fingerprints) == 4
