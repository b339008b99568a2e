"""A control for the students oracle (../students-oracle-2026-12-04/): the bed's two
extraction students are the only suspects trained on the attacker's half of the data, so
points that one student keeps and the other does too may be shared *data*, not a copied
*function*. Here two innocent twins of the students -- the same architectures, recipe and
data (the attacker's half) but the true labels instead of the owner's answers -- judge
the points the oracle's held-out split chooses (one student minus half the independents).
If the twins keep as much as the judging student, the students' lead is the data.

    python benchmarks/results/students-control-2026-12-05/students_control.py --bed foreign --seed 0 --out F
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
from torch.utils.data import TensorDataset

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "students-oracle-2026-12-04"))
from students_oracle import STUDENTS, owner_and_data  # noqa: E402


def innocent_twins(attacker, seed: int):
    """The students' architectures trained like them (Adam 1e-3, 20 epochs) on the true labels."""
    from ipguard_fast.models import DigitsCNN, DigitsMLP
    from ipguard_fast.nn import seeded
    from ipguard_fast.train import TrainRecipe, train_model

    images = torch.stack([torch.as_tensor(attacker[i][0]).float() for i in range(len(attacker))])
    labels = torch.tensor([int(attacker[i][1]) for i in range(len(attacker))])
    data = TensorDataset(images, labels)
    recipe = TrainRecipe(epochs=20, lr=1e-3, batch_size=64)
    return {f"twin-{name}": train_model(seeded(factory, seed + 1000 + i), data, recipe, seed=seed + 1000 + i)
            for i, (name, factory) in enumerate((("mlp", DigitsMLP), ("cnn", DigitsCNN)))}


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
    from ipguard_fast.evaluation.beds import attacker_half
    from ipguard_fast.models import DigitsMLP
    from ipguard_fast.selection import ProtectConfig
    from ipguard_fast.selection.scores import reference_outputs
    from ipguard_fast.selection.stages import make_pool

    start = time.perf_counter()
    owner, data, attacker = owner_and_data(args.bed, args.seed)
    attacker = attacker if attacker is not None else attacker_half(data, args.seed)
    shape = digits_input_shape()
    pool = make_pool(owner, data, ProtectConfig(n=100, seed=args.seed, init="auto"), shape, progress=False,
                     log=print).points
    bed = make_bed(args.bed, digits=True, input_shape=shape, num_classes=10, small_factory=DigitsMLP)
    suspects = bed.suspects(owner, data, seed=args.seed, attacker_data=attacker)
    twins = innocent_twins(attacker, args.seed)
    models = [s.model for s in suspects] + list(twins.values())
    names = [s.name for s in suspects] + list(twins)
    agrees = reference_outputs(models, pool).agrees.double()
    students = [names.index(s) for s in STUDENTS]
    negatives = [i for i, s in enumerate(suspects) if s.role == "negative"]
    twin_rows = [names.index(t) for t in twins]
    rows = []
    for chooser, judge in ((students[0], students[1]), (students[1], students[0])):
        for parity in (0, 1):
            pick = [r for i, r in enumerate(negatives) if i % 2 == parity]
            held = [r for i, r in enumerate(negatives) if i % 2 != parity]
            best = torch.topk(agrees[chooser] - agrees[pick].mean(0), 100).indices
            rows.append({"chosen_with": names[chooser], "judged_by": names[judge],
                         "judging_student_rate": round(float(agrees[judge, best].mean()), 3),
                         "innocent_twins": {names[t]: round(float(agrees[t, best].mean()), 3) for t in twin_rows},
                         "held_out_independents_max": round(float(agrees[held][:, best].mean(1).max()), 3),
                         "held_out_independents_mean": round(float(agrees[held][:, best].mean()), 3)})
    overall = {names[i]: round(float(agrees[i].mean()), 3) for i in students + twin_rows}
    result = {"command": " ".join(sys.argv), "bed": args.bed, "seed": args.seed, "pool": len(pool),
              "mean_agreement_on_pool": overall, "held_out_split": rows,
              "seconds": round(time.perf_counter() - start)}
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
