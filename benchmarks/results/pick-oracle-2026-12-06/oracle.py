"""How far any pick of protect's points could go, judged by the bed itself.

The bed's own suspects choose the n points (cheating on purpose: no method can see them),
by hill climbing on the bed's ARUC (random swaps, a swap kept when ARUC, then ROC AUC, does
not fall; three restarts): from protect's 3n refined candidates, and -- in cells recorded
with `point_outcomes.py --pool` -- from the whole unrefined pool, starting from the pool's
best 100 by the bed's mean agreement difference and swapping within its best 3,000. The
climb finds a pick at least this good, so each number is a lower bound of the best pick.
Also counted: the pool points that every useful copy keeps and every innocent loses.

    python benchmarks/results/pick-oracle-2026-12-06/oracle.py FOLDER [FOLDER...] > output.txt

FOLDER: cells of benchmarks/point_outcomes.py (here: ../selection-rules-2026-12-05 for the
refined candidates at owner seeds 0-5, and this folder for the foreign pools at seeds 0-2).
"""
import json
import random
import sys
from pathlib import Path

import numpy as np

from ipguard_fast import metrics


def bits(hex_bits: str, count: int) -> np.ndarray:
    value = int(hex_bits, 16)
    return np.array([(value >> p) & 1 for p in range(count)], dtype=np.float64)


def climb(P, N, start, candidates, n=100, iters=40000, seed=0):
    """The best n columns found from `start` (P, N: the copies' and innocents' agreements)."""
    rng = random.Random(seed)
    kept = list(start)
    inside = set(kept)
    out = [p for p in candidates if p not in inside]
    sp, sn = P[:, kept].sum(1), N[:, kept].sum(1)

    def score(sp, sn):
        return metrics.aruc(sp / n, sn / n), metrics.roc_auc(sp / n, sn / n)

    best = score(sp, sn)
    for _ in range(iters):
        i, j = rng.randrange(n), rng.randrange(len(out))
        a, b = kept[i], out[j]
        sp2, sn2 = sp - P[:, a] + P[:, b], sn - N[:, a] + N[:, b]
        s = score(sp2, sn2)
        if s >= best:
            best, sp, sn = s, sp2, sn2
            kept[i], out[j] = b, a
    return best


def cell_row(cell: dict) -> dict:
    useful = cell["owner_accuracy"] - 0.1   # the evaluation's useful copies
    pos = [i for i, s in enumerate(cell["suspects"]) if s["role"] == "positive" and s["accuracy"] >= useful]
    neg = [i for i, s in enumerate(cell["suspects"]) if s["role"] == "negative"]
    names = [s["name"] for s in cell["suspects"]]
    count = cell["candidates"]
    A = np.stack([bits(s["agrees"], count) for s in cell["suspects"]])
    P, N = A[pos], A[neg]
    kept = cell["kept"]
    row = {"bed": cell["bed"], "seed": cell["seed"],
           "protect": [metrics.aruc(P[:, kept].mean(1), N[:, kept].mean(1)),
                       metrics.roc_auc(P[:, kept].mean(1), N[:, kept].mean(1))],
           "refined_oracle": list(max(climb(P, N, kept, range(count), seed=s) for s in range(3)))}
    if "pool" in cell:
        size = cell["pool"]["size"]
        A = np.stack([bits(h, size) for h in cell["pool"]["suspects"]])
        P, N = A[pos], A[neg]
        order = np.argsort(-(P.mean(0) - N.mean(0)), kind="stable")
        row["pool_oracle"] = list(climb(P, N, sorted(order[:100].tolist()), order[:3000].tolist()))
        students = [k for k, i in enumerate(pos) if names[i].startswith(("extract", "distill"))]
        others = [k for k in range(len(pos)) if k not in students]
        lost = N.max(0) == 0
        row["pool_points"] = size
        row["every_copy_keeps_every_innocent_loses"] = int(((P.min(0) == 1) & lost).sum())
        row["every_copy_but_the_students_keeps_every_innocent_loses"] = int(((P[others].min(0) == 1) & lost).sum())
    return row


def main(folders: list[str]) -> int:
    for folder in folders:
        for path in sorted(Path(folder).glob("*-seed*.json")):
            print(json.dumps(cell_row(json.loads(path.read_text()))), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
