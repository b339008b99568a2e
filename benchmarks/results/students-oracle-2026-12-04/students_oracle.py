"""A diagnostic, not a method: does protect's candidate pool hold points that extraction
students keep and independent models do not? The bed's own suspects judge every pool
point (an oracle: it looks at the held-out suspects, so nothing here may choose anything
protect does), by start kind and k:

* each group's mean agreement with the owner (students, other copies, independents);
* the oracle's best 100 points for the students: ranked by the students' mean agreement
  minus the independents' mean agreement, and what the students and the most-matching
  independent keep of them.

If even that oracle finds no 100 points the students keep and the independents do not,
the students are out of reach of any selection from this pool: the pool must change.

    python benchmarks/results/students-oracle-2026-12-04/students_oracle.py --bed foreign --seed 0 --out F
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

STUDENTS = ("extract-labels", "extract-probabilities")


def owner_and_data(bed: str, seed: int):
    from ipguard_fast.data import load_digits
    from ipguard_fast.evaluation.beds import attacker_half, owner_half
    from ipguard_fast.evaluation.foreign import FOREIGN_OWNER_RECIPE
    from ipguard_fast.models import DigitsCNN, train_digits_model
    from ipguard_fast.nn import seeded
    from ipguard_fast.train import train_model

    train = load_digits("train")
    if bed == "foreign":
        data = owner_half(train, seed)
        return train_model(seeded(DigitsCNN, seed), data, FOREIGN_OWNER_RECIPE, seed=seed), data, attacker_half(train,
                                                                                                              seed)
    return train_digits_model("cnn", seed=seed), train, None


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--bed", default="foreign")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", required=True)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    from ipguard_fast.data import digits_input_shape
    from ipguard_fast.evaluation import make_bed
    from ipguard_fast.models import DigitsMLP
    from ipguard_fast.selection import ProtectConfig
    from ipguard_fast.selection.scores import reference_outputs
    from ipguard_fast.selection.stages import make_pool

    start = time.perf_counter()
    owner, data, attacker = owner_and_data(args.bed, args.seed)
    shape = digits_input_shape()
    pool = make_pool(owner, data, ProtectConfig(n=100, seed=args.seed, init="auto"), shape, progress=False,
                     log=print).points
    print(f"pool {len(pool)} in {time.perf_counter() - start:.0f} s")
    bed = make_bed(args.bed, digits=True, input_shape=shape, num_classes=10, small_factory=DigitsMLP)
    suspects = bed.suspects(owner, data, seed=args.seed, attacker_data=attacker)
    agrees = reference_outputs([s.model for s in suspects], pool).agrees.double()
    names = [s.name for s in suspects]
    student = torch.tensor([n in STUDENTS for n in names])
    negative = torch.tensor([s.role == "negative" for s in suspects])
    copies = ~student & ~negative
    point_k = torch.tensor(pool.meta["pool"]["k"], dtype=torch.float64)
    start_kind = [part["init"] for part in pool.meta["pool"]["parts"] for _ in range(part["size"])]
    groups = {}
    for kind in ("data", "uniform"):
        for k in sorted(set(point_k.tolist())):
            cols = torch.tensor([(s == "uniform") == (kind == "uniform") for s in start_kind]) & (point_k == k)
            if not bool(cols.any()):
                continue
            groups[f"{kind} k={k:g}"] = {
                "points": int(cols.sum()),
                "students": [round(float(agrees[i, cols].mean()), 3) for i in torch.nonzero(student).flatten()],
                "copies_mean": round(float(agrees[copies][:, cols].mean()), 3),
                "independents_mean": round(float(agrees[negative][:, cols].mean()), 3),
                "independents_max": round(float(agrees[negative][:, cols].mean(1).max()), 3)}
    score = agrees[student].mean(0) - agrees[negative].mean(0)
    best = torch.topk(score, 100).indices
    oracle = {"students": {names[i]: round(float(agrees[i, best].mean()), 3) for i in torch.nonzero(student).flatten()},
              "independents_max": round(float(agrees[negative][:, best].mean(1).max()), 3),
              "independents_mean": round(float(agrees[negative][:, best].mean()), 3),
              "copies_mean": round(float(agrees[copies][:, best].mean()), 3),
              "from": {kind: sum(start_kind[i] == kind for i in best.tolist()) for kind in set(start_kind)}}
    result_split = _split_halves(agrees, names, student, negative)
    result = {"command": " ".join(sys.argv), "held_out_split": result_split, "bed": args.bed, "seed": args.seed, "pool": len(pool),
              "suspects": {"students": [names[i] for i in torch.nonzero(student).flatten()],
                           "independents": [names[i] for i in torch.nonzero(negative).flatten()]},
              "by_group": groups, "oracle_top100_for_students": oracle, "seconds": round(time.perf_counter() - start)}
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result["oracle_top100_for_students"]))
    print(json.dumps(result_split))
    return 0


def _split_halves(agrees, names, student, negative) -> list[dict]:
    """The oracle's multiple-comparison check: points chosen with one student and every
    other independent, judged by the other student and the independents left out (with
    30,000 points some pass any filter by chance; only what holds out is evidence)."""
    students = torch.nonzero(student).flatten().tolist()
    negatives = torch.nonzero(negative).flatten().tolist()
    out = []
    for chooser, judge in ((students[0], students[1]), (students[1], students[0])):
        for parity in (0, 1):
            pick = [r for i, r in enumerate(negatives) if i % 2 == parity]
            held = [r for i, r in enumerate(negatives) if i % 2 != parity]
            best = torch.topk(agrees[chooser] - agrees[pick].mean(0), 100).indices
            out.append({"chosen_with": names[chooser], "judged_by": names[judge],
                        "judging_student_rate": round(float(agrees[judge, best].mean()), 3),
                        "held_out_independents_max": round(float(agrees[held][:, best].mean(1).max()), 3),
                        "held_out_independents_mean": round(float(agrees[held][:, best].mean()), 3),
                        "choosing_independents_max": round(float(agrees[pick][:, best].mean(1).max()), 3)})
    return out


if __name__ == "__main__":
    raise SystemExit(main())
