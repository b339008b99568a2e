"""A diagnostic, not a method: can the owner find points that extraction students keep and
innocents trained on the *same data* do not, with references of its own (CAE's idea,
Lukas et al., ICLR 2021: surrogates distilled from the owner against references trained on
the true labels)?

The 2026-12-05 control (../students-control-2026-12-05/) showed that points chosen with a
student are kept by any model trained on the student's data: the lead was the data. Here
the choice controls for that by pairs: on data the owner has (its own half, the protect
side), a student of each architecture trained on the owner's probabilities and a twin of
the same architecture, seed and images trained on the true labels. A pool point scores the
students' agreement with the owner minus their twins' (the owner's function beyond what the
data teaches). The top 100 are judged by the bed's held-out suspects: its students (on the
attacker's half, which no reference saw), the attacker-half twins of the control (true
labels), every independent, the other copies.

    python benchmarks/results/students-paired-2026-12-07/students_paired.py --bed foreign --seed 0 --out F
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "students-oracle-2026-12-04"))
sys.path.insert(0, str(HERE.parent / "students-control-2026-12-05"))
from students_control import innocent_twins  # noqa: E402
from students_oracle import owner_and_data  # noqa: E402

STUDENT_FAMILIES = ("extract-labels", "extract-probabilities", "distill", "distill-small")


def paired_references(owner, data, seed: int, answers: str):
    """(students, twins): per architecture, a student on the owner's `answers` of `data` and
    a twin of the same seed on the true labels (Adam 1e-3, 20 epochs: the bed's students')."""
    from ipguard_fast.attacks.extraction import EXTRACTION, Extraction
    from ipguard_fast.attacks.registry import AttackContext
    from ipguard_fast.models import DigitsCNN, DigitsMLP
    from ipguard_fast.nn import seeded
    from ipguard_fast.train import TrainRecipe, train_model

    images = torch.stack([torch.as_tensor(data[i][0]).float() for i in range(len(data))])
    labels = torch.tensor([int(data[i][1]) for i in range(len(data))])
    from torch.utils.data import TensorDataset
    students, twins = [], []
    for i, factory in enumerate((DigitsMLP, DigitsCNN)):
        s = seed + 2000 + i
        context = AttackContext(owner, TensorDataset(images, labels), s, batch_size=64)
        students += EXTRACTION.build(context, Extraction(lr=1e-3, epochs=20, student=factory, answers=answers))
        twins.append(train_model(seeded(factory, s), TensorDataset(images, labels),
                                 TrainRecipe(epochs=20, lr=1e-3, batch_size=64), seed=s))
    return students, twins


def owner_like_negatives(data, seed: int, recipe=None):
    """What protect's negatives hold beside any twin: independents of the owner's architecture
    trained on its data at two seeds, the innocents closest to it -- by Adam 1e-3 for 30
    epochs, or by `recipe` (the owner's own, which protect's train_recipe= takes)."""
    from ipguard_fast.models import DigitsCNN
    from ipguard_fast.nn import seeded
    from ipguard_fast.train import TrainRecipe, train_model

    recipe = recipe or TrainRecipe(epochs=30, lr=1e-3, batch_size=64)
    return [train_model(seeded(DigitsCNN, seed + 3000 + i), data, recipe, seed=seed + 3000 + i) for i in range(2)]


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--bed", default="foreign")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--answers", default="probabilities", choices=("labels", "probabilities"))
    p.add_argument("--owner-recipe", action="store_true",
                   help="the owner-like negatives trained by the owner's own recipe (foreign bed: SGD, augmentation)")
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
    ref_students, ref_twins = paired_references(owner, data, args.seed, args.answers)
    bed = make_bed(args.bed, digits=True, input_shape=shape, num_classes=10, small_factory=DigitsMLP)
    suspects = bed.suspects(owner, data, seed=args.seed, attacker_data=attacker)
    twins = innocent_twins(attacker, args.seed)
    judges = [s.model for s in suspects] + list(twins.values())
    names = [s.name for s in suspects] + list(twins)
    roles = [("student" if s.family in STUDENT_FAMILIES else s.role) for s in suspects] + ["attacker-twin"] * 2
    judged = reference_outputs(judges, pool).agrees.double()
    from ipguard_fast.evaluation.foreign import FOREIGN_OWNER_RECIPE
    closest = owner_like_negatives(data, args.seed, FOREIGN_OWNER_RECIPE if args.owner_recipe else None)
    refs = reference_outputs(ref_students + ref_twins + closest, pool).agrees.double()
    half = len(ref_students)
    paired = refs[:half].mean(0) - refs[half:2 * half].mean(0)
    combined = paired - refs[2 * half:].mean(0)
    generator = torch.Generator().manual_seed(args.seed)
    ties = 1e-6 * torch.rand(len(pool), generator=generator, dtype=torch.float64)   # ties broken at random, seeded
    choices = {"paired (students - twins)": torch.topk(paired + ties, 100).indices,
               "paired - owner-like negatives": torch.topk(combined + ties, 100).indices,
               "students alone": torch.topk(refs[:half].mean(0) + ties, 100).indices,
               "random": torch.randperm(len(pool), generator=generator)[:100]}
    rows = {}
    for label, chosen in choices.items():
        rates = judged[:, chosen].mean(1)
        by_name = {n: round(float(r), 3) for n, r in zip(names, rates)}
        group = lambda role: [by_name[n] for n, r in zip(names, roles) if r == role]  # noqa: E731
        rows[label] = {"students": {n: by_name[n] for n, r in zip(names, roles) if r == "student"},
                       "attacker_twins": group("attacker-twin"),
                       "independents_max": max(group("negative")), "independents_mean":
                           round(sum(group("negative")) / len(group("negative")), 3),
                       "other_copies_mean": round(sum(group("positive")) / len(group("positive")), 3),
                       "reference_students": round(float(refs[:half, chosen].mean()), 3),
                       "reference_twins": round(float(refs[half:2 * half, chosen].mean()), 3),
                       "reference_owner_like": round(float(refs[2 * half:, chosen].mean()), 3),
                       "every_suspect": by_name}
    result = {"command": " ".join(sys.argv), "bed": args.bed, "seed": args.seed, "answers": args.answers,
              "owner_recipe_negatives": args.owner_recipe,
              "pool": len(pool), "chosen": rows, "seconds": round(time.perf_counter() - start)}
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: {kk: vv for kk, vv in v.items() if kk != "every_suspect"} for k, v in rows.items()},
                     indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
