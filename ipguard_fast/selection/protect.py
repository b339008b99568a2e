"""protect(): the owner's whole job -- references, a pool, selection, refinement, a threshold --
as a short composition of the stages in stages.py and refining.py.

0. Plan (plan.py): unit costs measured on the owner, each stage's estimate, and under a
   budget the knobs that fit it.
1. References: copies of the owner and independent models (references.py), or the caller's.
2. Pool: IPGuard fingerprints from training images at each k of a grid scaled by the
   owner's margins (pool.py), pool_factor * n per k.
3. Every reference runs once on the pool (scores.py).
4. Each configuration (all k merged, or with the caller's list of k each alone too; each
   negative weight) selects n points, and its held-out ARUC picks one (choice.py).
5. Refinement (refine.py, default on): the chosen configuration's top candidates climb
   the separation against the selecting module references; the top n are kept.
6. Threshold: from the validation references' rates on the refined selection, or the
   held-out rates of the chosen selection, and the rates of the negatives that only set
   the threshold (independents trained to convergence, recipe.THRESHOLD_NEGATIVES).
7. With ProtectConfig.students, the student part (students.py): pool points that students
   of the owner's outputs keep and their twins and the owner-like negatives lose, with a
   threshold of its own; both thresholds then take half the significance.
"""
from __future__ import annotations

import contextlib
import inspect
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from torch import nn

from .._validate import ArgumentError, positive_int
from ..fingerprints import FingerprintSet
from ..modules import channels_last
from ..precision import chosen_precision
from ..search.distributed import communicator
from .cache import CacheLocation
from .config import ProtectConfig
from .inputs import checked_labels, checked_owner, checked_pixels, given_negatives, held_out_data, owner_shapes, training_data
from .pool import K_FACTORS, POOL_FACTOR
from .pool_cache import pool_store
from .references import Reference
from .refine import RefineConfig
from .refining import Calibration, calibrate_threshold, fingerprint_set, refine_selection, unrefined_selection
from .report import ProtectReport
from .significance import SIGNIFICANCE
from .students import student_part
from .plan import Plan, plan_lines
from .plan_refit import refit_later_stages
from .stages import agree_between_ranks, choose_configuration, make_plan, make_pool, make_references, score_pool

__all__ = ["ProtectResult", "plan_protect", "protect", "protect_parts", "run_protect"]


@dataclass
class ProtectResult:
    """protect()'s fingerprints (what is saved), its report (also in their meta["protect"])
    and the reference models (objects, never saved); with ProtectConfig.students, the
    student part (a second file, judged against its own threshold: students.py)."""

    fingerprints: FingerprintSet
    report: ProtectReport
    references: list[Reference] = field(repr=False)
    students: FingerprintSet | None = None


