"""The student part's verdicts per bed and owner seed, from three_beds.py's files (every
*-seedS.json of the folders given): the main file's threshold and TPR, the part's
threshold, the students' rates on the part, the innocents either file accuses, and the TPR
of both files together (a suspect is a copy when either file shows it).

    python benchmarks/results/student-part-seeds345-2026-12-08/table.py FOLDER [FOLDER ...] > table.md
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

STUDENTS = ("distill", "distill-small", "extract-probabilities", "extract-labels")
ORDER = {"demo": 0, "hard": 1, "foreign": 2}


def row(path: Path) -> tuple:
    run = json.loads(path.read_text())
    summary = run["summary"]
    main, part, both = (summary[m]["verdicts"] for m in ("selected", "students", "combined"))
    rates = summary["students"]["rates"]
    t = part["threshold"]
    students = ", ".join(f"{s} {rates[s]:.2f}{' caught' if rates[s] >= t else ''}" for s in STUDENTS if s in rates)
    accused = sorted(set(main["false_accusations"]) | set(part["false_accusations"]))
    return (ORDER[run["bed"]], run["seed"],
            f"| {run['bed']} | {run['seed']} | {main['threshold']:.2f} | {main['tpr']:.2f} | {t:.2f} | {students} | "
            f"{', '.join(accused) or 'none'} | {both['tpr']:.2f} |")


def main() -> int:
    rows = sorted(row(p) for folder in sys.argv[1:] for p in Path(folder).glob("*-seed*.json"))
    print("| bed | seed | main threshold | main TPR | part threshold | students on the part | falsely accused "
          "(either file) | TPR together |")
    print("|---|---:|---:|---:|---:|---|---|---:|")
    for *_, line in rows:
        print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
