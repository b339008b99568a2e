"""protect()'s student part: a second fingerprint set, with a threshold of its own, that
students of the owner's outputs keep and models of the same data do not.

Why a second part. protect's points are boundary points that copies keep; an extraction
student trained on the owner's probabilities of other data keeps few of them (0.0-0.5), and
points chosen with such students alone are kept by any model of the students' data
(benchmarks/results/students-control-2026-12-05). Pairs control for the data: per
architecture a student of the owner's probabilities (role "student") and a twin of the
same architecture, seed, images and recipe on the true labels (role "twin";
recipe.STUDENT_PAIRS). A pool point scores

    paired(p) = mean_students a(p) - mean_twins a(p) - mean_close a(p),

a the hard agreement with the owner's label and "close" the selecting negatives of the
owner's architecture (the innocents nearest the owner): what the owner's function teaches
beyond its data, which independents lose. On the foreign bed's held-out students (trained
on data no reference saw) such points were kept 0.51-0.86 by the probability and
distillation students against 0.49-0.56 by the innocent that kept the most
(benchmarks/results/students-paired-2026-12-07). The paper's copies keep only 0.72-0.78 of
them, so they never replace protect's points: verify judges each part against its own
threshold, and a suspect is a copy when either part shows it (each part's threshold at half
the significance, so that the two chances together stay within it).

The threshold: the highest rate, on the chosen points, of every innocent reference protect
has -- twins and negatives of every split -- never below the chance rate, plus the points'
sampling noise (significance.py). The selecting twins and negatives chose against the
points, so their rates understate what an innocent keeps; they can only raise the level,
never lower it, and they were needed: with the held-out innocents alone (the validation
replica's and the threshold's own) the level let an innocent through at 1 of 9 bed-seeds
(the hard bed at owner seed 2: a 16-channel CNN trained like the owner kept 0.65 against a
threshold of 0.62), where a selecting twin kept 0.64 and raises it to 0.74
(benchmarks/results/student-part-2026-12-07). Nor is the level below the leave-one-kind-out
floor, as the main file's is (choice.py, refining.py): each owner-like kind dropped from the
paired score in turn, the points chosen again, and that kind's highest rate on them -- what
an innocent of a kind the choice never saw keeps. The maximum alone let an innocent through
at a fresh owner seed (the hard bed at seed 4: a 256-unit MLP kept 0.62 against 0.59), where
the floor was 0.60 and the threshold 0.70 (benchmarks/results/student-part-seeds345-2026-12-08).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch

from ..fingerprints import FingerprintSet
from ..label_bias import copy_can_be_shown
from ..verdict_threshold import chance_rate
from .config import ProtectConfig
from .scores import ReferenceOutputs
from .select import describe_reference, selected_set
from .significance import significant_threshold
from .spread import spread_top_n
from .stages import ReferenceSet

__all__ = ["PART", "StudentPart", "kind_left_out_floor", "paired_scores", "student_part"]

PART = "students"   # meta["part"] of the student part's file


@dataclass
class StudentPart:
    """The student part's points (a FingerprintSet with its threshold in meta), the level the
    threshold adds the sampling noise to, and the innocent references' rates it came from."""

    fingerprints: FingerprintSet
    threshold: float
    level: float
    innocents: dict[str, float]
    shown: bool
    floor: float = 0.0
    floor_kind: str | None = None   # the owner-like kind whose rate on points chosen without it is the floor


def paired_scores(students: torch.Tensor, twins: torch.Tensor, close: torch.Tensor) -> torch.Tensor:
    """paired(p) per point from the agreements [R, P] (bool or 0/1) of the students, their
    twins and the owner-like negatives: float64 [P]."""
    for name, rows in (("students", students), ("twins", twins), ("close", close)):
        if rows.dim() != 2 or rows.shape[0] == 0:
            raise ValueError(f"{name}: expected agreements [R >= 1, P], got shape {tuple(rows.shape)}")
    if not students.shape[1] == twins.shape[1] == close.shape[1]:
        raise ValueError(f"the agreements cover different points: {students.shape[1]}, {twins.shape[1]}, "
                         f"{close.shape[1]}")
    mean = lambda rows: rows.double().mean(dim=0)  # noqa: E731
    return mean(students) - mean(twins) - mean(close)