def protect(owner: nn.Module, train_data, n: int = 100, *, k="auto", pool_factor: int = POOL_FACTOR,
            references=None, score: str = "separation", replicas: int = 3, validation_replicas: int = 1,
            refine: bool | RefineConfig = True, init: str = "data", labels: str = "predicted", seed: int = 0,
            cache_dir=None, cache_key_file=None, cache_readonly: bool = False, batch_size: int = 256,
            progress: bool = True, log=None, extract_options: dict | None = None, train_recipe=None,
            negatives=None, budget: float | None = None, epoch_cap: int | None = None, held_out_data=None,
            threshold_significance: float | None = SIGNIFICANCE) -> FingerprintSet:
    """n fingerprints of `owner`, selected from a pool so that copies keep them and
    independent models do not, with a threshold calibrated on held-out references.

    The keywords are ProtectConfig's (config.py; `extract_options` is its `search`);
    run_protect takes the config itself and also returns the report and the reference
    models. negatives: independent models the caller already has (modules, model files,
    label-only callables), used beside the built ones: free negatives, by construction
    not copies. train_recipe: how the owner was trained (a TrainRecipe), when known: some
    negatives are then trained exactly so. train_data: the owner's training data, a
    Dataset of (image, label) or a DataLoader (its dataset is used); the references
    train on it and the pool starts from it. references: None (build them, see references.py, cached in `cache_dir`), or
    the caller's own as {"positives": [...], "negatives": [...]} of anything
    matching_rate accepts, at least two of each. cache_key_file: the key that
    authenticates the cache (default: the progress files' key, remote/keystore.py);
    cache_readonly: refuse a cached file that fails its checks instead of rebuilding it,
    and write nothing (cache.py). cache_dir also keeps the pool's finished parts and the
    running part's checkpoint, so that a rerun after an interruption resumes the pool
    (pool_cache.py). The result's meta["selection"] says what
    was selected from what, meta["protect"] holds the ProtectReport, meta["threshold"]
    is what verify() uses. budget: seconds this machine may spend (plan.py: fewer
    reference images, replicas, pool points and refinement steps until the estimate fits;
    None: the full recipe); the plan is printed through `log` and kept in meta["protect"]["plan"].
    epoch_cap: every independent reference trains at most this many epochs (None: the
    recipe's own), the same on any machine; a budget only ever lowers it.
    held_out_data: data the owner never trained on (a test split, a Dataset of (image,
    label)): the owner's mistakes on it join the pool, and the held-out references choose
    whether the selection takes them beside the boundary points (the mistakes baseline
    and IPGuard's points, one selection).
    """
    keywords = dict(k=k, pool_factor=pool_factor, references=references, score=score, replicas=replicas,
                    validation_replicas=validation_replicas, refine=refine, init=init, labels=labels, seed=seed,
                    cache_dir=cache_dir, cache_key_file=cache_key_file, cache_readonly=cache_readonly,
                    batch_size=batch_size, progress=progress, log=log, extract_options=extract_options,
                    train_recipe=train_recipe, negatives=negatives, budget=budget, epoch_cap=epoch_cap,
                    held_out_data=held_out_data, threshold_significance=threshold_significance)
    return _keyword_run(owner, train_data, n, 0, keywords).fingerprints


def protect_parts(owner: nn.Module, train_data, n: int = 100, *, students: int = 100,
                  **keywords: Any) -> dict[str, FingerprintSet]:
    """protect() with its student part (ProtectConfig.students, students.py), as
    verify_parts takes them: {"main": protect's n points, "students": the part's `students`
    points}; each file carries its own threshold, both at half the significance. keywords:
    protect's. The part needs protect's own references (the student pairs are built with
    them): `references=` is refused."""
    positive_int("students", students)
    if keywords.get("references") is not None:
        raise ArgumentError("references", "protect_parts builds its references (the student part needs its "
                                          "student pairs): give free negatives with negatives= instead")
    unknown = sorted(set(keywords) - set(inspect.signature(protect).parameters))
    if unknown:
        raise ArgumentError(unknown[0], "not a keyword of protect()")
    result = _keyword_run(owner, train_data, n, students, keywords)
    return {"main": result.fingerprints, "students": result.students}


# protect()'s keywords that are not ProtectConfig's fields: what run_protect takes beside the config.
_RUN_KEYWORDS = ("references", "negatives", "held_out_data", "cache_dir", "cache_key_file", "cache_readonly",
                 "progress", "log", "extract_options")


def _keyword_run(owner: nn.Module, train_data, n: int, students: int, keywords: dict[str, Any]) -> ProtectResult:
    """run_protect from protect()'s keywords: those of the run (_RUN_KEYWORDS), the rest ProtectConfig's fields."""
    checked_owner(owner)
    data = training_data(train_data)
    given = keywords.get
    config = ProtectConfig(n=n, students=students, search=dict(given("extract_options") or {}),
                           **{key: value for key, value in keywords.items() if key not in _RUN_KEYWORDS})
    cache = CacheLocation(given("cache_dir"), given("cache_key_file"), given("cache_readonly", False))
    return run_protect(owner, data, config, references=given("references"), negatives=given("negatives"),
                       held_out=given("held_out_data"), cache=cache, progress=given("progress", True),
                       log=given("log"))


def plan_protect(owner: nn.Module, train_data, config: ProtectConfig, *, references_given: bool = False) -> Plan:
    """The plan run_protect would follow (what `ipguard protect --dry-run` prints), from unit
    costs measured now on the owner; nothing else runs."""
    owner, data = checked_owner(owner), _pixels(training_data(train_data), config)
    shapes = owner_shapes(owner, data)
    checked_labels(data, shapes[1], "train_data")
    agree_between_ranks(owner, data, config)
    return make_plan(owner, data, config, shapes, built=not references_given)


