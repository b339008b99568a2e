"""Student-part rules judged from dump_agreements.py's dumps (no model runs here).

"rate" (students.py as committed): the part's 100 points by paired score, a suspect's
statistic its matching rate there, the level the highest rate of every innocent reference.

"difference" (a candidate): beside the part, 100 control points, each matched to one part
point -- the same owner label, and among those the pool point whose agreements by the
selecting innocents (twins and negatives) are nearest in Hamming distance, the students'
mean agreement weighted against them (--control-weight, in innocent bits) -- and a
suspect's statistic its rate on the part minus its rate on the controls. A smooth innocent that keeps most points keeps the controls as much as the
part; a student of the owner keeps the part more. The level: the highest difference of
every innocent reference.

Each threshold adds the same one-sided sampling margin at significance 0.025 (the rate:
the exact binomial of significance.py; the difference: a normal approximation of two
independent rates at the level's own rates), so the two rules compare as they would ship.

    python benchmarks/results/student-part-seeds345-2026-12-08/part_rules.py DUMP.pt [...] --out F.json
"""
from __future__ import annotations

import argparse
import json
import math

import torch

from ipguard_fast.selection.significance import significant_threshold
from ipguard_fast.selection.spread import spread_top_n
from ipguard_fast.selection.students import paired_scores

N, SIGNIFICANCE, Z = 100, 0.025, 1.959964
STUDENTS = ("distill", "distill-small", "extract-labels", "extract-probabilities")


def controls(part: torch.Tensor, labels: torch.Tensor, innocent_bits: torch.Tensor, student_mean: torch.Tensor,
             weight: float):
    """For each part point, the free pool point of its label with the nearest innocent bits,
    plus `weight` x the students' mean agreement (controls the students lose)."""
    taken = torch.zeros(len(labels), dtype=torch.bool)
    taken[part] = True
    chosen = []
    bits = innocent_bits.float()
    for p in part.tolist():
        free = (~taken) & (labels == labels[p])
        distance = (bits[:, free] - bits[:, p:p + 1]).abs().sum(0) + weight * student_mean[free]
        q = free.nonzero().squeeze(1)[int(distance.argmin())]
        taken[q] = True
        chosen.append(int(q))
    return torch.tensor(chosen)


def judge(dump: dict, weight: float) -> dict:
    refs = dump["references"]
    agrees, roles, splits = refs["agrees"], refs["roles"], refs["splits"]
    rows = lambda role, split=None: [i for i, (r, s) in enumerate(zip(roles, splits))  # noqa: E731
                                     if r == role and (split is None or s == split)]
    close = dump["close"] or rows("negative", "select")
    scores = paired_scores(agrees[rows("student", "select")], agrees[rows("twin", "select")], agrees[close])
    part = spread_top_n(scores, N, dump["labels"], 10, None)
    innocent_select = rows("twin", "select") + rows("negative", "select")
    ctrl = controls(part, dump["labels"], agrees[innocent_select], agrees[rows("student", "select")].double().mean(0),
                    weight)
    innocents = rows("twin") + rows("negative")
    rate = lambda a, idx: a[:, idx].double().mean(1)  # noqa: E731
    ref_part, ref_ctrl = rate(agrees[innocents], part), rate(agrees[innocents], ctrl)
    level_rate = max(float(ref_part.max()), 0.1)
    t_rate, _ = significant_threshold(level_rate, N, SIGNIFICANCE)
    diffs = ref_part - ref_ctrl
    at = int(diffs.argmax())
    p1, p2 = float(ref_part[at]), float(ref_ctrl[at])
    level_diff = float(diffs.max())
    t_diff = level_diff + Z * math.sqrt(max(p1 * (1 - p1) + p2 * (1 - p2), 0.01) / N)
    out = {"level_rate": level_rate, "threshold_rate": t_rate, "level_difference": level_diff,
           "threshold_difference": round(t_diff, 4), "beds": {}}
    for bed, s in dump["beds"].items():
        a = s["agrees"]
        sp, sc = rate(a, part), rate(a, ctrl)
        rows_out = []
        for name, role, family, x, y in zip(s["names"], s["roles"], s["families"], sp.tolist(), sc.tolist()):
            rows_out.append({"name": name, "role": role, "family": family, "part": round(x, 3), "control": round(y, 3),
                             "difference": round(x - y, 3), "by_rate": x >= t_rate, "by_difference": x - y >= t_diff})
        out["beds"][bed] = rows_out
    return out


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("dumps", nargs="+")
    p.add_argument("--out", required=True)
    p.add_argument("--control-weight", type=float, default=10.0,
                   help="the students' mean agreement's weight against one innocent bit in matching a control")
    args = p.parse_args()
    result = {}
    for path in args.dumps:
        dump = torch.load(path, weights_only=True)
        judged = judge(dump, args.control_weight)
        result[f"{dump['owner']}-{dump['seed']}"] = judged
        print(f"{dump['owner']} seed {dump['seed']}: rate level {judged['level_rate']:.2f} threshold "
              f"{judged['threshold_rate']:.2f}; difference level {judged['level_difference']:.3f} threshold "
              f"{judged['threshold_difference']:.3f}")
        for bed, rows in judged["beds"].items():
            negatives = [r for r in rows if r["role"] == "negative"]
            worst_rate = max(negatives, key=lambda r: r["part"])
            worst_diff = max(negatives, key=lambda r: r["difference"])
            print(f"  {bed}: innocents max rate {worst_rate['part']} ({worst_rate['name']}), max difference "
                  f"{worst_diff['difference']} ({worst_diff['name']}); accused by rate "
                  f"{[r['name'] for r in negatives if r['by_rate']]}, by difference "
                  f"{[r['name'] for r in negatives if r['by_difference']]}")
            for r in rows:
                if r["family"] in STUDENTS:
                    print(f"    {r['family']:22s} part {r['part']:.2f} control {r['control']:.2f} "
                          f"diff {r['difference']:+.2f}  caught: rate {r['by_rate']}, difference {r['by_difference']}")
            positives = [r for r in rows if r["role"] == "positive" and r["family"] not in STUDENTS]
            print(f"    other copies caught: rate {sum(r['by_rate'] for r in positives)}/{len(positives)}, "
                  f"difference {sum(r['by_difference'] for r in positives)}/{len(positives)}")
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