def student_part(points: FingerprintSet, outputs: ReferenceOutputs, refs: ReferenceSet, config: ProtectConfig,
                 significance: float | None) -> StudentPart | None:
    """The config.students points of the pool (`points`, every reference's `outputs` on
    them) with the best paired scores, spread over labels as protect's are, and their
    threshold; None when the references hold no student pairs."""
    select = lambda role: refs.rows(role, "select")  # noqa: E731
    students, twins = select("student"), select("twin")
    if not students or not twins:
        return None
    close = _owner_like(refs, config) or select("negative")
    scores = paired_scores(outputs.agrees[students], outputs.agrees[twins], outputs.agrees[close])
    n = min(config.students, len(points))
    kept = spread_top_n(scores, n, points.labels, points.num_classes, config.label_share)
    innocent_rows = _innocents(refs)
    innocents = {refs.references[i].name: float(rate) for i, rate in
                 zip(innocent_rows, outputs.rows(innocent_rows).columns(kept).rates().tolist())}
    held = [name for i, name in zip(innocent_rows, innocents) if refs.references[i].split != "select"]
    chance = chance_rate(points)
    floor, floor_kind = kind_left_out_floor(outputs.agrees, students, twins, close, [r.kind for r in refs.references],
                                            lambda scores: spread_top_n(scores, n, points.labels, points.num_classes,
                                                                        config.label_share))
    level = max([*innocents.values(), chance, floor])
    if significance is None:
        threshold, shown = level, level < 1.0
    else:
        threshold, shown = significant_threshold(level, len(kept), significance)
    if not held:
        warnings.warn("protect: the student part has no innocent held out of its choice (validation_replicas=0): "
                      "its threshold rests on the innocents that chose the points, which understate it",
                      stacklevel=3)
    shown = shown and copy_can_be_shown(points.labels[kept])
    if not shown:
        warnings.warn(f"protect: the student part's {len(kept)} points cannot show a copy above the level "
                      f"{level:.3f} that protect's innocent references reach: verify calls no suspect a copy "
                      "with that part, its verdicts are inconclusive", stacklevel=3)
    every = list(range(len(refs.references)))
    rates = outputs.rows(every).columns(kept).rates().tolist()
    described = [dict(describe_reference(r.name, r.model), split=r.split, kind=r.kind, role=r.role)
                 for r in refs.references if r.role in ("student", "twin", "negative")]
    fps = selected_set(points, kept, scores, score="paired-students", references={"paired": described},
                       rates={refs.references[i].name: round(rate, 4) for i, rate in zip(every, rates)},
                       extra={"students": [refs.references[i].name for i in students],
                              "twins": [refs.references[i].name for i in twins],
                              "close": [refs.references[i].name for i in close],
                              "label_share": config.label_share})
    fps.meta.update(part=PART, threshold=threshold, threshold_shown=shown,
                    student_part={"level": level, "significance": significance, "chance": chance,
                                  "floor": floor, "floor_kind": floor_kind,
                                  "innocent_rates": {name: round(rate, 4) for name, rate in innocents.items()},
                                  "held_out": held})
    return StudentPart(fps, threshold, level, innocents, shown, floor, floor_kind)


def kind_left_out_floor(agrees: torch.Tensor, students: list[int], twins: list[int], close: list[int],
                        kinds: list[str], choose) -> tuple[float, str | None]:
    """The highest rate of a close kind on the points `choose` (scores -> indices) takes
    from the paired scores made without that kind, over the close kinds in turn, and that
    kind (0.0 and None without close rows). agrees: [R, P] of every reference; kinds: per row."""
    floor, source = 0.0, None
    for kind in sorted({kinds[i] for i in close}):
        rest = [i for i in close if kinds[i] != kind]
        without = agrees[rest] if rest else torch.zeros((1, agrees.shape[1]), dtype=agrees.dtype)
        kept = choose(paired_scores(agrees[students], agrees[twins], without))
        rate = float(agrees[[i for i in close if kinds[i] == kind]][:, kept].double().mean(dim=1).max())
        if rate > floor:
            floor, source = rate, kind
    return floor, source


def _owner_like(refs: ReferenceSet, config: ProtectConfig) -> list[int]:
    """The selecting negatives of the owner's architecture (the recipe's kinds whose
    settings say arch="owner"): the innocents closest to the owner."""
    kinds = {k.kind: k for k in config.effective_recipe}
    return [i for i in refs.rows("negative", "select")
            if getattr(getattr(kinds.get(refs.references[i].kind), "settings", None), "arch", None) == "owner"]


def _innocents(refs: ReferenceSet) -> list[int]:
    """Every innocent reference: twins and negatives of every split (the caller's negatives too)."""
    return [i for i, r in enumerate(refs.references) if r.role in ("twin", "negative")]
