"""The quality-vs-budget table: selected ARUC, ROC AUC, false accusations and misses per bed
and owner seed, for the full recipe (../three-beds-2026-12-04b) and each budget folder here,
with protect's measured seconds against its budget.

    python benchmarks/results/quality-vs-budget-2026-12-04/table.py
"""
import json
from pathlib import Path

HERE = Path(__file__).parent
RUNS = [("full recipe", HERE.parent / "three-beds-2026-12-04b")] + [
    (f"budget {folder.name[1:]} s", folder) for folder in sorted((p for p in HERE.glob("b*") if p.is_dir()), key=lambda p: -int(p.name[1:]))]


def rows(folder: Path):
    for path in sorted(folder.glob("*-seed*.json")):
        result = json.loads(path.read_text())
        plan = result["settings"].get("protect_plan") or {}
        yield result["bed"], result["seed"], result, plan


def main():
    print("| protect | bed | seed | rung | protect s | selected ARUC | ROC AUC | threshold | falsely accused | missed |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---|---|")
    for label, folder in RUNS:
        summary = {(r["bed"], r["seed"]): r for r in json.loads((folder / "summary.json").read_text())["rows"]}
        for (bed, seed), row in sorted(summary.items()):
            plan = next((p for b, s, _, p in rows(folder) if (b, s) == (bed, seed)), {})
            sel = row["selected"]
            v = sel["verdicts"]
            print(f"| {label} | {bed} | {seed} | {plan.get('rung', '-')} | {row['protect_seconds']:.0f} | "
                  f"{sel['aruc']:.3f} | {sel['roc_auc']:.3f} | {v['threshold']:.2f} | "
                  f"{len(v['false_accusations'])} | {len(v['missed'])} |")


if __name__ == "__main__":
    main()