def run_protect(owner: nn.Module, train_data, config: ProtectConfig, *, references=None, negatives=None,
                held_out=None, cache: CacheLocation | None = None, progress: bool = True,
                log: Callable[[str], None] | None = None) -> ProtectResult:
    """protect() with its settings in one ProtectConfig; the stages in order, as planned
    for config.budget (the plan's knobs replace the config's). held_out: protect's
    held_out_data; cache: where the references and the pool's parts are kept (None: in memory only)."""
    say = log or (lambda message: None)
    owner, data = checked_owner(owner), _pixels(training_data(train_data), config)
    shapes = owner_shapes(owner, data)
    checked_labels(data, shapes[1], "train_data")
    timings: dict[str, float] = {}

    def timed(stage: str, call: Callable[[], Any]) -> Any:
        start = time.perf_counter()
        result = call()
        timings[stage] = time.perf_counter() - start
        return result

    extra = given_negatives(negatives) if negatives is not None else []   # checked before any training
    held_out = (checked_labels(held_out_data(held_out, shapes[0], *_box(config)), shapes[1], "held_out_data")
                if held_out is not None else None)
    agree_between_ranks(owner, data, config, held_out=held_out, negatives=extra)
    plan = timed("plan", lambda: make_plan(owner, data, config, shapes, built=references is None))
    for line in plan_lines(plan):
        say(line)
    config = plan.config
    build = lambda: make_references(owner, data, config, shapes, given=references, cache=cache,  # noqa: E731
                                    progress=progress, log=log)
    refs = timed("references", lambda: _at_precision(plan, build))
    refs.references += extra
    if refs.built_here:
        yours = sum(r.kind.startswith("given-negative/") for r in refs.references)
        built = sum(not r.cached for r in refs.references) - yours
        cached = len(refs.references) - built - yours
        say(f"references: {len(refs.references)} ({built} built, {cached} from the cache"
            + (f", {yours} of yours" if yours else "") + f") in {timings['references']:.1f} s")
    plan = _refit(plan, timings, len(data), built=references is None, say=say)
    config = plan.config
    store = pool_store(owner, data, config, cache, refs.cache_key)   # None without a cache folder
    pool = timed("pool", lambda: make_pool(owner, data, config, shapes[0], held_out=held_out, progress=progress,
                                           log=say, store=store))
    with _layout(plan, owner, refs):
        outputs = timed("reference_outputs", lambda: score_pool(refs, pool.points, config.batch_size, progress))
    choice = timed("choice", lambda: choose_configuration(pool, refs, outputs, config))
    say(f"chosen {choice.chosen.name}: held-out ARUC {choice.chosen.validation['aruc']:.3f}")
    selection = unrefined_selection(pool.points, outputs, choice)
    if config.refine is not None:
        with _layout(plan, owner, refs):
            selection = timed("refine", lambda: refine_selection(owner, selection, refs, choice, config, log=say))
    significance = _part_significance(config, refs)
    calibration = calibrate_threshold(selection, choice, significance, refs)
    floor = (f"the {calibration.floor:.3f} that {calibration.floor_source} kept" if calibration.floor_source
             else f"{calibration.floor:.3f}")
    say(f"threshold {calibration.threshold:.3f} (level {calibration.level:.3f}, at least {floor}; "
        f"significance {significance})"
        + ("" if calibration.shown else ": no suspect can be shown to be a copy at it, verdicts are inconclusive"))
    fps = fingerprint_set(selection, refs, choice, config, calibration)
    part = timed("students", lambda: _student_part(pool, outputs, refs, config, significance, say))
    report = _report(config, pool, refs, choice, calibration, timings, plan, significance)
    fps.meta["protect"] = report.to_meta()
    if part is not None:
        fps.meta["student_part"] = {"points": len(part.fingerprints), "threshold": part.threshold}
    return ProtectResult(fps, report, refs.references, part.fingerprints if part is not None else None)


