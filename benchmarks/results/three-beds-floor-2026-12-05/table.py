"""The README's three-bed table from this folder's results: per bed and seed, the plain and
mistakes baselines, the selected ARUC (paper's families), ROC AUC, the threshold (the
calibrated level, the held-out kinds' floor, the stored threshold), the innocents accused,
the field's families caught and the copies missed.

    python benchmarks/results/three-beds-floor-2026-12-05/table.py [FOLDER, default this one]
"""
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

from ipguard_fast.selection.choice import threshold_between  # noqa: E402

HERE = Path(__file__).resolve().parent


def row(path: Path) -> str:
    data = json.loads(path.read_text())
    s = data["summary"]
    run = next(r for r in data["runs"] if r["method"] == "selected")
    chosen = next(c for c in run["selection"]["candidates"] if c["name"] == run["selection"]["chosen"])
    held = data["settings"]["protect_references"]["held_out_rates"]
    level = threshold_between(held["positives"], held["negatives"], run["n_fingerprints"])
    plain, sel, mistakes = s["plain"], s["selected"], s["mistakes"]
    verdicts = sel["verdicts"]
    field = sel["field_families"]
    caught = sum(rate >= verdicts["threshold"] for rate in field.values())
    accused = ", ".join(name.removeprefix("independent-") for name in verdicts["false_accusations"]) or "none"
    return (f"| {s['bed']} | {s['seed']} | {plain['aruc']:.3f} (k={plain['k']:g}) | {mistakes['aruc']:.3f} | "
            f"{sel['aruc']:.3f} ({sel['aruc_paper_families']:.3f}) | {sel['roc_auc']:.3f} | "
            f"{level:.3f} / {chosen['max_negative']:.2f} -> {verdicts['threshold']:.2f} | {accused} | "
            f"{caught}/{len(field)} | {', '.join(verdicts['missed']) or '-'} |")


if __name__ == "__main__":
    order = {"demo": 0, "hard": 1, "foreign": 2}
    folder = Path(sys.argv[1]) if len(sys.argv) > 1 else HERE
    files = sorted(folder.glob("*-seed*.json"), key=lambda p: (order[p.name.split("-")[0]], p.name))
    print("| bed | seed | plain best ARUC | mistakes ARUC | selected ARUC (paper's families) | ROC AUC | "
          "threshold: level / floor -> stored | falsely accused | field families caught | missed |")
    print("|---|---:|---:|---:|---:|---:|---|---|---|---|")
    for path in files:
        print(row(path))
