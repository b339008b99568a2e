"""The student part's verdicts on the three beds under each rule for its level, recomputed
from the three-bed run (every suspect's rate on the part's points, which no rule changes)
and threshold_rules.py's reference rates on the same points (same owner, seed and caches).

    python benchmarks/results/student-part-2026-12-07/verdicts_by_rule.py RUN_FOLDER RULES_FOLDER
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from ipguard_fast.selection.significance import significant_threshold

STUDENTS = ("distill", "distill-small", "extract-labels", "extract-probabilities")


def levels(rules: dict) -> dict[str, float]:
    by = rules["rates_by_role_split"]
    top = lambda *keys: max(max(by.get(k, {0: 0.0}).values()) for k in keys)  # noqa: E731
    held = top("twin/validate", "negative/validate", "negative/threshold")
    every = top("twin/validate", "negative/validate", "negative/threshold", "twin/select", "negative/select")
    floor = max(max(v.values()) for v in rules["leave_one_kind_out"].values())
    return {"held-out innocents": max(held, 0.1), "every innocent": max(every, 0.1),
            "every innocent + leave-one-kind-out": max(every, floor, 0.1)}


def main() -> int:
    run, rules_dir = Path(sys.argv[1]), Path(sys.argv[2])
    rows = []
    for path in sorted(run.glob("*-seed*.json")):
        result = json.loads(path.read_text())
        owner = "foreign" if result["bed"] == "foreign" else "demo"
        rules_path = rules_dir / f"rules-{owner}-{result['seed']}.json"
        if not rules_path.exists():
            continue
        part = result["settings"]["student_part"]
        main_run = [r for r in result["runs"] if r["method"] == "selected"][0]
        rows_by_name = {s["name"]: s for s in main_run["suspects"]}
        for rule, level in levels(json.loads(rules_path.read_text())).items():
            threshold, _ = significant_threshold(level, part["points"], 0.025)
            accused = [n for n, r in part["rates"].items() if rows_by_name[n]["role"] == "negative" and r >= threshold]
            caught = [n for n, r in part["rates"].items() if rows_by_name[n]["family"] in STUDENTS and r >= threshold]
            main_accused = main_run["verdicts"]["false_accusations"]
            missed = [n for n in main_run["verdicts"]["missed"] if part["rates"][n] < threshold]
            rows.append({"bed": result["bed"], "seed": result["seed"], "rule": rule, "level": level,
                         "threshold": threshold, "accused": sorted(set(accused) | set(main_accused)),
                         "students_caught": caught, "missed_by_both": missed,
                         "tpr": 1 - len(missed) / main_run["verdicts"]["positives"]})
    print("| bed | seed | rule | level | threshold | falsely accused (either part) | students caught by the part | "
          "missed by both | TPR |")
    print("|---|---:|---|---:|---:|---|---|---|---:|")
    for r in rows:
        print(f"| {r['bed']} | {r['seed']} | {r['rule']} | {r['level']:.2f} | {r['threshold']:.2f} | "
              f"{', '.join(r['accused']) or '-'} | {', '.join(r['students_caught']) or '-'} | "
              f"{', '.join(r['missed_by_both']) or '-'} | {r['tpr']:.2f} |")
    Path(rules_dir / "verdicts_by_rule.json").write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