def _student_part(pool, outputs, refs, config: ProtectConfig, significance: float | None, say):
    """The student part (students.py) when config.students asks for one, said in the log."""
    part = student_part(pool.points, outputs, refs, config, significance) if config.students else None
    if part is not None:
        source = (f"the {part.floor:.3f} that {part.floor_kind} kept, held out of the choice"
                  if part.floor_kind and part.floor >= part.level else "the most an innocent reference kept")
        say(f"student part: {len(part.fingerprints)} points, threshold {part.threshold:.3f} (level "
            f"{part.level:.3f}, {source})")
    elif config.students:
        say("student part: none (the references hold no student pairs)")
    return part


def _part_significance(config: ProtectConfig, refs) -> float | None:
    """Each part's share of the significance: all of it for one part, half of it each when
    a student part is made beside the main one (a suspect is a copy when either shows it)."""
    two = config.students and refs.rows("student", "select") and refs.rows("twin", "select")
    significance = config.threshold_significance
    return significance / 2 if two and significance is not None else significance


def _box(config: ProtectConfig) -> tuple[float, float]:
    """The pixel box the pool searches in (extract_options' lo and hi)."""
    return float(config.search.get("lo", 0.0)), float(config.search.get("hi", 1.0))


def _pixels(data, config: ProtectConfig):
    return checked_pixels(data, "train_data", *_box(config))


def _refit(plan: Plan, timings: dict, n_items: int, *, built: bool, say: Callable[[str], None]) -> Plan:
    """The plan with its later stages refitted to the budget's time left (plan_refit.py),
    from rank 0's clock under torchrun, so that every rank moves them alike (without a budget
    there is nothing to refit, and the ranks exchange nothing)."""
    if plan.budget is None:
        return plan
    elapsed = communicator().exchange(timings["plan"] + timings["references"])[0]
    refit = refit_later_stages(plan, elapsed, n_items, built=built)
    if refit is not plan:
        say(f"plan: {elapsed:.0f} s spent, {refit.refit['seconds_left']:.0f} s of the budget left: later stages "
            f"{refit.refit['direction']} to pool {refit.refit['pool_factor']} x n per k, refinement "
            f"{refit.refit['refine_steps']} steps")
    return refit


def _layout(plan: Plan, owner: nn.Module, refs) -> contextlib.AbstractContextManager:
    """The owner's and the references' conv weights channels_last while they score and refine
    when the pool searched so (the plan's measured choice, or the caller's search option);
    every tensor put back afterwards."""
    return channels_last([owner, *(r.model for r in refs.references)], plan.config.search.get("channels_last", False))


def _at_precision(plan: Plan, call: Callable[[], Any]) -> Any:
    """`call` with the references training at the precision the plan measured faster."""
    with chosen_precision(plan.costs.precision):
        return call()


def _report(config: ProtectConfig, pool, refs, choice, calibration: Calibration, timings: dict,
            plan: Plan, significance: float | None) -> ProtectReport:
    chosen, held = choice.chosen, (calibration.positives, calibration.negatives)
    return ProtectReport(
        k=config.k if config.k == "auto" else pool.ks, k_grid=pool.ks,
        k_factors=list(K_FACTORS) if pool.median_margin else None, median_margin=pool.median_margin,
        init=config.init, init_chosen=chosen.init, labels=config.labels, pool_factor=config.pool_factor,
        seed=config.seed, chosen=chosen.name, negative_weight=chosen.negative_weight,
        candidates=[{"name": c.name, **c.validation} for c in choice.candidates], threshold=calibration.threshold,
        threshold_level=calibration.level, threshold_floor=calibration.floor,
        threshold_floor_source=calibration.floor_source,
        threshold_significance=significance,
        held_out_rates={"positives": [round(r, 4) for r in held[0]], "negatives": [round(r, 4) for r in held[1]]},
        references_built=refs.built_here, reference_cache_key=refs.cache_key,
        reference_seconds={r.name: round(r.seconds, 3) for r in refs.references},
        timings={name: round(value, 3) for name, value in timings.items()}, plan=plan.to_meta(),
        pool_mistakes=pool.mistakes)
