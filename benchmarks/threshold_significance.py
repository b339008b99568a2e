"""protect's stored threshold with and without the fingerprints' sampling noise, recomputed
from committed three-bed results (every `*-seed*.json` under the folders given).

Each result records the selected set's threshold (the level: recipe versions before the
significance margin stored the level itself) and every suspect's matching rate on it; the
margin changes nothing else protect does (threshold negatives take no part in selection),
so applying `significance.significant_threshold` to the stored level gives exactly the
verdicts the margin would have given on those draws. Cells that several folders share
(the same bed, seed, threshold and rates: reruns of one code version) count once.

    python benchmarks/threshold_significance.py --out DIR benchmarks/results/three-beds-*/ ...
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ipguard_fast.selection.significance import significant_threshold  # noqa: E402

SIGNIFICANCES = (None, 0.01, 0.05, 0.1)   # 0.05 is protect's default; the others show the trade


def cells(folders: list[Path]) -> list[dict]:
    """One row per distinct (bed, seed, level, suspects' rates) among the folders' results."""
    seen, rows = set(), []
    for folder in folders:
        for path in sorted(folder.rglob("*-seed*.json")):
            result = json.loads(path.read_text())
            selected = next((r for r in result.get("runs", []) if r.get("method") == "selected"), None)
            if selected is None or selected.get("threshold") is None:
                continue
            level = result["settings"].get("protect_references", {}).get("threshold_level", selected["threshold"])
            suspects = [s for s in selected["suspects"] if s["role"] == "negative" or s.get("counted", True)]
            key = (result["bed"], result["seed"], level,
                   tuple(sorted((s["name"], s["matching_rate"]) for s in suspects)))
            if key in seen:
                continue
            seen.add(key)
            rows.append({"file": str(path), "bed": result["bed"], "seed": result["seed"], "level": level,
                         "n": selected["n_fingerprints"], "suspects": suspects})
    return rows


def verdicts(row: dict, significance: float | None) -> dict:
    threshold = row["level"] if significance is None else significant_threshold(row["level"], row["n"],
                                                                                significance)[0]
    accused = [s["name"] for s in row["suspects"] if s["role"] == "negative" and s["matching_rate"] >= threshold]
    missed = [s["name"] for s in row["suspects"] if s["role"] == "positive" and s["matching_rate"] < threshold]
    return {"threshold": threshold, "false_accusations": accused, "missed": missed}


def _extra_misses(rows: list[dict], significance: float | None) -> dict:
    """The copies missed at `significance` that the level itself caught, counted by family."""
    counts: dict[str, int] = {}
    for row in rows:
        level, margin = verdicts(row, None), verdicts(row, significance)
        for s in row["suspects"]:
            if s["name"] in margin["missed"] and s["name"] not in level["missed"]:
                counts[s.get("family", "?")] = counts.get(s.get("family", "?"), 0) + 1
    return dict(sorted(counts.items()))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("folders", nargs="+", type=Path)
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    rows = cells(args.folders)
    table = []
    for row in rows:
        entry = {k: row[k] for k in ("file", "bed", "seed", "level", "n")}
        entry["negatives"] = sum(s["role"] == "negative" for s in row["suspects"])
        entry["positives"] = len(row["suspects"]) - entry["negatives"]
        entry.update({str(s): verdicts(row, s) for s in SIGNIFICANCES})
        table.append(entry)
    totals = {str(s): {"false_accusations": sum(len(e[str(s)]["false_accusations"]) for e in table),
                       "missed": sum(len(e[str(s)]["missed"]) for e in table),
                       "missed_more_than_the_level_by_family": _extra_misses(rows, s)} for s in SIGNIFICANCES}
    summary = {"cells": len(table), "negatives": sum(e["negatives"] for e in table),
               "positives": sum(e["positives"] for e in table), "totals": totals,
               "command": "python benchmarks/threshold_significance.py " + " ".join(sys.argv[1:])}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "cells.json").write_text(json.dumps(table, indent=1) + "\n")
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
