"""Why no last pick over protect's refined candidates clears the innocents that share the
owner's points: how the bed's independents agree with the owner point by point.

Reads the 18 cells of ../selection-rules-2026-12-05/ (every bed suspect's and reference's
agreement with the owner on protect's 300 refined candidates, owner seeds 0-5) and prints,
per cell:
  * the selecting negatives' mean agreement on all candidates and on the kept 100 (those
    refinement pushed against), the validation replica's negatives', and the threshold
    negatives' (trained to convergence, never refined against);
  * for the bed's independents that keep between 10 % and 95 % of the candidates, the mean
    per-point correlation between two of them, and each one's correlation with the threshold
    negatives' mean agreement (what a selection could use);
then a last-pick test: the refined candidates re-ranked by protect's score minus lam times
the mean agreement of half the threshold negatives (the other half and the validation
replica set the threshold, as rules.py recalibrates it).

    python benchmarks/results/twin-agreement-structure-2026-12-05/structure.py
"""
import json
import sys
from pathlib import Path

import numpy as np

RULES = Path(__file__).parent.parent / "selection-rules-2026-12-05"
sys.path.insert(0, str(RULES))
from rules import judge  # noqa: E402


def bits(hex_bits: str, n: int) -> np.ndarray:
    value = int(hex_bits, 16)
    return np.array([(value >> p) & 1 for p in range(n)], dtype=float)


def structure(cell: dict) -> str:
    n, kept = cell["candidates"], cell["kept"]
    refs = [(r, bits(r["agrees"], n)) for r in cell["references"] if r["role"] == "negative"]
    mean = lambda rows, cols=None: np.mean([b if cols is None else b[cols] for _, b in rows]) if rows else float("nan")  # noqa: E731
    split = {s: [(r, b) for r, b in refs if r["split"] == s] for s in ("select", "validate", "threshold")}
    threshold_mean = np.mean([b for _, b in split["threshold"]], axis=0)
    twins = [bits(s["agrees"], n) for s in cell["suspects"] if s["role"] == "negative"]
    twins = [b for b in twins if 0.1 < b.mean() < 0.95]
    pairs = [np.corrcoef(twins[i], twins[j])[0, 1] for i in range(len(twins)) for j in range(i)]
    with_threshold = [np.corrcoef(b, threshold_mean)[0, 1] for b in twins] if threshold_mean.std() > 0 else []
    return (f"{cell['bed']:7s} {cell['seed']}  select {mean(split['select']):.2f}/{mean(split['select'], kept):.2f}"
            f"  validate {mean(split['validate']):.2f}/{mean(split['validate'], kept):.2f}"
            f"  threshold {mean(split['threshold']):.2f}/{mean(split['threshold'], kept):.2f}"
            f"  | {len(twins)} sharing independents: pair r {np.mean(pairs) if pairs else float('nan'):+.2f},"
            f" r with threshold negatives {np.mean(with_threshold) if with_threshold else float('nan'):+.2f}")


def penalised_pick(cell: dict, lam: float, names: set, n: int = 100) -> list[int]:
    count = cell["candidates"]
    rows = [bits(r["agrees"], count) for r in cell["references"] if r["name"] in names]
    share = np.mean(rows, axis=0)
    scores = cell["scores"]
    order = sorted((p for p, s in enumerate(scores) if s is not None), key=lambda p: (-(scores[p] - lam * share[p]), p))
    return sorted(order[:n])


def first_half(cell: dict) -> set:
    """The threshold negatives of the first seed of each recipe but one (the owner's two
    recipes and the generic Adam one); the rest stay for the threshold."""
    return {r["name"] for r in cell["references"] if r["split"] == "threshold"
            and "twin1" not in r["name"] and "generic-sgd" not in r["name"]}


def main() -> int:
    cells = [json.loads(p.read_text()) for p in sorted(RULES.glob("*-seed*.json"))]
    print("negatives' mean agreement on all 300 candidates / on the kept 100")
    for cell in cells:
        print(structure(cell))
    print("\nlast pick: score - lam x agreement of half the threshold negatives (the other half sets the threshold)")
    for lam in (None, 0.0, 0.5, 2.0):
        results = []
        for cell in cells:
            if lam is None:
                results.append((cell, judge(cell, cell["kept"])))
                continue
            names = first_half(cell)
            rest = dict(cell, references=[r for r in cell["references"] if r["name"] not in names])
            results.append((cell, judge(rest, penalised_pick(cell, lam, names))))
        accused = [f"{c['bed']} {c['seed']}: {a.removeprefix('independent-')}" for c, r in results for a in r["accused"]]
        aruc = np.mean([r["aruc"] for _, r in results])
        missed = sum(r["missed"] for _, r in results)
        print(f"{'protect as is' if lam is None else f'lam {lam}':14s} mean ARUC {aruc:.3f}, "
              f"{len(accused)} innocents accused ({'; '.join(accused)}), {missed} copies missed")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
