"""Are protect's threshold negatives (independents trained to convergence, recipe.
THRESHOLD_NEGATIVES) still worth their cost now that the level is floored at the held-out
kinds' highest rate? Recomputes the verdicts of committed three-bed results with the level
calibrated without some of them, floored and with the 0.05 margin as protect does.

Exact, not an estimate: threshold negatives take no part in the selection, the choice or
the refinement (their seeds come from their names), so dropping them leaves every point
and every other rate as recorded; the recorded held-out rates list the validation
negatives, then the threshold negatives, in the references' order. Cells that two folders
share count once; cells of recipes without threshold negatives are skipped.

    python benchmarks/results/threshold-negatives-cost-2026-12-05/recompute.py --out DIR FOLDER...
"""
import argparse
import collections
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

from ipguard_fast.selection.choice import threshold_between  # noqa: E402
from ipguard_fast.selection.significance import significant_threshold  # noqa: E402

# variant -> which threshold negatives it keeps (by reference name)
VARIANTS = {
    "all (protect now)": lambda name: True,
    "without the second seeds (-twin1)": lambda name: "-twin1" not in name,
    "without the owner's architecture": lambda name: "independent-owner-" not in name,
    "none": lambda name: False,
}


def cells(folders):
    seen = set()
    for folder in folders:
        for path in sorted(Path(folder).glob("*-seed*.json")):
            data = json.loads(path.read_text())
            run = next((r for r in data["runs"] if r["method"] == "selected"), None)
            refs = data["settings"].get("protect_references") or {}
            held = refs.get("held_out_rates")
            if run is None or not held:
                continue
            negatives = [r for r in refs["references"] if r["role"] == "negative"
                         and r["split"] in ("validate", "threshold")]
            if len(negatives) != len(held["negatives"]) or not any(r["split"] == "threshold" for r in negatives):
                continue
            chosen = next(c for c in run["selection"]["candidates"] if c["name"] == run["selection"]["chosen"])
            suspects = [s for s in run["suspects"] if s.get("counted", True)]
            key = (data["bed"], data["seed"], tuple((s["name"], s["matching_rate"]) for s in suspects))
            if key in seen:
                continue
            seen.add(key)
            yield str(path), held, list(zip(negatives, held["negatives"])), chosen["max_negative"], suspects


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--out", required=True)
    p.add_argument("folders", nargs="+")
    args = p.parse_args()
    totals = {v: collections.Counter() for v in VARIANTS}
    rows = []
    for path, held, negatives, floor, suspects in cells(args.folders):
        row = {"file": path, "floor": floor}
        for variant, keep in VARIANTS.items():
            rates = [rate for ref, rate in negatives if ref["split"] == "validate" or keep(ref["name"])]
            level = max(threshold_between(held["positives"], rates, 100), floor)
            threshold, _ = significant_threshold(min(1.0, level), 100)
            accused = [s["name"] for s in suspects if s["role"] == "negative" and s["matching_rate"] >= threshold]
            missed = [s["name"] for s in suspects if s["role"] == "positive" and s["matching_rate"] < threshold]
            row[variant] = {"threshold": threshold, "false_accusations": accused, "missed": missed}
            totals[variant].update(cells=1, false_accusations=len(accused), missed=len(missed),
                                   copies=sum(s["role"] == "positive" for s in suspects),
                                   innocents=sum(s["role"] == "negative" for s in suspects))
        rows.append(row)
    out = Path(args.out)
    (out / "cells.json").write_text(json.dumps(rows, indent=1) + "\n")
    summary = {"command": "python " + " ".join(sys.argv), "totals": {k: dict(v) for k, v in totals.items()}}
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    print(json.dumps(summary["totals"], indent=1))


if __name__ == "__main__":
    main()
