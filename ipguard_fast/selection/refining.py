"""protect()'s last stages: the selection to keep (refined when it can be), its threshold,
and the fingerprint set that records both."""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import torch
from torch import nn

from ..fingerprints import FingerprintSet
from ..label_bias import copy_can_be_shown
from ..verdict_threshold import chance_rate
from .choice import threshold_between
from .config import ProtectConfig
from .refine import duplicate_rows, refined_pool
from .scores import ReferenceOutputs, separation_scores
from .select import describe_reference, selected_set
from .significance import significant_threshold
from .spread import MOST_ONE_LABEL, spread_top_n
from .stages import Choice, ReferenceSet, score_pool

__all__ = ["Calibration", "Selection", "calibrate_threshold", "fingerprint_set", "refine_selection",
           "unrefined_selection"]


@dataclass
class Selection:
    """The points protect keeps: `kept` indices into `points` (the pool, or the refined
    candidates), their scores, the references' outputs on `points`, what refinement did
    (`meta`, None when it was not asked for), and -- after refinement -- the validation
    references' rates on the kept points (`held`)."""

    points: FingerprintSet
    outputs: ReferenceOutputs
    kept: torch.Tensor
    scores: torch.Tensor
    meta: dict | None = None
    held: tuple[list[float], list[float]] | None = None
    pool_size: int | None = field(default=None)   # set when `points` are refined candidates of a larger pool


def unrefined_selection(points: FingerprintSet, outputs: ReferenceOutputs, choice: Choice) -> Selection:
    return Selection(points, outputs, choice.chosen.kept, choice.chosen.scores)


def refine_selection(owner: nn.Module, unrefined: Selection, refs: ReferenceSet, choice: Choice,
                     config: ProtectConfig, log=None) -> Selection:
    """Refine the chosen configuration's top factor * n candidates and keep the top n of them;
    the unrefined selection, with the reason in its meta, when refinement cannot be used."""
    say = log or (lambda message: None)
    settings, chosen, n = config.refine, choice.chosen, config.n
    # Modules with logits only: a module returning labels has NaN margins on the pool.
    has_logits = lambda i: bool(torch.isfinite(unrefined.outputs.margins[i]).any())  # noqa: E731
    rows = {role: [i for i in refs.rows(role, "select")
                   if isinstance(refs.references[i].model, nn.Module) and has_logits(i)]
            for role in ("positive", "negative")}
    modules = {role: [refs.references[i].model for i in rows[role]] for role in rows}
    if not (modules["positive"] and modules["negative"]):
        say("refine: skipped (it needs module references of both roles)")
        unrefined.meta = {"skipped": "refinement needs module references of both roles (gradients)"}
        return unrefined
    classes = unrefined.points.num_classes
    ranked = torch.nan_to_num(chosen.scores, nan=float("-inf"))
    top = spread_top_n(ranked, min(len(chosen.columns), settings.factor * n), unrefined.points.labels, classes,
                       config.label_share)
    say(f"refine: {len(top)} candidates, {settings.steps} steps against {len(modules['positive'])} + "
        f"{len(modules['negative'])} references")
    weight = chosen.negative_weight if settings.negative_weight is None else settings.negative_weight
    moved = refined_pool(owner, unrefined.points, top, modules["positive"], modules["negative"],
                         negative_weight=weight, config=settings,
                         positive_kinds=[refs.references[i].kind for i in rows["positive"]])
    outputs = score_pool(refs, moved, config.batch_size, progress=False)
    scores = separation_scores(outputs.rows(refs.rows("positive", "select")),
                               outputs.rows(refs.rows("negative", "select")), config.score, chosen.negative_weight)
    # The owner must still give label j, and two candidates never become one fingerprint.
    usable = (moved.margins > 0) & ~duplicate_rows(moved.images)
    if int(usable.sum()) < n:
        unrefined.meta = {"skipped": f"only {int(usable.sum())} of {len(top)} refined candidates kept the owner's "
                                     f"label; the unrefined selection is kept"}
        say(f"refine: skipped ({unrefined.meta['skipped']})")
        return unrefined
    scores[~usable] = float("-inf")
    kept = spread_top_n(scores, n, moved.labels, classes, config.label_share)
    meta = {**settings.as_meta(), "candidates": len(top), "pool_indices": top[kept].tolist()}
    validation = [refs.rows("positive", "validate"), refs.rows("negative", "validate")]
    held = None
    if validation[0] and validation[1]:   # the unrefined selection's held-out rates describe another set
        held = tuple(outputs.rows(v).columns(kept).rates().tolist() for v in validation)
        meta["threshold_rates"] = "validation references on the refined selection"
    else:
        meta["threshold_rates"] = "held-out rates of the unrefined selection (no validation references)"
    return Selection(moved, outputs, kept, scores, meta, held, pool_size=len(unrefined.points))


@dataclass
class Calibration:
    """The verdict threshold and where it came from: the level it adds the fingerprints'
    sampling noise to, the floor under that level, and the held-out rates the level was
    calibrated on."""

    threshold: float
    level: float
    floor: float
    positives: list[float]
    negatives: list[float]
    floor_source: str | None = None   # the held-out reference kind whose rate is the floor
    shown: bool = True                # False: not even n of n matches is unlikely at the level


