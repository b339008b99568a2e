"""The README's 28x28 rows from this folder's results: per owner seed, the three-bed table's
columns (three-beds-floor-2026-12-05/table.py's row), then protect's time against its budget.

    python benchmarks/results/foreign-bed-28-2026-12-05/table.py [FOLDER, default this one]
"""
import importlib.util
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
_spec = importlib.util.spec_from_file_location("floor_table", HERE.parent / "three-beds-floor-2026-12-05" / "table.py")
floor_table = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(floor_table)


def row(path: Path) -> str:
    data = json.loads(path.read_text())
    settings, summary = data["settings"], data["summary"]
    timings = settings["protect_timings"]
    stages = " / ".join(f"{timings[k]:.0f}" for k in ("references", "pool", "reference_outputs", "refine")
                        if k in timings)
    return (f"{floor_table.row(path)} {summary['owner_accuracy']:.3f} | {summary['protect_seconds'] / 60:.1f} min "
            f"of {settings['budget'] / 60:g} ({stages} s) | {settings['bed_seconds'] / 60:.0f} min |")


if __name__ == "__main__":
    folder = Path(sys.argv[1]) if len(sys.argv) > 1 else HERE
    print("| bed | seed | plain best ARUC | mistakes ARUC | selected ARUC (paper's families) | ROC AUC | "
          "threshold: level / floor -> stored | falsely accused | field families caught | missed | "
          "owner accuracy | protect (references / pool / scoring / refinement) | bed built in |")
    print("|---|---:|---:|---:|---:|---:|---|---|---|---|---:|---|---:|")
    for path in sorted(folder.glob("foreign28-seed*.json")):
        print(row(path))
