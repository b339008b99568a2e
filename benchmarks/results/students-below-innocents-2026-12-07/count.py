"""Do the extraction students keep more of the owner's plain IPGuard points than the innocent
that keeps the most? Read from the committed three-bed results at owner seeds 0-8 (cap 6, the
default since 2026-12-06): per bed-seed and k, each student's matching rate against the highest
rate of any independent model of that bed.

    python benchmarks/results/students-below-innocents-2026-12-07/count.py > counts.json
"""
import glob
import json
from pathlib import Path

RESULTS = Path(__file__).resolve().parent.parent
FILES = sorted(glob.glob(str(RESULTS / "three-beds-negative-cap-2026-12-06" / "seeds-*" / "*-seed*.json"))) + \
    sorted(glob.glob(str(RESULTS / "three-beds-seeds-6-8-2026-12-06" / "cap-6" / "*-seed*.json")))
STUDENTS = {"label-only": "extract-labels", "probabilities": "extract-probabilities"}


def cell(path: str) -> dict:
    data = json.loads(Path(path).read_text())
    out = {"file": str(Path(path).relative_to(RESULTS)), "bed": data["bed"], "seed": data["seed"], "k": {}}
    for run in data["runs"]:
        if run["method"] != "ipguard":
            continue
        rates = {s["name"]: (s["matching_rate"], s.get("role")) for s in run["suspects"]}
        innocent = max(rate for rate, role in rates.values() if role == "negative")
        entry = {"closest_innocent": innocent}
        for kind, family in STUDENTS.items():
            entry[kind] = [rate for name, (rate, _) in rates.items() if family in name]
        out["k"][str(run["k"])] = entry
    return out


def below_everywhere(cells: list, kind: str) -> int:
    return sum(all(all(r < e["closest_innocent"] for r in e[kind]) for e in c["k"].values()) for c in cells)


if __name__ == "__main__":
    cells = [cell(f) for f in FILES]
    summary = {kind: {"cells": len(cells), "below_the_closest_innocent_at_every_k": below_everywhere(cells, kind)}
               for kind in STUDENTS}
    print(json.dumps({"summary": summary, "cells": cells}, indent=1))
