"""Recompute protect's verdicts on committed three-bed results with the level floored at the
held-out kinds' highest negative rate (refining.calibrate_threshold), against the level as
before and against the calibrated rule with that rate among its negatives ("midpoint");
all with the 0.05 binomial margin (significance.py).

Every input is recorded in the result files: the held-out rates the level was calibrated on
(settings.protect_references.held_out_rates), the chosen configuration's highest held-out
negative (selection.candidates[chosen].max_negative: each negative kind measured on a
selection made without it, and the validation negatives on the unrefined selection), and
every suspect's matching rate. The floor takes no part in selection or refinement, so these
are exactly the verdicts protect with the floor gives on those draws. Cells that two folders
share (reruns of one code version with the same rates) count once.

    python benchmarks/results/threshold-unseen-kinds-2026-12-05/recompute.py --out DIR FOLDER...
"""
import argparse
import collections
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

from ipguard_fast.selection.choice import threshold_between  # noqa: E402
from ipguard_fast.selection.significance import significant_threshold  # noqa: E402


def cells(folders):
    seen = set()
    for folder in folders:
        for path in sorted(Path(folder).glob("*-seed*.json")):
            data = json.loads(path.read_text())
            run = next((r for r in data["runs"] if r["method"] == "selected"), None)
            held = (data["settings"].get("protect_references") or {}).get("held_out_rates")
            if run is None or not held:
                continue
            chosen = next(c for c in run["selection"]["candidates"] if c["name"] == run["selection"]["chosen"])
            suspects = [s for s in run["suspects"] if s.get("counted", True)]
            key = (data["bed"], data["seed"], tuple((s["name"], s["matching_rate"]) for s in suspects))
            if key in seen:
                continue
            seen.add(key)
            yield str(path), data["bed"], data["seed"], held, chosen["max_negative"], suspects


def verdicts(level, suspects, n=100):
    threshold, _ = significant_threshold(min(1.0, level), n)
    accused = [s["name"] for s in suspects if s["role"] == "negative" and s["matching_rate"] >= threshold]
    missed = [s for s in suspects if s["role"] == "positive" and s["matching_rate"] < threshold]
    return threshold, accused, missed


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--out", required=True)
    p.add_argument("folders", nargs="+")
    args = p.parse_args()
    rows, totals = [], {rule: collections.Counter() for rule in ("calibrated", "floored", "midpoint")}
    missed_more = collections.Counter()
    for path, bed, seed, held, floor, suspects in cells(args.folders):
        level = threshold_between(held["positives"], held["negatives"], 100)
        row = dict(file=path, bed=bed, seed=seed, level=round(level, 4), floor=floor)
        # midpoint: the calibrated rule itself with the held-out kinds among its negatives (not adopted)
        midpoint = threshold_between(held["positives"], held["negatives"] + [floor], 100)
        for rule, value in (("calibrated", level), ("floored", max(level, floor)), ("midpoint", midpoint)):
            threshold, accused, missed = verdicts(value, suspects)
            row[rule] = dict(threshold=threshold, false_accusations=accused, missed=[s["name"] for s in missed])
            totals[rule].update(cells=1, innocents=sum(s["role"] == "negative" for s in suspects),
                                copies=sum(s["role"] == "positive" for s in suspects),
                                false_accusations=len(accused), missed=len(missed))
        before = set(row["calibrated"]["missed"])
        missed_more.update(s["family"] for s in suspects if s["role"] == "positive"
                           and s["name"] in set(row["floored"]["missed"]) - before)
        rows.append(row)
    out = Path(args.out)
    (out / "cells.json").write_text(json.dumps(rows, indent=1) + "\n")
    summary = {"command": "python " + " ".join(sys.argv), "totals": {k: dict(v) for k, v in totals.items()},
               "missed_more_by_family": dict(missed_more)}
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