def calibrate_threshold(selection: Selection, choice: Choice, significance: float | None,
                        refs: ReferenceSet | None = None) -> Calibration:
    """The verdict threshold, the level it adds the fingerprints' sampling noise to (the
    same when `significance` is None; significance.py), and the held-out rates the level
    comes from: the validation references' rates on a refined selection, else the chosen
    configuration's held-out rates; with the rates of the threshold's own negatives (split
    "threshold") on the kept points.

    The level is never below the floor: the highest rate of the chosen configuration's
    held-out negatives, each measured on a selection made without its kind (choice.py's
    leave one kind out). That is the closest protect comes to an independent recipe it
    never simulated, and innocents of such recipes keep about as much: on the three beds
    the held-out kinds kept 0.68-0.82 where the validation and threshold negatives, siblings
    of the kinds that refined the points, kept 0.16-0.54, and the innocents accused at the
    lower level kept 0.70-1.00 (benchmarks/results/threshold-unseen-kinds-2026-12-05). Nor is
    it below the chance rate, what a model that guesses keeps (verify calls a threshold at or
    below it inconclusive)."""
    positives, negatives = selection.held or (choice.chosen.held_out["positives"], choice.chosen.held_out["negatives"])
    extra = refs.rows("negative", "threshold") if refs is not None else []
    if extra:
        negatives = list(negatives) + selection.outputs.rows(extra).columns(selection.kept).rates().tolist()
    n = len(selection.kept)
    floor, source = _floor(choice.chosen.held_out)
    chance = chance_rate(selection.points)   # what a model that guesses keeps
    level = max(threshold_between(positives, negatives, n), floor, chance)
    if significance is None:   # the level itself, which shows nothing once a held-out independent kept every point
        shown = max([*negatives, floor, chance]) < 1.0
        if not shown:
            warnings.warn(f"protect: an independent model held out of the selection matched all {n} fingerprints, "
                          "so the level (threshold_significance=None) is no evidence of a copy: verify calls no "
                          "suspect a copy with this file's threshold, its verdicts are inconclusive", stacklevel=3)
        return Calibration(level, level, floor, positives, negatives, source,
                           shown and _labels_can_show_a_copy(selection))
    threshold, shown = significant_threshold(level, n, significance)
    if not shown:
        warnings.warn(f"protect: {n} fingerprints cannot show agreement above the calibrated level {level:.3f} "
                      f"(what independent models held out of the selection reach) at threshold_significance="
                      f"{significance}: verify calls no suspect a copy with this file's threshold, its verdicts are "
                      f"inconclusive (keep more fingerprints; independents trained like the owner share its points)",
                      stacklevel=3)
    return Calibration(threshold, level, floor, positives, negatives, source,
                       shown and _labels_can_show_a_copy(selection))


def _labels_can_show_a_copy(selection: Selection) -> bool:
    """Whether verify's label-bias test lets even an exact copy through on the kept points'
    labels (label_bias.copy_can_be_shown); warns when it does not, as verify would then call
    every suspect's matches explained by its label frequencies."""
    labels = selection.points.labels[torch.as_tensor(selection.kept, dtype=torch.long)]
    if copy_can_be_shown(labels):
        return True
    warnings.warn(f"protect: the {len(labels)} fingerprints carry {len(torch.unique(labels))} label(s), too few or too "
                  "crowded for even an exact copy's matches to be told from a model that ignores the points "
                  "(verify's label-bias test): verify calls no suspect a copy with this file, its verdicts are "
                  "inconclusive (keep more fingerprints, spread over more labels)", stacklevel=4)
    return False


def _floor(held_out: dict) -> tuple[float, str | None]:
    """The highest held-out negative rate and where it came from (0.0 and None without one)."""
    rates = held_out["negatives"]
    if not rates:
        return 0.0, None
    sources = held_out.get("negative_sources") or [None] * len(rates)
    top = max(range(len(rates)), key=rates.__getitem__)
    return rates[top], sources[top]


def fingerprint_set(selection: Selection, refs: ReferenceSet, choice: Choice, config: ProtectConfig,
                    calibration: Calibration) -> FingerprintSet:
    """The kept points with meta["selection"] (the references, their rates, the refinement),
    the threshold verify() uses, and whether verdicts at it can be conclusive
    (meta["threshold_shown"]: verdicts.conclusive_threshold)."""
    references = refs.references
    described = {role: [dict(describe_reference(r.name, r.model), split=r.split, kind=r.kind)
                        for r in references if r.role == role] for role in ("positive", "negative")}
    every = list(range(len(references)))
    rates = selection.outputs.rows(every).columns(selection.kept).rates().tolist()
    extra = {"negative_weight": choice.chosen.negative_weight, "label_share": config.label_share,
             "most_one_label": MOST_ONE_LABEL if config.label_share is None else None,
             "refined": selection.meta if config.refine is not None else None}
    if selection.pool_size is not None:
        extra.update(pool_size=selection.pool_size, pool_indices=selection.meta["pool_indices"])
    fps = selected_set(selection.points, selection.kept, selection.scores, score=config.score,
                       references={"positives": described["positive"], "negatives": described["negative"]},
                       rates={references[i].name: round(rate, 4) for i, rate in zip(every, rates)}, extra=extra)
    fps.meta["threshold"] = calibration.threshold
    fps.meta["threshold_shown"] = calibration.shown
    fps.meta["init"] = choice.chosen.init_meta
    return fps
