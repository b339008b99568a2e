"""Last-pick rules recomputed on protect's refined candidates: which n of the 3n refined
points to keep. The bed suspects' agreements on every candidate are recorded
(benchmarks/point_outcomes.py), so any rule that uses only what protect knows (the scores,
the labels, the references) is judged on suspects no rule sees, with the threshold
recalibrated the way protect calibrates it (validation and threshold negatives on the kept
points, never below the held-out kinds' floor, plus the 0.05 significance margin; a level
where not even n of n matches is unlikely calls no copy: verify's inconclusive verdicts).

    python benchmarks/results/selection-rules-2026-12-05/rules.py [seeds, default all]
"""
import json
import sys
from pathlib import Path

from ipguard_fast import metrics
from ipguard_fast.selection.choice import threshold_between
from ipguard_fast.selection.significance import significant_threshold

HERE = Path(__file__).parent


def agrees(hex_bits: str, columns: list[int]) -> float:
    value = int(hex_bits, 16)
    return sum((value >> p) & 1 for p in columns) / len(columns)


def capped(cell: dict, key, cap: int, n: int = 100) -> list[int]:
    """The plain ranking's best points, at most `cap` per key(point)."""
    scores = cell["scores"]
    order = sorted((p for p, s in enumerate(scores) if s is not None), key=lambda p: (-scores[p], p))
    seen, kept = {}, []
    for p in order:
        k = key(cell, p)
        if seen.get(k, 0) < cap:
            seen[k] = seen.get(k, 0) + 1
            kept.append(p)
        if len(kept) == n:
            break
    return sorted(kept)


def soft_pairs(cell: dict, weight: float, n: int = 100) -> list[int]:
    """Greedy: standardised score minus `weight` per point already kept on the same
    (source label, label) pair."""
    scores = cell["scores"]
    usable = [p for p, s in enumerate(scores) if s is not None]
    mean = sum(scores[p] for p in usable) / len(usable)
    sd = (sum((scores[p] - mean) ** 2 for p in usable) / (len(usable) - 1)) ** 0.5
    counts, kept = {}, []
    for _ in range(n):
        best = max((p for p in usable if p not in kept),
                   key=lambda p: ((scores[p] - mean) / sd - weight * counts.get(_pair(cell, p), 0), -p))
        kept.append(best)
        counts[_pair(cell, best)] = counts.get(_pair(cell, best), 0) + 1
    return sorted(kept)


def _pair(cell, p):
    return cell["source_labels"][p], cell["labels"][p]


def _label(cell, p):
    return cell["labels"][p]


def _source(cell, p):
    return cell["source_labels"][p]


RULES = {
    "protect (plain top n)": lambda c: c["kept"],
    "label cap 20": lambda c: capped(c, _label, 20),
    "label cap 15": lambda c: capped(c, _label, 15),
    "source-label cap 20": lambda c: capped(c, _source, 20),
    "pair cap 4": lambda c: capped(c, _pair, 4),
    "pair cap 8": lambda c: capped(c, _pair, 8),
    "soft pairs 0.1": lambda c: soft_pairs(c, 0.1),
    "soft pairs 0.3": lambda c: soft_pairs(c, 0.3),
}


def judge(cell: dict, kept: list[int]) -> dict:
    refs = cell["references"]
    rate = lambda rows: [agrees(r["agrees"], kept) for r in rows]  # noqa: E731
    val_pos = rate([r for r in refs if r["role"] == "positive" and r["split"] == "validate"])
    val_neg = rate([r for r in refs if r["role"] == "negative" and r["split"] in ("validate", "threshold")])
    floor = max(cell["held_out"]["negatives"])
    level = max(threshold_between(val_pos, val_neg, len(kept)), floor)
    threshold, shown = significant_threshold(level, len(kept), cell["protect"]["threshold_significance"])
    if not shown:   # verify's verdicts at such a threshold are inconclusive (verdicts.conclusive_threshold)
        threshold = float("inf")
    useful = cell["owner_accuracy"] - 0.1
    pos = [agrees(s["agrees"], kept) for s in cell["suspects"] if s["role"] == "positive" and s["accuracy"] >= useful]
    negatives = [(agrees(s["agrees"], kept), s["name"]) for s in cell["suspects"] if s["role"] == "negative"]
    neg = [r for r, _ in negatives]
    return {"threshold": threshold, "aruc": metrics.aruc(pos, neg), "roc_auc": metrics.roc_auc(pos, neg),
            "accused": [name for r, name in negatives if r >= threshold],
            "missed": sum(r < threshold for r in pos), "copies": len(pos)}


def main(argv: list[str]) -> int:
    seeds = {int(s) for s in argv[0].split(",")} if argv else None
    cells = [json.loads(p.read_text()) for p in sorted(HERE.glob("*-seed*.json"))]
    cells = [c for c in cells if seeds is None or c["seed"] in seeds]
    print(f"{len(cells)} cells: " + ", ".join(f"{c['bed']} {c['seed']}" for c in cells))
    print("| rule | mean ARUC | mean ROC AUC | innocents accused | copies missed |")
    print("|---|---:|---:|---|---:|")
    for name, rule in RULES.items():
        results = [(c, judge(c, rule(c))) for c in cells]
        accused = [f"{c['bed']} {c['seed']}: {a.removeprefix('independent-')}" for c, r in results for a in r["accused"]]
        aruc = sum(r["aruc"] for _, r in results) / len(results)
        roc = sum(r["roc_auc"] for _, r in results) / len(results)
        missed, copies = sum(r["missed"] for _, r in results), sum(r["copies"] for _, r in results)
        print(f"| {name} | {aruc:.3f} | {roc:.3f} | {len(accused)} ({'; '.join(accused) or '-'}) | "
              f"{missed}/{copies} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
