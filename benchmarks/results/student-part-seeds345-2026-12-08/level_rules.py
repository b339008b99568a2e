"""The student part's threshold under other level rules, recomputed from committed files:
the innocent references' rates on the part (threshold_rules.py's rules-OWNER-S.json) and the
beds' suspects' rates on it (three_beds.py's BED-seedS.json). The part's points do not
depend on the rule, so each rule's verdicts are exact.

- "max" (students.py as committed at 72b8e87): level = the highest rate of every innocent
  reference (and the chance rate), threshold = that level plus the binomial sampling
  margin at significance 0.025 (significance.py).
- "max, 0.001": the same margin at significance 0.001.
- "prediction": level = the larger of that maximum and the upper prediction bound for one
  more innocent model drawn like the references, mean + t(0.999, m - 1) * sd * sqrt(1 + 1/m)
  over the m innocent references' rates (a normal model of how innocent models vary, which
  the binomial margin of one model's points does not cover), then the same 0.025 margin.

    python benchmarks/results/student-part-seeds345-2026-12-08/level_rules.py \
        --rules RULES_DIR [RULES_DIR ...] --beds BEDS_DIR [BEDS_DIR ...] > level_rules.md
"""
from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from scipy.stats import t as student_t

from ipguard_fast.selection.significance import significant_threshold

N = 100
STUDENTS = ("distill", "distill-small", "extract-probabilities", "extract-labels")
BEDS = {"demo-owner": ("demo", "hard"), "foreign": ("foreign",)}


def innocent_rates(rules: dict) -> list[float]:
    return [rate for key, rates in rules["rates_by_role_split"].items()
            if key.split("/")[0] in ("twin", "negative") for rate in rates.values()]


def thresholds(rates: list[float], floor: float) -> dict[str, float]:
    top, m = max([*rates, 0.1]), len(rates)
    bound = statistics.mean(rates) + student_t.ppf(0.999, m - 1) * statistics.stdev(rates) * (1 + 1 / m) ** 0.5
    return {"max": significant_threshold(top, N, 0.025)[0],
            "max, 0.001": significant_threshold(top, N, 0.001)[0],
            "prediction": significant_threshold(min(max(top, bound), 1.0), N, 0.025)[0],
            "max + kind left out": significant_threshold(max(top, floor), N, 0.025)[0]}


def judge(run: dict, threshold: float) -> dict:
    summary = run["summary"]
    part = summary["students"]
    main = summary["selected"]["verdicts"]
    not_useful = set(main["not_useful"]) | set(part["verdicts"]["not_useful"])   # copies the bed does not count
    rates = {s: r for s, r in part["rates"].items() if s not in not_useful}
    accused = [s for s, r in rates.items() if s.startswith("independent") and r >= threshold]
    missed_main = set(main["missed"])
    positives = [s for s in rates if not s.startswith("independent")]
    caught = [s for s in positives if s not in missed_main or rates[s] >= threshold]
    return {"threshold": threshold, "accused": accused + main["false_accusations"],
            "students": {s: (rates[s], rates[s] >= threshold) for s in STUDENTS if s in rates},
            "tpr_together": len(caught) / len(positives)}


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--rules", nargs="+", required=True)
    p.add_argument("--beds", nargs="+", required=True)
    args = p.parse_args()
    rules = {}
    for folder in args.rules:
        for path in Path(folder).glob("rules-*.json"):
            r = json.loads(path.read_text())
            rules[(r["owner"], r["seed"])] = r
    runs = {}
    for folder in args.beds:
        for path in Path(folder).glob("*-seed*.json"):
            run = json.loads(path.read_text())
            runs[(run["bed"], run["seed"])] = run
    totals: dict[str, dict[str, int]] = {}
    print("| bed | seed | rule | part threshold | falsely accused (either file) | students caught by the part | TPR together |")
    print("|---|---:|---|---:|---|---|---:|")
    for (owner, seed), r in sorted(rules.items(), key=lambda kv: (kv[0][0] != "demo-owner", kv[0][1])):
        floor = max(rate for kind in r["leave_one_kind_out"].values() for rate in kind.values())
        for name, threshold in thresholds(innocent_rates(r), floor).items():
            for bed in BEDS[owner]:
                if (bed, seed) not in runs:
                    continue
                j = judge(runs[(bed, seed)], threshold)
                t = totals.setdefault(name, {"bed-seeds": 0, "accusations": 0})
                t["bed-seeds"] += 1
                t["accusations"] += len(j["accused"])
                for s, (_, hit) in j["students"].items():
                    t[s] = t.get(s, 0) + hit
                students = ", ".join(f"{s} {rate:.2f}" for s, (rate, hit) in j["students"].items() if hit) or "none"
                print(f"| {bed} | {seed} | {name} | {threshold:.2f} | {', '.join(j['accused']) or 'none'} | "
                      f"{students} | {j['tpr_together']:.2f} |")
    print()
    print("| rule | bed-seeds | innocents accused | " + " | ".join(STUDENTS) + " |")
    print("|---|---:|---:|" + "---:|" * len(STUDENTS))
    for name, t in totals.items():
        print(f"| {name} | {t['bed-seeds']} | {t['accusations']} | " + " | ".join(str(t.get(s, 0)) for s in STUDENTS) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
