"""How high can the selected set's ARUC go while the students keep what they keep?

Read from the committed three-bed results at owner seeds 0-8 (cap 6, the default since
2026-12-06) and the 28x28 owner's foreign bed at seeds 0-2 (foreign-bed-28-cap6-2026-12-07). For each bed-seed, the selected set's ARUC is recomputed with every counted
copy that is *not* a student set to 1.00 and every innocent set to 0.00 -- a set no method
could beat -- while the students keep their measured rates. "Students" are the suspects
trained on the owner's outputs rather than copied from its weights: the label-only and
probability extraction students and the two distilled ones (same and smaller architecture).
A second bound leaves only the two extraction students at their rates.

    python benchmarks/results/aruc-bound-students-2026-12-07/bound.py > bounds.json
"""
import glob
import json
from pathlib import Path

from ipguard_fast import metrics

RESULTS = Path(__file__).resolve().parent.parent
FILES = sorted(glob.glob(str(RESULTS / "three-beds-negative-cap-2026-12-06" / "seeds-*" / "*-seed*.json"))) + \
    sorted(glob.glob(str(RESULTS / "three-beds-seeds-6-8-2026-12-06" / "cap-6" / "*-seed*.json"))) + \
    sorted(glob.glob(str(RESULTS / "foreign-bed-28-cap6-2026-12-07" / "foreign28-seed*.json")))
STUDENTS = ("extract-labels", "extract-probabilities", "distill", "distill-small")


def bounds(path: str) -> dict:
    data = json.loads(Path(path).read_text())
    run = next(r for r in data["runs"] if r["method"] == "selected")
    counted = [s for s in run["suspects"] if s["role"] == "positive" and s.get("counted", True)]
    negatives = [0.0] * sum(s["role"] == "negative" for s in run["suspects"])
    student = [s for s in counted if s["name"] in STUDENTS]
    extraction = [s for s in student if s["name"].startswith("extract")]
    keep = lambda kept: [s["matching_rate"] if s in kept else 1.0 for s in counted]  # noqa: E731
    return {"file": str(Path(path).relative_to(RESULTS)), "bed": data["bed"], "seed": data["seed"],
            "counted_copies": len(counted), "students": {s["name"]: s["matching_rate"] for s in student},
            "selected_aruc": run["aruc"],
            "bound_students_as_measured": metrics.aruc(keep(student), negatives),
            "bound_extraction_students_as_measured": metrics.aruc(keep(extraction), negatives)}


if __name__ == "__main__":
    cells = [bounds(f) for f in FILES]
    summary = {}
    for bed in ("demo", "hard", "foreign", "foreign28"):
        mine = [c for c in cells if c["bed"] == bed]
        summary[bed] = {key: [round(min(c[key] for c in mine), 3), round(max(c[key] for c in mine), 3)]
                        for key in ("selected_aruc", "bound_students_as_measured",
                                    "bound_extraction_students_as_measured")}
        summary[bed]["cells"] = len(mine)
    print(json.dumps({"summary_min_max": summary, "cells": cells}, indent=1))
